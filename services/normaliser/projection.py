"""Projection: what each vendor of a tenant should hold now, compared with what it was sent, and
the differences sent as per-vendor change events through the outbox.

The vendor view (``vendor_views``) is the record of what each vendor was last sent per entity: the
resource's hash, a version that grows with every change, and whether the entity is present. An
unchanged entity costs no write and emits nothing. Removals that would breach a subscription's
mass-deletion guard for one school unit are held for review (``holds``), the rest keep flowing.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from uuid import UUID

from pymongo import UpdateOne

from normaliser.metrics import NormaliserMetrics
from normaliser.state import VENDOR_VIEWS, EntityStore, now
from skolsynk.contracts.gdpr import DeletionReason, DeletionRequested
from skolsynk.contracts.vendor import VendorChange
from skolsynk.domain.reconcile import reconcile, school_unit_codes_by_entity
from skolsynk.domain.selection import ProjectedResource, TenantState, project
from skolsynk.domain.ss12000 import KIND_ORDER, EntityKind
from skolsynk.domain.subscription import VendorProfile, VendorSubscription
from skolsynk.logging import get_logger
from skolsynk.messaging import Outbox
from skolsynk.storage import Database, Document, MongoClient
from skolsynk.storage.erasures import ErasureRequestStore, suppressed_for_vendor
from skolsynk.storage.findings import FindingStore
from skolsynk.storage.history import SyncHistory
from skolsynk.storage.holds import HOLDS
from skolsynk.storage.subscriptions import SubscriptionStore

log = get_logger(__name__)

#: Change events committed per transaction (vendor view updates + outbox entries together).
BATCH_SIZE = 100


@dataclass
class VendorReport:
    upserts: int = 0
    deletes: int = 0
    held: int = 0
    #: Removals waiting for the subscription's deletion grace period.
    deferred: int = 0
    holds: list[str] = field(default_factory=list)


@dataclass
class ProjectionReport:
    tenant_id: str
    vendors: dict[str, VendorReport] = field(default_factory=dict)
    findings: int = 0


@dataclass(frozen=True)
class _Change:
    kind: EntityKind
    entity_id: UUID
    operation: str
    version: int
    resource: ProjectedResource | None
    view: Document
    #: Deletes: why, and since when the entity was out of the selection (person deletes go to the GDPR ledger).
    reason: DeletionReason | None = None
    removed_at: datetime | None = None


def _kind_rank(kind: EntityKind) -> int:
    return KIND_ORDER.index(kind)


class Projector:
    def __init__(
        self,
        mongo: MongoClient,
        db: Database,
        outbox: Outbox,
        *,
        exchange: str,
        producer: str,
        ensure_vendor_queue: Callable[[str], Awaitable[None]],
        gdpr_exchange: str,
        clock: Callable[[], datetime] = now,
        metrics: NormaliserMetrics | None = None,
    ) -> None:
        self.metrics = metrics
        self.ensure_vendor_queue = ensure_vendor_queue
        self.gdpr_exchange = gdpr_exchange
        self.clock = clock
        self.erasure_requests = ErasureRequestStore(db)
        self.history = SyncHistory(db)
        self.mongo = mongo
        self.db = db
        self.outbox = outbox
        self.exchange = exchange
        self.producer = producer
        self.entities = EntityStore(db)
        self.findings = FindingStore(db)
        self.subscriptions = SubscriptionStore(db)
        self.views = db[VENDOR_VIEWS]
        self.holds = db[HOLDS]

    async def tenant_state(self, tenant_id: str, today: date) -> TenantState:
        state, _ = reconcile(tenant_id, await self.entities.load_tenant(tenant_id), today)
        return state

    async def project_tenant(
        self,
        tenant_id: str,
        *,
        today: date,
        reason: str,
        correlation_id: UUID | None = None,
        resend_vendor_ids: frozenset[str] = frozenset(),
    ) -> ProjectionReport:
        state, findings = reconcile(tenant_id, await self.entities.load_tenant(tenant_id), today)
        await self.findings.replace_reconcile(tenant_id, findings)
        await self.findings.place_in_school_units(tenant_id, school_unit_codes_by_entity(state))
        report = ProjectionReport(tenant_id=tenant_id, findings=len(findings))
        suppressed = await self.erasure_requests.suppressed(tenant_id)
        person_ids = {str(s.id) for s in state.entities if s.kind is EntityKind.PERSON}
        for subscription, profile in await self.subscriptions.for_tenant(tenant_id):
            await self.ensure_vendor_queue(subscription.vendor_id)
            # Erasure and objection requests keep a person out of the vendor's selection.
            suppressed_here = suppressed_for_vendor(suppressed, subscription.vendor_id)
            selecting = subscription.model_copy(
                update={"exclude_persons": subscription.exclude_persons | set(suppressed_here)}
            )
            desired = {} if subscription.ended_at is not None else project(state, selecting, profile, today)
            report.vendors[subscription.vendor_id] = await self._apply(
                state,
                subscription,
                profile,
                desired,
                removal_reason=_RemovalReasons(subscription, suppressed_here, person_ids),
                reason=reason,
                correlation_id=correlation_id,
                resend=subscription.vendor_id in resend_vendor_ids,
            )
        for vendor_id, vendor_report in report.vendors.items():
            if vendor_report.upserts or vendor_report.deletes or vendor_report.held or vendor_report.deferred:
                await self.history.record_projection(
                    tenant_id,
                    vendor_id,
                    reason=reason,
                    upserts=vendor_report.upserts,
                    deletes=vendor_report.deletes,
                    held=vendor_report.held,
                    deferred=vendor_report.deferred,
                )
        log.info(
            "tenant_projected",
            tenant_id=tenant_id,
            reason=reason,
            vendors={v: (r.upserts, r.deletes, r.held, r.deferred) for v, r in report.vendors.items()},
        )
        return report

    async def view_of(self, tenant_id: str, vendor_id: str) -> dict[str, Document]:
        cursor = self.views.find({"tenant_id": tenant_id, "vendor_id": vendor_id})
        return {doc["entity_id"]: doc async for doc in cursor}

    async def _apply(
        self,
        state: TenantState,
        subscription: VendorSubscription,
        profile: VendorProfile,
        desired: dict[UUID, ProjectedResource],
        *,
        removal_reason: _RemovalReasons,
        reason: str,
        correlation_id: UUID | None,
        resend: bool = False,
    ) -> VendorReport:
        tenant_id, vendor_id = subscription.tenant_id, subscription.vendor_id
        view = await self.view_of(tenant_id, vendor_id)
        withheld = {str(i) for i in state.withheld}
        changes: list[_Change] = []
        came_back: list[str] = []
        for entity_id, resource in desired.items():
            current = view.get(str(entity_id))
            if str(resource.source_entity_id or entity_id) in withheld:
                continue
            if current is not None and current.get("removal_pending_since") is not None:
                came_back.append(str(entity_id))
            unchanged = current is not None and current["present"] and current["hash"] == resource.hash
            # Going live (or a full resend) sends what test mode only recorded.
            mode_changed = (
                current is not None and current.get("test_mode", subscription.test_mode) != subscription.test_mode
            )
            if unchanged and not mode_changed and not resend:
                continue
            version = (current["version"] if current else 0) + 1
            changes.append(_Change(resource.kind, entity_id, "upsert", version, resource, current or {}))
        removals = [
            doc
            for entity_id, doc in view.items()
            if doc["present"] and UUID(entity_id) not in desired and doc.get("source_entity_id") not in withheld
        ]
        report = VendorReport()
        # An ended subscription is the organiser's explicit decision: no guard, no grace.
        if subscription.ended_at is None:
            removals = await self._guard(subscription, view, removals, report)
        removals, waiting = await self._grace(subscription, removals, removal_reason, came_back)
        report.deferred = waiting
        changes += [
            _Change(
                EntityKind(doc["kind"]),
                UUID(doc["entity_id"]),
                "delete",
                doc["version"] + 1,
                None,
                doc,
                reason=removal_reason(doc),
                removed_at=doc.get("removal_pending_since"),
            )
            for doc in removals
        ]
        upserts = sorted(
            (c for c in changes if c.operation == "upsert"), key=lambda c: (_kind_rank(c.kind), str(c.entity_id))
        )
        deletes = sorted(
            (c for c in changes if c.operation == "delete"), key=lambda c: (-_kind_rank(c.kind), str(c.entity_id))
        )
        ordered = upserts + deletes
        for start in range(0, len(ordered), BATCH_SIZE):
            await self._commit(subscription, ordered[start : start + BATCH_SIZE], reason, correlation_id)
        report.upserts, report.deletes = len(upserts), len(deletes)
        if self.metrics is not None:
            self.metrics.changes_emitted.labels(tenant_id, vendor_id, "upsert").inc(report.upserts)
            self.metrics.changes_emitted.labels(tenant_id, vendor_id, "delete").inc(report.deletes)
            if report.held:
                self.metrics.removals_held.labels(tenant_id, vendor_id).inc(report.held)
        return report

    async def _guard(
        self,
        subscription: VendorSubscription,
        view: dict[str, Document],
        removals: list[Document],
        report: VendorReport,
    ) -> list[Document]:
        """Hold the removals of any school unit that would lose more than the guard allows."""
        tenant_id, vendor_id = subscription.tenant_id, subscription.vendor_id
        population: dict[str, int] = defaultdict(int)
        for doc in view.values():
            if doc["present"]:
                for unit_id in doc.get("school_unit_ids", []):
                    population[unit_id] += 1
        by_unit: dict[str, list[Document]] = defaultdict(list)
        for doc in removals:
            for unit_id in doc.get("school_unit_ids", []) or ["-"]:
                by_unit[unit_id].append(doc)
        holds = {
            doc["school_unit_id"]: doc
            async for doc in self.holds.find({"tenant_id": tenant_id, "vendor_id": vendor_id})
        }
        held_ids: set[str] = set()
        for unit_id, docs in by_unit.items():
            if unit_id == "-" or not subscription.guard.breached(len(docs), population[unit_id]):
                continue
            ids = sorted(d["entity_id"] for d in docs)
            hold = holds.get(unit_id)
            decided = hold is not None and set(ids) <= set(hold.get("entity_ids", []))
            if decided and hold is not None and hold.get("status") == "approved":
                continue  # reviewed and approved: these removals go ahead
            held_ids.update(ids)
            if decided and hold is not None and hold.get("status") == "discarded":
                report.holds.append(unit_id)  # kept, not asked again while the removals are the same
                continue
            codes = sorted({c for d in docs for c in d.get("school_unit_codes", [])})
            await self.holds.update_one(
                {"_id": f"{tenant_id}:{vendor_id}:{unit_id}"},
                {
                    "$set": {
                        "tenant_id": tenant_id,
                        "vendor_id": vendor_id,
                        "school_unit_id": unit_id,
                        "school_unit_codes": codes,
                        "entity_ids": ids,
                        "removals": len(ids),
                        "population": population[unit_id],
                        "status": "pending",
                        "updated_at": now(),
                    },
                    "$setOnInsert": {"created_at": now()},
                },
                upsert=True,
            )
            report.holds.append(unit_id)
            log.warning(
                "removals_held", tenant_id=tenant_id, vendor_id=vendor_id, school_unit_id=unit_id, removals=len(ids)
            )
        # Holds whose removals no longer apply (or were applied) are done.
        for unit_id, hold in holds.items():
            if unit_id not in report.holds:
                await self.holds.delete_one({"_id": hold["_id"]})
        report.held = len(held_ids)
        return [doc for doc in removals if doc["entity_id"] not in held_ids]

    async def _grace(
        self,
        subscription: VendorSubscription,
        removals: list[Document],
        removal_reason: _RemovalReasons,
        came_back: list[str],
    ) -> tuple[list[Document], int]:
        """Two-phase deletion: removals wait ``deletion_grace_hours`` (marked in the vendor view) and go
        out once it has passed; entities that came back meanwhile lose their mark. Returns the removals
        due now and how many wait."""
        if came_back:
            await self.views.update_many(
                {"_id": {"$in": [f"{subscription.tenant_id}:{subscription.vendor_id}:{e}" for e in came_back]}},
                {"$set": {"removal_pending_since": None}},
            )
        grace = timedelta(hours=subscription.deletion_grace_hours)
        if not grace:
            return removals, 0
        current = self.clock()
        due: list[Document] = []
        marks: list[str] = []
        waiting = 0
        for doc in removals:
            if removal_reason(doc) in IMMEDIATE:
                due.append(doc)
                continue
            since = doc.get("removal_pending_since")
            if since is None:
                marks.append(doc["_id"])
                waiting += 1
            elif _aware(since) + grace <= current:
                due.append(doc)
            else:
                waiting += 1
        if marks:
            await self.views.update_many({"_id": {"$in": marks}}, {"$set": {"removal_pending_since": current}})
        return due, waiting

    async def _commit(
        self, subscription: VendorSubscription, batch: list[_Change], reason: str, correlation_id: UUID | None
    ) -> None:
        tenant_id, vendor_id = subscription.tenant_id, subscription.vendor_id

        async def unit_of_work(session: Any) -> None:
            operations = []
            for change in batch:
                resource = change.resource
                fields: dict[str, Any] = {
                    "tenant_id": tenant_id,
                    "vendor_id": vendor_id,
                    "entity_id": str(change.entity_id),
                    "kind": change.kind.value,
                    "version": change.version,
                    "present": change.operation == "upsert",
                    "test_mode": subscription.test_mode,
                    "updated_at": now(),
                    "removal_pending_since": None,
                }
                if resource is not None:
                    fields |= {
                        "hash": resource.hash,
                        "school_unit_ids": list(resource.school_unit_ids),
                        "school_unit_codes": list(resource.school_unit_codes),
                        "roles": list(resource.roles),
                        "source_entity_id": str(resource.source_entity_id or change.entity_id),
                    }
                else:
                    fields["hash"] = None
                operations.append(
                    UpdateOne({"_id": f"{tenant_id}:{vendor_id}:{change.entity_id}"}, {"$set": fields}, upsert=True)
                )
                event = VendorChange(
                    vendor_id=vendor_id,
                    entity_kind=change.kind,
                    entity_id=change.entity_id,
                    operation="upsert" if resource is not None else "delete",
                    version=change.version,
                    resource=resource.resource if resource is not None else None,
                    school_unit_ids=[
                        UUID(u)
                        for u in (resource.school_unit_ids if resource else change.view.get("school_unit_ids", []))
                    ],
                    test_mode=subscription.test_mode,
                    reason=reason,
                )
                envelope = event.to_envelope(tenant_id=tenant_id, correlation_id=correlation_id, producer=self.producer)
                await self.outbox.add(
                    envelope, exchange=self.exchange, routing_key=f"{vendor_id}.{tenant_id}", session=session
                )
                if change.kind is EntityKind.PERSON and change.reason is not None and not subscription.test_mode:
                    requested_at = self.clock()
                    deletion = DeletionRequested(
                        vendor_id=vendor_id,
                        person_id=UUID(change.view.get("source_entity_id") or str(change.entity_id)),
                        vendor_entity_id=change.entity_id,
                        version=change.version,
                        reason=change.reason,
                        requested_at=requested_at,
                        removed_at=_aware(change.removed_at) if change.removed_at else requested_at,
                    )
                    await self.outbox.add(
                        deletion.to_envelope(
                            tenant_id=tenant_id, correlation_id=correlation_id, producer=self.producer
                        ),
                        exchange=self.gdpr_exchange,
                        routing_key=DeletionRequested.message_type,
                        session=session,
                    )
            await self.views.bulk_write(operations, ordered=True, session=session)

        async with self.mongo.start_session() as session:
            await session.with_transaction(unit_of_work)
        self.outbox.notify()


#: Removals that never wait for a grace period: the organiser's explicit decisions.
IMMEDIATE = frozenset({DeletionReason.ERASURE_REQUEST, DeletionReason.OBJECTION, DeletionReason.SUBSCRIPTION_ENDED})


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


@dataclass(frozen=True)
class _RemovalReasons:
    """Why an entity leaves one vendor's selection (recorded in the GDPR ledger for persons)."""

    subscription: VendorSubscription
    suppressed: dict[str, str]  # person id -> "erasure" | "objection"
    persons_in_source: set[str]

    def __call__(self, view: Document) -> DeletionReason:
        source_id = view.get("source_entity_id") or view["entity_id"]
        if self.subscription.ended_at is not None:
            return DeletionReason.SUBSCRIPTION_ENDED
        request = self.suppressed.get(source_id)
        if request is not None:
            return DeletionReason.OBJECTION if request == "objection" else DeletionReason.ERASURE_REQUEST
        if view["kind"] == EntityKind.PERSON.value and source_id not in self.persons_in_source:
            return DeletionReason.LEFT_SOURCE
        return DeletionReason.LEFT_SELECTION
