"""The normaliser against the real broker and the Mongo wire server: snapshots in, exactly the
expected per-vendor change events out."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from pymongo import AsyncMongoClient, monitoring

from skolsynk.contracts import Envelope
from skolsynk.contracts.gdpr import DeletionReason, DeletionRequested
from skolsynk.contracts.source import (
    SourceDeletion,
    SourceRecord,
    SourceRecordPage,
    SourceRunCompleted,
    SourceRunStarted,
)
from skolsynk.contracts.vendor import ProjectionRequested, VendorChange
from skolsynk.domain.ids import entity_id
from skolsynk.domain.quality import FindingCode, Severity
from skolsynk.domain.selection import duty_at_unit_id, preview_subscription_change
from skolsynk.domain.ss12000 import KIND_ORDER, EntityKind
from skolsynk.domain.subscription import (
    MassDeletionGuard,
    MissingMarkingPolicy,
    Role,
    VendorProfile,
    VendorSubscription,
)
from skolsynk.messaging import MessageContext, Outbox
from skolsynk.service import ServiceApp
from skolsynk.settings import ServiceSettings
from skolsynk.storage import in_transaction
from skolsynk.storage.admin import OrganiserSettings
from skolsynk.storage.findings import FindingFilter, FindingStore
from skolsynk.storage.history import SyncHistory
from skolsynk.storage.holds import HoldStore
from skolsynk.storage.projection_status import ProjectionStatus
from skolsynk.storage.subscriptions import SubscriptionStore
from skolsynk_services.admin.stores import TenantStore
from skolsynk_services.normaliser import projection
from skolsynk_services.normaliser.app import NormaliserSettings, build
from skolsynk_services.normaliser.runs import PageResult, Runs
from tests.helpers import delete_topology, wait_for

pytestmark = [
    pytest.mark.connected,
    pytest.mark.timeout(120),
    pytest.mark.queues("normaliser.source-events", "normaliser.projections", "gdpr.events"),
]

TENANT = "kommun-a"
SOURCE = "egil-1"
U1, U2 = "11111111", "22222222"
TODAY = date(2026, 11, 26)


def eid(kind: EntityKind, key: str) -> uuid.UUID:
    return entity_id(TENANT, SOURCE, kind, key)


def student(
    key: str,
    unit: str,
    year: int,
    *,
    given: str | None = None,
    end: date | None = None,
    marking: str | None = "Ingen",
    status: str | None = None,
) -> SourceRecord:
    """A student; ``marking`` None: the source does not give the securityMarking (unknown)."""
    enrolment: dict[str, Any] = {
        "school_unit": unit,
        "school_type": "GR",
        "school_year": year,
        "start_date": "2026-08-18",
    }
    if end is not None:
        enrolment["end_date"] = end.isoformat()
    return SourceRecord(
        kind=EntityKind.PERSON,
        key=key,
        data={
            "given_name": given or f"Elev{key}",
            "family_name": "Testsson",
            "eppn": [f"{key}@kommun-a.se"],
            "emails": [{"value": f"{key}@elev.kommun-a.se", "type": "Skola elev"}],
            "enrolments": [enrolment],
            **({} if marking is None else {"security_marking": marking}),
            **({} if status is None else {"person_status": status}),
        },
    )


def teacher(key: str, *, status: str | None = None) -> SourceRecord:
    return SourceRecord(
        kind=EntityKind.PERSON,
        key=key,
        data={
            "given_name": f"Lärare{key}",
            "family_name": "Testsson",
            "eppn": [f"{key}@kommun-a.se"],
            "emails": [{"value": f"{key}@kommun-a.se"}],
            "security_marking": "Ingen",
            **({} if status is None else {"person_status": status}),
        },
    )


def duty(key: str, person: str, unit: str) -> SourceRecord:
    return SourceRecord(
        kind=EntityKind.DUTY,
        key=key,
        data={"person": person, "school_unit": unit, "role": "Lärare", "start_date": "2026-08-01"},
    )


def group(key: str, unit: str, members: list[str], group_type: str = "Klass") -> SourceRecord:
    return SourceRecord(
        kind=EntityKind.GROUP,
        key=key,
        data={
            "display_name": key.upper(),
            "group_type": group_type,
            "school_type": "GR",
            "school_unit": unit,
            "start_date": "2026-08-18",
            "memberships": [{"person": m} for m in members],
        },
    )


def base_snapshot() -> dict[str, SourceRecord]:
    records = [
        SourceRecord(kind=EntityKind.ORGANISATION, key="hm", data={"display_name": "Kommun A"}),
        SourceRecord(
            kind=EntityKind.SCHOOL_UNIT,
            key="u1",
            data={"display_name": "Norrskolan", "school_unit_code": U1, "school_types": ["GR"], "organisation": "hm"},
        ),
        SourceRecord(
            kind=EntityKind.SCHOOL_UNIT,
            key="u2",
            data={"display_name": "Söderskolan", "school_unit_code": U2, "school_types": ["GR"], "organisation": "hm"},
        ),
        *(student(f"s{n}", "u1", 7) for n in (1, 2, 3)),
        *(student(f"s{n}", "u2", 8) for n in (4, 5, 6)),
        teacher("t1"),
        teacher("t2"),
        duty("d1", "t1", "u1"),
        duty("d2", "t2", "u2"),
        group("g1", "u1", ["s1", "s2", "s3"]),
        group("g2", "u2", ["s4", "s5"]),
        SourceRecord(
            kind=EntityKind.ACTIVITY,
            key="a1",
            data={
                "display_name": "Matematik 7",
                "school_unit": "u1",
                "groups": ["g1"],
                "teachers": ["d1"],
                "start_date": "2026-08-18",
            },
        ),
    ]
    return {r.key: r for r in records}


@dataclass
class Harness:
    normaliser: ServiceApp
    collector: ServiceApp
    settings: ServiceSettings
    clock: list[datetime]
    received: dict[str, list[VendorChange]] = field(default_factory=dict)
    #: Message ids received: a handler can run twice for one message when its transaction's commit
    #: fails (a write conflict under load) and the message is redelivered; count each message once.
    received_ids: set[uuid.UUID] = field(default_factory=set)

    @property
    def subscriptions(self) -> SubscriptionStore:
        return SubscriptionStore(self.normaliser.db)

    async def send_run(
        self,
        records: list[SourceRecord],
        *,
        mode: str = "full",
        healthy: bool = True,
        page_size: int = 4,
        claimed_counts: dict[EntityKind, int] | None = None,
        deletions: list[Any] | None = None,
    ) -> uuid.UUID:
        run_id = uuid.uuid4()
        pages = [records[i : i + page_size] for i in range(0, len(records), page_size)] or [[]]
        counts: dict[EntityKind, int] = {}
        for record in records:
            counts[record.kind] = counts.get(record.kind, 0) + 1
        messages = [
            SourceRunStarted(
                run_id=run_id, source_id=SOURCE, source_kind="egil", mode=mode, started_at=datetime.now(UTC)
            ),
            *(
                SourceRecordPage(run_id=run_id, source_id=SOURCE, page=n, records=page, deletions=deletions or [])
                for n, page in enumerate(pages)
            ),
            SourceRunCompleted(
                run_id=run_id, source_id=SOURCE, pages=len(pages), counts=claimed_counts or counts, healthy=healthy
            ),
        ]
        exchange = self.normaliser.topology.exchange("source")
        for message in messages:
            await self.normaliser.publisher.publish(
                message.to_envelope(tenant_id=TENANT, producer="test"), exchange=exchange, routing_key=f"egil.{TENANT}"
            )
        return run_id

    async def published(self) -> int:
        """Change events the normaliser sent to vendors (each once, even if a relay published it twice)."""
        exchange = self.normaliser.topology.exchange("vendor")
        documents = await self.normaliser.outbox.collection.find({"sent_at": {"$ne": None}}).to_list(None)
        return sum(1 for d in documents for m in Outbox.messages_of(d) if m["exchange"] == exchange)

    def total_received(self) -> int:
        return len(self.received_ids)

    async def settled(self, run_id: uuid.UUID | None = None) -> None:
        """The run is finalised, no projection is running, the outbox is empty, and everything
        published to vendors has been received."""
        runs = self.normaliser.db["runs"]
        locks = self.normaliser.db["projection_locks"]

        async def done() -> bool:
            if run_id is not None:
                run = await runs.find_one({"_id": str(run_id)})
                if run is None or run.get("status") != "finalised":
                    return False
            return (
                await locks.count_documents({}) == 0
                and await self.normaliser.outbox.pending_count() == 0
                and self.total_received() == await self.published()
            )

        await wait_for(done, timeout=60, interval=0.1, what="the normaliser to settle")

    def take(self, vendor: str) -> list[VendorChange]:
        events = self.received.get(vendor, [])
        self.received[vendor] = []
        return events

    async def provision(self, snapshot: dict[str, SourceRecord]) -> dict[str, SourceRecord]:
        """Send ``snapshot`` as a full run, wait for it, and forget what the vendors received."""
        run = await self.send_run(list(snapshot.values()))
        await self.settled(run)
        self.take("binogi")
        self.take("ilt")
        return snapshot

    async def request_projection(self, reason: str) -> None:
        await self.normaliser.publisher.publish(
            ProjectionRequested(reason=reason).to_envelope(tenant_id=TENANT, producer="test"),
            exchange=self.normaliser.topology.exchange("control"),
            routing_key=ProjectionRequested.message_type,
        )


def metric(h: Harness, name: str, **labels: str) -> float | None:
    """A sample of the normaliser's metrics registry (what its /metrics shows)."""
    return h.normaliser.metrics.registry.get_sample_value(name, labels)


