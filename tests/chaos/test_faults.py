"""Faults during a full sync: the normaliser, a dispatcher pushing EGIL SCIM to the fake vendor server,
and the GDPR service, in-process, with a chaos proxy between them and RabbitMQ (and the vendor). For
each fault the end state must be exact: every vendor holds precisely what the source selects (nothing
lost, no ghost records, no duplicate creates), and dead-letter queues hold exactly the poison
messages, with their reasons.

Scale: ``CHAOS_SCALE`` (students per school unit; default small for CI, ``make test-chaos`` raises it).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import aio_pika
import pytest

from skolsynk.adapters.egil import EgilResourceType
from skolsynk.contracts.source import SourceRecord
from skolsynk.domain.ids import entity_id
from skolsynk.domain.reconcile import reconcile
from skolsynk.domain.selection import StoredEntity, project
from skolsynk.domain.ss12000 import ENTITY_MODELS, EntityKind
from skolsynk.domain.subscription import VendorProfile, VendorSubscription
from skolsynk.messaging.publisher import HEADER_FAILURE_REASON
from skolsynk.service import ServiceApp
from skolsynk.settings import ServiceSettings
from skolsynk.storage.erasures import ErasureLedger
from skolsynk.storage.subscriptions import SubscriptionStore
from skolsynk_services.dispatcher.app import DispatcherSettings
from skolsynk_services.dispatcher.app import build as build_dispatcher
from skolsynk_services.gdpr.app import GdprSettings
from skolsynk_services.gdpr.app import build as build_gdpr
from skolsynk_services.normaliser.app import NormaliserSettings
from skolsynk_services.normaliser.app import build as build_normaliser
from skolsynk_testkit.devstack import start_mongo_wire_server, write_vendor_catalogue
from skolsynk_testkit.fakes.egil_vendor import FakeEgilVendor
from skolsynk_testkit.synthetic import full_run, organiser, school_unit_codes
from tests.chaos.proxy import ChaosProxy
from tests.helpers import delete_topology, drain_queue, queue_depth, wait_for

TENANT = "kommun-chaos"
SOURCE = "egil-1"
VENDOR = "chaosvendor"
API_KEY = "chaos-key-" + "2" * 16
SCALE = int(os.environ.get("CHAOS_SCALE", "8"))  # students per school unit
TIMEOUT = 240 if SCALE <= 10 else 30 * SCALE

pytestmark = [
    pytest.mark.chaos,
    pytest.mark.connected,
    pytest.mark.timeout(TIMEOUT),
    # Cutting connections under aio-pika can leave the dead connection's socket for the garbage
    # collector (a ResourceWarning from aio-pika's internals, not from our code): expected here.
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
    pytest.mark.filterwarnings("ignore::ResourceWarning"),
]
UNITS = 3


def the_organiser(seed: int = 41) -> list[SourceRecord]:
    return organiser(seed=seed, school_units=UNITS, students_per_unit=SCALE, teachers_per_unit=2)


def expected(records: list[SourceRecord]) -> dict[str, set[str]]:
    """What the vendor must hold, by EGIL collection, computed by the same rules without services."""
    entities = [
        StoredEntity(
            entity_id(TENANT, SOURCE, r.kind, r.key),
            SOURCE,
            ENTITY_MODELS[r.kind].model_validate({**r.data, "key": r.key, "kind": r.kind}),
        )
        for r in records
    ]
    state, _ = reconcile(TENANT, entities, datetime.now(UTC).date())
    subscription = VendorSubscription(
        tenant_id=TENANT, vendor_id=VENDOR, school_unit_codes=frozenset(school_unit_codes(records)), test_mode=False
    )
    wanted: dict[str, set[str]] = {}
    for resource in project(state, subscription, VendorProfile(vendor_id=VENDOR), datetime.now(UTC).date()).values():
        wanted.setdefault(EgilResourceType.for_kind(resource.kind).endpoint, set()).add(str(resource.id))
    return wanted


def via(url: str, proxy: ChaosProxy) -> str:
    """``url`` with its host and port replaced by the proxy's."""
    parts = urlsplit(url)
    credentials = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
    return urlunsplit(parts._replace(netloc=credentials + proxy.address))


