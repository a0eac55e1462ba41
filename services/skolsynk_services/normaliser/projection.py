"""Projection: what each vendor of a tenant should hold now, compared with what it was sent, and
the differences sent as per-vendor change events through the outbox.

The vendor view (``vendor_views``) is the record of what each vendor was last sent per entity: the
resource's hash, a version that grows with every change, and whether the entity is present. An
unchanged entity costs no write and emits nothing. Removals that would breach a subscription's
mass-deletion guard for one school unit are held for review (``holds``), the rest keep flowing.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

from pymongo import UpdateOne

from skolsynk.contracts.gdpr import DeletionReason, DeletionRequested
from skolsynk.contracts.vendor import VendorChange
from skolsynk.domain.dependencies import referenced_ids, stored, token, uniqueness_tokens
from skolsynk.domain.quality import Finding
from skolsynk.domain.reconcile import missing_marking_summary, reconcile, school_unit_codes_by_entity
from skolsynk.domain.selection import ProjectedResource, TenantState, project
from skolsynk.domain.ss12000 import KIND_ORDER, EntityKind, Person
from skolsynk.domain.subscription import MissingMarkingPolicy, VendorProfile, VendorSubscription
from skolsynk.logging import get_logger
from skolsynk.messaging import Outbox, OutboxEntry
from skolsynk.storage import Database, Document, MongoClient, in_parts
from skolsynk.storage.admin import OrganiserSettings
from skolsynk.storage.delivery_backlog import DeliveryBacklog
from skolsynk.storage.erasures import ErasureRequestStore, suppressed_for_vendor
from skolsynk.storage.findings import FindingStore
from skolsynk.storage.history import SyncHistory
from skolsynk.storage.holds import HOLDS, HeldEntity, HoldCause, HoldStore, merge_causes
from skolsynk.storage.neighbourhood import Neighbourhood
from skolsynk.storage.projection_locks import PROJECTION_REMOVALS
from skolsynk.storage.subscriptions import SubscriptionStore
from skolsynk.storage.vendor_views import ABSENT_RETENTION, VENDOR_VIEWS
from skolsynk_services.normaliser.metrics import NormaliserMetrics
from skolsynk_services.normaliser.state import (
    EntityStore,
    now,
    pack_ids,
    unpack_ids,
)

log = get_logger(__name__)

#: Change events committed per transaction (vendor view updates + outbox entries together).
BATCH_SIZE = 250
#: What a vendor change forgets once the broker confirmed it (``OutboxEntry.forget_when_sent``): its
#: resource, the person's data; what stays (ids, kind, version) is pseudonymous.
FORGOTTEN_WHEN_SENT = ("resource",)


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
    #: Set when a projection of the whole organiser ran out of its slice of time: where it stopped, for
    #: :meth:`Projector.project_tenant` ``resume=`` (stored with the tenant's lock by the caller).
    checkpoint: Document | None = None


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
        #: The organiser's selection settings, read at every projection (a change needs no restart).
        self.organiser_settings = OrganiserSettings(db)
        self.views = db[VENDOR_VIEWS]
        self.holds = db[HOLDS]
        #: The entities each hold affects, and the history of holds that close.
        self.hold_store = HoldStore(db)
        #: What waits for each vendor: counted here, in the transaction that queues the changes.
        self.backlog = DeliveryBacklog(db)

    async def tenant_state(self, tenant_id: str, today: date) -> TenantState:
        missing_marking = await self.organiser_settings.missing_marking(tenant_id)
        state, _ = reconcile(
            tenant_id, await self.entities.load_tenant(tenant_id), today, missing_marking=missing_marking
        )
        return state

    async def project_tenant(
        self,
        tenant_id: str,
        *,
        today: date,
        reason: str,
        correlation_id: UUID | None = None,
        resend_vendor_ids: frozenset[str] = frozenset(),
        whole: bool = True,
        causes: tuple[HoldCause, ...] = (),
        deadline: float | None = None,
        resume: Document | None = None,
    ) -> ProjectionReport:
        """Send every vendor of the tenant what changed for it. ``whole=False`` (after source runs)
        looks only at the entities written or deleted since the last projection and what depends on
        them, unless they include an organisation-level entity or are more than
        :data:`INCREMENTAL_LIMIT`; otherwise (subscription changes, resends, the date check, a first
        sync) the whole organiser is projected. ``causes`` (the runs, or the admin's change, that led
        here) are recorded on the holds this projection makes or grows.

        A projection of the whole organiser that passes ``deadline`` (``time.monotonic()``) stops after
        the chunk (or the vendor's removals) at hand and returns with ``checkpoint`` set; ``resume`` (that
        checkpoint) carries on from there. The entities must not change in between (the caller holds the
        tenant's lock throughout, and only its holder finalises runs)."""
        if resume is None and not whole and not resend_vendor_ids:
            pending = await self.entities.pending(tenant_id, limit=INCREMENTAL_LIMIT)
            if pending is not None and not any(
                EntityKind(d["kind"]) in WHOLE_KINDS for d in (*pending[0], *pending[1])
            ):
                return await self._project_changes(
                    tenant_id, *pending, today=today, reason=reason, correlation_id=correlation_id, causes=causes
                )
        return await self._project_whole(
            tenant_id,
            today=today,
            reason=reason,
            correlation_id=correlation_id,
            resend_vendor_ids=resend_vendor_ids,
            causes=causes,
            deadline=deadline,
            resume=resume,
        )

    async def _project_whole(
        self,
        tenant_id: str,
        *,
        today: date,
        reason: str,
        correlation_id: UUID | None,
        resend_vendor_ids: frozenset[str],
        causes: tuple[HoldCause, ...] = (),
        deadline: float | None = None,
        resume: Document | None = None,
    ) -> ProjectionReport:
        """Project the whole organiser in bounded chunks (:meth:`_chunks`: the organisation level, then
        the entities of one school unit after another, then the rest), each with its neighbourhood
        (:class:`Neighbourhood`), so memory does not grow with the organiser. Upserts go out chunk by
        chunk; removals are gathered and judged together at the end (the mass-deletion guard sees a
        school unit's removals at once), with the views of entities that no longer exist."""
        progress = _WholeProgress.resumed(tenant_id, resume)
        report = progress.report
        missing_marking = await self.organiser_settings.missing_marking(tenant_id)
        subscriptions = await self.subscriptions.for_tenant(tenant_id)
        suppressed = await self.erasure_requests.suppressed(tenant_id)
        #: What each vendor holds per school unit before any change (the mass-deletion guard's measure),
        #: counted from the views each chunk reads and, at the end, those of entities no chunk had: a pass
        #: over every vendor's whole view of its own would read each view once more.
        populations = progress.populations
        for subscription, _ in subscriptions:
            populations.setdefault(subscription.vendor_id, defaultdict(int))
        removals: dict[str, dict[str, tuple[Document, DeletionReason]]] = {s.vendor_id: {} for s, _ in subscriptions}
        resent: dict[str, set[str]] = {v: set() for v in resend_vendor_ids}
        # Resumed, the chunks still to do come from the checkpoint (nothing is read again to plan them).
        processed = progress.processed
        chunks = aiter(progress.stored_chunks() if progress.plan is not None else self._chunks(tenant_id))
        async for outputs in chunks:
            processed |= set(outputs)
            neighbourhood = Neighbourhood(tenant_id, self.entities)
            state, findings, plans = await self._plan_changes(
                tenant_id, neighbourhood, outputs, subscriptions, suppressed, today, missing_marking
            )
            _count_markings(state, outputs, progress.markings)
            report.findings += await self._keep_findings(tenant_id, state, findings, outputs)
            for plan in plans:
                vendor_id = plan.subscription.vendor_id
                _count_population(populations[vendor_id], plan.view.values())
                desired = plan.desired
                if vendor_id in resent:  # a resend sends each entity once, whichever chunk has it
                    desired = {i: r for i, r in desired.items() if str(i) not in resent[vendor_id]}
                    resent[vendor_id] |= {str(i) for i in desired}
                await self._apply(
                    state,
                    plan.subscription,
                    desired,
                    plan.view,
                    removal_reason=plan.removal_reason,
                    reason=reason,
                    correlation_id=correlation_id,
                    resend=vendor_id in resent,
                    report=report.vendors.setdefault(vendor_id, VendorReport()),
                    gather_removals=removals[vendor_id],
                )
            progress.chunks += 1
            if deadline is not None and time.monotonic() >= deadline:
                # The rest of the plan (ids only) goes with the checkpoint.
                progress.plan = [chunk async for chunk in chunks]
                return await self._pause(progress, removals)
        if resume is not None:
            await self._restore_removals(progress, removals)
        for subscription, _ in subscriptions:
            vendor_id = subscription.vendor_id
            if vendor_id in progress.vendors_done:
                continue
            gone = _RemovalReasons(subscription, suppressed_for_vendor(suppressed, vendor_id), set())
            # Views of entities that no longer exist (deleted without a tombstone, or long ago).
            async for doc in self._vendor_views(tenant_id, vendor_id):
                if doc.get("source_entity_id") not in processed:  # no chunk read it (nor counted it)
                    _count_population(populations[vendor_id], (doc,))
                if doc.get("present") and doc.get("source_entity_id", doc["entity_id"]) not in processed:
                    removals[vendor_id].setdefault(doc["_id"], (doc, gone(doc)))
            vendor_report = report.vendors.setdefault(vendor_id, VendorReport())
            deletes = await self._removals(
                subscription,
                list(removals[vendor_id].values()),
                vendor_report,
                population=populations[vendor_id],
                causes=causes,
            )
            await self._send(subscription, [], deletes, vendor_report, reason, correlation_id)
            removals[vendor_id].clear()
            progress.vendors_done.append(vendor_id)
            more = any(s.vendor_id not in progress.vendors_done for s, _ in subscriptions)
            if more and deadline is not None and time.monotonic() >= deadline:
                progress.plan = []
                return await self._pause(progress, removals)
        await self._forget_findings_of_others(tenant_id, processed)
        summary = missing_marking_summary(tenant_id, progress.markings, missing_marking)
        await self.findings.replace_summaries(tenant_id, summary)
        report.findings += len(summary)
        await self.entities.projected(tenant_id)
        # The removals this projection kept between its slices, and any a sliced projection that failed
        # left behind (its request was projected again from the start: this projection).
        await self.db[PROJECTION_REMOVALS].delete_many({"tenant_id": tenant_id})
        await self._record(report, reason=reason, mode="whole", outputs=len(processed))
        return report

    async def _pause(
        self, progress: _WholeProgress, removals: dict[str, dict[str, tuple[Document, DeletionReason]]]
    ) -> ProjectionReport:
        """Out of time: keep the removals gathered so far in the store (they are judged together at the
        end) and return where the projection stopped."""
        keep = [
            UpdateOne(
                {"_id": view_id},
                {
                    "$set": {
                        "tenant_id": progress.tenant_id,
                        "vendor_id": vendor_id,
                        "projection": progress.projection,
                        "reason": str(why),
                    }
                },
                upsert=True,
            )
            for vendor_id, gathered in removals.items()
            for view_id, (_, why) in gathered.items()
        ]
        for start in range(0, len(keep), 1000):
            await self.db[PROJECTION_REMOVALS].bulk_write(keep[start : start + 1000], ordered=False)
        progress.report.checkpoint = progress.checkpoint()
        log.info(
            "whole_projection_paused",
            tenant_id=progress.tenant_id,
            chunks=progress.chunks,
            vendors_done=len(progress.vendors_done),
        )
        return progress.report

    async def _restore_removals(
        self, progress: _WholeProgress, removals: dict[str, dict[str, tuple[Document, DeletionReason]]]
    ) -> None:
        """The removals earlier slices gathered, with their views as they are now (still present)."""
        for vendor_id, gathered in removals.items():
            if vendor_id in progress.vendors_done:
                continue
            kept = self.db[PROJECTION_REMOVALS].find({"tenant_id": progress.tenant_id, "vendor_id": vendor_id})
            reasons = {
                d["_id"]: DeletionReason(d["reason"]) async for d in kept if d.get("projection") == progress.projection
            }
            for part in in_parts(sorted(reasons)):
                async for view in self.views.find({"_id": {"$in": part}}):
                    if view.get("present"):
                        gathered.setdefault(view["_id"], (view, reasons[view["_id"]]))

    async def _chunks(self, tenant_id: str) -> AsyncIterator[dict[str, EntityKind]]:
        """The tenant's entities in chunks of at most :data:`CHUNK_SIZE` (groups and activities:
        :data:`MEMBERS_CHUNK_SIZE`), references first (as the vendors need them): the organisation
        level (school units, school-unit groups, organisations: one chunk, whatever its size), then the
        persons, duties, groups and activities, each kind school unit by school unit and then the rest of
        it (staff, persons at no known unit); each entity once, and read once. What is held meanwhile is
        the ids of one kind (and the chunk being filled), not their documents."""
        yielded: set[str] = set()
        chunk: dict[str, EntityKind] = {}

        def take(entity: str, kind: EntityKind) -> dict[str, EntityKind] | None:
            nonlocal chunk
            if entity in yielded:
                return None
            yielded.add(entity)
            chunk[entity] = kind
            if len(chunk) < (min(CHUNK_SIZE, MEMBERS_CHUNK_SIZE) if kind in MEMBERS_KINDS else CHUNK_SIZE):
                return None
            full, chunk = chunk, {}
            return full

        # Source by source, on exactly the fields of ``by_source`` (tenant, source, kind): the Mongo wire
        # server serves that as a range of the index, and walks the whole index (every tenant's entities)
        # for the same query without the source and hinted.
        sources = sorted(await self.entities.collection.distinct("source_id", {"tenant_id": tenant_id}))
        organisation: dict[str, EntityKind] = {}
        for source_id in sources:
            cursor = self.entities.collection.find(
                {"tenant_id": tenant_id, "source_id": source_id, "kind": {"$in": sorted(k.value for k in WHOLE_KINDS)}},
                {"kind": 1},
            )
            organisation.update({doc["_id"]: EntityKind(doc["kind"]) async for doc in cursor})
        units = [entity for entity, kind in organisation.items() if kind is EntityKind.SCHOOL_UNIT]
        # The organisation level is one chunk, however many it is (a few hundred small documents at the
        # largest organisers): an organisation is selected through the school units beneath it, and a
        # chunk with the organisation and without its units removed it from every vendor.
        if organisation:
            yielded.update(organisation)
            yield organisation
        for kind in UNIT_KINDS:
            # The kind is read once (its ids and references only), each entity placed at the first of the
            # school units it refers to; the rest of the kind (staff, whose units come through their
            # duties; persons at no known unit) after every unit, before the next kind. A query per school
            # unit and one for the rest read every entity of the kind twice, and a person at several
            # units more often.
            unit_of = {stored(kind, token(EntityKind.SCHOOL_UNIT, u)): u for u in units}
            by_unit: dict[str, list[str]] = defaultdict(list)
            rest: list[str] = []
            for source_id in sources:
                cursor = self.entities.collection.find(
                    {"tenant_id": tenant_id, "source_id": source_id, "kind": kind.value}, {"refs": 1}
                )
                async for doc in cursor:
                    at = [unit_of[r] for r in doc.get("refs") or () if r in unit_of]
                    (by_unit[min(at)] if at else rest).append(doc["_id"])
            for entity in [*(e for u in sorted(by_unit) for e in by_unit[u]), *rest]:
                if (full := take(entity, kind)) is not None:
                    yield full
        if chunk:
            yield chunk

    def _vendor_views(self, tenant_id: str, vendor_id: str) -> Any:
        """A vendor's whole view. Bare equality on the first two fields of ``by_source_entity`` and
        ``by_school_unit`` (no index of its own: one less to write per view), ``present`` checked by the
        caller: the Mongo wire server serves that as an index range, where a hint (or the extra predicate)
        made it fetch every vendor view of the collection, of every tenant and vendor, for each vendor."""
        return self.views.find({"tenant_id": tenant_id, "vendor_id": vendor_id})

    async def _forget_findings_of_others(self, tenant_id: str, processed: set[str]) -> None:
        """Reconcile findings of entities a whole projection did not see (they no longer exist)."""
        cursor = self.findings.collection.find({"tenant_id": tenant_id, "origin": "reconcile"}, {"entity_id": 1})
        stale = {str(d["entity_id"]) async for d in cursor if str(d.get("entity_id")) not in processed}
        if stale:
            await self.findings.collection.delete_many(
                {"tenant_id": tenant_id, "origin": "reconcile", "entity_id": {"$in": sorted(stale)}}
            )

    async def _project_changes(
        self,
        tenant_id: str,
        written: list[Document],
        deleted: list[Document],
        *,
        today: date,
        reason: str,
        correlation_id: UUID | None,
        causes: tuple[HoldCause, ...] = (),
    ) -> ProjectionReport:
        """Project what the entities written and deleted since the last projection can change: the
        entities themselves, and (:class:`Neighbourhood`) a person's duties and the holders of the same
        logins or e-mail addresses, a duty's person, a group's activities; and, where a person's or a
        duty's selection at a vendor changed, their groups and activities. Documents read grow with
        what changed and its neighbours, not with the organiser."""
        report = ProjectionReport(tenant_id=tenant_id)
        touched = {d["_id"] for d in (*written, *deleted)}
        if not touched:
            return report
        neighbourhood = Neighbourhood(tenant_id, self.entities)
        neighbourhood.remember(written)
        outputs: dict[str, EntityKind] = {d["_id"]: EntityKind(d["kind"]) for d in (*written, *deleted)}
        person_tokens: set[str] = set()
        group_tokens: set[str] = set()
        syllabus_tokens: set[str] = set()
        for document in (*written, *deleted):
            kind, refs = EntityKind(document["kind"]), {*document.get("refs", []), *document.get("stale_refs", [])}
            if kind is EntityKind.DUTY:
                _add(outputs, referenced_ids(refs, EntityKind.PERSON), EntityKind.PERSON)
            elif kind is EntityKind.PERSON:
                person_tokens |= uniqueness_tokens(refs)
            elif kind is EntityKind.GROUP:
                group_tokens.add(token(EntityKind.GROUP, document["_id"]))
            elif kind is EntityKind.SYLLABUS:
                syllabus_tokens.add(token(EntityKind.SYLLABUS, document["_id"]))
            elif kind is EntityKind.PLACEMENT:
                _add(outputs, referenced_ids(refs, EntityKind.PERSON), EntityKind.PERSON)  # the child
        # Whoever competes for the same logins and e-mail addresses may win or lose them now.
        _add(outputs, await neighbourhood.competitors(person_tokens, EntityKind.PERSON), EntityKind.PERSON)
        _add(outputs, await neighbourhood.referring(group_tokens, [EntityKind.ACTIVITY]), EntityKind.ACTIVITY)
        # A group's mentors (duties' assignment roles) and a syllabus's activities carry what changed.
        _add(outputs, await neighbourhood.referring(group_tokens, [EntityKind.DUTY]), EntityKind.DUTY)
        _add(outputs, await neighbourhood.referring(syllabus_tokens, [EntityKind.ACTIVITY]), EntityKind.ACTIVITY)
        # The groups of a deleted person and the activities of a deleted duty now refer to nothing (a
        # finding), whether or not any vendor had them: one no vendor had (not active, withheld, protected
        # and excluded) changes no selection below, so they are projected here.
        for gone, dependant in ((EntityKind.PERSON, EntityKind.GROUP), (EntityKind.DUTY, EntityKind.ACTIVITY)):
            tokens = [token(gone, d["_id"]) for d in deleted if d["kind"] == gone.value]
            if tokens:
                _add(outputs, await neighbourhood.referring(tokens, [dependant]), dependant)
        persons = [i for i, k in outputs.items() if k is EntityKind.PERSON]
        _add(outputs, await neighbourhood.duties_of(persons), EntityKind.DUTY)

        missing_marking = await self.organiser_settings.missing_marking(tenant_id)
        subscriptions = await self.subscriptions.for_tenant(tenant_id)
        suppressed = await self.erasure_requests.suppressed(tenant_id)
        state, findings, plans = await self._plan_changes(
            tenant_id, neighbourhood, outputs, subscriptions, suppressed, today, missing_marking
        )
        # A person or duty whose selection changed at some vendor changes their groups' members and
        # their activities' teachers: project those too (their own selection does not depend on it).
        changed = {entity for plan in plans for entity in plan.selection_changed}
        escalated: dict[str, EntityKind] = {}
        changed_persons = [token(EntityKind.PERSON, i) for i in changed if outputs[i] is EntityKind.PERSON]
        changed_duties = [token(EntityKind.DUTY, i) for i in changed if outputs[i] is EntityKind.DUTY]
        _add(escalated, await neighbourhood.referring(changed_persons, [EntityKind.GROUP]), EntityKind.GROUP)
        _add(escalated, await neighbourhood.referring(changed_duties, [EntityKind.ACTIVITY]), EntityKind.ACTIVITY)
        if set(escalated) - set(outputs):
            outputs.update({i: k for i, k in escalated.items() if i not in outputs})
            state, findings, plans = await self._plan_changes(
                tenant_id, neighbourhood, outputs, subscriptions, suppressed, today, missing_marking
            )
        report.findings = await self._keep_findings(tenant_id, state, findings, outputs)
        for plan in plans:
            subscription = plan.subscription
            report.vendors[subscription.vendor_id] = await self._apply(
                state,
                subscription,
                plan.desired,
                plan.view,
                removal_reason=plan.removal_reason,
                reason=reason,
                correlation_id=correlation_id,
                whole=False,
                causes=causes,
            )
        await self.entities.projected(tenant_id, touched)
        if self.metrics is not None:
            self.metrics.projection_entities.labels("outputs").observe(len(outputs))
            self.metrics.projection_entities.labels("read").observe(len(neighbourhood.documents))
        await self._record(report, reason=reason, mode="changes", outputs=len(outputs))
        return report

    async def _plan_changes(
        self,
        tenant_id: str,
        neighbourhood: Neighbourhood,
        outputs: dict[str, EntityKind],
        subscriptions: list[tuple[VendorSubscription, VendorProfile]],
        suppressed: dict[str, dict[str, str]],
        today: date,
        missing_marking: MissingMarkingPolicy,
    ) -> tuple[TenantState, list[Finding], list[_VendorPlan]]:
        """The reconciled neighbourhood, its findings, and for every subscription what it should hold
        of ``outputs`` now and its view of them."""
        state, findings = reconcile(
            tenant_id, await neighbourhood.load(outputs), today, missing_marking=missing_marking
        )
        person_ids = {str(s.id) for s in state.entities if s.kind is EntityKind.PERSON}
        plans = []
        for subscription, profile in subscriptions:
            await self.ensure_vendor_queue(subscription.vendor_id)
            suppressed_here = suppressed_for_vendor(suppressed, subscription.vendor_id)
            selecting = subscription.model_copy(
                update={"exclude_persons": subscription.exclude_persons | set(suppressed_here)}
            )
            projected = {} if subscription.ended_at is not None else project(state, selecting, profile, today)
            desired = {i: r for i, r in projected.items() if str(r.source_entity_id or i) in outputs}
            view: dict[str, Document] = {}
            for part in in_parts(outputs):
                criteria = {
                    "tenant_id": tenant_id,
                    "vendor_id": subscription.vendor_id,
                    "source_entity_id": {"$in": part},
                }
                view.update({doc["entity_id"]: doc async for doc in self.views.find(criteria)})
            plans.append(
                _VendorPlan(
                    subscription,
                    desired,
                    view,
                    _RemovalReasons(subscription, suppressed_here, person_ids),
                    _selection_changed(desired, view, outputs),
                )
            )
        return state, findings, plans

    async def _keep_findings(
        self, tenant_id: str, state: TenantState, findings: list[Finding], outputs: dict[str, EntityKind]
    ) -> int:
        """Replace the reconcile findings of ``outputs`` (only theirs are complete: inputs were read
        without all their neighbours) and place the outputs' findings in their school units."""
        findings = [f for f in findings if f.entity_id is not None and str(f.entity_id) in outputs]
        await self.findings.replace_reconcile(tenant_id, findings, only_entities=outputs)
        codes = school_unit_codes_by_entity(state)
        await self.findings.place_in_school_units(
            tenant_id, {i: c for i, c in codes.items() if i in outputs}, only_entities=outputs
        )
        return len(findings)

    async def _record(self, report: ProjectionReport, *, reason: str, mode: str, outputs: int | None = None) -> None:
        for vendor_id, vendor_report in report.vendors.items():
            if vendor_report.upserts or vendor_report.deletes or vendor_report.held or vendor_report.deferred:
                await self.history.record_projection(
                    report.tenant_id,
                    vendor_id,
                    reason=reason,
                    upserts=vendor_report.upserts,
                    deletes=vendor_report.deletes,
                    held=vendor_report.held,
                    deferred=vendor_report.deferred,
                )
        if self.metrics is not None:
            self.metrics.projections.labels(mode).inc()
        log.info(
            "tenant_projected",
            tenant_id=report.tenant_id,
            reason=reason,
            mode=mode,
            outputs=outputs,
            vendors={v: (r.upserts, r.deletes, r.held, r.deferred) for v, r in report.vendors.items()},
        )

    async def _apply(
        self,
        state: TenantState,
        subscription: VendorSubscription,
        desired: dict[UUID, ProjectedResource],
        view: dict[str, Document],
        *,
        removal_reason: _RemovalReasons,
        reason: str,
        correlation_id: UUID | None,
        resend: bool = False,
        whole: bool = True,
        report: VendorReport | None = None,
        gather_removals: dict[str, tuple[Document, DeletionReason]] | None = None,
        causes: tuple[HoldCause, ...] = (),
    ) -> VendorReport:
        """Compare ``desired`` with the vendor's ``view`` (all of it, or with ``whole=False`` the part
        an incremental projection looked at) and commit the differences; with ``gather_removals`` the
        removals are collected there (with their reasons) for the caller to judge and send later."""
        report = report if report is not None else VendorReport()
        withheld = {str(i) for i in state.withheld}
        upserts: list[_Change] = []
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
            upserts.append(_Change(resource.kind, entity_id, "upsert", version, resource, current or {}))
        removals = [
            (doc, removal_reason(doc))
            for entity_id, doc in view.items()
            if doc["present"] and UUID(entity_id) not in desired and doc.get("source_entity_id") not in withheld
        ]
        if came_back:
            await self.views.update_many(
                {"_id": {"$in": [f"{subscription.tenant_id}:{subscription.vendor_id}:{e}" for e in came_back]}},
                {"$set": {"removal_pending_since": None}},
            )
        if gather_removals is not None:
            for doc, why in removals:
                gather_removals.setdefault(doc["_id"], (doc, why))
            deletes: list[_Change] = []
        else:
            deletes = await self._removals(subscription, removals, report, view=view, whole=whole, causes=causes)
        await self._send(subscription, upserts, deletes, report, reason, correlation_id)
        return report

    async def _removals(
        self,
        subscription: VendorSubscription,
        removals: list[tuple[Document, DeletionReason]],
        report: VendorReport,
        *,
        view: dict[str, Document] | None = None,
        whole: bool = True,
        population: dict[str, int] | None = None,
        causes: tuple[HoldCause, ...] = (),
    ) -> list[_Change]:
        """The removals that go out now: past the mass-deletion guard (unless the subscription ended:
        the organiser's explicit decision) and the deletion grace period."""
        reasons = {doc["_id"]: why for doc, why in removals}
        docs = [doc for doc, _ in removals]
        if subscription.ended_at is None:
            docs = await self._guard(
                subscription,
                view or {},
                docs,
                report,
                whole=whole,
                population=population,
                causes=causes,
                reasons=reasons,
            )
        docs, waiting = await self._grace(subscription, docs, lambda doc: reasons[doc["_id"]])
        report.deferred += waiting
        if self.metrics is not None and report.held:
            self.metrics.removals_held.labels(subscription.tenant_id, subscription.vendor_id).inc(report.held)
        return [
            _Change(
                EntityKind(doc["kind"]),
                UUID(doc["entity_id"]),
                "delete",
                doc["version"] + 1,
                None,
                doc,
                reason=reasons[doc["_id"]],
                removed_at=doc.get("removal_pending_since"),
            )
            for doc in docs
        ]

    async def _send(
        self,
        subscription: VendorSubscription,
        upserts: list[_Change],
        deletes: list[_Change],
        report: VendorReport,
        reason: str,
        correlation_id: UUID | None,
    ) -> None:
        """Commit the changes in batches: upserts references first, then deletes in reverse order."""
        ordered = sorted(upserts, key=lambda c: (_kind_rank(c.kind), str(c.entity_id))) + sorted(
            deletes, key=lambda c: (-_kind_rank(c.kind), str(c.entity_id))
        )
        for start in range(0, len(ordered), BATCH_SIZE):
            await self._commit(subscription, ordered[start : start + BATCH_SIZE], reason, correlation_id)
        report.upserts += len(upserts)
        report.deletes += len(deletes)
        if self.metrics is not None:
            tenant_id, vendor_id = subscription.tenant_id, subscription.vendor_id
            self.metrics.changes_emitted.labels(tenant_id, vendor_id, "upsert").inc(len(upserts))
            self.metrics.changes_emitted.labels(tenant_id, vendor_id, "delete").inc(len(deletes))

    async def _guard(
        self,
        subscription: VendorSubscription,
        view: dict[str, Document],
        removals: list[Document],
        report: VendorReport,
        *,
        whole: bool = True,
        population: dict[str, int] | None = None,
        causes: tuple[HoldCause, ...] = (),
        reasons: dict[str, DeletionReason] | None = None,
    ) -> list[Document]:
        """Hold the removals of any school unit that would lose more than the guard allows. ``view``
        is the whole view, or (``whole=False``) part of it: then a unit's population is counted in the
        store, and removals already held stay held while their hold waits for a decision. A hold records
        whom it affects (``hold_entities``, with ``reasons``: why each leaves) and why its removals came
        (``causes``, when it is new or grows); a pending hold that closes undecided goes to the history."""
        tenant_id, vendor_id = subscription.tenant_id, subscription.vendor_id
        by_unit: dict[str, list[Document]] = defaultdict(list)
        for doc in removals:
            for unit_id in doc.get("school_unit_ids", []) or ["-"]:
                by_unit[unit_id].append(doc)
        if population is not None:
            population = defaultdict(int, population)
        elif whole:
            population = defaultdict(int)
            for doc in view.values():
                if doc["present"]:
                    for unit_id in doc.get("school_unit_ids", []):
                        population[unit_id] += 1
        else:
            population = defaultdict(int)
            for unit_id in by_unit:
                if unit_id != "-":
                    # Equality on the index's three fields alone, ``present`` checked here: on the Mongo
                    # wire server any further predicate (or a hint) on this multikey index makes the
                    # query walk the vendor's whole view (2.3 s at 24,000 views against 5 ms).
                    unit = {"tenant_id": tenant_id, "vendor_id": vendor_id, "school_unit_ids": unit_id}
                    views = self.views.find(unit, {"present": 1})
                    population[unit_id] = sum([1 async for doc in views if doc.get("present")])
        holds = {
            doc["school_unit_id"]: doc
            async for doc in self.holds.find({"tenant_id": tenant_id, "vendor_id": vendor_id})
        }
        held_ids: set[str] = set()
        waiting: dict[str, set[str]] = {}
        if not whole:
            # A removal waiting in a hold (or kept by a discarded one) is not let through because it
            # now arrives alone: only the organiser's decision, or a whole projection, settles it.
            for unit_id, existing in holds.items():
                if existing.get("status") in ("pending", "discarded") and unit_id in by_unit:
                    waiting[unit_id] = set(existing.get("entity_ids", [])) & {d["entity_id"] for d in by_unit[unit_id]}
                    held_ids |= waiting[unit_id]
                    by_unit[unit_id] = [d for d in by_unit[unit_id] if d["entity_id"] not in waiting[unit_id]]
                    if waiting[unit_id]:
                        report.holds.append(unit_id)
        for unit_id, docs in by_unit.items():
            if unit_id == "-" or not docs or not subscription.guard.breached(len(docs), population[unit_id]):
                continue
            ids = sorted(d["entity_id"] for d in docs)
            hold = holds.get(unit_id)
            if unit_id in waiting and hold is not None:
                ids = sorted(set(ids) | set(hold.get("entity_ids", [])))  # a pending hold grows
            decided = hold is not None and set(ids) <= set(hold.get("entity_ids", []))
            if decided and hold is not None and hold.get("status") == "approved":
                continue  # reviewed and approved: these removals go ahead
            held_ids.update(ids)
            if decided and hold is not None and hold.get("status") == "discarded":
                report.holds.append(unit_id)  # kept, not asked again while the removals are the same
                continue
            codes = sorted({c for d in docs for c in d.get("school_unit_codes", [])})
            # Why: the causes of this projection when the hold is new or grows (a pending hold that
            # only shrinks, or comes again unchanged, keeps the causes it had).
            grew = hold is None or hold.get("status") != "pending" or not set(ids) <= set(hold.get("entity_ids", []))
            earlier = hold.get("causes", []) if hold is not None and hold.get("status") == "pending" else []
            hold_causes = merge_causes(earlier, causes) if grew else earlier
            hold_id = f"{tenant_id}:{vendor_id}:{unit_id}"
            # Whom it affects first, then the hold: whoever sees the hold finds its list whole.
            listed = {"_id": hold_id, "tenant_id": tenant_id, "vendor_id": vendor_id, "school_unit_id": unit_id}
            await self._keep_hold_entities(listed, ids, docs, reasons or {})
            await self.holds.update_one(
                {"_id": hold_id},
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
                        "causes": hold_causes,
                    },
                    "$setOnInsert": {"created_at": now()},
                },
                upsert=True,
            )
            if unit_id not in report.holds:
                report.holds.append(unit_id)
            log.warning(
                "removals_held", tenant_id=tenant_id, vendor_id=vendor_id, school_unit_id=unit_id, removals=len(ids)
            )
        # Holds whose removals no longer apply (or were applied) are done (a whole projection knows).
        for unit_id, hold in holds.items():
            if whole and unit_id not in report.holds:
                if hold.get("status") == "pending":  # nobody decided: the removals no longer apply
                    await self.hold_store.record(hold, "resolved", by=None, at=now())
                await self.hold_store.forget(hold["_id"])
                await self.holds.delete_one({"_id": hold["_id"]})
        report.held = len(held_ids)
        return [doc for doc in removals if doc["entity_id"] not in held_ids]

    async def _keep_hold_entities(
        self, hold: Document, ids: list[str], docs: list[Document], reasons: dict[str, DeletionReason]
    ) -> None:
        """Write whom ``hold`` affects: every removal it holds (``ids``; ``docs`` are the views of this
        projection's), with why it leaves, and for those no longer in the source the name they had there."""
        entries: list[HeldEntity] = []
        gone = [d for d in docs if reasons.get(d["_id"]) is DeletionReason.LEFT_SOURCE or d["kind"] != "person"]
        names = await self.entities.names_of_deleted(d.get("source_entity_id") or d["entity_id"] for d in gone)
        for doc in docs:
            source_id = doc.get("source_entity_id") or doc["entity_id"]
            entry = HeldEntity(entity_id=doc["entity_id"], source_entity_id=source_id, kind=doc["kind"])
            if (why := reasons.get(doc["_id"])) is not None:
                entry["reason"] = why.value
            if source_id in names:
                entry["name"] = names[source_id]
            entries.append(entry)
        await self.hold_store.keep_entities(hold, ids, entries)

    async def _grace(
        self,
        subscription: VendorSubscription,
        removals: list[Document],
        removal_reason: Callable[[Document], DeletionReason],
    ) -> tuple[list[Document], int]:
        """Two-phase deletion: removals wait ``deletion_grace_hours`` (marked in the vendor view) and go
        out once it has passed (entities that came back meanwhile lost their mark in :meth:`_apply`).
        Returns the removals due now and how many wait."""
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
            entries: list[OutboxEntry] = []
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
                    # The view of an entity the vendor no longer holds expires (its ids outlive nothing).
                    "expires_at": None if change.operation == "upsert" else now() + ABSENT_RETENTION,
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
                # Once the broker has it, the resource (personal data) leaves the outbox: the purge of a
                # person then never rewrites a sent bundle that many persons share.
                entries.append(
                    OutboxEntry(
                        envelope,
                        exchange=self.exchange,
                        routing_key=f"{vendor_id}.{tenant_id}",
                        forget_when_sent=FORGOTTEN_WHEN_SENT,
                    )
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
                    entries.append(
                        OutboxEntry(
                            deletion.to_envelope(
                                tenant_id=tenant_id, correlation_id=correlation_id, producer=self.producer
                            ),
                            exchange=self.gdpr_exchange,
                            routing_key=DeletionRequested.message_type,
                        )
                    )
            # One bulk write for the views, one for the outbox and one count of what now waits for the
            # vendor: a batch is three writes, not 2 per change.
            await self.views.bulk_write(operations, ordered=True, session=session)
            await self.outbox.add_many(entries, session=session)
            await self.backlog.queued(vendor_id, tenant_id, len(batch), at=now(), session=session)

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


def _count_population(population: dict[str, int], views: Iterable[Document]) -> None:
    """Count the views a vendor holds (``present``) in each of their school units."""
    for view in views:
        if view.get("present"):
            for unit in view.get("school_unit_ids") or ():
                population[unit] += 1


def _count_markings(state: TenantState, outputs: dict[str, EntityKind], counts: dict[str, tuple[int, int]]) -> None:
    """Add the persons among ``outputs`` (those not withheld) to ``counts``: source id -> (persons without a
    securityMarking, persons)."""
    for entity in state.entities:
        if entity.kind is EntityKind.PERSON and str(entity.id) in outputs:
            assert isinstance(entity.entity, Person)
            missing, persons = counts.get(entity.source_id, (0, 0))
            counts[entity.source_id] = (missing + (not entity.entity.marking_known), persons + 1)


#: More entities written or deleted than this since the last projection: project the whole organiser.
INCREMENTAL_LIMIT = 2000
#: Entities per chunk of a whole projection (each read with its neighbourhood).
CHUNK_SIZE = 1000
#: Groups and activities per chunk: their neighbourhood holds every member and teacher (with the
#: members' duties, units and login competitors), so a chunk of 1,000 classes held about 25,000 persons
#: (the normaliser's peak memory: +140 MiB at M); 200 hold those of a school unit or two.
MEMBERS_CHUNK_SIZE = 200
#: The kinds chunked by :data:`MEMBERS_CHUNK_SIZE`.
MEMBERS_KINDS = frozenset({EntityKind.GROUP, EntityKind.ACTIVITY})
#: The kinds a whole projection reads school unit by school unit, in the order vendors need them.
UNIT_KINDS = (EntityKind.PERSON, EntityKind.DUTY, EntityKind.GROUP, EntityKind.ACTIVITY)
#: Entities that change much of the organiser at once (a school unit's members, its code, its
#: parents): a change to one projects the whole organiser.
WHOLE_KINDS = frozenset({EntityKind.ORGANISATION, EntityKind.SCHOOL_UNIT_GROUP, EntityKind.SCHOOL_UNIT})


@dataclass(frozen=True)
class _VendorPlan:
    """What one subscription should hold of an incremental projection's outputs, and what it holds."""

    subscription: VendorSubscription
    desired: dict[UUID, ProjectedResource]
    view: dict[str, Document]
    removal_reason: _RemovalReasons
    #: Outputs whose selection at this vendor changes (in or out, their vendor id, their units).
    selection_changed: set[str]


def _selection_changed(
    desired: dict[UUID, ProjectedResource], view: dict[str, Document], outputs: dict[str, EntityKind]
) -> set[str]:
    """Persons and duties that enter or leave the selection, or change the id or units they are
    delivered with: what their groups' members and their activities' teachers depend on."""
    before: dict[str, set[tuple[str, tuple[str, ...]]]] = defaultdict(set)
    after: dict[str, set[tuple[str, tuple[str, ...]]]] = defaultdict(set)
    for doc in view.values():
        if doc["present"]:
            before[doc["source_entity_id"]].add((doc["entity_id"], tuple(doc.get("school_unit_ids", []))))
    for entity_id, resource in desired.items():
        after[str(resource.source_entity_id or entity_id)].add((str(entity_id), resource.school_unit_ids))
    return {
        entity
        for entity in set(before) | set(after)
        if outputs.get(entity) in (EntityKind.PERSON, EntityKind.DUTY) and before[entity] != after[entity]
    }


def _add(outputs: dict[str, EntityKind], ids: Iterable[str], kind: EntityKind) -> None:
    for entity_id in ids:
        outputs.setdefault(entity_id, kind)


@dataclass
class _WholeProgress:
    """How far a projection of the whole organiser has come, kept across its slices of time: the entities
    projected, the chunks still to do (their ids), the vendors whose removals went out, and what the end
    needs from the chunks (the guard's populations, the markings summary's counts, the report). Stored with
    the tenant's lock as a checkpoint (:meth:`checkpoint`: ids packed 16 bytes each, about 3.3 MB for the
    205,000 entities of 150,000 persons); the removals gathered so far are kept in ``projection_removals``."""

    tenant_id: str
    projection: str
    report: ProjectionReport
    #: Chunks projected (for the logs).
    chunks: int = 0
    #: The entities of the chunks projected so far.
    processed: set[str] = field(default_factory=set)
    #: The chunks still to do, in order; None until a slice ends (the first plans its chunks as it goes).
    plan: list[dict[str, EntityKind]] | None = None
    vendors_done: list[str] = field(default_factory=list)
    populations: dict[str, dict[str, int]] = field(default_factory=dict)
    markings: dict[str, tuple[int, int]] = field(default_factory=dict)

    @classmethod
    def resumed(cls, tenant_id: str, checkpoint: Document | None) -> _WholeProgress:
        if checkpoint is None:
            return cls(tenant_id, uuid4().hex, ProjectionReport(tenant_id=tenant_id))
        report = ProjectionReport(tenant_id=tenant_id, findings=int(checkpoint.get("findings", 0)))
        for vendor_id, counts in (checkpoint.get("vendors") or {}).items():
            report.vendors[vendor_id] = VendorReport(**counts)
        populations: dict[str, dict[str, int]] = {}
        for vendor_id, unit, count in checkpoint.get("populations") or ():
            populations.setdefault(vendor_id, defaultdict(int))[unit] += int(count)
        plan = [
            {entity: EntityKind(kind) for kind, packed in chunk.items() for entity in unpack_ids(packed)}
            for chunk in checkpoint.get("plan") or ()
        ]
        return cls(
            tenant_id,
            str(checkpoint["projection"]),
            report,
            chunks=int(checkpoint.get("chunks", 0)),
            processed=set(unpack_ids(checkpoint.get("processed"))),
            plan=plan,
            vendors_done=list(checkpoint.get("vendors_done") or ()),
            populations=populations,
            markings={source: (int(a), int(b)) for source, a, b in checkpoint.get("markings") or ()},
        )

    async def stored_chunks(self) -> AsyncIterator[dict[str, EntityKind]]:
        for chunk in self.plan or ():
            yield chunk

    def checkpoint(self) -> Document:
        """A document of ids and counts only (unit ids go in lists: they are not field names)."""
        plan = []
        for chunk in self.plan or ():
            by_kind: dict[str, list[str]] = defaultdict(list)
            for entity, kind in chunk.items():
                by_kind[kind.value].append(entity)
            plan.append({kind: pack_ids(ids) for kind, ids in by_kind.items()})
        return {
            "projection": self.projection,
            "chunks": self.chunks,
            "processed": pack_ids(sorted(self.processed)),
            "plan": plan,
            "vendors_done": list(self.vendors_done),
            "populations": [[v, unit, n] for v, units in self.populations.items() for unit, n in units.items()],
            "markings": [[source, a, b] for source, (a, b) in self.markings.items()],
            "vendors": {v: asdict(r) for v, r in self.report.vendors.items()},
            "findings": self.report.findings,
        }
