"""Health and metrics endpoints on their own port, and the metrics every service shares.

``/livez``   200 while the event loop answers (Kubernetes restarts the pod otherwise).
``/readyz``  200 only when every registered readiness check passes (start-up finished: hooks run and
             consumers attached; broker connected, store reachable) and the service is not shutting
             down; 503 with the failing checks named otherwise.
``/metrics`` Prometheus text format from the service's registry.

Every metric a service exposes is listed in ``docs/metrics.md`` (a unit test compares the registries
with it). Labels are low-cardinality: queue, exchange, route templates, outcomes, tenant and vendor
ids, never person data and never a raw URL path.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.aiohttp import make_aiohttp_handler

from skolsynk.http_limits import ClientClosed
from skolsynk.logging import get_logger

log = get_logger(__name__)

ReadinessCheck = Callable[[], Awaitable[bool]]

#: How long one readiness check may take before it counts as failed.
READINESS_CHECK_TIMEOUT_SECONDS = 2.0

#: The ``route`` label of a request that matched no route (a 404 or 405): never the raw path, which
#: is chosen by the client and would make the label unbounded.
UNMATCHED_ROUTE = "(unmatched)"

HTTP_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
#: A store command's time, from the driver sending it to the reply: a point read on an idle server is
#: well under a millisecond, a stall of the server (every service's commands at once) seconds.
STORE_DURATION_BUCKETS = (0.001, 0.005, 0.025, 0.1, 0.5, 1, 2.5, 10)


@dataclass
class Metrics:
    """The shared RED metrics. One instance per process, on the registry the health server exposes.

    Labels are low-cardinality: queue/exchange names and outcomes, never tenant-supplied values or
    personal data."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        # The standard process_* (CPU, memory, file descriptors) and python_* (GC, version) series.
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)
        self.messages_consumed = Counter(
            "skolsynk_messages_consumed",
            "Deliveries handled, by queue and outcome (ack, duplicate, retry, dead_letter, requeue_shutdown).",
            ["queue", "outcome"],
            registry=r,
        )
        self.message_processing_seconds = Histogram(
            "skolsynk_message_processing_seconds",
            "Handler duration per delivery.",
            ["queue"],
            registry=r,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
        )
        self.message_age_seconds = Histogram(
            "skolsynk_message_age_seconds",
            "Time from a message's production (envelope produced_at) to the start of its handling, retries "
            "included: how far behind a queue's consumers are.",
            ["queue"],
            registry=r,
            buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 24 * 3600),
        )
        self.consumer_inflight = Gauge(
            "skolsynk_consumer_inflight", "Deliveries being handled now.", ["queue"], registry=r
        )
        self.messages_published = Counter(
            "skolsynk_messages_published",
            "Publishes by exchange and outcome (confirmed, returned, nacked, error).",
            ["exchange", "outcome"],
            registry=r,
        )
        self.publish_confirm_seconds = Histogram(
            "skolsynk_publish_confirm_seconds",
            "Time from publish to broker confirm, retries across reconnects included.",
            ["exchange"],
            registry=r,
        )
        self.outbox_pending = Gauge(
            "skolsynk_outbox_pending", "Outbox entries not yet confirmed by the broker.", registry=r
        )
        self.outbox_relayed = Counter(
            "skolsynk_outbox_relayed", "Outbox entries published and marked sent.", registry=r
        )
        self.broker_reconnects = Counter(
            "skolsynk_broker_reconnects", "Times the broker connection was re-established.", registry=r
        )
        self.ready = Gauge("skolsynk_ready", "1 when /readyz answers 200.", registry=r)
        self.http_requests = Counter(
            "skolsynk_http_requests",
            "HTTP requests served by a service's API, by server, route template, method and status class.",
            ["server", "route", "method", "status_class"],
            registry=r,
        )
        self.http_request_seconds = Histogram(
            "skolsynk_http_request_seconds",
            "HTTP request duration (until the handler returned its response), by server, route template and method.",
            ["server", "route", "method"],
            registry=r,
            buckets=HTTP_DURATION_BUCKETS,
        )
        self.http_inflight = Gauge(
            "skolsynk_http_requests_inflight", "HTTP requests being handled now.", ["server"], registry=r
        )
        # Store work, counted by the command listener on the service's Mongo client
        # (skolsynk.storage.mongo.StoreWorkCounter): machine-independent, so a benchmark can say how many
        # round trips and documents a change costs.
        self.store_commands = Counter(
            "skolsynk_store_commands",
            "Commands sent to MongoDB (round trips), by command name and collection; the driver's own "
            "monitoring (hello, ping) is not counted.",
            ["command", "collection"],
            registry=r,
        )
        self.store_documents_read = Counter(
            "skolsynk_store_documents_read",
            "Documents MongoDB returned to this service (cursor batches, findAndModify values), by collection.",
            ["collection"],
            registry=r,
        )
        self.store_documents_written = Counter(
            "skolsynk_store_documents_written",
            "Documents inserted, matched by updates or upserted, or deleted (the n of the reply), by collection.",
            ["collection"],
            registry=r,
        )
        self.store_command_seconds = Histogram(
            "skolsynk_store_command_seconds",
            "Time from sending a command to MongoDB to its reply (or failure), by command name and collection.",
            ["command", "collection"],
            registry=r,
            buckets=STORE_DURATION_BUCKETS,
        )


