"""The SS 12000 puller against the fake SS 12000 API, the real broker and the Mongo wire server: the
runs it publishes on the ``source`` exchange are collected from the normaliser's queue."""

from __future__ import annotations

import asyncio
import copy
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest

from skolsynk.connectors.sources.ss12000 import SourceConfig, parse_sources
from skolsynk.domain.ss12000 import EntityKind
from skolsynk.domain.subscription import VendorSubscription
from skolsynk.settings import ServiceSettings
from skolsynk.storage.subscriptions import SubscriptionStore
from skolsynk_services.ss12000_puller.app import Ss12000ConnectorSettings, build
from skolsynk_services.ss12000_puller.connector import Ss12000Connector
from skolsynk_services.ss12000_puller.runs import SOURCE_KIND, STATE_COLLECTION
from skolsynk_services.ss12000_puller.webhook import notice_token
from skolsynk_testkit.fakes.ss12000_api import FakeSs12000Api
from tests.connectors_harness import ConnectorHarness, connector_settings, connector_testbed, validate_records
from tests.reference import SS12000_EXAMPLES as EXAMPLES

pytestmark = [pytest.mark.connected, pytest.mark.timeout(90)]

TENANT = "kommun-a"
SOURCE = "ss12000-1"
CLIENT_SECRET = "client-secret-value"
HOOK_SECRET = "hook-secret-value"
ENVIRON = {"SS12000_CLIENT_SECRET": CLIENT_SECRET, "SS12000_WEBHOOK_SECRET": HOOK_SECRET}
LONG_AGO = datetime(2025, 1, 1, tzinfo=UTC)

HUVUDMAN_ID = "0f3c6c1e-6a51-4c1a-9d0e-2b7f4a1c9e01"
UNIT_ID = "5b1f0f8e-3c2d-4b7e-8f61-0d9a7c2e4b10"


def uid(n: int) -> str:
    return str(uuid.UUID(int=n))


def example_objects() -> dict[str, list[dict[str, Any]]]:
    """A small school from the 2.1 examples when available, else generated in the same shape."""
    if EXAMPLES.exists():
        ex = json.loads(EXAMPLES.read_text(encoding="utf-8"))
        return {
            "organisations": [ex["Organisation_huvudman"], ex["Organisation_skolenhet"]],
            "persons": [ex["Person_student"], ex["Person_teacher"]],
            "duties": [ex["Duty"]],
            "groups": [ex["Group_klass"]],
            "activities": [ex["Activity"]],
        }
    teacher, student, duty, group = uid(901), uid(902), uid(903), uid(904)
    return {
        "organisations": [
            {"id": HUVUDMAN_ID, "displayName": "Kommun", "organisationType": "Huvudman"},
            {
                "id": UNIT_ID,
                "displayName": "Skolan",
                "organisationType": "Skolenhet",
                "schoolUnitCode": "87654321",
                "schoolTypes": ["GR"],
                "parentOrganisation": {"id": HUVUDMAN_ID},
            },
        ],
        "persons": [person(902), {"id": teacher, "givenName": "Lärare", "familyName": "Testsson"}],
        "duties": [{"id": duty, "person": {"id": teacher}, "dutyAt": {"id": UNIT_ID}, "dutyRole": "Lärare"}],
        "groups": [
            {
                "id": group,
                "displayName": "7B",
                "groupType": "Klass",
                "schoolType": "GR",
                "organisation": {"id": UNIT_ID},
                "groupMemberships": [{"person": {"id": student}}],
            }
        ],
        "activities": [
            {
                "id": uid(905),
                "displayName": "Ma 7B",
                "organisation": {"id": UNIT_ID},
                "groups": [{"id": group}],
                "teachers": [{"duty": {"id": duty}}],
            }
        ],
    }


def person(n: int) -> dict[str, Any]:
    return {
        "id": uid(n),
        "givenName": f"Elev{n}",
        "familyName": "Testsson",
        "eduPersonPrincipalNames": [f"elev{n}@skola.example"],
        "enrolments": [{"enroledAt": {"id": UNIT_ID}, "schoolType": "GR", "schoolYear": 7, "startDate": "2025-08-18"}],
    }


Harness = ConnectorHarness[FakeSs12000Api, SourceConfig, Ss12000Connector]


