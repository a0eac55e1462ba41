"""Drift checks: what an EGIL SCIM vendor actually holds (its ``GET`` lists), compared with what the
delivery ledger says it was sent.

* **missing** (delivered, but the vendor no longer has it: restored from a backup, deleted by hand):
  the vendor gets its whole selection again (a resend through the normaliser; creates recover from
  the 404s, unchanged ones cost the vendor a ``PUT``);
* **ghosts** (the vendor still holds what skolsynk deleted: a lost ``DELETE``): deleted again;
* **unmanaged** (the vendor holds ids skolsynk never sent: another integration or manual accounts):
  reported, never touched.

One replica per vendor runs it per interval (a slot in ``schedules``); each check is stored in
``drift_reports`` (ids and counts only) and counted in metrics. Queue vendors cannot be inspected:
what they hold is theirs to reconcile from their feed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from skolsynk.adapters.egil import EgilResourceType
from skolsynk.contracts.vendor import ProjectionRequested
from skolsynk.domain.ss12000 import EntityKind
from skolsynk.logging import get_logger
from skolsynk.messaging import Publisher
from skolsynk.storage import Database, IndexSpec
from skolsynk.storage.deliveries import DRIFT_REPORTS, DeliveryLedger
from skolsynk.storage.schedules import Schedules
from skolsynk_services.dispatcher.metrics import DispatcherMetrics
from skolsynk_services.dispatcher.scim import EgilScimClient

log = get_logger(__name__)

#: At most this many ids of each finding are kept in a report (the counts are complete).
SAMPLE = 50
INDEXES = [
    IndexSpec(DRIFT_REPORTS, [("vendor_id", 1), ("at", -1)], name="by_vendor"),
    IndexSpec(DRIFT_REPORTS, [("at", 1)], name="at_ttl", expire_after_seconds=90 * 24 * 3600),
]


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class DriftReport:
    vendor_id: str
    at: datetime
    missing: dict[str, list[str]] = field(default_factory=dict)  # tenant -> ids
    ghosts: dict[str, list[str]] = field(default_factory=dict)
    unmanaged: int = 0
    redeleted: int = 0
    resend_requested: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not self.missing and not self.ghosts

    def document(self) -> dict[str, Any]:
        return {
            "vendor_id": self.vendor_id,
            "at": self.at,
            "missing": sum(len(v) for v in self.missing.values()),
            "ghosts": sum(len(v) for v in self.ghosts.values()),
            "unmanaged": self.unmanaged,
            "redeleted": self.redeleted,
            "resend_requested": self.resend_requested,
            "missing_by_tenant": {t: len(ids) for t, ids in self.missing.items()},
            "ghosts_by_tenant": {t: len(ids) for t, ids in self.ghosts.items()},
            "missing_sample": {t: ids[:SAMPLE] for t, ids in self.missing.items()},
            "ghost_sample": {t: ids[:SAMPLE] for t, ids in self.ghosts.items()},
        }


class DriftChecker:
    def __init__(
        self,
        vendor_id: str,
        kinds: frozenset[EntityKind],
        db: Database,
        scim: EgilScimClient,
        publisher: Publisher,
        *,
        control_exchange: str,
        interval: timedelta,
        metrics: DispatcherMetrics | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.vendor_id = vendor_id
        self.kinds = kinds
        self.ledger = DeliveryLedger(db, vendor_id)
        self.reports = db[DRIFT_REPORTS]
        self.schedules = Schedules(db)
        self.scim = scim
        self.publisher = publisher
        self.control_exchange = control_exchange
        self.interval = interval
        self.metrics = metrics
        self.clock = clock

    async def claim_slot(self) -> bool:
        """One replica of the vendor's dispatcher checks per interval; the first check is one interval
        after the first start (a fresh installation has nothing to compare yet)."""
        slot = f"drift:{self.vendor_id}"
        current = self.clock()
        await self.schedules.ensure(slot, first_at=current + self.interval)
        return await self.schedules.claim(slot, now=current, interval=self.interval)

    async def check(self) -> DriftReport:
        report = DriftReport(self.vendor_id, self.clock())
        types = {EgilResourceType.for_kind(kind) for kind in self.kinds}
        expected: dict[str, dict[str, str]] = {t.endpoint: {} for t in types}  # endpoint -> id -> tenant
        deleted: dict[str, dict[str, str]] = {t.endpoint: {} for t in types}
        async for entry in self.ledger.delivered_live():
            endpoint = EgilResourceType.for_kind(EntityKind(entry["kind"])).endpoint
            if endpoint not in expected:
                continue
            target = expected if entry["operation"] == "upsert" else deleted
            target[endpoint][entry["entity_id"]] = entry["tenant_id"]
        # Organisers with their own credentials are a tenant of their own at the vendor: each is compared
        # alone, with its key or certificate; the others together, with the catalogue entry's. A tenant with
        # nothing expected or deleted there is not listed (with everyone on their own certificates, the
        # catalogue entry may have none the vendor accepts).
        own = self.scim.own_tenants
        groups: list[str | None] = [None, *sorted(own)]
        for egil_type in sorted(types, key=lambda t: t.endpoint):
            endpoint = egil_type.endpoint
            for group in groups:

                def mine(tenant_id: str, group: str | None = group) -> bool:
                    return tenant_id == group if group is not None else tenant_id not in own

                want = {e: t for e, t in expected[endpoint].items() if mine(t)}
                gone = {e: t for e, t in deleted[endpoint].items() if mine(t)}
                if not want and not gone:
                    continue
                if group is not None and group in self.scim.unusable_tenants:
                    continue  # its own credentials cannot be used: its tenant cannot be read (delivery waits too)
                held = await self.scim.list_ids(egil_type, tenant_id=group)
                for entity_id in sorted(set(want) - held):
                    report.missing.setdefault(want[entity_id], []).append(entity_id)
                for entity_id in sorted(held - set(want)):
                    tenant_id = gone.get(entity_id)
                    if tenant_id is None:
                        report.unmanaged += 1
                        continue
                    report.ghosts.setdefault(tenant_id, []).append(entity_id)
                    await self.scim.delete(egil_type, entity_id, tenant_id=group)
                    report.redeleted += 1
        for tenant_id in sorted(report.missing):
            await self.publisher.publish(
                ProjectionRequested(reason="drift", resend_vendor_id=self.vendor_id).to_envelope(
                    tenant_id=tenant_id, producer=f"dispatcher-{self.vendor_id}"
                ),
                exchange=self.control_exchange,
                routing_key=ProjectionRequested.message_type,
            )
            report.resend_requested.append(tenant_id)
        await self.reports.insert_one(report.document())
        self._observe(report)
        log.info(
            "drift_checked",
            vendor_id=self.vendor_id,
            missing=report.document()["missing"],
            ghosts=report.document()["ghosts"],
            unmanaged=report.unmanaged,
        )
        return report

    def _observe(self, report: DriftReport) -> None:
        if self.metrics is None:
            return
        document = report.document()
        self.metrics.drift.labels(self.vendor_id, "missing").set(document["missing"])
        self.metrics.drift.labels(self.vendor_id, "ghosts").set(document["ghosts"])
        self.metrics.drift.labels(self.vendor_id, "unmanaged").set(report.unmanaged)
        self.metrics.drift_checks.labels(self.vendor_id, "clean" if report.clean else "repaired").inc()
