"""The Google connector against the fake Google directory, the real broker and the Mongo wire server.

Most tests collect the runs it publishes from the normaliser's queue (without running the normaliser);
the last one runs the real normaliser on a small organiser and checks what it stores and sends vendors."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from skolsynk.connectors.sources.google import SourceConfig, WatchConfig, parse_sources
from skolsynk.domain.ids import entity_id
from skolsynk.domain.quality import FindingCode
from skolsynk.domain.source_errors import hint_for
from skolsynk.domain.ss12000 import ENTITY_MODELS, EntityKind
from skolsynk.service import ServiceApp
from skolsynk.settings import ServiceSettings
from skolsynk_services.google_connector.app import GoogleConnectorSettings, build
from skolsynk_services.google_connector.connector import GoogleConnector
from skolsynk_services.google_connector.runs import SOURCE_KIND, STATE_COLLECTION, RunReport
from skolsynk_testkit.devstack import free_port
from skolsynk_testkit.fakes.google_directory import FakeGoogleDirectory, LoadedOrganiser, generate_service_account_key
from skolsynk_testkit.synthetic import organiser
from tests.connectors_harness import (
    ConnectorHarness,
    ConnectorTestbed,
    VendorFeed,
    connector_settings,
    connector_testbed,
    start_vendor_feed,
)
from tests.helpers import wait_for
from tests.official_clients import discovery_document, google_request_problems

pytestmark = [pytest.mark.connected, pytest.mark.timeout(120)]

EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "google-sources.example.yaml"
TENANT = "demo-kommun"
SOURCE = "google-workspace"
ADMIN = "admin@demo.skolsynk.example"
KEY_ENV = "GOOGLE_DEMO_KOMMUN_SERVICE_ACCOUNT_KEY"
ATTEMPTS = 6
#: Throttling storms need more attempts than the other connectors' tests, and no time between them.
RETRY = {"attempts": ATTEMPTS, "wait_initial_seconds": 0.002, "wait_max_seconds": 0.01}


@pytest.fixture(scope="module")
def key() -> dict[str, str]:
    return generate_service_account_key(client_email="skolsynk@demo-kommun.iam.gserviceaccount.com")


@dataclass(kw_only=True)
class Harness(ConnectorHarness[FakeGoogleDirectory, SourceConfig, GoogleConnector]):
    loaded: LoadedOrganiser

    def user_requests(self) -> list[Any]:
        return [r for r in self.fake.requests if r.endpoint == "users"]


def source_config(fake: FakeGoogleDirectory, **overrides: Any) -> SourceConfig:
    raw = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))["sources"][0]
    raw.update(api_base_url=fake.base_url, token_url=fake.token_url, **overrides)
    return parse_sources([raw])[0]


async def start_fake(
    testbed: ConnectorTestbed, key: dict[str, str], organiser_options: dict[str, Any]
) -> tuple[FakeGoogleDirectory, LoadedOrganiser]:
    fake = await testbed.start_fake(FakeGoogleDirectory(admins=[ADMIN]))
    fake.add_service_account(key)
    fake.add_user(ADMIN, "Admin", "Demo", audit=False)
    loaded = fake.load_organiser(organiser(**organiser_options))
    return fake, loaded


HarnessFactory = Callable[..., Awaitable[Harness]]
SMALL = {"seed": 3, "school_units": 2, "students_per_unit": 40, "teachers_per_unit": 2}


@pytest.fixture
async def make_harness(settings: ServiceSettings, make_app: Any, key: dict[str, str]) -> AsyncIterator[HarnessFactory]:
    async with connector_testbed(settings, make_app) as testbed:

        async def factory(
            *,
            schedule: bool = False,
            organiser_options: dict[str, Any] | None = None,
            collector: bool = True,
            connector_options: dict[str, Any] | None = None,
            **source_overrides: Any,
        ) -> Harness:
            """``collector=False``: nothing takes the runs off the normaliser's queue (a normaliser will)."""
            if collector:
                await testbed.collect()
            fake, loaded = await start_fake(testbed, key, organiser_options or SMALL)
            source = source_config(fake, **source_overrides)
            app_settings = connector_settings(
                GoogleConnectorSettings,
                settings,
                prefix="google",
                schedule=schedule,
                retry=RETRY,
                **(connector_options or {}),
            )
            app = build(app_settings, sources=[source], environ={KEY_ENV: json.dumps(key)})
            await testbed.start_app(app)
            return Harness(
                testbed=testbed,
                fake=fake,
                app=app,
                source=source,
                connector_type=GoogleConnector,
                kind=SOURCE_KIND,
                state_collection=STATE_COLLECTION,
                run_options={"reason": "test"},
                loaded=loaded,
            )

        yield factory