def source_config(fake: FakeSs12000Api, **overrides: Any) -> SourceConfig:
    raw: dict[str, Any] = {
        "tenant_id": TENANT,
        "source_id": SOURCE,
        "base_url": fake.base_url,
        "auth": {
            "kind": "oauth2",
            "token_url": fake.token_url,
            "client_id": fake.client_id,
            "client_secret_env": "SS12000_CLIENT_SECRET",
        },
        "page_size": 100,
        "webhook_secret_env": "SS12000_WEBHOOK_SECRET",
        **overrides,
    }
    return parse_sources([raw])[0]


HarnessFactory = Callable[..., Awaitable[Harness]]


@pytest.fixture
async def make_harness(settings: ServiceSettings, make_app: Any) -> AsyncIterator[HarnessFactory]:
    async with connector_testbed(settings, make_app) as testbed:
        await testbed.collect()

        async def factory(
            *,
            schedule: bool = False,
            fake_options: dict[str, Any] | None = None,
            app_options: dict[str, Any] | None = None,
            **source_overrides: Any,
        ) -> Harness:
            fake = await testbed.start_fake(FakeSs12000Api(client_secret=CLIENT_SECRET, **(fake_options or {})))
            for endpoint, objects in example_objects().items():
                for obj in objects:
                    fake.put(endpoint, obj, modified=LONG_AGO)
            source = source_config(fake, **source_overrides)
            app_settings = connector_settings(
                Ss12000ConnectorSettings,
                settings,
                prefix="ss12000",
                schedule=schedule,
                ss12000_webhook_host="127.0.0.1",
                ss12000_webhook_port=0,
                **(app_options or {}),
            )
            app = build(app_settings, sources=[source], environ=ENVIRON)
            await testbed.start_app(app)
            return Harness(
                testbed=testbed,
                fake=fake,
                app=app,
                source=source,
                connector_type=Ss12000Connector,
                kind=SOURCE_KIND,
                state_collection=STATE_COLLECTION,
                run_options={"mode": "full"},
            )

        yield factory


async def test_full_run_publishes_every_collection(make_harness: HarnessFactory) -> None:
    h = await make_harness()
    report, completed = await h.run("full")
    started = h.collected.started(report.run_id)
    assert started.mode == "full"
    assert started.source_kind == "ss12000"
    assert completed.healthy
    assert completed.errors == []
    assert completed.counts == {
        EntityKind.ORGANISATION: 1,
        EntityKind.SCHOOL_UNIT: 1,
        EntityKind.PERSON: 2,
        EntityKind.DUTY: 1,
        EntityKind.GROUP: 1,
        EntityKind.ACTIVITY: 1,
    }
    pages = h.collected.pages(report.run_id)
    assert [p.page for p in pages] == list(range(completed.pages))
    validate_records(pages)
    kinds = [r.kind for p in pages for r in p.records]
    assert kinds.index(EntityKind.ORGANISATION) < kinds.index(EntityKind.PERSON) < kinds.index(EntityKind.ACTIVITY)
    for envelope in h.collected.of(report.run_id):
        assert envelope.tenant_id == TENANT
        assert envelope.producer == "ss12000-puller"
    # One token for the whole run, sent on every data request.
    assert h.fake.tokens_issued == 1
    assert all(r.status == 200 for r in h.fake.requests)
    state = await h.state()
    assert state["high_water_mark"] is not None


async def test_paging_across_many_pages_sends_filters_only_first(make_harness: HarnessFactory) -> None:
    h = await make_harness(page_size=2)
    for n in range(1, 24):
        h.fake.put("persons", person(n), modified=LONG_AGO)
    report, completed = await h.run("full")
    assert completed.healthy
    assert completed.counts[EntityKind.PERSON] == 25
    person_requests = [r for r in h.fake.requests if r.endpoint == "persons"]
    assert len(person_requests) == 13
    assert "pageToken" not in person_requests[0].query
    assert person_requests[0].query["limit"] == ["2"]
    for request in person_requests[1:]:
        assert set(request.query) == {"pageToken", "limit"}
    persons = {r.key for p in h.collected.pages(report.run_id) for r in p.records if r.kind is EntityKind.PERSON}
    assert len(persons) == 25

    # An incremental run sends its meta.modified.after on the first request only, too.
    h.fake.requests.clear()
    for n in range(30, 35):
        h.fake.put("persons", person(n))
    report, completed = await h.run("incremental")
    assert completed.counts == {EntityKind.PERSON: 5}
    person_requests = [r for r in h.fake.requests if r.endpoint == "persons"]
    assert len(person_requests) == 3
    assert "meta.modified.after" in person_requests[0].query
    assert all("meta.modified.after" not in r.query for r in person_requests[1:])


