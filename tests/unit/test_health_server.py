"""/livez, /readyz and /metrics on a real (loopback) aiohttp server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest

import skolsynk.observability as observability
from skolsynk.observability import HealthServer, Metrics

pytestmark = pytest.mark.unit

Get = Callable[[str], Awaitable[tuple[int, Any]]]


async def _true() -> bool:
    return True


async def _false() -> bool:
    return False


async def _raises() -> bool:
    raise ConnectionError("store unreachable")


async def _hangs() -> bool:
    await asyncio.sleep(30)
    return True


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
async def server(metrics: Metrics) -> AsyncIterator[HealthServer]:
    health = HealthServer(host="127.0.0.1", port=0, metrics=metrics)
    try:
        await health.start()
        assert health.bound_port
        yield health
    finally:
        await health.stop()


@pytest.fixture
async def get(server: HealthServer) -> AsyncIterator[Get]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:

        async def fetch(path: str) -> tuple[int, Any]:
            async with session.get(f"http://127.0.0.1:{server.bound_port}{path}") as response:
                if response.content_type == "application/json":
                    return response.status, await response.json()
                return response.status, await response.text()

        yield fetch


def _ready_gauge(metrics: Metrics) -> float | None:
    return metrics.registry.get_sample_value("skolsynk_ready")


async def test_port_zero_binds_a_free_port(server: HealthServer) -> None:
    assert server.bound_port is not None
    assert server.bound_port > 0


async def test_livez(get: Get) -> None:
    assert await get("/livez") == (200, {"status": "ok"})


async def test_readyz_without_checks_is_ready(get: Get, metrics: Metrics) -> None:
    status, body = await get("/readyz")
    assert status == 200
    assert body == {"status": "ready", "shutting_down": False, "checks": {}}
    assert _ready_gauge(metrics) == 1.0


async def test_readyz_all_checks_pass(server: HealthServer, get: Get, metrics: Metrics) -> None:
    server.add_readiness_check("broker", _true)
    server.add_readiness_check("store", _true)
    status, body = await get("/readyz")
    assert status == 200
    assert body["checks"] == {"broker": True, "store": True}
    assert _ready_gauge(metrics) == 1.0


async def test_readyz_names_the_failing_check(server: HealthServer, get: Get, metrics: Metrics) -> None:
    server.add_readiness_check("broker", _true)
    server.add_readiness_check("store", _false)
    status, body = await get("/readyz")
    assert status == 503
    assert body == {"status": "not_ready", "shutting_down": False, "checks": {"broker": True, "store": False}}
    assert _ready_gauge(metrics) == 0.0


async def test_readyz_recovers_when_the_check_passes_again(server: HealthServer, get: Get, metrics: Metrics) -> None:
    healthy = False

    async def flapping() -> bool:
        return healthy

    server.add_readiness_check("consumers", flapping)
    assert (await get("/readyz"))[0] == 503
    assert _ready_gauge(metrics) == 0.0
    healthy = True
    assert (await get("/readyz"))[0] == 200
    assert _ready_gauge(metrics) == 1.0


async def test_a_raising_check_means_not_ready_not_500(server: HealthServer, get: Get) -> None:
    server.add_readiness_check("broker", _true)
    server.add_readiness_check("store", _raises)
    status, body = await get("/readyz")
    assert status == 503
    assert body["checks"] == {"broker": True, "store": False}


async def test_a_slow_check_times_out_and_means_not_ready(
    server: HealthServer, get: Get, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(observability, "READINESS_CHECK_TIMEOUT_SECONDS", 0.05)
    server.add_readiness_check("broker", _true)
    server.add_readiness_check("store", _hangs)
    loop = asyncio.get_running_loop()
    started = loop.time()
    status, body = await get("/readyz")
    assert loop.time() - started < 5
    assert status == 503
    assert body["checks"] == {"broker": True, "store": False}


async def test_readyz_turns_503_after_mark_shutting_down(server: HealthServer, get: Get, metrics: Metrics) -> None:
    server.add_readiness_check("broker", _true)
    assert (await get("/readyz"))[0] == 200
    server.mark_shutting_down()
    assert _ready_gauge(metrics) == 0.0
    status, body = await get("/readyz")
    assert status == 503
    assert body == {"status": "not_ready", "shutting_down": True, "checks": {"broker": True}}
    # Liveness is unaffected: the process is healthy, just leaving.
    assert (await get("/livez"))[0] == 200


async def test_metrics_endpoint_exposes_the_shared_metrics(get: Get, metrics: Metrics) -> None:
    await get("/readyz")
    metrics.messages_consumed.labels("ns.gdpr.events", "ack").inc()
    status, text = await get("/metrics")
    assert status == 200
    assert "skolsynk_ready 1.0" in text
    assert 'skolsynk_messages_consumed_total{outcome="ack",queue="ns.gdpr.events"} 1.0' in text
    for name in ("skolsynk_messages_published", "skolsynk_consumer_inflight", "skolsynk_outbox_pending"):
        assert name in text


async def test_unknown_path_is_404(get: Get) -> None:
    assert (await get("/nope"))[0] == 404


async def test_stop_closes_the_port(metrics: Metrics) -> None:
    health = HealthServer(host="127.0.0.1", port=0, metrics=metrics)
    try:
        await health.start()
        port = health.bound_port
        async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/livez") as response:
            assert response.status == 200
    finally:
        await health.stop()
    await health.stop()  # idempotent
    with pytest.raises(aiohttp.ClientConnectionError):
        async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/livez"):
            pass


def test_each_metrics_instance_has_its_own_registry() -> None:
    # Several services (or tests) in one process must not collide on metric names.
    first, second = Metrics(), Metrics()
    first.ready.set(1)
    assert second.registry.get_sample_value("skolsynk_ready") == 0.0
