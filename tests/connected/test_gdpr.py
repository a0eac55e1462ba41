"""The GDPR service with the normaliser and two dispatchers (an EGIL SCIM vendor on the fake vendor
server, and a queue vendor) on the real broker and the Mongo wire server: leavers are deleted at
every vendor with receipts in the ledger, their personal data is purged, erasure requests suppress,
overdue deletions are retried, and the evidence export tells the story without personal data."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from bson import json_util
from pymongo.errors import OperationFailure

from skolsynk.contracts.envelope import MessageContract
from skolsynk.contracts.gdpr import DeletionReceipt, DeletionRequested, ErasureRequested, ErasureWithdrawn
from skolsynk.contracts.source import SourceRecord
from skolsynk.contracts.vendor import ProjectionRequested
from skolsynk.domain.ids import entity_id
from skolsynk.domain.ss12000 import EntityKind
from skolsynk.domain.subscription import VendorSubscription
from skolsynk.messaging.vhosts import amqp_url_with_vhost
from skolsynk.service import ServiceApp
from skolsynk.settings import ServiceSettings
from skolsynk.storage import ensure_indexes
from skolsynk.storage.erasures import EVIDENCE_COLUMNS, ErasureLedger, TombstoneStore
from skolsynk.storage.findings import FindingStore
from skolsynk.storage.holds import HoldStore
from skolsynk.storage.runs import SourceRuns
from skolsynk.storage.subscriptions import SubscriptionStore
from skolsynk_services.dispatcher.app import DispatcherSettings
from skolsynk_services.dispatcher.app import build as build_dispatcher
from skolsynk_services.dispatcher.onboarding import feed_queue_name, vendor_vhost
from skolsynk_services.gdpr.app import GdprSettings
from skolsynk_services.gdpr.app import build as build_gdpr
from skolsynk_services.normaliser.app import NormaliserSettings
from skolsynk_services.normaliser.app import build as build_normaliser
from skolsynk_testkit.devstack import write_vendor_catalogue
from skolsynk_testkit.fakes.egil_vendor import FakeEgilVendor
from skolsynk_testkit.synthetic import full_run, organiser, school_unit_codes, without_person
from tests.helpers import delete_topology, peek_queues, queue_names, wait_for

pytestmark = [
    pytest.mark.connected,
    pytest.mark.timeout(120),
    pytest.mark.queues("normaliser.source-events", "normaliser.projections", "gdpr.events"),
]

TENANT = "kommun-g"
SOURCE = "egil-1"
SCIM_VENDOR = "scimvendor"
QUEUE_VENDOR = "queuevendor"
VENDORS = (SCIM_VENDOR, QUEUE_VENDOR)
API_KEY = "test-key-" + "1" * 16
LEAVER = "student-0-1"
#: The leaver's personal data, unique in the organiser so a scan can look for it.
LEAVER_DATA = {
    "given_name": "Ellinor-Unika",
    "family_name": "Raderasson",
    "eppn": ["ellinor.raderasson@demo.skolsynk.example"],
    "emails": [{"value": "ellinor.raderasson@elev.demo.skolsynk.example", "type": "Skola elev"}],
    "civic_no": "201501019882",
}
SECONDS = 1 / 3600  # one second, in hours


def person_id(key: str) -> uuid.UUID:
    return entity_id(TENANT, SOURCE, EntityKind.PERSON, key)


def the_organiser() -> list[SourceRecord]:
    records = organiser(seed=8, school_units=1, students_per_unit=4, teachers_per_unit=1)
    return [
        SourceRecord(kind=r.kind, key=r.key, data={**r.data, **LEAVER_DATA}) if r.key == LEAVER else r for r in records
    ]


@dataclass
class Stack:
    settings: ServiceSettings
    normaliser: ServiceApp
    dispatchers: list[ServiceApp]
    gdpr: ServiceApp
    vendor: FakeEgilVendor
    clock: list[timedelta]
    records: list[SourceRecord] = field(default_factory=the_organiser)
    runs: list[uuid.UUID] = field(default_factory=list)

    @property
    def ledger(self) -> ErasureLedger:
        return ErasureLedger(self.gdpr.db)

    @property
    def apps(self) -> list[ServiceApp]:
        return [self.normaliser, *self.dispatchers, self.gdpr]

    async def subscribe(self, vendor_id: str, **fields: Any) -> None:
        await SubscriptionStore(self.normaliser.db).save(
            VendorSubscription(
                tenant_id=TENANT,
                vendor_id=vendor_id,
                school_unit_codes=frozenset(school_unit_codes(self.records)),
                **{"test_mode": False, **fields},
            )
        )

    async def sync(self, records: list[SourceRecord]) -> None:
        run_id = uuid.uuid4()
        self.runs.append(run_id)
        for message in full_run(records, source_id=SOURCE, source_kind="egil", page_size=25, run_id=run_id):
            await self.publish(message, "source", f"egil.{TENANT}")

    async def publish(self, message: MessageContract, exchange: str, routing_key: str) -> None:
        await self.normaliser.publisher.publish(
            message.to_envelope(tenant_id=TENANT, producer="test"),
            exchange=self.normaliser.topology.exchange(exchange),
            routing_key=routing_key,
        )

    async def project(self, reason: str = "test") -> None:
        await self.publish(ProjectionRequested(reason=reason), "control", ProjectionRequested.message_type)

    async def settled(self, timeout: float = 60) -> None:
        """Runs finalised, no projection running, nothing left in any outbox, and every vendor view entry
        delivered at its version."""
        db = self.normaliser.db

        async def done() -> bool:
            for run_id in self.runs:
                run = await db["runs"].find_one({"_id": str(run_id)})
                if run is None or run.get("status") != "finalised":
                    return False
            if await db["projection_locks"].count_documents({}) or await self.normaliser.outbox.pending_count():
                return False
            views = {(d["vendor_id"], d["entity_id"]): d["version"] async for d in db["vendor_views"].find()}
            ledger = {(d["vendor_id"], d["entity_id"]): d["version"] async for d in db["delivery_ledger"].find()}
            return bool(views) and all(ledger.get(k) == v for k, v in views.items())

        await wait_for(done, timeout=timeout, interval=0.2, what="deliveries to settle")

    async def entries_of(self, key: str) -> list[dict[str, Any]]:
        return await self.ledger.for_person(TENANT, str(person_id(key)))

    async def finished(self, key: str, count: int, timeout: float = 60) -> list[dict[str, Any]]:
        """Wait until ``count`` ledger entries of the person are finished; return them."""

        async def done() -> bool:
            entries = await self.entries_of(key)
            return len(entries) == count and all(e["status"] in ("completed", "superseded") for e in entries)

        await wait_for(done, timeout=timeout, interval=0.2, what=f"{count} finished deletions")
        return await self.entries_of(key)

    async def scan(self, *needles: str) -> dict[str, list[str]]:
        """Every collection of the database, searched for each needle: collection -> needles found."""
        found: dict[str, list[str]] = {}
        db = self.normaliser.db
        for name in await db.list_collection_names():
            text = json_util.dumps(await db[name].find().to_list(None))
            hits = [n for n in needles if n in text]
            if hits:
                found[name] = hits
        return found


async def start_stack(
    settings: ServiceSettings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    *,
    feed_compaction_seconds: float = 0,
    **gdpr_overrides: Any,
) -> Stack:
    vendor = FakeEgilVendor(api_keys={API_KEY: TENANT})
    stack: Stack | None = None
    try:
        await vendor.start()
        monkeypatch.setenv("SKOLSYNK_TEST_GDPR_VENDOR_KEY", API_KEY)
        catalogue = tmp_path / "vendors"
        write_vendor_catalogue(
            catalogue, SCIM_VENDOR, scim_base_url=vendor.base_url, api_key_env="SKOLSYNK_TEST_GDPR_VENDOR_KEY"
        )
        write_vendor_catalogue(catalogue, QUEUE_VENDOR)
        base = settings.model_dump()
        clock = [timedelta(0)]  # the normaliser's clock runs ahead by this much (the grace-period test moves it)
        normaliser = build_normaliser(
            NormaliserSettings.model_validate({**base, "date_check_interval_seconds": 86400}),
            clock=lambda: datetime.now(UTC) + clock[0],
        )
        dispatchers = [
            build_dispatcher(
                DispatcherSettings.model_validate(
                    {
                        **base,
                        "vendor_id": v,
                        "vendor_catalogue_dir": catalogue,
                        "vendor_retry_timeout_seconds": 1,
                        "feed_compaction_seconds": feed_compaction_seconds,
                    }
                )
            )
            for v in VENDORS
        ]
        gdpr = build_gdpr(
            GdprSettings.model_validate(
                {
                    **base,
                    "gdpr_deletion_deadline_hours": 24,
                    "gdpr_retry_interval_minutes": 60,
                    "gdpr_sweep_interval_seconds": 0.2,
                    **gdpr_overrides,
                }
            )
        )
        stack = Stack(settings, normaliser, dispatchers, gdpr, vendor, clock)
        for app in stack.apps:
            await app.start()
    except BaseException:  # what started is stopped: a failed start leaves nothing behind
        if stack is not None:
            await stop_stack(stack)
        else:
            await vendor.stop()
        raise
    return stack


async def stop_stack(stack: Stack) -> None:
    for app in stack.apps:
        await app.drain(2)
        await app.close()
    await stack.vendor.stop()
    url = stack.settings.broker.amqp_url.get_secret_value()
    for app in stack.dispatchers:
        await delete_topology(url, app.topology)


@pytest.fixture(autouse=True)
async def queue_vendor_vhost(vendor_vhosts: Callable[[str], Awaitable[str]]) -> str:
    """The queue vendor's own vhost, where its feed lives (deleted with everything in it afterwards)."""
    return await vendor_vhosts(QUEUE_VENDOR)


