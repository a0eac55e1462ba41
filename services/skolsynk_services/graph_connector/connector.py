"""Every configured Microsoft 365 tenant in one process (:class:`GraphConnector`): a started Graph client per
source, one run at a time per source, the schedule (delta interval, full reconciliation interval) and
on-demand runs (``SyncRequested``); the plumbing is :class:`skolsynk.connectors.scheduling.SourceConnector`'s."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime

from pydantic import SecretStr

from skolsynk.connectors.config import ConfigurationError
from skolsynk.connectors.scheduling import SourceConnector, due_mode
from skolsynk.connectors.sources.microsoft import SourceConfig
from skolsynk.contracts import SyncRequested
from skolsynk.logging import get_logger
from skolsynk.messaging import Publisher
from skolsynk_services.graph_connector.client import GraphClient, RetryPolicy
from skolsynk_services.graph_connector.metrics import GraphMetrics
from skolsynk_services.graph_connector.runs import Mode, RunReport, SyncStateStore, run_once, utcnow

log = get_logger(__name__)


@dataclass(frozen=True)
class InstallationApp:
    """skolsynk's multi-tenant app registration: the sources without a client id of their own read with it,
    in each organiser's tenant, once the organiser's admin has consented."""

    client_id: str
    client_secret: SecretStr

    @classmethod
    def of(cls, client_id: str | None, client_secret: SecretStr | None) -> InstallationApp | None:
        if client_id is None:
            return None
        if client_secret is None or not client_secret.get_secret_value():
            raise ConfigurationError("SKOLSYNK_GRAPH_APP_CLIENT_ID needs SKOLSYNK_GRAPH_APP_CLIENT_SECRET")
        return cls(client_id, client_secret)


class GraphConnector(SourceConnector[SourceConfig, GraphClient, Mode, RunReport]):
    """The runs of every source, each asked for in a mode (``full`` or ``incremental``: delta)."""

    sync_requested = "graph_sync_requested"
    triggered_run_failed = "graph_requested_run_failed"
    scheduled_run_failed = "graph_scheduled_run_failed"
    task_prefix = "graph-sync"
    unknown_source = "no Microsoft source of that id is configured for the tenant"
    state: SyncStateStore

    def __init__(
        self,
        sources: list[SourceConfig],
        *,
        publisher: Publisher,
        exchange: str,
        state: SyncStateStore,
        metrics: GraphMetrics | None = None,
        scheduling: bool = False,
        app: InstallationApp | None = None,
        environ: Mapping[str, str] | None = None,
        request_timeout_seconds: float = 30.0,
        retry: RetryPolicy | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.metrics = metrics
        self.app = app
        self.environ = environ
        self.request_timeout_seconds = request_timeout_seconds
        self.retry = retry
        super().__init__(
            sources, publisher=publisher, exchange=exchange, state=state, scheduling=scheduling, clock=clock
        )

    def _client(self, source: SourceConfig) -> GraphClient:
        if source.uses_installation_app:
            if self.app is None:
                raise ConfigurationError(
                    "the source has no client id of its own and this installation has no multi-tenant app "
                    "(SKOLSYNK_GRAPH_APP_CLIENT_ID)"
                )
            # The client reads with the installation's app in the organiser's tenant; the source stays as saved.
            source = source.model_copy(
                update={"client_id": self.app.client_id, "client_secret": self.app.client_secret}
            )
        return GraphClient(
            source,
            environ=self.environ,
            request_timeout_seconds=self.request_timeout_seconds,
            retry=self.retry,
            on_throttled=self.metrics.throttle if self.metrics is not None else None,
        )

    async def _probe(self, source: SourceConfig, client: GraphClient) -> tuple[dict[str, int], bool]:
        """Every school, and the first page of education users."""
        schools = await client.list_all("education/schools", {"$select": "id"})
        pages = client.pages("education/users", {"$top": str(source.page_size), "$select": "id"})
        users = await anext(pages)
        try:
            await anext(pages)
            complete = False
        except StopAsyncIteration:
            complete = True
        finally:
            await pages.aclose()  # type: ignore[attr-defined]
        return {"school_units": len(schools), "persons": len(users)}, complete

    # ------------------------------------------------------------------------------------------
    # runs

    async def _run(self, source: SourceConfig, request: Mode) -> RunReport:
        return await run_once(
            source,
            mode=request,
            client=self.clients[source.key],
            publisher=self.publisher,
            exchange=self.exchange,
            state=self.state,
            metrics=self.metrics,
        )

    async def run(self, source: SourceConfig, *, mode: Mode) -> RunReport:
        """One run of ``source`` (waits while another run of the same source is in progress)."""
        return await self.run_now(source, mode)

    def trigger(self, source: SourceConfig, *, mode: Mode) -> bool:
        """Run soon, in the background. A request that arrives while the same one (source and mode) is still
        waiting is merged into it; one arriving during a run causes one more run afterwards. False when merged."""
        return self.run_soon(source, mode)

    def _slot(self, source: SourceConfig, request: Mode) -> str:
        return f"{source.key}:{request}"

    def trigger_requested(self, source: SourceConfig, request: SyncRequested) -> bool:
        return self.trigger(source, mode=request.mode)

    # ------------------------------------------------------------------------------------------
    # schedule

    async def due(self, source: SourceConfig) -> Mode | None:
        """A full run when the last healthy full run is older than ``full_interval_seconds`` (or there is
        none; after a failed one, a delta interval later), otherwise a delta run every
        ``delta_interval_seconds``."""
        return due_mode(
            await self.state.get(source) or {},
            self.clock(),
            full_interval_seconds=source.full_interval_seconds,
            failed_retry_seconds=source.delta_interval_seconds,
            incremental_interval_seconds=source.delta_interval_seconds,
        )

    def _poll_interval(self, source: SourceConfig) -> float:
        return source.delta_interval_seconds
