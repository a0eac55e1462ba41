"""The dispatcher on the real broker and store, pushing EGIL SCIM to a fake vendor server that
behaves like the reference server, and forwarding to a vendor's own queue."""

from __future__ import annotations

import io
import json
import secrets
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aio_pika
import aiohttp
import pytest
from aio_pika.abc import AbstractIncomingMessage
from pymongo import AsyncMongoClient
from pymongo.monitoring import CommandFailedEvent, CommandListener, CommandStartedEvent, CommandSucceededEvent

from skolsynk.cli import CliSettings, execute, parser
from skolsynk.contracts import Envelope
from skolsynk.contracts.source import SourceRecord
from skolsynk.contracts.vendor import ProjectionRequested, VendorChange
from skolsynk.domain.ids import entity_id
from skolsynk.domain.ss12000 import EntityKind
from skolsynk.domain.subscription import VendorSubscription
from skolsynk.messaging import BatchConsumer
from skolsynk.messaging.publisher import HEADER_FAILURE_REASON
from skolsynk.messaging.vhosts import amqp_url_with_vhost
from skolsynk.service import ServiceApp
from skolsynk.settings import ServiceSettings
from skolsynk.storage.deliveries import DeliveryLedger, LedgerRecord
from skolsynk.storage.delivery_health import DeliveryHealth
from skolsynk.storage.subscriptions import SubscriptionStore
from skolsynk_services.dispatcher.app import DispatcherSettings
from skolsynk_services.dispatcher.app import build as build_dispatcher
from skolsynk_services.dispatcher.feed import FeedCompactor
from skolsynk_services.dispatcher.onboarding import (
    feed_queue_arguments,
    feed_queue_name,
    offboard_vendor,
    onboard_vendor,
    vendor_user_name,
    vendor_vhost,
)
from skolsynk_services.dispatcher.vendor_feed import FEED_VHOST_MISSING
from skolsynk_services.normaliser.app import NormaliserSettings
from skolsynk_services.normaliser.app import build as build_normaliser
from skolsynk_testkit.devstack import rabbitmqctl, write_vendor_catalogue
from skolsynk_testkit.fakes.egil_vendor import FakeEgilVendor
from skolsynk_testkit.synthetic import full_run, organiser, school_unit_codes, without_person
from tests.helpers import delete_topology, drain_queue, queue_depth, wait_for

pytestmark = [
    pytest.mark.connected,
    pytest.mark.timeout(120),
    pytest.mark.queues("normaliser.source-events", "normaliser.projections", "gdpr.events"),
]

TENANT = "kommun-a"
SOURCE = "egil-1"
VENDOR = "fakevendor"
API_KEY = "test-key-" + "0" * 16
#: ``await vendor_vhosts(vendor_id)``: the queue vendor's own vhost, made; the dispatcher's URL to it.
VendorVhosts = Callable[[str], Awaitable[str]]


def person_id(key: str) -> uuid.UUID:
    return entity_id(TENANT, SOURCE, EntityKind.PERSON, key)


@dataclass
class Stack:
    normaliser: ServiceApp
    dispatcher: ServiceApp
    vendor: FakeEgilVendor | None
    settings: ServiceSettings
    records: list[SourceRecord]

    @property
    def ledger(self) -> DeliveryLedger:
        return DeliveryLedger(self.dispatcher.db, VENDOR)

    async def subscribe(self, *, test_mode: bool) -> None:
        await SubscriptionStore(self.normaliser.db).save(
            VendorSubscription(
                tenant_id=TENANT,
                vendor_id=VENDOR,
                school_unit_codes=frozenset(school_unit_codes(self.records)),
                test_mode=test_mode,
            )
        )

    async def sync(self, records: list[SourceRecord] | None = None) -> None:
        run_id = uuid.uuid4()
        self.pending_run = run_id
        for message in full_run(
            records or self.records, source_id=SOURCE, source_kind="egil", page_size=25, run_id=run_id
        ):
            await self.normaliser.publisher.publish(
                message.to_envelope(tenant_id=TENANT, producer="test"),
                exchange=self.normaliser.topology.exchange("source"),
                routing_key=f"egil.{TENANT}",
            )

    pending_run: uuid.UUID | None = None

    async def request_projection(self) -> None:
        await self.normaliser.publisher.publish(
            ProjectionRequested(reason="subscription").to_envelope(tenant_id=TENANT, producer="test"),
            exchange=self.normaliser.topology.exchange("control"),
            routing_key=ProjectionRequested.message_type,
        )

    async def selection(self) -> dict[str, dict[str, Any]]:
        """What the normaliser says the vendor should hold (present entries of its vendor view)."""
        views = self.normaliser.db["vendor_views"].find({"vendor_id": VENDOR, "present": True})
        return {doc["entity_id"]: doc async for doc in views}

    async def settled(self, *, test: bool = False, timeout: float = 60) -> None:
        """Every change the normaliser sent has reached the ledger at its latest version."""

        async def done() -> bool:
            if self.pending_run is not None:
                run = await self.normaliser.db["runs"].find_one({"_id": str(self.pending_run)})
                if run is None or run.get("status") != "finalised":
                    return False
            if await self.normaliser.db["projection_locks"].count_documents({}):
                return False
            if await self.normaliser.outbox.pending_count():
                return False
            views = {d["entity_id"]: d async for d in self.normaliser.db["vendor_views"].find({"vendor_id": VENDOR})}
            if not views:
                return False
            entries = {e["entity_id"]: e for e in await self.ledger.entries(TENANT)}
            return all(
                e in entries and entries[e]["version"] == v["version"] and entries[e]["test"] == test
                for e, v in views.items()
            )

        await wait_for(done, timeout=timeout, interval=0.2, what="the vendor's deliveries to settle")


