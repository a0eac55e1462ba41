"""Google users, OUs and groups as canonical records: field paths, school units (OU pattern, table, custom
field), roles (OU, group, field), users without a school unit or role, groups and activities, and the
example mapping reading back a synthetic organiser from the fake directory."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from skolsynk.connectors.sources.google import MappingConfig, SourceConfig, parse_sources
from skolsynk.contracts.source import SourceRecord
from skolsynk.domain.ss12000 import ENTITY_MODELS, EntityKind
from skolsynk_services.google_connector.auth import DIRECTORY_SCOPES, DelegatedCredentials
from skolsynk_services.google_connector.client import GoogleClient, RetryPolicy
from skolsynk_services.google_connector.mapping import (
    DirectoryMapping,
    UnmappableUser,
    ancestors,
    read_path,
    users_queries,
)
from skolsynk_services.google_connector.runs import SnapshotReader
from skolsynk_testkit.fakes.google_directory import FakeGoogleDirectory, generate_service_account_key
from skolsynk_testkit.synthetic import organiser

pytestmark = [pytest.mark.unit, pytest.mark.timeout(30)]

EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "google-sources.example.yaml"
ADMIN = "admin@demo.skolsynk.example"

MAPPING = MappingConfig.model_validate(
    {
        "organisation": {"key": "hm", "display_name": "Kommun A", "municipality_code": "0180"},
        "scope": ["/Skolor", "/Gymnasiet", "/Skolor/Norr", "/Övrigt"],
        "school_units": [
            {"from": "org_units", "path_pattern": "/Skolor/[^/]+", "school_types": ["GR"]},
            {
                "from": "table",
                "school_types": ["GY"],
                "units": [{"org_unit": "/Gymnasiet", "code": "33333333", "display_name": "Gymnasiet"}],
            },
            {
                "from": "custom_field",
                "field": "customSchemas.SS12000.Skolenhetskod",
                "school_types": ["GR"],
                "display_names": {"44444444": "Fjärrskolan"},
            },
        ],
        "roles": [
            {"role": "teacher", "group": "Larare@kommun-a.se"},
            {"role": "student", "org_unit": "/Elever(/|$)"},
            {"role": "staff", "field": "customSchemas.SS12000.Roll", "values": ["rektor"], "duty_role": "Rektor"},
            {"role": "teacher", "org_unit": "/Personal(/|$)"},
        ],
        "groups": [
            {"email_pattern": "klass-.*@kommun-a\\.se", "group_type": "Klass"},
            {
                "email_pattern": "ma-(?P<code>[0-9]{8})-.*@kommun-a\\.se",
                "group_type": "Undervisning",
                "school_unit": "pattern",
            },
            {"emails": ["Mentorer@kommun-a.se"], "group_type": "Mentor", "school_unit": "11111111", "activity": False},
        ],
        "fields": {
            "civic_no": "customSchemas.SS12000.Personnummer",
            "school_year": "customSchemas.SS12000.Arskurs",
            "external_ids": [{"field": "externalIds[type=organization].value", "context": "urn:kommun-a:personid"}],
        },
    }
)

ORG_UNITS = [
    {"orgUnitPath": "/Skolor", "name": "Skolor", "orgUnitId": "id:s"},
    {"orgUnitPath": "/Skolor/Norr", "name": "Norrskolan", "description": "Skolenhetskod 11111111", "orgUnitId": "id:n"},
    {"orgUnitPath": "/Skolor/Norr/Elever", "name": "Elever", "orgUnitId": "id:ne"},
    {"orgUnitPath": "/Skolor/Norr/Personal", "name": "Personal", "orgUnitId": "id:np"},
    {"orgUnitPath": "/Skolor/Ny", "name": "Ny skola", "orgUnitId": "id:ny"},
    {"orgUnitPath": "/Gymnasiet", "name": "Gy", "orgUnitId": "id:g"},
    {"orgUnitPath": "/Övrigt", "name": "Övrigt", "orgUnitId": "id:o"},
]


def user(user_id: str | None, path: str, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "primaryEmail": f"u{user_id}@kommun-a.se",
        "name": {"givenName": f"Förnamn{user_id}", "familyName": "Efternamn"},
        "orgUnitPath": path,
        **extra,
    }
    if user_id is not None:
        body["id"] = user_id
    return body


def by_key(records: list[SourceRecord]) -> dict[tuple[EntityKind, str], dict[str, Any]]:
    return {(r.kind, r.key): r.data for r in records}


def valid(records: list[SourceRecord]) -> None:
    for record in records:
        ENTITY_MODELS[record.kind].model_validate({**record.data, "key": record.key, "kind": record.kind.value})


def test_read_path() -> None:
    resource = {
        "primaryEmail": "a@b.se",
        "name": {"givenName": " Anna "},
        "suspended": False,
        "externalIds": [{"type": "account", "value": "1"}, {"type": "organization", "value": "P-2"}],
        "customSchemas": {"S": {"multi": [{"value": "first"}, {"value": "second"}], "n": 7, "empty": ""}},
        "organizations": [{"primary": True, "department": "Matematik"}],
    }
    assert read_path(resource, "primaryEmail") == "a@b.se"
    assert read_path(resource, "name.givenName") == "Anna"
    assert read_path(resource, "suspended") == "false"
    assert read_path(resource, "externalIds[type=organization].value") == "P-2"
    assert read_path(resource, "externalIds[type=ORGANIZATION].value") == "P-2"
    assert read_path(resource, "externalIds.value") == "1"
    assert read_path(resource, "customSchemas.S.multi") == "first"
    assert read_path(resource, "customSchemas.S.n") == "7"
    assert read_path(resource, "organizations[primary=true].department") == "Matematik"
    for missing in ("customSchemas.S.empty", "customSchemas.T.x", "name.familyName", "externalIds[type=x].value"):
        assert read_path(resource, missing) is None
    assert ancestors("/a/b") == ["/a/b", "/a", "/"]
    assert ancestors("/") == ["/"]


def test_users_queries_read_each_scope_root_once() -> None:
    assert users_queries(MAPPING) == ["orgUnitPath='/Gymnasiet'", "orgUnitPath='/Skolor'", "orgUnitPath='/Övrigt'"]
    everything = MAPPING.model_copy(update={"scope": ["/A", "/"]})
    assert users_queries(everything) == [None]  # the whole domain: listed by customer, not searched
    quoted = MAPPING.model_copy(update={"scope": ["/Åk 7 O'Neil"]})
    assert users_queries(quoted) == ["orgUnitPath='/Åk 7 O\\'Neil'"]


def test_a_mapped_security_marking_field_is_read_and_its_absence_is_unknown() -> None:
    fields = MAPPING.fields.model_copy(update={"security_marking": "customSchemas.SS12000.Skyddsmarkering"})
    marked = MAPPING.model_copy(update={"fields": fields})
    assert "SS12000" in marked.custom_schemas()
    mapping = DirectoryMapping(marked, ORG_UNITS)
    path = "/Skolor/Norr/Elever/Åk 7"

    def marking_of(**extra: Any) -> Any:
        [person] = [r for r in mapping.map_user(user("1", path, **extra)) if r.kind is EntityKind.PERSON]
        return person.data.get("security_marking", "absent")

    assert marking_of(customSchemas={"SS12000": {"Skyddsmarkering": "Skyddad folkbokföring"}}) == (
        "Skyddad folkbokföring"
    )
    assert marking_of(customSchemas={"SS12000": {"Skyddsmarkering": "Ingen"}}) == "Ingen"
    assert marking_of(customSchemas={"SS12000": {"Skyddsmarkering": True}}) is True  # a boolean custom field
    assert marking_of(customSchemas={"SS12000": {"Skyddsmarkering": False}}) is False
    assert marking_of(customSchemas={"SS12000": {}}) == "absent"  # unknown: the organiser's setting decides
    assert marking_of() == "absent"


def test_school_units_roles_and_persons() -> None:
    mapping = DirectoryMapping(MAPPING, ORG_UNITS)
    mapping.add_role_group_members(
        {"id": "g-larare", "email": "larare@kommun-a.se"}, [{"id": "2", "type": "USER"}, {"id": "g9", "type": "GROUP"}]
    )
    units = mapping.unit_records()
    assert [(r.kind, r.key) for r in units] == [
        (EntityKind.ORGANISATION, "hm"),
        (EntityKind.SCHOOL_UNIT, "11111111"),
        (EntityKind.SCHOOL_UNIT, "ou-id:ny"),
        (EntityKind.SCHOOL_UNIT, "33333333"),
    ]
    valid(units[:2])
    assert units[1].data == {
        "display_name": "Norrskolan",
        "school_unit_code": "11111111",
        "school_types": ["GR"],
        "organisation": "hm",
        "municipality_code": "0180",
    }
    assert "school_unit_code" not in units[2].data  # the normaliser reports school_unit_code.missing
    assert mapping.stats.problems["org_unit_without_code"] == 1

    records: list[SourceRecord] = []
    records += mapping.map_user(
        user(
            "1",
            "/Skolor/Norr/Elever/Åk 7",
            customSchemas={"SS12000": {"Arskurs": "7", "Personnummer": "201401012380"}},
            externalIds=[{"type": "organization", "value": "P-1"}],
        )
    )
    records += mapping.map_user(user("2", "/Skolor/Norr/Personal"))
    records += mapping.map_user(user("3", "/Gymnasiet/Elever"))
    records += mapping.map_user(
        user("4", "/Övrigt", customSchemas={"SS12000": {"Skolenhetskod": "44444444", "Roll": "Rektor"}})
    )
    records += mapping.map_user(user("5", "/Övrigt"))
    records += mapping.map_user(user("6", "/Skolor/Ny/Elever", customSchemas={"SS12000": {"Arskurs": "sjua"}}))
    records += mapping.map_user(user("7", "/Övrigt", customSchemas={"SS12000": {"Skolenhetskod": "123"}}))
    with pytest.raises(UnmappableUser):
        mapping.map_user(user(None, "/Skolor/Norr/Elever"))
    valid(records)
    got = by_key(records)

    student = got[(EntityKind.PERSON, "1")]
    assert student["given_name"] == "Förnamn1"
    assert student["emails"] == [{"value": "u1@kommun-a.se", "type": "Skola elev"}]
    assert student["eppn"] == ["u1@kommun-a.se"]
    assert student["civic_no"] == "201401012380"
    assert student["enrolments"] == [{"school_unit": "11111111", "school_type": "GR", "school_year": 7}]
    assert student["external_identifiers"] == [
        {"value": "1", "context": "urn:skolsynk:google-workspace:user-id", "globally_unique": True},
        {"value": "P-1", "context": "urn:kommun-a:personid", "globally_unique": True},
    ]
    # The group rule comes first: a member of the teachers' group is a teacher wherever their OU is.
    assert got[(EntityKind.DUTY, "2-duty")] == {"person": "2", "school_unit": "11111111", "role": "Lärare"}
    assert got[(EntityKind.PERSON, "2")]["emails"][0]["type"] == "Skola personal"
    assert "enrolments" not in got[(EntityKind.PERSON, "2")]
    assert got[(EntityKind.PERSON, "3")]["enrolments"] == [{"school_unit": "33333333", "school_type": "GY"}]
    # A school unit found through the custom field, with its configured name; the role from a field.
    assert got[(EntityKind.DUTY, "4-duty")] == {"person": "4", "school_unit": "44444444", "role": "Rektor"}
    assert (EntityKind.SCHOOL_UNIT, "44444444") in by_key(mapping.unit_records())
    assert mapping.units["44444444"].display_name == "Fjärrskolan"
    # No school unit and no role: still a person, without enrolment or duty (the normaliser reports it).
    assert set(got[(EntityKind.PERSON, "5")]) == {
        "given_name",
        "family_name",
        "emails",
        "eppn",
        "external_identifiers",
        "security_marking",  # "Ingen": Google has no marking and the mapping names no field for it
    }
    assert got[(EntityKind.PERSON, "5")]["security_marking"] == "Ingen"
    assert (EntityKind.DUTY, "5-duty") not in got
    assert got[(EntityKind.PERSON, "6")]["enrolments"] == [{"school_unit": "ou-id:ny", "school_type": "GR"}]
    # A malformed code in the custom field places nobody.
    assert "enrolments" not in got[(EntityKind.PERSON, "7")]
    stats = mapping.stats
    assert stats.users == 7
    assert (stats.unplaced, stats.no_role, stats.no_school_unit) == (2, 2, 2)
    assert stats.problems["school_year_unreadable"] == 1
    assert stats.problems["school_unit_code_malformed"] == 1
    assert dict(stats.by_school_unit["11111111"]) == {"student": 1, "teacher": 1}
    assert dict(stats.by_school_unit["-"]) == {"none": 2}


def test_groups_and_activities() -> None:
    mapping = DirectoryMapping(MAPPING, ORG_UNITS)
    for record in (
        user("1", "/Skolor/Norr/Elever"),
        user("2", "/Skolor/Norr/Elever"),
        user("3", "/Gymnasiet/Elever"),
        user("8", "/Skolor/Norr/Personal"),
        user("5", "/Övrigt"),
    ):
        mapping.map_user(record)
    groups = [
        {"id": "k7", "email": "klass-7a@kommun-a.se", "name": "7A"},
        {"id": "ma", "email": "ma-33333333-1@kommun-a.se", "name": "Ma 1"},
        {"id": "mentor", "email": "mentorer@kommun-a.se", "name": "Mentorer"},
        {"id": "empty", "email": "klass-tom@kommun-a.se", "name": "Tom"},
        {"id": "other", "email": "personal@kommun-a.se", "name": "Personal"},
    ]
    members = {
        "k7": [
            {"id": "2", "type": "USER", "role": "MEMBER"},
            {"id": "1", "type": "USER", "role": "MEMBER"},
            {"id": "3", "type": "USER", "role": "MEMBER"},
            {"id": "8", "type": "USER", "role": "OWNER"},
            {"id": "5", "type": "USER", "role": "MEMBER"},  # no role: neither member nor teacher
            {"id": "99", "type": "USER", "role": "MEMBER"},  # not in the snapshot (suspended, out of scope)
            {"id": "g", "type": "GROUP", "role": "MEMBER"},
        ],
        "ma": [{"id": "1", "type": "USER"}, {"id": "8", "type": "USER"}],
        "mentor": [{"id": "8", "type": "USER"}],
    }
    assert mapping.wants_members(groups[0])
    assert not mapping.wants_members(groups[4])
    records = mapping.group_records(groups, members)
    got = by_key(records)
    assert (EntityKind.GROUP, "other") not in got
    valid([r for r in records if r.key != "empty" and r.key != "empty-activity"])
    assert got[(EntityKind.GROUP, "k7")] == {
        "display_name": "7A",
        "group_type": "Klass",
        "memberships": [{"person": "1"}, {"person": "2"}, {"person": "3"}],
        "school_unit": "11111111",  # where most of its students are
        "school_type": "GR",
    }
    assert got[(EntityKind.ACTIVITY, "k7-activity")] == {
        "display_name": "7A",
        "groups": ["k7"],
        "teachers": ["8-duty"],
        "school_unit": "11111111",
    }
    assert got[(EntityKind.GROUP, "ma")]["school_unit"] == "33333333"
    assert got[(EntityKind.GROUP, "ma")]["school_type"] == "GY"
    assert got[(EntityKind.GROUP, "mentor")]["school_unit"] == "11111111"
    assert got[(EntityKind.GROUP, "mentor")]["memberships"] == []
    assert (EntityKind.ACTIVITY, "mentor-activity") not in got
    # No member to place it by: sent without a school unit (the normaliser withholds it with a finding).
    assert "school_unit" not in got[(EntityKind.GROUP, "empty")]
    assert mapping.stats.problems["group_without_school_unit"] == 1


# --- the example mapping against the fake directory ------------------------------------------------


@pytest.fixture(scope="module")
def key() -> dict[str, str]:
    return generate_service_account_key(client_email="skolsynk@demo.iam.gserviceaccount.com")


@pytest.fixture
async def fake(key: dict[str, str]) -> AsyncIterator[FakeGoogleDirectory]:
    directory = FakeGoogleDirectory(admins=[ADMIN])
    try:
        await directory.start()
        directory.add_service_account(key)
        directory.add_user(ADMIN, "Admin", "Demo", audit=False)
        yield directory
    finally:
        await directory.stop()


def example_source(fake: FakeGoogleDirectory) -> SourceConfig:
    raw = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    raw["sources"][0]["api_base_url"] = fake.base_url
    raw["sources"][0]["token_url"] = fake.token_url
    [source] = parse_sources(raw)
    return source


async def read_all(source: SourceConfig, key: dict[str, str]) -> tuple[list[SourceRecord], SnapshotReader]:
    assert source.token_url is not None
    credentials = DelegatedCredentials(
        key, subject=source.delegated_admin, scopes=DIRECTORY_SCOPES, token_url=source.token_url
    )
    client = GoogleClient(source, credentials, retry=RetryPolicy(attempts=2, wait_initial_seconds=0.01))
    try:
        await client.start()
        reader = SnapshotReader(source, client)
        records = [record async for batch in reader.batches() for record in batch]
    finally:
        await client.close()
    return records, reader


async def test_the_example_mapping_reads_back_a_synthetic_organiser(
    fake: FakeGoogleDirectory, key: dict[str, str]
) -> None:
    original = organiser(seed=4, school_units=2, students_per_unit=12, teachers_per_unit=2)
    loaded = fake.load_organiser(original)
    records, reader = await read_all(example_source(fake), key)
    valid(records)

    def count(items: list[SourceRecord]) -> dict[EntityKind, int]:
        counts: dict[EntityKind, int] = {}
        for record in items:
            counts[record.kind] = counts.get(record.kind, 0) + 1
        return counts

    assert count(records) == count(original)
    got = by_key(records)
    source = {(r.kind, r.key): r.data for r in original}
    codes = {r.key: r.data["school_unit_code"] for r in original if r.kind is EntityKind.SCHOOL_UNIT}
    duty_of = {r.data["person"]: r for r in original if r.kind is EntityKind.DUTY}
    for (kind, key_), data in source.items():
        if kind is not EntityKind.PERSON:
            continue
        person = got[(EntityKind.PERSON, loaded.user_ids[key_])]
        assert (person["given_name"], person["family_name"]) == (data["given_name"], data["family_name"])
        assert person["eppn"] == data["eppn"]
        assert person["emails"] == data["emails"]
        assert person.get("civic_no") == data.get("civic_no")
        sis_id = {"value": key_, "context": "urn:demo-kommun:sis-id", "globally_unique": False}
        assert sis_id in person["external_identifiers"]
        if data.get("enrolments"):
            [enrolment] = data["enrolments"]
            assert person["enrolments"] == [
                {
                    "school_unit": codes[enrolment["school_unit"]],
                    "school_type": enrolment["school_type"],
                    "school_year": enrolment["school_year"],
                }
            ]
        else:
            duty = got[(EntityKind.DUTY, f"{loaded.user_ids[key_]}-duty")]
            assert duty["school_unit"] == codes[duty_of[key_].data["school_unit"]]
            assert duty["role"] == duty_of[key_].data["role"]
    for record in original:
        if record.kind is EntityKind.GROUP:
            group = got[(EntityKind.GROUP, loaded.group_ids[record.key])]
            assert group["display_name"] == record.data["display_name"]
            assert group["school_unit"] == codes[record.data["school_unit"]]
            assert {m["person"] for m in group["memberships"]} == {
                loaded.user_ids[m["person"]] for m in record.data["memberships"]
            }
        if record.kind is EntityKind.ACTIVITY:
            [group_key] = record.data["groups"]
            activity = got[(EntityKind.ACTIVITY, f"{loaded.group_ids[group_key]}-activity")]
            duties = {r.key: r.data for r in original if r.kind is EntityKind.DUTY}
            assert activity["teachers"] == sorted(
                f"{loaded.user_ids[duties[d]['person']]}-duty" for d in record.data["teachers"]
            )
    assert reader.mapping is not None
    assert reader.mapping.stats.unplaced == 0
    assert reader.leavers == 0
    # users.list asked for the custom schema only, and the class groups' members were read.
    users_request = next(r for r in fake.requests if r.endpoint == "users")
    assert users_request.query["projection"] == ["custom"]
    assert users_request.query["customFieldMask"] == ["SS12000"]
    assert users_request.query["query"] == ["orgUnitPath='/Skolor'"]
    assert users_request.query["maxResults"] == ["500"]
    assert sum(1 for r in fake.requests if r.endpoint == "members") == len(loaded.group_ids)


async def test_leavers_are_left_out_as_configured(fake: FakeGoogleDirectory, key: dict[str, str]) -> None:
    loaded = fake.load_organiser(organiser(seed=5, school_units=1, students_per_unit=6, teachers_per_unit=1))
    suspended, archived = loaded.user_ids["student-0-0"], loaded.user_ids["student-0-1"]
    fake.suspend_user(suspended)
    fake.archive_user(archived)
    source = example_source(fake)
    records, reader = await read_all(source, key)
    persons = {r.key for r in records if r.kind is EntityKind.PERSON}
    assert suspended not in persons
    assert archived not in persons
    assert reader.leavers == 2
    groups = [r for r in records if r.kind is EntityKind.GROUP]
    assert all(m["person"] not in (suspended, archived) for g in groups for m in g.data["memberships"])

    keep_suspended = source.model_copy(update={"leavers": source.leavers.model_copy(update={"suspended": False})})
    records, reader = await read_all(keep_suspended, key)
    persons = {r.key for r in records if r.kind is EntityKind.PERSON}
    assert suspended in persons
    assert archived not in persons
    assert reader.leavers == 1
    assert json.dumps([r.model_dump(mode="json") for r in records])  # serialisable as published
