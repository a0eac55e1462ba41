"""Fixtures for connected and end-to-end tests: the real RabbitMQ and the Mongo wire server.

Isolation: the test session gets its own RabbitMQ vhost (deleted at the end) and its own Mongo wire
server process (in-memory); each test gets its own namespace (exchange/queue prefix) and database.
A test (or module) marked ``@pytest.mark.queues(...)`` declares only the system work queues it names
(see :func:`declare_only_the_queues_used`).

``SKOLSYNK_TEST_MONGODB_URL`` points the tests at an existing server (a real replica set) instead of
starting one; ``AMQP_URL`` at another broker (without rabbitmqctl the tests share its vhost and rely
on namespaces).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from pymongo import AsyncMongoClient

import skolsynk.service
from skolsynk.logging import redact_personal_data
from skolsynk.messaging import Topology
from skolsynk.messaging.vhosts import amqp_url_with_vhost, amqp_user
from skolsynk.settings import (
    DEFAULT_AMQP_URL,
    BrokerSettings,
    LifecycleSettings,
    ObservabilitySettings,
    ServiceSettings,
    StoreSettings,
)
from skolsynk.storage import MongoClient
from skolsynk_services.dispatcher.onboarding import delete_vendor_vhost, prepare_vendor_vhost
from skolsynk_testkit.devstack import (
    DevStackError,
    create_vhost,
    delete_vhost,
    ensure_rabbitmq,
    start_mongo_wire_server,
)
from tests.helpers import delete_topology

REPO_ROOT = Path(__file__).resolve().parent.parent

# In-process services log through structlog's defaults: keep them, but with the personal-data net and
# plain tracebacks (a pretty traceback with every local variable takes seconds to render and blocks
# the event loop the services share with the test).
structlog.configure(
    processors=[
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.StackInfoRenderer(),
        structlog.dev.set_exc_info,
        structlog.processors.TimeStamper(fmt="%Y-%m-%d %H:%M:%S", utc=True),
        redact_personal_data,
        structlog.dev.ConsoleRenderer(colors=False, exception_formatter=structlog.dev.plain_traceback),
    ]
)


@pytest.fixture(autouse=True)
def declare_only_the_queues_used(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Under ``@pytest.mark.queues("connectors.sync-requests", ...)`` every :class:`ServiceApp` the test builds
    (``ServiceApp.create``, so every service's ``build``) gets the system topology narrowed to the named work
    queues, plus the queues of the vendors and connectors it is built for, instead of all of them: each
    work queue is four quorum queues (with its DLQ and retry ladder) that the broker creates and deletes
    per test. A queue left out fails loudly: consuming it raises KeyError, publishing to it
    UnroutableMessage, a depth check NOT_FOUND. Unmarked tests (and the topology tests) declare it all."""
    marker = request.node.get_closest_marker("queues")
    if marker is None:
        return
    used: tuple[str, ...] = marker.args
    whole = skolsynk.service.topology_for

    def narrowed(broker: BrokerSettings, **queues_for: Any) -> Topology:
        topology = whole(broker, **queues_for)
        system = {spec.name for spec in whole(broker).queues}
        keep = {f"{broker.namespace}.{name}" for name in used}
        if unknown := keep - system:
            raise ValueError(f"@pytest.mark.queues names no system work queue: {sorted(unknown)}")
        queues = tuple(spec for spec in topology.queues if spec.name in keep or spec.name not in system)
        return Topology(topology.namespace, dict(topology.exchanges), queues)

    monkeypatch.setattr(skolsynk.service, "topology_for", narrowed)


@pytest.fixture(scope="session")
def mongo_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    external = os.environ.get("SKOLSYNK_TEST_MONGODB_URL")
    if external:
        yield external
        return
    server = start_mongo_wire_server(log_path=tmp_path_factory.mktemp("mongo") / "secantusd.log")
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def amqp_base_url() -> str:
    url = os.environ.get("AMQP_URL", DEFAULT_AMQP_URL)
    if "127.0.0.1" in url or "localhost" in url:
        ensure_rabbitmq()
    return url


