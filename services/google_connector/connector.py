"""Every configured Google source in one process: a client per source, one run at a time per source,
the schedule (a full run every ``full_interval_seconds``, sooner again after a failed one), the Reports
API poller that triggers a run early, and on-demand runs (``SyncRequested``)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from google_connector.auth import DIRECTORY_SCOPES, REPORTS_SCOPE, DelegatedCredentials, GoogleReadError
from google_connector.client import DirectoryClient, RetryPolicy
from google_connector.runs import ConnectorMetrics, RunReport, SyncStateStore, full_run, utcnow
from google_connector.sources import GOOGLE_TOKEN_URL, ConfigurationError, SourceConfig, service_account_key
from skolsynk.contracts import Envelope, SyncRequested
from skolsynk.logging import get_logger
from skolsynk.messaging import MessageContext, PermanentError, Publisher

log = get_logger(__name__)

#: How often the scheduler looks whether a run is due (at most; shorter intervals look more often).
SCHEDULE_POLL_SECONDS = 30.0
MAX_SEEN_EVENTS = 5000


class UnknownSource(KeyError):
    pass


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


class GoogleConnector:
    def __init__(
        self,
        sources: list[SourceConfig],
        *,
        publisher: Publisher,
        exchange: str,
        state: SyncStateStore,
        metrics: ConnectorMetrics,
        environ: Mapping[str, str] | None = None,
        request_timeout_seconds: float = 30.0,
        retry: RetryPolicy | None = None,
        members_concurrency: int = 4,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.sources = {source.key: source for source in sources}
        self.publisher = publisher
        self.exchange = exchange
        self.state = state
        self.metrics = metrics
        self.members_concurrency = members_concurrency
        self.clock = clock
        self.clients: dict[str, DirectoryClient] = {}
        for source in sources:
            # Keys are read and checked now, so a missing or broken one stops start-up, not the first run.
            key = service_account_key(source, environ)
            token_url = source.token_url or str(key.get("token_uri") or GOOGLE_TOKEN_URL)
            scopes = DIRECTORY_SCOPES + ((REPORTS_SCOPE,) if source.reports.enabled else ())
            try:
                credentials = DelegatedCredentials(
                    key, subject=source.delegated_admin, scopes=scopes, token_url=token_url
                )
            except GoogleReadError:
                raise ConfigurationError(f"{source.key}: the service-account key is not an RSA private key") from None
            self.clients[source.key] = DirectoryClient(
                source,
                credentials,
                request_timeout_seconds=request_timeout_seconds,
                retry=retry,
                on_throttled=lambda code: metrics.throttled.labels(code).inc(),
            )
        self._locks = {key: asyncio.Lock() for key in self.sources}
        self._pending: dict[str, bool] = dict.fromkeys(self.sources, False)
        self._triggered: set[asyncio.Task[None]] = set()
        #: Reports of finished runs, newest last (bounded), for tests and diagnostics.
        self.reports: list[RunReport] = []

    def source(self, tenant_id: str, source_id: str) -> SourceConfig:
        source = self.sources.get(f"{tenant_id}:{source_id}")
        if source is None:
            raise UnknownSource(f"{tenant_id}:{source_id}")
        return source

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

    # ------------------------------------------------------------------------------------------
    # runs

    async def run(self, source: SourceConfig, *, reason: str = "manual") -> RunReport:
        """One full run of ``source`` (waits while another run of the same source is in progress)."""
        async with self._locks[source.key]:
            report = await full_run(
                source,
                client=self.clients[source.key],
                publisher=self.publisher,
                exchange=self.exchange,
                state=self.state,
                metrics=self.metrics,
                reason=reason,
                members_concurrency=self.members_concurrency,
                clock=self.clock,
            )
        self.reports = [*self.reports[-99:], report]
        return report

    def trigger(self, source: SourceConfig, *, reason: str) -> bool:
        """Run soon, in the background. Triggers while one is queued are merged into it; one arriving
        during a run causes exactly one more run afterwards. False when merged."""
        if self._pending[source.key]:
            return False
        self._pending[source.key] = True
        self.metrics.triggered_runs.labels(reason.split(":", 1)[0]).inc()
        task = asyncio.create_task(self._triggered_run(source, reason), name=f"google-run:{source.key}")
        self._triggered.add(task)
        task.add_done_callback(self._triggered.discard)
        return True

    async def _triggered_run(self, source: SourceConfig, reason: str) -> None:
        async with self._locks[source.key]:
            self._pending[source.key] = False
        try:
            await self.run(source, reason=reason)
        except Exception:
            log.exception("google_triggered_run_failed", tenant_id=source.tenant_id, source_id=source.source_id)

    async def on_sync_requested(self, envelope: Envelope, context: MessageContext) -> None:
        """``SyncRequested`` from this connector's queue: run the named source soon (Google has no delta,
        so every run is a full one)."""
        request = SyncRequested.from_envelope(envelope)
        if envelope.tenant_id is None:
            raise PermanentError("a sync request must name its tenant")
        try:
            source = self.source(envelope.tenant_id, request.source_id)
        except UnknownSource:
            raise PermanentError("no such Google source is configured") from None
        merged = not self.trigger(source, reason=f"request:{request.requested_by}")
        log.info(
            "google_sync_requested",
            tenant_id=source.tenant_id,
            source_id=source.source_id,
            mode=request.mode,
            requested_by=request.requested_by,
            merged=merged,
        )

    # ------------------------------------------------------------------------------------------
    # schedule

    async def due(self, source: SourceConfig) -> bool:
        """A full run is due when the last healthy one is older than ``full_interval_seconds`` (or there is
        none), unless a run failed less than ``failed_retry_seconds`` ago."""
        doc = await self.state.get(source) or {}
        now = self.clock()
        success = doc.get("last_full_success_at")
        if isinstance(success, datetime) and _aware(success) + timedelta(seconds=source.full_interval_seconds) > now:
            return False
        last = doc.get("last_full_run") or {}
        finished = last.get("finished_at")
        return not (
            isinstance(finished, datetime)
            and not last.get("healthy", False)
            and _aware(finished) + timedelta(seconds=source.failed_retry_seconds) > now
        )

    async def schedule(self, source: SourceConfig) -> None:
        """Forever: a full run whenever one is due. The times are in MongoDB, so a restart does not run
        everything again."""
        wait = min(SCHEDULE_POLL_SECONDS, source.full_interval_seconds, source.failed_retry_seconds)
        while True:
            try:
                if await self.due(source):
                    await self.run(source, reason="schedule")
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("google_scheduled_run_failed", tenant_id=source.tenant_id, source_id=source.source_id)
            await asyncio.sleep(wait)

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
        start = _aware(cursor) - timedelta(seconds=source.reports.overlap_seconds)
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
            try:
                new = await self.poll_reports(source)
                if new:
                    log.info(
                        "google_reports_events", tenant_id=source.tenant_id, source_id=source.source_id, events=new
                    )
                    self.trigger(source, reason="reports")
            except asyncio.CancelledError:
                raise
            except GoogleReadError as error:
                log.warning(
                    "google_reports_poll_failed",
                    tenant_id=source.tenant_id,
                    source_id=source.source_id,
                    code=error.qualified("activities"),
                )
            except Exception:
                log.exception("google_reports_poll_failed", tenant_id=source.tenant_id, source_id=source.source_id)
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
        if _aware(when) >= since:
            kept.append(key)
    return kept[-MAX_SEEN_EVENTS:]
