"""One connector process's runs of its sources, the same for every pulling connector: a started client per
source, one run at a time per source, runs triggered in the background (a request that arrives while an
equal one is still waiting is merged into it), the schedule loop, and the reports of finished runs.

A connector subclasses :class:`SourceConnector` with what is its own: what a run is (:meth:`_run`), when
one is due (:meth:`due`, usually with :func:`due_mode`), what a ``SyncRequested`` asks for
(:meth:`handle_sync_requested`), which triggers merge, and its log events. Every connector adds the same
two public methods around :meth:`run_now` and :meth:`run_soon`, with its own keyword arguments: ``run``
(one run now) and ``trigger`` (one run soon, in the background).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, ClassVar, Generic, Protocol, TypeVar

from pydantic import ValidationError

from skolsynk.connectors.config import ConfigurationError
from skolsynk.connectors.http import SourceReadError
from skolsynk.connectors.registry import describe as describe_invalid
from skolsynk.connectors.runs import Mode, RunStateStore, Source, aware, utcnow
from skolsynk.connectors.sources import SourceKind
from skolsynk.contracts import Envelope, SyncRequested
from skolsynk.contracts.sync import SourceCheckCompleted, SourceCheckRequested
from skolsynk.logging import get_logger
from skolsynk.messaging import MessageContext, PermanentError, Publisher, UnroutableMessage
from skolsynk.storage.sources import SecretBox, SecretsUnavailable

#: How often a schedule looks whether a run is due (at most: shorter intervals look more often).
SCHEDULE_POLL_SECONDS = 30.0
#: Reports of finished runs kept (newest last), for tests and diagnostics.
REPORTS_KEPT = 100


class Client(Protocol):
    async def start(self) -> None: ...

    async def close(self) -> None: ...


SourceT = TypeVar("SourceT", bound=Source)
ClientT = TypeVar("ClientT", bound=Client)
RequestT = TypeVar("RequestT")
ReportT = TypeVar("ReportT")


@dataclass(frozen=True)
class Checking:
    """What a connector needs to try a source that is not (yet) its own: the kind's model and the
    installation's secrets key."""

    kind: SourceKind
    box: SecretBox


class UnknownSource(KeyError):
    """No source of that tenant and id is configured."""


def due_mode(
    state: Mapping[str, Any],
    now: datetime,
    *,
    full_interval_seconds: float,
    failed_retry_seconds: float,
    incremental_interval_seconds: float | None = None,
) -> Mode | None:
    """What run is due, from a source's state document (:class:`~skolsynk.connectors.runs.RunStateStore`):
    a full run when the last healthy one is older than ``full_interval_seconds`` (or there is none), unless a
    full run failed less than ``failed_retry_seconds`` ago; otherwise an incremental run when the last run of
    either mode started ``incremental_interval_seconds`` ago or more (``None``: the source has no increments)."""
    last_full = state.get("last_full_success_at")
    if isinstance(last_full, datetime) and aware(last_full) + timedelta(seconds=full_interval_seconds) > now:
        if incremental_interval_seconds is None:
            return None
        started = [(state.get(f"last_{m}_run") or {}).get("started_at") for m in ("full", "incremental")]
        latest = max((aware(t) for t in started if isinstance(t, datetime)), default=None)
        if latest is None or latest + timedelta(seconds=incremental_interval_seconds) <= now:
            return "incremental"
        return None
    failed = state.get("last_full_run") or {}
    finished = failed.get("finished_at")
    if (
        isinstance(finished, datetime)
        and not failed.get("healthy", False)
        and aware(finished) + timedelta(seconds=failed_retry_seconds) > now
    ):
        return None
    return "full"


