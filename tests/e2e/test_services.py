"""The services run as separate processes: ready on the real broker and store, consuming, metrics on
their own port, JSON logs with no personal data, a clean exit on SIGTERM, and a clear refusal of
bad configuration."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
from pymongo import AsyncMongoClient, MongoClient

from skolsynk.domain.ss12000 import EntityKind
from skolsynk.domain.subscription import VendorSubscription
from skolsynk.lifecycle import SHUTDOWN_MARGIN_SECONDS
from skolsynk.messaging import skolsynk_topology
from skolsynk.storage.subscriptions import SubscriptionStore
from skolsynk_testkit.devstack import ServiceProcess, publish_messages, start_service, write_vendor_catalogue
from skolsynk_testkit.synthetic import full_run, organiser, school_unit_codes
from tests.helpers import delete_topology, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(180)]

SERVICES = {
    "normaliser": ("skolsynk_services.normaliser", {}),
    "dispatcher-demo-vendor": ("skolsynk_services.dispatcher", {"SKOLSYNK_VENDOR_ID": "demo-vendor"}),
    "gdpr": ("skolsynk_services.gdpr", {}),
    "admin": (
        "skolsynk_services.admin",
        {"SKOLSYNK_ADMIN_BOOTSTRAP_TOKEN": "skt_e2eoperator.e2e-operator-secret-value-0123456789"},
    ),
    "egil-receiver": ("skolsynk_services.egil_receiver", {"SKOLSYNK_SOURCES_POLL_SECONDS": "1"}),
    "ss12000-puller": ("skolsynk_services.ss12000_puller", {"SKOLSYNK_SOURCES_POLL_SECONDS": "1"}),
}
BUDGET = {
    "SKOLSYNK_READINESS_GRACE_SECONDS": "0.5",
    "SKOLSYNK_DRAIN_TIMEOUT_SECONDS": "3",
    "SKOLSYNK_CLOSE_TIMEOUT_SECONDS": "3",
}


@pytest.fixture
def service_env(amqp_url: str, mongo_url: str, namespace: str) -> dict[str, str]:
    return {
        "AMQP_URL": amqp_url,
        "MONGODB_URL": mongo_url,
        "MONGODB_DATABASE": f"e2e_{namespace}",
        "SKOLSYNK_NAMESPACE": namespace,
        "SKOLSYNK_LOG_FORMAT": "json",
        **BUDGET,
    }


@pytest.fixture
def running(service_env: dict[str, str], tmp_path: Path, vendor_vhosts: Callable[[str], Awaitable[str]]):
    started: list[ServiceProcess] = []
    asyncio.run(vendor_vhosts("demo-vendor"))  # the queue vendor's own vhost, as onboarding makes it
    service_env["SKOLSYNK_VENDOR_CATALOGUE_DIR"] = str(write_vendor_catalogue(tmp_path / "vendors", "demo-vendor"))
    try:
        for name, (module, extra) in SERVICES.items():
            started.append(start_service(name, module, env={**service_env, **extra}, log_dir=tmp_path))
        yield started
    finally:
        for service in started:
            service.terminate(timeout=30)
        client: MongoClient[dict[str, object]] = MongoClient(service_env["MONGODB_URL"])
        client.drop_database(service_env["MONGODB_DATABASE"])
        client.close()
        topology = skolsynk_topology(service_env["SKOLSYNK_NAMESPACE"], vendor_ids=["demo-vendor"])
        asyncio.run(delete_topology(service_env["AMQP_URL"], topology))


async def test_services_become_ready_consume_and_stop_cleanly(running, amqp_url, namespace, service_env):
    for service in running:
        service.wait_ready(timeout=60)
        status, metrics = service.get("/metrics")
        assert status == 200
        assert b"skolsynk_ready 1.0" in metrics
        assert service.get("/livez")[0] == 200

    admin_port = running[3].port_of("web_app_started")
    version = f"http://127.0.0.1:{admin_port}/api/v1/version"
    operator = {"Authorization": "Bearer skt_e2eoperator.e2e-operator-secret-value-0123456789"}
    async with aiohttp.ClientSession() as http:
        async with http.get(version) as response:
            assert response.status == 401
        async with http.get(version, headers=operator) as response:
            assert response.status == 200
            assert (await response.json())["service"] == "admin"

    # A full snapshot from a (fake) source flows through the normaliser to the vendor's dispatcher.
    records = organiser(seed=3, school_units=1, students_per_unit=3, teachers_per_unit=1)
    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(service_env["MONGODB_URL"])
    try:
        await SubscriptionStore(client[service_env["MONGODB_DATABASE"]]).save(
            VendorSubscription(
                tenant_id="kommun-a",
                vendor_id="demo-vendor",
                school_unit_codes=frozenset(school_unit_codes(records)),
                test_mode=False,
            )
        )
    finally:
        await client.close()
    run = list(full_run(records, source_id="egil-1", source_kind="egil", page_size=4))
    await publish_messages(amqp_url, f"{namespace}.source", "egil.kommun-a", run, tenant_id="kommun-a")

    normaliser, dispatcher = running[0], running[1]

    def logged(service: ServiceProcess, event: str) -> list[dict[str, object]]:
        return [line for line in service.logged_events() if line.get("event") == event]

    await wait_for(lambda: len(logged(normaliser, "run_finalised")) == 1, timeout=30, what="the run to finalise")
    assert logged(normaliser, "run_finalised")[0]["complete"] is True
    persons = sum(1 for r in records if r.kind is EntityKind.PERSON)

    def delivered() -> int:
        return sum(int(line.get("delivered", 0)) for line in logged(dispatcher, "batch_delivered"))  # type: ignore[call-overload]

    await wait_for(lambda: delivered() >= persons, timeout=30, what="changes at the vendor")
    # No personal data and no secrets in any service's log.
    log_text = "".join(service.log_path.read_text() for service in running)
    for record in records:
        if record.kind is EntityKind.PERSON:
            data = record.data
            assert f"{data['given_name']} {data['family_name']}" not in log_text
            assert str(data["eppn"][0]) not in log_text
            assert str(data["emails"][0]["value"]) not in log_text
            if data.get("civic_no"):
                assert str(data["civic_no"]) not in log_text
    assert "e2e-operator-secret-value-0123456789" not in log_text

    budget = sum(float(v) for v in BUDGET.values()) + SHUTDOWN_MARGIN_SECONDS
    for service in running:
        started = time.monotonic()
        assert service.terminate(timeout=budget) == 0, service.log_path.read_text()[-2000:]
        assert time.monotonic() - started <= budget
        events = [line.get("event") for line in service.logged_events()]
        assert "service_started" in events
        assert events[-1] == "shutdown_complete"
        assert all(line.get("service") for line in service.logged_events())


def test_bad_configuration_is_refused_at_start_with_the_setting_named(service_env):
    result = subprocess.run(
        [sys.executable, "-m", "skolsynk_services.normaliser"],
        env={**service_env, "SKOLSYNK_PREFETCH": "0", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "prefetch" in result.stderr
    assert "greater than or equal to 1" in result.stderr
