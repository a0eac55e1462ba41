"""Run as a separate process by test_outbox: commit a state change and its outbox entry in one
transaction, then die (os._exit) before any relay could publish it."""

from __future__ import annotations

import asyncio
import os
import sys

from pymongo import AsyncMongoClient

from skolsynk.contracts import SyncRequested
from skolsynk.messaging import Outbox


async def main(mongo_url: str, database: str, exchange: str) -> None:
    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(mongo_url)
    db = client[database]
    outbox = Outbox(db)
    envelope = SyncRequested(source_id="google", requested_by="crash-test").to_envelope(tenant_id="kommun-a")
    async with client.start_session() as session:

        async def change_and_message(session):  # type: ignore[no-untyped-def]
            await db["sync_runs"].insert_one({"_id": str(envelope.message_id), "state": "requested"}, session=session)
            await outbox.add(envelope, exchange=exchange, routing_key="sync.requested", session=session)

        await session.with_transaction(change_and_message)
    sys.stdout.write(f"{envelope.message_id}\n")
    sys.stdout.flush()
    os._exit(17)  # the process dies right after the commit: no relay, no close


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
