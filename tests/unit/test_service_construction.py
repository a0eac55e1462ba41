"""Building a service opens no connection: the broker and the store are reached only when the app starts
(its Mongo client is a handle until then), so building one in a test or a tool has nothing to clean up."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable

import pytest

from skolsynk.service import ServiceApp
from skolsynk.settings import BrokerSettings, ObservabilitySettings, ServiceSettings, StoreSettings
from skolsynk_services.admin.app import AdminSettings
from skolsynk_services.admin.app import build as build_admin
from skolsynk_services.gdpr.app import GdprSettings
from skolsynk_services.gdpr.app import build as build_gdpr
from skolsynk_services.normaliser.app import NormaliserSettings
from skolsynk_services.normaliser.app import build as build_normaliser
from tests.helpers import wait_for

pytestmark = pytest.mark.unit


class Listener:
    """A TCP port that counts the connections made to it (and answers nothing)."""

    def __init__(self) -> None:
        self.accepted = 0
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self._writers.append(writer)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        for writer in self._writers:
            writer.close()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


@pytest.fixture
async def listener() -> AsyncIterator[Listener]:
    server = Listener()
    try:
        await server.start()
        yield server
    finally:
        await server.stop()


def settings_on(port: int) -> ServiceSettings:
    """Both the broker and the store on ``port``."""
    return ServiceSettings(
        broker=BrokerSettings(amqp_url=f"amqp://guest:guest@127.0.0.1:{port}/", namespace="construction"),
        store=StoreSettings(
            mongodb_url=f"mongodb://127.0.0.1:{port}/?directConnection=true", mongodb_database="construction"
        ),
        observability=ObservabilitySettings(health_host="127.0.0.1", health_port=0),
    )


def plain(settings: ServiceSettings) -> ServiceApp:
    return ServiceApp.create("construction", settings, vendor_ids=["acme"], connector_kinds=["google"])


def normaliser(settings: ServiceSettings) -> ServiceApp:
    return build_normaliser(NormaliserSettings.model_validate(settings.model_dump()))


def gdpr(settings: ServiceSettings) -> ServiceApp:
    return build_gdpr(GdprSettings.model_validate(settings.model_dump()))


def admin(settings: ServiceSettings) -> ServiceApp:
    return build_admin(AdminSettings.model_validate({**settings.model_dump(), "admin_port": 0}))


@pytest.mark.parametrize("build", [plain, normaliser, gdpr, admin], ids=lambda f: f.__name__)
async def test_building_a_service_connects_to_nothing_until_it_starts(
    listener: Listener, build: Callable[[ServiceSettings], ServiceApp]
) -> None:
    tasks, threads = asyncio.all_tasks(), set(threading.enumerate())
    app = build(settings_on(listener.port))
    try:
        app.db["anything"]  # composition code takes collections before the start: still no I/O
        # Nothing runs in the background that could connect later (a task, a monitor thread) ...
        assert asyncio.all_tasks() - tasks == set()
        assert set(threading.enumerate()) - threads == set()
        # ... and nothing connected: a connection of our own, made after the build, is the first one.
        _, probe = await asyncio.open_connection("127.0.0.1", listener.port)
        try:
            await wait_for(lambda: listener.accepted >= 1, timeout=5, what="the probe connection")
            assert listener.accepted == 1
        finally:
            probe.close()

        # What start() does first reaches the same port (so the check above could have seen it).
        await app.mongo.aconnect()
        await wait_for(lambda: listener.accepted >= 2, timeout=5, what="the store's connection")
    finally:
        await app.drain(0.1)
        await app.close()
