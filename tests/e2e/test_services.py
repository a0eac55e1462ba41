"""The services run as separate processes: ready on the real broker and store, consuming, metrics on
their own port, JSON logs with no personal data, a clean exit on SIGTERM, and a clear refusal of
bad configuration."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import aio_pika
import aiohttp
import pytest
from pymongo import MongoClient

from skolsynk.contracts import Envelope, SyncRequested
from skolsynk.devstack import ServiceProcess, start_service
from skolsynk.lifecycle import SHUTDOWN_MARGIN_SECONDS
from tests.helpers import queue_depth, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(180)]

SERVICES = {
    "normaliser": ("normaliser", {}),
    "dispatcher-demo-vendor": ("dispatcher", {"SKOLSYNK_VENDOR_ID": "demo-vendor"}),
    "gdpr": ("gdpr", {}),
    "admin": ("admin", {}),
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
def running(service_env: dict[str, str], tmp_path: Path):
    started: list[ServiceProcess] = []
    for name, (module, extra) in SERVICES.items():
        started.append(start_service(name, module, env={**service_env, **extra}, log_dir=tmp_path))
    try:
        yield started
    finally:
        for service in started:
            service.terminate(timeout=30)
        client: MongoClient[dict[str, object]] = MongoClient(service_env["MONGODB_URL"])
        client.drop_database(service_env["MONGODB_DATABASE"])
        client.close()


async def test_services_become_ready_consume_and_stop_cleanly(running, amqp_url, namespace):
    for service in running:
        service.wait_ready(timeout=60)
        status, metrics = service.get("/metrics")
        assert status == 200
        assert b"skolsynk_ready 1.0" in metrics
        assert service.get("/livez")[0] == 200

    admin_port = running[-1].port_of("web_app_started")
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{admin_port}/api/v1/version") as response:
        assert response.status == 200
        assert (await response.json())["service"] == "admin"

    # A source event reaches the normaliser's queue and is consumed by the running process.
    envelope: Envelope = SyncRequested(source_id="google", requested_by="e2e").to_envelope(tenant_id="kommun-a")
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        exchange = await channel.get_exchange(f"{namespace}.source")
        await exchange.publish(
            aio_pika.Message(envelope.model_dump_json().encode(), delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
            routing_key="google.kommun-a",
        )

    async def consumed() -> bool:
        return await queue_depth(amqp_url, f"{namespace}.normaliser.source-events") == 0

    normaliser = running[0]
    await wait_for(consumed, what="the normaliser to consume the event")
    await wait_for(
        lambda: any(line.get("event") == "source_event_received" for line in normaliser.logged_events()),
        what="the normaliser to log the event",
    )

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
        [sys.executable, "-m", "normaliser"],
        env={**service_env, "SKOLSYNK_PREFETCH": "0", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "prefetch" in result.stderr
    assert "greater than or equal to 1" in result.stderr