class SourceConnector(ABC, Generic[SourceT, ClientT, RequestT, ReportT]):
    """The sources one process serves, its runs published with ``publisher`` to ``exchange`` and its state
    in ``state``. ``RequestT`` is what a run is asked with (a mode, a reason), ``ReportT`` what it returns.
    Create (subclasses set what :meth:`_client` needs before calling this constructor), :meth:`start`
    (inside the event loop), use, :meth:`close`.

    The sources are not fixed: :meth:`set_sources` adds, replaces and retires them while the connector runs
    (the source registry's follower calls it). Each source has its client, its lock and, with
    ``scheduling``, its loops (:meth:`_loops`: the schedule, and whatever else the connector watches)."""

    #: Log event of a sync request taken.
    sync_requested: ClassVar[str]
    #: Log event of a triggered run that failed.
    triggered_run_failed: ClassVar[str]
    #: Log event of a scheduled run (or the look whether one is due) that failed.
    scheduled_run_failed: ClassVar[str]
    #: Name of a triggered run's task: ``{task_prefix}:{slot}``.
    task_prefix: ClassVar[str]
    #: Why a sync request for a source that is not configured is refused.
    unknown_source: ClassVar[str] = "no such source is configured for the tenant"

    def __init__(
        self,
        sources: Iterable[SourceT],
        *,
        publisher: Publisher,
        exchange: str,
        state: RunStateStore,
        scheduling: bool = False,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.publisher = publisher
        self.exchange = exchange
        self.state = state
        self.scheduling = scheduling
        self.clock = clock
        self.sources: dict[str, SourceT] = {}
        self.clients: dict[str, ClientT] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        # Clients are built (and their secrets resolved) now: a static source that cannot be served stops
        # start-up (ConfigurationError); sources from the registry are checked one by one (set_sources).
        for source in sources:
            self.sources[source.key] = source
            self.clients[source.key] = self._client(source)
            self._locks[source.key] = asyncio.Lock()
        self._pending: dict[str, RequestT] = {}
        self._slot_source: dict[str, str] = {}
        self._triggered: dict[str, set[asyncio.Task[None]]] = {}
        self._loop_tasks: dict[str, list[asyncio.Task[None]]] = {}
        self._started = False
        #: How checks build a source from a request (set with the registry; None: checks are refused).
        self.checking: Checking | None = None
        #: Asked once when a sync request names a source this process does not serve (yet): the registry
        #: follower's refresh, so a source saved a moment ago is found.
        self.refresh: Callable[[], Awaitable[object]] | None = None
        #: Reports of finished runs, newest last (the last :data:`REPORTS_KEPT`).
        self.reports: list[ReportT] = []
        # The connector's own logger, so its events keep their logger name.
        self.log = get_logger(type(self).__module__)

    @abstractmethod
    def _client(self, source: SourceT) -> ClientT:
        """A new, unstarted client of ``source``, its secrets resolved (:class:`ConfigurationError` when
        one is missing or broken)."""

    def source(self, tenant_id: str, source_id: str) -> SourceT:
        source = self.sources.get(f"{tenant_id}:{source_id}")
        if source is None:
            raise UnknownSource(f"{tenant_id}:{source_id}")
        return source

    def requested_source(self, tenant_id: str, source_id: str) -> SourceT:
        """The source a ``SyncRequested`` names; :class:`PermanentError` (:attr:`unknown_source`) when there is none."""
        try:
            return self.source(tenant_id, source_id)
        except UnknownSource:
            raise PermanentError(self.unknown_source) from None

    async def start(self) -> None:
        for client in self.clients.values():
            await client.start()
        self._started = True
        for source in self.sources.values():
            self._start_loops(source)

    async def close(self) -> None:
        self._started = False
        for key in list(self.sources):
            await self._stop_tasks(key)
        for client in self.clients.values():
            await client.close()

    # ------------------------------------------------------------------------------------------
    # sources that come and go

    async def set_sources(self, sources: Iterable[SourceT]) -> dict[str, str]:
        """Serve exactly ``sources`` from now on: a source no longer listed is retired (its loops and runs
        cancelled, its client closed), a changed one is retired and added again with the new settings, a
        new one gets its client and loops. Unchanged sources are left alone, runs and all. Returns, per
        source key, why a source could not be added (a missing secret ...): it is not served."""
        wanted = {source.key: source for source in sources}
        for key in [k for k, current in self.sources.items() if wanted.get(k) != current]:
            await self._retire(key)
        problems: dict[str, str] = {}
        for key, source in wanted.items():
            if key in self.sources:
                continue
            try:
                client = self._client(source)
            except ConfigurationError as error:
                problems[key] = str(error)
                continue
            if self._started:
                await client.start()
            self.sources[key] = source
            self.clients[key] = client
            self._locks[key] = asyncio.Lock()
            if self._started:
                self._start_loops(source)
        return problems

    async def _retire(self, key: str) -> None:
        await self._stop_tasks(key)
        self.sources.pop(key, None)
        self._locks.pop(key, None)
        client = self.clients.pop(key, None)
        if client is not None:
            await client.close()

    async def _stop_tasks(self, key: str) -> None:
        """Cancel the source's loops and triggered runs, and forget what was waiting to run."""
        tasks = [*self._loop_tasks.pop(key, []), *self._triggered.pop(key, set())]
        for slot in [slot for slot, owner in self._slot_source.items() if owner == key]:
            self._pending.pop(slot, None)
            self._slot_source.pop(slot, None)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def _loops(self, source: SourceT) -> list[Callable[[], Coroutine[Any, Any, None]]]:
        """What runs for as long as ``source`` is served (with ``scheduling``): its schedule; a connector
        adds what else it watches."""
        return [lambda: self.schedule(source)]

    def _start_loops(self, source: SourceT) -> None:
        if not self.scheduling:
            return
        self._loop_tasks[source.key] = [
            asyncio.create_task(loop(), name=f"{self.task_prefix}-loop:{source.key}:{n}")
            for n, loop in enumerate(self._loops(source))
        ]

    # ------------------------------------------------------------------------------------------
    # runs

    @abstractmethod
    async def _run(self, source: SourceT, request: RequestT) -> ReportT:
        """One run of ``source`` (called with the source's lock held)."""

    async def run_now(self, source: SourceT, request: RequestT) -> ReportT:
        """One run of ``source`` (waits while another run of the same source is in progress)."""
        async with self._locks[source.key]:
            report = await self._run(source, request)
        self.reports = [*self.reports[-(REPORTS_KEPT - 1) :], report]
        return report

    def _slot(self, source: SourceT, request: RequestT) -> str:
        """Requests of the same slot merge while they wait; by default one slot per source."""
        return source.key

    def _merge(self, waiting: RequestT, new: RequestT) -> RequestT:
        """The request a waiting one becomes when ``new`` is merged into it; by default it stays."""
        return waiting

    def run_soon(self, source: SourceT, request: RequestT) -> bool:
        """Run in the background. A request that arrives while one of the same slot is still waiting is
        merged into it; one arriving during a run causes one more run afterwards. False when merged."""
        slot = self._slot(source, request)
        if slot in self._pending:
            self._pending[slot] = self._merge(self._pending[slot], request)
            return False
        self._pending[slot] = request
        self._slot_source[slot] = source.key
        task = asyncio.create_task(self._triggered_run(source, slot), name=f"{self.task_prefix}:{slot}")
        self._triggered.setdefault(source.key, set()).add(task)
        task.add_done_callback(lambda done: self._forget(source.key, done))
        return True

    def _forget(self, key: str, task: asyncio.Task[None]) -> None:
        tasks = self._triggered.get(key)
        if tasks is not None:
            tasks.discard(task)
            if not tasks:
                del self._triggered[key]

    async def _triggered_run(self, source: SourceT, slot: str) -> None:
        async with self._locks[source.key]:
            request = self._pending.pop(slot)
            self._slot_source.pop(slot, None)
        try:
            await self.run_now(source, request)
        except Exception:
            self.log.exception(self.triggered_run_failed, tenant_id=source.tenant_id, source_id=source.source_id)

    # ------------------------------------------------------------------------------------------
    # sync requests

    async def handle_sync_requested(self, envelope: Envelope, context: MessageContext) -> None:
        """What arrives on the connector's queue: a ``SyncRequested``, or a ``SourceCheckRequested``
        (:meth:`handle_check`)."""
        if envelope.message_type == SourceCheckRequested.message_type:
            await self.handle_check(envelope)
            return
        await self._handle_sync(envelope)

    async def _handle_sync(self, envelope: Envelope) -> None:
        """A ``SyncRequested`` from the connector's queue (admin UI, operator CLI): the envelope names the
        tenant, the payload the source and the mode. The run happens in the background (a full run can
        outlast a handler's budget); a source that is not served, even after asking the registry again
        (:attr:`refresh`), is refused (:meth:`requested_source`)."""
        request = SyncRequested.from_envelope(envelope)
        if envelope.tenant_id is None:
            raise PermanentError("a sync request must name its tenant")
        if f"{envelope.tenant_id}:{request.source_id}" not in self.sources and self.refresh is not None:
            await self.refresh()
        source = self.requested_source(envelope.tenant_id, request.source_id)
        queued = self.trigger_requested(source, request)
        self.log.info(
            self.sync_requested,
            tenant_id=source.tenant_id,
            source_id=source.source_id,
            mode=request.mode,
            requested_by=request.requested_by,
            merged=not queued,
        )

    # ------------------------------------------------------------------------------------------
    # checks ("test connection")

    async def _probe(self, source: SourceT, client: ClientT) -> tuple[dict[str, int], bool]:
        """What a check reads with a started ``client``: counts (``persons``, ``school_units`` ...) and
        whether they are the whole source (False: a first page). Each connector says how."""
        raise NotImplementedError

    async def check(self, request: SourceCheckRequested, tenant_id: str) -> SourceCheckCompleted:
        """Try the settings of ``request`` as a run would (its own client, closed afterwards): the token, then
        :meth:`_probe`, within the request's deadline. Never raises for what the source or its settings do."""
        started = time.monotonic()

        def answer(**fields: Any) -> SourceCheckCompleted:
            return SourceCheckCompleted(
                source_id=request.source_id, elapsed_seconds=round(time.monotonic() - started, 3), **fields
            )

        if self.checking is None:
            return answer(ok=False, error_code="not_supported", detail="this connector does not read the registry")
        remaining = (aware(request.deadline_at) - utcnow()).total_seconds()  # wall clock: the asker's deadline
        try:
            secrets = self.checking.box.open(request.sealed_secrets) if request.sealed_secrets else {}
            doc = {"tenant_id": tenant_id, "source_id": request.source_id,
                   "settings": request.settings, "secret_refs": request.secret_refs}  # fmt: skip
            source = self.checking.kind.from_registry(doc, secrets)
            client = self._client(source)
        except ValidationError as error:
            return answer(ok=False, error_code="settings_invalid", detail=describe_invalid(error)[:500])
        except (ConfigurationError, SecretsUnavailable) as error:
            return answer(ok=False, error_code="configuration", detail=str(error)[:500])
        try:
            await client.start()
            async with asyncio.timeout(max(remaining, 0.1)):
                counts, complete = await self._probe(source, client)
        except TimeoutError:
            return answer(ok=False, error_code="timeout", detail="no answer from the source before the deadline")
        except SourceReadError as error:
            return answer(ok=False, error_code=error.code)
        except ConfigurationError as error:
            return answer(ok=False, error_code="configuration", detail=str(error)[:500])
        finally:
            await client.close()
        return answer(ok=True, counts=counts, complete=complete)

    async def handle_check(self, envelope: Envelope) -> None:
        """Answer a ``SourceCheckRequested`` on its ``reply_to`` queue, unless nobody waits any more."""
        request = SourceCheckRequested.from_envelope(envelope)
        if envelope.tenant_id is None:
            raise PermanentError("a source check must name its tenant")
        if aware(request.deadline_at) <= utcnow():
            self.log.info("source_check_expired", tenant_id=envelope.tenant_id, source_id=request.source_id)
            return
        result = await self.check(request, envelope.tenant_id)
        self.log.info(
            "source_checked",
            tenant_id=envelope.tenant_id,
            source_id=request.source_id,
            ok=result.ok,
            error_code=result.error_code,
            elapsed_seconds=result.elapsed_seconds,
        )
        reply = result.to_envelope(tenant_id=envelope.tenant_id, correlation_id=envelope.message_id)
        try:
            await self.publisher.publish(reply, exchange="", routing_key=request.reply_to)
        except UnroutableMessage:
            self.log.info("source_check_not_awaited", tenant_id=envelope.tenant_id, source_id=request.source_id)

    @abstractmethod
    def trigger_requested(self, source: SourceT, request: SyncRequested) -> bool:
        """The run ``request`` asks for, soon (the connector's ``trigger``); False when merged."""

    # ------------------------------------------------------------------------------------------
    # schedule

    @abstractmethod
    async def due(self, source: SourceT) -> RequestT | None:
        """The run that is due now, if any (what :meth:`schedule` runs)."""

    @abstractmethod
    def _poll_interval(self, source: SourceT) -> float:
        """How often the schedule of ``source`` must look whether a run is due."""

    async def schedule(self, source: SourceT, *, poll_seconds: float = SCHEDULE_POLL_SECONDS) -> None:
        """Forever: a run whenever one is due, looking every ``poll_seconds`` (or more often when the source's
        intervals are shorter). The times are kept in MongoDB, so a restart does not start everything again."""
        wait = min(poll_seconds, self._poll_interval(source))
        while True:
            try:
                request = await self.due(source)
                if request is not None:
                    await self.run_now(source, request)
            except asyncio.CancelledError:
                raise
            except Exception:
                self.log.exception(self.scheduled_run_failed, tenant_id=source.tenant_id, source_id=source.source_id)
            await asyncio.sleep(wait)
