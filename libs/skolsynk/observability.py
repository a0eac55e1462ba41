"""Health and metrics endpoints on their own port, and the metrics every service shares.

``/livez``   200 while the event loop answers (Kubernetes restarts the pod otherwise).
``/readyz``  200 only when every registered readiness check passes (broker connected, store reachable,
             consumers attached) and the service is not shutting down; 503 with the failing checks
             named otherwise.
``/metrics`` Prometheus text format from the service's registry.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.aiohttp import make_aiohttp_handler

from skolsynk.logging import get_logger

log = get_logger(__name__)

ReadinessCheck = Callable[[], Awaitable[bool]]

#: How long one readiness check may take before it counts as failed.
READINESS_CHECK_TIMEOUT_SECONDS = 2.0


@dataclass
class Metrics:
    """The shared RED metrics. One instance per process, on the registry the health server exposes.

    Labels are low-cardinality: queue/exchange names and outcomes, never tenant-supplied values or
    personal data."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
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
