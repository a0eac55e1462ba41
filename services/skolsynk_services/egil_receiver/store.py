"""The receiver's state: every resource the organiser's EGIL client pushed (its source snapshot),
and the incremental runs that carry the changes to the normaliser.

Every EGIL client is a source of its own: a resource is identified by (tenant, source, type, id), so
two clients of one organiser never see, change or delete each other's objects, and the same
``externalId`` pushed by both is two resources (as it is two entities in the normaliser).

The request path makes **one** store write per SCIM write and nothing else: a write whose result
says whether the method's precondition held (POST: absent, an insert that fails on the unique
``_id`` when the resource exists, and only then a second command to replace a tombstone; PUT and
DELETE: present, a conditional update's ``matched_count``). The write marks
the resource *unpaged* and stamps it with a fresh sequence (``seq``, an ObjectId); a DELETE leaves a
tombstone (body removed at once) until its deletion has been paged. The 2xx is returned after that
write is acknowledged, so an acknowledged push is never lost, even if the process dies right after.

Pages are built per burst, not per request: :class:`RunPager` (a background task) turns the unpaged
writes of a (tenant, source) into ``source.records`` pages and queues them in the outbox, in one
transaction that also allocates the page number on the open run document (opening the run, with
``source.run.started``, if there is none) and marks exactly those writes paged (each mark is
conditional on the ``seq`` that was paged; a tombstone is removed instead). A crash before the commit
leaves the writes unpaged (they are paged again, by any replica), a crash after it leaves them paged:
no record is lost or sent twice, and a write that lands on a resource while it is being paged keeps
its new ``seq`` and goes out on a later page. A resource written twice within one burst goes out once,
in its latest state (the normaliser would have ended with that state anyway).

A run is completed (``source.run.completed`` with its page count) when no write has come for
``idle_seconds``: the EGIL client sends one request at a time and pauses only at the end of its
run, so an initial sync of any length is one run whose pages reach the normaliser while it goes on.
``max_age_seconds`` is only a guard against a client that never pauses.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from bson import ObjectId
from pymongo import DeleteOne, ReturnDocument, UpdateOne
from pymongo.errors import DuplicateKeyError

from skolsynk.adapters.egil import EgilMappingError, EgilResourceType, from_egil
from skolsynk.contracts.envelope import MessageContract
from skolsynk.contracts.source import (
    SourceDeletion,
    SourceRecord,
    SourceRecordPage,
    SourceRunCompleted,
    SourceRunStarted,
)
from skolsynk.logging import get_logger
from skolsynk.messaging.outbox import Outbox, OutboxEntry
from skolsynk.storage import Database, Document, IndexSpec, MongoClient, Session
from skolsynk.storage.connector_state import EGIL_RESOURCES, EGIL_RUNS

log = get_logger(__name__)

RESOURCES = EGIL_RESOURCES
BATCHES = EGIL_RUNS

INDEXES = [
    IndexSpec(RESOURCES, [("tenant_id", 1), ("source_id", 1), ("type", 1), ("resource_id", 1)], name="by_source_type"),
    IndexSpec(
        RESOURCES,
        [("tenant_id", 1), ("source_id", 1), ("seq", 1)],
        name="unpaged",
        partial_filter={"pending": True},
    ),
    IndexSpec(
        BATCHES,
        [("tenant_id", 1), ("source_id", 1)],
        name="one_open_run",
        unique=True,
        partial_filter={"status": "open"},
    ),
    IndexSpec(BATCHES, [("status", 1), ("last_write_at", 1)], name="by_status"),
]

#: Records (and deletions) per page by default: about one page per half second of a fast client.
DEFAULT_PAGE_SIZE = 500
#: Unpaged writes and open runs are looked for in the store (a crashed replica's, another replica's)
#: at most this often; the writes of this process wake the pager directly.
RECOVERY_SWEEP_SECONDS = 15.0

SourceKey = tuple[str, str]  # (tenant_id, source_id)

#: An ``_id`` of before sources were separated: "tenant:Type:id" (now "tenant:source:Type:id").
OLD_ID_FORM = "^[^:]+:(" + "|".join(t.value for t in EgilResourceType) + "):"
#: A resource id stored before ids were kept in one canonical form (lower-case UUIDs).
UPPER_CASE_ID = "[A-F]"


def now() -> datetime:
    return datetime.now(UTC)


def aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


@dataclass(frozen=True)
class OpenRun:
    """What the pager needs to know of an open run to close it in time."""

    last_write_at: datetime
    started_at: datetime

    def due(self, *, idle_seconds: float, max_age_seconds: float) -> datetime:
        """When the run is to be completed, if no write comes before."""
        return min(
            self.last_write_at + timedelta(seconds=idle_seconds),
            self.started_at + timedelta(seconds=max_age_seconds),
        )


@dataclass(frozen=True)
class FlushResult:
    """One flush of a source: how many writes were paged, and the run it left open (None: none)."""

    paged: int
    pages: int
    open_run: OpenRun | None
    completed: bool = False


class ReceiverStore:
    def __init__(
        self,
        mongo: MongoClient,
        db: Database,
        outbox: Outbox,
        *,
        exchange: str,
        producer: str,
        page_size: int = DEFAULT_PAGE_SIZE,
    ) -> None:
        self.mongo = mongo
        self.resources = db[RESOURCES]
        self.batches = db[BATCHES]
        self.outbox = outbox
        self.exchange = exchange
        self.producer = producer
        self.page_size = page_size

    @staticmethod
    def _id(tenant_id: str, source_id: str, resource_type: str, resource_id: str) -> str:
        return f"{tenant_id}:{source_id}:{resource_type}:{resource_id}"

    async def migrate_to_source_ids(self) -> int:
        """Give resources stored before sources were separated (``_id`` "tenant:Type:id", without the
        source) their per-source ``_id``. Runs at every start, before the SCIM endpoints open: one query
        for ``_id``s of the old form (a resource type, capitalised, right after the tenant, where a
        source id, lower case, stands now), which finds nothing once they have moved. Returns how many
        resources moved."""
        moved = 0
        async for document in self.resources.find({"_id": {"$regex": OLD_ID_FORM}}):
            wanted = self._id(document["tenant_id"], document["source_id"], document["type"], document["resource_id"])
            with contextlib.suppress(DuplicateKeyError):  # moved by a replica that started at the same time
                await self.resources.insert_one({**document, "_id": wanted})
            await self.resources.delete_one({"_id": document["_id"]})
            moved += 1
        if moved:
            log.info("egil_resources_migrated_to_source_ids", moved=moved)
        return moved

    async def migrate_to_lower_case_ids(self) -> int:
        """Give resources stored before ids were canonical (an upper-case ``externalId`` kept as sent) their
        lower-case id, as every request now looks them up. Runs at every start, before the SCIM endpoints
        open; finds nothing once done. Where the lower-case twin exists too (the same person pushed in both
        cases: one person in the normaliser, two objects here), the twin is kept and the upper-case one
        removed, without a deletion: the normaliser never had two. Returns how many moved or merged."""
        moved = 0
        async for document in self.resources.find({"resource_id": {"$regex": UPPER_CASE_ID}}):
            lower = document["resource_id"].lower()
            wanted = self._id(document["tenant_id"], document["source_id"], document["type"], lower)
            body = document.get("body")
            if isinstance(body, dict) and isinstance(body.get("externalId"), str):
                body = {**body, "externalId": body["externalId"].lower()}
            with contextlib.suppress(DuplicateKeyError):  # the twin exists, or another replica moved it
                await self.resources.insert_one({**document, "_id": wanted, "resource_id": lower, "body": body})
            await self.resources.delete_one({"_id": document["_id"]})
            moved += 1
        if moved:
            log.info("egil_resources_migrated_to_lower_case_ids", moved=moved)
        return moved

    # -- the request path: one write each -------------------------------------------------------

    async def get(self, tenant_id: str, source_id: str, resource_type: str, resource_id: str) -> Document | None:
        return await self.resources.find_one(
            {"_id": self._id(tenant_id, source_id, resource_type, resource_id), "deleted": {"$ne": True}}
        )

    async def page(
        self, tenant_id: str, source_id: str, resource_type: str, start: int, count: int
    ) -> tuple[int, list[Document]]:
        criteria = {"tenant_id": tenant_id, "source_id": source_id, "type": resource_type, "deleted": {"$ne": True}}
        total = await self.resources.count_documents(criteria)
        cursor = self.resources.find(criteria).sort("resource_id", 1).skip(max(start - 1, 0)).limit(count)
        return total, await cursor.to_list(None)

    @staticmethod
    def _change(source_id: str) -> dict[str, Any]:
        return {"source_id": source_id, "seq": ObjectId(), "pending": True, "updated_at": now()}

    async def create(
        self,
        *,
        tenant_id: str,
        source_id: str,
        resource_type: str,
        resource_id: str,
        body: dict[str, Any],
    ) -> bool:
        """POST: store a resource that does not exist. One insert; only when the ``_id`` is taken, a
        second command replaces a tombstone not yet paged (a resource deleted moments ago). That second
        command upserts, so a tombstone the pager removed between the two commands still ends in a
        created resource; it fails on the ``_id`` only when a live resource holds it. False, changing
        nothing, when the resource exists."""
        document_id = self._id(tenant_id, source_id, resource_type, resource_id)
        # The record is not stored: the pager derives it from the body (validated at the door), which
        # keeps the request's one write half as large.
        fields = {"tenant_id": tenant_id, "type": resource_type, "resource_id": resource_id, "body": body,
                  "deleted": False, **self._change(source_id)}  # fmt: skip
        try:
            await self.resources.insert_one({"_id": document_id, **fields})
        except DuplicateKeyError:
            try:
                await self.resources.update_one(
                    {"_id": document_id, "deleted": True}, {"$set": fields, "$unset": {"deletion": ""}}, upsert=True
                )
            except DuplicateKeyError:
                return False  # a live resource: a conflict
        return True

    async def replace(
        self,
        *,
        tenant_id: str,
        source_id: str,
        resource_type: str,
        resource_id: str,
        body: dict[str, Any],
    ) -> bool:
        """PUT: replace an existing resource. One update; False when there is none."""
        result = await self.resources.update_one(
            {"_id": self._id(tenant_id, source_id, resource_type, resource_id), "deleted": {"$ne": True}},
            {"$set": {"body": body, **self._change(source_id)}, "$unset": {"record": ""}},
        )
        return result.matched_count == 1

    async def delete(
        self, *, tenant_id: str, source_id: str, resource_type: str, resource_id: str, deletion: SourceDeletion
    ) -> bool:
        """DELETE: one update turning the resource into a tombstone (its body is gone at once); the
        tombstone itself is removed when its deletion has been paged. False when there is no resource."""
        result = await self.resources.update_one(
            {"_id": self._id(tenant_id, source_id, resource_type, resource_id), "deleted": {"$ne": True}},
            {"$set": {"deleted": True, "deletion": deletion.model_dump(mode="json"), **self._change(source_id)},
             "$unset": {"body": "", "record": ""}},
        )  # fmt: skip
        return result.matched_count == 1

    # -- paging: per burst, in the background --------------------------------------------------------

    async def sources_with_unpaged_writes(self) -> set[SourceKey]:
        cursor = await self.resources.aggregate(
            [{"$match": {"pending": True}}, {"$group": {"_id": {"tenant_id": "$tenant_id", "source_id": "$source_id"}}}]
        )
        return {(group["_id"]["tenant_id"], group["_id"]["source_id"]) async for group in cursor}

    async def open_runs(self) -> dict[SourceKey, OpenRun]:
        runs: dict[SourceKey, OpenRun] = {}
        async for run in self.batches.find({"status": "open"}):
            runs[(run["tenant_id"], run["source_id"])] = OpenRun(aware(run["last_write_at"]), aware(run["started_at"]))
        return runs

    async def flush(
        self, tenant_id: str, source_id: str, *, idle_seconds: float, max_age_seconds: float
    ) -> FlushResult:
        """Page up to ``page_size`` unpaged writes of a source into its open run (opening one if
        needed) or, when there are none, complete the open run if it is idle (or too old). One
        transaction; safe to run concurrently anywhere (the run document serialises it)."""

        async def unit_of_work(session: Session) -> FlushResult:
            current = now()
            unpaged = (
                await self.resources.find(
                    {"tenant_id": tenant_id, "source_id": source_id, "pending": True},
                    {"seq": 1, "type": 1, "body": 1, "record": 1, "deletion": 1, "deleted": 1, "updated_at": 1},
                    session=session,
                )
                .sort("seq", 1)
                .limit(self.page_size)
                .batch_size(self.page_size)
                .to_list(None)
            )
            if unpaged:
                return await self._page(tenant_id, source_id, unpaged, current, max_age_seconds, session)
            run = await self.batches.find_one(
                {"tenant_id": tenant_id, "source_id": source_id, "status": "open"}, session=session
            )
            if run is None:
                return FlushResult(0, 0, None)
            open_run = OpenRun(aware(run["last_write_at"]), aware(run["started_at"]))
            if open_run.due(idle_seconds=idle_seconds, max_age_seconds=max_age_seconds) > current:
                return FlushResult(0, 0, open_run)
            await self._complete(run, session)
            return FlushResult(0, 0, None, completed=True)

        for attempt in range(5):
            try:
                async with self.mongo.start_session() as session:
                    result: FlushResult = await session.with_transaction(unit_of_work)
                break
            except DuplicateKeyError:
                # Another pager opened this source's run at the same moment: join it.
                if attempt == 4:
                    raise
        if result.pages or result.completed:
            self.outbox.notify()
        return result

    async def _page(
        self,
        tenant_id: str,
        source_id: str,
        unpaged: list[Document],
        current: datetime,
        max_age_seconds: float,
        session: Session,
    ) -> FlushResult:
        last_write = max(aware(d["updated_at"]) for d in unpaged)
        run = await self.batches.find_one_and_update(
            {"tenant_id": tenant_id, "source_id": source_id, "status": "open"},
            {"$inc": {"pages": 1}, "$max": {"last_write_at": last_write}},
            return_document=ReturnDocument.AFTER,
            session=session,
        )
        messages: list[MessageContract] = []
        if run is None:
            run = {"_id": str(uuid.uuid4()), "tenant_id": tenant_id, "source_id": source_id, "status": "open",
                   "pages": 1, "started_at": current, "last_write_at": last_write}  # fmt: skip
            await self.batches.insert_one(run, session=session)
            messages.append(
                SourceRunStarted(
                    run_id=uuid.UUID(run["_id"]),
                    source_id=source_id,
                    source_kind="egil",
                    mode="incremental",
                    started_at=current,
                )
            )
            log.info("egil_run_started", run_id=run["_id"])
        messages.append(
            SourceRecordPage(
                run_id=uuid.UUID(run["_id"]),
                source_id=source_id,
                page=int(run["pages"]) - 1,
                records=[r for d in unpaged if not d.get("deleted") and (r := _record_of(d)) is not None],
                deletions=[SourceDeletion.model_validate(d["deletion"]) for d in unpaged if d.get("deleted")],
            )
        )
        open_run: OpenRun | None = OpenRun(aware(run["last_write_at"]), aware(run["started_at"]))
        completed = False
        if open_run is not None and open_run.started_at + timedelta(seconds=max_age_seconds) <= current:
            # The guard: a client that never pauses still gets its changes projected.
            log.warning("egil_run_completed_at_max_age", run_id=run["_id"], pages=run["pages"])
            await self.batches.update_one(
                {"_id": run["_id"]}, {"$set": {"status": "closed", "closed_at": current}}, session=session
            )
            messages.append(self._completed(run))
            open_run, completed = None, True
        await self._emit(messages, tenant_id, session)
        await self.resources.bulk_write(
            [
                DeleteOne({"_id": d["_id"], "seq": d["seq"]})
                if d.get("deleted")
                else UpdateOne({"_id": d["_id"], "seq": d["seq"]}, {"$set": {"pending": False}})
                for d in unpaged
            ],
            ordered=False,
            session=session,
        )
        return FlushResult(len(unpaged), 1, open_run, completed=completed)

    async def _complete(self, run: Document, session: Session) -> None:
        await self.batches.update_one(
            {"_id": run["_id"], "status": "open"}, {"$set": {"status": "closed", "closed_at": now()}}, session=session
        )
        await self._emit([self._completed(run)], run["tenant_id"], session)
        log.info("egil_run_completed", run_id=run["_id"], pages=run["pages"])

    @staticmethod
    def _completed(run: Document) -> SourceRunCompleted:
        return SourceRunCompleted(
            run_id=uuid.UUID(run["_id"]), source_id=run["source_id"], pages=int(run["pages"]), healthy=True
        )

    async def _emit(self, messages: list[MessageContract], tenant_id: str, session: Session) -> None:
        await self.outbox.add_many(
            [
                OutboxEntry(
                    envelope=message.to_envelope(tenant_id=tenant_id, producer=self.producer),
                    exchange=self.exchange,
                    routing_key=f"egil.{tenant_id}",
                    # A page's records (what the client pushed, personal data included) are not kept once
                    # the broker has them: the sent page keeps its run and number until the TTL (docs/gdpr.md).
                    forget_when_sent=("records",) if isinstance(message, SourceRecordPage) else (),
                )
                for message in messages
            ],
            session=session,
        )


class RunPager:
    """The background task that turns bursts of writes into pages and closes runs at the client's
    pause. Woken by the writes of this process (:meth:`written`, no I/O); it lets a page's worth
    accumulate (``page_seconds`` or ``page_size`` writes, whichever comes first) and then flushes
    every source that was written to. It wakes again when an open run is due to close, and sweeps
    the store every :data:`RECOVERY_SWEEP_SECONDS` for writes and runs no live process is paging
    (after a crash, or another replica's). Between those it does no store work at all."""

    def __init__(
        self, store: ReceiverStore, *, idle_seconds: float, max_age_seconds: float, page_seconds: float
    ) -> None:
        self.store = store
        self.idle_seconds = idle_seconds
        self.max_age_seconds = max_age_seconds
        self.page_seconds = page_seconds
        self._written: set[SourceKey] = set()
        self._unpaged = 0
        self._wake = asyncio.Event()
        self._page_full = asyncio.Event()
        self._open: dict[SourceKey, OpenRun] = {}
        self._next_sweep = 0.0

    def written(self, tenant_id: str, source_id: str) -> None:
        """A write of this process was acknowledged: page it with the rest of its burst."""
        self._written.add((tenant_id, source_id))
        self._unpaged += 1
        self._wake.set()
        if self._unpaged >= self.store.page_size:
            self._page_full.set()

    def _seconds_until_next_turn(self) -> float:
        turn = self._next_sweep - time.monotonic()
        current = now()
        for run in self._open.values():
            due = run.due(idle_seconds=self.idle_seconds, max_age_seconds=self.max_age_seconds)
            turn = min(turn, (due - current).total_seconds())
        return max(turn, 0.0)

    async def run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._seconds_until_next_turn()):
                    await self._wake.wait()
            if self._written and self._unpaged < self.store.page_size:
                # A burst is going on: let a page's worth of it accumulate.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.page_seconds):
                        await self._page_full.wait()
            try:
                await self.pass_once(sweep=time.monotonic() >= self._next_sweep)
            except Exception:
                log.exception("egil_paging_failed")
                await asyncio.sleep(min(self.page_seconds * 2, 5.0))

    async def pass_once(self, *, sweep: bool = False) -> int:
        """Page what was written since the last pass and close the runs that are due; returns how
        many writes were paged."""
        written, self._written, self._unpaged = self._written, set(), 0
        self._wake.clear()
        self._page_full.clear()
        try:
            if sweep:
                self._next_sweep = time.monotonic() + RECOVERY_SWEEP_SECONDS
                written |= await self.store.sources_with_unpaged_writes()
                self._open.update(await self.store.open_runs())
            paged = 0
            for key in sorted(written):
                paged += await self._flush(key, until_drained=True)
            current = now()
            due = [
                key
                for key, run in self._open.items()
                if run.due(idle_seconds=self.idle_seconds, max_age_seconds=self.max_age_seconds) <= current
            ]
            for key in due:
                paged += await self._flush(key, until_drained=False)
        except BaseException:
            self._written |= written  # try them again on the next pass
            raise
        return paged

    async def _flush(self, key: SourceKey, *, until_drained: bool) -> int:
        paged = 0
        while True:
            result = await self.store.flush(*key, idle_seconds=self.idle_seconds, max_age_seconds=self.max_age_seconds)
            paged += result.paged
            if result.open_run is None:
                self._open.pop(key, None)
            else:
                self._open[key] = result.open_run
            if not (until_drained and result.paged >= self.store.page_size):
                return paged

    async def flush_all(self) -> int:
        """Page every unpaged write now (at shutdown); a run that is not due stays open for whoever
        comes next (this process restarted, another replica)."""
        paged = 0
        for key in sorted(self._written | await self.store.sources_with_unpaged_writes()):
            paged += await self._flush(key, until_drained=True)
        self._written = set()
        return paged


def _record_of(document: Document) -> SourceRecord | None:
    """The source record of a stored resource: from its body, as at the door (a resource stored before the
    receiver stopped storing records has its record). None, logged, for a body the mapping refuses now
    (only across an upgrade that made the mapping stricter: refused at the door from then on too)."""
    if document.get("record") is not None:
        return SourceRecord.model_validate(document["record"])
    try:
        return from_egil(EgilResourceType(document["type"]), document["body"])
    except (EgilMappingError, ValueError, KeyError):
        log.warning("egil_resource_unmappable", resource_type=document.get("type"), document_id=document["_id"])
        return None