async def test_oauth2_token_is_refreshed_after_expiry(make_harness: HarnessFactory) -> None:
    h = await make_harness()
    _, completed = await h.run("full")
    assert completed.healthy
    assert h.fake.tokens_issued == 1
    h.fake.expire_tokens()
    h.fake.requests.clear()
    _, completed = await h.run("full")
    assert completed.healthy
    assert h.fake.tokens_issued == 2
    statuses = [(r.path, r.status) for r in h.fake.requests]
    assert statuses[0] == ("/organisations", 401)
    assert statuses[1] == ("/token", 200)
    assert statuses[2] == ("/organisations", 200)


async def test_api_key_authentication(make_harness: HarnessFactory) -> None:
    h = await make_harness(
        fake_options={"auth": "api_key", "api_key": CLIENT_SECRET, "api_key_header": "X-Api-Key"},
        auth={"kind": "api_key", "api_key_env": "SS12000_CLIENT_SECRET", "api_key_header": "X-Api-Key"},
    )
    _, completed = await h.run("full")
    assert completed.healthy
    assert h.fake.tokens_issued == 0


async def test_throttling_honours_retry_after(make_harness: HarnessFactory) -> None:
    h = await make_harness()
    h.fake.throttle(2, retry_after=0.3)
    began = time.monotonic()
    _, completed = await h.run("full")
    elapsed = time.monotonic() - began
    assert completed.healthy
    assert [r.status for r in h.fake.requests if r.path != "/token"][:3] == [429, 429, 200]
    # The backoff alone (0.01 s initial, 0.05 s max) cannot explain the wait: Retry-After was honoured.
    assert elapsed >= 0.55


async def test_a_page_failing_permanently_makes_the_run_unhealthy(make_harness: HarnessFactory) -> None:
    h = await make_harness(page_size=5)
    for n in range(1, 24):
        h.fake.put("persons", person(n), modified=LONG_AGO)
    h.fake.fail_page("persons", 2, status=500)
    report, completed = await h.run("full")
    assert not completed.healthy
    assert completed.errors == ["persons:http_500"]
    assert [r.status for r in h.fake.requests if r.endpoint == "persons" and r.page == 2] == [500, 500, 500]
    # The other collections were still read, and the pages sent are all announced.
    assert completed.counts[EntityKind.ACTIVITY] == 1
    assert completed.counts[EntityKind.PERSON] == 10
    assert len(h.collected.pages(report.run_id)) == completed.pages
    # No high-water mark from an unhealthy run.
    state = await h.state()
    assert "high_water_mark" not in state
    assert state["last_full_run"]["healthy"] is False
    # An incremental run without a mark is a full one.
    h.fake.clear_faults()
    report, completed = await h.run("incremental")
    assert h.collected.started(report.run_id).mode == "full"
    assert completed.healthy


async def test_a_source_repeating_its_page_token_fails_the_run_instead_of_looping(
    make_harness: HarnessFactory,
) -> None:
    """Issue 19: a source answering every page with the same ``pageToken`` (the spec's example answer is
    ``"pageToken"``) made a run loop for ever; now the listing fails at the repeat, the run ends
    incomplete (nothing removed) and the other listings are still read."""
    h = await make_harness(page_size=5)
    for n in range(1, 24):
        h.fake.put("persons", person(n), modified=LONG_AGO)
    h.fake.stick_page_token("persons")
    _, completed = await asyncio.wait_for(h.run("full"), timeout=60)
    assert not completed.healthy
    assert completed.errors == ["persons:page_token_repeated"]
    assert len([r for r in h.fake.requests if r.endpoint == "persons"]) == 2  # the first page, the repeat
    assert completed.counts[EntityKind.ACTIVITY] == 1


async def test_a_listing_past_its_page_cap_or_a_run_past_its_deadline_fails_the_run(
    make_harness: HarnessFactory,
) -> None:
    """Issue 19: the other two bounds of a pulled run (settings): pages per listing, and the run's time."""
    h = await make_harness(page_size=5, app_options={"ss12000_max_pages_per_listing": 2})
    for n in range(1, 24):
        h.fake.put("persons", person(n), modified=LONG_AGO)
    _, completed = await h.run("full")
    assert completed.errors == ["persons:page_cap_reached"]
    assert len([r for r in h.fake.requests if r.endpoint == "persons"]) == 2

    late = await make_harness(app_options={"ss12000_run_deadline_seconds": 1e-9})
    _, completed = await late.run("full")
    assert not completed.healthy
    assert completed.errors == ["run_deadline_exceeded"]  # once, not once per listing
    assert [r.path for r in late.fake.requests if r.path != "/token"] == ["/log/"]  # nothing read; the failure told