def summary(events: list[VendorChange]) -> set[tuple[str, str, str]]:
    return {(e.entity_kind.value, e.operation, str(e.entity_id)) for e in events}


@pytest.fixture
async def harness(settings: ServiceSettings):
    clock = [datetime(TODAY.year, TODAY.month, TODAY.day, 12, tzinfo=UTC)]
    normaliser_settings = NormaliserSettings.model_validate(
        # Gauges as every projection leaves them (the tests read them right after).
        {**settings.model_dump(), "date_check_interval_seconds": 86400, "state_gauges_min_interval_seconds": 0}
    )
    normaliser = build(normaliser_settings, clock=lambda: clock[0])
    vendors = ("binogi", "ilt")
    collector = ServiceApp.create("vendor-collector", settings, vendor_ids=vendors)
    h = Harness(normaliser, collector, settings, clock)

    def collect(vendor: str) -> Callable[[Envelope, MessageContext], Any]:
        async def handler(envelope: Envelope, context: MessageContext) -> None:
            h.received.setdefault(vendor, []).append(VendorChange.from_envelope(envelope))
            h.received_ids.add(envelope.message_id)

        return handler

    for vendor in vendors:
        collector.add_consumer(collector.queue_name("dispatcher", vendor), collect(vendor), idempotent=False)
    try:
        await h.subscriptions.save(
            VendorSubscription(tenant_id=TENANT, vendor_id="binogi", school_unit_codes=frozenset({U1, U2}))
        )
        await h.subscriptions.save(
            VendorSubscription(
                tenant_id=TENANT,
                vendor_id="ilt",
                school_unit_codes=frozenset({U1}),
                roles=frozenset({Role.STUDENT}),
                test_mode=False,
            )
        )
        profile = VendorProfile(vendor_id="ilt", kinds=frozenset(EntityKind) - {EntityKind.DUTY})
        await h.subscriptions.save_profile(profile)
        await collector.start()
        await normaliser.start()
        yield h
    finally:
        for app in (normaliser, collector):
            await app.drain(2)
            await app.close()
        await delete_topology(settings.broker.amqp_url.get_secret_value(), collector.topology)


