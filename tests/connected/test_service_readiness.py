"""A service is ready only once it has started: ``/readyz`` answers 503 while its start-up hooks run
(before its consumers are attached), 200 afterwards; and its /metrics count its store work."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from skolsynk.contracts import Envelope
from skolsynk.messaging import MessageContext
from skolsynk.service import ServiceApp

pytestmark = [pytest.mark.connected, pytest.mark.queues("connectors.sync-requests")]


async def _get(port: int, path: str) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session,
        session.get(f"http://127.0.0.1:{port}{path}") as response,
    ):
        if response.content_type == "application/json":
            return response.status, await response.json()
        return response.status, await response.text()


async def test_readyz_is_503_until_the_start_up_hooks_and_consumers_have_run(
    make_app: Callable[..., ServiceApp],
) -> None:
    app = make_app("readiness-test")
    hook_running = asyncio.Event()
    release_hook = asyncio.Event()

    async def slow_hook() -> None:
        hook_running.set()
        await release_hook.wait()

    async def handler(envelope: Envelope, context: MessageContext) -> None:
        return None

    app.add_startup(slow_hook)
    consumer = app.add_consumer(app.queue_name("connectors", "sync-requests"), handler)
    starting = asyncio.create_task(app.start())
    try:
        async with asyncio.timeout(30):
            await hook_running.wait()
        assert app.health.bound_port is not None
        # Broker and store are connected by now; the hook has not returned, no consumer is attached.
        status, body = await _get(app.health.bound_port, "/readyz")
        assert status == 503
        assert body["checks"]["started"] is False
        assert body["checks"]["mongodb"] is True
        assert not app.started.is_set()
        assert not await consumer.ready()
    finally:
        release_hook.set()
        async with asyncio.timeout(30):
            await starting
    assert app.started.is_set()
    status, body = await _get(app.health.bound_port, "/readyz")
    assert status == 200, body
    assert body["checks"]["started"] is True
    assert body["checks"][f"consumer:{consumer.spec.name}"] is True

    # The service's own store work (indexes at start-up) is counted on its /metrics.
    status, text = await _get(app.health.bound_port, "/metrics")
    assert status == 200
    assert 'skolsynk_store_commands_total{collection="inbox",command="createIndexes"}' in text
    assert 'command="ping"' not in text