async def test_transient_server_errors_are_retried(make_harness: HarnessFactory) -> None:
    h = await make_harness()
    h.fake.fail_next(2, status=503)
    _, completed = await h.run("full")
    assert completed.healthy
    assert [r.status for r in h.fake.requests if r.path != "/token"][:3] == [503, 503, 200]


@pytest.mark.parametrize("spelling", ["activitites", "activities"])
async def test_incremental_run_with_modifications_and_deletions(make_harness: HarnessFactory, spelling: str) -> None:
    h = await make_harness(fake_options={"deleted_activities_key": spelling})
    full, completed = await h.run("full")
    assert completed.healthy
    mark = full.started_at
    objects = example_objects()
    changed = copy.deepcopy(objects["persons"][0])
    changed["familyName"] = "Nyström"
    h.fake.put("persons", changed, modified=datetime.now(UTC))
    # Within the overlap before the mark: read again; before the overlap: not.
    h.fake.put("persons", person(501), modified=mark - timedelta(minutes=2))
    h.fake.put("persons", person(502), modified=mark - timedelta(minutes=10))
    group_id, activity_id = objects["groups"][0]["id"], objects["activities"][0]["id"]
    h.fake.delete("groups", group_id)
    h.fake.delete("activities", activity_id)
    h.fake.delete("persons", uid(777), at=mark - timedelta(days=1))  # long before: not reported
    h.fake.requests.clear()

    report, completed = await h.run("incremental")
    assert h.collected.started(report.run_id).mode == "incremental"
    assert completed.healthy
    assert completed.counts == {EntityKind.PERSON: 2}
    pages = h.collected.pages(report.run_id)
    validate_records(pages)
    keys = {r.key for p in pages for r in p.records}
    assert keys == {changed["id"], uid(501)}
    record = next(r for p in pages for r in p.records if r.key == changed["id"])
    assert record.data["family_name"] == "Nyström"
    deletions = {(d.kind, d.key) for p in pages for d in p.deletions}
    assert deletions == {(EntityKind.GROUP, group_id), (EntityKind.ACTIVITY, activity_id)}
    first = next(r for r in h.fake.requests if r.endpoint == "persons")
    since = datetime.fromisoformat(first.query["meta.modified.after"][0].replace("Z", "+00:00"))
    assert since == mark - timedelta(minutes=5)
    deleted_request = next(r for r in h.fake.requests if r.endpoint == "deletedEntities")
    assert deleted_request.query["after"] == first.query["meta.modified.after"]
    state = await h.state()
    assert state["high_water_mark"] == report.started_at


async def test_high_water_mark_advances_only_after_a_healthy_run(make_harness: HarnessFactory) -> None:
    h = await make_harness()
    full, _ = await h.run("full")
    mark = (await h.state())["high_water_mark"]

    h.fake.fail_page("deletedEntities", 0, status=503)
    failed, completed = await h.run("incremental")
    assert not completed.healthy
    assert completed.errors == ["deletedEntities:http_503"]
    state = await h.state()
    assert state["high_water_mark"] == mark
    assert state["last_incremental_run"]["healthy"] is False

    h.fake.clear_faults()
    h.fake.requests.clear()
    ok, completed = await h.run("incremental")
    assert completed.healthy
    # The retry reads from the same mark again, and only then moves it.
    assert ok.since == full.started_at - timedelta(minutes=5)
    assert ok.since == failed.since
    state = await h.state()
    assert state["high_water_mark"] > mark
    assert ok.high_water_mark is not None
    assert ok.high_water_mark.replace(tzinfo=UTC) > full.started_at - timedelta(milliseconds=1)