@pytest.fixture(scope="session")
def rabbitmq_vhost(amqp_base_url: str) -> Iterator[str | None]:
    if shutil.which("rabbitmqctl") is None:
        yield None
        return
    vhost = f"skolsynk-test-{uuid.uuid4().hex[:8]}"
    try:
        create_vhost(vhost)
    except BaseException:
        # A create that failed half-way or timed out may still have made the vhost: remove it.
        with contextlib.suppress(DevStackError, subprocess.SubprocessError):
            delete_vhost(vhost)
        raise
    try:
        yield vhost
    finally:
        delete_vhost(vhost)


@pytest.fixture(scope="session")
def amqp_url(amqp_base_url: str, rabbitmq_vhost: str | None) -> str:
    return amqp_url_with_vhost(amqp_base_url, rabbitmq_vhost) if rabbitmq_vhost else amqp_base_url


@pytest.fixture
def namespace() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
def settings(amqp_url: str, mongo_url: str, namespace: str) -> ServiceSettings:
    """Service settings for one test: short retry delays, small budgets, a free health port."""
    return ServiceSettings(
        broker=BrokerSettings(
            amqp_url=amqp_url,
            namespace=namespace,
            prefetch=20,
            delivery_limit=5,
            max_attempts=3,
            retry_delays_seconds=(0.3, 0.6),
            handler_timeout_seconds=10,
            publish_timeout_seconds=30,
        ),
        store=StoreSettings(mongodb_url=mongo_url, mongodb_database=f"test_{namespace}"),
        observability=ObservabilitySettings(health_host="127.0.0.1", health_port=0, log_format="console"),
        lifecycle=LifecycleSettings(readiness_grace_seconds=0, drain_timeout_seconds=2, close_timeout_seconds=5),
    )


@pytest.fixture
async def vendor_vhosts(
    rabbitmq_vhost: str | None, settings: ServiceSettings
) -> AsyncIterator[Callable[[str], Awaitable[str]]]:
    """``await vendor_vhosts(vendor_id)``: the queue vendor's own vhost in the test's namespace (where the
    dispatcher puts its feeds, docs/decisions.md #23), made as onboarding makes it for the dispatcher's user;
    returns the dispatcher's URL pointing at it. Unique to the test (its namespace), deleted afterwards."""
    if rabbitmq_vhost is None:
        pytest.skip("needs rabbitmqctl to create the vendors' vhosts")
    url = settings.broker.amqp_url.get_secret_value()
    namespace = settings.broker.namespace
    made: list[str] = []

    async def make(vendor_id: str) -> str:
        made.append(vendor_id)
        vhost = await prepare_vendor_vhost(namespace, vendor_id, dispatcher_user=amqp_user(url))
        return amqp_url_with_vhost(url, vhost)

    try:
        yield make
    finally:
        for vendor_id in made:
            await delete_vendor_vhost(namespace, vendor_id)


@pytest.fixture
async def mongo(mongo_url: str, settings: ServiceSettings) -> AsyncIterator[MongoClient]:
    """A client for assertions; drops the test's database afterwards."""
    client: MongoClient = AsyncMongoClient(mongo_url, tz_aware=True)
    try:
        yield client
    finally:
        await client.drop_database(settings.store.mongodb_database)
        await client.close()


@pytest.fixture
async def make_app(settings: ServiceSettings) -> AsyncIterator[object]:
    """Build ServiceApps on the test's settings; every app built is drained and closed afterwards."""
    from skolsynk.service import ServiceApp

    apps: list[ServiceApp] = []

    def factory(name: str = "test-service", *, vendor_ids: tuple[str, ...] = ()) -> ServiceApp:
        app = ServiceApp.create(name, settings, vendor_ids=vendor_ids)
        apps.append(app)
        return app

    yield factory
    for app in apps:
        await app.drain(1.0)
    for app in apps:
        await app.close()
    for app in apps:
        await delete_topology(settings.broker.amqp_url.get_secret_value(), app.topology)
    client: MongoClient = AsyncMongoClient(settings.store.mongodb_url.get_secret_value())
    await client.drop_database(settings.store.mongodb_database)
    await client.close()