def assert_requests_are_defined_by_discovery(fake: FakeGoogleDirectory) -> None:
    """Every request the connector made is a method of Google's discovery documents (as shipped with
    google-api-python-client), with declared parameters and valid values. Issue 23."""
    problems = [
        problem
        for record in fake.requests
        if record.path != "/token"
        for problem in google_request_problems(
            discovery_document(
                "admin.reports_v1" if record.path.startswith("/admin/reports/") else "admin.directory_v1"
            ),
            record.method,
            record.path,
            record.query,
        )
    ]
    assert problems == []
    assert any(r.path != "/token" for r in fake.requests)


def add_student(fake: FakeGoogleDirectory, email: str) -> dict[str, Any]:
    """A new student in the same OU and with the same custom fields as a loaded one (no audit event)."""
    student = next(u for u in fake.users.values() if "customSchemas" in u and "/Elever" in u["orgUnitPath"])
    return fake.add_user(
        email,
        "Ny",
        "Elev",
        org_unit_path=student["orgUnitPath"],
        custom_schemas=student["customSchemas"],
        audit=False,
    )


def counts_of(records: list[Any]) -> dict[EntityKind, int]:
    counts: dict[EntityKind, int] = {}
    for record in records:
        counts[record.kind] = counts.get(record.kind, 0) + 1
    return counts


async def test_a_full_run_of_2000_users_over_many_pages(make_harness: HarnessFactory) -> None:
    options = {"seed": 7, "school_units": 4, "students_per_unit": 490, "teachers_per_unit": 10}
    h = await make_harness(organiser_options=options)
    report, completed = await h.run()
    started = h.collected.started(report.run_id)
    assert (started.mode, started.source_kind) == ("full", "google")
    assert completed.healthy
    assert completed.errors == []
    expected = counts_of(organiser(**options))
    assert expected[EntityKind.PERSON] == 2000
    assert completed.counts == expected
    pages = h.collected.pages(report.run_id)
    assert [p.page for p in pages] == list(range(completed.pages))
    # The school units, one page per users.list page (500 users each), then the groups.
    assert completed.pages == 6
    assert [len([r for r in p.records if r.kind is EntityKind.PERSON]) for p in pages] == [0, 500, 500, 500, 500, 0]
    records = [r for p in pages for r in p.records]
    assert counts_of(records) == expected
    for record in records[:50] + records[-50:]:
        ENTITY_MODELS[record.kind].model_validate({**record.data, "key": record.key, "kind": record.kind.value})
    users = h.user_requests()
    assert len(users) == 4
    assert "pageToken" not in users[0].query
    assert all(r.query["maxResults"] == ["500"] and "pageToken" in r.query for r in users[1:])
    assert h.fake.tokens_issued == 1
    for envelope in h.collected.of(report.run_id):
        assert envelope.tenant_id == TENANT
        assert envelope.producer == "google-connector"
    state = await h.state()
    assert state["last_full_run"]["healthy"] is True
    assert state["last_full_run"]["counts"]["person"] == 2000
    assert state["last_full_success_at"] is not None
    assert report.stats.unplaced == 0
    assert sum(roles["student"] for roles in report.stats.by_school_unit.values()) == 1960


async def test_a_rate_limit_storm_still_completes_healthy(make_harness: HarnessFactory) -> None:
    # One request at a time, so "every second request is throttled" throttles each request at most once.
    h = await make_harness(page_size=20, connector_options={"google_members_concurrency": 1})
    h.fake.fail_next(3, "429")
    h.fake.fail_every(2, "userRateLimitExceeded")
    _, completed = await h.run()
    assert completed.healthy
    assert completed.counts == counts_of(organiser(**SMALL))
    statuses = [r.status for r in h.fake.requests if r.endpoint != "token"]
    assert statuses.count(429) == 3
    assert statuses.count(403) >= 20
    assert len(h.user_requests()) >= 2 * 5  # 84 users in pages of 20, each page throttled once
    throttled = h.app.metrics.registry.get_sample_value(
        "skolsynk_google_throttled_requests_total", {"reason": "user_rate_limit_exceeded"}
    )
    assert throttled == statuses.count(403)
    assert h.app.metrics.registry.get_sample_value("skolsynk_google_runs_total", {"outcome": "healthy"}) == 1