async def test_snapshots_emit_exactly_the_expected_changes_per_vendor(harness: Harness):
    h = harness
    snapshot = base_snapshot()

    # 1. The first full snapshot provisions each vendor's selection, references first.
    run = await h.send_run(list(snapshot.values()))
    await h.settled(run)
    binogi, ilt = h.take("binogi"), h.take("ilt")
    assert {e.operation for e in binogi + ilt} == {"upsert"}
    assert summary(binogi) == {
        ("organisation", "upsert", str(eid(EntityKind.ORGANISATION, "hm"))),
        *(("school_unit", "upsert", str(eid(EntityKind.SCHOOL_UNIT, u))) for u in ("u1", "u2")),
        *(
            ("person", "upsert", str(eid(EntityKind.PERSON, p)))
            for p in ("s1", "s2", "s3", "s4", "s5", "s6", "t1", "t2")
        ),
        *(("duty", "upsert", str(eid(EntityKind.DUTY, d))) for d in ("d1", "d2")),
        *(("group", "upsert", str(eid(EntityKind.GROUP, g))) for g in ("g1", "g2")),
        ("activity", "upsert", str(eid(EntityKind.ACTIVITY, "a1"))),
    }
    assert summary(ilt) == {
        ("organisation", "upsert", str(eid(EntityKind.ORGANISATION, "hm"))),
        ("school_unit", "upsert", str(eid(EntityKind.SCHOOL_UNIT, "u1"))),
        *(("person", "upsert", str(eid(EntityKind.PERSON, p))) for p in ("s1", "s2", "s3")),
        ("group", "upsert", str(eid(EntityKind.GROUP, "g1"))),
        ("activity", "upsert", str(eid(EntityKind.ACTIVITY, "a1"))),
    }
    ranks = [KIND_ORDER.index(e.entity_kind) for e in binogi]
    assert ranks == sorted(ranks), "upserts must arrive references first"
    assert all(e.version == 1 for e in binogi + ilt)
    assert all(e.test_mode for e in binogi)
    assert not any(e.test_mode for e in ilt)
    ilt_person = next(e for e in ilt if e.entity_kind is EntityKind.PERSON)
    assert ilt_person.resource is not None
    assert "civic_no" not in ilt_person.resource
    assert ilt_person.resource["roles"] == ["student"]
    ilt_activity = next(e for e in ilt if e.entity_kind is EntityKind.ACTIVITY)
    assert ilt_activity.resource is not None
    assert ilt_activity.resource["teacher_duty_ids"] == []

    # 2. The same snapshot again: nothing changed, nothing is sent.
    published = await h.published()
    run = await h.send_run(list(snapshot.values()))
    await h.settled(run)
    assert await h.published() == published
    assert h.take("binogi") == []
    assert h.take("ilt") == []

    # 3. Changes: a rename, a move to another school unit, a leaver, a new group member and an
    #    enrolment that ended yesterday.
    yesterday = TODAY - timedelta(days=1)
    snapshot["s1"] = student("s1", "u1", 7, given="Nytt namn")
    snapshot["s3"] = student("s3", "u2", 8)
    snapshot["s2"] = student("s2", "u1", 7, end=yesterday)
    del snapshot["s6"]
    snapshot["g1"] = group("g1", "u1", ["s1", "s2", "s4"])
    snapshot["g2"] = group("g2", "u2", ["s3", "s4", "s5"])
    run = await h.send_run(list(snapshot.values()))
    await h.settled(run)
    binogi, ilt = h.take("binogi"), h.take("ilt")
    assert summary(binogi) == {
        ("person", "upsert", str(eid(EntityKind.PERSON, "s1"))),
        ("person", "upsert", str(eid(EntityKind.PERSON, "s3"))),
        ("group", "upsert", str(eid(EntityKind.GROUP, "g1"))),
        ("group", "upsert", str(eid(EntityKind.GROUP, "g2"))),
        ("person", "delete", str(eid(EntityKind.PERSON, "s2"))),
        ("person", "delete", str(eid(EntityKind.PERSON, "s6"))),
    }
    assert summary(ilt) == {
        ("person", "upsert", str(eid(EntityKind.PERSON, "s1"))),
        ("group", "upsert", str(eid(EntityKind.GROUP, "g1"))),
        ("person", "delete", str(eid(EntityKind.PERSON, "s2"))),
        ("person", "delete", str(eid(EntityKind.PERSON, "s3"))),
    }
    assert all(e.version == 2 for e in binogi + ilt)
    ops = [e.operation for e in binogi]
    assert ops == sorted(ops, key=lambda o: o == "delete"), "deletes come after upserts"
    g1 = next(e for e in ilt if e.entity_kind is EntityKind.GROUP)
    assert g1.resource is not None
    assert g1.resource["member_ids"] == [str(eid(EntityKind.PERSON, "s1"))]
    renamed = next(e for e in binogi if e.entity_id == eid(EntityKind.PERSON, "s1"))
    assert renamed.resource is not None
    assert renamed.resource["given_name"] == "Nytt namn"


async def test_incomplete_snapshot_removes_nothing_but_applies_changes(harness: Harness):
    h = harness
    snapshot = await h.provision(base_snapshot())

    del snapshot["s5"]
    snapshot["s4"] = student("s4", "u2", 8, given="Bytt namn")
    run = await h.send_run(list(snapshot.values()), healthy=False)
    await h.settled(run)
    assert summary(h.take("binogi")) == {("person", "upsert", str(eid(EntityKind.PERSON, "s4")))}
    findings = await h.normaliser.db["dq_findings"].find({"code": FindingCode.RUN_INCOMPLETE.value}).to_list(None)
    assert len(findings) == 1
    assert "read errors" in findings[0]["detail"]
    source = {"tenant": TENANT, "source": SOURCE}
    finalised = "skolsynk_source_runs_finalised_total"
    assert metric(h, finalised, **source, source_kind="egil", mode="full", complete="true") == 1
    assert metric(h, finalised, **source, source_kind="egil", mode="full", complete="false") == 1
    assert metric(h, "skolsynk_source_last_run_complete", **source, source_kind="egil") == 0
    assert metric(h, "skolsynk_source_last_complete_run_timestamp_seconds", **source, source_kind="egil")
    assert metric(h, "skolsynk_source_records_applied_total", **source) == len(base_snapshot()) + 1  # s4 changed
    assert metric(h, "skolsynk_source_records_removed_total", **source) == 0
    assert metric(h, "skolsynk_source_run_duration_seconds_count", source_kind="egil", mode="full") == 2
    assert metric(h, "skolsynk_dq_findings", tenant=TENANT, code="run.incomplete", severity="error") == 1
    assert metric(h, "skolsynk_source_runs_open", **source) is None

    # Counts that do not match the pages received are incomplete too.
    run = await h.send_run(list(snapshot.values()), claimed_counts={EntityKind.PERSON: 99})
    await h.settled(run)
    assert h.take("binogi") == []
    assert await h.normaliser.db["entities"].count_documents({"_id": str(eid(EntityKind.PERSON, "s5"))}) == 1


async def test_mass_deletion_guard_holds_only_the_affected_school_unit(harness: Harness):
    h = harness
    await h.subscriptions.save(
        VendorSubscription(
            tenant_id=TENANT,
            vendor_id="binogi",
            school_unit_codes=frozenset({U1, U2}),
            guard=MassDeletionGuard(max_removals=2, max_percent=100),
        )
    )
    snapshot = await h.provision(base_snapshot())

    for key in ("s4", "s5", "s6"):  # three leave U2: more than the guard allows
        del snapshot[key]
    del snapshot["s1"]  # one leaves U1: within the guard
    snapshot["g2"] = group("g2", "u2", [])
    snapshot["g1"] = group("g1", "u1", ["s2", "s3"])
    snapshot["t2"] = SourceRecord(kind=EntityKind.PERSON, key="t2", data={**snapshot["t2"].data, "given_name": "Ny"})
    run = await h.send_run(list(snapshot.values()))
    await h.settled(run)
    binogi = h.take("binogi")
    deletes = {e.entity_id for e in binogi if e.operation == "delete"}
    assert deletes == {eid(EntityKind.PERSON, "s1")}
    assert eid(EntityKind.PERSON, "t2") in {e.entity_id for e in binogi if e.operation == "upsert"}
    [hold] = await h.normaliser.db["holds"].find({"vendor_id": "binogi"}).to_list(None)
    assert hold["status"] == "pending"
    assert hold["school_unit_codes"] == [U2]
    assert sorted(hold["entity_ids"]) == sorted(str(eid(EntityKind.PERSON, k)) for k in ("s4", "s5", "s6"))
    assert metric(h, "skolsynk_holds_pending", tenant=TENANT, vendor="binogi") == 1
    assert metric(h, "skolsynk_holds_pending_removals", tenant=TENANT, vendor="binogi") == 3
    assert metric(h, "skolsynk_holds_oldest_pending_timestamp_seconds", tenant=TENANT, vendor="binogi")
    assert metric(h, "skolsynk_vendor_removals_held_total", tenant=TENANT, vendor="binogi") == 3

    # An operator approves the hold: the held removals go out and the hold is done.
    await h.normaliser.db["holds"].update_one({"_id": hold["_id"]}, {"$set": {"status": "approved"}})
    await h.request_projection("hold-approved")
    await wait_for(lambda: len(h.received.get("binogi", [])) == 3, what="the approved removals")
    await h.settled()
    assert {e.entity_id for e in h.take("binogi")} == {eid(EntityKind.PERSON, k) for k in ("s4", "s5", "s6")}
    assert await h.normaliser.db["holds"].count_documents({}) == 0
    assert metric(h, "skolsynk_holds_pending", tenant=TENANT, vendor="binogi") is None


