"""The plumbing the pulling connectors share (skolsynk.connectors): the JSON client base against a loopback
server, the token cache, publishing a run, the run coordinator and its schedule, the sources file."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
from aiohttp import test_utils, web
from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

import skolsynk.connectors.service as connector_service
from skolsynk.connectors.config import ConfigurationError, load_yaml, parse_entries, secret
from skolsynk.connectors.http import (
    JsonApiClient,
    Retryable,
    RetryPolicy,
    SourceReadError,
    TokenCache,
    access_token,
    parse_retry_after,
    retry_after,
)
from skolsynk.connectors.runs import RunPublisher, RunReport, RunStateStore, aware, millis
from skolsynk.connectors.scheduling import Checking, SourceConnector, UnknownSource, due_mode
from skolsynk.connectors.sources import SS12000
from skolsynk.contracts import Envelope, SyncRequested
from skolsynk.contracts.source import SourceDeletion, SourceRecord
from skolsynk.domain.ss12000 import EntityKind
from skolsynk.messaging import PermanentError
from skolsynk.storage.sources import SecretBox

pytestmark = [pytest.mark.unit, pytest.mark.timeout(30)]

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
FAST = RetryPolicy(attempts=3, wait_initial_seconds=0.001, wait_max_seconds=0.01, max_retry_after_seconds=0.2)


class Source(BaseModel):
    model_config = ConfigDict(frozen=True)

    tenant_id: str = "kommun-a"
    source_id: str = "api"
    url: str = "https://api.example"
    broken: bool = False

    @property
    def key(self) -> str:
        return f"{self.tenant_id}:{self.source_id}"


# --- http: Retry-After, token answers, the token cache --------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("3", 3.0), ("2.5", 2.5), (" 1 ", 1.0), ("-4", 0.0), (None, None), ("", None), ("soon", None),
     ("nan", None), ("inf", None)],
)  # fmt: skip
def test_retry_after_in_seconds(value: str | None, seconds: float | None) -> None:
    assert parse_retry_after(value) == seconds


def test_retry_after_as_an_http_date() -> None:
    assert parse_retry_after("Thu, 26 Nov 2026 12:00:10 GMT", now=lambda: NOW) == 10.0
    assert parse_retry_after("Thu, 26 Nov 2026 11:59:00 GMT", now=lambda: NOW) == 0.0


def test_access_token_of_a_token_answer() -> None:
    assert access_token({"access_token": "t", "expires_in": 600}, default_lifetime=3600.0) == ("t", 600.0)
    assert access_token({"access_token": "t", "expires_in": "120"}, default_lifetime=3600.0) == ("t", 120.0)
    assert access_token({"access_token": "t", "expires_in": "soon"}, default_lifetime=3599.0) == ("t", 3599.0)
    assert access_token({"access_token": "t"}, default_lifetime=3600.0) == ("t", 3600.0)
    for body in ({"access_token": ""}, {"token_type": "Bearer"}, ["access_token"], None):
        assert access_token(body, default_lifetime=3600.0) is None


async def test_the_token_cache_reuses_a_token_until_shortly_before_it_expires() -> None:
    now = [1000.0]
    cache = TokenCache(renew_margin_seconds=60.0, clock=lambda: now[0])
    issued: list[str] = []

    async def fetch() -> tuple[str, float]:
        issued.append(f"t{len(issued) + 1}")
        return issued[-1], 300.0

    assert await cache.get(fetch) == "t1"
    now[0] += 239  # renewed 60 s before the 300 s are up
    assert await cache.get(fetch) == "t1"
    now[0] += 1
    assert await cache.get(fetch) == "t2"
    assert await cache.get(fetch, force=True) == "t3"
    cache.invalidate("t2")  # not the current one: kept
    assert await cache.get(fetch) == "t3"
    cache.invalidate("t3")
    assert await cache.get(fetch) == "t4"
    assert cache.fetched == 4


async def test_a_short_lived_token_is_renewed_after_half_its_lifetime() -> None:
    now = [0.0]
    cache = TokenCache(renew_margin_seconds=300.0, clock=lambda: now[0])
    count = 0

    async def fetch() -> tuple[str, float]:
        nonlocal count
        count += 1
        return f"t{count}", 100.0

    await cache.get(fetch)
    now[0] = 49.0
    assert await cache.get(fetch) == "t1"
    now[0] = 50.0
    assert await cache.get(fetch) == "t2"


async def test_concurrent_callers_share_one_fetch() -> None:
    cache = TokenCache(renew_margin_seconds=60.0)
    calls = 0

    async def fetch() -> tuple[str, float]:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)
        return "shared", 3600.0

    assert await asyncio.gather(*(cache.get(fetch) for _ in range(5))) == ["shared"] * 5
    assert calls == 1


# --- http: the client base against a loopback server ------------------------------------------------


class DemoReadError(SourceReadError):
    pass


@dataclass
class Api:
    """A loopback API: ``answers`` are served in order (status, headers, body), then 200 ``{"ok": true}``."""

    answers: list[tuple[int, dict[str, str], Any]] = field(default_factory=list)
    seen: list[dict[str, str]] = field(default_factory=list)
    delay: float = 0.0
    server: test_utils.TestServer | None = None

    async def handle(self, request: web.Request) -> web.Response:
        self.seen.append(dict(request.headers))
        if self.delay:
            await asyncio.sleep(self.delay)
        status, headers, body = self.answers.pop(0) if self.answers else (200, {}, {"ok": True})
        return web.json_response(body, status=status, headers=headers)

    def url(self) -> str:
        assert self.server is not None
        return str(self.server.make_url("/items"))


class DemoClient(JsonApiClient):
    """Bearer tokens ``t1``, ``t2`` ...; 429 and 5xx are transient, anything else but 200 is final."""

    error_type = DemoReadError

    def __init__(self, *, bearer: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.bearer = bearer
        self.tokens = TokenCache(renew_margin_seconds=60.0)
        self.refused: list[str] = []

    async def _fetch(self) -> tuple[str, float]:
        return f"t{self.tokens.fetched + 1}", 3600.0

    async def authorize(self, headers: dict[str, str], *, refused: str | None) -> str | None:
        if not self.bearer:
            return None
        if refused is not None:
            self.refused.append(refused)
        token = await self.tokens.get(self._fetch, force=refused is not None)
        headers["Authorization"] = f"Bearer {token}"
        return token

    async def interpret(self, response: aiohttp.ClientResponse) -> Any:
        if response.status == 429 or response.status >= 500:
            raise Retryable(response.status, retry_after(response))
        if response.status != 200:
            raise DemoReadError(f"http_{response.status}")
        return await response.json()


@pytest.fixture
async def api() -> AsyncIterator[Api]:
    state = Api()
    app = web.Application()
    app.router.add_get("/items", state.handle)
    state.server = test_utils.TestServer(app)
    try:
        await state.server.start_server()
        yield state
    finally:
        await state.server.close()


@pytest.fixture
async def client() -> AsyncIterator[DemoClient]:
    async with DemoClient(retry=FAST) as demo:
        yield demo


async def test_a_get_sends_accept_and_the_bearer_token(api: Api, client: DemoClient) -> None:
    assert await client.fetch_json(api.url(), {"a": "1"}, headers={"Prefer": "x"}) == {"ok": True}
    assert api.seen[0]["Accept"] == "application/json"
    assert api.seen[0]["Authorization"] == "Bearer t1"
    assert api.seen[0]["Prefer"] == "x"
    assert client.requests == 1


async def test_a_401_renews_the_token_once(api: Api, client: DemoClient) -> None:
    api.answers = [(401, {}, {})]
    assert await client.fetch_json(api.url()) == {"ok": True}
    assert [h["Authorization"] for h in api.seen] == ["Bearer t1", "Bearer t2"]
    assert client.refused == ["t1"]
    api.answers = [(401, {}, {}), (401, {}, {})]
    with pytest.raises(DemoReadError) as raised:
        await client.fetch_json(api.url())
    assert raised.value.code == "http_401"  # refused again: the client's own meaning of a 401
    assert client.requests == 4


async def test_without_a_bearer_token_a_401_is_final(api: Api) -> None:
    api.answers = [(401, {}, {})]
    async with DemoClient(bearer=False, retry=FAST) as plain:
        with pytest.raises(DemoReadError, match="http_401"):
            await plain.fetch_json(api.url())
    assert len(api.seen) == 1
    assert "Authorization" not in api.seen[0]


async def test_transient_answers_are_retried_honouring_retry_after(api: Api, client: DemoClient) -> None:
    api.answers = [(429, {"Retry-After": "0.15"}, {}), (503, {}, {})]
    began = asyncio.get_running_loop().time()
    assert await client.fetch_json(api.url()) == {"ok": True}
    assert asyncio.get_running_loop().time() - began >= 0.14
    assert len(api.seen) == 3


async def test_a_long_retry_after_is_cut_to_the_policy_maximum(api: Api, client: DemoClient) -> None:
    api.answers = [(429, {"Retry-After": "3600"}, {})]
    began = asyncio.get_running_loop().time()
    assert await client.fetch_json(api.url()) == {"ok": True}
    assert asyncio.get_running_loop().time() - began < 2.0


async def test_retries_used_up_become_the_clients_error(api: Api, client: DemoClient) -> None:
    api.answers = [(500, {}, {})] * 3
    with pytest.raises(DemoReadError) as raised:
        await client.fetch_json(api.url())
    assert raised.value.code == "http_500"
    assert isinstance(raised.value.__cause__, Retryable)
    assert len(api.seen) == FAST.attempts


async def test_a_final_answer_is_not_retried(api: Api, client: DemoClient) -> None:
    api.answers = [(404, {}, {})]
    with pytest.raises(DemoReadError, match="http_404"):
        await client.fetch_json(api.url())
    assert len(api.seen) == 1


async def test_timeouts_and_connection_errors_have_their_codes(api: Api) -> None:
    api.delay = 0.3
    async with DemoClient(request_timeout_seconds=0.05, retry=RetryPolicy(attempts=1)) as slow:
        with pytest.raises(DemoReadError) as raised:
            await slow.fetch_json(api.url())
    assert raised.value.code == "timeout"
    async with DemoClient(retry=FAST) as demo:
        with pytest.raises(DemoReadError) as refused:
            await demo.fetch_json("http://127.0.0.1:9/items")  # discard port: nobody listens
    assert refused.value.code == "connection"


async def test_the_session_exists_only_between_start_and_close() -> None:
    demo = DemoClient()
    with pytest.raises(RuntimeError, match="not started"):
        _ = demo.session
    await demo.start()
    session = demo.session
    await demo.start()
    assert demo.session is session
    await demo.close()
    await demo.close()
    with pytest.raises(RuntimeError):
        _ = demo.session


# --- runs: the report, the publisher, the state document --------------------------------------------


def record(key: str, kind: EntityKind = EntityKind.PERSON) -> SourceRecord:
    return SourceRecord(kind=kind, key=key, data={})


def test_the_report_collects_error_codes_once_and_at_most_fifty() -> None:
    report = RunReport(tenant_id="kommun-a", source_id="api", started_at=NOW)
    assert report.healthy
    report.add_error("persons:http_500")
    report.add_error("persons:http_500")
    assert report.errors == ["persons:http_500"]
    assert not report.healthy
    for n in range(100):
        report.add_error(f"code_{n}")
    assert len(report.errors) == 50
    report.count([record("a"), record("b"), record("s", EntityKind.SCHOOL_UNIT)])
    assert report.counts == {EntityKind.PERSON: 2, EntityKind.SCHOOL_UNIT: 1}
    assert report.run_id != RunReport(tenant_id="kommun-a", source_id="api", started_at=NOW).run_id


def test_times() -> None:
    assert millis(datetime(2026, 1, 1, 12, 0, 0, 123456, tzinfo=UTC)).microsecond == 123000
    assert aware(datetime(2026, 1, 1)).tzinfo is UTC
    assert aware(NOW) is NOW


@dataclass
class Published:
    envelope: Envelope
    exchange: str
    routing_key: str


class CapturingPublisher:
    def __init__(self) -> None:
        self.sent: list[Published] = []

    async def publish(self, envelope: Envelope, *, exchange: str, routing_key: str) -> None:
        self.sent.append(Published(envelope, exchange, routing_key))


async def test_a_run_is_published_as_started_pages_completed() -> None:
    publisher = CapturingPublisher()
    report = RunReport(tenant_id="kommun-a", source_id="api", started_at=NOW)
    out = RunPublisher(
        publisher,  # type: ignore[arg-type]
        "skolsynk.source",
        Source(),
        report.run_id,
        source_kind="demo",
        producer="demo-connector",
        page_items=2,
    )
    await out.started(report, mode="full")
    records = [record(str(n)) for n in range(5)]
    report.count(records)
    await out.page(records)
    await out.page([])  # nothing to send: no page
    await out.page([], [SourceDeletion(kind=EntityKind.PERSON, key="gone")])
    report.add_error("persons:unmappable")
    await out.completed(report)

    assert report.pages == out.pages == 4
    types = [p.envelope.message_type for p in publisher.sent]
    assert types == ["source.run.started"] + ["source.records"] * 4 + ["source.run.completed"]
    for sent in publisher.sent:
        assert (sent.exchange, sent.routing_key) == ("skolsynk.source", "demo.kommun-a")
        assert sent.envelope.tenant_id == "kommun-a"
        assert sent.envelope.correlation_id == report.run_id
        assert sent.envelope.producer == "demo-connector"
    started, *pages, completed = (p.envelope.payload for p in publisher.sent)
    assert started["mode"] == "full"
    assert started["source_kind"] == "demo"
    assert [p["page"] for p in pages] == [0, 1, 2, 3]
    assert [len(p["records"]) for p in pages] == [2, 2, 1, 0]
    assert pages[-1]["deletions"] == [{"kind": "person", "key": "gone"}]
    assert completed["pages"] == 4
    assert completed["counts"] == {"person": 5}
    assert (completed["healthy"], completed["errors"]) == (False, ["persons:unmappable"])


def test_the_state_of_a_finished_run() -> None:
    source = Source()
    report = RunReport(tenant_id="kommun-a", source_id="api", started_at=NOW, pages=3)
    finished = NOW + timedelta(minutes=2)
    fields = RunStateStore.run_fields(source, report, mode="full", finished_at=finished, reason="schedule")
    assert fields == {
        "tenant_id": "kommun-a",
        "source_id": "api",
        "last_full_run": {
            "run_id": str(report.run_id),
            "started_at": NOW,
            "finished_at": finished,
            "healthy": True,
            "pages": 3,
            "errors": [],
            "reason": "schedule",
        },
        "updated_at": finished,
        "last_full_success_at": NOW,
    }
    incremental = RunStateStore.run_fields(source, report, mode="incremental", finished_at=finished)
    assert "last_incremental_run" in incremental
    assert "last_full_success_at" not in incremental
    report.add_error("x")
    assert "last_full_success_at" not in RunStateStore.run_fields(source, report, mode="full", finished_at=finished)


# --- scheduling: what is due ----------------------------------------------------------------------


def ran(minutes_ago: float, *, healthy: bool = True) -> dict[str, Any]:
    at = NOW - timedelta(minutes=minutes_ago)
    return {"started_at": at, "finished_at": at, "healthy": healthy}


def due(state: dict[str, Any], *, incremental: float | None = 15 * 60) -> str | None:
    return due_mode(
        state,
        NOW,
        full_interval_seconds=24 * 3600,
        failed_retry_seconds=10 * 60,
        incremental_interval_seconds=incremental,
    )


def test_what_run_is_due() -> None:
    assert due({}) == "full"
    fresh = {"last_full_success_at": NOW - timedelta(hours=1), "last_full_run": ran(60)}
    assert due(fresh) == "incremental"
    assert due({**fresh, "last_incremental_run": ran(5)}) is None
    assert due({**fresh, "last_incremental_run": ran(15)}) == "incremental"
    assert due(fresh, incremental=None) is None  # a source without increments
    stale = {"last_full_success_at": NOW - timedelta(hours=25), "last_full_run": ran(25 * 60)}
    assert due({**stale, "last_incremental_run": ran(1)}) == "full"
    assert due({"last_full_run": ran(5, healthy=False)}) is None  # failed recently: wait
    assert due({"last_full_run": ran(11, healthy=False)}) == "full"
    naive = {"last_full_success_at": (NOW - timedelta(hours=1)).replace(tzinfo=None), "last_full_run": ran(60)}
    assert due(naive, incremental=None) is None  # MongoDB gives naive UTC times back


# --- scheduling: the coordinator ------------------------------------------------------------------


class StubClient:
    def __init__(self) -> None:
        self.started = self.closed = 0

    async def start(self) -> None:
        self.started += 1

    async def close(self) -> None:
        self.closed += 1


class StubState:
    def __init__(self) -> None:
        self.doc: dict[str, Any] | None = None

    async def get(self, source: Source) -> dict[str, Any] | None:
        return self.doc


class Demo(SourceConnector[Source, StubClient, str, str]):
    sync_requested = "demo_sync_requested"
    triggered_run_failed = "demo_triggered_run_failed"
    scheduled_run_failed = "demo_scheduled_run_failed"
    task_prefix = "demo-run"
    unknown_source = "no such demo source"

    def __init__(self, sources: list[Source], *, scheduling: bool = False) -> None:
        super().__init__(
            sources,
            publisher=None,  # type: ignore[arg-type]
            exchange="x",
            state=StubState(),  # type: ignore[arg-type]
            scheduling=scheduling,
            clock=lambda: NOW,
        )
        self.gate = asyncio.Event()
        self.gate.set()
        self.runs: list[tuple[str, str]] = []
        self.active: set[str] = set()
        self.overlapped = False
        self.due_answers: list[str | Exception | None] = []
        self.requested: list[Envelope] = []
        self.fail = False

    def _client(self, source: Source) -> StubClient:
        if source.broken:
            raise ConfigurationError("the environment variable DEMO_SECRET is not set")
        return StubClient()

    async def _run(self, source: Source, request: str) -> str:
        if source.key in self.active:
            self.overlapped = True
        self.active.add(source.key)
        try:
            await self.gate.wait()
            await asyncio.sleep(0.001)
            self.runs.append((source.source_id, request))
            if self.fail:
                raise RuntimeError("boom")
            return f"{source.source_id}:{request}"
        finally:
            self.active.discard(source.key)

    def _merge(self, waiting: str, new: str) -> str:
        return "full" if "full" in (waiting, new) else waiting

    async def handle_sync_requested(self, envelope: Envelope, context: Any) -> None:
        self.requested.append(envelope)

    def trigger_requested(self, source: Source, request: SyncRequested) -> bool:
        return self.run_soon(source, request.mode)

    async def due(self, source: Source) -> str | None:
        answer = self.due_answers.pop(0) if self.due_answers else None
        if isinstance(answer, Exception):
            raise answer
        return answer

    def _poll_interval(self, source: Source) -> float:
        return 0.01


class RequestedDemo(Demo):
    """The base class's handling of sync requests (Demo records them instead)."""

    handle_sync_requested = SourceConnector.handle_sync_requested  # type: ignore[assignment]


