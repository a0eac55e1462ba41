"""Every configured Google source in one process (:class:`GoogleConnector`): a client per source, one run at
a time per source, the schedule (a full run every ``full_interval_seconds``, sooner again after a failed
one), the Reports API poller that triggers a run early, and on-demand runs (``SyncRequested``); the
plumbing is :class:`skolsynk.connectors.scheduling.SourceConnector`'s."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Callable, Coroutine, Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from skolsynk.connectors.http import RetryPolicy
from skolsynk.connectors.runs import aware
from skolsynk.connectors.scheduling import SourceConnector, due_mode
from skolsynk.connectors.sources.google import (
    GOOGLE_TOKEN_URL,
    ConfigurationError,
    SourceConfig,
    delegation_scopes,
    service_account_key,
)
from skolsynk.contracts import SyncRequested
from skolsynk.logging import get_logger
from skolsynk.messaging import Publisher
from skolsynk_services.google_connector.auth import (
    DelegatedCredentials,
    GoogleReadError,
    attempt,
)
from skolsynk_services.google_connector.client import GoogleClient
from skolsynk_services.google_connector.mapping import DirectoryMapping, users_queries
from skolsynk_services.google_connector.metrics import GoogleMetrics
from skolsynk_services.google_connector.runs import RunReport, SyncStateStore, run_once, utcnow

if TYPE_CHECKING:
    from skolsynk_services.google_connector.watch import DirectoryWatch

log = get_logger(__name__)

MAX_SEEN_EVENTS = 5000


class GoogleConnector(SourceConnector[SourceConfig, GoogleClient, str, RunReport]):
    """The runs of every source; every run is a full one, asked for with its reason (``schedule``,
    ``reports``, ``request:{requested_by}`` ...)."""

    sync_requested = "google_sync_requested"
    triggered_run_failed = "google_triggered_run_failed"
    scheduled_run_failed = "google_scheduled_run_failed"
    task_prefix = "google-run"
    unknown_source = "no such Google source is configured"
    state: SyncStateStore

    def __init__(
        self,
        sources: list[SourceConfig],
        *,
        publisher: Publisher,
        exchange: str,
        state: SyncStateStore,
        metrics: GoogleMetrics,
        environ: Mapping[str, str] | None = None,
        request_timeout_seconds: float = 30.0,
        retry: RetryPolicy | None = None,
        members_concurrency: int = 4,
        scheduling: bool = False,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.metrics = metrics
        self.environ = environ
        self.request_timeout_seconds = request_timeout_seconds
        self.retry = retry
        self.members_concurrency = members_concurrency
        #: Directory push notifications, where the operator exposes the webhook (set by the composition root).
        self.watch: DirectoryWatch | None = None
        super().__init__(
            sources, publisher=publisher, exchange=exchange, state=state, scheduling=scheduling, clock=clock
        )

    def _client(self, source: SourceConfig) -> GoogleClient:
        # The key is read and checked now, so a missing or broken one is known before the first run.
        key = service_account_key(source, self.environ)
        token_url = source.token_url or str(key.get("token_uri") or GOOGLE_TOKEN_URL)
        scopes = delegation_scopes(reports=source.reports.enabled)
        try:
            credentials = DelegatedCredentials(key, subject=source.delegated_admin, scopes=scopes, token_url=token_url)
        except GoogleReadError:
            raise ConfigurationError(f"{source.key}: the service-account key is not an RSA private key") from None
        return GoogleClient(
            source,
            credentials,
            request_timeout_seconds=self.request_timeout_seconds,
            retry=self.retry,
            on_throttled=self.metrics.throttle,
        )

    async def _probe(self, source: SourceConfig, client: GoogleClient) -> tuple[dict[str, int], bool]:
        """The organisational units (the school units the mapping makes of them) and the first page of the
        first users query (the delegation, its scopes and the mapping's scope all take part)."""
        mapping = DirectoryMapping(source.mapping, await client.org_units())
        schemas = source.mapping.custom_schemas()
        queries = users_queries(source.mapping)
        pages = client.users(query=queries[0], projection="custom" if schemas else "basic", custom_field_mask=schemas)
        async with contextlib.aclosing(pages):
            users = await anext(pages)
            try:
                await anext(pages)
                complete = False
            except StopAsyncIteration:
                complete = len(queries) == 1
        counts = {"school_units": len(mapping.units), "persons": len(users)}
        if not source.mapping.role_groups():  # a preview of the mapping (role groups would need the groups read)
            roles = Counter((rule.role if rule else None) for rule in map(mapping.role_for, users))
            counts |= {"students": roles["student"], "teachers": roles["teacher"], "staff": roles["staff"],
                       "without_role": roles[None],
                       "without_school_unit": sum(1 for user in users if mapping.unit_for(user) is None)}  # fmt: skip
        return counts, complete

    def _loops(self, source: SourceConfig) -> list[Callable[[], Coroutine[Any, Any, None]]]:
        """The schedule, the Reports API watcher where the source has it enabled, and its push-notification
        channels where the operator exposes the webhook (stopped when the source turned its watch off)."""
        loops = super()._loops(source)
        if source.reports.enabled:
            loops.append(lambda: self.watch_reports(source))
        watch = self.watch
        if watch is not None:
            loops.append(lambda: watch.keep(source) if source.watch.enabled else watch.stop_all(source))
        return loops

    # ------------------------------------------------------------------------------------------
    # runs

    async def _run(self, source: SourceConfig, request: str) -> RunReport:
        return await run_once(
            source,
            client=self.clients[source.key],
            publisher=self.publisher,
            exchange=self.exchange,
            state=self.state,
            metrics=self.metrics,
            reason=request,
            members_concurrency=self.members_concurrency,
            clock=self.clock,
        )

    async def run(self, source: SourceConfig, *, reason: str = "manual") -> RunReport:
        """One full run of ``source`` (waits while another run of the same source is in progress)."""
        return await self.run_now(source, reason)

    def trigger(self, source: SourceConfig, *, reason: str) -> bool:
        """Run soon, in the background. Triggers while one is queued are merged into it (the first reason
        stays); one arriving during a run causes exactly one more run afterwards. False when merged."""
        queued = self.run_soon(source, reason)
        if queued:
            self.metrics.triggered_runs.labels(reason.split(":", 1)[0]).inc()
        return queued

    def trigger_requested(self, source: SourceConfig, request: SyncRequested) -> bool:
        """Google has no delta: every requested run is a full one."""
        return self.trigger(source, reason=f"request:{request.requested_by}")

    # ------------------------------------------------------------------------------------------
    # schedule

    async def due(self, source: SourceConfig) -> str | None:
        """A full run (reason ``schedule``) is due when the last healthy one is older than
        ``full_interval_seconds`` (or there is none), unless a run failed less than ``failed_retry_seconds`` ago."""
        mode = due_mode(
            await self.state.get(source) or {},
            self.clock(),
            full_interval_seconds=source.full_interval_seconds,
            failed_retry_seconds=source.failed_retry_seconds,
        )
        return None if mode is None else "schedule"

    def _poll_interval(self, source: SourceConfig) -> float:
        return min(source.full_interval_seconds, source.failed_retry_seconds)

    # ------------------------------------------------------------------------------------------
    # Reports API

    async def poll_reports(self, source: SourceConfig) -> int:
        """Read the admin audit log since the last poll (minus the overlap); the number of relevant events
        not seen before. The first poll only sets the cursor (a run is due at start anyway)."""
        doc = await self.state.get(source) or {}
        now = self.clock()
        cursor = doc.get("reports_cursor")
        if not isinstance(cursor, datetime):
            await self.state.set_reports_cursor(source, now, [])
            return 0
        start = aware(cursor) - timedelta(seconds=source.reports.overlap_seconds)
        items = await self.clients[source.key].admin_activities(start, now)
        seen = [s for s in doc.get("reports_seen") or [] if isinstance(s, str)]
        known = set(seen)
        wanted = set(source.reports.events)
        new = 0
        for item in items:
            ident = item.get("id")
            if not isinstance(ident, dict):
                continue
            key = f"{ident.get('time', '')}|{ident.get('uniqueQualifier', '')}"
            if key in known:
                continue
            known.add(key)
            seen.append(key)
            events = item.get("events")
            if isinstance(events, list) and any(isinstance(e, dict) and e.get("name") in wanted for e in events):
                new += 1
        await self.state.set_reports_cursor(source, now, _recent(seen, start))
        return new

    async def watch_reports(self, source: SourceConfig) -> None:
        """Forever: poll the Reports API; relevant new events trigger a full run."""
        while True:
            new = await attempt(source, "google_reports_poll_failed", "activities", lambda: self.poll_reports(source))
            if new:
                log.info("google_reports_events", tenant_id=source.tenant_id, source_id=source.source_id, events=new)
                self.trigger(source, reason="reports")
            await asyncio.sleep(source.reports.poll_interval_seconds)


def _recent(seen: list[str], since: datetime) -> list[str]:
    """The event keys (``time|qualifier``) still inside the overlap window, newest kept when too many."""
    kept: list[str] = []
    for key in seen:
        stamp: Any = key.split("|", 1)[0]
        try:
            when = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
        except ValueError:
            continue
        if aware(when) >= since:
            kept.append(key)
    return kept[-MAX_SEEN_EVENTS:]