async def test_filter_change_moves_exactly_the_affected_persons(harness: Harness):
    h = harness
    run = await h.send_run(list(base_snapshot().values()))
    await h.settled(run)
    h.take("binogi"), h.take("ilt")

    current = await h.subscriptions.get(TENANT, "binogi")
    assert current is not None
    proposed = current.model_copy(update={"school_years": frozenset({7})})
    projector = h.normaliser.extensions["handlers"].projector
    state = await projector.tenant_state(TENANT, TODAY)
    preview = preview_subscription_change(state, current, proposed, VendorProfile(vendor_id="binogi"), TODAY)
    year8 = {eid(EntityKind.PERSON, k) for k in ("s4", "s5", "s6")}
    assert {e.id for e in preview.removed} == year8
    assert preview.added == []
    assert preview.counts()[(U2, "student")]["removed"] == 3

    await h.subscriptions.save(proposed)
    await h.request_projection("subscription")
    await wait_for(lambda: len(h.received.get("binogi", [])) >= 4, what="the filter change")
    await h.settled()
    binogi = h.take("binogi")
    assert {e.entity_id for e in binogi if e.operation == "delete"} == year8
    assert {e.entity_id for e in binogi if e.operation == "upsert"} == {eid(EntityKind.GROUP, "g2")}
    assert h.take("ilt") == []


async def test_a_projection_of_the_whole_organiser_that_runs_out_of_time_continues_in_messages_of_its_own(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
):
    """However large the organiser, no projection handler outlasts its budget (RabbitMQ's acknowledgement
    timeout is behind it): a projection of the whole organiser stops when its slice of time is over, keeps
    its checkpoint with the tenant's lock and continues in a message of its own, each slice picking up where
    the last stopped. Here every chunk of two entities is a slice; the vendors get exactly what one
    projection in one go sends (the filter change above)."""
    h = harness
    run = await h.send_run(list(base_snapshot().values()))
    await h.settled(run)
    h.take("binogi"), h.take("ilt")
    handlers = h.normaliser.extensions["handlers"]
    continued: list[str] = []
    publish = handlers.continue_projection

    async def continue_projection(tenant_id: str, correlation_id: uuid.UUID | None) -> None:
        continued.append(tenant_id)
        await publish(tenant_id, correlation_id)

    monkeypatch.setattr(projection, "CHUNK_SIZE", 2)  # the organisation level is one chunk all the same
    monkeypatch.setattr(handlers, "continue_projection", continue_projection)
    monkeypatch.setattr(handlers, "slice_seconds", 1e-6)

    current = await h.subscriptions.get(TENANT, "binogi")
    assert current is not None
    await h.subscriptions.save(current.model_copy(update={"school_years": frozenset({7})}))
    timed = metric(h, "skolsynk_projection_seconds_count", reason="subscription") or 0
    await h.request_projection("subscription")
    await wait_for(lambda: len(h.received.get("binogi", [])) >= 4, what="the filter change")
    await h.settled()
    # Timed once, every slice together.
    assert metric(h, "skolsynk_projection_seconds_count", reason="subscription") == timed + 1
    year8 = {eid(EntityKind.PERSON, k) for k in ("s4", "s5", "s6")}
    binogi = h.take("binogi")
    assert {e.entity_id for e in binogi if e.operation == "delete"} == year8
    assert {e.entity_id for e in binogi if e.operation == "upsert"} == {eid(EntityKind.GROUP, "g2")}
    assert len(binogi) == 4
    assert h.take("ilt") == []
    assert len(continued) > 5
    assert await h.normaliser.db["projection_removals"].count_documents({}) == 0
    progress = await ProjectionStatus(h.normaliser.db).get(TENANT)
    assert not progress.running


async def test_removals_a_failed_sliced_projection_left_are_cleared_by_the_next_whole_projection(harness: Harness):
    """A slice that fails gives its checkpoint up (its request is projected again from the start); the
    removals its earlier slices kept are ignored by that projection (another projection's) and cleared when
    it ends, even when it ends in one slice."""
    h = harness
    run = await h.send_run(list(base_snapshot().values()))
    await h.settled(run)
    h.take("binogi"), h.take("ilt")
    [view] = await h.normaliser.db["vendor_views"].find({"vendor_id": "binogi", "present": True}).to_list(1)
    await h.normaliser.db["projection_removals"].insert_one(
        {"_id": view["_id"], "tenant_id": TENANT, "vendor_id": "binogi", "projection": "failed", "reason": "left"}
    )
    await h.request_projection("subscription")

    async def cleared() -> bool:
        return await h.normaliser.db["projection_removals"].count_documents({}) == 0

    await wait_for(cleared, what="the failed projection's removals to be cleared")
    await h.settled()
    assert h.take("binogi") == []  # nothing removed on the strength of another projection's removals


async def test_end_date_passing_without_source_change_removes_at_the_date_check(harness: Harness):
    h = harness
    snapshot = base_snapshot()
    snapshot["s2"] = student("s2", "u1", 7, end=TODAY + timedelta(days=1))
    run = await h.send_run(list(snapshot.values()))
    await h.settled(run)
    h.take("binogi"), h.take("ilt")

    h.clock[0] += timedelta(days=2)
    await h.request_projection("dates")
    await wait_for(lambda: len(h.received.get("ilt", [])) >= 2, what="the date check")
    await h.settled()
    assert summary(h.take("ilt")) == {
        ("person", "delete", str(eid(EntityKind.PERSON, "s2"))),
        ("group", "upsert", str(eid(EntityKind.GROUP, "g1"))),
    }