@dataclass
class ChaosStack:
    settings: ServiceSettings
    broker: ChaosProxy
    vendor: FakeEgilVendor
    vendor_proxy: ChaosProxy
    apps: list[ServiceApp] = field(default_factory=list)

    @property
    def normaliser(self) -> ServiceApp:
        return self.apps[0]

    @property
    def dispatcher(self) -> ServiceApp:
        return self.apps[1]

    @property
    def amqp_url(self) -> str:
        return self.settings.broker.amqp_url.get_secret_value()

    async def publish(self, records: list[SourceRecord], *, duplicate: bool = False) -> None:
        """A full run, published directly (not through the proxy); ``duplicate`` sends every message twice."""
        connection = await aio_pika.connect(self.amqp_url)
        async with connection:
            channel = await connection.channel(publisher_confirms=True)
            exchange = await channel.get_exchange(self.normaliser.topology.exchange("source"))
            for message in full_run(records, source_id=SOURCE, source_kind="egil", page_size=20):
                envelope = message.to_envelope(tenant_id=TENANT, producer="chaos-test")
                body = aio_pika.Message(
                    envelope.model_dump_json().encode(),
                    message_id=str(envelope.message_id),
                    type=envelope.message_type,
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                )
                for _ in range(2 if duplicate else 1):
                    await exchange.publish(body, routing_key=f"egil.{TENANT}")

    def held(self) -> dict[str, set[str]]:
        found = {}
        for resource_type in EgilResourceType:
            ids = set(self.vendor.resources(TENANT, resource_type.endpoint))
            if ids:
                found[resource_type.endpoint] = ids
        return found

    async def converged(self, records: list[SourceRecord], *, timeout: float = max(120, TIMEOUT // 2)) -> None:
        wanted = expected(records)
        await wait_for(lambda: self.held() == wanted, timeout=timeout, interval=0.25, what="the vendor to converge")

    def creates_per_resource(self) -> Counter[tuple[str, str]]:
        return Counter(
            (
                r.resource_type or "",
                str(r.body.get("externalId") or r.body.get("id") if isinstance(r.body, dict) else ""),
            )
            for r in self.vendor.requests
            if r.method == "POST" and 200 <= r.status < 300
        )


@contextlib.asynccontextmanager
async def chaos_stack(
    settings: ServiceSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[ChaosStack]:
    """The stack with a proxy in front of RabbitMQ and the vendor; ``settings`` say which MongoDB."""
    broker_url = settings.broker.amqp_url.get_secret_value()
    parts = urlsplit(broker_url)
    broker = ChaosProxy(parts.hostname or "127.0.0.1", parts.port or 5672)
    vendor = FakeEgilVendor(api_keys={API_KEY: TENANT})
    vendor_proxy: ChaosProxy | None = None
    stack: ChaosStack | None = None
    try:
        await broker.start()
        await vendor.start()
        vendor_port = int(urlsplit(vendor.base_url).port or 0)
        vendor_proxy = await ChaosProxy("127.0.0.1", vendor_port).start()
        monkeypatch.setenv("SKOLSYNK_TEST_CHAOS_VENDOR_KEY", API_KEY)
        scim_url = vendor.base_url.replace(f":{vendor_port}", f":{vendor_proxy.port}")
        catalogue = write_vendor_catalogue(
            tmp_path / "vendors", VENDOR, scim_base_url=scim_url, api_key_env="SKOLSYNK_TEST_CHAOS_VENDOR_KEY"
        )
        proxied = settings.model_dump()
        proxied["broker"] = {**proxied["broker"], "amqp_url": via(broker_url, broker)}
        dispatcher = {"vendor_id": VENDOR, "vendor_catalogue_dir": catalogue, "vendor_retry_timeout_seconds": 2}
        stack = ChaosStack(settings, broker, vendor, vendor_proxy)
        stack.apps = [
            build_normaliser(NormaliserSettings.model_validate({**proxied, "date_check_interval_seconds": 86400})),
            build_dispatcher(DispatcherSettings.model_validate({**proxied, **dispatcher})),
            build_gdpr(GdprSettings.model_validate({**proxied, "gdpr_sweep_interval_seconds": 1})),
        ]
        for app in stack.apps:
            await app.start()
        records = the_organiser()
        await SubscriptionStore(stack.normaliser.db).save(
            VendorSubscription(
                tenant_id=TENANT,
                vendor_id=VENDOR,
                school_unit_codes=frozenset(school_unit_codes(records)),
                test_mode=False,
            )
        )
        yield stack
    finally:
        apps = stack.apps if stack is not None else []
        for app in apps:
            await app.drain(2)
            await app.close()
        if vendor_proxy is not None:
            await vendor_proxy.stop()
        await vendor.stop()
        await broker.stop()
        if apps:
            await delete_topology(broker_url, apps[1].topology)  # the dispatcher's: the system's and the vendor's


@pytest.fixture
async def chaos(
    settings: ServiceSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[ChaosStack]:
    async with chaos_stack(settings, tmp_path, monkeypatch) as stack:
        yield stack


async def test_broker_connections_dropped_three_times_during_a_sync(chaos: ChaosStack):
    records = the_organiser()
    wanted = expected(records)
    total = sum(len(ids) for ids in wanted.values())
    await chaos.publish(records)
    for fraction in (0.2, 0.45, 0.7):
        await wait_for(
            lambda f=fraction: sum(len(i) for i in chaos.held().values()) >= f * total,
            timeout=90,
            interval=0.05,
            what=f"{fraction:.0%} delivered",
        )
        # A batch in flight keeps delivering while its service reconnects: cut once every service
        # is connected again, so each cut hits all of them.
        await wait_for(
            lambda: chaos.broker.open_links >= len(chaos.apps), timeout=60, interval=0.05, what="reconnected"
        )
        assert chaos.broker.cut() > 0, "no broker connection to cut"
    await chaos.converged(records)
    assert chaos.broker.stats.cuts >= 3
    duplicates = {k: n for k, n in chaos.creates_per_resource().items() if n > 1}
    assert duplicates == {}, f"created twice: {duplicates}"
    # Every service was cut and came back (an idle one may still be reconnecting when the sync converged).
    await wait_for(
        lambda: all(
            (app.metrics.registry.get_sample_value("skolsynk_broker_reconnects_total") or 0) >= 1 for app in chaos.apps
        ),
        timeout=60,
        interval=0.1,
        what="every service reconnected",
    )


async def test_duplicated_source_messages_change_nothing_twice(chaos: ChaosStack):
    records = the_organiser()
    await chaos.publish(records, duplicate=True)
    await chaos.converged(records)
    # A second, duplicated, snapshot without one student: deleted exactly once, receipt in the ledger.
    leaver = next(r.key for r in records if r.kind is EntityKind.PERSON and r.key.startswith("student"))
    remaining = [r for r in records if r.key != leaver]
    remaining = [
        SourceRecord(
            kind=r.kind,
            key=r.key,
            data={**r.data, "memberships": [m for m in r.data["memberships"] if m["person"] != leaver]},
        )
        if r.kind is EntityKind.GROUP
        else r
        for r in remaining
    ]
    await chaos.publish(remaining, duplicate=True)
    await chaos.converged(remaining)
    deletes = [r for r in chaos.vendor.requests if r.method == "DELETE" and r.resource_type == "Users"]
    assert len(deletes) == 1
    ledger = ErasureLedger(chaos.normaliser.db)

    async def receipted() -> bool:
        rows = await ledger.evidence(TENANT)
        return [r["status"] for r in rows] == ["completed"]

    await wait_for(receipted, timeout=30, what="the deletion receipt")
    assert {k: n for k, n in chaos.creates_per_resource().items() if n > 1} == {}


async def test_poison_messages_go_to_the_dead_letter_queue_with_reasons_and_the_rest_flows(chaos: ChaosStack):
    records = the_organiser()
    poison = [
        b"this is not json",
        b'{"message_type": "source.records"}',
        b'{"envelope_version": 1, "message_id": "'
        + str(uuid.uuid4()).encode()
        + b'", "message_type": "source.records", '
        b'"schema_version": 1, "tenant_id": "kommun-chaos", "produced_at": "2026-11-26T00:00:00Z", "producer": "x", '
        b'"payload": {"run_id": "not-a-uuid"}}',
    ]
    connection = await aio_pika.connect(chaos.amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(chaos.normaliser.topology.exchange("source"))
        for body in poison:
            await exchange.publish(aio_pika.Message(body, message_id=str(uuid.uuid4())), routing_key=f"egil.{TENANT}")
    await chaos.publish(records)
    await chaos.converged(records)
    dlq = chaos.normaliser.topology.queue(chaos.normaliser.queue_name("normaliser", "source-events")).dead_letter_queue
    await wait_for(lambda: queue_depth(chaos.amqp_url, dlq), timeout=30, what="dead letters")

    async def all_dead() -> bool:
        return await queue_depth(chaos.amqp_url, dlq) == len(poison)

    await wait_for(all_dead, timeout=30, what="every poison message in the DLQ")
    dead = await drain_queue(chaos.amqp_url, dlq)
    assert sorted(m.body for m in dead) == sorted(poison)
    for message in dead:
        reason = str(message.headers.get(HEADER_FAILURE_REASON, ""))
        assert reason, "a dead letter without its reason"


async def test_the_vendor_failing_slow_and_down_still_ends_exact(chaos: ChaosStack):
    records = the_organiser()
    chaos.vendor.faults.error_rate(0.3, status=503, seed=7)
    chaos.vendor_proxy.delay(0.05)
    await chaos.publish(records)
    await wait_for(lambda: len(chaos.vendor.requests) >= 20, timeout=60, what="traffic under errors")
    await chaos.vendor_proxy.refuse()  # an outage, until deliveries have been retried through it
    retried = {"queue": chaos.dispatcher.queue_name("dispatcher", VENDOR), "outcome": "retry"}
    await wait_for(
        lambda: (
            (chaos.dispatcher.metrics.registry.get_sample_value("skolsynk_messages_consumed_total", retried) or 0) >= 1
        ),
        timeout=60,
        what="deliveries to be retried during the outage",
    )
    chaos.vendor.faults.error_rate(0.0)
    await chaos.vendor_proxy.heal()
    await chaos.converged(records, timeout=max(180, TIMEOUT // 2))
    assert {k: n for k, n in chaos.creates_per_resource().items() if n > 1} == {}
    dlq = chaos.dispatcher.topology.queue(chaos.dispatcher.queue_name("dispatcher", VENDOR)).dead_letter_queue
    assert await queue_depth(chaos.amqp_url, dlq) == 0, "an outage must not dead-letter"


async def test_the_mongo_server_restarted_mid_sync(
    settings: ServiceSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """Its own Mongo wire server on disk, stopped and started again on the same port mid-sync: handlers
    that meet the outage are retried (never dead-lettered), and the vendor ends exact."""
    storage = tmp_path / "mongo"
    storage.mkdir()
    mongo = await asyncio.to_thread(start_mongo_wire_server, storage_path=storage, log_path=tmp_path / "mongo.log")
    port = int(urlsplit(mongo.url).port or 0)
    own = settings.model_dump()
    own["store"] = {**own["store"], "mongodb_url": mongo.url}
    try:
        async with chaos_stack(ServiceSettings.model_validate(own), tmp_path, monkeypatch) as chaos:
            records = the_organiser()
            total = sum(len(ids) for ids in expected(records).values())
            await chaos.publish(records)
            await wait_for(
                lambda: sum(len(i) for i in chaos.held().values()) >= 0.3 * total,
                timeout=90,
                interval=0.05,
                what="30% delivered",
            )
            await asyncio.to_thread(mongo.stop)
            mongo = await asyncio.to_thread(
                start_mongo_wire_server, port=port, storage_path=storage, log_path=tmp_path / "mongo-2.log"
            )
            await chaos.converged(records, timeout=max(180, TIMEOUT // 2))
            assert {k: n for k, n in chaos.creates_per_resource().items() if n > 1} == {}
            for app in chaos.apps:
                for spec in app.topology.queues:
                    if spec.name.endswith(("source-events", "projections", VENDOR)):
                        assert await queue_depth(chaos.amqp_url, spec.dead_letter_queue) == 0, spec.name
    finally:
        await asyncio.to_thread(mongo.stop)
