"""The normaliser's source runs (collections ``runs`` and ``run_pages``): named here, and the queries
other components run on them.

* ``runs``: one document per source run (start, completion, status, outcome); read by the admin
  service's sync history and the operator CLI.
* ``run_pages``: one document per page of a run (ids seen, counts, staged records until the run is
  finalised); the GDPR purge pulls a purged person's staged records out of them.

The normaliser is the only other writer; its bookkeeping queries and their indexes are in
``services/skolsynk_services/normaliser/state.py`` (``RunStore``). Ids, counts, codes and times only,
apart from the staged records.
"""

from __future__ import annotations

from typing import Any

from skolsynk.storage.mongo import Database, Document, Session

RUNS = "runs"
RUN_PAGES = "run_pages"


class SourceRuns:
    """What components other than the normaliser read from and do to its runs."""

    def __init__(self, db: Database) -> None:
        self.runs = db[RUNS]
        self.pages = db[RUN_PAGES]

    async def recent(self, tenant_id: str, *, source_id: str | None = None, limit: int = 50) -> list[Document]:
        """The tenant's (or one of its sources') latest runs, newest first."""
        criteria: dict[str, Any] = {"tenant_id": tenant_id}
        if source_id is not None:
            criteria["source_id"] = source_id
        return [doc async for doc in self.runs.find(criteria).sort("started_at", -1).limit(limit)]

    async def progress(self, run_id: str) -> dict[str, int]:
        """How far a run in progress has come: the pages in, and their records by kind (only the pages'
        ``counts`` are read, never their records)."""
        pages = 0
        records: dict[str, int] = {}
        cursor = self.pages.find({"run_id": run_id, "received": {"$ne": False}}, {"_id": 0, "counts": 1})
        async for doc in cursor:
            pages += 1
            for kind, count in (doc.get("counts") or {}).items():
                records[kind] = records.get(kind, 0) + int(count)
        return {"pages": pages, "records": sum(records.values())}

    async def latest_per_source(self, tenant_id: str | None = None) -> list[Document]:
        """Every source's latest run (by start), of every tenant or of one: ``_id`` is ``{t: tenant,
        s: source}``, then ``kind``, ``mode``, ``status``, ``started_at``, ``finalised_at``, ``outcome``."""
        match: dict[str, Any] = {"tenant_id": {"$ne": None}, "source_id": {"$ne": None}}
        if tenant_id is not None:
            match["tenant_id"] = tenant_id
        cursor = await self.runs.aggregate(
            [
                {"$match": match},
                {"$sort": {"started_at": -1}},
                {
                    "$group": {
                        "_id": {"t": "$tenant_id", "s": "$source_id"},
                        "kind": {"$first": "$source_kind"},
                        "mode": {"$first": "$mode"},
                        "status": {"$first": "$status"},
                        "started_at": {"$first": "$started_at"},
                        "finalised_at": {"$first": "$finalised_at"},
                        "outcome": {"$first": "$outcome"},
                    }
                },
            ]
        )
        return [doc async for doc in cursor]

    async def forget_staged(self, entity_ids: list[str], *, session: Session | None = None) -> int:
        """Pull the staged records of these entities out of every page (the GDPR purge); returns how
        many pages changed."""
        pulled = await self.pages.update_many(
            {"documents._id": {"$in": entity_ids}},
            {"$pull": {"documents": {"_id": {"$in": entity_ids}}}},
            session=session,
        )
        return pulled.modified_count