async def test_data_quality_findings_are_stored_queryable_and_exportable(harness: Harness):
    h = harness
    snapshot = base_snapshot()
    snapshot["u3"] = SourceRecord(
        kind=EntityKind.SCHOOL_UNIT, key="u3", data={"display_name": "Fel", "school_unit_code": "123"}
    )
    snapshot["s1"] = SourceRecord(
        kind=EntityKind.PERSON, key="s1", data={**snapshot["s1"].data, "emails": [{"value": "inte-en-adress"}]}
    )
    snapshot["s7"] = student("s7", "u9", 7)  # enrolled at a school unit the organiser does not have
    run = await h.send_run(list(snapshot.values()))
    await h.settled(run)
    store = FindingStore(h.normaliser.db)
    findings = await store.query(TENANT)
    codes = {(f.code, f.source_key) for f in findings}
    assert (FindingCode.SCHOOL_UNIT_CODE_MALFORMED, "u3") in codes
    assert (FindingCode.EMAIL_INVALID, "s1") in codes
    assert (FindingCode.EMAIL_MISSING, "s1") in codes
    # Ingest findings (one record checked alone) are placed in their school unit after the projection.
    placed = {(f.code, f.source_key): f.school_unit_code for f in findings}
    assert placed[(FindingCode.EMAIL_INVALID, "s1")] == U1
    assert (FindingCode.ENROLMENT_UNKNOWN_SCHOOL_UNIT, "s7") in codes
    assert (FindingCode.PERSON_NO_ACTIVE_RELATION, "s7") in codes
    assert [f.severity for f in findings] == sorted(f.severity for f in findings), "errors first"
    by_code = {(f.code.value, f.severity.value) for f in findings}
    for code, severity in by_code:
        expected = sum(1 for f in findings if f.code.value == code)
        assert metric(h, "skolsynk_dq_findings", tenant=TENANT, code=code, severity=severity) == expected
    emitted = metric(h, "skolsynk_vendor_changes_emitted_total", tenant=TENANT, vendor="binogi", operation="upsert")
    assert emitted is not None
    assert emitted > 0
    errors = await store.query(TENANT, severity=Severity.ERROR)
    assert {f.code for f in errors} == {FindingCode.SCHOOL_UNIT_CODE_MALFORMED}
    # The invalid school unit is withheld, the person with a bad address is still sent.
    assert await h.normaliser.db["entities"].count_documents({"key": "u3"}) == 0
    assert eid(EntityKind.PERSON, "s1") in {e.entity_id for e in h.take("binogi")}
    summary = await store.summary(TENANT)
    assert summary[U1]["warning"] >= 1
    assert summary["-"]["error"] == 1
    csv_text = await store.csv(TENANT)
    assert csv_text.splitlines()[0].startswith("severity,code,school_unit_code")
    assert len(csv_text.splitlines()) == len(findings) + 1
    # The invalid address is the finding's value, for those who may see it; never for anyone else.
    invalid = next(f for f in findings if f.code is FindingCode.EMAIL_INVALID)
    assert invalid.value == "inte-en-adress"
    assert "inte-en-adress" in csv_text
    assert "inte-en-adress" not in await store.csv(TENANT, FindingFilter(personal=False))


async def test_discarded_hold_keeps_the_accounts_and_does_not_ask_again(harness: Harness):
    h = harness
    await h.subscriptions.save(
        VendorSubscription(
            tenant_id=TENANT,
            vendor_id="binogi",
            school_unit_codes=frozenset({U1, U2}),
            guard=MassDeletionGuard(max_removals=2, max_percent=100),
        )
    )
    snapshot = await h.provision(base_snapshot())

    for key in ("s4", "s5", "s6"):
        del snapshot[key]
    snapshot["g2"] = group("g2", "u2", [])
    run = await h.send_run(list(snapshot.values()))
    await h.settled(run)
    assert [e for e in h.take("binogi") if e.operation == "delete"] == []
    holds = HoldStore(h.normaliser.db)
    [hold] = await holds.for_tenant(TENANT, status="pending")
    assert await holds.decide(TENANT, "binogi", hold["school_unit_id"], "discarded", by="operator-1")
    assert not await holds.decide(TENANT, "binogi", hold["school_unit_id"], "approved", by="operator-1")

    # The same source again: nothing is removed and nobody is asked again.
    run = await h.send_run(list(snapshot.values()))
    await h.settled(run)
    assert [e for e in h.take("binogi") if e.operation == "delete"] == []
    assert await holds.for_tenant(TENANT, status="pending") == []
    [kept] = await holds.for_tenant(TENANT)
    assert kept["status"] == "discarded"
    assert kept["decided_by"] == "operator-1"


async def test_incremental_run_applies_changes_and_deletions_directly(harness: Harness):
    h = harness
    run = await h.send_run(list(base_snapshot().values()))
    await h.settled(run)
    h.take("binogi"), h.take("ilt")

    # An incremental run names only what changed: one rename and one deletion. Nothing it leaves
    # out is removed.
    run = await h.send_run(
        [student("s4", "u2", 8, given="Ändrad")],
        mode="incremental",
        deletions=[SourceDeletion(kind=EntityKind.PERSON, key="s5")],
    )
    await h.settled(run)
    assert summary(h.take("binogi")) == {
        ("person", "upsert", str(eid(EntityKind.PERSON, "s4"))),
        ("person", "delete", str(eid(EntityKind.PERSON, "s5"))),
        ("group", "upsert", str(eid(EntityKind.GROUP, "g2"))),
    }
    assert await h.normaliser.db["entities"].count_documents({"tenant_id": TENANT}) == len(base_snapshot()) - 1


async def test_an_incremental_run_replaces_only_the_findings_of_the_records_it_carries(harness: Harness):
    h = harness
    snapshot = base_snapshot()
    for key in ("s1", "s2"):
        snapshot[key] = SourceRecord(
            kind=EntityKind.PERSON, key=key, data={**snapshot[key].data, "emails": [{"value": f"fel-{key}"}]}
        )
    run = await h.send_run(list(snapshot.values()))
    await h.settled(run)
    store = FindingStore(h.normaliser.db)

    async def invalid_emails() -> set[str]:
        return {str(f.source_key) for f in await store.query(TENANT, code=FindingCode.EMAIL_INVALID)}

    assert await invalid_emails() == {"s1", "s2"}
    # s2 is fixed in an incremental run that does not carry s1: s1's finding still stands.
    run = await h.send_run([student("s2", "u1", 7)], mode="incremental")
    await h.settled(run)
    assert await invalid_emails() == {"s1"}
    # s1 is deleted at the source: its finding goes with it.
    run = await h.send_run([], mode="incremental", deletions=[SourceDeletion(kind=EntityKind.PERSON, key="s1")])
    await h.settled(run)
    assert await invalid_emails() == set()


# --- ingest: pages of one run in any order and at once; unchanged records are not staged ------------

DIRECT = "direct-1"


def direct_id(key: str) -> str:
    return str(entity_id(TENANT, DIRECT, EntityKind.PERSON, key))