def route_template(request: web.BaseRequest) -> str:
    """The matched route's template (``/Users/{id}``), or :data:`UNMATCHED_ROUTE`."""
    match_info = getattr(request, "match_info", None)
    route = getattr(match_info, "route", None)
    resource = getattr(route, "resource", None)
    if resource is None or getattr(match_info, "http_exception", None) is not None:
        return UNMATCHED_ROUTE
    return str(resource.canonical)


def status_class(status: int) -> str:
    return f"{status // 100}xx" if 100 <= status < 600 else "other"


_KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def http_metrics_middleware(metrics: Metrics, *, server: str) -> Callable[..., Awaitable[web.StreamResponse]]:
    """aiohttp middleware recording RED metrics of an API (``ServiceApp.add_web_app`` installs it
    outermost, so it sees the final status of every request, errors included)."""

    @web.middleware
    async def record(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        method = request.method if request.method in _KNOWN_METHODS else "OTHER"
        started = time.monotonic()
        outcome = "5xx"  # an exception other than an HTTP one becomes a 500
        metrics.http_inflight.labels(server).inc()
        try:
            response = await handler(request)
            outcome = status_class(response.status)
            return response
        except web.HTTPException as error:
            outcome = status_class(error.status)
            raise
        except asyncio.CancelledError:
            outcome = "cancelled"  # the server is stopping, or the client went away
            raise
        except ClientClosed:
            outcome = "client_closed"  # went away mid-body: not a server error, nobody to answer
            response = web.Response(status=400)
            response.force_close()
            return response
        finally:
            route = route_template(request)
            metrics.http_inflight.labels(server).dec()
            metrics.http_requests.labels(server, route, method, outcome).inc()
            metrics.http_request_seconds.labels(server, route, method).observe(time.monotonic() - started)

    return record


class HealthServer:
    """aiohttp server for /livez, /readyz and /metrics on its own port."""

    def __init__(self, *, host: str, port: int, metrics: Metrics) -> None:
        self._host = host
        self._port = port
        self._metrics = metrics
        self._checks: dict[str, ReadinessCheck] = {}
        self._shutting_down = False
        self._runner: web.AppRunner | None = None
        self.bound_port: int | None = None

    def add_readiness_check(self, name: str, check: ReadinessCheck) -> None:
        self._checks[name] = check

    def mark_shutting_down(self) -> None:
        """From now on /readyz answers 503, so no new work is routed here."""
        self._shutting_down = True
        self._metrics.ready.set(0)

    async def _run_check(self, check: ReadinessCheck) -> bool:
        try:
            async with asyncio.timeout(READINESS_CHECK_TIMEOUT_SECONDS):
                return await check()
        except Exception:  # a broken check means "not ready", never a 500
            log.warning("readiness_check_error", exc_info=True)
            return False

    async def readiness(self) -> dict[str, bool]:
        names = list(self._checks)
        results = await asyncio.gather(*(self._run_check(self._checks[n]) for n in names))
        return dict(zip(names, results, strict=True))

    async def _livez(self, _request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def _readyz(self, _request: web.Request) -> web.Response:
        checks = await self.readiness()
        ready = not self._shutting_down and all(checks.values())
        self._metrics.ready.set(1 if ready else 0)
        body = {"status": "ready" if ready else "not_ready", "shutting_down": self._shutting_down, "checks": checks}
        return web.json_response(body, status=200 if ready else 503)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/livez", self._livez)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", make_aiohttp_handler(self._metrics.registry))
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self.bound_port = sockets[0].getsockname()[1] if sockets else self._port
        log.info("health_server_started", port=self.bound_port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
