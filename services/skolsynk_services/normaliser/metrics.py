"""The normaliser's metrics (labels: tenant, source and vendor ids, kinds, modes, codes; never person data).

Counters are incremented by the replica that did the work (sum them over replicas). The state gauges
(last runs, open runs, data-quality findings, holds) are read from MongoDB by every replica, after a
projection for its tenant (at most once per ``min_interval`` per tenant) and every
:data:`REFRESH_INTERVAL_SECONDS` for all tenants, so every replica reports the same values: aggregate them
with ``max``, never ``sum``.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from skolsynk.logging import get_logger
from skolsynk.storage import Database
from skolsynk.storage.findings import FINDINGS
from skolsynk.storage.holds import HOLDS
from skolsynk.storage.runs import RUNS

log = get_logger(__name__)

#: How often every replica re-reads the state gauges from MongoDB.
REFRESH_INTERVAL_SECONDS = 60.0

RUN_DURATION_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400)


def _timestamp(value: Any) -> float | None:
    if not isinstance(value, datetime):
        return None
    return (value if value.tzinfo is not None else value.replace(tzinfo=UTC)).timestamp()


class NormaliserMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.runs_finalised = Counter(
            "skolsynk_source_runs_finalised",
            "Source runs judged and applied, by tenant, source, kind, mode and whether the snapshot was complete.",
            ["tenant", "source", "source_kind", "mode", "complete"],
            registry=registry,
        )
        self.run_duration = Histogram(
            "skolsynk_source_run_duration_seconds",
            "From a run's start (as the connector reported it) to its finalisation in the normaliser.",
            ["source_kind", "mode"],
            registry=registry,
            buckets=RUN_DURATION_BUCKETS,
        )
        self.records_applied = Counter(
            "skolsynk_source_records_applied",
            "Entities written because a run brought a new or changed version.",
            ["tenant", "source"],
            registry=registry,
        )
        self.records_removed = Counter(
            "skolsynk_source_records_removed",
            "Entities removed: absent from a complete full snapshot, or deleted by the source.",
            ["tenant", "source"],
            registry=registry,
        )
        self.projection_seconds = Histogram(
            "skolsynk_projection_seconds",
            "One projection of a tenant (all its vendors), by reason.",
            ["reason"],
            registry=registry,
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
        )
        self.projections = Counter(
            "skolsynk_projections",
            "Projections of a tenant by mode: changes (only what changed since the last one and what depends on "
            "it) or whole (the whole organiser: subscription changes, resends, the date check, large runs).",
            ["mode"],
            registry=registry,
        )
        self.projection_entities = Histogram(
            "skolsynk_projection_entities",
            "Entities per incremental projection: outputs (whose projection was recomputed) and read (outputs and "
            "what they depend on). Grows with what changed, not with the organiser.",
            ["what"],
            registry=registry,
            buckets=(1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000),
        )
        self.changes_emitted = Counter(
            "skolsynk_vendor_changes_emitted",
            "Per-vendor change events committed to the outbox, by tenant, vendor and operation (upsert, delete).",
            ["tenant", "vendor", "operation"],
            registry=registry,
        )
        self.removals_held = Counter(
            "skolsynk_vendor_removals_held",
            "Removals held back by the mass-deletion guard at a projection (counted at every projection while held).",
            ["tenant", "vendor"],
            registry=registry,
        )
        # State gauges, read from MongoDB (see the module docstring).
        self.last_run_timestamp = Gauge(
            "skolsynk_source_last_run_timestamp_seconds",
            "When the source's latest finalised run was finalised (Unix time).",
            ["tenant", "source", "source_kind"],
            registry=registry,
        )
        self.last_run_complete = Gauge(
            "skolsynk_source_last_run_complete",
            "1 when the source's latest finalised run was complete and healthy, 0 when it was not.",
            ["tenant", "source", "source_kind"],
            registry=registry,
        )
        self.last_complete_run_timestamp = Gauge(
            "skolsynk_source_last_complete_run_timestamp_seconds",
            "When the source's latest complete run was finalised (Unix time).",
            ["tenant", "source", "source_kind"],
            registry=registry,
        )
        self.runs_open = Gauge(
            "skolsynk_source_runs_open",
            "Runs started but not finalised (still receiving pages, or waiting for their completion).",
            ["tenant", "source"],
            registry=registry,
        )
        self.oldest_open_run = Gauge(
            "skolsynk_source_oldest_open_run_start_timestamp_seconds",
            "Start (Unix time) of the source's oldest run that is not finalised.",
            ["tenant", "source"],
            registry=registry,
        )
        self.findings = Gauge(
            "skolsynk_dq_findings",
            "Current data-quality findings, by tenant, code and severity (docs/data-quality.md).",
            ["tenant", "code", "severity"],
            registry=registry,
        )
        self.holds_pending = Gauge(
            "skolsynk_holds_pending",
            "Mass-deletion holds waiting for an operator's decision, by tenant and vendor.",
            ["tenant", "vendor"],
            registry=registry,
        )
        self.holds_pending_removals = Gauge(
            "skolsynk_holds_pending_removals",
            "Removals held by pending holds, by tenant and vendor.",
            ["tenant", "vendor"],
            registry=registry,
        )
        self.oldest_pending_hold = Gauge(
            "skolsynk_holds_oldest_pending_timestamp_seconds",
            "When the oldest pending hold of a tenant and vendor was created (Unix time).",
            ["tenant", "vendor"],
            registry=registry,
        )


class StateGauges:
    """Refreshes the state gauges of :class:`NormaliserMetrics` from MongoDB.

    After a projection the tenant's gauges are refreshed at once when the last refresh of that tenant is
    ``min_interval`` seconds old, otherwise once that much time has passed (by :meth:`run_forever`, one
    refresh for however many projections ended meanwhile). The refresh aggregates the tenant's findings and
    every run and hold: under a trickle of small runs of a large organiser, doing that after every
    projection made the store stall for most of a second every few seconds.
    """

    def __init__(self, db: Database, metrics: NormaliserMetrics, *, min_interval: float = 0.0) -> None:
        self.runs = db[RUNS]
        self.findings = db[FINDINGS]
        self.holds = db[HOLDS]
        self.metrics = metrics
        self.min_interval = min_interval
        self._refreshed_at: dict[str, float] = {}
        self._due: dict[str, float] = {}  # tenant -> when its postponed refresh is to run (monotonic)
        self._wake = asyncio.Event()

    async def after_projection(self, tenant_id: str) -> None:
        """The tenant's findings, and the runs and holds, as a projection just left them: now, or (when
        the tenant was refreshed less than ``min_interval`` ago) postponed until that much time has passed."""
        if tenant_id in self._due:
            return  # a postponed refresh is coming and will see this projection's state too
        due = self._refreshed_at.get(tenant_id, -math.inf) + self.min_interval
        if due <= time.monotonic():
            await self.refresh_tenant(tenant_id)
        else:
            self._due[tenant_id] = due
            self._wake.set()

    async def refresh_tenant(self, tenant_id: str) -> None:
        self._due.pop(tenant_id, None)
        self._refreshed_at[tenant_id] = time.monotonic()
        await self.refresh_findings(tenant_id)
        await self.refresh_runs()
        await self.refresh_holds()

    async def refresh(self) -> None:
        await self.refresh_runs()
        await self.refresh_findings()
        await self.refresh_holds()

    async def refresh_runs(self) -> None:
        m = self.metrics
        latest = await self.runs.aggregate(
            [
                {"$match": {"status": "finalised"}},
                {"$sort": {"finalised_at": -1}},
                {
                    "$group": {
                        "_id": {"t": "$tenant_id", "s": "$source_id"},
                        "kind": {"$first": "$source_kind"},
                        "at": {"$first": "$finalised_at"},
                        "complete": {"$first": "$outcome.complete"},
                    }
                },
            ]
        )
        last = [doc async for doc in latest]
        complete_cursor = await self.runs.aggregate(
            [
                {"$match": {"status": "finalised", "outcome.complete": True}},
                {"$group": {"_id": {"t": "$tenant_id", "s": "$source_id"}, "at": {"$max": "$finalised_at"}}},
            ]
        )
        last_complete = {(d["_id"].get("t"), d["_id"].get("s")): d["at"] async for d in complete_cursor}
        open_cursor = await self.runs.aggregate(
            [
                {"$match": {"status": {"$ne": "finalised"}}},
                {
                    "$group": {
                        "_id": {"t": "$tenant_id", "s": "$source_id"},
                        "n": {"$sum": 1},
                        "oldest": {"$min": "$started_at"},
                    }
                },
            ]
        )
        opened = [doc async for doc in open_cursor]
        for gauge in (m.last_run_timestamp, m.last_run_complete, m.last_complete_run_timestamp, m.runs_open,
                      m.oldest_open_run):  # fmt: skip
            gauge.clear()
        for doc in last:
            tenant, source = doc["_id"].get("t"), doc["_id"].get("s")
            if tenant is None or source is None:
                continue
            kind = str(doc.get("kind") or "unknown")
            at = _timestamp(doc.get("at"))
            if at is not None:
                m.last_run_timestamp.labels(tenant, source, kind).set(at)
            m.last_run_complete.labels(tenant, source, kind).set(1 if doc.get("complete") else 0)
            complete_at = _timestamp(last_complete.get((tenant, source)))
            if complete_at is not None:
                m.last_complete_run_timestamp.labels(tenant, source, kind).set(complete_at)
        for doc in opened:
            # A run whose completion came before its start has neither yet (the group's _id lacks them).
            tenant, source = doc["_id"].get("t"), doc["_id"].get("s")
            if tenant is None or source is None:
                continue
            m.runs_open.labels(tenant, source).set(doc["n"])
            oldest = _timestamp(doc.get("oldest"))
            if oldest is not None:
                m.oldest_open_run.labels(tenant, source).set(oldest)

    async def refresh_findings(self, tenant_id: str | None = None) -> None:
        """All tenants, or one (after its projection)."""
        match: dict[str, Any] = {} if tenant_id is None else {"tenant_id": tenant_id}
        cursor = await self.findings.aggregate(
            [
                {"$match": match},
                {"$group": {"_id": {"t": "$tenant_id", "c": "$code", "s": "$severity"}, "n": {"$sum": 1}}},
            ]
        )
        counts = {(d["_id"]["t"], d["_id"]["c"], d["_id"]["s"]): d["n"] async for d in cursor}
        gauge = self.metrics.findings
        if tenant_id is None:
            gauge.clear()
        else:
            # Codes that disappeared for this tenant must drop to nothing, not keep their last value.
            for labels in _finding_label_sets(gauge):
                if labels[0] == tenant_id and labels not in counts:
                    gauge.remove(*labels)
        for (tenant, code, severity), n in counts.items():
            gauge.labels(tenant, code, severity).set(n)

    async def refresh_holds(self) -> None:
        cursor = await self.holds.aggregate(
            [
                {"$match": {"status": "pending"}},
                {
                    "$group": {
                        "_id": {"t": "$tenant_id", "v": "$vendor_id"},
                        "n": {"$sum": 1},
                        "removals": {"$sum": "$removals"},
                        "oldest": {"$min": "$created_at"},
                    }
                },
            ]
        )
        rows = [doc async for doc in cursor]
        m = self.metrics
        for gauge in (m.holds_pending, m.holds_pending_removals, m.oldest_pending_hold):
            gauge.clear()
        for doc in rows:
            tenant, vendor = doc["_id"]["t"], doc["_id"]["v"]
            m.holds_pending.labels(tenant, vendor).set(doc["n"])
            m.holds_pending_removals.labels(tenant, vendor).set(doc.get("removals") or 0)
            oldest = _timestamp(doc.get("oldest"))
            if oldest is not None:
                m.oldest_pending_hold.labels(tenant, vendor).set(oldest)

    async def run_forever(self, interval: float = REFRESH_INTERVAL_SECONDS) -> None:
        """Every gauge every ``interval`` seconds, and the postponed refreshes of single tenants when due."""
        next_all = time.monotonic()
        while True:
            now = time.monotonic()
            try:
                if now >= next_all:
                    next_all = now + interval
                    covered = list(self._due)  # not those postponed while this refresh reads
                    await self.refresh()
                    for tenant_id in covered:
                        self._refreshed_at[tenant_id] = now
                        self._due.pop(tenant_id, None)
                else:
                    for tenant_id, due in sorted(self._due.items(), key=lambda item: item[1]):
                        if due <= now:
                            await self.refresh_tenant(tenant_id)
            except Exception:
                log.warning("state_gauges_refresh_failed", exc_info=True)  # the next interval tries again
            self._wake.clear()
            wait = min([next_all, *self._due.values()]) - time.monotonic()
            if wait > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=wait)


def _finding_label_sets(gauge: Gauge) -> list[tuple[str, ...]]:
    """The label values a gauge currently has (from its collected samples)."""
    found: list[tuple[str, ...]] = []
    for metric in gauge.collect():
        for sample in metric.samples:
            found.append(tuple(sample.labels[name] for name in ("tenant", "code", "severity")))
    return found