async def test_webhook_triggers_an_incremental_pull(make_harness: HarnessFactory) -> None:
    h = await make_harness()
    full, _ = await h.run("full")
    port = h.app.web_ports[0]
    url = f"http://127.0.0.1:{port}/ss12000/notify/{TENANT}/{SOURCE}"
    h.fake.put("persons", person(601))
    async with aiohttp.ClientSession() as http:
        async with http.post(url, json={"modifiedEntites": ["Person"], "deletedEntities": False}) as response:
            assert response.status == 401
        bad = {"X-Skolsynk-Webhook-Secret": "wrong"}
        async with http.post(url, json={"modifiedEntities": ["Person"]}, headers=bad) as response:
            assert response.status == 403
        good = {"X-Skolsynk-Webhook-Secret": HOOK_SECRET}
        # Nothing tells a caller which sources exist (issue 19): an unknown one answers as a wrong secret does.
        other = f"http://127.0.0.1:{port}/ss12000/notify/{TENANT}/unknown"
        async with http.post(other, json={"modifiedEntities": ["Person"]}) as response:
            assert response.status == 401
        async with http.post(other, json={"modifiedEntities": ["Person"]}, headers=good) as response:
            assert response.status == 403
        async with http.post(url, data=b"not json", headers=good) as response:
            assert response.status == 400
        async with http.post(url, data=b"[" * 5000 + b"]" * 5000, headers=good) as response:
            assert response.status == 400  # was a RecursionError, a 500 (issue 19)
            assert "nested deeper" in (await response.json())["message"]
        assert h.collected.runs() == [full.run_id]

        async with http.post(url, json={"modifiedEntites": ["Person"], "deletedEntities": False}, headers=good) as r:
            assert r.status == 200
        triggered = await h.nth_run(2, what="a triggered run")
        assert h.collected.started(triggered).mode == "incremental"
        keys = {r.key for p in h.collected.pages(triggered) for r in p.records}
        assert keys == {uid(601)}

        # The correct spelling, objects as resource types, and a Bearer secret work as well.
        bearer = {"Authorization": f"Bearer {HOOK_SECRET}"}
        body = {"modifiedEntities": [{"resource": "Group"}], "deletedEntities": True}
        async with http.post(url, json=body, headers=bearer) as r:
            assert r.status == 200
        await h.nth_run(3, what="a second triggered run")

        # The notice address the puller's subscription names: a token derived from the secret in the path
        # (a source cannot be told to send a header). A wrong token, another source's, or an unknown
        # source's is a 403, as a wrong secret; nothing is triggered by them.
        token = notice_token(HOOK_SECRET, TENANT, SOURCE)
        for refused in (f"{url}/{'0' * 64}", f"{url}/{notice_token(HOOK_SECRET, TENANT, 'unknown')}",
                        f"{other}/{notice_token(HOOK_SECRET, TENANT, 'unknown')}", f"{url}/{HOOK_SECRET}"):  # fmt: skip
            async with http.post(refused, json={"modifiedEntities": ["Person"]}) as r:
                assert r.status == 403
        assert len(h.collected.runs()) == 3
        async with http.post(f"{url}/{token}", json={"modifiedEntities": ["Person"]}) as r:
            assert r.status == 200
        await h.nth_run(4, what="a run triggered through the notice address")


async def test_scheduler_runs_a_full_pull_first(make_harness: HarnessFactory) -> None:
    h = await make_harness(schedule=True)
    first = await h.nth_run(1, what="a scheduled run")
    assert h.collected.started(first).mode == "full"
    completed = h.collected.completed(first)
    assert completed is not None
    assert completed.healthy


async def test_a_sync_request_runs_the_source_in_the_mode_asked_for(make_harness: HarnessFactory) -> None:
    h = await make_harness()
    await h.request_sync(SOURCE, tenant_id=TENANT, mode="full")
    run_id = await h.nth_run(1, what="the requested run")
    assert h.collected.started(run_id).mode == "full"

    # An unknown source is refused for good: into the DLQ, nothing read.
    await h.request_sync("no-such-source", tenant_id=TENANT, mode="full")
    assert await h.dead_lettered_requests()
    assert h.collected.runs() == [run_id]


