"""One process's view of every configured tenant: a started Graph client per tenant, one run at a time
per tenant, the schedule (delta interval, full reconciliation interval) and on-demand runs
(``SyncRequested``); the plumbing is :class:`skolsynk.connectors.scheduling.SourceConnector`'s."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime

from skolsynk.connectors.scheduling import SourceConnector, due_mode
from skolsynk.contracts import Envelope, SyncRequested
from skolsynk.logging import get_logger
from skolsynk.messaging import MessageContext, Publisher
from skolsynk_services.graph_connector.client import GraphClient, RetryPolicy
from skolsynk_services.graph_connector.metrics import GraphMetrics
from skolsynk_services.graph_connector.runs import sync
from skolsynk_services.graph_connector.state import GraphStateStore, Mode, RunReport, utcnow
from skolsynk_services.graph_connector.tenants import TenantConfig

log = get_logger(__name__)


class Connector(SourceConnector[TenantConfig, GraphClient, Mode, RunReport]):
    triggered_run_failed = "graph_requested_run_failed"
    scheduled_run_failed = "graph_scheduled_run_failed"
    task_prefix = "graph-sync"
    unknown_source = "no Microsoft source of that id is configured for the tenant"
    state: GraphStateStore

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
        clients = {
            tenant.key: GraphClient(
                tenant,
                environ=environ,
                request_timeout_seconds=request_timeout_seconds,
                retry=retry,
                on_throttled=metrics.throttle if metrics is not None else None,
            )
            for tenant in tenants
        }
        super().__init__(tenants, clients, publisher=publisher, exchange=exchange, state=state, clock=clock)
        self.metrics = metrics

    async def _run(self, source: TenantConfig, request: Mode) -> RunReport:
        return await sync(
            source,
            mode=request,
            client=self.clients[source.key],
            publisher=self.publisher,
            exchange=self.exchange,
            state=self.state,
            metrics=self.metrics,
        )

    async def run(self, tenant: TenantConfig, *, mode: Mode) -> RunReport:
        """One run of ``tenant`` (waits while another run of the same tenant is in progress)."""
        return await self.run_now(tenant, mode)

    def trigger(self, tenant: TenantConfig, mode: Mode) -> bool:
        """Run soon, in the background. A request that arrives while the same one (tenant and mode) is still
        waiting is merged into it; one arriving during a run causes one more run afterwards. False when merged."""
        return self.run_soon(tenant, mode)

    def _slot(self, source: TenantConfig, request: Mode) -> str:
        return f"{source.key}:{request}"

    async def handle_sync_requested(self, envelope: Envelope, context: MessageContext) -> None:
        """``SyncRequested`` from the connector's queue: the envelope names the organiser, the payload
        the source; the run happens in the background (a full run can outlast a handler's budget)."""
        request = SyncRequested.from_envelope(envelope)
        tenant = self.requested_source(envelope.tenant_id or "", request.source_id)
        queued = self.trigger(tenant, request.mode)
        log.info(
            "graph_sync_requested",
            tenant_id=tenant.tenant_id,
            source_id=tenant.source_id,
            mode=request.mode,
            requested_by=request.requested_by,
            merged=not queued,
        )

    def _poll_interval(self, source: TenantConfig) -> float:
        return source.delta_interval_seconds

    async def _due(self, source: TenantConfig) -> Mode | None:
        return await self.due(source)

    async def due(self, tenant: TenantConfig) -> Mode | None:
        """A full run when the last healthy full run is older than ``full_interval_seconds`` (or there is
        none; after a failed one, a delta interval later), otherwise a delta run every
        ``delta_interval_seconds``."""
        return due_mode(
            await self.state.get(tenant) or {},
            self.clock(),
            full_interval_seconds=tenant.full_interval_seconds,
            failed_retry_seconds=tenant.delta_interval_seconds,
            incremental_interval_seconds=tenant.delta_interval_seconds,
        )