async def until(condition: Callable[[], bool], what: str) -> None:
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"timed out waiting for {what}")


def test_sources_are_found_by_tenant_and_id() -> None:
    demo = Demo([Source(), Source(source_id="other")])
    assert demo.source("kommun-a", "other").source_id == "other"
    with pytest.raises(UnknownSource):
        demo.source("kommun-b", "api")
    with pytest.raises(PermanentError, match="no such demo source"):
        demo.requested_source("kommun-b", "api")


async def test_one_run_at_a_time_per_source_and_reports_are_kept() -> None:
    a, b = Source(), Source(source_id="b")
    demo = Demo([a, b])
    assert await asyncio.gather(demo.run_now(a, "full"), demo.run_now(a, "incremental"), demo.run_now(b, "x")) == [
        "api:full",
        "api:incremental",
        "b:x",
    ]
    assert not demo.overlapped
    assert sorted(demo.reports) == ["api:full", "api:incremental", "b:x"]  # b did not wait for a
    assert [r for r in demo.reports if r.startswith("api:")] == ["api:full", "api:incremental"]
    for _ in range(120):
        await demo.run_now(b, "x")
    assert len(demo.reports) == 100


async def test_triggers_that_wait_are_merged_and_one_during_a_run_runs_once_more() -> None:
    source = Source()
    demo = Demo([source])
    demo.gate.clear()
    assert demo.run_soon(source, "incremental")
    await until(lambda: source.key in demo.active, "the first run to start")
    # During the run: the first trigger queues one more run, the rest are merged into it.
    assert demo.run_soon(source, "incremental")
    assert not demo.run_soon(source, "full")
    assert not demo.run_soon(source, "incremental")
    demo.gate.set()
    await until(lambda: len(demo.reports) == 2, "two runs")
    await asyncio.sleep(0.02)
    assert demo.runs == [("api", "incremental"), ("api", "full")]
    await demo.close()


