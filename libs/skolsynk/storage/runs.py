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

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from skolsynk.storage.mongo import Database, Document, Session, stored_time

RUNS = "runs"
RUN_PAGES = "run_pages"
#: The statuses of a run whose pages may hold staged records: the normaliser empties a run's pages before it
#: marks the run finalised, so the pages of a finalised run (a week of them is kept) hold none.
STAGING = ("running", "ready", "finalising")
#: How many of a source's latest runs are looked at to find when its current streak of failures began.
RUNS_LOOKED_AT = 30
#: A source whose runs have been incomplete this long is failing, unless the reader says otherwise (the
#: same threshold as deliveries: ``SKOLSYNK_DELIVERY_FAILING_MINUTES``).
DEFAULT_FAILING_AFTER = timedelta(minutes=15)

SourceState = Literal["unknown", "ok", "retrying", "failing"]


@dataclass(frozen=True)
class SourceHealth:
    """How a source's runs fare, from its latest finished runs: ``unknown`` (none finished yet), ``ok`` (the
    last finished run was complete), ``retrying`` (the latest finished runs were incomplete, since
    ``failing_since``) or ``failing`` (so for longer than the threshold). ``errors``: the error codes the
    connector reported for the latest failed run (never the source's own text), ``reasons``: why the run was
    incomplete (counts and pages, in English); ``running_since``: a run in progress now."""

    state: SourceState
    failing_since: datetime | None = None
    failed_runs: int = 0
    errors: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    source_kind: str | None = None
    last_complete_at: datetime | None = None
    running_since: datetime | None = None


def source_health_of(
    runs: list[Document], *, now: datetime, failing_after: timedelta = DEFAULT_FAILING_AFTER
) -> SourceHealth:
    """The health of a source from its latest runs, newest first (runs in progress are passed over)."""
    streak: list[Document] = []
    last_complete: Document | None = None
    running_since: datetime | None = None
    for run in runs:
        if run.get("status") != "finalised":
            if running_since is None and not streak and last_complete is None:
                running_since = stored_time(run.get("started_at"))
            continue
        if (run.get("outcome") or {}).get("complete") is not False:
            last_complete = run
            break
        streak.append(run)
    complete_at = (
        stored_time(last_complete.get("finalised_at") or last_complete.get("started_at")) if last_complete else None
    )
    if not streak:
        return SourceHealth(
            "ok" if last_complete is not None else "unknown",
            last_complete_at=complete_at,
            running_since=running_since,
            source_kind=str(last_complete.get("source_kind") or "") or None if last_complete else None,
        )
    since = stored_time(streak[-1].get("started_at"))
    latest = streak[0]
    errors = [str(c) for c in (latest.get("completion") or {}).get("errors") or []][:5]
    reasons = [str(r) for r in (latest.get("outcome") or {}).get("reasons") or []][:5]
    failing = since is not None and now - since >= failing_after
    return SourceHealth(
        "failing" if failing else "retrying",
        failing_since=since,
        failed_runs=len(streak),
        errors=errors,
        reasons=reasons,
        source_kind=str(latest.get("source_kind") or "") or None,
        last_complete_at=complete_at,
        running_since=running_since,
    )


def _runs_of(tenant_id: str, source_id: str | None, search: str) -> dict[str, Any]:
    """The runs of the tenant, of one of its sources, or of the sources whose id contains ``search``."""
    criteria: dict[str, Any] = {"tenant_id": tenant_id}
    if source_id is not None:
        criteria["source_id"] = source_id
    elif search:
        criteria["source_id"] = {"$regex": re.escape(search), "$options": "i"}
    return criteria


class SourceRuns:
    """What components other than the normaliser read from and do to its runs."""

    def __init__(self, db: Database) -> None:
        self.runs = db[RUNS]
        self.pages = db[RUN_PAGES]

    async def recent(
        self, tenant_id: str, *, source_id: str | None = None, limit: int = 50, skip: int = 0, search: str = ""
    ) -> list[Document]:
        """The tenant's (or one of its sources') latest runs, newest first; ``skip`` the newest that many,
        ``search``: part of the source's id (any case)."""
        criteria = _runs_of(tenant_id, source_id, search)
        cursor = self.runs.find(criteria).sort("started_at", -1).skip(max(skip, 0)).limit(limit)
        return [doc async for doc in cursor]

    async def count(self, tenant_id: str, *, source_id: str | None = None, search: str = "") -> int:
        """How many runs :meth:`recent` pages through."""
        return await self.runs.count_documents(_runs_of(tenant_id, source_id, search))

    async def health(
        self, tenant_id: str, source_id: str, *, now: datetime, failing_after: timedelta = DEFAULT_FAILING_AFTER
    ) -> SourceHealth:
        """How the source's runs fare (:func:`source_health_of` over its latest :data:`RUNS_LOOKED_AT` runs)."""
        runs = await self.recent(tenant_id, source_id=source_id, limit=RUNS_LOOKED_AT)
        return source_health_of(runs, now=now, failing_after=failing_after)

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

    async def forget_staged(self, tenant_id: str, entity_ids: list[str], *, session: Session | None = None) -> int:
        """Pull the staged records of these entities of the tenant out of the pages that hold them (the GDPR
        purge); returns how many pages changed. Only runs not yet finalised have staged records
        (:data:`STAGING`): those are found by status (``by_status``; the tenant's, and any whose start has not
        named its tenant yet), their pages by run (``by_run_page``), and the records looked for here (with
        the records in the filter the Mongo wire server walks every page); the week of finalised runs'
        pages is never read (a multikey index on the records would do it too, but on the wire server it
        makes the concurrent pages of one run conflict)."""
        open_runs = self.runs.find({"status": {"$in": list(STAGING)}}, {"tenant_id": 1}, session=session)
        run_ids = [doc["_id"] async for doc in open_runs if doc.get("tenant_id") in (tenant_id, None)]
        if not run_ids:
            return 0
        holding = self.pages.find({"run_id": {"$in": run_ids}}, {"documents._id": 1}, session=session)
        wanted = set(entity_ids)
        page_ids = [
            page["_id"]
            async for page in holding
            if any(record.get("_id") in wanted for record in page.get("documents") or ())
        ]
        if not page_ids:
            return 0
        pulled = await self.pages.update_many(
            {"_id": {"$in": page_ids}},
            {"$pull": {"documents": {"_id": {"$in": entity_ids}}}},
            session=session,
        )
        return pulled.modified_count
