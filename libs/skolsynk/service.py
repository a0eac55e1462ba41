"""The composition kit every service uses: one broker connection, one publisher, one Mongo client,
the outbox relay, consumers, background tasks and the health server, started and stopped in order.

A service's ``app.py`` builds a :class:`ServiceApp`, adds its consumers and background tasks, and
hands it to :func:`skolsynk.lifecycle.run_until_stopped`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping
from typing import Any

import stamina
from aio_pika.exceptions import CONNECTION_EXCEPTIONS
from aiohttp import web
from pymongo.errors import PyMongoError

from skolsynk.http_limits import body_limits, bound_connections, runner_options
from skolsynk.logging import get_logger
from skolsynk.messaging import (
    Broker,
    Consumer,
    Handler,
    Inbox,
    Outbox,
    OutboxRelay,
    Publisher,
    Topology,
    queue_name,
    topology_for,
)
from skolsynk.observability import HealthServer, Metrics, http_metrics_middleware
from skolsynk.proxies import TrustedProxies
from skolsynk.settings import ServiceSettings
from skolsynk.storage import Database, IndexSpec, MongoClient, RetiredIndex, create_client, ensure_indexes, ping
from skolsynk.storage.mongo import StoreWorkCounter

log = get_logger(__name__)

#: How long start-up waits for RabbitMQ and MongoDB before giving up (the orchestrator restarts us).
STARTUP_CONNECT_TIMEOUT_SECONDS = 60.0

BackgroundTask = Callable[[], Coroutine[Any, Any, None]]


class ServiceApp:
    """A service's process. Building one opens no connection: the broker connection, the Mongo client's
    connections (PyMongo's async client is a handle that connects when opened), the health server and
    the APIs all open in :meth:`start`, so composition code may take ``app.db`` and ``app.mongo`` before.
    :meth:`drain` then :meth:`close` release whatever it opened, also after a failed or partial start."""

    def __init__(self, name: str, settings: ServiceSettings, topology: Topology) -> None:
        self.name = name
        self.settings = settings
        self.topology = topology
        self.metrics = Metrics()
        self.health = HealthServer(
            host=settings.observability.health_host,
            port=settings.observability.health_port,
            metrics=self.metrics,
        )
        self.broker = Broker(settings.broker, topology, self.metrics, name=name)
        self.publisher = Publisher(self.broker, self.metrics, timeout_seconds=settings.broker.publish_timeout_seconds)
        self.store_work = StoreWorkCounter(
            self.metrics.store_commands,
            self.metrics.store_documents_read,
            self.metrics.store_documents_written,
            self.metrics.store_command_seconds,
        )
        #: Not connected yet: :meth:`start` opens it (no I/O here).
        self.mongo: MongoClient = create_client(settings.store, app_name=name, listeners=[self.store_work])
        self.db: Database = self.mongo[settings.store.mongodb_database]
        self.outbox = Outbox(self.db)
        self.relay = OutboxRelay(self.outbox, self.publisher, self.metrics)
        self.consumers: list[Consumer] = []
        self._indexes: list[IndexSpec] = [
            *Inbox.index_specs(settings.store.inbox_ttl_seconds),
            *Outbox.index_specs(settings.store.outbox_retention_seconds),
        ]
        self._retired_indexes: list[RetiredIndex] = []
        self._background: list[tuple[str, BackgroundTask]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False
        #: Service-specific objects a test or a tool may need (the service's handlers, ...).
        self.extensions: dict[str, Any] = {}
        self._web_apps: list[tuple[web.Application, str, int, ssl.SSLContext | None]] = []
        self._startup: list[Callable[[], Awaitable[None]]] = []
        self._shutdown: list[Callable[[], Awaitable[None]]] = []
        self._web_runners: list[web.AppRunner] = []
        self.web_ports: list[int] = []
        #: Set when :meth:`start` has run to the end (hooks run, consumers attached, APIs listening):
        #: until then ``/readyz`` answers 503, so nothing is routed to a service still starting.
        self.started = asyncio.Event()

    @classmethod
    def create(
        cls,
        name: str,
        settings: ServiceSettings,
        *,
        vendor_ids: Iterable[str] = (),
        connector_kinds: Iterable[str] = (),
    ) -> ServiceApp:
        """An app on the system topology (every service declares all of it, so start order does not matter),
        plus the queues of the given vendors and source connectors."""
        topology = topology_for(settings.broker, vendor_ids=vendor_ids, connector_kinds=connector_kinds)
        return cls(name, settings, topology)

    def queue_name(self, service: str, purpose: str) -> str:
        return queue_name(self.settings.broker.namespace, service, purpose)

    def add_indexes(self, specs: Iterable[IndexSpec], *, retired: Iterable[RetiredIndex] = ()) -> None:
        """Indexes to make at start-up, and ``retired`` ones (of an earlier version) to drop."""
        self._indexes.extend(specs)
        self._retired_indexes.extend(retired)

    def add_consumer(
        self, queue_name: str, handler: Handler, *, idempotent: bool = True, timeout_seconds: float | None = None
    ) -> Consumer:
        """Consume a work queue of the topology. ``idempotent`` (default) runs the handler in a
        transaction with the inbox entry, so a redelivered message has its effect once.
        ``timeout_seconds`` replaces ``SKOLSYNK_HANDLER_TIMEOUT_SECONDS`` for a handler known to be long
        (keep it under RabbitMQ's consumer acknowledgement timeout, 30 minutes by default)."""
        broker = self.settings.broker
        consumer = Consumer(
            broker=self.broker,
            publisher=self.publisher,
            topology=self.topology,
            queue=self.topology.queue(queue_name),
            handler=handler,
            metrics=self.metrics,
            prefetch=broker.prefetch,
            max_attempts=broker.max_attempts,
            handler_timeout_seconds=timeout_seconds or broker.handler_timeout_seconds,
            mongo=self.mongo if idempotent else None,
            inbox=Inbox(
                self.db, consumer=f"{self.name}:{queue_name}", ttl_seconds=self.settings.store.inbox_ttl_seconds
            )
            if idempotent
            else None,
            outbox=self.outbox,
        )
        self.consumers.append(consumer)
        return consumer

    def add_web_app(
        self,
        web_app: web.Application,
        *,
        host: str,
        port: int,
        ssl_context: ssl.SSLContext | None = None,
        server: str = "api",
        route_body_caps: Mapping[str, int] | None = None,
        proxies: TrustedProxies | None = None,
    ) -> None:
        """Serve an HTTP application (an API) next to the health port, over TLS with ``ssl_context``.
        It starts after the broker and the store are connected and stops first at shutdown: in-flight
        requests finish, new ones are refused. Its requests are counted and timed by route template
        (``skolsynk_http_requests_total``, ``skolsynk_http_request_seconds``), labelled ``server``, and
        hardened (:mod:`skolsynk.http_limits`: head and body timeouts, body caps, here and per route
        template in ``route_body_caps``, bounded connections). Behind a TLS-terminating proxy, ``proxies``
        (:mod:`skolsynk.proxies`) gives every middleware and handler the browser's scheme, host and address."""
        web_app.middlewares.insert(0, http_metrics_middleware(self.metrics, server=server))
        web_app.middlewares.insert(1, body_limits(self.settings.http, route_caps=route_body_caps))
        if proxies is not None:  # first: a request is cloned before anything reads its body
            web_app.middlewares.insert(0, proxies.middleware())
        self._web_apps.append((web_app, host, port, ssl_context))

    def add_startup(self, hook: Callable[[], Awaitable[None]]) -> None:
        """Runs once at start, after the broker and the store are connected and before any consumer
        starts (prepare clients, declare extra queues, publish configuration)."""
        self._startup.append(hook)

    def add_shutdown(self, hook: Callable[[], Awaitable[None]]) -> None:
        """Runs at close, after the drain and before the connections close."""
        self._shutdown.append(hook)

    def add_background(self, name: str, task: BackgroundTask) -> None:
        """A long-running coroutine (a scheduler, a poller); cancelled at shutdown after the drain."""
        self._background.append((name, task))

    async def _mongo_ready(self) -> bool:
        return await ping(self.mongo)

    async def _started(self) -> bool:
        return self.started.is_set()

    async def start(self) -> None:
        """Connect (the store, then the broker), create indexes, run the start-up hooks, start the relay,
        the consumers, the background tasks and the APIs, in that order. ``/readyz`` answers from the
        start (503) and turns 200 only once all of it has run (the ``started`` check)."""
        self.health.add_readiness_check("started", self._started)
        await self.health.start()
        self.health.add_readiness_check("mongodb", self._mongo_ready)
        self.health.add_readiness_check("broker", self.broker.ready)
        async for attempt in stamina.retry_context(
            on=(PyMongoError, OSError, ConnectionError, TimeoutError),
            attempts=None,
            timeout=STARTUP_CONNECT_TIMEOUT_SECONDS,
            wait_max=5.0,
        ):
            with attempt:
                await self.mongo.aconnect()
                await ensure_indexes(self.db, self._indexes, self._retired_indexes)
        async for attempt in stamina.retry_context(
            on=CONNECTION_EXCEPTIONS, attempts=None, timeout=STARTUP_CONNECT_TIMEOUT_SECONDS, wait_max=5.0
        ):
            with attempt:
                await self.broker.connect(timeout=STARTUP_CONNECT_TIMEOUT_SECONDS)
        await self.publisher.start()
        for hook in self._startup:
            await hook()
        self._tasks.append(asyncio.create_task(self.relay.run(), name=f"{self.name}:outbox-relay"))
        for consumer in self.consumers:
            await consumer.start()
            self.health.add_readiness_check(f"consumer:{consumer.spec.name}", consumer.ready)
        for name, task in self._background:
            self._tasks.append(asyncio.create_task(task(), name=f"{self.name}:{name}"))
        for web_app, host, port, ssl_context in self._web_apps:
            runner = web.AppRunner(
                web_app,
                access_log=None,
                shutdown_timeout=self.settings.lifecycle.drain_timeout_seconds,
                **runner_options(self.settings.http),
            )
            await runner.setup()
            assert runner.server is not None
            bound_connections(runner.server, self.settings.http.max_connections)
            site = web.TCPSite(runner, host, port, ssl_context=ssl_context)
            await site.start()
            self._web_runners.append(runner)
            sockets = getattr(site._server, "sockets", None) or []
            self.web_ports.append(sockets[0].getsockname()[1] if sockets else port)
            log.info("web_app_started", port=self.web_ports[-1])
        self.started.set()

    def mark_shutting_down(self) -> None:
        self.health.mark_shutting_down()

    async def drain(self, timeout: float) -> None:
        runners, self._web_runners = self._web_runners, []
        await asyncio.gather(
            *(consumer.stop(timeout) for consumer in self.consumers), *(runner.cleanup() for runner in runners)
        )

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.relay.stop()
        for task in self._tasks:
            if task.get_name().endswith(":outbox-relay"):
                continue
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        for hook in self._shutdown:
            try:
                await hook()
            except Exception:
                log.exception("shutdown_hook_failed")
        await self.publisher.close()
        await self.broker.close()
        await self.mongo.close()
        await self.health.stop()
