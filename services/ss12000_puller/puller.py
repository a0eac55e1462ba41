"""One process's view of every configured source: a started client per source, one run at a time per
source, the schedule (full and incremental intervals) and the webhook trigger."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta

from skolsynk.contracts import Envelope, SyncRequested
from skolsynk.logging import get_logger
from skolsynk.messaging import MessageContext, PermanentError, Publisher
from ss12000_puller.client import RetryPolicy, Ss12000Client
from ss12000_puller.runs import DEFAULT_OVERLAP, Mode, RunReport, SyncStateStore, pull, utcnow
from ss12000_puller.sources import SourceConfig

log = get_logger(__name__)


class UnknownSource(KeyError):
    pass


class Puller:
    def __init__(
        self,
        sources: list[SourceConfig],
        *,
        publisher: Publisher,
        exchange: str,
        state: SyncStateStore,
        environ: Mapping[str, str] | None = None,
        request_timeout_seconds: float = 30.0,
        retry: RetryPolicy | None = None,
        overlap: timedelta = DEFAULT_OVERLAP,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.sources = {source.key: source for source in sources}
        self.publisher = publisher
        self.exchange = exchange
        self.state = state
        self.overlap = overlap
        self.clock = clock
        self.clients = {
            source.key: Ss12000Client(
                source, environ=environ, request_timeout_seconds=request_timeout_seconds, retry=retry
            )
            for source in sources
        }
        self._locks = {key: asyncio.Lock() for key in self.sources}
        self._pending: dict[str, bool] = dict.fromkeys(self.sources, False)
        self._pending_full: set[str] = set()
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

    async def pull(self, source: SourceConfig, *, mode: Mode) -> RunReport:
        """One run of ``source`` (waits while another run of the same source is in progress)."""
        async with self._locks[source.key]:
            report = await pull(
                source,
                mode=mode,
                client=self.clients[source.key],
                publisher=self.publisher,
                exchange=self.exchange,
                state=self.state,
                overlap=self.overlap,
                clock=self.clock,
            )
        self.reports = [*self.reports[-99:], report]
        return report

    def trigger_incremental(self, source: SourceConfig) -> None:
        """A webhook notice: run an incremental pull soon. Notices that arrive while one is queued
        are coalesced into it; one arriving during a run causes exactly one more run afterwards."""
        self.trigger(source, "incremental")

    def trigger(self, source: SourceConfig, mode: Mode) -> bool:
        """Run ``mode`` soon, in the background; False when a run of the source is queued already
        (a queued incremental run becomes full if a full one is asked for)."""
        if self._pending[source.key]:
            if mode == "full":
                self._pending_full.add(source.key)
            return False
        self._pending[source.key] = True
        if mode == "full":
            self._pending_full.add(source.key)
        task = asyncio.create_task(self._triggered_run(source), name=f"ss12000-trigger:{source.key}")
        self._triggered.add(task)
        task.add_done_callback(self._triggered.discard)
        return True

    async def _triggered_run(self, source: SourceConfig) -> None:
        async with self._locks[source.key]:
            self._pending[source.key] = False
            mode: Mode = "full" if source.key in self._pending_full else "incremental"
            self._pending_full.discard(source.key)
        try:
            await self.pull(source, mode=mode)
        except Exception:
            log.exception("ss12000_triggered_run_failed", tenant_id=source.tenant_id, source_id=source.source_id)

    async def sync_requested(self, envelope: Envelope, context: MessageContext) -> None:
        """``SyncRequested`` from the puller's queue (admin UI, operator CLI): run in the background,
        since a full run can outlast a handler's budget."""
        request = SyncRequested.from_envelope(envelope)
        try:
            source = self.source(envelope.tenant_id or "", request.source_id)
        except UnknownSource:
            raise PermanentError("no SS 12000 source of that id is configured for the tenant") from None
        queued = self.trigger(source, request.mode)
        log.info("ss12000_sync_requested", source_id=source.source_id, mode=request.mode, queued=queued)

    async def schedule(self, source: SourceConfig, *, poll_seconds: float = 30.0) -> None:
        """Forever: a full run when the last healthy full run is older than ``full_interval_seconds``
        (or there is none), otherwise an incremental one every ``incremental_interval_seconds``. The
        times are kept in MongoDB, so a restart does not start everything again."""
        while True:
            try:
                mode = await self._due(source)
                if mode is not None:
                    await self.pull(source, mode=mode)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("ss12000_scheduled_run_failed", tenant_id=source.tenant_id, source_id=source.source_id)
            await asyncio.sleep(min(poll_seconds, source.incremental_interval_seconds))

    async def _due(self, source: SourceConfig) -> Mode | None:
        doc = await self.state.get(source) or {}
        now = self.clock()
        last_full = doc.get("last_full_success_at")
        if (
            not isinstance(last_full, datetime)
            or _aware(last_full) + timedelta(seconds=source.full_interval_seconds) <= now
        ):
            failed_full = (doc.get("last_full_run") or {}).get("finished_at")
            # After a failed full run, wait an incremental interval before the next attempt.
            if (
                isinstance(failed_full, datetime)
                and _aware(failed_full) + timedelta(seconds=source.incremental_interval_seconds) > now
                and not (doc.get("last_full_run") or {}).get("healthy", False)
            ):
                return None
            return "full"
        last_any = [(doc.get(f"last_{m}_run") or {}).get("started_at") for m in ("full", "incremental")]
        latest = max((_aware(t) for t in last_any if isinstance(t, datetime)), default=None)
        if latest is None or latest + timedelta(seconds=source.incremental_interval_seconds) <= now:
            return "incremental"
        return None


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