@pytest.mark.parametrize(
    ("fault", "code", "requests_for_page", "needs_admin"),
    [("forbidden", "users:forbidden", 1, True), ("internalError", "users:internal_error", ATTEMPTS, False)],
)
async def test_a_run_failing_midway_is_unhealthy_and_stops(
    make_harness: HarnessFactory, fault: str, code: str, requests_for_page: int, needs_admin: bool
) -> None:
    h = await make_harness(page_size=20)
    h.fake.fail_page("users", 2, fault)
    report, completed = await h.run()
    assert not completed.healthy
    assert completed.errors == [code]
    # What was read before the failure is sent; nothing after it (no groups): the normaliser removes nothing.
    pages = h.collected.pages(report.run_id)
    assert len(pages) == completed.pages == 3
    assert completed.counts[EntityKind.PERSON] == 40
    assert EntityKind.GROUP not in completed.counts
    assert [r.status for r in h.user_requests() if r.page == 2] == [403 if fault == "forbidden" else 500] * (
        requests_for_page
    )
    state = await h.state()
    assert state["last_full_run"]["healthy"] is False
    assert state["last_full_run"]["errors"] == [code]
    assert "last_full_success_at" not in state
    hint = hint_for("google", code)
    assert hint is not None
    assert hint.needs_admin is needs_admin


@pytest.mark.parametrize("problem", ["unknown_admin", "scopes_not_delegated", "forced_invalid_grant"])
async def test_auth_errors_abort_the_run_with_the_right_code(make_harness: HarnessFactory, problem: str) -> None:
    overrides = {"delegated_admin": "not-an-admin@demo.skolsynk.example"} if problem == "unknown_admin" else {}
    h = await make_harness(**overrides)
    if problem == "scopes_not_delegated":
        h.fake.set_delegated_scopes(h.connector.clients[h.source.key].credentials.client_email, [])
    if problem == "forced_invalid_grant":
        h.fake.fail_token("invalid_grant")
    report, completed = await h.run()
    expected = "token:unauthorized_client" if problem == "scopes_not_delegated" else "token:invalid_grant"
    assert not completed.healthy
    assert completed.errors == [expected]
    assert completed.pages == 0
    assert completed.counts == {}
    assert [r.endpoint for r in h.fake.requests] == ["token"]  # not retried, nothing else asked
    hint = hint_for("google", expected)
    assert hint is not None
    assert hint.needs_admin
    assert "delegat" in hint.fix
    assert h.app.metrics.registry.get_sample_value("skolsynk_google_run_errors_total", {"code": expected}) == 1
    assert report.errors == [expected]


async def test_a_sync_request_triggers_a_run(make_harness: HarnessFactory) -> None:
    h = await make_harness()
    for source_id in ("no-such-source", SOURCE):
        await h.request_sync(source_id, tenant_id=TENANT, requested_by="admin-ui")
    run_id = await h.nth_run(1, what="a requested run")
    assert h.collected.runs() == [run_id]
    completed = h.collected.completed(run_id)
    assert completed is not None
    assert completed.healthy
    await wait_for(lambda: len(h.connector.reports) == 1, what="the run's report")
    assert h.connector.reports[-1].reason == "request:admin-ui"
    # A request for a source this connector does not have is dead-lettered, visibly.
    assert len(await h.dead_lettered_requests()) == 1