async def start_stack(
    settings: ServiceSettings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    *,
    queue_mode: bool = False,
    consuming: bool = True,
    records: list[SourceRecord] | None = None,
    feed_retention_hours: float | None = None,
    feed_compaction_seconds: float = 60.0,
    feed_per_organiser: bool = False,
) -> Stack:
    """The normaliser, the vendor's dispatcher and (unless ``queue_mode``) a fake EGIL SCIM vendor.
    ``consuming=False``: the dispatcher starts without consuming (its queue fills; see :func:`consume`)."""
    vendor: FakeEgilVendor | None = None
    stack: Stack | None = None
    try:
        if queue_mode:
            catalogue = write_vendor_catalogue(tmp_path / "vendors", VENDOR)
            with (catalogue / f"{VENDOR}.yaml").open("a", encoding="utf-8") as file:
                if feed_retention_hours is not None:
                    file.write(f"feed_retention_hours: {feed_retention_hours}\n")
                if feed_per_organiser:
                    file.write("feed_per_organiser: true\n")
        else:
            vendor = FakeEgilVendor(api_keys={API_KEY: TENANT})
            await vendor.start()
            monkeypatch.setenv("SKOLSYNK_TEST_VENDOR_KEY", API_KEY)
            catalogue = write_vendor_catalogue(
                tmp_path / "vendors", VENDOR, scim_base_url=vendor.base_url, api_key_env="SKOLSYNK_TEST_VENDOR_KEY"
            )
        base = settings.model_dump()
        normaliser = build_normaliser(
            NormaliserSettings.model_validate({**base, "date_check_interval_seconds": 86400}),
            clock=lambda: datetime(2026, 11, 26, 12, tzinfo=UTC),
        )
        dispatcher = build_dispatcher(
            DispatcherSettings.model_validate(
                {
                    **base,
                    "vendor_id": VENDOR,
                    "vendor_catalogue_dir": catalogue,
                    "vendor_retry_timeout_seconds": 2,
                    "feed_compaction_seconds": feed_compaction_seconds,
                }
            )
        )
        if not consuming:
            dispatcher.extensions["pool"].consuming = False
        records = records or organiser(seed=5, school_units=2, students_per_unit=6, teachers_per_unit=1)
        stack = Stack(normaliser, dispatcher, vendor, settings, records)
        await dispatcher.start()
        await normaliser.start()
    except BaseException:  # what started is stopped: a failed start leaves nothing behind
        if stack is not None:
            await stop_stack(stack)
        elif vendor is not None:
            await vendor.stop()
        raise
    return stack


async def consume(stack: Stack) -> BatchConsumer:
    """Start the dispatcher's consumer held back by ``start_stack(consuming=False)``."""
    [consumer] = await stack.dispatcher.extensions["pool"].start_consuming()
    assert isinstance(consumer, BatchConsumer)
    return consumer


async def backlog(stack: Stack) -> int:
    """Wait until the normaliser has queued every change of the sync for the (not consuming)
    dispatcher; returns how many there are."""
    queue = stack.dispatcher.queue_name("dispatcher", VENDOR)
    amqp_url = stack.settings.broker.amqp_url.get_secret_value()
    expected = 0

    async def queued() -> bool:
        nonlocal expected
        if stack.pending_run is not None:
            run = await stack.normaliser.db["runs"].find_one({"_id": str(stack.pending_run)})
            if run is None or run.get("status") != "finalised":
                return False
        if await stack.normaliser.db["projection_locks"].count_documents({}):
            return False
        if await stack.normaliser.outbox.pending_count():
            return False
        expected = len(await stack.selection())
        return expected > 0 and await queue_depth(amqp_url, queue) == expected

    await wait_for(queued, timeout=90, interval=0.2, what="the vendor's changes to be queued")
    return expected


class StoreCommands(CommandListener):
    """Counts the commands (round trips) a client sends to the store."""

    MONITORING = frozenset({"hello", "isMaster", "ismaster", "ping", "endSessions", "saslStart", "saslContinue"})

    def __init__(self) -> None:
        self.sent: Counter[str] = Counter()

    def started(self, event: CommandStartedEvent) -> None:
        if event.command_name not in self.MONITORING:
            self.sent[event.command_name] += 1

    def succeeded(self, event: CommandSucceededEvent) -> None:
        pass

    def failed(self, event: CommandFailedEvent) -> None:
        pass


