"""Sync history for the admin UI and the operator CLI.

* **Source runs** (collection ``runs``, written by the normaliser, read through
  :class:`skolsynk.storage.runs.SourceRuns`): when a connector's run started and was finalised, full
  or incremental, pages, counts per kind, whether it was complete and why not, the source's error codes.
* **Projections** (collection ``projection_history``, written by the normaliser after every
  projection): per vendor, how many upserts, deletes, held and deferred removals, and why.

Ids, counts, codes and times only. Projection history expires after 90 days (TTL).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from skolsynk.storage.mongo import Database, Document, IndexSpec
from skolsynk.storage.runs import SourceRuns

PROJECTIONS = "projection_history"
PROJECTION_RETENTION = timedelta(days=90)

INDEXES = [
    IndexSpec(PROJECTIONS, [("tenant_id", 1), ("vendor_id", 1), ("at", -1)], name="by_vendor"),
    IndexSpec(PROJECTIONS, [("at", 1)], name="at_ttl", expire_after_seconds=int(PROJECTION_RETENTION.total_seconds())),
]


def _seconds(start: Any, end: Any) -> float | None:
    if isinstance(start, datetime) and isinstance(end, datetime):
        return round((end - start).total_seconds(), 3)
    return None


#: Runs in progress among this many of the latest get their progress read.
PROGRESS_OF_LATEST = 10


class SyncHistory:
    def __init__(self, db: Database) -> None:
        self.runs = SourceRuns(db)
        self.projections = db[PROJECTIONS]

    async def record_projection(
        self, tenant_id: str, vendor_id: str, *, reason: str, upserts: int, deletes: int, held: int, deferred: int
    ) -> None:
        await self.projections.insert_one(
            {
                "tenant_id": tenant_id,
                "vendor_id": vendor_id,
                "at": datetime.now(UTC),
                "reason": reason,
                "upserts": upserts,
                "deletes": deletes,
                "held": held,
                "deferred": deferred,
            }
        )

    async def source_runs(
        self, tenant_id: str, *, source_id: str | None = None, limit: int = 50, skip: int = 0, search: str = ""
    ) -> list[Document]:
        """The tenant's latest runs, newest first, flattened for display (``skip``/``search``: as
        :meth:`SourceRuns.recent`)."""
        runs: list[Document] = []
        for doc in await self.runs.recent(tenant_id, source_id=source_id, limit=limit, skip=skip, search=search):
            completion = doc.get("completion") or {}
            outcome = doc.get("outcome") or {}
            runs.append(
                {
                    "run_id": doc["_id"],
                    "source_id": doc.get("source_id"),
                    "source_kind": doc.get("source_kind"),
                    "mode": doc.get("mode"),
                    "status": doc.get("status"),
                    "started_at": doc.get("started_at"),
                    "finalised_at": doc.get("finalised_at"),
                    "duration_seconds": _seconds(doc.get("started_at"), doc.get("finalised_at")),
                    "pages": completion.get("pages"),
                    "counts": completion.get("counts", {}),
                    "healthy": completion.get("healthy"),
                    "errors": completion.get("errors", []),
                    "complete": outcome.get("complete"),
                    "reasons": outcome.get("reasons", []),
                    "removed": outcome.get("removed"),
                    # A run still coming in: how far it has come (the latest few only, to keep the page cheap).
                    "progress": await self.runs.progress(str(doc["_id"]))
                    if doc.get("status") == "running" and len(runs) < PROGRESS_OF_LATEST
                    else None,
                }
            )
        return runs

    async def vendor_projections(
        self, tenant_id: str, vendor_id: str | None = None, *, limit: int = 50
    ) -> list[Document]:
        criteria: dict[str, Any] = {"tenant_id": tenant_id}
        if vendor_id is not None:
            criteria["vendor_id"] = vendor_id
        cursor = self.projections.find(criteria, {"_id": 0}).sort("at", -1).limit(limit)
        return await cursor.to_list(None)