@pytest.fixture
async def stack(settings: ServiceSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Stack]:
    built = await start_stack(settings, tmp_path, monkeypatch)
    try:
        yield built
    finally:
        await stop_stack(built)


@pytest.fixture
async def compacting_stack(
    settings: ServiceSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Stack]:
    """The stack with the queue vendor's feed compacted 0.2 s after a delete (off in the others: a service
    stopped right after a pass can wait minutes for the broker, docs/decisions.md #20)."""
    built = await start_stack(settings, tmp_path, monkeypatch, feed_compaction_seconds=0.2)
    try:
        yield built
    finally:
        await stop_stack(built)


async def provision(stack: Stack, **subscription: Any) -> None:
    for vendor_id in VENDORS:
        await stack.subscribe(vendor_id, **subscription)
    await stack.sync(stack.records)
    await stack.settled()
    assert str(person_id(LEAVER)) in stack.vendor.resources(TENANT, "Users")


async def test_a_leaver_is_deleted_everywhere_with_receipts_and_purged(stack: Stack):
    await provision(stack)
    await stack.sync(without_person(stack.records, LEAVER))
    await stack.settled()
    entries = await stack.finished(LEAVER, 2)

    assert str(person_id(LEAVER)) not in stack.vendor.resources(TENANT, "Users")
    by_vendor = {e["vendor_id"]: e for e in entries}
    assert set(by_vendor) == set(VENDORS)
    assert by_vendor[SCIM_VENDOR]["receipt"]["outcome"] == "deleted"
    assert by_vendor[QUEUE_VENDOR]["receipt"]["outcome"] == "queued"
    for entry in entries:
        assert entry["status"] == "completed"
        assert entry["reason"] == "left_source"
        assert entry["requested_at"] <= entry["receipt"]["delivered_at"]
        assert entry["expires_at"] > datetime.now(UTC) + timedelta(days=180)

    # Purged: a tombstone, and no trace of the person's name, e-mail or civic number anywhere.
    async def tombstone() -> bool:
        return await TombstoneStore(stack.gdpr.db).get(TENANT, str(person_id(LEAVER))) is not None

    await wait_for(tombstone, timeout=20, what="the purge")
    # What stays of the person is ids, and those expire too: the vendors' delivery ledger rows of the
    # deletion with the tombstone's retention, the vendor views a week later (a comeback is always newer).
    db = stack.normaliser.db
    soon, later = datetime.now(UTC) + timedelta(days=182), datetime.now(UTC) + timedelta(days=191)
    leaver = str(person_id(LEAVER))
    rows = (
        await db["delivery_ledger"].find({"entity_id": {"$in": [e["vendor_entity_id"] for e in entries]}}).to_list(None)
    )
    assert len(rows) == 2
    assert all(r["operation"] == "delete" and soon < r["expires_at"] < later for r in rows)
    views = await db["vendor_views"].find({"source_entity_id": leaver}).to_list(None)
    assert len(views) == 2
    assert all(not v["present"] and rows[0]["expires_at"] < v["expires_at"] < later for v in views)
    staying = await db["vendor_views"].find_one({"present": True, "kind": "person"})
    assert staying is not None
    assert staying["expires_at"] is None
    needles = [
        LEAVER_DATA["given_name"],
        LEAVER_DATA["family_name"],
        LEAVER_DATA["civic_no"],
        "ellinor.raderasson",
    ]
    assert await stack.scan(*needles) == {}
    # ... while the persons still in the source are still there (the scan can find what exists).
    others = await stack.scan("student-0-2@elev.demo.skolsynk.example")
    assert "entities" in others

    # Evidence: one row per vendor, with receipts and no personal data.
    ledger = stack.ledger
    rows = list(csv.DictReader(io.StringIO(await ledger.evidence_csv(TENANT))))
    assert sorted((r["vendor_id"], r["outcome"], r["reason"]) for r in rows) == [
        (QUEUE_VENDOR, "queued", "left_source"),
        (SCIM_VENDOR, "deleted", "left_source"),
    ]
    assert {r["person_id"] for r in rows} == {str(person_id(LEAVER))}
    assert all(r["delivered_at"] and r["requested_at"] for r in rows)
    only_scim = json.loads(await ledger.evidence_json(TENANT, vendor_id=SCIM_VENDOR))
    assert [d["vendor_id"] for d in only_scim["deletions"]] == [SCIM_VENDOR]
    export = await ledger.evidence_csv(TENANT) + await ledger.evidence_json(TENANT)
    assert not any(n in export for n in needles)
    assert (
        await ledger.evidence_csv("another-tenant")
        == ",".join(
            [
                "tenant_id",
                "vendor_id",
                "person_id",
                "vendor_entity_id",
                "version",
                "reason",
                "removed_at",
                "requested_at",
                "status",
                "outcome",
                "delivered_at",
                "vendor_status",
                "retries",
            ]
        )
        + "\n"
    )

    metrics = stack.gdpr.metrics.registry
    assert (
        metrics.get_sample_value(
            "skolsynk_gdpr_deletions_completed_total", {"vendor": SCIM_VENDOR, "outcome": "deleted"}
        )
        == 1
    )
    assert metrics.get_sample_value("skolsynk_gdpr_removal_to_receipt_seconds_count", {"vendor": QUEUE_VENDOR}) == 1