async def test_every_level_of_the_organisation_tree_is_published_and_none_silently_dropped(
    make_harness: HarnessFactory,
) -> None:
    """Issue 20: a Skola between the Huvudman and the school unit, and organisations without a type or
    of a type SS 12000 does not have, are published as organisations with their type and parent (the
    normaliser reports the unknown ones); the source's counts include them, so the run is healthy."""
    h = await make_harness()
    skola, no_type, odd_type = uid(910), uid(911), uid(912)
    h.fake.put(
        "organisations",
        {"id": skola, "displayName": "Skolan", "organisationType": "Skola", "parentOrganisation": {"id": HUVUDMAN_ID}},
        modified=LONG_AGO,
    )
    h.fake.put("organisations", {"id": no_type, "displayName": "Utan typ"}, modified=LONG_AGO)
    h.fake.put(
        "organisations", {"id": odd_type, "displayName": "Udda", "organisationType": "Kommundel"}, modified=LONG_AGO
    )
    report, completed = await h.run("full")
    assert completed.healthy
    assert completed.counts[EntityKind.ORGANISATION] == 4
    organisations = {
        r.key: r.data for p in h.collected.pages(report.run_id) for r in p.records if r.kind is EntityKind.ORGANISATION
    }
    assert organisations[skola] == {"organisation_type": "Skola", "display_name": "Skolan", "parent": HUVUDMAN_ID}
    assert organisations[no_type]["organisation_type"] is None
    assert organisations[odd_type]["organisation_type"] == "Kommundel"


SYLLABUS = {
    "id": "f0e1d2c3-b4a5-4968-8776-655443322110",
    "schoolType": "GR",
    "subjectName": "Matematik",
    "subjectCode": "GRGRMAT01",
    "subjectDesignation": "MA",
    "official": True,
}


async def test_syllabuses_always_and_placements_only_while_a_subscription_asks_for_them(
    make_harness: HarnessFactory,
) -> None:
    """Issue 20, item 3: /syllabuses is read in every run (before the activities that refer to it);
    /placements (children's data) only while a subscription of the organiser asks for placements, in
    full and incremental runs and in /deletedEntities alike."""
    h = await make_harness()
    placement = {
        "id": uid(920),
        "child": {"id": uid(902)},
        "placedAt": {"id": UNIT_ID},
        "schoolType": "FTH",
        "startDate": "2025-08-18",
    }
    h.fake.put("syllabuses", SYLLABUS, modified=LONG_AGO)
    h.fake.put("placements", placement, modified=LONG_AGO)

    report, completed = await h.run("full")
    assert completed.healthy
    assert completed.counts[EntityKind.SYLLABUS] == 1
    assert EntityKind.PLACEMENT not in completed.counts
    assert not [r for r in h.fake.requests if r.endpoint == "placements"]
    records = [r for p in h.collected.pages(report.run_id) for r in p.records]
    kinds = [r.kind for r in records]
    assert kinds.index(EntityKind.SYLLABUS) < kinds.index(EntityKind.ACTIVITY)
    syllabus = next(r for r in records if r.kind is EntityKind.SYLLABUS)
    assert syllabus.data["subject_code"] == "GRGRMAT01"
    activity = next(r for r in records if r.kind is EntityKind.ACTIVITY)
    if EXAMPLES.exists():  # the 2.1 example activity names its syllabus and dates its teacher
        assert activity.data["syllabus"] == SYLLABUS["id"]
        assert activity.data["teacher_assignments"][0]["start_date"] == "2025-08-18"

    # A subscription asks for placements: the next runs read them.
    store = SubscriptionStore(h.app.db)
    await store.save(
        VendorSubscription(tenant_id=TENANT, vendor_id="forskolan", school_unit_codes={"87654321"}, placements=True)
    )
    h.fake.requests.clear()
    report, completed = await h.run("full")
    assert completed.healthy
    assert completed.counts[EntityKind.PLACEMENT] == 1
    placed = next(r for p in h.collected.pages(report.run_id) for r in p.records if r.kind is EntityKind.PLACEMENT)
    assert placed.data == {"child": uid(902), "school_unit": UNIT_ID, "school_type": "FTH", "start_date": "2025-08-18"}

    h.fake.delete("placements", placement["id"])
    h.fake.delete("syllabuses", SYLLABUS["id"])
    h.fake.requests.clear()
    report, completed = await h.run("incremental")
    assert completed.healthy
    deletions = {(d.kind, d.key) for p in h.collected.pages(report.run_id) for d in p.deletions}
    assert deletions == {(EntityKind.PLACEMENT, placement["id"]), (EntityKind.SYLLABUS, SYLLABUS["id"])}
    deleted_request = next(r for r in h.fake.requests if r.endpoint == "deletedEntities")
    assert "Placement" in deleted_request.query["entities"]

    # Ended: placements are not read any more.
    await store.end(TENANT, "forskolan")
    h.fake.requests.clear()
    await h.run("full")
    assert not [r for r in h.fake.requests if r.endpoint == "placements"]