async def test_schedule_runs_at_start_and_reports_events_trigger_an_early_run(make_harness: HarnessFactory) -> None:
    h = await make_harness(
        schedule=True, reports={"enabled": True, "poll_interval_seconds": 0.1, "overlap_seconds": 600}
    )
    await h.nth_run(1, what="the scheduled run")
    await wait_for(lambda: len(h.connector.reports) == 1, what="the run's report")
    assert h.connector.reports[0].reason == "schedule"

    async def cursor_set() -> bool:
        return "reports_cursor" in await h.state()

    await wait_for(cursor_set, what="the first Reports API poll")
    leaver = h.loaded.user_ids["student-0-3"]
    h.fake.suspend_user(leaver)  # records a SUSPEND_USER audit event
    second = await h.nth_run(2, what="a run triggered by the audit event")
    await wait_for(lambda: len(h.connector.reports) == 2, what="the run's report")
    assert h.connector.reports[1].reason == "reports"
    persons = {r.key for p in h.collected.pages(second) for r in p.records if r.kind is EntityKind.PERSON}
    assert leaver not in persons
    assert h.connector.reports[1].leavers == 1
    # The same event is not acted on twice: more polls, no more runs.
    polls = sum(1 for r in h.fake.requests if r.endpoint == "activities")
    await wait_for(
        lambda: sum(1 for r in h.fake.requests if r.endpoint == "activities") >= polls + 3, what="three more polls"
    )
    assert len(h.collected.runs()) == 2
    assert_requests_are_defined_by_discovery(h.fake)


# --- with the real normaliser ---------------------------------------------------------------------


@dataclass
class NormalisedHarness:
    h: Harness
    feed: VendorFeed

    @property
    def normaliser(self) -> ServiceApp:
        return self.feed.normaliser

    async def run(self) -> tuple[RunReport, dict[str, Any]]:
        report: RunReport = await self.h.connector.run(self.h.source, reason="test")
        return report, await self.feed.settled(report.run_id)

    def take(self) -> set[tuple[str, str, uuid.UUID]]:
        return self.feed.take()

    async def entity(self, kind: EntityKind, key: str) -> dict[str, Any] | None:
        return await self.normaliser.db["entities"].find_one({"_id": str(entity_id(TENANT, SOURCE, kind, key))})


@pytest.fixture
async def normalised(make_harness: HarnessFactory) -> NormalisedHarness:
    h = await make_harness(
        organiser_options={"seed": 11, "school_units": 2, "students_per_unit": 20, "teachers_per_unit": 1},
        collector=False,
    )
    codes = [unit.school_unit_code for unit in _units(organiser(seed=11, school_units=2))]
    return NormalisedHarness(h, await start_vendor_feed(h.testbed, tenant_id=TENANT, school_unit_codes=codes))


@dataclass(frozen=True)
class _Unit:
    key: str
    school_unit_code: str


def _units(records: list[Any]) -> list[_Unit]:
    return [_Unit(r.key, r.data["school_unit_code"]) for r in records if r.kind is EntityKind.SCHOOL_UNIT]


async def test_a_second_run_with_changes_gives_the_expected_normalised_changes(normalised: NormalisedHarness) -> None:
    n = normalised
    h = n.h
    ids = h.loaded.user_ids
    groups = h.loaded.group_ids
    unit_codes = {u.key: u.school_unit_code for u in _units(organiser(seed=11, school_units=2))}
    _, outcome = await n.run()
    assert outcome == {"complete": True, "reasons": [], "removed": 0}
    first = n.take()
    assert ("person", "upsert", entity_id(TENANT, SOURCE, EntityKind.PERSON, ids["student-0-0"])) in first
    assert len(first) == await n.normaliser.db["entities"].count_documents({"tenant_id": TENANT})

    # Changes: a student moves to the other school unit, one is suspended (a leaver), one joins another
    # class, and a new user lands in an OU that is no school unit.
    moved, leaver, joiner = ids["student-0-0"], ids["student-0-1"], ids["student-1-2"]
    h.fake.move_user(moved, f"{h.loaded.unit_org_units['unit-1']}/Elever")
    h.fake.suspend_user(leaver)
    h.fake.add_member(groups["class-1-4"], joiner)
    stray = h.fake.add_user("vilsen@demo.skolsynk.example", "Vilsen", "Användare", org_unit_path="/Skolor")["id"]
    _, outcome = await n.run()
    assert outcome == {"complete": True, "reasons": [], "removed": 1}

    def eid(kind: EntityKind, key: str) -> uuid.UUID:
        return entity_id(TENANT, SOURCE, kind, key)

    assert n.take() == {
        ("person", "upsert", eid(EntityKind.PERSON, moved)),
        ("person", "delete", eid(EntityKind.PERSON, leaver)),
        ("group", "upsert", eid(EntityKind.GROUP, groups["class-0-2"])),  # the leaver's class
        ("group", "upsert", eid(EntityKind.GROUP, groups["class-1-4"])),  # the new member's
    }
    moved_entity = await n.entity(EntityKind.PERSON, moved)
    assert moved_entity is not None
    assert moved_entity["data"]["enrolments"][0]["school_unit"] == unit_codes["unit-1"]
    assert await n.entity(EntityKind.PERSON, leaver) is None
    joined = await n.entity(EntityKind.GROUP, groups["class-1-4"])
    assert joined is not None
    assert {"person": joiner} in [{"person": m["person"]} for m in joined["data"]["memberships"]]
    # The user without a school unit is stored and reported, not dropped silently.
    assert await n.entity(EntityKind.PERSON, stray) is not None
    finding = await n.normaliser.db["dq_findings"].find_one(
        {"code": FindingCode.PERSON_NO_ACTIVE_RELATION.value, "source_key": stray}
    )
    assert finding is not None

    # A run that fails midway removes nothing, even what it did not get to read.
    persons_before = await n.normaliser.db["entities"].count_documents({"kind": "person"})
    h.fake.delete_user(ids["student-1-5"])
    h.fake.fail_page("users", 0, "forbidden")
    report, outcome = await n.run()
    assert report.errors == ["users:forbidden"]
    assert outcome["complete"] is False
    assert outcome["removed"] == 0
    assert n.take() == set()
    assert await n.normaliser.db["entities"].count_documents({"kind": "person"}) == persons_before
    incomplete = await n.normaliser.db["dq_findings"].find_one({"code": FindingCode.RUN_INCOMPLETE.value})
    assert incomplete is not None
    assert datetime.now(UTC) >= report.started_at