class DirectRun:
    """Messages of one run handed to :class:`Runs` directly, each in its own transaction (as the
    source-events consumer does), so a test can have many in flight at once and count attempts."""

    def __init__(self, h: Harness, runs: Runs, pages: list[list[SourceRecord]], *, mode: str = "full",
                 deletions: dict[int, list[SourceDeletion]] | None = None) -> None:  # fmt: skip
        self.h, self.runs, self.pages, self.mode = h, runs, pages, mode
        self.deletions = deletions or {}
        self.run_id = uuid.uuid4()
        self.attempts: Counter[str] = Counter()

    async def _in_transaction(self, name: str, work: Callable[[Any], Any]) -> Any:
        async def unit(session: Any) -> Any:
            self.attempts[name] += 1
            return await work(session)

        return await in_transaction(self.h.normaliser.mongo, unit)

    async def start(self) -> bool:
        message = SourceRunStarted(
            run_id=self.run_id, source_id=DIRECT, source_kind="egil", mode=self.mode, started_at=datetime.now(UTC)
        )
        return bool(await self._in_transaction("start", lambda s: self.runs.start(TENANT, message, session=s)))

    async def page(self, number: int) -> PageResult:
        message = SourceRecordPage(
            run_id=self.run_id,
            source_id=DIRECT,
            page=number,
            records=self.pages[number],
            deletions=self.deletions.get(number, []),
        )
        result: PageResult = await self._in_transaction(
            f"page {number}", lambda s: self.runs.ingest(TENANT, message, session=s)
        )
        return result

    async def complete(self) -> bool:
        counts: Counter[EntityKind] = Counter(r.kind for page in self.pages for r in page)
        message = SourceRunCompleted(
            run_id=self.run_id, source_id=DIRECT, pages=len(self.pages), counts=counts, healthy=True
        )
        return bool(await self._in_transaction("completion", lambda s: self.runs.complete(TENANT, message, session=s)))

    async def all_at_once(self) -> list[bool]:
        """Start, pages and completion concurrently, in a shuffled order; what each said about readiness."""
        work: list[Awaitable[Any]] = [self.start(), self.complete(), *(self.page(n) for n in range(len(self.pages)))]
        random.shuffle(work)
        results = await asyncio.gather(*work)
        return [r.run_ready if isinstance(r, PageResult) else r for r in results]

    async def staged(self) -> int:
        """Records written to the run's page documents (before finalise forgets them)."""
        pages = await self.h.normaliser.db["run_pages"].find({"run_id": str(self.run_id)}).to_list(None)
        return sum(len(p.get("documents") or []) for p in pages)

    async def status(self) -> str:
        run = await self.h.normaliser.db["runs"].find_one({"_id": str(self.run_id)})
        return str(run["status"]) if run else "absent"


def persons(keys: list[str], *, given: dict[str, str] | None = None) -> list[SourceRecord]:
    return [student(k, "u1", 7, given=(given or {}).get(k)) for k in keys]


async def test_pages_of_one_run_in_flight_together_make_it_ready_exactly_once(harness: Harness):
    h = harness
    runs = Runs(h.normaliser.db)
    keys = [f"p{n}" for n in range(60)]
    pages = [persons(keys[n : n + 2]) for n in range(0, len(keys), 2)]

    # The usual order: the start, then every page at once, then the completion. Pages write only their
    # own documents, so none of them ever has to be retried, and the completion finds the run whole.
    run = DirectRun(h, runs, pages)
    assert not await run.start()
    results = await asyncio.gather(*(run.page(n) for n in range(len(pages))))
    assert not any(r.run_ready for r in results)
    assert all(run.attempts[f"page {n}"] == 1 for n in range(len(pages))), run.attempts
    assert await h.normaliser.db["runs"].find_one({"_id": str(run.run_id)}, {"pages_received": 1}) == {
        "_id": str(run.run_id)
    }
    assert await run.complete()
    assert await run.status() == "ready"
    outcome = await runs.finalise(run.run_id)
    assert outcome is not None
    assert outcome.complete
    assert outcome.touched_entity_ids == {direct_id(k) for k in keys}

    # The completion first, then every page at once: the last of them, whichever it is, makes the run
    # ready, and only it.
    for _ in range(3):
        run = DirectRun(h, runs, pages)
        assert not await run.start()
        assert not await run.complete()
        results = await asyncio.gather(*(run.page(n) for n in random.sample(range(len(pages)), len(pages))))
        assert sum(r.run_ready for r in results) == 1
        assert await run.status() == "ready"
        assert (await runs.finalise(run.run_id)) is not None

    # Everything at once, in any order.
    for _ in range(3):
        run = DirectRun(h, runs, pages)
        assert sum(await run.all_at_once()) == 1, run.attempts
        assert await run.status() == "ready"
        outcome = await runs.finalise(run.run_id)
        assert outcome is not None
        assert outcome.complete, outcome


async def test_a_resync_without_changes_stages_nothing_and_touches_nothing(harness: Harness):
    h = harness
    runs = Runs(h.normaliser.db)
    keys = [f"r{n}" for n in range(12)]
    pages = [persons(keys[n : n + 4]) for n in range(0, len(keys), 4)]
    first = DirectRun(h, runs, pages)
    assert sum(await first.all_at_once()) == 1
    assert await first.staged() == len(keys)
    assert await runs.finalise(first.run_id) is not None

    again = DirectRun(h, runs, pages)
    assert sum(await again.all_at_once()) == 1
    assert await again.staged() == 0, "unchanged records are recognised by their hash and not staged"
    page = await h.normaliser.db["run_pages"].find_one({"_id": f"{again.run_id}:0"})
    assert len(page["seen"]) == 16 * 4, "every record is still recorded as seen, 16 bytes each"
    outcome = await runs.finalise(again.run_id)
    assert outcome is not None
    assert outcome.complete
    assert outcome.removed == 0
    assert outcome.touched_entity_ids == frozenset()
    assert await h.normaliser.db["entities"].count_documents({"source_id": DIRECT}) == len(keys)

    # One changed record: that one is staged, and touched.
    changed = [persons(keys[0:4], given={"r1": "Ny"}), *pages[1:]]
    third = DirectRun(h, runs, changed)
    assert sum(await third.all_at_once()) == 1
    assert await third.staged() == 1
    outcome = await runs.finalise(third.run_id)
    assert outcome is not None
    assert outcome.touched_entity_ids == {direct_id("r1")}


class StagedRecordsRead(monitoring.CommandListener):
    """How many pages with staged records each reply of ``run_pages`` carried."""

    def __init__(self) -> None:
        self.pages_per_reply: list[int] = []
        self._run_pages: set[int] = set()

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        collection = event.command.get("find") if event.command_name == "find" else event.command.get("collection")
        if event.command_name in ("find", "getMore") and collection == "run_pages":
            self._run_pages.add(event.request_id)

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        if event.request_id not in self._run_pages:
            return
        cursor = event.reply.get("cursor") or {}
        if cursor.get("ns", "").endswith(".run_pages"):
            batch = cursor.get("firstBatch", cursor.get("nextBatch", []))
            self.pages_per_reply.append(sum(1 for page in batch if any(len(d) > 1 for d in page.get("documents", []))))

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        self._run_pages.discard(event.request_id)