async def test_an_erasure_request_suppresses_a_person_still_in_the_source(stack: Stack):
    await provision(stack)
    target = "student-0-2"
    request = ErasureRequested(
        request_id=uuid.uuid4(), person_id=person_id(target), vendor_ids=[SCIM_VENDOR], requested_by="admin-1"
    )
    await stack.publish(request, "gdpr", ErasureRequested.message_type)
    [entry] = await stack.finished(target, 1)
    assert (entry["vendor_id"], entry["reason"], entry["receipt"]["outcome"]) == (
        SCIM_VENDOR,
        "erasure_request",
        "deleted",
    )
    assert str(person_id(target)) not in stack.vendor.resources(TENANT, "Users")
    # The other vendor keeps the person; skolsynk keeps the source's data (the person is still there).
    views = stack.normaliser.db["vendor_views"]
    queue_view = await views.find_one({"vendor_id": QUEUE_VENDOR, "entity_id": str(person_id(target))})
    assert queue_view is not None
    assert queue_view["present"]
    assert await stack.normaliser.db["entities"].count_documents({"_id": str(person_id(target))}) == 1

    # Another snapshot still containing the person does not bring them back.
    await stack.sync(stack.records)
    await stack.settled()
    assert str(person_id(target)) not in stack.vendor.resources(TENANT, "Users")

    # Withdrawn: delivered again.
    await stack.publish(
        ErasureWithdrawn(request_id=request.request_id, withdrawn_by="admin-1"), "gdpr", ErasureWithdrawn.message_type
    )
    await wait_for(
        lambda: str(person_id(target)) in stack.vendor.resources(TENANT, "Users"),
        timeout=30,
        what="the person to be delivered again",
    )


