"""Every configured SS 12000 source in one process (:class:`Ss12000Connector`): a started client per source,
one run at a time per source, the schedule (full and incremental intervals), on-demand runs
(``SyncRequested``) and the webhook trigger; the plumbing is
:class:`skolsynk.connectors.scheduling.SourceConnector`'s."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from skolsynk.connectors.runs import Mode, utcnow
from skolsynk.connectors.scheduling import SourceConnector, due_mode
from skolsynk.connectors.sources.ss12000 import SourceConfig
from skolsynk.contracts import SyncRequested
from skolsynk.logging import get_logger
from skolsynk.messaging import Publisher
from skolsynk_services.ss12000_puller.client import RetryPolicy, Ss12000Client
from skolsynk_services.ss12000_puller.runs import DEFAULT_OVERLAP, RunBounds, RunReport, SyncStateStore, run_once

if TYPE_CHECKING:
    from skolsynk_services.ss12000_puller.source_log import SourceLog
    from skolsynk_services.ss12000_puller.subscriptions import SubscriptionKeeper

log = get_logger(__name__)


class Ss12000Connector(SourceConnector[SourceConfig, Ss12000Client, Mode, RunReport]):
    """The runs of every source, each asked for in a mode (``full`` or ``incremental``)."""

    sync_requested = "ss12000_sync_requested"
    triggered_run_failed = "ss12000_triggered_run_failed"
    scheduled_run_failed = "ss12000_scheduled_run_failed"
    task_prefix = "ss12000-trigger"
    unknown_source = "no SS 12000 source of that id is configured for the tenant"
    state: SyncStateStore

    def __init__(
        self,
        sources: list[SourceConfig],
        *,
        publisher: Publisher,
        exchange: str,
        state: SyncStateStore,
        scheduling: bool = False,
        environ: Mapping[str, str] | None = None,
        request_timeout_seconds: float = 30.0,
        retry: RetryPolicy | None = None,
        overlap: timedelta = DEFAULT_OVERLAP,
        clock: Callable[[], datetime] = utcnow,
        bounds: RunBounds | None = None,
    ) -> None:
        self.environ = environ
        self.bounds = bounds or RunBounds()
        self.request_timeout_seconds = request_timeout_seconds
        self.retry = retry
        self.overlap = overlap
        #: The sources' subscriptions (set by ``build``; None: none are made).
        self.subscriptions: SubscriptionKeeper | None = None
        #: Posts failed runs to the sources' ``/log/`` (set by ``build``; None: nothing is posted).
        self.source_log: SourceLog | None = None
        #: Whether a subscription of the tenant asks for placements (set by ``build``; None: never read).
        self.placements_wanted: Callable[[str], Awaitable[bool]] | None = None
        super().__init__(
            sources, publisher=publisher, exchange=exchange, state=state, scheduling=scheduling, clock=clock
        )

    def _client(self, source: SourceConfig) -> Ss12000Client:
        return Ss12000Client(
            source, environ=self.environ, request_timeout_seconds=self.request_timeout_seconds, retry=self.retry
        )

    async def _probe(self, source: SourceConfig, client: Ss12000Client) -> tuple[dict[str, int], bool]:
        """The first page of organisations (its school units counted) and of persons."""
        counts: dict[str, int] = {}
        complete = True
        for name, path in (("school_units", "organisations"), ("persons", "persons")):
            pages = client.pages(path)
            page = await anext(pages)
            items = page if isinstance(page, list) else []
            if name == "school_units":
                items = [o for o in items if isinstance(o, dict) and o.get("organisationType") == "Skolenhet"]
            counts[name] = len(items)
            try:
                await anext(pages)
                complete = False
            except StopAsyncIteration:
                pass
            finally:
                await pages.aclose()  # type: ignore[attr-defined]
        return counts, complete

    def webhook_secret(self, source: SourceConfig) -> str | None:
        """The shared secret of the source's webhook (resolved with its client); None: no webhook."""
        client = self.clients.get(source.key)  # None: the source was retired a moment ago
        return client.webhook_secret if client is not None else None

    # ------------------------------------------------------------------------------------------
    # runs

    async def _run(self, source: SourceConfig, request: Mode) -> RunReport:
        client = self.clients[source.key]
        placements = self.placements_wanted is not None and await self.placements_wanted(source.tenant_id)
        report = await run_once(
            source,
            mode=request,
            client=client,
            publisher=self.publisher,
            exchange=self.exchange,
            state=self.state,
            overlap=self.overlap,
            clock=self.clock,
            bounds=self.bounds,
            placements=placements,
        )
        if not report.healthy and self.source_log is not None:
            try:
                await self.source_log.run_failed(source, client, report, at=self.clock())
            except asyncio.CancelledError:
                raise
            except Exception:  # the run is done and published: telling the source is best effort
                log.exception("ss12000_log_post_failed", tenant_id=source.tenant_id, source_id=source.source_id)
        return report

    async def run(self, source: SourceConfig, *, mode: Mode) -> RunReport:
        """One run of ``source`` (waits while another run of the same source is in progress)."""
        return await self.run_now(source, mode)

    def trigger(self, source: SourceConfig, *, mode: Mode) -> bool:
        """Run ``mode`` soon, in the background (a webhook notice: ``incremental``). False when a run of the
        source is queued already: the request is merged into it (a queued incremental run becomes full if a
        full one is asked for); one arriving during a run causes exactly one more run afterwards."""
        return self.run_soon(source, mode)

    def _merge(self, waiting: Mode, new: Mode) -> Mode:
        return "full" if "full" in (waiting, new) else "incremental"

    def trigger_requested(self, source: SourceConfig, request: SyncRequested) -> bool:
        return self.trigger(source, mode=request.mode)

    # ------------------------------------------------------------------------------------------
    # schedule

    async def due(self, source: SourceConfig) -> Mode | None:
        """A full run when the last healthy full run is older than ``full_interval_seconds`` (or there is
        none; after a failed one, an incremental interval later), otherwise an incremental one every
        ``incremental_interval_seconds``."""
        return due_mode(
            await self.state.get(source) or {},
            self.clock(),
            full_interval_seconds=source.full_interval_seconds,
            failed_retry_seconds=source.incremental_interval_seconds,
            incremental_interval_seconds=source.incremental_interval_seconds,
        )

    def _poll_interval(self, source: SourceConfig) -> float:
        return source.incremental_interval_seconds

    # ------------------------------------------------------------------------------------------
    # subscriptions

    def _start_loops(self, source: SourceConfig) -> None:
        """The schedule (with ``scheduling``) and, whether or not it runs, the source's subscription: a puller
        that only answers webhooks needs it most."""
        super()._start_loops(source)
        if self.subscriptions is not None:
            keeper = self.subscriptions
            self._loop_tasks.setdefault(source.key, []).append(
                asyncio.create_task(keeper.keep(source), name=f"{self.task_prefix}-subscription:{source.key}")
            )

    async def set_sources(self, sources: Iterable[SourceConfig]) -> dict[str, str]:
        """As every connector's; a source that leaves (removed, disabled, no longer servable) first has its
        subscription deleted at the source, while its client is still open."""
        listed = list(sources)
        keys = {source.key for source in listed}
        if self.subscriptions is not None and self._started:
            for key, source in list(self.sources.items()):
                if key not in keys:
                    await self._stop_tasks(key)  # its keeper first: the removal is then the only change
                    await self.subscriptions.remove(source)
        return await super().set_sources(listed)
