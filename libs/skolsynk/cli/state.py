"""What the operator command line reads from MongoDB: read-only queries on collections the services
own (the normaliser's runs and holds, the dispatchers' delivery ledger, the GDPR service's erasure
ledger), each through its owner's repository in ``skolsynk.storage``. Ids, counts, statuses and times
only."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from skolsynk.storage import Database, Document, deliveries
from skolsynk.storage.delivery_backlog import DeliveryBacklog
from skolsynk.storage.delivery_health import DEFAULT_FAILING_AFTER, DeliveryHealth, state_of
from skolsynk.storage.erasures import ErasureLedger
from skolsynk.storage.holds import HoldStore
from skolsynk.storage.runs import SourceRuns


@dataclass(frozen=True)
class SourceRun:
    tenant_id: str
    source_id: str
    source_kind: str | None
    mode: str | None
    status: str
    started_at: datetime | None
    finalised_at: datetime | None
    complete: bool | None
    reasons: tuple[str, ...]
    #: How the source's latest runs fare (``skolsynk.storage.runs.SourceHealth``): ok, retrying, failing past
    #: the threshold, or unknown; since when; the error codes of the latest failed run; the last complete run.
    health: str = "unknown"
    failing_since: datetime | None = None
    errors: tuple[str, ...] = ()
    last_complete_at: datetime | None = None


async def latest_runs(
    db: Database,
    tenant_id: str | None = None,
    *,
    now: datetime | None = None,
    failing_after: timedelta = DEFAULT_FAILING_AFTER,
) -> list[SourceRun]:
    """Every source's latest run (by start) and health, sorted by tenant and source."""
    runs = []
    store = SourceRuns(db)
    for doc in await store.latest_per_source(tenant_id):
        outcome = doc.get("outcome") or {}
        health = await store.health(
            doc["_id"]["t"], doc["_id"]["s"], now=now or datetime.now(UTC), failing_after=failing_after
        )
        runs.append(
            SourceRun(
                tenant_id=doc["_id"]["t"],
                source_id=doc["_id"]["s"],
                source_kind=doc.get("kind"),
                mode=doc.get("mode"),
                status=str(doc.get("status") or "unknown"),
                started_at=doc.get("started_at"),
                finalised_at=doc.get("finalised_at"),
                complete=outcome.get("complete"),
                reasons=tuple(outcome.get("reasons") or ()),
                health=health.state,
                failing_since=health.failing_since,
                errors=tuple(health.errors),
                last_complete_at=health.last_complete_at,
            )
        )
    return sorted(runs, key=lambda r: (r.tenant_id, r.source_id))


async def delivery_counts(db: Database) -> dict[tuple[str, str], int]:
    """(vendor, status) -> ledger entries, over every tenant (test-mode entries have status ``test``)."""
    return await deliveries.status_counts(db)


@dataclass(frozen=True)
class PendingHolds:
    tenant_id: str
    vendor_id: str
    holds: int
    removals: int
    oldest: datetime | None


async def pending_holds(db: Database) -> list[PendingHolds]:
    rows = [
        PendingHolds(d["_id"]["t"], d["_id"]["v"], d["n"], int(d.get("removals") or 0), d.get("oldest"))
        for d in await HoldStore(db).pending_by_vendor()
    ]
    return sorted(rows, key=lambda r: (r.tenant_id, r.vendor_id))


async def tenant_holds(db: Database, tenant_id: str) -> list[Document]:
    return await HoldStore(db).for_tenant(tenant_id)


async def hold_history(db: Database, tenant_id: str, *, limit: int) -> list[Document]:
    """The latest decisions on the tenant's holds (and holds that closed undecided), newest first."""
    entries, _ = await HoldStore(db).history(tenant_id, limit=limit)
    return entries


def hold_cause(causes: list[Document]) -> str:
    """A hold's causes in a few words: ``source egil-1 (run ...)``, ``change subscription.update by x``."""
    parts = []
    for cause in causes:
        kind = cause.get("kind")
        if kind == "source":
            parts.append(f"source {cause.get('source_id')} (run {cause.get('run_id')})")
        elif kind == "change":
            parts.append(f"change {cause.get('action')} by {cause.get('actor')}")
        else:
            parts.append(str(cause.get("reason") or kind))
    return "; ".join(parts) or "-"


async def overdue_counts(db: Database) -> dict[tuple[str, str], int]:
    """(tenant, vendor) -> overdue deletions."""
    counts = await ErasureLedger(db).counts()
    return {(t, v): n for (t, v, status), n in counts.items() if status == "overdue"}


async def overdue_deletions(db: Database, tenant_id: str) -> list[Document]:
    return await ErasureLedger(db).entries(tenant_id, status="overdue")


@dataclass(frozen=True)
class PairHealth:
    tenant_id: str
    vendor_id: str
    state: str
    since: datetime | None
    last_error: str | None
    last_error_at: datetime | None
    last_success_at: datetime | None
    #: Changes queued for the vendor and not yet done with; when the oldest was queued (or before).
    pending: int = 0
    oldest_pending_at: datetime | None = None
    oldest_pending_at_least: bool = False


async def delivery_health(
    db: Database, tenant_id: str | None, *, now: datetime, failing_after: timedelta = DEFAULT_FAILING_AFTER
) -> list[PairHealth]:
    """Each (tenant, vendor) pair's delivery state (``ok``, ``retrying``, ``failing`` past ``failing_after``)
    and backlog (``delivery_backlog``)."""
    health_store, backlog_store = DeliveryHealth(db), DeliveryBacklog(db)
    # One organiser's pairs are read by their index, not filtered out of every pair.
    if tenant_id is None:
        found, pairs = await health_store.all(), await backlog_store.all()
    else:
        found = list((await health_store.for_tenant(tenant_id)).values())
        pairs = list((await backlog_store.for_tenant(tenant_id)).values())
    docs = {(str(doc["tenant_id"]), str(doc["vendor_id"])): doc for doc in found}
    backlogs = {(b.tenant_id, b.vendor_id): b for b in pairs}
    rows = []
    for key in sorted(docs.keys() | backlogs.keys()):
        doc, backlog = docs.get(key), backlogs.get(key)
        pending = backlog.pending if backlog is not None else 0
        rows.append(
            PairHealth(
                key[0],
                key[1],
                state_of(doc, now=now, failing_after=failing_after),
                doc.get("since") if doc else None,
                doc.get("last_error") if doc else None,
                doc.get("last_error_at") if doc else None,
                doc.get("last_success_at") if doc else None,
                pending,
                backlog.oldest_queued_at if backlog is not None and pending else None,
                bool(backlog is not None and pending and backlog.oldest_at_least),
            )
        )
    return sorted(rows, key=lambda r: (r.tenant_id, r.vendor_id))