async def test_the_whole_domain_is_listed_not_searched_so_index_lag_loses_no_one(make_harness: HarnessFactory) -> None:
    """Google's search results can lag up to 36 hours behind a new or moved user. With the whole domain in
    scope the connector lists by customer with no query, so a user the index does not know yet is in the
    snapshot (a complete snapshot without them would delete them at every vendor). Issue 23."""
    mapping = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))["sources"][0]["mapping"]
    h = await make_harness(mapping={**mapping, "scope": ["/"]})
    h.fake.lag_search_index()
    newcomer = add_student(h.fake, "nykomling@demo.skolsynk.example")
    report, completed = await h.run()
    assert completed.healthy
    assert all("query" not in r.query for r in h.user_requests())
    persons = [r for p in h.collected.pages(report.run_id) for r in p.records if r.kind is EntityKind.PERSON]
    assert any(newcomer["primaryEmail"] in json.dumps(r.data) for r in persons)
    assert_requests_are_defined_by_discovery(h.fake)


async def test_a_user_the_lagging_search_misses_is_read_directly_before_counting_as_gone(
    make_harness: HarnessFactory,
) -> None:
    """A searched scope (``/Skolor``): a user of the last snapshot whom a lagging index no longer finds is
    read with users.get and stays in the snapshot; a user Google
    deleted answers 404 there and is gone; one moved out of the scope is gone too. Issue 23."""
    h = await make_harness()
    _, before = await h.run()
    assert before.healthy
    students = sorted(
        (u for u in h.fake.users.values() if "customSchemas" in u and "/Skolor/" in u["orgUnitPath"]),
        key=lambda u: u["id"],
    )
    moved, deleted, left = students[0], students[1], students[2]
    h.fake.lag_search_index()
    h.fake.add_org_unit("/Utanför")
    # The index places the first one elsewhere for now (a change not indexed yet): the search misses them.
    h.fake.search_index[moved["id"]]["orgUnitPath"] = "/Arkiv"
    h.fake.delete_user(deleted["id"], audit=False)
    h.fake.move_user(left["id"], "/Utanför", audit=False)
    h.fake.search_index[left["id"]]["orgUnitPath"] = "/Arkiv"
    report, completed = await h.run()
    assert completed.healthy
    assert report.index_lag == 1
    gets = [r for r in h.user_requests() if r.path.rsplit("/", 1)[-1] in {moved["id"], deleted["id"], left["id"]}]
    assert len(gets) == 3  # read directly, once each
    persons = [r for p in h.collected.pages(report.run_id) for r in p.records if r.kind is EntityKind.PERSON]
    emails = json.dumps([r.data for r in persons])
    assert moved["primaryEmail"] in emails
    assert deleted["primaryEmail"] not in emails
    assert left["primaryEmail"] not in emails
    assert completed.counts[EntityKind.PERSON] == before.counts[EntityKind.PERSON] - 2
    assert_requests_are_defined_by_discovery(h.fake)