async def test_a_failed_triggered_run_is_logged_and_close_ends_what_is_left() -> None:
    source = Source()
    demo = Demo([source])
    await demo.start()
    demo.fail = True
    assert demo.run_soon(source, "full")
    await until(lambda: demo.runs == [("api", "full")], "the failing run")
    await until(lambda: not demo._triggered, "the task to end")
    demo.fail = False
    demo.gate.clear()
    assert demo.run_soon(source, "full")  # nothing waits any more: a new run
    await until(lambda: source.key in demo.active, "the second run to start")
    await demo.close()
    assert not demo._triggered
    client = demo.clients[source.key]
    assert (client.started, client.closed) == (1, 1)


async def test_the_schedule_runs_what_is_due_and_survives_failures() -> None:
    source = Source()
    demo = Demo([source])
    demo.due_answers = [None, RuntimeError("state unreachable"), "full", None, "incremental"]
    task = asyncio.create_task(demo.schedule(source, poll_seconds=5.0))
    await until(lambda: len(demo.runs) == 2, "two scheduled runs")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert demo.runs == [("api", "full"), ("api", "incremental")]


# --- config: the sources file and secrets ---------------------------------------------------------


class Entry(BaseModel):
    tenant_id: str
    source_id: str

    @property
    def key(self) -> str:
        return f"{self.tenant_id}:{self.source_id}"