async def test_finalising_a_run_reads_its_staged_records_one_page_at_a_time(harness: Harness):
    """A full run is the whole organiser: finalising it holds one page's records at a time, not all."""
    h = harness
    keys = [f"m{n}" for n in range(24)]
    pages = [persons(keys[n : n + 4]) for n in range(0, len(keys), 4)]
    listener = StagedRecordsRead()
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        h.settings.store.mongodb_url.get_secret_value(), tz_aware=True, event_listeners=[listener]
    )
    try:
        run = DirectRun(h, Runs(h.normaliser.db), pages)
        assert sum(await run.all_at_once()) == 1
        assert await run.staged() == len(keys)
        outcome = await Runs(client[h.normaliser.db.name]).finalise(run.run_id)
        assert outcome is not None
        assert outcome.complete
        assert outcome.touched_entity_ids == {direct_id(k) for k in keys}
        assert sum(listener.pages_per_reply) == len(pages), "every page's records read once"
        assert max(listener.pages_per_reply) == 1, listener.pages_per_reply
    finally:
        await client.close()
    assert await h.normaliser.db["entities"].count_documents({"source_id": DIRECT}) == len(keys)


async def test_touched_entity_ids_name_what_a_run_changed_deleted_and_removed(harness: Harness):
    h = harness
    runs = Runs(h.normaliser.db)
    entities = h.normaliser.db["entities"]
    first = DirectRun(h, runs, [persons(["a", "b"]), persons(["c", "d"])])
    assert sum(await first.all_at_once()) == 1
    outcome = await runs.finalise(first.run_id)
    assert outcome is not None
    assert outcome.touched_entity_ids == {direct_id(k) for k in "abcd"}

    # Incremental: a changed, b deleted (and a deletion of something that never existed touches nothing).
    second = DirectRun(
        h,
        runs,
        [persons(["a"], given={"a": "Ändrad"})],
        mode="incremental",
        deletions={0: [SourceDeletion(kind=EntityKind.PERSON, key=k) for k in ("b", "never")]},
    )
    assert sum(await second.all_at_once()) == 1
    outcome = await runs.finalise(second.run_id)
    assert outcome is not None
    assert outcome.touched_entity_ids == {direct_id("a"), direct_id("b")}

    # Full: a unchanged, c unchanged, e new; d is absent and removed.
    third = DirectRun(h, runs, [persons(["a"], given={"a": "Ändrad"}), persons(["c", "e"])])
    assert sum(await third.all_at_once()) == 1
    outcome = await runs.finalise(third.run_id)
    assert outcome is not None
    assert outcome.complete
    assert outcome.removed == 1
    assert outcome.touched_entity_ids == {direct_id("e"), direct_id("d")}
    assert await entities.count_documents({"source_id": DIRECT}) == 3

    # Within one run, page 0 deletes c and renames a, page 1 carries both as they are stored (so they
    # are not staged): the run ends as the source left it, in page order.
    fourth = DirectRun(
        h,
        runs,
        [persons(["a"], given={"a": "Mellan"}), persons(["a", "c"], given={"a": "Ändrad"})],
        mode="incremental",
        deletions={0: [SourceDeletion(kind=EntityKind.PERSON, key="c")]},
    )
    assert sum(await fourth.all_at_once()) == 1
    assert await fourth.staged() == 1  # only page 0's rename
    outcome = await runs.finalise(fourth.run_id)
    assert outcome is not None
    assert (await entities.find_one({"_id": direct_id("a")}))["data"]["given_name"] == "Ändrad"
    assert await entities.count_documents({"_id": direct_id("c")}) == 1
    assert {direct_id("a"), direct_id("c")} <= outcome.touched_entity_ids


async def test_a_run_still_coming_in_shows_how_far_it_has_come(harness: Harness):
    """What the sources page shows of a run in progress: the pages and records in so far."""
    h = harness
    records = list(base_snapshot().values())
    run_id = uuid.uuid4()
    exchange = h.normaliser.topology.exchange("source")
    for message in (
        SourceRunStarted(
            run_id=run_id, source_id=SOURCE, source_kind="egil", mode="full", started_at=datetime.now(UTC)
        ),
        SourceRecordPage(run_id=run_id, source_id=SOURCE, page=0, records=records[:3]),
        SourceRecordPage(run_id=run_id, source_id=SOURCE, page=1, records=records[3:5]),
    ):
        await h.normaliser.publisher.publish(
            message.to_envelope(tenant_id=TENANT, producer="test"), exchange=exchange, routing_key=f"egil.{TENANT}"
        )
    history = SyncHistory(h.normaliser.db)

    async def both_pages_in() -> bool:
        runs = await history.source_runs(TENANT)
        return bool(runs) and runs[0]["progress"] == {"pages": 2, "records": 5}

    await wait_for(both_pages_in, what="the run's progress")
    [run] = await history.source_runs(TENANT)
    assert (run["status"], run["complete"]) == ("running", None)


async def test_a_run_whose_completion_came_before_its_start_does_not_break_the_run_gauges(harness: Harness):
    """Messages of a run can come in any order: a completion first leaves a run document with neither tenant
    nor source yet. The state gauges skip it (they raised KeyError, and every gauge refresh failed)."""
    h = harness
    await h.send_run(list(base_snapshot().values()))
    await h.normaliser.db["runs"].insert_one({"_id": "completion-first", "status": "running", "completion": {}})
    gauges = h.normaliser.extensions["state_gauges"]
    await gauges.refresh_runs()
    source = {"tenant": TENANT, "source": SOURCE, "source_kind": "egil"}

    async def refreshed() -> bool:
        await gauges.refresh_runs()
        return bool(metric(h, "skolsynk_source_last_run_timestamp_seconds", **source))

    await wait_for(refreshed, timeout=30, what="the run to be finalised and counted")


# --- persons without a securityMarking; personStatus ------------------------------------------------


