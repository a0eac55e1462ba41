"""One process's view of every configured tenant: a started Graph client per tenant, one run at a time
per tenant, the schedule (delta interval, full reconciliation interval) and on-demand runs
(``SyncRequested``)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta

from graph_connector.client import GraphClient, RetryPolicy
from graph_connector.metrics import GraphMetrics
from graph_connector.runs import sync
from graph_connector.state import GraphStateStore, Mode, RunReport, aware, utcnow
from graph_connector.tenants import TenantConfig
from skolsynk.contracts import Envelope, SyncRequested
from skolsynk.logging import get_logger
from skolsynk.messaging import MessageContext, PermanentError, Publisher

log = get_logger(__name__)

#: How often the schedule looks at a tenant's state (at most: the delta interval if shorter).
SCHEDULE_POLL_SECONDS = 30.0


class UnknownTenant(KeyError):
    pass


class Connector:
    def __init__(
        self,
        tenants: list[TenantConfig],
        *,
        publisher: Publisher,
        exchange: str,
        state: GraphStateStore,
        metrics: GraphMetrics | None = None,
        environ: Mapping[str, str] | None = None,
        request_timeout_seconds: float = 30.0,
        retry: RetryPolicy | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.tenants = {tenant.key: tenant for tenant in tenants}
        self.publisher = publisher
        self.exchange = exchange
        self.state = state
        self.metrics = metrics
        self.clock = clock
        self.clients = {
            tenant.key: GraphClient(
                tenant,
                environ=environ,
                request_timeout_seconds=request_timeout_seconds,
                retry=retry,
                on_throttled=metrics.throttle if metrics is not None else None,
            )
            for tenant in tenants
        }
        self._locks = {key: asyncio.Lock() for key in self.tenants}
        self._pending: dict[tuple[str, Mode], bool] = {}
        self._triggered: set[asyncio.Task[None]] = set()
        #: Reports of finished runs, newest last (bounded), for tests and diagnostics.
        self.reports: list[RunReport] = []

    def tenant(self, tenant_id: str, source_id: str) -> TenantConfig:
        tenant = self.tenants.get(f"{tenant_id}:{source_id}")
        if tenant is None:
            raise UnknownTenant(f"{tenant_id}:{source_id}")
        return tenant

    async def start(self) -> None:
        for client in self.clients.values():
            await client.start()

    async def close(self) -> None:
        for task in list(self._triggered):
            task.cancel()
        for task in list(self._triggered):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for client in self.clients.values():
            await client.close()

    async def run(self, tenant: TenantConfig, *, mode: Mode) -> RunReport:
        """One run of ``tenant`` (waits while another run of the same tenant is in progress)."""
        async with self._locks[tenant.key]:
            report = await sync(
                tenant,
                mode=mode,
                client=self.clients[tenant.key],
                publisher=self.publisher,
                exchange=self.exchange,
                state=self.state,
                metrics=self.metrics,
            )
        self.reports = [*self.reports[-99:], report]
        return report

    def trigger(self, tenant: TenantConfig, mode: Mode) -> bool:
        """Run soon, in the background. A request that arrives while the same one is still waiting is
        merged into it; one arriving during a run causes one more run afterwards. False when merged."""
        if self._pending.get((tenant.key, mode)):
            return False
        self._pending[(tenant.key, mode)] = True
        task = asyncio.create_task(self._triggered_run(tenant, mode), name=f"graph-sync:{tenant.key}:{mode}")
        self._triggered.add(task)
        task.add_done_callback(self._triggered.discard)
        return True

    async def _triggered_run(self, tenant: TenantConfig, mode: Mode) -> None:
        async with self._locks[tenant.key]:
            self._pending[(tenant.key, mode)] = False
        try:
            await self.run(tenant, mode=mode)
        except Exception:
            log.exception("graph_requested_run_failed", tenant_id=tenant.tenant_id, source_id=tenant.source_id)

    async def handle_sync_requested(self, envelope: Envelope, context: MessageContext) -> None:
        """``SyncRequested`` from the connector's queue: the envelope names the organiser, the payload
        the source; the run happens in the background (a full run can outlast a handler's budget)."""
        request = SyncRequested.from_envelope(envelope)
        try:
            tenant = self.tenant(envelope.tenant_id or "", request.source_id)
        except UnknownTenant:
            raise PermanentError("no Microsoft source of that id is configured for the tenant") from None
        queued = self.trigger(tenant, request.mode)
        log.info(
            "graph_sync_requested",
            tenant_id=tenant.tenant_id,
            source_id=tenant.source_id,
            mode=request.mode,
            requested_by=request.requested_by,
            merged=not queued,
        )

    async def schedule(self, tenant: TenantConfig, *, poll_seconds: float = SCHEDULE_POLL_SECONDS) -> None:
        """Forever: a full run when the last healthy full run is older than ``full_interval_seconds``
        (or there is none), otherwise a delta run every ``delta_interval_seconds``. The times are kept in
        MongoDB, so a restart does not start everything again."""
        while True:
            try:
                mode = await self.due(tenant)
                if mode is not None:
                    await self.run(tenant, mode=mode)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("graph_scheduled_run_failed", tenant_id=tenant.tenant_id, source_id=tenant.source_id)
            await asyncio.sleep(min(poll_seconds, tenant.delta_interval_seconds))

    async def due(self, tenant: TenantConfig) -> Mode | None:
        doc = await self.state.get(tenant) or {}
        now = self.clock()
        last_full = doc.get("last_full_success_at")
        if (
            not isinstance(last_full, datetime)
            or aware(last_full) + timedelta(seconds=tenant.full_interval_seconds) <= now
        ):
            failed = doc.get("last_full_run") or {}
            finished = failed.get("finished_at")
            # After a failed full run, wait a delta interval before the next attempt.
            if (
                isinstance(finished, datetime)
                and not failed.get("healthy", False)
                and aware(finished) + timedelta(seconds=tenant.delta_interval_seconds) > now
            ):
                return None
            return "full"
        started = [(doc.get(f"last_{m}_run") or {}).get("started_at") for m in ("full", "incremental")]
        latest = max((aware(t) for t in started if isinstance(t, datetime)), default=None)
        if latest is None or latest + timedelta(seconds=tenant.delta_interval_seconds) <= now:
            return "incremental"
        return None
