"""The privacy scan with every service as its own process (issue 24): after a run with a leaver, an erasure
requested through the admin API and a test-mode subscription, nothing of the leaver is anywhere (store,
queues, logs, vendors), and of the erased person, who stays in the source, only what docs/gdpr.md allows:
the source's record (``entities``): sent vendor changes forgot their resource.

Three vendors: an EGIL SCIM vendor (the fake vendor server), a queue vendor that is live but reads nothing
(the persons' upserts wait in its feed until their deletes take them out) and a queue vendor in test mode."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from bson import json_util
from pymongo import AsyncMongoClient, MongoClient

from skolsynk.contracts.source import SourceRecord
from skolsynk.domain.ids import entity_id
from skolsynk.domain.ss12000 import EntityKind
from skolsynk.domain.subscription import VendorSubscription
from skolsynk.messaging import skolsynk_topology
from skolsynk.messaging.vhosts import amqp_url_with_vhost
from skolsynk.storage.subscriptions import SubscriptionStore
from skolsynk_services.dispatcher.onboarding import feed_queue_name, vendor_vhost
from skolsynk_testkit.devstack import ServiceProcess, publish_messages, start_service, write_vendor_catalogue
from skolsynk_testkit.fakes.egil_vendor import FakeEgilVendor
from skolsynk_testkit.synthetic import full_run, organiser, school_unit_codes, without_person
from tests.helpers import delete_topology, peek_queues, queue_names, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(240)]

TENANT = "kommun-p"
SOURCE = "egil-1"
SCIM_VENDOR, LIVE_QUEUE, TEST_QUEUE = "scim-vendor", "queue-live", "queue-test"
VENDORS = (SCIM_VENDOR, LIVE_QUEUE, TEST_QUEUE)
API_KEY = "e2e-privacy-key-" + "7" * 16
OPERATOR = "skt_e2eprivacy.e2e-privacy-operator-secret-0123456789"
LEAVER, ERASED = "student-0-1", "student-0-2"
PERSONAL = {
    LEAVER: {
        "given_name": "Lovisa-Unik",
        "family_name": "Slutarsson",
        "eppn": ["lovisa.slutarsson@demo.skolsynk.example"],
        "emails": [{"value": "lovisa.slutarsson@elev.demo.skolsynk.example", "type": "Skola elev"}],
        "civic_no": "201503039874",
    },
    ERASED: {
        "given_name": "Elof-Unik",
        "family_name": "Glommasson",
        "eppn": ["elof.glommasson@demo.skolsynk.example"],
        "emails": [{"value": "elof.glommasson@elev.demo.skolsynk.example", "type": "Skola elev"}],
        "civic_no": "201404048873",
    },
}
#: What the erased person may still be found in (docs/gdpr.md): the source's record.
ALLOWED_FOR_ERASED = {"entities"}


def needles(key: str) -> list[str]:
    data = PERSONAL[key]
    return [
        str(data["given_name"]),
        str(data["family_name"]),
        str(data["civic_no"]),
        str(data["eppn"][0]),
        str(data["emails"][0]["value"]),  # type: ignore[index]
    ]


def person_id(key: str) -> uuid.UUID:
    return entity_id(TENANT, SOURCE, EntityKind.PERSON, key)


def the_organiser() -> list[SourceRecord]:
    records = organiser(seed=11, school_units=1, students_per_unit=5, teachers_per_unit=1)
    return [
        SourceRecord(kind=r.kind, key=r.key, data={**r.data, **PERSONAL[r.key]}) if r.key in PERSONAL else r
        for r in records
    ]


@pytest.fixture
async def scim_vendor() -> Any:
    vendor = FakeEgilVendor(api_keys={API_KEY: TENANT})
    await vendor.start()
    try:
        yield vendor
    finally:
        await vendor.stop()


@pytest.fixture
def services(
    amqp_url: str,
    mongo_url: str,
    namespace: str,
    tmp_path: Path,
    scim_vendor: FakeEgilVendor,
    vendor_vhosts: Callable[[str], Awaitable[str]],
) -> Iterator[dict[str, ServiceProcess]]:
    for vendor in (LIVE_QUEUE, TEST_QUEUE):  # the queue vendors' own vhosts, as onboarding makes them
        asyncio.run(vendor_vhosts(vendor))
    catalogue = tmp_path / "vendors"
    write_vendor_catalogue(catalogue, SCIM_VENDOR, scim_base_url=scim_vendor.base_url, api_key_env="E2E_VENDOR_KEY")
    write_vendor_catalogue(catalogue, LIVE_QUEUE)
    write_vendor_catalogue(catalogue, TEST_QUEUE)
    env = {
        "AMQP_URL": amqp_url,
        "MONGODB_URL": mongo_url,
        "MONGODB_DATABASE": f"e2e_{namespace}",
        "SKOLSYNK_NAMESPACE": namespace,
        "SKOLSYNK_VENDOR_CATALOGUE_DIR": str(catalogue),
        "SKOLSYNK_READINESS_GRACE_SECONDS": "0.5",
        "SKOLSYNK_DRAIN_TIMEOUT_SECONDS": "3",
        "SKOLSYNK_CLOSE_TIMEOUT_SECONDS": "3",
        "E2E_VENDOR_KEY": API_KEY,
    }
    modules = {
        "normaliser": ("skolsynk_services.normaliser", {}),
        "gdpr": ("skolsynk_services.gdpr", {"SKOLSYNK_GDPR_SWEEP_INTERVAL_SECONDS": "1"}),
        "admin": ("skolsynk_services.admin", {"SKOLSYNK_ADMIN_BOOTSTRAP_TOKEN": OPERATOR}),
        **{
            f"dispatcher-{v}": (
                "skolsynk_services.dispatcher",
                {"SKOLSYNK_VENDOR_ID": v, "SKOLSYNK_FEED_COMPACTION_SECONDS": "0.5"},
            )
            for v in VENDORS
        },
    }
    started: dict[str, ServiceProcess] = {}
    try:
        for name, (module, extra) in modules.items():
            started[name] = start_service(name, module, env={**env, **extra}, log_dir=tmp_path)
        yield started
    finally:
        for service in started.values():
            service.terminate(timeout=30)
        client: MongoClient[dict[str, Any]] = MongoClient(mongo_url)
        client.drop_database(env["MONGODB_DATABASE"])
        client.close()
        asyncio.run(_delete_queues(amqp_url, namespace))


async def _delete_queues(amqp_url: str, namespace: str) -> None:
    await delete_topology(amqp_url, skolsynk_topology(namespace, vendor_ids=list(VENDORS)))


async def queued_bodies(amqp_url: str, namespace: str) -> dict[str, list[bytes]]:
    """Every message waiting in every queue skolsynk declares (work, retry and dead-letter queues, the
    vendors' feeds), read without taking it."""
    found = await peek_queues(amqp_url, queue_names(skolsynk_topology(namespace, vendor_ids=list(VENDORS))))
    for vendor in (LIVE_QUEUE, TEST_QUEUE):  # each in its own vhost
        feed_url = amqp_url_with_vhost(amqp_url, vendor_vhost(namespace, vendor))
        found.update(await peek_queues(feed_url, [feed_queue_name(namespace, vendor)]))
    return found


def metric(service: ServiceProcess, name: str, **labels: str) -> float:
    """One sample of a service's /metrics (0 when absent)."""
    status, body = service.get("/metrics")
    assert status == 200
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in body.decode().splitlines():
        match = re.match(rf"^{re.escape(name)}\{{(.*)\}} (\S+)$", line)
        if match and ",".join(sorted(match.group(1).split(","))) == wanted:
            return float(match.group(2))
    return 0.0


async def test_after_a_leaver_an_erasure_and_a_test_mode_subscription_no_personal_data_is_left(
    services: dict[str, ServiceProcess],
    scim_vendor: FakeEgilVendor,
    amqp_url: str,
    mongo_url: str,
    namespace: str,
):
    for service in services.values():
        service.wait_ready(timeout=60)
    records = the_organiser()
    database = f"e2e_{namespace}"
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_url)
    db = client[database]
    admin = f"http://127.0.0.1:{services['admin'].port_of('web_app_started')}/api/v1"
    operator = {"Authorization": f"Bearer {OPERATOR}"}
    try:
        async with aiohttp.ClientSession(headers=operator) as http:
            async with http.post(f"{admin}/tenants", json={"tenant_id": TENANT, "display_name": "Kommun P"}) as r:
                assert r.status == 201, await r.text()
            for vendor in VENDORS:
                await SubscriptionStore(db).save(
                    VendorSubscription(
                        tenant_id=TENANT,
                        vendor_id=vendor,
                        school_unit_codes=frozenset(school_unit_codes(records)),
                        test_mode=vendor == TEST_QUEUE,
                    )
                )
            run = full_run(records, source_id=SOURCE, source_kind="egil", page_size=10)
            await publish_messages(amqp_url, f"{namespace}.source", f"egil.{TENANT}", run, tenant_id=TENANT)

            async def delivered() -> bool:
                users = scim_vendor.resources(TENANT, "Users")
                return str(person_id(LEAVER)) in users and str(person_id(ERASED)) in users

            await wait_for(delivered, timeout=60, what="the first sync at the SCIM vendor")
            waiting = await queued_bodies(amqp_url, namespace)
            live_feed = waiting.get(feed_queue_name(namespace, LIVE_QUEUE), [])
            assert any(PERSONAL[LEAVER]["family_name"].encode() in b for b in live_feed)  # type: ignore[union-attr]
            assert any(PERSONAL[ERASED]["family_name"].encode() in b for b in live_feed)  # type: ignore[union-attr]

            # The organiser's admin erases one person at every vendor; another person leaves the source.
            erasure = {"person_id": str(person_id(ERASED)), "reference": "e2e-privacy"}
            async with http.post(f"{admin}/tenants/{TENANT}/erasure-requests", json=erasure) as r:
                assert r.status in (200, 201, 202), await r.text()
            run = full_run(without_person(records, LEAVER), source_id=SOURCE, source_kind="egil", page_size=10)
            await publish_messages(amqp_url, f"{namespace}.source", f"egil.{TENANT}", run, tenant_id=TENANT)

            async def finished() -> bool:
                tombstone = await db["gdpr_tombstones"].find_one({"person_id": str(person_id(LEAVER))})
                ledger = await db["erasure_ledger"].find({"tenant_id": TENANT}).to_list(None)
                done = [e for e in ledger if e["status"] in ("completed", "superseded")]
                return tombstone is not None and len(done) == len(ledger) == 4  # 2 persons x 2 live vendors

            await wait_for(finished, timeout=90, interval=0.5, what="both deletions receipted and the purge")
            compactor = services[f"dispatcher-{LIVE_QUEUE}"]

            def compacted() -> bool:
                return metric(compactor, "skolsynk_feed_compacted_messages_total", vendor=LIVE_QUEUE) >= 2

            await wait_for(compacted, timeout=30, what="the unread feed to be compacted")

            # Where personal data could be: every collection, every queue, every log, every vendor.
            left, erased = needles(LEAVER), needles(ERASED)
            in_store: dict[str, list[str]] = {}
            for name in await db.list_collection_names():
                text = json_util.dumps(await db[name].find().to_list(None))
                hits = [n for n in left + erased if n in text]
                if hits:
                    in_store[name] = hits
            assert not any(n in hits for hits in in_store.values() for n in left), in_store
            assert set(in_store) <= ALLOWED_FOR_ERASED, in_store
            assert "entities" in in_store  # the scan finds what is there: the erased person is still in the source
            queued = await queued_bodies(amqp_url, namespace)
            assert feed_queue_name(namespace, LIVE_QUEUE) in queued  # the unread feed was scanned, not empty
            in_queues = {
                q: [n for n in left + erased if any(n.encode() in b for b in bodies)] for q, bodies in queued.items()
            }
            assert {q: hits for q, hits in in_queues.items() if hits} == {}
            logs = "".join(service.log_path.read_text() for service in services.values())
            assert [n for n in left + erased if n in logs] == []
            users = scim_vendor.resources(TENANT, "Users")
            assert str(person_id(LEAVER)) not in users
            assert str(person_id(ERASED)) not in users
            assert [n for n in left + erased if n in json_util.dumps(users)] == []
    finally:
        await client.close()
