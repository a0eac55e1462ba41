"""The Microsoft Graph (School Data Sync) connector against the fake Graph Education API, the real broker
and the Mongo wire server: the runs it publishes on the ``source`` exchange are collected from the
normaliser's queue; one test goes through the real normaliser."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from skolsynk.connectors.sources.microsoft import SourceConfig, parse_sources
from skolsynk.domain.ids import entity_id
from skolsynk.domain.ss12000 import EntityKind
from skolsynk.settings import ServiceSettings
from skolsynk_services.graph_connector.app import GraphConnectorSettings, build
from skolsynk_services.graph_connector.connector import GraphConnector
from skolsynk_services.graph_connector.mapping import duty_key
from skolsynk_services.graph_connector.runs import DELTA_COLLECTION, SOURCE_KIND, STATE_COLLECTION
from skolsynk_testkit.fakes.graph_education import FakeGraphEducation
from skolsynk_testkit.synthetic import organiser
from tests.connectors_harness import (
    ConnectorHarness,
    ConnectorTestbed,
    connector_settings,
    connector_testbed,
    start_vendor_feed,
    validate_records,
)
from tests.helpers import wait_for
from tests.official_clients import graph_client, graph_request_problems

pytestmark = [pytest.mark.connected, pytest.mark.timeout(90)]

TENANT = "kommun-a"
SOURCE = "m365"
SECRET_ENV = "GRAPH_KOMMUN_A_SECRET"
PERSON, DUTY, GROUP, ACTIVITY = EntityKind.PERSON, EntityKind.DUTY, EntityKind.GROUP, EntityKind.ACTIVITY


def gid(kind: EntityKind, key: str) -> str:
    return FakeGraphEducation.graph_id(kind, key)


def source_config(fake: FakeGraphEducation, **overrides: Any) -> SourceConfig:
    raw: dict[str, Any] = {
        "tenant_id": TENANT,
        "source_id": SOURCE,
        "azure_tenant_id": fake.azure_tenant_id,
        "client_id": fake.client_id,
        "client_secret_env": SECRET_ENV,
        "authority": fake.authority,
        "graph_base_url": fake.graph_base_url,
        "klass_pattern": "[0-9][A-Z]",
        "organisation_name": "Kommun A",
        **overrides,
    }
    return parse_sources([raw])[0]


async def assert_requests_are_sdk_requests(fake: FakeGraphEducation) -> None:
    """Every Graph request the connector made is one a request builder of the Microsoft Graph SDK
    (msgraph-sdk) makes: its path and its ``$`` options. Issue 23."""
    async with graph_client(fake.graph_base_url, "unused") as client:
        problems = [
            problem
            for record in fake.requests
            if "/oauth2/" not in record.path
            for problem in graph_request_problems(client, record.path, record.query)
        ]
    assert problems == []


@dataclass(kw_only=True)
class Harness(ConnectorHarness[FakeGraphEducation, SourceConfig, GraphConnector]):
    async def delta_links(self) -> dict[str, str]:
        docs = self.app.db[DELTA_COLLECTION].find({"tenant_id": TENANT, "source_id": SOURCE})
        return {doc["resource"]: doc["delta_link"] async for doc in docs}


HarnessFactory = Callable[..., Awaitable[Harness]]


def graph_fake(units: int = 1, students: int = 6, **options: Any) -> FakeGraphEducation:
    fake = FakeGraphEducation(**options)
    fake.load_organiser(organiser(seed=7, school_units=units, students_per_unit=students, teachers_per_unit=2))
    return fake


async def start_harness(
    testbed: ConnectorTestbed,
    *,
    schedule: bool = False,
    fake_options: dict[str, Any] | None = None,
    **source_overrides: Any,
) -> Harness:
    fake = await testbed.start_fake(graph_fake(**(fake_options or {})))
    source = source_config(fake, **source_overrides)
    app_settings = connector_settings(GraphConnectorSettings, testbed.settings, prefix="graph", schedule=schedule)
    app = build(app_settings, sources=[source], environ={SECRET_ENV: fake.client_secret})
    await testbed.start_app(app)
    return Harness(
        testbed=testbed,
        fake=fake,
        app=app,
        source=source,
        connector_type=GraphConnector,
        kind=SOURCE_KIND,
        state_collection=STATE_COLLECTION,
        run_options={"mode": "incremental"},
    )


@pytest.fixture
async def testbed(settings: ServiceSettings, make_app: Any) -> AsyncIterator[ConnectorTestbed]:
    async with connector_testbed(settings, make_app) as testbed:
        yield testbed


@pytest.fixture
async def make_harness(testbed: ConnectorTestbed) -> HarnessFactory:
    await testbed.collect()

    async def factory(**options: Any) -> Harness:
        return await start_harness(testbed, **options)

    return factory


async def test_first_run_is_a_full_snapshot_that_initialises_delta_links(make_harness: HarnessFactory) -> None:
    h = await make_harness(fake_options={"empty_delta_pages": 1, "delta_page_size": 3}, page_size=3)
    report, completed = await h.run("incremental")
    started = h.collected.started(report.run_id)
    assert (started.mode, started.source_kind) == ("full", "microsoft")
    assert report.resync == "no_delta_links"
    assert completed.healthy
    assert completed.errors == []
    # 1 unit, 6 students in 6 classes (years 1-6), 2 teachers: a duty each, a group and an activity per class.
    assert completed.counts == {
        EntityKind.ORGANISATION: 1,
        EntityKind.SCHOOL_UNIT: 1,
        PERSON: 8,
        DUTY: 2,
        GROUP: 6,
        ACTIVITY: 6,
    }
    pages = h.collected.pages(report.run_id)
    assert [p.page for p in pages] == list(range(completed.pages))
    assert all(p.deletions == [] for p in pages)
    validate_records(pages)
    records = h.collected.records(report.run_id)
    kinds = [r.kind for p in pages for r in p.records]
    assert kinds.index(EntityKind.SCHOOL_UNIT) < kinds.index(PERSON) < kinds.index(DUTY) < kinds.index(GROUP)
    unit = gid(EntityKind.SCHOOL_UNIT, "unit-0")
    assert records[(EntityKind.SCHOOL_UNIT, unit)]["school_unit_code"] == "90007000"
    student = records[(PERSON, gid(PERSON, "student-0-2"))]
    assert student["enrolments"] == [{"school_unit": unit, "school_type": "GR", "school_year": 3}]
    group = records[(GROUP, gid(GROUP, "class-0-3"))]
    assert group["group_type"] == "Klass"
    assert group["memberships"] == [{"person": gid(PERSON, "student-0-2")}]
    teacher = gid(PERSON, "teacher-0-1")
    assert records[(ACTIVITY, gid(GROUP, "class-0-3"))]["teachers"] == [duty_key(teacher, unit)]
    for envelope in h.collected.of(report.run_id):
        assert envelope.tenant_id == TENANT
        assert envelope.producer == "graph-connector"
    # One token for the whole run; the delta rounds had several pages, empty ones included.
    assert h.fake.tokens_issued == 1
    assert {r.status for r in h.fake.requests} == {200}
    assert max(r.page or 0 for r in h.fake.requests if r.resource == "users/delta") >= 3
    # The education delta functions document no query options and no page-size preference: none are sent
    # (the next and delta links carry only Graph's own tokens).
    delta_requests = [r for r in h.fake.requests if r.resource.endswith("/delta")]
    assert delta_requests
    assert all(set(r.query) <= {"$skiptoken", "$deltatoken"} and r.prefer is None for r in delta_requests)
    links = await h.delta_links()
    assert set(links) == {"schools", "users", "classes"}
    assert all("$deltatoken=" in link for link in links.values())
    state = await h.state()
    assert state["last_full_run"]["healthy"] is True
    assert state["teacher_schools"] == {gid(PERSON, f"teacher-0-{n}"): [unit] for n in (0, 1)}
    await assert_requests_are_sdk_requests(h.fake)


@pytest.mark.parametrize("removals", ["as_documented", "in_delta_too"])
async def test_delta_rounds_with_changes_and_removals(make_harness: HarnessFactory, removals: str) -> None:
    """Deleted users reach the normaliser within one incremental run whether or not user delta reports them
    (Microsoft promises only "newly created or updated" users: the run lists the ids and compares them with
    the last healthy run's). Issue 23."""
    in_delta = removals == "in_delta_too"
    h = await make_harness(fake_options={"removals_in_delta": ("schools", "users", "classes")} if in_delta else {})
    await h.run("full")
    links = await h.delta_links()
    fake = h.fake
    unit = gid(EntityKind.SCHOOL_UNIT, "unit-0")
    changed, deleted, soft = gid(PERSON, "student-0-1"), gid(PERSON, "student-0-2"), gid(PERSON, "student-0-3")
    teacher = gid(PERSON, "teacher-0-0")
    fake.update_user(changed, surname="Nyström")
    fake.remove_user(deleted)
    fake.remove_user(soft, reason="changed")
    fake.remove_user(teacher)
    newcomer = {
        "id": "0b6f0c1e-0000-4000-8000-000000000001",
        "primaryRole": "student",
        "givenName": "Ny",
        "surname": "Elev",
        "userPrincipalName": "ny.elev@demo.skolsynk.example",
        "student": {"externalId": "new-1", "grade": "4"},
    }
    fake.put_user(newcomer, schools=[unit])
    klass = gid(GROUP, "class-0-4")
    fake.change_class_members(klass, add=[newcomer["id"]])

    report, completed = await h.run("incremental")
    assert h.collected.started(report.run_id).mode == "incremental"
    assert completed.healthy
    pages = h.collected.pages(report.run_id)
    validate_records(pages)
    records = h.collected.records(report.run_id)
    assert set(records) == {(PERSON, changed), (PERSON, newcomer["id"]), (GROUP, klass), (ACTIVITY, klass)}
    assert records[(PERSON, changed)]["family_name"] == "Nyström"
    assert records[(PERSON, changed)]["given_name"]  # read again in full, not only the changed property
    assert records[(PERSON, newcomer["id"])]["enrolments"] == [
        {"school_unit": unit, "school_type": "GR", "school_year": 4}
    ]
    assert {"person": newcomer["id"]} in records[(GROUP, klass)]["memberships"]
    assert h.collected.deletions(report.run_id) == {
        (PERSON, deleted),
        (PERSON, soft),
        (PERSON, teacher),
        (DUTY, duty_key(teacher, unit)),
    }
    assert completed.counts == {PERSON: 2, GROUP: 1, ACTIVITY: 1}
    assert report.removed == ({"users:deleted": 2, "users:changed": 1} if in_delta else {"users:listed": 3})
    new_links = await h.delta_links()
    assert all(new_links[r] != links[r] for r in links)
    assert teacher not in (await h.state())["teacher_schools"]

    # Nothing changed since: an empty incremental run.
    report, completed = await h.run("incremental")
    assert completed.healthy
    assert completed.pages == 0
    assert completed.counts == {}
    await assert_requests_are_sdk_requests(h.fake)


@pytest.mark.parametrize("expiry", ["syncStateNotFound", "gone"])
async def test_an_expired_delta_token_makes_a_full_run(make_harness: HarnessFactory, expiry: str) -> None:
    h = await make_harness()
    await h.run("full")
    old = await h.delta_links()
    h.fake.expire_delta_tokens(expiry)  # type: ignore[arg-type]
    report, completed = await h.run("incremental")
    assert h.collected.started(report.run_id).mode == "full"
    assert report.resync == ("syncStateNotFound" if expiry == "syncStateNotFound" else "resyncRequired")
    assert completed.healthy
    assert completed.counts[PERSON] == 8
    new = await h.delta_links()
    assert all(new[r] != old[r] for r in old)
    # The next run is a delta run again.
    report, completed = await h.run("incremental")
    assert h.collected.started(report.run_id).mode == "incremental"
    assert completed.healthy


@pytest.mark.parametrize(
    ("retry_after", "status", "minimum"), [("1", 429, 1.0), ("0.3", 429, 0.6), (None, 429, 0.0), ("0.2", 503, 0.4)]
)
async def test_throttling_is_ridden_out(
    make_harness: HarnessFactory, retry_after: str | None, status: int, minimum: float
) -> None:
    h = await make_harness()
    h.fake.throttle(1 if retry_after == "1" else 2, retry_after=retry_after, status=status)
    began = time.monotonic()
    _, completed = await h.run("full")
    assert completed.healthy
    assert time.monotonic() - began >= minimum
    statuses = [r.status for r in h.fake.requests if "token" not in r.path]
    assert statuses.count(status) == (1 if retry_after == "1" else 2)
    metric = h.app.metrics.registry.get_sample_value("skolsynk_graph_throttled_requests_total", {"status": str(status)})
    assert metric == statuses.count(status)


async def test_a_partial_failure_publishes_no_records_and_stores_no_links(make_harness: HarnessFactory) -> None:
    h = await make_harness(fake_options={"delta_page_size": 3})
    h.fake.fail_page("users/delta", 2, status=500)
    report, completed = await h.run("incremental")
    assert not completed.healthy
    assert completed.errors == ["users/delta:http_500"]
    assert completed.pages == 0
    assert [r.status for r in h.fake.requests if r.resource == "users/delta" and r.page == 2] == [500, 500, 500]
    assert await h.delta_links() == {}
    assert (await h.state())["last_full_run"]["healthy"] is False

    # A healthy full run, then a delta run that fails: the links stay where they were.
    h.fake.clear_faults()
    _, completed = await h.run("full")
    assert completed.healthy
    links = await h.delta_links()
    h.fake.update_user(gid(PERSON, "student-0-1"), surname="Nyström")
    h.fake.fail_page("users/delta", 0, status=503)
    report, completed = await h.run("incremental")
    assert h.collected.started(report.run_id).mode == "incremental"
    assert (completed.healthy, completed.errors, completed.pages) == (False, ["users/delta:http_503"], 0)
    assert await h.delta_links() == links
    # Once Graph answers again, the same change is read from the same links.
    h.fake.clear_faults()
    report, completed = await h.run("incremental")
    assert completed.healthy
    assert set(h.collected.records(report.run_id)) == {(PERSON, gid(PERSON, "student-0-1"))}


async def test_an_unmappable_object_makes_the_run_unhealthy_but_the_rest_is_published(
    make_harness: HarnessFactory,
) -> None:
    h = await make_harness()
    broken = gid(PERSON, "student-0-4")
    h.fake.update_user(broken, student="year seven")  # not an object
    report, completed = await h.run("full")
    assert not completed.healthy
    assert completed.errors == ["users:unmappable"]
    assert completed.counts[PERSON] == 7
    assert (PERSON, broken) not in h.collected.records(report.run_id)
    assert await h.delta_links() == {}


async def test_sync_requested_triggers_a_run(make_harness: HarnessFactory) -> None:
    h = await make_harness()
    for number, mode in enumerate(("full", "incremental"), start=1):
        await h.request_sync(SOURCE, tenant_id=TENANT, mode=mode)
        await wait_for(lambda n=number: len(h.connector.reports) == n, what=f"the requested {mode} run")
        report = h.connector.reports[-1]
        assert report.requested_mode == mode
        await h.arrived(report.run_id, what="the requested run to arrive")
        assert h.collected.started(report.run_id).mode == mode


async def test_the_schedule_starts_with_a_full_run(make_harness: HarnessFactory) -> None:
    h = await make_harness(schedule=True)
    first = await h.nth_run(1, what="a scheduled run")
    assert h.collected.started(first).mode == "full"
    completed = h.collected.completed(first)
    assert completed is not None
    assert completed.healthy


async def test_through_the_normaliser_a_removed_user_leaves_its_state(testbed: ConnectorTestbed) -> None:
    normaliser = await testbed.start_app(testbed.normaliser())
    h = await start_harness(testbed, fake_options={"students": 8})
    entities = normaliser.db["entities"]
    runs = normaliser.db["runs"]

    async def finalised(run_id: uuid.UUID) -> bool:
        run = await runs.find_one({"_id": str(run_id)})
        return run is not None and run.get("status") == "finalised"

    first = await h.connector.run(h.source, mode="incremental")
    assert first.mode == "full"
    assert first.healthy
    await wait_for(lambda: finalised(first.run_id), timeout=60, what="the full run to be finalised")
    leaving = gid(PERSON, "student-0-5")
    person_id = str(entity_id(TENANT, SOURCE, PERSON, leaving))
    assert await entities.count_documents({"tenant_id": TENANT, "kind": "person"}) == 10
    assert await entities.find_one({"_id": person_id}) is not None

    h.fake.remove_user(leaving)
    second = await h.connector.run(h.source, mode="incremental")
    assert (second.mode, second.healthy, second.deletions) == ("incremental", True, 1)
    await wait_for(lambda: finalised(second.run_id), timeout=60, what="the delta run to be finalised")
    assert await entities.find_one({"_id": person_id}) is None
    assert await entities.count_documents({"tenant_id": TENANT, "kind": "person"}) == 9
    group = await entities.find_one({"_id": str(entity_id(TENANT, SOURCE, GROUP, gid(GROUP, "class-0-6")))})
    assert group is not None


async def test_a_deleted_class_reaches_the_normaliser_in_the_next_incremental_run(make_harness: HarnessFactory) -> None:
    """Microsoft documents that educationClass delta "does not include deleted classes" (the fake behaves so):
    the incremental run lists the class ids and deletes what is gone, within the same cycle. Issue 23."""
    h = await make_harness()
    await h.run("full")
    klass = gid(GROUP, "class-0-4")
    h.fake.remove_class(klass)
    report, completed = await h.run("incremental")
    assert completed.healthy
    assert h.collected.deletions(report.run_id) == {(GROUP, klass), (ACTIVITY, klass)}
    assert report.removed == {"classes:listed": 1}
    listings = [r for r in h.fake.requests if r.path.endswith("/education/classes") and r.method == "GET"]
    assert listings  # an id-only listing, each incremental run
    # Nothing changed since: nothing deleted again.
    report, completed = await h.run("incremental")
    assert h.collected.deletions(report.run_id) == set()


async def test_a_deleted_class_a_changed_membership_a_removed_and_a_moved_user_reach_the_vendor_in_one_cycle(
    testbed: ConnectorTestbed,
) -> None:
    """The fake behaves as Microsoft documents: class delta reports no deleted class, user delta no removed
    user and no move between schools (a school membership is the administrative unit's, not the user's),
    membership changes only as class delta sends them without options. One incremental run after the
    changes, and each has reached the vendor's queue. Issue 23."""
    feed = await start_vendor_feed(testbed, tenant_id=TENANT, school_unit_codes=["90007000"])
    h = await start_harness(testbed, fake_options={"units": 2, "students": 8})
    first = await h.connector.run(h.source, mode="incremental")
    assert (first.mode, first.healthy) == ("full", True)
    assert (await feed.settled(first.run_id))["complete"] is True
    assert feed.take()

    def eid(kind: EntityKind, key: str) -> uuid.UUID:
        return entity_id(TENANT, SOURCE, kind, key)

    deleted_class, joined_class = gid(GROUP, "class-0-4"), gid(GROUP, "class-0-6")
    leaver, joiner, mover = gid(PERSON, "student-0-7"), gid(PERSON, "student-0-1"), gid(PERSON, "student-0-2")
    h.fake.remove_class(deleted_class)
    h.fake.change_class_members(joined_class, add=[joiner])
    h.fake.remove_user(leaver)
    h.fake.put_user(h.fake.objects["users"][mover], schools=[gid(EntityKind.SCHOOL_UNIT, "unit-1")])
    second = await h.connector.run(h.source, mode="incremental")
    assert (second.mode, second.healthy, second.school_moves) == ("incremental", True, 1)
    await feed.settled(second.run_id)
    arrived = feed.take()
    assert ("group", "delete", eid(GROUP, deleted_class)) in arrived
    assert ("person", "delete", eid(PERSON, leaver)) in arrived
    assert ("group", "upsert", eid(GROUP, joined_class)) in arrived
    assert ("person", "delete", eid(PERSON, mover)) in arrived  # now at a school this vendor does not get
    joined = await feed.normaliser.db["entities"].find_one({"_id": str(eid(GROUP, joined_class))})
    assert joined is not None
    assert joiner in {m["person"] for m in joined["data"]["memberships"]}
    moved = await feed.normaliser.db["entities"].find_one({"_id": str(eid(PERSON, mover))})
    assert moved is not None
    assert moved["data"]["enrolments"][0]["school_unit"] == gid(EntityKind.SCHOOL_UNIT, "unit-1")

    # Nothing changed since: no school listed differently, nothing read again.
    third = await h.connector.run(h.source, mode="incremental")
    assert (third.healthy, third.school_moves) == (True, 0)
    await assert_requests_are_sdk_requests(h.fake)