ENTRIES = TypeAdapter(list[Entry])


def test_secrets_come_from_the_environment() -> None:
    assert secret("TOKEN", {"TOKEN": "s3cret"}) == "s3cret"
    for environ in ({}, {"TOKEN": ""}):
        with pytest.raises(ConfigurationError, match="the environment variable TOKEN is not set"):
            secret("TOKEN", environ)
    with pytest.raises(ConfigurationError):
        secret(None, {"TOKEN": "s3cret"})


def test_the_yaml_file_with_clear_errors(tmp_path: Path) -> None:
    good = tmp_path / "sources.yaml"
    good.write_text("sources:\n  - tenant_id: a\n    source_id: b\n")
    assert load_yaml(good) == {"sources": [{"tenant_id": "a", "source_id": "b"}]}
    with pytest.raises(ConfigurationError, match=r"cannot read the tenants file .*missing\.yaml"):
        load_yaml(tmp_path / "missing.yaml", noun="tenants file")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- tenant_id: a\n- tenant_id: [unclosed: s3cret\n")
    with pytest.raises(ConfigurationError, match=r"bad\.yaml is not valid YAML \(line [0-9]+\)") as raised:
        load_yaml(bad)
    assert "s3cret" not in str(raised.value)
    with pytest.raises(ConfigurationError, match=r"is not YAML \(line"):
        load_yaml(bad, not_yaml="is not YAML")


def test_entries_are_validated_and_unique() -> None:
    entry = {"tenant_id": "a", "source_id": "b"}
    assert parse_entries({"sources": [entry]}, ENTRIES, key="sources") == [Entry(**entry)]
    assert parse_entries([entry], ENTRIES, key="sources") == [Entry(**entry)]
    assert parse_entries(None, ENTRIES, key="sources") == []
    assert parse_entries({}, ENTRIES, key="sources") == []
    with pytest.raises(ConfigurationError, match="tenants listed twice: a:b"):
        parse_entries({"tenants": [entry, entry]}, ENTRIES, key="tenants")
    with pytest.raises(ValidationError):
        parse_entries([{"tenant_id": "a"}], ENTRIES, key="sources")
    with pytest.raises(ConfigurationError, match=r"^1 problem in 1 entries$"):
        parse_entries(
            [{"tenant_id": "a"}],
            ENTRIES,
            key="sources",
            describe=lambda error, raw: f"{error.error_count()} problem in {len(raw)} entries",  # type: ignore[arg-type]
        )
    with pytest.raises(ConfigurationError, match="must be a list"):
        parse_entries("nonsense", ENTRIES, key="sources", not_a_list="the file must be a list")


# --- service: wiring ------------------------------------------------------------------------------


class StubApp:
    def __init__(self) -> None:
        self.extensions: dict[str, Any] = {}
        self.consumers: list[tuple[str, Any, bool]] = []
        self.startup: list[Callable[[], Awaitable[None]]] = []
        self.shutdown: list[Callable[[], Awaitable[None]]] = []
        self.background: dict[str, Callable[[], Awaitable[None]]] = {}

    def queue_name(self, service: str, purpose: str) -> str:
        return f"skolsynk.{service}.{purpose}"

    def add_consumer(self, queue_name: str, handler: Any, *, idempotent: bool = True) -> None:
        self.consumers.append((queue_name, handler, idempotent))

    def add_startup(self, hook: Callable[[], Awaitable[None]]) -> None:
        self.startup.append(hook)

    def add_shutdown(self, hook: Callable[[], Awaitable[None]]) -> None:
        self.shutdown.append(hook)

    def add_background(self, name: str, task: Callable[[], Awaitable[None]]) -> None:
        self.background[name] = task


class StubFollower:
    kind = SS12000
    store = SimpleNamespace(box=SecretBox(None))

    async def load(self) -> None: ...

    async def refresh(self) -> bool:
        return False

    async def follow(self) -> None: ...


async def test_mount_wires_the_queue_the_lifecycle_and_the_registry() -> None:
    demo = Demo([Source(), Source(source_id="b")])
    app = StubApp()
    follower = StubFollower()
    connector_service.mount(app, demo, kind="demo", registry=follower, idempotent=False)  # type: ignore[arg-type]
    assert app.extensions == {"connector": demo, "registry": follower}
    assert app.consumers == [("skolsynk.demo.sync-requests", demo.handle_sync_requested, False)]
    assert app.startup == [demo.start, follower.load]  # the sources are read before the service is ready
    assert app.shutdown == [demo.close]
    assert list(app.background) == ["follow-sources"]
    assert demo.refresh == follower.refresh
    assert demo.checking == Checking(SS12000, follower.store.box)  # checks build sources as the registry does
    static = StubApp()
    connector_service.mount(static, demo, kind="demo", registry=None)  # type: ignore[arg-type]
    assert static.background == {}
    assert static.consumers == [("skolsynk.demo.sync-requests", demo.handle_sync_requested, True)]


async def test_scheduling_runs_a_loop_per_source_from_start_to_close() -> None:
    demo = Demo([Source(), Source(source_id="b")], scheduling=True)
    demo.due_answers = ["full", "full"]
    await demo.start()
    await until(lambda: sorted(demo.runs) == [("api", "full"), ("b", "full")], "a scheduled run of each")
    assert set(demo._loop_tasks) == {"kommun-a:api", "kommun-a:b"}
    await demo.close()
    assert demo._loop_tasks == {}
    assert [c.closed for c in demo.clients.values()] == [1, 1]


async def test_set_sources_adds_replaces_and_retires_sources_while_running() -> None:
    kept, changed, gone = Source(), Source(source_id="b"), Source(source_id="c")
    demo = Demo([kept, changed, gone], scheduling=True)
    await demo.start()
    clients = dict(demo.clients)
    demo.gate.clear()
    assert demo.run_soon(gone, "full")  # a run in progress of a source that goes away is cancelled
    await until(lambda: gone.key in demo.active, "the run of c to start")
    assert demo.run_soon(gone, "incremental")  # ... and so is the one waiting behind it
    new = Source(source_id="d")
    problems = await demo.set_sources([kept, changed.model_copy(update={"url": "https://moved.example"}), new])
    assert problems == {}
    assert sorted(demo.sources) == ["kommun-a:api", "kommun-a:b", "kommun-a:d"]
    assert demo.sources["kommun-a:b"].url == "https://moved.example"
    assert demo.clients["kommun-a:api"] is clients["kommun-a:api"]  # unchanged: left alone
    assert clients["kommun-a:b"].closed == 1
    assert demo.clients["kommun-a:b"] is not clients["kommun-a:b"]
    assert demo.clients["kommun-a:b"].started == 1
    assert demo.clients["kommun-a:d"].started == 1
    assert clients["kommun-a:c"].closed == 1
    assert set(demo._loop_tasks) == {"kommun-a:api", "kommun-a:b", "kommun-a:d"}
    assert demo._triggered == {}
    assert demo._pending == {}
    assert demo._slot_source == {}
    assert gone.key not in demo.active
    demo.gate.set()
    demo.due_answers = ["full"]
    await until(lambda: len(demo.runs) == 1, "a scheduled run after the change")
    assert demo.runs[0][0] in {"api", "b", "d"}  # the cancelled run of c never finished
    with pytest.raises(UnknownSource):
        demo.source("kommun-a", "c")
    await demo.close()


async def test_a_source_that_cannot_be_served_is_reported_and_the_others_run_on() -> None:
    demo = Demo([Source()], scheduling=True)
    await demo.start()
    problems = await demo.set_sources([Source(), Source(source_id="bad", broken=True)])
    assert problems == {"kommun-a:bad": "the environment variable DEMO_SECRET is not set"}
    assert list(demo.sources) == ["kommun-a:api"]
    await demo.close()


async def test_a_sync_request_for_a_source_not_served_yet_asks_the_registry_once() -> None:
    demo = RequestedDemo([])
    await demo.start()
    asked: list[str] = []

    async def refresh() -> None:
        asked.append("refresh")
        await demo.set_sources([Source()])

    demo.refresh = refresh
    request = SyncRequested(source_id="api", mode="full", requested_by="admin-ui")
    await demo.handle_sync_requested(request.to_envelope(tenant_id="kommun-a"), None)
    await until(lambda: demo.runs == [("api", "full")], "the requested run")
    assert asked == ["refresh"]
    with pytest.raises(PermanentError, match="no such demo source"):
        await demo.handle_sync_requested(
            request.model_copy(update={"source_id": "gone"}).to_envelope(tenant_id="kommun-a"), None
        )
    assert asked == ["refresh", "refresh"]
    await demo.close()


def test_a_configuration_error_stops_the_service_with_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    def failing(name: str, settings_type: Any, build: Any) -> None:
        raise ConfigurationError("the environment variable TOKEN is not set")

    monkeypatch.setattr(connector_service, "run_service", failing)
    with pytest.raises(SystemExit) as raised:
        connector_service.run_connector("demo-connector", Any, lambda settings: None)  # type: ignore[arg-type]
    assert str(raised.value) == "demo-connector: the environment variable TOKEN is not set"


def test_run_ids_are_fresh_uuids() -> None:
    assert isinstance(RunReport(tenant_id="a", source_id="b", started_at=NOW).run_id, uuid.UUID)


async def test_a_sync_request_runs_the_named_source_and_refuses_what_it_cannot_serve() -> None:
    demo = RequestedDemo([Source(), Source(source_id="other")])
    request = SyncRequested(source_id="other", mode="incremental", requested_by="admin-ui")
    await demo.handle_sync_requested(request.to_envelope(tenant_id="kommun-a"), None)
    await until(lambda: demo.runs == [("other", "incremental")], "the requested run")
    with pytest.raises(PermanentError, match="no such demo source"):
        await demo.handle_sync_requested(
            request.model_copy(update={"source_id": "gone"}).to_envelope(tenant_id="kommun-a"), None
        )
    with pytest.raises(PermanentError, match="must name its tenant"):
        await demo.handle_sync_requested(request.to_envelope(), None)
    await demo.close()
