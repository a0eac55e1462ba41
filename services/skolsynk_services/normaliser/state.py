"""The queries the normaliser runs on its collections, and their indexes. The collections are named
(and the queries other services need are offered) by their owner modules in ``skolsynk.storage``:
``entities`` (with ``entity_tombstones``), ``runs`` (with ``run_pages``), ``vendor_views`` and
``projection_locks``."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from bson import Binary
from pymongo import ReturnDocument, UpdateOne
from pymongo.errors import DuplicateKeyError

from skolsynk.domain.dependencies import references
from skolsynk.domain.ss12000 import EntityKind
from skolsynk.logging import get_logger
from skolsynk.storage import Database, Document, IndexSpec, RetiredIndex, Session, entities, in_parts, vendor_views
from skolsynk.storage.entities import ENTITIES, ENTITY_TOMBSTONES, NAME_FIELDS, EntityReader, entity_name
from skolsynk.storage.projection_locks import PROJECTION_LOCKS, PROJECTION_REMOVALS
from skolsynk.storage.runs import RUN_PAGES, RUNS
from skolsynk.storage.vendor_views import VENDOR_VIEWS

log = get_logger(__name__)

#: The entities of a tenant (and of one of its sources): named, and ensured, with the collection.
SOURCE_INDEX = entities.SOURCE_INDEX

#: Page bookkeeping of finished runs is kept this long, for support.
RUN_PAGES_RETENTION_SECONDS = 7 * 24 * 3600

INDEXES = [
    *entities.INDEXES,
    IndexSpec(RUNS, [("tenant_id", 1), ("source_id", 1), ("started_at", -1)], name="by_source"),
    IndexSpec(RUNS, [("status", 1), ("claimed_at", 1)], name="by_status"),
    IndexSpec(RUN_PAGES, [("run_id", 1), ("received", 1), ("page", 1)], name="by_run_page"),
    IndexSpec(RUN_PAGES, [("created_at", 1)], name="created_at_ttl", expire_after_seconds=RUN_PAGES_RETENTION_SECONDS),
]
#: What finalising reads of every page of a run before applying any: all but the staged records, of which
#: only the ids (an unchanged record an earlier page changed is written back, ``Runs._restores``).
PAGE_OUTLINE = {"page": 1, "counts": 1, "seen": 1, "deletions": 1, "withheld": 1, "documents._id": 1}
#: ``vendor_views.by_vendor`` (``tenant_id, vendor_id``): a vendor's whole view is served by the first two
#: fields of ``by_source_entity`` or ``by_school_unit`` since 2026-12-07, one index less to write per view.
RETIRED_INDEXES = [RetiredIndex(VENDOR_VIEWS, "by_vendor")]

REFERENCE_INDEX = "by_reference"
POPULATION_INDEX = "by_school_unit"

#: What incremental projections query: an entity's dependants by token, the entities and tombstones a
#: projection has not seen yet, a vendor's view of the entities it looks at, a school unit's population.
PROJECTION_INDEXES = [
    IndexSpec(ENTITIES, [("tenant_id", 1), ("refs", 1)], name=REFERENCE_INDEX),
    IndexSpec(
        ENTITIES, [("tenant_id", 1), ("pending", 1)], name="pending_projection", partial_filter={"pending": True}
    ),
    IndexSpec(ENTITY_TOMBSTONES, [("tenant_id", 1)], name="by_tenant"),
    IndexSpec(PROJECTION_REMOVALS, [("tenant_id", 1), ("vendor_id", 1)], name="by_vendor"),
    IndexSpec(VENDOR_VIEWS, [("tenant_id", 1), ("vendor_id", 1), ("source_entity_id", 1)], name="by_source_entity"),
    IndexSpec(VENDOR_VIEWS, [("tenant_id", 1), ("vendor_id", 1), ("school_unit_ids", 1)], name=POPULATION_INDEX),
    # The GDPR service's purge: is the person still at a live vendor (VendorViews.present_at_a_live_vendor).
    *vendor_views.INDEXES,
]


def now() -> datetime:
    return datetime.now(UTC)


class EntityStore(EntityReader):
    """The canonical entities. Every write and delete also leaves what the next projection must look
    at: a written entity is marked ``pending`` (with the tokens it referred to before the write kept in
    ``stale_refs``), a deleted one leaves a tombstone with its last tokens. The projection clears both
    once the vendors' changes are committed, so a projection that dies is simply done again. What it
    reads of them (by id, by reference) it shares with every reader (:class:`EntityReader`)."""

    def __init__(self, db: Database) -> None:
        super().__init__(db)
        self.db = db
        self.tombstones = db[ENTITY_TOMBSTONES]

    async def hashes(self, ids: Iterable[UUID], *, session: Session | None = None) -> dict[str, str]:
        found: dict[str, str] = {}
        for part in in_parts(str(i) for i in ids):
            cursor = self.collection.find({"_id": {"$in": part}}, {"hash": 1}, session=session)
            found.update({doc["_id"]: doc["hash"] async for doc in cursor})
        return found

    async def write(self, documents: list[Document], *, session: Session | None = None) -> None:
        """Upsert entities (one bulk write), each with its dependency tokens and marked pending."""
        if documents:
            operations = [_write_operation(d) for d in documents]
            await self.collection.bulk_write(operations, ordered=False, session=session)

    async def delete(self, ids: Iterable[str], *, session: Session | None = None) -> int:
        """Delete entities, leaving a tombstone (kind, last tokens and name) for the next projection: its
        mass-deletion guard names whom a hold keeps at a vendor after they left the source."""
        doomed: list[Document] = []
        for part in in_parts(ids):
            doomed += await self.collection.find(
                {"_id": {"$in": part}},
                {"tenant_id": 1, "kind": 1, "refs": 1, "stale_refs": 1, **{f"data.{n}": 1 for n in NAME_FIELDS}},
                session=session,
            ).to_list(None)
        if not doomed:
            return 0
        await self.tombstones.bulk_write(
            [
                UpdateOne(
                    {"_id": doc["_id"]},
                    {
                        "$set": {
                            "tenant_id": doc["tenant_id"],
                            "kind": doc["kind"],
                            "deleted_at": now(),
                            "name": entity_name(doc.get("data") or {}),
                        },
                        "$addToSet": {"refs": {"$each": sorted({*doc.get("refs", []), *doc.get("stale_refs", [])})}},
                    },
                    upsert=True,
                )
                for doc in doomed
            ],
            ordered=False,
            session=session,
        )
        deleted = 0
        for part in in_parts(d["_id"] for d in doomed):
            result = await self.collection.delete_many({"_id": {"$in": part}}, session=session)
            deleted += result.deleted_count
        return deleted

    async def names_of_deleted(self, ids: Iterable[str]) -> dict[str, str]:
        """The names the entities among ``ids`` deleted since the last projection had (their tombstones')."""
        names: dict[str, str] = {}
        for part in in_parts(ids):
            cursor = self.tombstones.find({"_id": {"$in": part}}, {"name": 1})
            names.update({doc["_id"]: doc["name"] async for doc in cursor if doc.get("name")})
        return names

    async def ids_of_source(self, tenant_id: str, source_id: str) -> set[str]:
        cursor = self.collection.find({"tenant_id": tenant_id, "source_id": source_id}, {"_id": 1})
        return {doc["_id"] async for doc in cursor}

    async def tenants(self) -> list[str]:
        return sorted(await self.collection.distinct("tenant_id"))

    # --- what projections read --------------------------------------------------------------------

    async def pending(self, tenant_id: str, *, limit: int) -> tuple[list[Document], list[Document]] | None:
        """The entities written and the tombstones left since the tenant's last projection; None when
        there are more than ``limit`` of them together (a projection of the whole organiser is due)."""
        written = await self.collection.find({"tenant_id": tenant_id, "pending": True}).limit(limit + 1).to_list(None)
        if len(written) > limit:
            return None
        deleted = await self.tombstones.find({"tenant_id": tenant_id}).limit(limit + 1).to_list(None)
        if len(written) + len(deleted) > limit:
            return None
        return written, deleted

    async def projected(self, tenant_id: str, ids: Iterable[str] | None = None) -> None:
        """Clear the pending marks and tombstones of ``ids`` (all of the tenant's when None)."""
        clear = {"$unset": {"pending": "", "stale_refs": ""}}
        if ids is None:
            await self.collection.update_many({"tenant_id": tenant_id, "pending": True}, clear)
            await self.tombstones.delete_many({"tenant_id": tenant_id})
            return
        # By ``_id`` alone (ids are unique across tenants): the Mongo wire server serves a write whose
        # filter is ``_id`` and nothing else as point lookups, and walks the tenant's entities for
        # one with another predicate (a minute per 1 % change set at 20,000 persons). Unsetting the
        # marks of an entity that has none changes nothing.
        for part in in_parts(ids):
            await self.collection.update_many({"_id": {"$in": part}}, clear)
            await self.tombstones.delete_many({"_id": {"$in": part}})

    async def backfill_references(self, *, batch: int = 500) -> int:
        """Give entities stored before dependency tokens existed their tokens (once, at start-up)."""
        done = 0
        while True:
            docs = await self.collection.find({"refs": {"$exists": False}}).limit(batch).to_list(None)
            if not docs:
                return done
            await self.collection.bulk_write(
                [UpdateOne({"_id": d["_id"]}, {"$set": {"refs": _references_of(d)}}) for d in docs], ordered=False
            )
            done += len(docs)


def _references_of(document: Document) -> list[str]:
    return references(document["tenant_id"], document["source_id"], EntityKind(document["kind"]), document["data"])


def _write_operation(document: Document) -> UpdateOne:
    """An upsert that keeps the tokens the entity had (``stale_refs``: a duty that moved to another
    person must still bring the old person into the next projection) and marks it pending."""
    fields: dict[str, Any] = {k: {"$literal": v} for k, v in document.items() if k != "_id"}
    fields["refs"] = {"$literal": _references_of(document)}
    fields["pending"] = True
    return UpdateOne(
        {"_id": document["_id"]},
        [
            {"$set": {"stale_refs": {"$setUnion": [{"$ifNull": ["$stale_refs", []]}, {"$ifNull": ["$refs", []]}]}}},
            {"$set": fields},
        ],
        upsert=True,
    )


class RunStore:
    """``runs``: one document per run, written by its start and its completion (and once more when it
    becomes ready), never by its pages. ``run_pages``: one document per page, written by that page
    only, so the pages of a run never contend. A page the run is still waiting for may already have a
    placeholder (``received: False``): see :meth:`expect_pages`."""

    def __init__(self, db: Database) -> None:
        self.runs = db[RUNS]
        self.pages = db[RUN_PAGES]

    async def started(self, run_id: UUID, fields: dict[str, Any], *, session: Session) -> Document:
        doc = await self.runs.find_one_and_update(
            {"_id": str(run_id)},
            {"$set": fields, "$setOnInsert": {"status": "running"}},
            upsert=True,
            return_document=ReturnDocument.AFTER,
            session=session,
        )
        assert doc is not None
        return doc

    async def page_received(
        self,
        run_id: UUID,
        page: int,
        *,
        seen: list[str],
        withheld: list[str],
        counts: dict[str, int],
        documents: list[Document],
        deletions: list[str],
        session: Session,
    ) -> None:
        """Stage one page: only its own document is written. ``seen`` (every record id of the page, for
        the absence check of a full snapshot) is stored as 16 bytes per id."""
        await self.pages.update_one(
            {"_id": f"{run_id}:{page}"},
            {
                "$set": {
                    "run_id": str(run_id),
                    "page": page,
                    "received": True,
                    "seen": pack_ids(seen),
                    "withheld": withheld,
                    "counts": counts,
                    "documents": documents,
                    "deletions": deletions,
                    "created_at": now(),
                }
            },
            upsert=True,
            session=session,
        )

    async def received_pages(self, run_id: UUID, *, session: Session) -> set[int]:
        """Numbers of the pages of the run that are in (an index-only read of ``by_run_page``)."""
        criteria = {"run_id": str(run_id), "received": {"$ne": False}}
        found = await self.pages.find(criteria, {"_id": 0, "page": 1}, session=session).to_list(None)
        numbers = {int(doc["page"]) for doc in found if "page" in doc}
        if len(numbers) < len(found):  # pages staged before page numbers were stored: from their ids
            older = self.pages.find({**criteria, "page": {"$exists": False}}, {"_id": 1}, session=session)
            numbers |= {int(doc["_id"].rsplit(":", 1)[1]) async for doc in older}
        return numbers

    async def expect_pages(self, run_id: UUID, pages: Iterable[int], *, session: Session) -> None:
        """Write to the documents of pages the run still waits for (a placeholder when absent). A page
        that arrives concurrently writes the same document, so one of the two transactions aborts and,
        retried, sees the other: whichever commits last sees the run whole (the normaliser's ``runs.py``)."""
        operations = [
            UpdateOne(
                {"_id": f"{run_id}:{page}"},
                {
                    "$inc": {"expected": 1},
                    "$setOnInsert": {"run_id": str(run_id), "page": page, "received": False, "created_at": now()},
                },
                upsert=True,
            )
            for page in sorted(set(pages))
        ]
        if operations:
            await self.pages.bulk_write(operations, ordered=False, session=session)

    async def others_unfinished(
        self, tenant_id: str, source_id: str, run_id: UUID, *, newer_than: datetime, session: Session
    ) -> bool:
        """Whether another run of the source (started after ``newer_than``) is not finalised yet."""
        other = await self.runs.find_one(
            {
                "tenant_id": tenant_id,
                "source_id": source_id,
                "started_at": {"$gt": newer_than},
                "_id": {"$ne": str(run_id)},
                "status": {"$ne": "finalised"},
            },
            {"_id": 1},
            session=session,
        )
        return other is not None

    async def completed(self, run_id: UUID, completion: dict[str, Any], *, session: Session) -> Document:
        doc = await self.runs.find_one_and_update(
            {"_id": str(run_id)},
            {"$set": {"completion": completion}, "$setOnInsert": {"status": "running"}},
            upsert=True,
            return_document=ReturnDocument.AFTER,
            session=session,
        )
        assert doc is not None
        return doc

    async def mark_ready(self, run_id: UUID, *, session: Session) -> bool:
        """running -> ready, once; True for the caller that made the change."""
        result = await self.runs.update_one(
            {"_id": str(run_id), "status": "running"}, {"$set": {"status": "ready"}}, session=session
        )
        return result.modified_count == 1

    async def claim_for_finalising(self, run_id: UUID, *, stale_after: timedelta) -> Document | None:
        """ready -> finalising (or a finalising claim older than ``stale_after``: its finaliser died)."""
        return await self.runs.find_one_and_update(
            {
                "_id": str(run_id),
                "$or": [{"status": "ready"}, {"status": "finalising", "claimed_at": {"$lt": now() - stale_after}}],
            },
            {"$set": {"status": "finalising", "claimed_at": now()}},
            return_document=ReturnDocument.AFTER,
        )

    async def ready(self, tenant_id: str) -> list[UUID]:
        """Runs of the tenant that have all their messages (or whose finaliser died), oldest first."""
        stale = now() - timedelta(minutes=10)
        cursor = self.runs.find(
            {
                "tenant_id": tenant_id,
                "$or": [{"status": "ready"}, {"status": "finalising", "claimed_at": {"$lt": stale}}],
            },
            {"_id": 1},
        ).sort("started_at", 1)
        return [UUID(doc["_id"]) async for doc in cursor]

    async def unclaim(self, run_id: UUID) -> None:
        await self.runs.update_one({"_id": str(run_id), "status": "finalising"}, {"$set": {"status": "ready"}})

    async def earlier_unfinished(self, run: Document, *, newer_than: datetime) -> bool:
        """Whether an earlier run of the same source (started after ``newer_than``) is unfinished."""
        earlier = await self.runs.find_one(
            {
                "tenant_id": run["tenant_id"],
                "source_id": run["source_id"],
                "_id": {"$ne": run["_id"]},
                "status": {"$ne": "finalised"},
                "started_at": {"$lt": run["started_at"], "$gt": newer_than},
            },
            {"_id": 1},
        )
        return earlier is not None

    async def forget_page_contents(self, run_id: UUID) -> None:
        """Applied pages keep only ids and counts: the staged records held personal data."""
        await self.pages.update_many({"run_id": str(run_id)}, {"$set": {"documents": [], "deletions": []}})

    async def finalised(self, run_id: UUID, outcome: dict[str, Any]) -> None:
        await self.runs.update_one(
            {"_id": str(run_id)}, {"$set": {"status": "finalised", "outcome": outcome, "finalised_at": now()}}
        )

    async def page_outlines(self, run_id: UUID) -> list[Document]:
        """The pages received (not the placeholders of pages that never came), each without its staged
        records (:data:`PAGE_OUTLINE`: their ids only): a run's records are read one page at a time
        (:meth:`staged_documents`), so finalising a full run holds one page, not the organiser."""
        return await self.pages.find({"run_id": str(run_id), "received": {"$ne": False}}, PAGE_OUTLINE).to_list(None)

    async def staged_documents(self, page_id: str) -> list[Document]:
        """The records one received page staged (its ``_id`` from :meth:`page_outlines`)."""
        page = await self.pages.find_one({"_id": page_id}, {"documents": 1})
        return list((page or {}).get("documents") or [])

    async def get(self, run_id: UUID, *, session: Session | None = None) -> Document | None:
        return await self.runs.find_one({"_id": str(run_id)}, session=session)


def pack_ids(ids: Iterable[str]) -> Binary:
    """Entity ids (UUIDs) as one binary value, 16 bytes each."""
    return Binary(b"".join(UUID(i).bytes for i in ids))


def unpack_ids(packed: Any) -> list[str]:
    """The ids :func:`pack_ids` packed (or a list of ids, as pages staged before it were stored)."""
    if isinstance(packed, list):
        return [str(i) for i in packed]
    raw = bytes(packed or b"")
    return [str(UUID(bytes=raw[at : at + 16])) for at in range(0, len(raw), 16)]


#: A lock whose projection of the whole organiser ran out of its slice of time and waits, with its
#: checkpoint, for whichever request comes next (the continuation it published, or any other).
HANDED_OVER = "handed_over"


@dataclass(frozen=True)
class LockTaken:
    """The tenant's lock is ours; ``checkpoint`` is the unfinished projection of the whole organiser a
    previous holder handed over (:meth:`ProjectionLock.hand_over`), to be resumed before anything else."""

    checkpoint: dict[str, Any] | None = None


class ProjectionLock:
    """One projection per tenant at a time, across replicas. A request that finds the tenant busy
    marks it dirty (with any resend it asks for, whether it needs the whole organiser projected, and
    its cause: who changed what, for the holds that projection may make); the holder projects again
    before it lets go, so no request is lost.

    A live holder renews its lease while it projects (:meth:`kept`, every quarter of the lease), so the
    lease can be short: a holder that died (its process killed) blocks its tenant for one lease at most,
    and the next request then takes over with every request the dead holder had been left. A projection
    of the whole organiser that takes longer than a slice of time hands the lock over with its checkpoint
    (:meth:`hand_over`): the next request, whichever replica takes it, resumes that projection first."""

    def __init__(self, db: Database, owner: str, lease_seconds: float = 300.0) -> None:
        self.collection = db[PROJECTION_LOCKS]
        self.owner = owner
        self.lease = timedelta(seconds=lease_seconds)

    async def renew(self, tenant_id: str) -> bool:
        """Extend the lease of the tenant's lock this holder has (not one it handed over); False when it
        has it no more."""
        renewed = await self.collection.update_one(
            {"_id": tenant_id, "owner": self.owner, HANDED_OVER: {"$ne": True}},
            {"$set": {"lease_until": now() + self.lease}},
        )
        return bool(renewed.matched_count)

    @contextlib.asynccontextmanager
    async def kept(self, tenant_id: str) -> AsyncIterator[None]:
        """While the body runs, renew the lease every quarter of it. A renewal that fails is tried again
        at the next; one that finds the lock gone (overtaken after this process stalled for longer than a
        lease) is logged and ends the renewals (the holder's hand-over then fails and its release does
        nothing; a lease is many times longer than any stall of a working process)."""

        async def keep() -> None:
            every = self.lease.total_seconds() / 4
            while True:
                await asyncio.sleep(every)
                try:
                    if not await self.renew(tenant_id):
                        # Released or handed over just now by the body, or overtaken by another replica.
                        holder = await self.collection.find_one({"_id": tenant_id}, {"owner": 1})
                        if holder is not None and holder.get("owner") != self.owner:
                            log.warning("projection_lock_lost", tenant_id=tenant_id)
                        return
                except Exception:
                    log.warning("projection_lease_renewal_failed", tenant_id=tenant_id, exc_info=True)

        keeper = asyncio.create_task(keep(), name=f"projection-lease:{tenant_id}")
        try:
            yield
        finally:
            keeper.cancel()
            await asyncio.gather(keeper, return_exceptions=True)

    async def acquire(
        self,
        tenant_id: str,
        *,
        resend: frozenset[str] = frozenset(),
        whole: bool = False,
        cause: dict[str, Any] | None = None,
        mark: bool = True,
    ) -> LockTaken | None:
        """Take the tenant's lock (a free one, one whose lease ran out, or one handed over); when busy,
        leave the request (its resends, whether it needs a projection of the whole organiser, and its
        ``cause``) with the holder and return None. ``mark=False``: a request of no consequence of its
        own (a continuation) leaves nothing when the tenant is busy."""
        update: dict[str, Any] = {"dirty": True}
        if whole:
            update["whole"] = True
        add: dict[str, Any] = {"resend": {"$each": sorted(resend)}}
        if cause is not None:
            add["causes"] = cause
        while True:
            current = now()
            fresh = {
                "owner": self.owner,
                "lease_until": current + self.lease,
                "dirty": False,
                "resend": [],
                "whole": False,
                "causes": [],
            }
            try:
                await self.collection.insert_one({"_id": tenant_id, **fresh})
                return LockTaken()
            except DuplicateKeyError:
                pass
            # Taken over, the requests left with the previous holder stay (its release would have run
            # them), and so does a handed-over checkpoint until the projection it belongs to is done.
            taken = await self.collection.find_one_and_update(
                {"_id": tenant_id, "$or": [{"lease_until": {"$lt": current}}, {HANDED_OVER: True}]},
                {"$set": {"owner": self.owner, "lease_until": current + self.lease, HANDED_OVER: False}},
            )
            if taken is not None:
                return LockTaken(checkpoint=taken.get("checkpoint"))
            if not mark:
                if await self.collection.count_documents({"_id": tenant_id}, limit=1):
                    return None
                continue
            marked = await self.collection.update_one({"_id": tenant_id}, {"$set": update, "$addToSet": add})
            if marked.matched_count:
                return None
            # The holder let go between our insert and this mark (its projection did not include this
            # request, and nobody would have projected it): take the lock again.

    async def hand_over(
        self,
        tenant_id: str,
        checkpoint: dict[str, Any],
        *,
        resend: frozenset[str] = frozenset(),
        whole: bool = False,
        cause: dict[str, Any] | None = None,
        unserved: bool = False,
    ) -> bool:
        """Keep the tenant locked for the rest of an unfinished projection of the whole organiser: the lock
        holds its ``checkpoint`` and any request may take it over (:meth:`acquire`) and resume it.
        ``unserved``: the holder's own request (``resend``, ``whole``, ``cause``) was not projected yet;
        it is left as if it had come while busy."""
        update: dict[str, Any] = {
            "$set": {HANDED_OVER: True, "checkpoint": checkpoint, "lease_until": now() + self.lease},
        }
        if unserved:
            update["$set"]["dirty"] = True
            if whole:
                update["$set"]["whole"] = True
            update["$addToSet"] = {"resend": {"$each": sorted(resend)}}
            if cause is not None:
                update["$addToSet"]["causes"] = cause
        handed = await self.collection.update_one({"_id": tenant_id, "owner": self.owner}, update)
        return bool(handed.matched_count)

    async def give_up(self, tenant_id: str, *, checkpoint: dict[str, Any] | None) -> None:
        """The holder's projection failed (the request is retried). Without a ``checkpoint`` the lock
        goes. With one, the unfinished projection's own request stays as a request for the whole
        organiser on a lock anybody may take at once, so the retried continuation (or the next request)
        projects it again from the start, not from a checkpoint a failure may have come from."""
        mine = {"_id": tenant_id, "owner": self.owner}
        if checkpoint is None:
            await self.collection.delete_one(mine)
            return
        add: dict[str, Any] = {"resend": {"$each": sorted(checkpoint.get("resend") or [])}}
        if checkpoint.get("causes"):
            add["causes"] = {"$each": list(checkpoint["causes"])}
        await self.collection.update_one(
            mine,
            {
                "$set": {HANDED_OVER: True, "dirty": True, "whole": True},
                "$unset": {"checkpoint": ""},
                "$addToSet": add,
            },
        )

    async def release(self, tenant_id: str) -> tuple[bool, frozenset[str], bool]:
        """Let go unless someone asked meanwhile; returns whether the caller must project again, the
        resends those requests asked for, and whether one of them needs the whole organiser."""
        again, resend, whole, _ = await self.release_with_causes(tenant_id)
        return again, resend, whole

    async def release_with_causes(self, tenant_id: str) -> tuple[bool, frozenset[str], bool, list[dict[str, Any]]]:
        """:meth:`release`, and the causes the requests that came meanwhile left."""
        released = await self.collection.delete_one({"_id": tenant_id, "owner": self.owner, "dirty": False})
        if released.deleted_count == 1:
            return False, frozenset(), False, []
        again = await self.collection.find_one_and_update(
            {"_id": tenant_id, "owner": self.owner, "dirty": True},
            {
                "$set": {"dirty": False, "resend": [], "whole": False, "causes": [], "lease_until": now() + self.lease},
                "$unset": {"checkpoint": ""},
            },
        )
        if again is None:
            return False, frozenset(), False, []
        return True, frozenset(again.get("resend", [])), bool(again.get("whole", False)), list(again.get("causes", []))