# --- Directory push notifications (users.watch) ------------------------------------------------------


async def test_push_notifications_trigger_a_run_and_channels_are_kept_and_stopped(make_harness: HarnessFactory) -> None:
    """Where the operator exposes the webhook, each watched event has a channel; a user added in Google is
    in a run within seconds of the notification (not at the next scheduled snapshot); a forged notification
    is refused; turning the source's watch off stops its channels at Google. Issue 23."""
    port = free_port()
    h = await make_harness(
        schedule=True,
        connector_options={
            "google_webhook_url": f"http://127.0.0.1:{port}/google/notifications",
            "google_webhook_port": port,
        },
    )
    await wait_for(lambda: len(h.connector.reports) == 1, what="the scheduled run at start")
    await wait_for(lambda: len(h.fake.channels) == 4, what="a channel per watched event")
    assert {c.event for c in h.fake.channels.values()} == {"add", "delete", "update", "undelete"}
    await wait_for(
        lambda: [(n.state, n.status) for n in h.fake.notifications] == [("sync", 200)] * 4,
        what="each channel's sync message acknowledged",
    )
    assert len(h.connector.reports) == 1  # a sync message triggers nothing

    newcomer = add_student(h.fake, "ny.elev@demo.skolsynk.example")  # no audit event: the notification alone
    await wait_for(lambda: len(h.connector.reports) == 2, what="a run triggered by the notification")
    assert h.connector.reports[1].reason == "watch"
    run_id = h.connector.reports[1].run_id
    await h.arrived(run_id, what="the triggered run")
    persons = {r.key for p in h.collected.pages(run_id) for r in p.records if r.kind is EntityKind.PERSON}
    assert newcomer["id"] in persons
    assert ("add", 200) in [(n.state, n.status) for n in h.fake.notifications]

    # A notification with a wrong token, or for a channel skolsynk never opened, is refused alike.
    channel = next(iter(h.fake.channels.values()))
    async with aiohttp.ClientSession() as http:
        for channel_id, token in ((channel.channel_id, "not-the-token"), ("made-up", channel.token)):
            headers = {
                "X-Goog-Channel-ID": channel_id,
                "X-Goog-Channel-Token": token or "",
                "X-Goog-Resource-State": "add",
            }
            async with http.post(f"http://127.0.0.1:{port}/google/notifications", headers=headers, json={}) as answer:
                assert answer.status == 403
    assert len(h.connector.reports) == 2

    # The source's watch turned off (as an admin saves it): its channels are stopped at Google and forgotten.
    await h.connector.set_sources([h.source.model_copy(update={"watch": WatchConfig(enabled=False)})])
    await wait_for(lambda: h.fake.channels == {}, what="the channels stopped")

    async def forgotten() -> bool:
        return await h.app.db["google_watch_channels"].count_documents({}) == 0

    await wait_for(forgotten, what="the stored channels removed")
    assert_requests_are_defined_by_discovery(h.fake)


async def test_channels_are_renewed_before_they_expire(make_harness: HarnessFactory) -> None:
    """A channel is replaced before it expires: the new one first, then the old one stopped. Issue 23."""
    port = free_port()
    h = await make_harness(
        connector_options={
            "google_webhook_url": f"https://127.0.0.1:{port}/google/notifications",  # TLS as Google demands
            "google_webhook_port": port,
        }
    )
    watch = h.connector.watch
    assert watch is not None
    now = datetime.now(UTC)
    watch.clock = lambda: now
    renew_at = await watch.refresh(h.source)
    first = set(h.fake.channels)
    assert len(first) == 4
    assert renew_at <= now + timedelta(seconds=21600)
    assert await watch.refresh(h.source) == renew_at  # nothing due: nothing opened
    assert set(h.fake.channels) == first
    now = renew_at + timedelta(seconds=1)  # within the margin before expiry
    await watch.refresh(h.source)
    assert len(h.fake.channels) == 4
    assert not set(h.fake.channels) & first
    stored = await watch.store.of_source(h.source)
    assert {c.channel_id for c in stored} == set(h.fake.channels)
