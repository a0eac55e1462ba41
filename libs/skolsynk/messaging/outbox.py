"""The transactional outbox: a state change and the messages it causes are committed together.

Writers call :meth:`Outbox.add` with the session of their transaction. The :class:`OutboxRelay`
(one per process; any number of replicas may run) claims pending entries with a lease, publishes them
with confirms and marks them sent. If a process dies after the commit but before the publish, or after
the publish but before marking, the lease expires and another relay publishes the entry again: the
message is delivered at least once and its consumers' inboxes make the effect exactly once (the
message id is the outbox id and never changes).

Entry: ``{_id: message_id, exchange, routing_key, envelope, headers, created_at, lease_until,
lease_owner, attempts, sent_at}``. Sent entries expire after ``outbox_retention_seconds`` (TTL).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from skolsynk.contracts.envelope import Envelope
from skolsynk.logging import get_logger
from skolsynk.messaging.publisher import OutgoingMessage, Publisher, UnroutableMessage
from skolsynk.observability import Metrics
from skolsynk.storage import Database, Document, IndexSpec, Session

log = get_logger(__name__)

OUTBOX_COLLECTION = "outbox"
NEVER = datetime(1970, 1, 1, tzinfo=UTC)


class Outbox:
    """The write side, used inside a transaction."""

    def __init__(self, db: Database) -> None:
        self.collection = db[OUTBOX_COLLECTION]
        self._wakeup = asyncio.Event()

    @staticmethod
    def index_specs(retention_seconds: int) -> list[IndexSpec]:
        return [
            IndexSpec(OUTBOX_COLLECTION, [("sent_at", 1), ("lease_until", 1), ("created_at", 1)], name="pending"),
            IndexSpec(
                OUTBOX_COLLECTION,
                [("sent_at", 1)],
                name="sent_at_ttl",
                expire_after_seconds=retention_seconds,
                partial_filter={"sent_at": {"$type": "date"}},
            ),
        ]

    async def add(
        self,
        envelope: Envelope,
        *,
        exchange: str,
        routing_key: str,
        session: Session,
        headers: Mapping[str, Any] | None = None,
    ) -> None:
        await self.collection.insert_one(
            {
                "_id": str(envelope.message_id),
                "exchange": exchange,
                "routing_key": routing_key,
                "envelope": envelope.model_dump(mode="json"),
                "headers": dict(headers or {}),
                "created_at": datetime.now(UTC),
                "lease_until": NEVER,
                "lease_owner": None,
                "attempts": 0,
                "sent_at": None,
            },
            session=session,
        )

    def notify(self) -> None:
        """Wake the relay in this process (call after the transaction committed)."""
        self._wakeup.set()

    async def wait_for_work(self, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._wakeup.wait()
        self._wakeup.clear()

    async def pending_count(self) -> int:
        return await self.collection.count_documents({"sent_at": None})


class OutboxRelay:
    """Publishes committed outbox entries. Start it as a background task with :meth:`run`."""

    def __init__(
        self,
        outbox: Outbox,
        publisher: Publisher,
        metrics: Metrics,
        *,
        batch_size: int = 200,
        lease_seconds: float = 30.0,
        poll_interval_seconds: float = 1.0,
    ) -> None:
        self._outbox = outbox
        self._publisher = publisher
        self._metrics = metrics
        self._batch_size = batch_size
        self._lease = timedelta(seconds=lease_seconds)
        self._poll_interval = poll_interval_seconds
        self._owner = uuid.uuid4().hex
        self._claims = 0
        self._stopping = asyncio.Event()

    async def _claim(self) -> list[Document]:
        """Lease up to ``batch_size`` due entries, oldest first. The lease is one conditional update of
        the batch (each document is updated atomically, and only while its lease is free), tagged with
        a token of this claim, so two relays never hold the same entry at once. One update per batch,
        not one per entry: per-entry round trips made the relay the bottleneck of a large projection
        (docs/benchmarks.md)."""
        collection = self._outbox.collection
        now = datetime.now(UTC)
        candidates = (
            collection.find({"sent_at": None, "lease_until": {"$lt": now}}, projection={"_id": 1})
            .sort("created_at", 1)
            .limit(self._batch_size)
        )
        ids = [candidate["_id"] async for candidate in candidates]
        if not ids:
            return []
        self._claims += 1
        token = f"{self._owner}:{self._claims}"
        result = await collection.update_many(
            {"_id": {"$in": ids}, "sent_at": None, "lease_until": {"$lt": now}},
            {"$set": {"lease_until": now + self._lease, "lease_owner": token}, "$inc": {"attempts": 1}},
        )
        if result.modified_count == 0:
            return []
        claimed = await collection.find({"_id": {"$in": ids}, "lease_owner": token}).to_list(None)
        order = {message_id: position for position, message_id in enumerate(ids)}
        return sorted(claimed, key=lambda entry: order[entry["_id"]])

    async def relay_once(self) -> int:
        """Publish one batch; returns how many entries were confirmed and marked sent."""
        entries = await self._claim()
        if not entries:
            return 0
        messages = [
            OutgoingMessage(
                envelope=Envelope.model_validate(entry["envelope"]),
                exchange=entry["exchange"],
                routing_key=entry["routing_key"],
                headers=entry.get("headers") or {},
            )
            for entry in entries
        ]
        results = await self._publisher.publish_many(messages)
        confirmed = [entry["_id"] for entry, error in zip(entries, results, strict=True) if error is None]
        for entry, error in zip(entries, results, strict=True):
            if isinstance(error, UnroutableMessage):
                # A topology error, not a transient one: keep the entry and retry after the lease so an
                # operator can fix the binding; it is visible in the pending metric meanwhile.
                log.error("outbox_entry_unroutable", message_id=entry["_id"], exchange=entry["exchange"])
            elif error is not None:
                log.warning("outbox_publish_failed", message_id=entry["_id"], error_type=type(error).__name__)
        if confirmed:
            await self.mark_sent(confirmed)
        self._metrics.outbox_relayed.inc(len(confirmed))
        return len(confirmed)

    async def mark_sent(self, ids: list[Any]) -> None:
        await self._outbox.collection.update_many(
            {"_id": {"$in": ids}}, {"$set": {"sent_at": datetime.now(UTC), "lease_owner": None}}
        )

    async def run(self) -> None:
        """Relay until :meth:`stop`. Errors are logged and retried; the loop never dies of one."""
        while not self._stopping.is_set():
            try:
                relayed = await self.relay_once()
                self._metrics.outbox_pending.set(await self._outbox.pending_count())
            except Exception:
                log.exception("outbox_relay_error")
                relayed = 0
            if relayed == 0 and not self._stopping.is_set():
                await self._outbox.wait_for_work(self._poll_interval)

    def stop(self) -> None:
        self._stopping.set()
        self._outbox.notify()
