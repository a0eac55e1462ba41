"""Issue 18 with the services as processes: an operator adds a vendor through the admin API and the shared
dispatcher (serving every vendor of the store's catalogue) delivers to it without a restart; the
organiser's own API key puts its data in its own tenant at the vendor server; the vendor's server failing
past the threshold turns the pair to failing, with pending changes, and the organiser's contact gets one
e-mail (a local SMTP server), and one more when deliveries work again."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from pymongo import AsyncMongoClient, MongoClient

from skolsynk.contracts.source import SourceRecord
from skolsynk.domain.subscription import VendorSubscription
from skolsynk.messaging import skolsynk_topology
from skolsynk.storage.subscriptions import SubscriptionStore
from skolsynk_testkit.devstack import ServiceProcess, publish_messages, start_service
from skolsynk_testkit.fakes.egil_vendor import FakeEgilVendor
from skolsynk_testkit.synthetic import full_run, organiser, school_unit_codes
from tests.helpers import delete_topology, wait_for
from tests.smtp import Inbox, local_smtp_server

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(240)]

TENANT = "kommun-a"
VENDOR = "ny-leverantor"
OPERATOR = "skt_e2eoperator.e2e-operator-secret-value-0123456789"
SHARED_KEY = "shared-key-" + "0" * 16
OWN_KEY = "kommun-a-key-" + "a" * 16
SECRETS_KEY = "2mJ3m6mCAxzGzO8Ihc4r3Vxv3Fj0vIYbVwJJmQKkV4g="  # a throwaway Fernet key for tests
FAST = {
    "SKOLSYNK_READINESS_GRACE_SECONDS": "0.5",
    "SKOLSYNK_DRAIN_TIMEOUT_SECONDS": "3",
    "SKOLSYNK_CLOSE_TIMEOUT_SECONDS": "3",
    "SKOLSYNK_VENDORS_POLL_SECONDS": "0.5",
    "SKOLSYNK_ADMIN_SECRETS_KEY": SECRETS_KEY,
}


@pytest.fixture
def smtp() -> Iterator[tuple[Inbox, int]]:
    with local_smtp_server() as server:
        yield server


async def test_an_operator_onboards_a_vendor_and_the_organiser_is_told_how_deliveries_fare(
    amqp_url: str, mongo_url: str, namespace: str, tmp_path: Path, smtp: tuple[Inbox, int]
) -> None:
    inbox, smtp_port = smtp
    vendor = FakeEgilVendor(api_keys={SHARED_KEY: "shared", OWN_KEY: "vendor-kommun-a"})
    await vendor.start()
    database = f"e2e_{namespace}"
    empty = tmp_path / "no-vendor-files"
    empty.mkdir()
    base = {
        "AMQP_URL": amqp_url,
        "MONGODB_URL": mongo_url,
        "MONGODB_DATABASE": database,
        "SKOLSYNK_NAMESPACE": namespace,
        "SKOLSYNK_LOG_FORMAT": "json",
        "SKOLSYNK_VENDOR_CATALOGUE_DIR": str(empty),  # no catalogue files: vendors come from the admin only
        **FAST,
    }
    services: list[ServiceProcess] = []
    try:
        for name, module, extra in (
            ("normaliser", "skolsynk_services.normaliser", {}),
            # One dispatcher for every vendor of the catalogue, started while the catalogue is empty.
            (
                "dispatcher",
                "skolsynk_services.dispatcher",
                {"SKOLSYNK_TEST_VENDOR_KEY": SHARED_KEY, "SKOLSYNK_VENDOR_RETRY_TIMEOUT_SECONDS": "1"},
            ),
            (
                "admin",
                "skolsynk_services.admin",
                {
                    "SKOLSYNK_ADMIN_BOOTSTRAP_TOKEN": OPERATOR,
                    "SKOLSYNK_SMTP_HOST": "127.0.0.1",
                    "SKOLSYNK_SMTP_PORT": str(smtp_port),
                    "SKOLSYNK_SMTP_STARTTLS": "false",
                    "SKOLSYNK_SMTP_FROM": "skolsynk@drift.example",
                    "SKOLSYNK_NOTIFY_INTERVAL_SECONDS": "0.5",
                    "SKOLSYNK_DELIVERY_FAILING_MINUTES": "0.05",  # three seconds of retrying is failing here
                },
            ),
        ):
            services.append(start_service(name, module, env={**base, **extra}, log_dir=tmp_path))
        for service in services:
            service.wait_ready(timeout=60)
        api = f"http://127.0.0.1:{services[2].port_of('web_app_started')}/api/v1"
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {OPERATOR}"}) as http:

            async def call(method: str, path: str, body: Any = None) -> tuple[int, Any]:
                async with http.request(method, api + path, json=body) as response:
                    return response.status, await response.json(content_type=None)

            status, _ = await call("POST", "/tenants", {"tenant_id": TENANT, "display_name": "Kommun A"})
            assert status == 201
            entry = {
                "vendor_id": VENDOR,
                "display_name": "Ny leverantör AB",
                "delivery": "egil_scim",
                "scim": {
                    "base_url": vendor.base_url,
                    "auth": {"api_key_env": "SKOLSYNK_TEST_VENDOR_KEY"},
                    "rate_per_second": 200,
                    "burst": 50,
                },
                "profile": {},
            }
            status, created = await call("PUT", f"/catalogue/vendors/{VENDOR}", entry)
            assert (status, created["outcome"]) == (200, "created"), created
            status, _ = await call("PUT", f"/catalogue/vendors/{VENDOR}/credentials/{TENANT}", {"api_key": OWN_KEY})
            assert status == 200
            status, _ = await call("PUT", f"/tenants/{TENANT}/contacts", {"notify_emails": ["it@kommun-a.example"]})
            assert status == 200

            records = organiser(seed=7, school_units=1, students_per_unit=4, teachers_per_unit=1)
            client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_url)
            try:
                await SubscriptionStore(client[database]).save(
                    VendorSubscription(
                        tenant_id=TENANT,
                        vendor_id=VENDOR,
                        school_unit_codes=frozenset(school_unit_codes(records)),
                        test_mode=False,
                    )
                )
            finally:
                await client.close()
            run = list(full_run(records, source_id="egil-1", source_kind="egil", page_size=4))
            await publish_messages(amqp_url, f"{namespace}.source", f"egil.{TENANT}", run, tenant_id=TENANT)
            # The first delivery, with no restart, in the organiser's own tenant at the vendor.
            await wait_for(
                lambda: len(vendor.resources("vendor-kommun-a", "Users")) == 5,
                timeout=60,
                what="the persons in the organiser's own tenant at the new vendor",
            )
            assert vendor.resources("shared", "Users") == {}

            async def health() -> dict[str, Any]:
                status, subscription = await call("GET", f"/tenants/{TENANT}/subscriptions/{VENDOR}")
                assert status == 200, subscription
                found: dict[str, Any] = subscription["health"]
                return found

            async def health_is(state: str, pending: int | None = None) -> bool:
                now = await health()
                return now["state"] == state and (pending is None or now["pending"] == pending)

            await wait_for(lambda: health_is("ok", 0), timeout=30, what="ok, nothing pending")

            # The vendor's server fails: the rename waits, the pair turns failing, one e-mail.
            vendor.faults.error_rate(1.0, status=503)
            renamed = [
                SourceRecord(kind=r.kind, key=r.key, data={**r.data, "family_name": "Nyström"})
                if r.key == "student-0-0"
                else r
                for r in records
            ]
            run = list(full_run(renamed, source_id="egil-1", source_kind="egil", page_size=4))
            await publish_messages(amqp_url, f"{namespace}.source", f"egil.{TENANT}", run, tenant_id=TENANT)
            await wait_for(lambda: health_is("failing"), timeout=60, what="the pair failing")
            failing = await health()
            assert failing["pending"] >= 1
            assert failing["last_error"] == "http_503"
            await wait_for(lambda: len(inbox.messages) == 1, timeout=30, what="one e-mail about the failure")
            assert inbox.messages[0]["To"] == "it@kommun-a.example"
            assert "misslyckas" in str(inbox.messages[0]["Subject"])

            # Back: the waiting change goes through, the pair is ok, one recovery e-mail.
            vendor.faults.error_rate(0)
            await wait_for(lambda: health_is("ok", 0), timeout=90, what="ok again, nothing pending")
            await wait_for(lambda: len(inbox.messages) == 2, timeout=30, what="one e-mail about the recovery")
            assert "fungerar igen" in str(inbox.messages[1]["Subject"])
            names = [u.get("name", {}).get("familyName") for u in vendor.resources("vendor-kommun-a", "Users").values()]
            assert "Nyström" in names
        # One mail per episode although the notifier looked every half second while it lasted.
        assert len(inbox.messages) == 2
        log_text = "".join(service.log_path.read_text() for service in services)
        assert OWN_KEY not in log_text
        assert SHARED_KEY not in log_text
    finally:
        for service in services:
            with contextlib.suppress(Exception):
                service.terminate(timeout=30)
        await vendor.stop()
        sync_client: MongoClient[dict[str, Any]] = MongoClient(mongo_url)
        sync_client.drop_database(database)
        sync_client.close()
        await delete_topology(amqp_url, skolsynk_topology(namespace, vendor_ids=[VENDOR]))
