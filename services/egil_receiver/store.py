"""The receiver's state: every resource the organiser's EGIL client pushed (its source snapshot),
and the incremental runs that carry the changes to the normaliser.

A write and the messages it causes are committed together (outbox): an acknowledged push is never
lost, even if the process dies right after answering. Changes are grouped into incremental runs per
(tenant, source): the first change opens a run (``source.run.started``), every change is one page
(``source.records``), and a run idle for ``idle_seconds`` (or older than ``max_age_seconds``) is
completed (``source.run.completed``), so the normaliser projects once per burst, not per request.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

from skolsynk.contracts.source import (
    SourceDeletion,
    SourceRecord,
    SourceRecordPage,
    SourceRunCompleted,
    SourceRunStarted,
)
from skolsynk.messaging import Outbox
from skolsynk.storage import Database, Document, IndexSpec, MongoClient, Session

RESOURCES = "egil_resources"
BATCHES = "egil_runs"

INDEXES = [
    IndexSpec(RESOURCES, [("tenant_id", 1), ("type", 1), ("resource_id", 1)], name="by_type"),
    IndexSpec(
        BATCHES,
        [("tenant_id", 1), ("source_id", 1)],
        name="one_open_run",
        unique=True,
        partial_filter={"status": "open"},
    ),
    IndexSpec(BATCHES, [("status", 1), ("last_write_at", 1)], name="by_status"),
]


def now() -> datetime:
    return datetime.now(UTC)


class ReceiverStore:
    def __init__(self, mongo: MongoClient, db: Database, outbox: Outbox, *, exchange: str, producer: str) -> None:
        self.mongo = mongo
        self.resources = db[RESOURCES]
        self.batches = db[BATCHES]
        self.outbox = outbox
        self.exchange = exchange
        self.producer = producer

    @staticmethod
    def _id(tenant_id: str, resource_type: str, resource_id: str) -> str:
        return f"{tenant_id}:{resource_type}:{resource_id}"

    async def get(self, tenant_id: str, resource_type: str, resource_id: str) -> Document | None:
        return await self.resources.find_one({"_id": self._id(tenant_id, resource_type, resource_id)})

    async def page(self, tenant_id: str, resource_type: str, start: int, count: int) -> tuple[int, list[Document]]:
        criteria = {"tenant_id": tenant_id, "type": resource_type}
        total = await self.resources.count_documents(criteria)
        cursor = self.resources.find(criteria).sort("resource_id", 1).skip(max(start - 1, 0)).limit(count)
        return total, await cursor.to_list(None)

    async def write(
        self,
        *,
        tenant_id: str,
        source_id: str,
        resource_type: str,
        resource_id: str,
        body: dict[str, Any] | None,
        record: SourceRecord | None,
        deletion: SourceDeletion | None,
        expect_existing: bool,
    ) -> bool:
        """Store (or delete, when ``body`` is None) one resource and queue its change, in one
        transaction. Returns False, changing nothing, when the resource's existence is not what the
        method expects (POST: absent; PUT and DELETE: present)."""
        document_id = self._id(tenant_id, resource_type, resource_id)
        routing_key = f"egil.{tenant_id}"

        async def unit_of_work(session: Session) -> bool:
            exists = await self.resources.find_one({"_id": document_id}, {"_id": 1}, session=session) is not None
            if exists != expect_existing:
                return False
            if body is None:
                await self.resources.delete_one({"_id": document_id}, session=session)
            else:
                await self.resources.replace_one(
                    {"_id": document_id},
                    {"tenant_id": tenant_id, "source_id": source_id, "type": resource_type,
                     "resource_id": resource_id, "body": body, "updated_at": now()},
                    upsert=True,
                    session=session,
                )  # fmt: skip
            run_id, page_number, opened = await self._next_page(tenant_id, source_id, session)
            if opened:
                started = SourceRunStarted(
                    run_id=run_id, source_id=source_id, source_kind="egil", mode="incremental", started_at=now()
                )
                await self._emit(started, tenant_id, routing_key, session)
            page = SourceRecordPage(
                run_id=run_id,
                source_id=source_id,
                page=page_number,
                records=[record] if record is not None else [],
                deletions=[deletion] if deletion is not None else [],
            )
            await self._emit(page, tenant_id, routing_key, session)
            return True

        for attempt in range(3):
            try:
                async with self.mongo.start_session() as session:
                    done = await session.with_transaction(unit_of_work)
                break
            except DuplicateKeyError:
                # Two first writes of a burst raced to open the run: one opened it; join it.
                if attempt == 2:
                    raise
        if done:
            self.outbox.notify()
        return bool(done)

    async def _next_page(self, tenant_id: str, source_id: str, session: Session) -> tuple[uuid.UUID, int, bool]:
        batch = await self.batches.find_one_and_update(
            {"tenant_id": tenant_id, "source_id": source_id, "status": "open"},
            {"$inc": {"pages": 1}, "$set": {"last_write_at": now()}},
            return_document=ReturnDocument.BEFORE,
            session=session,
        )
        if batch is not None:
            return uuid.UUID(batch["_id"]), int(batch["pages"]), False
        run_id = uuid.uuid4()
        await self.batches.insert_one(
            {"_id": str(run_id), "tenant_id": tenant_id, "source_id": source_id, "status": "open", "pages": 1,
             "started_at": now(), "last_write_at": now()},
            session=session,
        )  # fmt: skip
        return run_id, 0, True

    async def _emit(self, message: Any, tenant_id: str, routing_key: str, session: Session) -> None:
        envelope = message.to_envelope(tenant_id=tenant_id, producer=self.producer)
        await self.outbox.add(envelope, exchange=self.exchange, routing_key=routing_key, session=session)

    async def close_idle_runs(self, *, idle_seconds: float, max_age_seconds: float) -> int:
        """Complete runs that have been quiet for a while (or are getting old); returns how many."""
        closed = 0
        current = now()
        criteria = {
            "status": "open",
            "$or": [
                {"last_write_at": {"$lt": current - timedelta(seconds=idle_seconds)}},
                {"started_at": {"$lt": current - timedelta(seconds=max_age_seconds)}},
            ],
        }
        async for batch in self.batches.find(criteria, {"_id": 1}):
            if await self._close(batch["_id"]):
                closed += 1
        return closed

    async def _close(self, run_id: str) -> bool:
        async def unit_of_work(session: Session) -> bool:
            batch = await self.batches.find_one_and_update(
                {"_id": run_id, "status": "open"},
                {"$set": {"status": "closed", "closed_at": now()}},
                return_document=ReturnDocument.AFTER,
                session=session,
            )
            if batch is None:
                return False
            completed = SourceRunCompleted(
                run_id=uuid.UUID(run_id), source_id=batch["source_id"], pages=batch["pages"], healthy=True
            )
            await self._emit(completed, batch["tenant_id"], f"egil.{batch['tenant_id']}", session)
            return True

        try:
            async with self.mongo.start_session() as session:
                done = await session.with_transaction(unit_of_work)
        except DuplicateKeyError:
            return False
        if done:
            self.outbox.notify()
        return bool(done)