@pytest.fixture
async def stack(settings: ServiceSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    built = await start_stack(settings, tmp_path, monkeypatch)
    try:
        yield built
    finally:
        await stop_stack(built)


async def stop_stack(stack: Stack) -> None:
    for app in (stack.normaliser, stack.dispatcher):
        await app.drain(2)
        await app.close()
    if stack.vendor is not None:
        await stack.vendor.stop()
    await delete_topology(stack.settings.broker.amqp_url.get_secret_value(), stack.dispatcher.topology)


def held(vendor: FakeEgilVendor, resource_type: str) -> dict[str, dict[str, Any]]:
    return vendor.resources(TENANT, resource_type)


async def test_full_delivery_then_updates_and_deletes(stack: Stack):
    assert stack.vendor is not None
    await stack.subscribe(test_mode=False)
    await stack.sync()
    await stack.settled()
    selection = await stack.selection()
    kinds = {doc["kind"] for doc in selection.values()}
    assert kinds == {"organisation", "school_unit", "person", "duty", "group", "activity"}
    users = held(stack.vendor, "Users")
    assert set(users) == {e for e, d in selection.items() if d["kind"] == "person"}
    assert len(held(stack.vendor, "StudentGroups")) == sum(1 for d in selection.values() if d["kind"] == "group")
    assert len(held(stack.vendor, "Employments")) == 2
    assert stack.vendor.dangling_references == [], "a reference reached the vendor before its target"
    student = users[str(person_id("student-0-0"))]
    assert student["userName"] == "student-0-0@demo.skolsynk.example"

    # Updates and deletes: one student renamed, one gone.
    changed = []
    for record in stack.records:
        if record.key == "student-0-1":
            continue
        if record.key == "student-0-0":
            record = SourceRecord(kind=record.kind, key=record.key, data={**record.data, "given_name": "Ny"})
        changed.append(record)
    await stack.sync(changed)
    await stack.settled()
    users = held(stack.vendor, "Users")
    assert users[str(person_id("student-0-0"))]["name"]["givenName"] == "Ny"
    assert str(person_id("student-0-1")) not in users
    methods = {(r.method, r.status) for r in stack.vendor.requests}
    assert ("PUT", 200) in methods
    assert ("DELETE", 204) in methods
    csv_lines = (await stack.ledger.report_csv(TENANT)).splitlines()
    assert csv_lines[0].startswith("entity_id,kind,operation,version,status")
    assert len(csv_lines) == 1 + len(await stack.ledger.entries(TENANT))

    # What /metrics shows: deliveries by status and the vendor's HTTP answers.
    sample = stack.dispatcher.metrics.registry.get_sample_value
    delivered = sample(
        "skolsynk_deliveries_total", {"tenant": TENANT, "vendor": VENDOR, "operation": "upsert", "status": "delivered"}
    )
    assert delivered is not None
    assert delivered >= len(selection)
    assert sample(
        "skolsynk_deliveries_total", {"tenant": TENANT, "vendor": VENDOR, "operation": "delete", "status": "delivered"}
    )
    assert sample("skolsynk_vendor_requests_total", {"vendor": VENDOR, "method": "DELETE", "status_class": "2xx"})
    assert sample("skolsynk_vendor_request_seconds_count", {"vendor": VENDOR, "method": "POST"})


async def test_409_and_404_are_recovered(stack: Stack):
    assert stack.vendor is not None
    await stack.subscribe(test_mode=False)
    # The vendor already has one of the users (a previous integration): POST gets 409, then PUT.
    existing = str(person_id("student-1-0"))
    async with aiohttp.ClientSession(headers={"X-API-Key": API_KEY}) as http:
        body = {
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "externalId": existing,
            "userName": "old@example.se",
            "displayName": "Gammal Användare",
            "name": {"givenName": "Gammal", "familyName": "Användare"},
        }
        async with http.post(f"{stack.vendor.base_url}/Users", json=body) as response:
            assert response.status == 201
    await stack.sync()
    await stack.settled()
    assert held(stack.vendor, "Users")[existing]["userName"] == "student-1-0@demo.skolsynk.example"
    assert any(r.method == "POST" and r.status == 409 for r in stack.vendor.requests)

    # Someone deleted a user at the vendor behind our back: the next update's PUT gets 404, then POST.
    gone = str(person_id("student-1-1"))
    assert stack.vendor.forget(TENANT, "Users", gone)
    renamed = [
        SourceRecord(kind=r.kind, key=r.key, data={**r.data, "family_name": "Nyberg"}) if r.key == "student-1-1" else r
        for r in stack.records
    ]
    await stack.sync(renamed)
    await stack.settled()
    assert held(stack.vendor, "Users")[gone]["name"]["familyName"] == "Nyberg"
    assert any(r.method == "PUT" and r.status == 404 for r in stack.vendor.requests)


async def test_5xx_storm_and_a_slow_vendor_lose_nothing(stack: Stack):
    assert stack.vendor is not None
    stack.vendor.faults.error_rate(0.3, 503, seed=7)
    stack.vendor.faults.delay(0.05)
    await stack.subscribe(test_mode=False)
    await stack.sync()
    await stack.settled(timeout=90)
    assert any(r.status == 503 for r in stack.vendor.requests)
    selection = await stack.selection()
    assert set(held(stack.vendor, "Users")) == {e for e, d in selection.items() if d["kind"] == "person"}


async def test_vendor_down_and_back_the_backlog_drains(stack: Stack):
    assert stack.vendor is not None
    await stack.subscribe(test_mode=False)
    stack.vendor.down()
    await stack.sync()

    async def retrying() -> bool:
        return (
            stack.dispatcher.metrics.messages_consumed.labels(
                stack.dispatcher.queue_name("dispatcher", VENDOR), "retry"
            )._value.get()
            >= 3
        )

    await wait_for(retrying, timeout=30, what="deliveries to be retried while the vendor is down")
    assert await stack.ledger.entries(TENANT) == []
    await stack.vendor.up()
    await stack.settled(timeout=90)
    selection = await stack.selection()
    assert set(held(stack.vendor, "Users")) == {e for e, d in selection.items() if d["kind"] == "person"}
    assert stack.vendor.dangling_references == [], "a reference reached the vendor before its target"
    dlq = stack.dispatcher.topology.queue(stack.dispatcher.queue_name("dispatcher", VENDOR)).dead_letter_queue
    assert await drain_queue(stack.settings.broker.amqp_url.get_secret_value(), dlq) == []


async def test_permanent_rejection_goes_to_the_dlq_with_the_vendors_text(stack: Stack):
    assert stack.vendor is not None
    rejected = str(person_id("teacher-0-0"))
    stack.vendor.faults.reject(rejected, 422, "userName taken by lena.larsson@kommun-a.se")
    await stack.subscribe(test_mode=False)
    await stack.sync()
    dlq = stack.dispatcher.topology.queue(stack.dispatcher.queue_name("dispatcher", VENDOR)).dead_letter_queue
    amqp_url = stack.settings.broker.amqp_url.get_secret_value()
    dead: list[aio_pika.abc.AbstractIncomingMessage] = []

    async def rejected_in_dlq() -> bool:
        dead.extend(await drain_queue(amqp_url, dlq))
        return any(VendorChange.from_envelope(Envelope.model_validate_json(m.body)).entity_id == uuid.UUID(rejected)
                   for m in dead)  # fmt: skip

    await wait_for(rejected_in_dlq, timeout=30, what="the rejected user in the DLQ")
    message = next(
        m
        for m in dead
        if VendorChange.from_envelope(Envelope.model_validate_json(m.body)).entity_id == uuid.UUID(rejected)
    )
    reason = message.headers[HEADER_FAILURE_REASON]
    assert "422" in reason
    assert "userName taken" in reason
    assert "lena.larsson" not in reason
    entry = await stack.ledger.get(TENANT, uuid.UUID(rejected))
    assert entry is not None
    assert entry["status"] == "rejected"
    sample = stack.dispatcher.metrics.registry.get_sample_value
    assert sample(
        "skolsynk_deliveries_total", {"tenant": TENANT, "vendor": VENDOR, "operation": "upsert", "status": "rejected"}
    )
    assert sample("skolsynk_vendor_requests_total", {"vendor": VENDOR, "method": "POST", "status_class": "4xx"})
    # Everyone else arrived.
    assert str(person_id("student-0-0")) in held(stack.vendor, "Users")


async def test_test_mode_delivers_nothing_reports_and_going_live_delivers_everything(stack: Stack):
    assert stack.vendor is not None
    no_login = [
        SourceRecord(kind=r.kind, key=r.key, data={**r.data, "eppn": []}) if r.key == "student-0-2" else r
        for r in stack.records
    ]
    await stack.subscribe(test_mode=True)
    await stack.sync(no_login)
    await stack.settled(test=True)
    assert stack.vendor.requests == []
    report = await stack.ledger.test_report(TENANT)
    selection = await stack.selection()
    persons = sum(1 for d in selection.values() if d["kind"] == "person")
    assert report["would_send"]["person"] == persons - 1
    [rejection] = report["would_be_rejected"]
    assert rejection["entity_id"] == str(person_id("student-0-2"))
    assert "userName" in rejection["reason"] or "eppn" in rejection["reason"]
    students = sum(v for k, v in report["per_school_unit_and_role"].items() if k.endswith("|student"))
    assert students == 12 - 1

    await stack.subscribe(test_mode=False)
    await stack.request_projection()
    await stack.settled(test=False, timeout=60)
    users = held(stack.vendor, "Users")
    no_login = str(person_id("student-0-2"))
    assert len(users) == persons - 1  # the one without a login is refused (EGIL needs a userName)
    assert no_login not in users
    # Their class still arrives, without them.
    classes = held(stack.vendor, "StudentGroups")
    assert len(classes) == sum(1 for d in selection.values() if d["kind"] == "group")
    assert all(no_login not in [m["value"] for m in g.get("studentMemberships", [])] for g in classes.values())


async def read_feed(user_url: str, queue: str) -> list[VendorChange]:
    """Everything in a vendor's feed queue, read (and acked) with the vendor's own credentials."""
    changes: list[VendorChange] = []
    connection = await aio_pika.connect(user_url)
    async with connection:
        channel = await connection.channel()
        feed = await channel.get_queue(queue, ensure=False)
        while (message := await feed.get(no_ack=False, fail=False)) is not None:
            changes.append(VendorChange.from_envelope(Envelope.model_validate_json(message.body)))
            await message.ack()
    return changes


async def onboard_and_sync(stack: Stack, password: str) -> int:
    """The queue vendor's own user, a live subscription and a full sync settled: how many entities the
    vendor's selection holds."""
    await onboard_vendor(stack.settings.broker.namespace, VENDOR, password, dispatcher_user="guest")
    await stack.subscribe(test_mode=False)
    await stack.sync()
    await stack.settled()
    return len(await stack.selection())


async def test_queue_vendor_reads_its_own_queue_with_its_own_credentials(
    settings: ServiceSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, vendor_vhosts: VendorVhosts
):
    await vendor_vhosts(VENDOR)
    stack = await start_stack(settings, tmp_path, monkeypatch, queue_mode=True)
    namespace = settings.broker.namespace
    password = secrets.token_urlsafe(24)
    try:
        expected = await onboard_and_sync(stack, password)
        base = settings.broker.amqp_url.get_secret_value()
        user_url = amqp_url_with_vhost(base, vendor_vhost(namespace, VENDOR)).replace(
            "guest:guest@", f"{vendor_user_name(namespace, VENDOR)}:{password}@"
        )
        received = await read_feed(user_url, feed_queue_name(namespace, VENDOR))
        assert len(received) == expected
        assert {c.operation for c in received} == {"upsert"}

        # The vendor asks for a full resend: its whole selection again, at new versions.
        await stack.normaliser.publisher.publish(
            ProjectionRequested(reason="resend", resend_vendor_id=VENDOR).to_envelope(tenant_id=TENANT),
            exchange=stack.normaliser.topology.exchange("control"),
            routing_key=ProjectionRequested.message_type,
        )

        async def resent() -> bool:
            entries = await stack.ledger.entries(TENANT)
            return len(entries) == expected and all(e["version"] == 2 for e in entries)

        await wait_for(resent, timeout=30, what="the resend to be delivered")
        again = await read_feed(user_url, feed_queue_name(namespace, VENDOR))
        assert {c.entity_id for c in again} == {c.entity_id for c in received}
        assert {c.version for c in again} == {2}
    finally:
        await offboard_vendor(namespace, VENDOR)
        await stop_stack(stack)


async def test_a_queue_vendor_may_have_a_feed_per_organiser(
    settings: ServiceSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, vendor_vhosts: VendorVhosts
):
    """Issue 18: with ``feed_per_organiser`` a queue vendor reads each organiser from a queue of its own
    (declared by the dispatcher, readable with the vendor's one user), every message naming the organiser;
    nothing goes to the shared feed, and a leaver's upsert is compacted out of the organiser's feed."""
    url = await vendor_vhosts(VENDOR)  # the feeds' vhost
    stack = await start_stack(
        settings, tmp_path, monkeypatch, queue_mode=True, feed_per_organiser=True, feed_compaction_seconds=0.2
    )
    namespace = settings.broker.namespace
    own, shared = feed_queue_name(namespace, VENDOR, TENANT), feed_queue_name(namespace, VENDOR)
    password = secrets.token_urlsafe(24)
    try:
        expected = await onboard_and_sync(stack, password)
        with pytest.raises(aio_pika.exceptions.ChannelNotFoundEntity):
            await queue_depth(url, shared)  # never declared
        assert await queue_depth(url, own) == expected  # settled: every change is in the organiser's feed

        leaver = str(person_id("student-0-1"))
        await stack.sync(without_person(stack.records, "student-0-1"))
        await stack.settled()
        compactor = stack.dispatcher.extensions["feed_compactor"]

        async def compacted() -> bool:
            return not compactor.pending and bool(
                stack.dispatcher.metrics.registry.get_sample_value(
                    "skolsynk_feed_compactions_total", {"vendor": VENDOR, "outcome": "compacted"}
                )
            )

        await wait_for(compacted, timeout=30, what="the organiser's feed compacted")
        user_url = url.replace("guest:guest@", f"{vendor_user_name(namespace, VENDOR)}:{password}@")
        received = await read_feed(user_url, own)  # with the vendor's own credentials
        assert len(received) >= expected  # the first sync's, less the leaver's upsert, and the second's
        assert [c.operation for c in received if str(c.entity_id) == leaver] == ["delete"]
        envelopes = await feed_messages(url, own)
        assert envelopes == []  # read and acknowledged by the vendor
    finally:
        await offboard_vendor(namespace, VENDOR)
        await stop_stack(stack)


async def test_a_change_older_than_what_was_delivered_is_dropped(stack: Stack):
    assert stack.vendor is not None
    await stack.subscribe(test_mode=False)
    await stack.sync()
    await stack.settled()
    target = person_id("student-0-0")
    delivered = await stack.ledger.get(TENANT, target)
    assert delivered is not None
    requests_before = len(stack.vendor.requests)
    stale = VendorChange(
        vendor_id=VENDOR,
        entity_kind=EntityKind.PERSON,
        entity_id=target,
        operation="delete",
        version=delivered["version"],
        test_mode=False,
        reason="replayed",
    )
    queue = stack.dispatcher.queue_name("dispatcher", VENDOR)
    acked = stack.dispatcher.metrics.messages_consumed.labels(queue, "ack")
    before = acked._value.get()
    await stack.normaliser.publisher.publish(
        stale.to_envelope(tenant_id=TENANT),
        exchange=stack.normaliser.topology.exchange("vendor"),
        routing_key=f"{VENDOR}.{TENANT}",
    )
    await wait_for(lambda: acked._value.get() > before, what="the stale change to be handled")
    assert len(stack.vendor.requests) == requests_before
    assert str(target) in held(stack.vendor, "Users")


async def test_a_full_sync_costs_a_few_store_round_trips_per_batch(
    settings: ServiceSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """The issue's target: at most 0.2 store round trips per delivered vendor change on a full sync
    (the dispatcher's store work is its ledger: a client with a command listener counts it)."""
    settings = settings.model_copy(update={"broker": settings.broker.model_copy(update={"prefetch": 50})})
    records = organiser(seed=7, school_units=3, students_per_unit=30, teachers_per_unit=2)
    stack = await start_stack(settings, tmp_path, monkeypatch, consuming=False, records=records)
    commands = StoreCommands()
    client: AsyncMongoClient = AsyncMongoClient(
        settings.store.mongodb_url.get_secret_value(), event_listeners=[commands], tz_aware=True
    )
    try:
        assert stack.vendor is not None
        deliverer = stack.dispatcher.extensions["deliverer"]
        deliverer.ledger = DeliveryLedger(client[settings.store.mongodb_database], VENDOR)
        await stack.subscribe(test_mode=False)
        await stack.sync()
        changes = await backlog(stack)
        assert changes > 150
        await consume(stack)
        await stack.settled(timeout=90)
        selection = await stack.selection()
        assert set(held(stack.vendor, "Users")) == {e for e, d in selection.items() if d["kind"] == "person"}
        assert stack.vendor.dangling_references == []
        round_trips = sum(commands.sent.values())
        assert set(commands.sent) <= {"find", "insert", "update"}, commands.sent  # new entries are inserted
        assert round_trips / changes <= 0.2, f"{round_trips} store round trips for {changes} changes: {commands.sent}"
    finally:
        await client.close()
        await stop_stack(stack)


async def test_dependents_ahead_of_their_references_wait_for_them_in_the_batch(
    settings: ServiceSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """After an outage the retried persons come back behind the groups and activities that refer to
    them. Here the whole backlog arrives in reverse reference order: every change waits for exactly
    the deliveries it needs and goes right after them, in the same batch: nothing is sent back."""
    settings = settings.model_copy(update={"broker": settings.broker.model_copy(update={"prefetch": 100})})
    stack = await start_stack(settings, tmp_path, monkeypatch, consuming=False)
    try:
        assert stack.vendor is not None
        await stack.subscribe(test_mode=False)
        await stack.sync()
        changes = await backlog(stack)
        queue = stack.dispatcher.queue_name("dispatcher", VENDOR)
        amqp_url = settings.broker.amqp_url.get_secret_value()
        queued = await drain_queue(amqp_url, queue)
        assert len(queued) == changes
        kinds = [VendorChange.from_envelope(Envelope.model_validate_json(m.body)).entity_kind for m in queued]
        assert kinds.index(EntityKind.PERSON) < kinds.index(EntityKind.GROUP), "the normaliser sends references first"
        for message in reversed(queued):
            await stack.dispatcher.publisher.publish(
                Envelope.model_validate_json(message.body), exchange="", routing_key=queue
            )
        await consume(stack)
        await stack.settled(timeout=60)
        selection = await stack.selection()
        assert set(held(stack.vendor, "Users")) == {e for e, d in selection.items() if d["kind"] == "person"}
        assert len(held(stack.vendor, "StudentGroups")) == sum(1 for d in selection.values() if d["kind"] == "group")
        assert stack.vendor.dangling_references == [], "a reference reached the vendor before its target"
        consumed = stack.dispatcher.metrics.messages_consumed
        assert consumed.labels(queue, "retry")._value.get() == 0
        assert consumed.labels(queue, "ack")._value.get() == changes
    finally:
        await stop_stack(stack)


async def test_the_ledgers_queries_are_served_by_indexes(stack: Stack):
    """Every query of the delivery ledger uses an index (explain on the Mongo wire server); the drift
    check's and the reports' too."""
    await stack.subscribe(test_mode=False)
    await stack.sync()
    await stack.settled()
    ledger = stack.ledger.collection
    some = [f"{TENANT}:{VENDOR}:{person_id('student-0-0')}", f"{TENANT}:{VENDOR}:{person_id('student-0-1')}"]
    queries = {
        "batch read": ledger.find({"_id": {"$in": some}}),
        "upsert target": ledger.find({"_id": some[0]}),
        "report": ledger.find({"tenant_id": TENANT, "vendor_id": VENDOR}),
        "test report": ledger.find({"tenant_id": TENANT, "vendor_id": VENDOR, "test": True}),
        "drift check": ledger.find({"vendor_id": VENDOR, "test": False, "status": "delivered"}),
    }
    for what, cursor in queries.items():
        plan = (await cursor.explain())["queryPlanner"]["winningPlan"]
        assert "COLLSCAN" not in str(plan), f"the ledger's {what} scans the collection: {plan}"
    # Every index is written with every entry: none is kept that another one's prefix serves.
    assert "by_vendor" not in await ledger.index_information()


async def test_the_ledger_records_a_batch_in_one_write_and_never_moves_back(stack: Stack):
    ledger = stack.ledger
    entity, other = person_id("student-0-0"), person_id("student-0-1")

    def entry(entity_id: uuid.UUID, version: int, status: str = "delivered") -> LedgerRecord:
        return LedgerRecord(
            TENANT,
            entity_id,
            kind="person",
            operation="upsert",
            version=version,
            resource_hash=f"hash-{version}",
            status=status,  # type: ignore[arg-type]
            test=False,
            reason="$not an expression",
        )

    await ledger.record_many([entry(entity, 3), entry(other, 1)])
    await ledger.record_many([entry(entity, 2, "rejected"), entry(other, 2)])
    first, second = await ledger.get(TENANT, entity), await ledger.get(TENANT, other)
    assert first is not None
    assert second is not None
    assert (first["version"], first["status"], first["hash"]) == (3, "delivered", "hash-3")
    assert first["reason"] == "$not an expression"
    assert (second["version"], second["hash"]) == (2, "hash-2")
    await ledger.record_many([entry(entity, 3, "rejected")])  # the same version may be recorded again
    assert (await ledger.get(TENANT, entity) or {})["status"] == "rejected"
    entries = await ledger.get_many([(TENANT, entity), (TENANT, str(other)), (TENANT, uuid.uuid4())])
    assert set(entries) == {(TENANT, str(entity)), (TENANT, str(other))}


async def test_the_ledger_inserts_entries_believed_new_and_still_never_moves_back(stack: Stack):
    """An entity the dispatcher read without an entry is inserted; if another replica recorded it in
    between, the duplicate key turns the insert into the version-guarded upsert."""
    ledger = stack.ledger
    raced, fresh, older = person_id("student-0-2"), person_id("student-0-3"), person_id("student-0-4")

    def entry(entity_id: uuid.UUID, version: int) -> LedgerRecord:
        return LedgerRecord(
            TENANT, entity_id, kind="person", operation="upsert", version=version,
            resource_hash=f"hash-{version}", status="delivered", test=False,
        )  # fmt: skip

    await ledger.record_many([entry(raced, 5), entry(older, 1)])  # another replica was faster
    believed_new = [(TENANT, str(raced)), (TENANT, str(fresh)), (TENANT, str(older))]
    await ledger.record_many([entry(raced, 4), entry(fresh, 1), entry(older, 2)], new=believed_new)
    entries = await ledger.get_many(believed_new)
    assert {key[1]: doc["version"] for key, doc in entries.items()} == {str(raced): 5, str(fresh): 1, str(older): 2}
    assert (await ledger.get(TENANT, raced) or {}).get("hash") == "hash-5"


async def test_a_feed_nobody_reads_lets_its_messages_expire_after_the_vendors_retention(
    settings: ServiceSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, vendor_vhosts: VendorVhosts
):
    """Personal data does not wait in a vendor's feed without limit: every message carries the vendor's
    ``feed_retention_hours`` as its TTL (issue 24); a vendor that reads nothing finds its feed empty after it."""
    url = await vendor_vhosts(VENDOR)
    stack = await start_stack(settings, tmp_path, monkeypatch, queue_mode=True, feed_retention_hours=10 / 3600)
    queue = feed_queue_name(settings.broker.namespace, VENDOR)
    try:
        await stack.subscribe(test_mode=False)
        await stack.sync()
        await stack.settled()
        delivered = len(await stack.ledger.entries(TENANT))
        assert delivered > 0  # every change went into the feed ("queued")

        async def waiting() -> int:
            connection = await aio_pika.connect(url)
            async with connection:
                channel = await connection.channel()
                declared = await channel.declare_queue(queue, passive=True)
                return int(declared.declaration_result.message_count or 0)

        assert await waiting() > 0  # unread for now

        async def expired() -> bool:
            return await waiting() == 0

        await wait_for(expired, timeout=45, what="the unread feed to expire")
    finally:
        await stop_stack(stack)


async def feed_status(stack: Stack) -> dict[str, dict[str, Any]]:
    """The queues as ``skolsynk status --json`` reports them: name -> row."""
    out, err = io.StringIO(), io.StringIO()
    cli = CliSettings.model_validate(stack.dispatcher.settings.model_dump())
    assert await execute(parser().parse_args(["status", "--json"]), cli, out=out, err=err) == 0, err.getvalue()
    return {row["queue"]: row for row in json.loads(out.getvalue())["queues"]}


async def test_a_queue_vendor_without_its_vhost_has_its_changes_wait_until_it_is_onboarded(
    settings: ServiceSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, vendor_vhosts: VendorVhosts
):
    """The dispatcher does not create a vendor's vhost (onboarding does, docs/decisions.md #23). Before it
    exists the dispatcher still starts and serves the vendor, the changes wait on the retry ladder (none
    lost, none dead-lettered) and the organiser's delivery state says why; once the operator onboards the
    vendor, they go into its feed there."""
    url = amqp_url_with_vhost(
        settings.broker.amqp_url.get_secret_value(), vendor_vhost(settings.broker.namespace, VENDOR)
    )
    stack = await start_stack(settings, tmp_path, monkeypatch, queue_mode=True)
    health = DeliveryHealth(stack.dispatcher.db)
    stopped = False
    try:
        assert await stack.dispatcher.extensions["pool"].ready()
        await stack.subscribe(test_mode=False)
        await stack.sync()

        async def waiting() -> bool:
            doc = await health.get(VENDOR, TENANT)
            return doc is not None and doc.get("state") == "retrying" and doc.get("last_error") == FEED_VHOST_MISSING

        await wait_for(waiting, timeout=30, what="the delivery state to say the vendor's vhost is missing")
        assert await stack.ledger.entries(TENANT) == []  # nothing recorded as delivered
        feed = feed_queue_name(settings.broker.namespace, VENDOR)
        assert (await feed_status(stack))[feed]["exists"] is False
        queue = stack.dispatcher.queue_name("dispatcher", VENDOR)
        dead_letters = stack.dispatcher.topology.queue(queue).dead_letter_queue
        assert await queue_depth(settings.broker.amqp_url.get_secret_value(), dead_letters) == 0

        assert await vendor_vhosts(VENDOR) == url  # the operator onboards the vendor
        await stack.settled()
        expected = len(await stack.selection())
        assert await queue_depth(url, feed) == expected
        assert ((await health.get(VENDOR, TENANT)) or {}).get("state") == "ok"
        assert (await feed_status(stack))[feed] == {  # skolsynk status looks in the vendor's vhost
            "queue": feed,
            "exists": True,
            "ready": expected,
            "consumers": 0,
            "dead_letters": None,
        }
        vhost = vendor_vhost(settings.broker.namespace, VENDOR)
        assert vhost in connected_vhosts()  # the dispatcher's connection to the vendor's vhost
        await stop_stack(stack)
        stopped = True
        assert vhost not in connected_vhosts()  # closed at stop, not left to the broker's heartbeat
    finally:
        if not stopped:
            await stop_stack(stack)


def connected_vhosts() -> list[str]:
    """The vhost of every connection the broker has open."""
    return rabbitmqctl("list_connections", "vhost").split()


async def feed_messages(url: str, queue: str) -> list[AbstractIncomingMessage]:
    """Every message waiting in the feed, in order, read without taking it (closing hands them back)."""
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        feed = await channel.declare_queue(queue, passive=True)
        found = []
        while (message := await feed.get(no_ack=False, fail=False)) is not None:
            found.append(message)
    return found


async def test_a_delete_takes_the_upsert_it_supersedes_out_of_a_feed_nobody_reads(
    settings: ServiceSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, vendor_vhosts: VendorVhosts
):
    """Issue 24: a leaver's upsert (name, e-mail, login) that still waits in an unread feed is taken out
    once their delete is forwarded. Everything else stays, in publication order, with what is left of its
    retention; the delete stays too (the vendor may hold an upsert from before it stopped reading)."""
    url = await vendor_vhosts(VENDOR)
    stack = await start_stack(settings, tmp_path, monkeypatch, queue_mode=True, feed_compaction_seconds=0.2)
    queue = feed_queue_name(settings.broker.namespace, VENDOR)
    leaver = str(person_id("student-0-1"))
    compactor = stack.dispatcher.extensions["feed_compactor"]
    unique = {"given_name": "Feedina-Unika", "family_name": "Komprimeradsson"}
    stack.records = [
        SourceRecord(kind=r.kind, key=r.key, data={**r.data, **unique}) if r.key == "student-0-1" else r
        for r in stack.records
    ]
    # What went into the feed, in order (reading the feed to find out would change its order: a quorum
    # queue hands back what a reader held in an order of its own).
    published: list[Envelope] = []
    feed_publisher = stack.dispatcher.extensions["pool"].workers[VENDOR].feed.publisher
    publish = feed_publisher.publish

    async def recording(envelope: Envelope, **kwargs: Any) -> None:
        await publish(envelope, **kwargs)
        if kwargs.get("routing_key") == queue:
            published.append(envelope)

    monkeypatch.setattr(feed_publisher, "publish", recording)
    try:
        await stack.subscribe(test_mode=False)
        await stack.sync()
        await stack.settled()
        first = [VendorChange.from_envelope(e) for e in published]
        assert [c.operation for c in first] == ["upsert"] * len(first)
        assert sum(b"Komprimeradsson" in e.model_dump_json().encode() for e in published) == 1
        assert leaver in {str(c.entity_id) for c in first}

        await stack.sync(without_person(stack.records, "student-0-1"))
        await stack.settled()

        async def compacted() -> bool:
            return not compactor.pending and bool(
                stack.dispatcher.metrics.registry.get_sample_value(
                    "skolsynk_feed_compactions_total", {"vendor": VENDOR, "outcome": "compacted"}
                )
            )

        await wait_for(compacted, timeout=30, what="the feed to be compacted")
        messages = await feed_messages(url, queue)
        changes = [VendorChange.from_envelope(Envelope.model_validate_json(m.body)) for m in messages]
        # Every message once (a pass acknowledges all it took), the leaver's upsert gone, its delete kept.
        assert len({m.message_id for m in messages}) == len(messages) == len(published) - 1
        assert [(c.operation, c.version) for c in changes if str(c.entity_id) == leaver] == [("delete", 2)]
        assert not any(b"Komprimeradsson" in m.body or b"Feedina" in m.body for m in messages)
        # What was there before the delete is still there (the order is pinned by the pass's own test below).
        before = {str(e.message_id) for e in published[: len(first)]}
        assert {m.message_id for m in messages if m.message_id in before} == {
            str(e.message_id) for e in published[: len(first)] if str(VendorChange.from_envelope(e).entity_id) != leaver
        }
        # Nothing gained retention by being published again: at most the vendor's 24 hours, counted from then.
        assert all(m.expiration is not None and 0 < m.expiration <= 24 * 3600 for m in messages)
        assert all(isinstance((m.headers or {}).get("x-skolsynk-queued-at"), int) for m in messages)
        dropped = stack.dispatcher.metrics.registry.get_sample_value(
            "skolsynk_feed_compacted_messages_total", {"vendor": VENDOR}
        )
        assert dropped == 1
    finally:
        await stop_stack(stack)


async def test_a_feed_being_read_is_not_compacted(
    settings: ServiceSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, vendor_vhosts: VendorVhosts
):
    """A vendor that reads gets the upsert and the delete right behind it: compacting under its consumer
    would only reorder what it reads, so the pass is skipped and the pending deletes forgotten."""
    url = await vendor_vhosts(VENDOR)
    stack = await start_stack(settings, tmp_path, monkeypatch, queue_mode=True)
    queue = feed_queue_name(settings.broker.namespace, VENDOR)
    compactor = stack.dispatcher.extensions["feed_compactor"]
    try:
        await stack.subscribe(test_mode=False)
        await stack.sync()
        await stack.settled()
        waiting = len(await feed_messages(url, queue))
        compactor.deleted(TENANT, str(person_id("student-0-1")), 99)
        connection = await aio_pika.connect(url)
        async with connection:
            channel = await connection.channel()
            await channel.set_qos(prefetch_count=1)
            feed = await channel.declare_queue(queue, passive=True)

            async def hold(message: AbstractIncomingMessage) -> None:
                """Takes one message and never acks it: the vendor is reading, slowly."""

            await feed.consume(hold)
            result = await compactor.compact()
        assert result.skipped == "consumed"
        assert compactor.pending == {}
        assert len(await feed_messages(url, queue)) == waiting
    finally:
        await stop_stack(stack)


async def test_a_compaction_pass_keeps_the_feed_in_order_and_takes_out_only_superseded_upserts(
    settings: ServiceSettings,
):
    """The pass itself on a quorum queue like a feed, messages published one by one (so their order is
    known): upserts older than a noted delete go; a newer upsert, the delete, other entities and a body that
    does not parse stay, in order, each once; a message past its retention is not published again."""
    url = settings.broker.amqp_url.get_secret_value()
    queue = f"{settings.broker.namespace}.vendor-feed.compaction-order"
    tenant, person, other = "kommun-c", str(uuid.uuid4()), str(uuid.uuid4())

    def change(entity: str, operation: str, version: int, *, age: float = 0.0) -> aio_pika.Message:
        payload = {"entity_id": entity, "operation": operation, "version": version}
        return aio_pika.Message(
            json.dumps({"tenant_id": tenant, "payload": payload}).encode(),
            type="vendor.change",
            message_id=f"{entity[:8]}-{operation}-{version}",
            headers={"x-skolsynk-queued-at": int((time.time() - age) * 1000)},
            expiration=3600,
        )

    sent = [
        change(person, "upsert", 1),
        change(other, "upsert", 1),
        change(person, "upsert", 2),
        aio_pika.Message(b"not json", type="vendor.change", message_id="garbled", expiration=3600),
        change(person, "delete", 3),
        change(person, "upsert", 4),  # back again after the delete: stays
        change(other, "upsert", 2),
    ]
    expired = change(other, "upsert", 3, age=7200)  # published two hours ago, retention one hour
    superseded = {f"{person[:8]}-upsert-1", f"{person[:8]}-upsert-2"}
    connection = await aio_pika.connect_robust(url)
    try:
        channel = await connection.channel()
        await channel.declare_queue(queue, durable=True, arguments=feed_queue_arguments())
        for message in [*sent, expired]:
            await channel.default_exchange.publish(message, routing_key=queue)
        compactor = FeedCompactor("compaction-order", queue, retention_seconds=3600, interval_seconds=60, amqp_url=url)
        compactor.deleted(tenant, person, 3)
        result = await compactor.compact()
        assert (result.taken, result.dropped, result.expired) == (8, 2, 1)
        assert compactor.pending == {}
        await compactor.close()
        feed = await channel.declare_queue(queue, passive=True)
        left = []
        while (message := await feed.get(no_ack=True, fail=False)) is not None:
            left.append(message.message_id)
        assert left == [m.message_id for m in sent if m.message_id not in superseded]
    finally:
        channel = await connection.channel()
        await channel.queue_delete(queue)
        await connection.close()