async def test_a_withdrawal_from_another_tenant_changes_nothing(stack: Stack):
    await provision(stack)
    target = "student-0-3"
    request = ErasureRequested(request_id=uuid.uuid4(), person_id=person_id(target), requested_by="admin-1")
    await stack.publish(request, "gdpr", ErasureRequested.message_type)
    await stack.finished(target, 2)
    withdrawal = ErasureWithdrawn(request_id=request.request_id, withdrawn_by="intruder").to_envelope(
        tenant_id="kommun-other", producer="test"
    )
    await stack.gdpr.publisher.publish(
        withdrawal, exchange=stack.gdpr.topology.exchange("gdpr"), routing_key=ErasureWithdrawn.message_type
    )
    inbox = stack.gdpr.db["inbox"]
    await wait_for(
        lambda: inbox.count_documents({"_id": {"$regex": f"{withdrawal.message_id}$"}}),
        what="the GDPR service to handle the withdrawal",
    )
    requests = stack.gdpr.db["erasure_requests"]
    doc = await requests.find_one({"_id": str(request.request_id)})
    assert doc is not None
    assert doc["status"] == "active"


async def test_an_unreachable_vendor_keeps_the_deletion_pending_overdue_and_retried_until_it_recovers(
    settings: ServiceSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    stack = await start_stack(
        settings,
        tmp_path,
        monkeypatch,
        gdpr_deletion_deadline_hours=1 * SECONDS,
        gdpr_retry_interval_minutes=1 / 60,
    )
    try:
        await provision(stack)
        stack.vendor.down()
        await stack.sync(without_person(stack.records, LEAVER))

        async def overdue_and_retried() -> bool:
            entries = await stack.entries_of(LEAVER)
            scim = [e for e in entries if e["vendor_id"] == SCIM_VENDOR]
            return bool(scim) and scim[0]["status"] == "overdue" and scim[0].get("retries", 0) >= 1

        await wait_for(overdue_and_retried, timeout=30, interval=0.2, what="the deletion to be overdue and retried")
        registry = stack.gdpr.metrics.registry
        overdue = {"tenant": TENANT, "vendor": SCIM_VENDOR}
        # The sweep refreshes its gauges after its retries: wait for the alert to show, not just the ledger.
        await wait_for(
            lambda: registry.get_sample_value("skolsynk_gdpr_deletions_overdue", overdue) == 1,
            timeout=10,
            what="the overdue gauge",
        )
        assert str(person_id(LEAVER)) in stack.vendor.resources(TENANT, "Users")

        await stack.vendor.up()
        entries = await stack.finished(LEAVER, 2)
        scim = next(e for e in entries if e["vendor_id"] == SCIM_VENDOR)
        assert scim["status"] == "completed"
        assert scim["overdue_at"] is not None
        assert str(person_id(LEAVER)) not in stack.vendor.resources(TENANT, "Users")
        await wait_for(
            lambda: (
                registry.get_sample_value("skolsynk_gdpr_deletions_overdue", {"tenant": TENANT, "vendor": SCIM_VENDOR})
                is None
            ),
            what="the overdue gauge to clear",
        )
    finally:
        await stop_stack(stack)


async def test_two_phase_deletion_waits_for_the_grace_period_and_forgives_a_comeback(stack: Stack):
    await provision(stack, deletion_grace_hours=1.0)
    comeback = "student-0-3"
    await stack.sync(without_person(without_person(stack.records, LEAVER), comeback))
    await stack.settled()
    users = stack.vendor.resources(TENANT, "Users")
    assert {str(person_id(LEAVER)), str(person_id(comeback))} <= set(users), "deleted before the grace period"
    views = stack.normaliser.db["vendor_views"]
    pending = await views.find_one({"vendor_id": SCIM_VENDOR, "entity_id": str(person_id(LEAVER))})
    assert pending is not None
    assert pending["removal_pending_since"] is not None

    # The comeback returns within the grace period; then the grace period passes.
    await stack.sync(without_person(stack.records, LEAVER))
    await stack.settled()
    stack.clock[0] += timedelta(hours=2)
    await stack.project("dates")
    entries = await stack.finished(LEAVER, 2)
    users = stack.vendor.resources(TENANT, "Users")
    assert str(person_id(LEAVER)) not in users
    assert str(person_id(comeback)) in users
    assert await stack.entries_of(comeback) == []
    for entry in entries:
        assert entry["removed_at"] < entry["requested_at"]


async def test_an_ended_subscription_deletes_everyone_at_that_vendor_only(stack: Stack):
    await provision(stack)
    persons = [r.key for r in stack.records if r.kind is EntityKind.PERSON]
    assert await SubscriptionStore(stack.normaliser.db).end(TENANT, SCIM_VENDOR)
    await stack.project("subscription")
    for key in persons:
        [entry] = await stack.finished(key, 1)
        assert (entry["vendor_id"], entry["reason"]) == (SCIM_VENDOR, "subscription_ended")
    await stack.settled()
    assert stack.vendor.resources(TENANT, "Users") == {}
    assert stack.vendor.resources(TENANT, "StudentGroups") == {}
    present = await stack.normaliser.db["vendor_views"].count_documents({"vendor_id": QUEUE_VENDOR, "present": True})
    assert present > 0


async def test_tombstones_and_finished_entries_expire(
    settings: ServiceSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    stack = await start_stack(settings, tmp_path, monkeypatch, gdpr_retention_days=1 / 86400)
    try:
        await provision(stack)
        await stack.sync(without_person(stack.records, LEAVER))
        await stack.settled()
        await stack.finished(LEAVER, 2)
        tombstones = stack.gdpr.db["gdpr_tombstones"]
        await wait_for(lambda: tombstones.count_documents({}), timeout=20, what="the tombstone")

        async def expired() -> bool:
            # SecantusDB runs its TTL monitor on demand; a real MongoDB does within a minute.
            with contextlib.suppress(OperationFailure):
                await stack.gdpr.db.command("secantusAdmin.pruneTtl")
            return await tombstones.count_documents({}) == 0 and await stack.entries_of(LEAVER) == []

        await wait_for(expired, timeout=90, interval=0.5, what="the tombstone and ledger entries to expire")
    finally:
        await stop_stack(stack)


async def test_the_operator_cli_requests_an_erasure_and_exports_the_evidence(
    stack: Stack, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    from skolsynk_services.gdpr import cli

    settings = stack.settings
    monkeypatch.setenv("AMQP_URL", settings.broker.amqp_url.get_secret_value())
    monkeypatch.setenv("MONGODB_URL", settings.store.mongodb_url.get_secret_value())
    monkeypatch.setenv("MONGODB_DATABASE", settings.store.mongodb_database)
    monkeypatch.setenv("SKOLSYNK_NAMESPACE", settings.broker.namespace)
    # The CLI declares the topology like every service: with the same queue arguments.
    monkeypatch.setenv("SKOLSYNK_DELIVERY_LIMIT", str(settings.broker.delivery_limit))
    monkeypatch.setenv("SKOLSYNK_RETRY_DELAYS_SECONDS", json.dumps(list(settings.broker.retry_delays_seconds)))
    await provision(stack)
    target = "student-0-0"
    arguments = ["erase", "--tenant", TENANT, "--person", str(person_id(target)), "--vendor", QUEUE_VENDOR]
    assert await asyncio.to_thread(cli.main, [*arguments, "--by", "operator", "--reference", "D-2026-17"]) == 0
    request_id = capsys.readouterr().out.strip().splitlines()[-1]  # (the test's own logs go to stdout too)
    [entry] = await stack.finished(target, 1)
    assert (entry["vendor_id"], entry["reason"]) == (QUEUE_VENDOR, "erasure_request")
    request = await stack.gdpr.db["erasure_requests"].find_one({"_id": request_id})
    assert request is not None
    assert (request["reference"], request["requested_by"], request["vendor_ids"]) == (
        "D-2026-17",
        "operator",
        [QUEUE_VENDOR],
    )

    output = tmp_path / "evidence.json"
    arguments = ["evidence", "--tenant", TENANT, "--format", "json", "--output", str(output)]
    assert await asyncio.to_thread(cli.main, arguments) == 0
    exported = json.loads(output.read_text(encoding="utf-8"))
    assert [(d["vendor_id"], d["outcome"]) for d in exported["deletions"]] == [(QUEUE_VENDOR, "queued")]
    later = tmp_path / "later.csv"
    since = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    arguments = ["evidence", "--tenant", TENANT, "--since", since, "--output", str(later)]
    assert await asyncio.to_thread(cli.main, arguments) == 0
    assert later.read_text(encoding="utf-8").splitlines() == [",".join(EVIDENCE_COLUMNS)]


async def test_a_leaver_also_selected_by_a_test_mode_subscription_is_purged(stack: Stack):
    """A test-mode subscription delivers nothing, so it never holds a purge back (issue 24)."""
    await stack.subscribe(SCIM_VENDOR)
    await stack.subscribe(QUEUE_VENDOR, test_mode=True)
    await stack.sync(stack.records)
    await stack.settled()
    assert str(person_id(LEAVER)) in stack.vendor.resources(TENANT, "Users")
    await stack.sync(without_person(stack.records, LEAVER))
    await stack.settled()
    [entry] = await stack.finished(LEAVER, 1)  # the live vendor's deletion only: test mode has no ledger entry
    assert entry["vendor_id"] == SCIM_VENDOR

    async def tombstone() -> bool:
        return await TombstoneStore(stack.gdpr.db).get(TENANT, str(person_id(LEAVER))) is not None

    await wait_for(tombstone, timeout=20, what="the purge")
    needles = [LEAVER_DATA["given_name"], LEAVER_DATA["family_name"], LEAVER_DATA["civic_no"], "ellinor.raderasson"]
    assert await stack.scan(*needles) == {}


async def publish_gdpr(stack: Stack, message: MessageContract) -> None:
    await stack.publish(message, "gdpr", message.message_type)


def deletion(person: uuid.UUID, vendor_entity: uuid.UUID) -> tuple[DeletionRequested, DeletionReceipt]:
    at = datetime.now(UTC)
    request = DeletionRequested(vendor_id=SCIM_VENDOR, person_id=person, vendor_entity_id=vendor_entity, version=3,
                                reason="left_source", requested_at=at, removed_at=at)  # fmt: skip
    receipt = DeletionReceipt(
        vendor_id=SCIM_VENDOR,
        entity_kind="person",
        vendor_entity_id=vendor_entity,
        version=3,
        outcome="deleted",
        delivered_at=at,
        vendor_status=204,
    )
    return request, receipt


async def test_a_receipt_before_its_request_still_ends_in_the_purge(stack: Stack):
    """The receipt and the request travel separately; whichever comes last completes the purge."""
    person = uuid.uuid4()
    request, receipt = deletion(person, person)
    await publish_gdpr(stack, receipt)

    async def receipted() -> bool:
        entry = await stack.gdpr.db["erasure_ledger"].find_one({"vendor_entity_id": str(person)})
        return entry is not None and entry["status"] == "completed"

    await wait_for(receipted, what="the early receipt")
    assert await TombstoneStore(stack.gdpr.db).get(TENANT, str(person)) is None  # no person known yet
    await publish_gdpr(stack, request)

    async def tombstone() -> bool:
        return await TombstoneStore(stack.gdpr.db).get(TENANT, str(person)) is not None

    await wait_for(tombstone, timeout=20, what="the purge at the request")


async def test_the_sweep_purges_what_no_event_completed_and_reports_purges_overdue(
    settings: ServiceSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """A person whose last receipt found them still held at a live vendor (e.g. a removal held by the
    mass-deletion guard, later dropped) is purged by the sweep once nothing blocks it; while blocked past the
    deadline they count in ``skolsynk_gdpr_purges_overdue``."""
    stack = await start_stack(settings, tmp_path, monkeypatch, gdpr_deletion_deadline_hours=SECONDS)
    try:
        person = uuid.uuid4()
        views = stack.normaliser.db["vendor_views"]
        view = {"_id": f"{TENANT}:{SCIM_VENDOR}:{person}", "tenant_id": TENANT, "vendor_id": SCIM_VENDOR,
                "entity_id": str(person), "source_entity_id": str(person), "kind": "person", "present": True,
                "test_mode": False, "version": 2}  # fmt: skip
        await views.insert_one(view)  # the person is still held at the live vendor
        request, receipt = deletion(person, person)
        await publish_gdpr(stack, request)
        await publish_gdpr(stack, receipt)
        metrics = stack.gdpr.metrics.registry

        def overdue() -> bool:
            return metrics.get_sample_value("skolsynk_gdpr_purges_overdue", {"tenant": TENANT}) == 1

        await wait_for(overdue, timeout=20, what="the purge to be reported overdue")
        assert await TombstoneStore(stack.gdpr.db).get(TENANT, str(person)) is None
        await views.update_one({"_id": view["_id"]}, {"$set": {"present": False}})  # no event says so

        async def tombstone() -> bool:
            return await TombstoneStore(stack.gdpr.db).get(TENANT, str(person)) is not None

        await wait_for(tombstone, timeout=20, what="the sweep's purge")
        await wait_for(
            lambda: metrics.get_sample_value("skolsynk_gdpr_purges_overdue", {"tenant": TENANT}) is None,
            what="the overdue purge to be cleared",
        )
    finally:
        await stop_stack(stack)


ERASED = "student-0-3"
#: The erased person's personal data, unique in the organiser.
ERASED_DATA = {
    "given_name": "Edvin-Unik",
    "family_name": "Utplanasson",
    "eppn": ["edvin.utplanasson@demo.skolsynk.example"],
    "emails": [{"value": "edvin.utplanasson@elev.demo.skolsynk.example", "type": "Skola elev"}],
    "civic_no": "201402028899",
}


class _Template:
    """The message properties ``publish_raw`` copies (none of interest here)."""

    content_type = content_encoding = message_id = correlation_id = type = timestamp = app_id = None


async def queued_bodies(stack: Stack) -> dict[str, list[bytes]]:
    """Every message waiting in every queue of the stack (work queues, retry queues, dead letters, the
    queue vendor's feed), read without taking it: queue -> bodies."""
    names = {name for app in stack.apps for name in queue_names(app.topology)}
    url = stack.settings.broker.amqp_url.get_secret_value()
    namespace = stack.settings.broker.namespace
    feed = feed_queue_name(namespace, QUEUE_VENDOR)
    in_feed = await peek_queues(amqp_url_with_vhost(url, vendor_vhost(namespace, QUEUE_VENDOR)), [feed])
    return {**await peek_queues(url, names), **in_feed}


@pytest.mark.parametrize("queue_vendor", ["test_mode", "live_unread"])
async def test_after_leavers_an_erasure_and_a_test_mode_subscription_no_personal_data_is_left_behind(
    compacting_stack: Stack, queue_vendor: str
):
    """The privacy scan (issue 24): every collection and every queue, for the person who left and the person
    whose erasure was requested. The leaver is purged: nothing of them anywhere. The erased person is still in
    the source, so their record stays where the source's data lives (``entities``), and only there: sent vendor
    changes forgot their resource (docs/gdpr.md); nothing of them waits in any queue, and nothing at the vendors.

    The queue vendor is subscribed in test mode, or live with nobody reading its feed: their upserts wait
    there until the deletes that follow take them out (the feed's compaction)."""
    stack = compacting_stack
    stack.records = [
        SourceRecord(kind=r.kind, key=r.key, data={**r.data, **ERASED_DATA}) if r.key == ERASED else r
        for r in stack.records
    ]
    live = queue_vendor == "live_unread"
    await stack.subscribe(SCIM_VENDOR)
    await stack.subscribe(QUEUE_VENDOR, test_mode=not live)
    await stack.sync(stack.records)
    await stack.settled()
    if live:  # the feed holds both persons' upserts, unread
        queue = feed_queue_name(stack.settings.broker.namespace, QUEUE_VENDOR)
        feed = (await queued_bodies(stack)).get(queue, [])
        assert any(LEAVER_DATA["family_name"].encode() in b for b in feed)
        assert any(ERASED_DATA["family_name"].encode() in b for b in feed)
    erasure = ErasureRequested(
        request_id=uuid.uuid4(), person_id=person_id(ERASED), vendor_ids=None, requested_by="admin-1"
    )
    await stack.publish(erasure, "gdpr", ErasureRequested.message_type)
    await stack.sync(without_person(stack.records, LEAVER))
    await stack.settled()
    await stack.finished(LEAVER, 2 if live else 1)
    await stack.finished(ERASED, 2 if live else 1)

    async def tombstone() -> bool:
        return await TombstoneStore(stack.gdpr.db).get(TENANT, str(person_id(LEAVER))) is not None

    await wait_for(tombstone, timeout=20, what="the leaver's purge")
    compactor = stack.dispatchers[VENDORS.index(QUEUE_VENDOR)].extensions["feed_compactor"]

    async def compacted() -> bool:
        return not compactor.pending

    await wait_for(compacted, timeout=20, what="the queue vendor's feed to be compacted")
    left = [LEAVER_DATA["given_name"], LEAVER_DATA["family_name"], LEAVER_DATA["civic_no"], "ellinor.raderasson"]
    erased = [ERASED_DATA["given_name"], ERASED_DATA["family_name"], ERASED_DATA["civic_no"], "edvin.utplanasson"]
    in_store = await stack.scan(*left, *erased)
    assert set(in_store) == {"entities"}, in_store
    assert not any(needle in hits for hits in in_store.values() for needle in left), in_store
    assert "entities" in in_store  # the scan does find what is there: the erased person is still in the source
    # The scan reads what waits in queues: a marker left in the GDPR service's dead letters is found there.
    dead_letters = stack.gdpr.topology.queue(stack.gdpr.queue_name("gdpr", "events")).dead_letter_queue
    await stack.gdpr.publisher.publish_raw(
        b"marker-of-the-scan", exchange="", routing_key=dead_letters, headers={}, template=_Template()
    )
    queued = await queued_bodies(stack)
    assert queued.pop(dead_letters) == [b"marker-of-the-scan"]
    in_queues = {
        name: [n for n in left + erased if any(n.encode() in body for body in bodies)]
        for name, bodies in queued.items()
    }
    assert {name: hits for name, hits in in_queues.items() if hits} == {}
    assert str(person_id(ERASED)) not in stack.vendor.resources(TENANT, "Users")
    assert str(person_id(LEAVER)) not in stack.vendor.resources(TENANT, "Users")


async def test_the_purges_lookups_are_served_by_indexes(settings: ServiceSettings, mongo):
    """Every lookup of the purge (the ledger, the source, the views, the outbox, findings, holds, staged
    records) uses an index the normaliser or the GDPR service makes (explain on the Mongo wire server): a
    purge runs per leaver in a transaction, and a collection scan there grows with the organiser and the
    week of run pages kept (the run pages' lookup read them all)."""
    base = settings.model_dump()
    specs = [
        *build_normaliser(NormaliserSettings.model_validate(base))._indexes,
        *build_gdpr(GdprSettings.model_validate(base))._indexes,
    ]
    db = mongo[settings.store.mongodb_database]
    await ensure_indexes(db, specs)
    person, other = str(uuid.uuid4()), str(uuid.uuid4())
    ids = [person, str(uuid.uuid4())]
    await db["runs"].insert_many(
        [
            {"_id": "run-0", "status": "running", "tenant_id": TENANT},
            {"_id": "run-1", "status": "finalised", "tenant_id": TENANT},
        ]
    )
    await db["run_pages"].insert_many(
        [
            {"_id": f"run-{n}:{p}", "run_id": f"run-{n}", "page": p, "received": True, "documents": documents}
            for n, documents in enumerate([[{"_id": person}, {"_id": other}], []])
            for p in range(3)
        ]
    )
    await db["dq_findings"].insert_many(
        [
            {"tenant_id": TENANT, "entity_id": e, "other_entity_id": person, "origin": "validation"}
            for e in (person, other)
        ]
    )
    queries = {
        "erasure ledger of the person": ("erasure_ledger", {"tenant_id": TENANT, "person_id": person}),
        "the person in the source": ("entities", {"_id": person}),
        "the person's vendor views": ("vendor_views", {"tenant_id": TENANT, "source_entity_id": person}),
        "sent single messages": ("outbox", {"envelope.payload.entity_id": {"$in": ids}}),
        "sent bundles": ("outbox", {"messages.envelope.payload.entity_id": {"$in": ids}}),
        "findings of the person": ("dq_findings", {"tenant_id": TENANT, "entity_id": {"$in": ids}}),
        "findings naming the person": ("dq_findings", {"other_entity_id": {"$in": ids}}),
        "names kept by holds": ("hold_entities", {"tenant_id": TENANT, "source_entity_id": {"$in": ids}}),
        "runs that may hold staged records": ("runs", {"status": {"$in": ["running", "ready", "finalising"]}}),
        "their pages": ("run_pages", {"run_id": {"$in": ["run-0"]}}),
    }
    for what, (collection, criteria) in queries.items():
        plan = (await db[collection].find(criteria).explain())["queryPlanner"]["winningPlan"]
        assert "COLLSCAN" not in str(plan), f"the purge's {what} scans {collection}: {plan}"
    assert await SourceRuns(db).forget_staged("another-tenant", ids) == 0  # not its runs
    assert await SourceRuns(db).forget_staged(TENANT, ids) == 3
    assert await db["run_pages"].count_documents({"documents._id": other}) == 3
    assert await FindingStore(db).forget_entities(TENANT, ids) == 2  # the person's own, and the other's naming them
    assert await FindingStore(db).forget_entities("another-tenant", [other]) == 0
    await db["hold_entities"].insert_many(
        [{"tenant_id": TENANT, "source_entity_id": e, **({"name": "Alma"} if e == person else {})} for e in ids]
    )
    assert await HoldStore(db).forget_names(TENANT, ids) == 1  # the one with a name
