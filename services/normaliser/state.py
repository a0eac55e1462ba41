"""The normaliser's collections and the queries it runs on them."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from pymongo import ReturnDocument, UpdateOne
from pymongo.errors import DuplicateKeyError

from skolsynk.domain.selection import StoredEntity
from skolsynk.storage import Database, Document, IndexSpec, Session, entities
from skolsynk.storage.entities import EntityReader

ENTITIES = entities.ENTITIES
RUNS = "runs"
RUN_PAGES = "run_pages"
VENDOR_VIEWS = "vendor_views"
LOCKS = "projection_locks"

#: Page bookkeeping of finished runs is kept this long, for support.
RUN_PAGES_RETENTION_SECONDS = 7 * 24 * 3600

INDEXES = [
    IndexSpec(ENTITIES, [("tenant_id", 1), ("source_id", 1), ("kind", 1)], name="by_source"),
    IndexSpec(RUNS, [("tenant_id", 1), ("source_id", 1), ("started_at", -1)], name="by_source"),
    IndexSpec(RUNS, [("status", 1), ("claimed_at", 1)], name="by_status"),
    IndexSpec(RUN_PAGES, [("run_id", 1)], name="by_run"),
    IndexSpec(RUN_PAGES, [("created_at", 1)], name="created_at_ttl", expire_after_seconds=RUN_PAGES_RETENTION_SECONDS),
    IndexSpec(VENDOR_VIEWS, [("tenant_id", 1), ("vendor_id", 1)], name="by_vendor"),
]


def now() -> datetime:
    return datetime.now(UTC)


class EntityStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        self.collection = db[ENTITIES]

    async def hashes(self, ids: Iterable[UUID], *, session: Session | None = None) -> dict[str, str]:
        cursor = self.collection.find({"_id": {"$in": [str(i) for i in ids]}}, {"hash": 1}, session=session)
        return {doc["_id"]: doc["hash"] async for doc in cursor}

    async def write(self, documents: list[Document], *, session: Session | None = None) -> None:
        if documents:
            operations = [UpdateOne({"_id": d["_id"]}, {"$set": d}, upsert=True) for d in documents]
            await self.collection.bulk_write(operations, ordered=False, session=session)

    async def delete(self, ids: Iterable[str], *, session: Session | None = None) -> int:
        ids = list(ids)
        if not ids:
            return 0
        result = await self.collection.delete_many({"_id": {"$in": ids}}, session=session)
        return result.deleted_count

    async def ids_of_source(self, tenant_id: str, source_id: str) -> set[str]:
        cursor = self.collection.find({"tenant_id": tenant_id, "source_id": source_id}, {"_id": 1})
        return {doc["_id"] async for doc in cursor}

    async def load_tenant(self, tenant_id: str) -> list[StoredEntity]:
        return await EntityReader(self.db).load_tenant(tenant_id)

    async def tenants(self) -> list[str]:
        return sorted(await self.collection.distinct("tenant_id"))


class RunStore:
    def __init__(self, db: Database) -> None:
        self.runs = db[RUNS]
        self.pages = db[RUN_PAGES]

    async def started(self, run_id: UUID, fields: dict[str, Any], *, session: Session) -> Document:
        doc = await self.runs.find_one_and_update(
            {"_id": str(run_id)},
            {"$set": fields, "$setOnInsert": {"status": "running", "pages_received": []}},
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
        tenant_id: str,
        source_id: str,
        seen: list[str],
        counts: dict[str, int],
        documents: list[Document],
        deletions: list[str],
        session: Session,
    ) -> Document:
        await self.pages.update_one(
            {"_id": f"{run_id}:{page}"},
            {
                "$set": {
                    "run_id": str(run_id),
                    "seen": seen,
                    "counts": counts,
                    "documents": documents,
                    "deletions": deletions,
                    "created_at": now(),
                }
            },
            upsert=True,
            session=session,
        )
        doc = await self.runs.find_one_and_update(
            {"_id": str(run_id)},
            {
                "$addToSet": {"pages_received": page},
                "$setOnInsert": {"status": "running", "tenant_id": tenant_id, "source_id": source_id},
            },
            upsert=True,
            return_document=ReturnDocument.AFTER,
            session=session,
        )
        assert doc is not None
        return doc

    async def completed(self, run_id: UUID, completion: dict[str, Any], *, session: Session) -> Document:
        doc = await self.runs.find_one_and_update(
            {"_id": str(run_id)},
            {"$set": {"completion": completion}, "$setOnInsert": {"status": "running", "pages_received": []}},
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

    async def page_documents(self, run_id: UUID) -> list[Document]:
        return await self.pages.find({"run_id": str(run_id)}).to_list(None)

    async def get(self, run_id: UUID) -> Document | None:
        return await self.runs.find_one({"_id": str(run_id)})


class ProjectionLock:
    """One projection per tenant at a time, across replicas. A request that finds the tenant busy
    marks it dirty; the holder projects again before it lets go, so no request is lost."""

    def __init__(self, db: Database, owner: str, lease_seconds: float = 300.0) -> None:
        self.collection = db[LOCKS]
        self.owner = owner
        self.lease = timedelta(seconds=lease_seconds)

    async def acquire(self, tenant_id: str, *, resend: frozenset[str] = frozenset()) -> bool:
        """Take the tenant's lock; when busy, leave the request (and any resend it asks for) with the
        holder and return False."""
        current = now()
        try:
            await self.collection.insert_one(
                {"_id": tenant_id, "owner": self.owner, "lease_until": current + self.lease, "dirty": False,
                 "resend": []}
            )  # fmt: skip
            return True
        except DuplicateKeyError:
            pass
        taken = await self.collection.find_one_and_update(
            {"_id": tenant_id, "lease_until": {"$lt": current}},
            {"$set": {"owner": self.owner, "lease_until": current + self.lease, "dirty": False, "resend": []}},
        )
        if taken is not None:
            return True
        await self.collection.update_one(
            {"_id": tenant_id}, {"$set": {"dirty": True}, "$addToSet": {"resend": {"$each": sorted(resend)}}}
        )
        return False

    async def release(self, tenant_id: str) -> tuple[bool, frozenset[str]]:
        """Let go unless someone asked meanwhile; returns whether the caller must project again, and
        the resends those requests asked for."""
        released = await self.collection.delete_one({"_id": tenant_id, "owner": self.owner, "dirty": False})
        if released.deleted_count == 1:
            return False, frozenset()
        again = await self.collection.find_one_and_update(
            {"_id": tenant_id, "owner": self.owner, "dirty": True},
            {"$set": {"dirty": False, "resend": [], "lease_until": now() + self.lease}},
        )
        if again is None:
            return False, frozenset()
        return True, frozenset(again.get("resend", []))