def gdpr_deletions(documents: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    """(vendor, person id, reason) of the GDPR deletion requests in these outbox documents."""
    return {
        (
            m["envelope"]["payload"]["vendor_id"],
            m["envelope"]["payload"]["person_id"],
            m["envelope"]["payload"]["reason"],
        )
        for d in documents
        for m in Outbox.messages_of(d)
        if m["envelope"]["message_type"] == DeletionRequested.message_type
    }


async def test_persons_without_a_marking_follow_the_organisers_setting_without_a_restart(harness: Harness):
    """A source that does not give s1's securityMarking: by default s1 is a protected identity (excluded);
    the organiser's setting, read at the next projection, lets s1 in and takes them out again."""
    h = harness
    await TenantStore(h.normaliser.db).create(TENANT, "Kommun A", None)
    settings = OrganiserSettings(h.normaliser.db)
    snapshot = base_snapshot()
    snapshot["s1"] = student("s1", "u1", 7, marking=None)
    run = await h.send_run(list(snapshot.values()))
    await h.settled(run)
    s1, g1 = eid(EntityKind.PERSON, "s1"), eid(EntityKind.GROUP, "g1")
    for vendor in ("binogi", "ilt"):
        sent = h.take(vendor)
        assert s1 not in {e.entity_id for e in sent}
        [klass] = [e for e in sent if e.entity_id == g1]
        assert str(s1) not in klass.resource["member_ids"]  # type: ignore[index]
    store = FindingStore(h.normaliser.db)
    [missing] = await store.query(TENANT, code=FindingCode.SECURITY_MARKING_MISSING)
    assert (missing.origin, missing.source_id, missing.entity_id) == ("summary", SOURCE, None)
    assert (
        missing.detail
        == "1 of 8 persons have no securityMarking; treated as protected identities (the organiser's setting)"
    )

    async def projected_after(setting: MissingMarkingPolicy, count: int) -> None:
        assert await settings.set_missing_marking(TENANT, setting)
        await h.request_projection("privacy")
        await wait_for(lambda: len(h.received.get("ilt", [])) >= count, what="the projection after the setting")
        await h.settled()

    await projected_after(MissingMarkingPolicy.NOT_PROTECTED, 2)
    binogi, ilt = h.take("binogi"), h.take("ilt")
    assert (
        summary(binogi)
        == summary(ilt)
        == {
            ("person", "upsert", str(s1)),
            ("group", "upsert", str(g1)),
        }
    )
    [person] = [e for e in binogi if e.entity_id == s1]
    assert person.resource is not None
    assert person.resource["security_marking"] is None, "unknown is never sent as 'Ingen'"
    [missing] = await store.query(TENANT, code=FindingCode.SECURITY_MARKING_MISSING)
    assert missing.detail.endswith("treated as not protected (the organiser's setting)")

    outbox_before = {d["_id"] for d in await h.normaliser.outbox.collection.find({}, {"_id": 1}).to_list(None)}
    await projected_after(MissingMarkingPolicy.PROTECTED, 2)
    assert (
        summary(h.take("binogi"))
        == summary(h.take("ilt"))
        == {
            ("person", "delete", str(s1)),
            ("group", "upsert", str(g1)),
        }
    )
    # A live vendor's deletion goes to the GDPR ledger as any person leaving its selection does.
    documents = await h.normaliser.outbox.collection.find({"_id": {"$nin": sorted(outbox_before)}}).to_list(None)
    assert gdpr_deletions(documents) == {("ilt", str(s1), DeletionReason.LEFT_SELECTION.value)}


async def test_a_person_who_emigrates_or_dies_is_deleted_at_every_vendor_that_had_them(harness: Harness):
    h = harness
    await h.provision(base_snapshot())
    outbox_before = {d["_id"] for d in await h.normaliser.outbox.collection.find({}, {"_id": 1}).to_list(None)}
    changed = [
        student("s2", "u1", 7, status="Avliden"),
        student("s3", "u1", 7, status="Utflyttad"),  # not an SS 12000 value: a finding, and kept out
        teacher("t1", status="Utvandrad"),
    ]
    run = await h.send_run(changed, mode="incremental")
    await h.settled(run)
    binogi, ilt = h.take("binogi"), h.take("ilt")
    gone = {eid(EntityKind.PERSON, k) for k in ("s2", "s3", "t1")}
    assert {e.entity_id for e in binogi if e.operation == "delete"} == gone | {eid(EntityKind.DUTY, "d1")}
    assert {e.entity_id for e in ilt if e.operation == "delete"} == gone - {eid(EntityKind.PERSON, "t1")}
    for events in (binogi, ilt):
        [klass] = [e for e in events if e.entity_id == eid(EntityKind.GROUP, "g1")]
        assert klass.resource is not None
        assert klass.resource["member_ids"] == [str(eid(EntityKind.PERSON, "s1"))]
    documents = await h.normaliser.outbox.collection.find({"_id": {"$nin": sorted(outbox_before)}}).to_list(None)
    reason = DeletionReason.LEFT_SELECTION.value
    assert gdpr_deletions(documents) == {("ilt", str(eid(EntityKind.PERSON, k)), reason) for k in ("s2", "s3")}
    findings = await FindingStore(h.normaliser.db).query(TENANT, code=FindingCode.PERSON_STATUS_UNKNOWN)
    assert [(f.source_key, f.field) for f in findings] == [("s3", "person_status")]
    assert "Utflyttad" not in findings[0].detail


async def test_the_organisation_tree_resolves_and_an_organisation_of_unknown_type_is_a_finding(harness: Harness):
    """Issue 20: the levels above the school units are kept; a teacher whose duty is at a Skola reaches
    the vendors of the school units beneath it (one duty per unit), the units go out under their
    Huvudman and the levels between are not sent; an organisation of unknown type is a finding of the run."""
    h = harness
    snapshot = base_snapshot()
    level = {"organisation_type": "Skola", "parent": "hm"}
    snapshot["sk"] = SourceRecord(kind=EntityKind.ORGANISATION, key="sk", data={"display_name": "Skolan", **level})
    unknown = {"display_name": "Okänd", "organisation_type": "Kommundel", "parent": "hm"}
    snapshot["x"] = SourceRecord(kind=EntityKind.ORGANISATION, key="x", data=unknown)
    for key in ("u1", "u2"):
        snapshot[key] = snapshot[key].model_copy(update={"data": {**snapshot[key].data, "organisation": "sk"}})
    snapshot["t3"], snapshot["d3"] = teacher("t3"), duty("d3", "t3", "sk")
    run = await h.send_run(list(snapshot.values()))
    await h.settled(run)
    binogi = h.take("binogi")
    units = sorted(str(eid(EntityKind.SCHOOL_UNIT, k)) for k in ("u1", "u2"))
    [t3] = [e for e in binogi if e.entity_id == eid(EntityKind.PERSON, "t3")]
    assert t3.resource is not None
    assert (t3.resource["roles"], t3.resource["school_unit_ids"]) == (["teacher"], units)
    duties = {e.entity_id for e in binogi if e.entity_kind is EntityKind.DUTY and e.resource is not None}
    assert duties >= {duty_at_unit_id(eid(EntityKind.DUTY, "d3"), uuid.UUID(u)) for u in units}
    sent_units = [e.resource for e in binogi if e.entity_kind is EntityKind.SCHOOL_UNIT and e.resource]
    assert {u["organisation_id"] for u in sent_units} == {str(eid(EntityKind.ORGANISATION, "hm"))}
    organisations = {e.entity_id for e in binogi if e.entity_kind is EntityKind.ORGANISATION}
    assert organisations == {eid(EntityKind.ORGANISATION, "hm")}
    store = FindingStore(h.normaliser.db)
    [finding] = await store.query(TENANT, code=FindingCode.ORGANISATION_TYPE_UNKNOWN)
    assert (finding.source_key, finding.field, finding.run_id) == ("x", "organisation_type", run)
    assert "Kommundel" not in finding.detail
    assert not [f for f in await store.query(TENANT) if f.source_key in ("t3", "d3")]
