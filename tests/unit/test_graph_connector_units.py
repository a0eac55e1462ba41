"""The Microsoft Graph connector's pure parts: the sources (tenants) file, Retry-After, the mapping of Graph
objects to canonical records, collapsing delta rounds; and its Graph client against the fake (token
cache and refresh, throttling, expired delta tokens)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest

from skolsynk.connectors.sources.microsoft import (
    ConfigurationError,
    SourceConfig,
    load_sources,
    parse_sources,
    secret,
)
from skolsynk.domain.source_errors import MICROSOFT_HINTS, hint_for
from skolsynk.domain.ss12000 import ENTITY_MODELS, EntityKind, SchoolType
from skolsynk_services.graph_connector.client import (
    DeltaExpired,
    GraphClient,
    GraphReadError,
    RetryPolicy,
    parse_retry_after,
)
from skolsynk_services.graph_connector.mapping import (
    GraphMappingError,
    SchoolInfo,
    in_filter,
    map_class,
    map_school,
    map_user,
    school_unit_code,
    school_year,
)
from skolsynk_services.graph_connector.runs import collapse
from skolsynk_testkit.fakes.graph_education import FakeGraphEducation

pytestmark = [pytest.mark.unit, pytest.mark.timeout(30)]

ROOT = Path(__file__).resolve().parents[2]
AZURE = "6f1d3a4e-2b7c-4e8f-9a10-5c2d7e8f9a01"
CLIENT = "7c2e4a10-0d3b-4b6f-8e21-9a4c5b6d7e02"
TODAY = date(2026, 11, 26)


def tenant(**overrides: Any) -> SourceConfig:
    raw = {
        "tenant_id": "kommun-a",
        "azure_tenant_id": AZURE,
        "client_id": CLIENT,
        "client_secret_env": "GRAPH_SECRET",
        **overrides,
    }
    return parse_sources([raw])[0]


# --- configuration ---------------------------------------------------------------------------------


def test_the_example_file_is_valid() -> None:
    tenants = load_sources(ROOT / "deploy" / "microsoft-sources.example.yaml")
    assert len(tenants) >= 2
    first = tenants[0]
    assert first.resolved_token_url == f"https://login.microsoftonline.com/{first.azure_tenant_id}/oauth2/v2.0/token"
    assert first.graph_base_url == "https://graph.microsoft.com/v1.0"
    assert any(t.schools for t in tenants)


def test_defaults() -> None:
    t = tenant()
    assert t.source_id == "microsoft"
    assert t.full_interval_seconds == 86400
    assert t.scope == "https://graph.microsoft.com/.default"
    assert t.types_of("12345678") == [SchoolType.GR]
    assert tenant(school_unit_types={"12345678": ["GY"]}).types_of("12345678") == [SchoolType.GY]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"azure_tenant_id": "not a tenant"}, "entry 1 (kommun-a/microsoft): azure_tenant_id: must be the directory"),
        ({"client_id": "app"}, "client_id: must be the app registration's application (client) id"),
        ({"client_secret_env": "has space"}, "client_secret_env: String should match pattern"),
        ({"scope": "User.Read"}, "scope: client credentials need a scope ending in /.default"),
        ({"klass_pattern": "("}, "klass_pattern: not a regular expression"),
        ({"school_unit_types": {"123": ["GR"]}}, "'123' is not an 8-digit school-unit code"),
        ({"school_types": ["XX"]}, "school_types.0: Input should be"),
        ({"delta_interval_seconds": 90000}, "delta_interval_seconds must not exceed full_interval_seconds"),
        ({"schools": []}, "schools: List should have at least 1 item"),
        ({"client_secret": "oops"}, "give the client secret (stored, or client_secret_env) once"),
        ({"graph_base_url": "graph.microsoft.com"}, "graph_base_url: String should match pattern"),
    ],
)
def test_invalid_entries_are_named(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError) as raised:
        tenant(**overrides)
    assert message in str(raised.value)
    assert "oops" not in str(raised.value)


def test_documents_and_duplicates(tmp_path: Path) -> None:
    entry = {"tenant_id": "kommun-a", "azure_tenant_id": "kommun.onmicrosoft.com", "client_id": CLIENT,
             "client_secret_env": "S"}  # fmt: skip
    assert parse_sources({"tenants": [entry]})[0].azure_tenant_id == "kommun.onmicrosoft.com"
    assert parse_sources(None) == []
    with pytest.raises(ConfigurationError, match="listed twice: kommun-a:microsoft"):
        parse_sources([entry, entry])
    with pytest.raises(ConfigurationError, match="must be a list"):
        parse_sources("nonsense")
    bad = tmp_path / "tenants.yaml"
    bad.write_text("- tenant_id: [unclosed\n")
    with pytest.raises(ConfigurationError, match="not valid YAML"):
        load_sources(bad)
    with pytest.raises(ConfigurationError, match="cannot read"):
        load_sources(tmp_path / "missing.yaml")
    with pytest.raises(ConfigurationError, match="GRAPH_SECRET is not set"):
        secret("GRAPH_SECRET", {})


def test_every_error_code_has_a_hint() -> None:
    codes = [
        "token:invalid_client", "users/delta:Authorization_RequestDenied", "classes/members:http_403",
        "users:InvalidAuthenticationToken", "schools:http_429", "users:timeout", "token:tenant_not_found",
        "users:unmappable", "schools/delta:http_500", "token:invalid_scope", "token:unauthorized_client",
    ]  # fmt: skip
    for code in codes:
        hint = hint_for("microsoft", code)
        assert hint is not None, code
    assert hint_for("microsoft", "token:invalid_client").needs_admin  # type: ignore[union-attr]
    assert "client secret" in MICROSOFT_HINTS["invalid_client"].fix
    assert "EduRoster.Read.All" in MICROSOFT_HINTS["Authorization_RequestDenied"].fix


# --- Retry-After ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("2", 2.0), ("120", 120.0), ("2.128", 2.128), ("0.25", 0.25), (" 3 ", 3.0), (None, None), ("", None),
     ("soon", None), ("-1", 0.0), ("nan", None)],
)  # fmt: skip
def test_retry_after_seconds(value: str | None, seconds: float | None) -> None:
    assert parse_retry_after(value) == seconds


def test_retry_after_http_date() -> None:
    now = datetime(2026, 11, 26, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("Thu, 26 Nov 2026 12:00:30 GMT", now=lambda: now) == 30.0
    assert parse_retry_after("Thu, 26 Nov 2026 11:00:00 GMT", now=lambda: now) == 0.0


# --- mapping --------------------------------------------------------------------------------------


def valid(record: Any) -> None:
    ENTITY_MODELS[record.kind].model_validate({**record.data, "key": record.key, "kind": record.kind.value})


SCHOOL = {"id": "S1", "displayName": "Norrskolan", "externalId": "norr", "schoolNumber": "12345678"}
INFO = SchoolInfo("s1", "12345678", SchoolType.GR)


def test_school_unit_code_and_filter() -> None:
    assert school_unit_code(SCHOOL) == "12345678"
    assert school_unit_code({"id": "x", "schoolNumber": "N-1", "externalId": "87654321"}) == "87654321"
    assert school_unit_code({"id": "x", "schoolNumber": "N-1"}) == "N-1"
    assert school_unit_code({"id": "x"}) is None
    assert in_filter(SCHOOL, None)
    assert in_filter(SCHOOL, ["12345678"])
    assert in_filter(SCHOOL, ["NORR"])
    assert in_filter(SCHOOL, ["s1"])
    assert not in_filter(SCHOOL, ["87654321"])


def test_school_maps_to_a_school_unit() -> None:
    record = map_school(SCHOOL, tenant(organisation_name="Kommun A", municipality_code="0180"))
    assert record.kind is EntityKind.SCHOOL_UNIT
    assert record.key == "s1"
    assert record.data == {
        "display_name": "Norrskolan",
        "school_unit_code": "12345678",
        "school_types": ["GR"],
        "municipality_code": "0180",
        "organisation": "organisation",
    }
    valid(record)


def student(**extra: Any) -> dict[str, Any]:
    return {
        "id": "U1",
        "primaryRole": "student",
        "givenName": "Alva",
        "surname": "Andersson",
        "middleName": None,
        "mail": "alva@elev.kommun.se",
        "userPrincipalName": "alva@kommun.se",
        "student": {
            "externalId": "sis-1",
            "grade": "07",
            "graduationYear": "2029",
            "birthDate": "2013-04-05T00:00:00Z",
        },
        **extra,
    }


def test_student_maps_to_a_person_with_enrolments() -> None:
    mapped = map_user(student(), [INFO], tenant(), today=TODAY, require_school=False)
    assert mapped.duties == []
    person = mapped.person
    assert person is not None
    assert person.key == "u1"
    assert person.data == {
        "given_name": "Alva",
        "family_name": "Andersson",
        "eppn": ["alva@kommun.se"],
        "emails": [{"value": "alva@elev.kommun.se", "type": "Skola elev"}],
        "birth_date": "2013-04-05",
        "security_marking": "Ingen",  # Graph has no securityMarking: as before it could be unknown
        "external_identifiers": [
            {"value": "u1", "context": f"https://login.microsoftonline.com/{AZURE}/v2.0", "globally_unique": True},
            {"value": "sis-1", "context": "urn:skolsynk:microsoft:sis-id", "globally_unique": False},
        ],
        "enrolments": [{"school_unit": "s1", "school_type": "GR", "school_year": 7}],
    }
    valid(person)


def test_teacher_maps_to_a_person_with_a_duty_per_school() -> None:
    teacher = {
        "id": "T1",
        "primaryRole": "teacher",
        "givenName": "Nils",
        "surname": "Berg",
        "userPrincipalName": "nils@kommun.se",
        "mail": "nils@kommun.se",
        "teacher": {"externalId": "sis-t"},
    }
    other = SchoolInfo("s2", "87654321", SchoolType.GY)
    mapped = map_user(teacher, [INFO, other], tenant(teacher_role="Förstelärare"), today=TODAY, require_school=True)
    assert mapped.person is not None
    assert mapped.person.data["emails"] == [{"value": "nils@kommun.se", "type": "Skola personal"}]
    assert mapped.person.data["enrolments"] == []
    assert mapped.person.data["external_identifiers"][1]["value"] == "sis-t"
    assert [(d.key, d.data) for d in mapped.duties] == [
        ("t1:s1", {"person": "t1", "school_unit": "s1", "role": "Förstelärare"}),
        ("t1:s2", {"person": "t1", "school_unit": "s2", "role": "Förstelärare"}),
    ]
    assert mapped.duty_schools == ["s1", "s2"]
    for record in mapped.records:
        valid(record)


def test_users_out_of_scope() -> None:
    assert map_user(student(primaryRole="none"), [INFO], tenant(), today=TODAY, require_school=False).person is None
    assert map_user(student(primaryRole=None), [INFO], tenant(), today=TODAY, require_school=False).person is None
    # With a school filter, a user at none of the schools is out of scope; without one it is kept.
    assert map_user(student(), [], tenant(), today=TODAY, require_school=True).person is None
    kept = map_user(student(), [], tenant(), today=TODAY, require_school=False).person
    assert kept is not None
    assert kept.data["enrolments"] == []
    with pytest.raises(GraphMappingError) as raised:
        map_user({"primaryRole": "student"}, [INFO], tenant(), today=TODAY, require_school=False)
    assert raised.value.field == "id"
    with pytest.raises(GraphMappingError):
        map_user(student(student="7A"), [INFO], tenant(), today=TODAY, require_school=False)


@pytest.mark.parametrize(
    ("student_part", "school_type", "expected"),
    [({"grade": "7"}, SchoolType.GR, 7), ({"grade": "07"}, SchoolType.GR, 7), ({"grade": "Åk 3"}, SchoolType.GR, 3),
     ({"grade": "F"}, SchoolType.GR, 0), ({"grade": "FK"}, SchoolType.FKLASS, 0), ({"grade": 2}, SchoolType.GY, 2),
     ({"grade": "PK"}, SchoolType.GR, None), ({"grade": "12"}, SchoolType.GR, None),
     # School year 2026/27 ends in 2027: graduating in 2029 from year 9 means year 7 now.
     ({"graduationYear": "2029"}, SchoolType.GR, 7), ({"graduationYear": 2027}, SchoolType.GY, 3),
     ({"graduationYear": "2029"}, SchoolType.VUX, None), ({"graduationYear": "20x9"}, SchoolType.GR, None),
     ({}, SchoolType.GR, None)],
)  # fmt: skip
def test_school_year(student_part: dict[str, Any], school_type: SchoolType, expected: int | None) -> None:
    assert school_year(student_part, school_type, TODAY) == expected


def test_class_maps_to_a_group_and_an_activity() -> None:
    klass = {"id": "C1", "displayName": "7A", "classCode": "7A-ma",
             "term": {"startDate": "2026-08-18", "endDate": "2027-06-10T00:00:00Z"}}  # fmt: skip
    group, activity = map_class(
        klass, [INFO], ["U1", "u2", "T1", "u1"], ["T1"], tenant(klass_pattern="[0-9]{1,2}[A-Z]")
    )
    assert group.key == activity.key == "c1"
    assert group.data == {
        "display_name": "7A",
        "group_type": "Klass",
        "school_type": "GR",
        "school_unit": "s1",
        "memberships": [{"person": "u1"}, {"person": "u2"}],
        "start_date": "2026-08-18",
        "end_date": "2027-06-10",
    }
    assert activity.data["teachers"] == ["t1:s1"]
    assert activity.data["groups"] == ["c1"]
    valid(group)
    valid(activity)
    (group, _) = map_class({"id": "c2", "displayName": "Ma 7"}, [INFO], [], [], tenant(klass_pattern="[0-9][A-Z]"))
    assert group.data["group_type"] == "Undervisning"
    assert map_class(klass, [], ["u1"], [], tenant()) == []


def test_collapse_merges_entries_and_keeps_the_last_state() -> None:
    collapsed = collapse(
        [
            {"id": "A", "surname": "X"},
            {"id": "a", "givenName": "Y"},
            {"id": "b", "@removed": {"reason": "changed"}},
            {"id": "c", "surname": "Z"},
            {"id": "c", "@removed": {"reason": "deleted"}},
            {"id": "d", "@removed": {"reason": "deleted"}},
            {"id": "d", "surname": "back"},
            {"surname": "no id"},
            "not an object",
        ]
    )
    assert collapsed.changed == {
        "a": {"id": "a", "surname": "X", "givenName": "Y"},
        "d": {"id": "d", "surname": "back"},
    }
    assert collapsed.removed == {"b": "changed", "c": "deleted"}
    assert collapsed.unmappable == 2


# --- the client against the fake ------------------------------------------------------------------


@pytest.fixture
async def fake() -> AsyncIterator[FakeGraphEducation]:
    api = FakeGraphEducation(default_page_size=2, delta_page_size=2)
    try:
        await api.start()
        yield api
    finally:
        await api.stop()


@pytest.fixture
async def client(fake: FakeGraphEducation) -> AsyncIterator[GraphClient]:
    config = tenant(
        azure_tenant_id=fake.azure_tenant_id,
        client_id=fake.client_id,
        authority=fake.authority,
        graph_base_url=fake.graph_base_url,
        page_size=2,
    )
    retry = RetryPolicy(attempts=3, wait_initial_seconds=0.01, wait_max_seconds=0.05)
    async with GraphClient(config, environ={"GRAPH_SECRET": fake.client_secret}, retry=retry) as graph:
        yield graph


async def test_token_is_cached_and_refreshed_once_on_401(fake: FakeGraphEducation, client: GraphClient) -> None:
    fake.put_school(SCHOOL)
    assert len(await client.list_all("education/schools")) == 1
    assert len(await client.list_all("education/schools")) == 1
    assert fake.tokens_issued == 1
    fake.expire_tokens()
    assert len(await client.list_all("education/schools")) == 1
    assert fake.tokens_issued == 2
    assert [(r.path, r.status) for r in fake.requests][-3:] == [
        ("/education/schools", 401),
        (f"/{fake.azure_tenant_id}/oauth2/v2.0/token", 200),
        ("/education/schools", 200),
    ]


async def test_refused_credentials_are_a_token_error(fake: FakeGraphEducation, client: GraphClient) -> None:
    fake.client_secret = "rotated"
    with pytest.raises(GraphReadError) as raised:
        await client.list_all("education/schools")
    assert raised.value.code == "invalid_client"


@pytest.mark.parametrize(("retry_after", "minimum"), [("1", 1.8), ("0.4", 0.7)])
async def test_retry_after_is_honoured(
    fake: FakeGraphEducation, client: GraphClient, retry_after: str, minimum: float
) -> None:
    fake.throttle(2, retry_after=retry_after)
    began = time.monotonic()
    await client.list_all("education/schools")
    # The backoff alone (0.01 s, at most 0.05 s) cannot explain the wait: Retry-After was honoured.
    assert time.monotonic() - began >= minimum
    assert [r.status for r in fake.requests if "token" not in r.path] == [429, 429, 200]


async def test_without_retry_after_the_backoff_is_short(fake: FakeGraphEducation, client: GraphClient) -> None:
    fake.throttle(2, retry_after=None, status=503)
    began = time.monotonic()
    await client.list_all("education/schools")
    assert time.monotonic() - began < 1.0
    fake.fail_next(5, status=500)
    with pytest.raises(GraphReadError) as raised:
        await client.list_all("education/schools")
    assert raised.value.code == "http_500"


async def test_expired_delta_tokens_and_foreign_links(fake: FakeGraphEducation, client: GraphClient) -> None:
    fake.put_school(SCHOOL)
    first = await client.delta_round("education/schools/delta", {"$select": "id,displayName"})
    assert [e["id"] for e in first.entries] == ["S1"]
    assert first.delta_link.startswith(fake.graph_base_url)
    again = await client.delta_round(first.delta_link)
    assert again.entries == []
    fake.expire_delta_tokens()
    with pytest.raises(DeltaExpired) as expired:
        await client.delta_round(again.delta_link)
    assert expired.value.code == "syncStateNotFound"
    fresh = await client.delta_round("education/schools/delta")
    fake.expire_delta_tokens("gone")
    with pytest.raises(DeltaExpired) as gone:
        await client.delta_round(fresh.delta_link)
    assert gone.value.code == "resyncRequired"
    assert gone.value.location is not None
    with pytest.raises(GraphReadError, match="foreign_link"):
        await client.get_json("https://elsewhere.example/v1.0/education/users")
    assert await client.get_object("education/users/missing") is None


# --- the schedule ---------------------------------------------------------------------------------


class StubState:
    def __init__(self, doc: dict[str, Any] | None) -> None:
        self.doc = doc

    async def get(self, source: SourceConfig) -> dict[str, Any] | None:
        return self.doc


async def test_schedule_full_reconciliation_and_delta_intervals() -> None:
    from datetime import timedelta

    from skolsynk_services.graph_connector.connector import GraphConnector

    now = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
    config = tenant(full_interval_seconds=86400, delta_interval_seconds=900)

    async def due(doc: dict[str, Any] | None) -> str | None:
        connector = GraphConnector(
            [config],
            publisher=None,  # type: ignore[arg-type]
            exchange="x",
            state=StubState(doc),  # type: ignore[arg-type]
            environ={"GRAPH_SECRET": "s"},
            clock=lambda: now,
        )
        return await connector.due(config)

    def run(minutes_ago: float, *, healthy: bool = True) -> dict[str, Any]:
        at = now - timedelta(minutes=minutes_ago)
        return {"started_at": at, "finished_at": at, "healthy": healthy}

    assert await due(None) == "full"  # never synced: the initial full snapshot
    recent_full = {"last_full_success_at": now - timedelta(hours=2), "last_full_run": run(120)}
    assert await due(recent_full) == "incremental"
    assert await due({**recent_full, "last_incremental_run": run(5)}) is None
    assert await due({**recent_full, "last_incremental_run": run(16)}) == "incremental"
    # Daily reconciliation even when delta works.
    old_full = {"last_full_success_at": now - timedelta(hours=25), "last_full_run": run(25 * 60)}
    assert await due({**old_full, "last_incremental_run": run(1)}) == "full"
    # After a failed full run, the next attempt waits a delta interval.
    assert await due({"last_full_run": run(5, healthy=False)}) is None
    assert await due({"last_full_run": run(20, healthy=False)}) == "full"
