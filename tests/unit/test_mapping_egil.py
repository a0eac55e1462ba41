"""The EGIL (SS 12000:2018 SCIM) profile both ways: captured EgilSCIM bodies in, vendor resources out."""

from __future__ import annotations

import json
from typing import Any

import pytest

from skolsynk.adapters.egil import (
    SCHOOL_TYPE_TO_2018,
    SCHOOL_TYPES_2018,
    USER_EXTENSION,
    EgilMappingError,
    EgilResourceType,
    egil_send_order,
    employment_role,
    from_egil,
    is_student,
    school_type_from_2018,
    school_type_to_2018,
    student_group_type,
    to_egil,
)
from skolsynk.contracts.source import SourceRecord
from skolsynk.domain.ss12000 import ENTITY_MODELS, DutyRole, EntityKind, GroupType, SchoolType
from tests.reference import EGIL_CAPTURES, egil_capture

pytestmark = pytest.mark.unit

ORG = "4f3d2c1b-8a9e-4b7c-9d6e-5f4a3b2c1d0e"
SUG = "0b1c2d3e-4f5a-4b6c-8d7e-9f0a1b2c3d4e"
CENTRAL = "1a2b3c4d-5e6f-4a1b-8c2d-3e4f5a6b7c8d"
NORR = "9f8e7d6c-5b4a-4f3e-9d2c-1b0a9f8e7d6c"
ELSA = "c0a80101-0000-4000-8000-000000000001"
EVA = "7e57ac4e-0000-4000-8000-000000000003"
EMPLOYMENT = "01533f0e-827b-5159-a821-210868e4c5a3"
GROUP_8B = "6a7b8c9d-0000-4000-8000-0000000000b2"
ACTIVITY_8B = "6de42408-d238-5b10-9262-e4daf20fd710"


def _captured(step: str) -> list[dict[str, Any]]:
    path = egil_capture(step)
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _endpoint(path: str) -> str:
    return path.split("?")[0].strip("/").split("/")[0]


def _validate(record: SourceRecord) -> Any:
    return ENTITY_MODELS[record.kind].model_validate({**record.data, "key": record.key, "kind": record.kind})


# --- captured EGIL bodies -> canonical ---------------------------------------------------------------


def test_every_initial_sync_body_maps_to_a_valid_canonical_record() -> None:
    requests = [r for r in _captured("01-initial-sync") if r["method"] in {"POST", "PUT"}]
    assert len(requests) == 27
    kinds: dict[EntityKind, int] = {}
    for request in requests:
        body = json.loads(request["body_raw"])  # the template-shaped bytes, leading newline and all
        record = from_egil(_endpoint(request["path"]), body)
        entity = _validate(record)
        assert record.key == body["externalId"].lower()
        assert entity.key == record.key
        kinds[record.kind] = kinds.get(record.kind, 0) + 1
    assert kinds == {
        EntityKind.ORGANISATION: 1,
        EntityKind.SCHOOL_UNIT_GROUP: 1,
        EntityKind.SCHOOL_UNIT: 2,
        EntityKind.PERSON: 13,
        EntityKind.DUTY: 4,
        EntityKind.GROUP: 3,
        EntityKind.ACTIVITY: 3,
    }


def test_every_captured_post_and_put_of_every_step_maps() -> None:
    count = 0
    for path in sorted(EGIL_CAPTURES.glob("*/requests.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            request = json.loads(line)
            if request["method"] in {"POST", "PUT"}:
                _validate(from_egil(_endpoint(request["path"]), json.loads(request["body_raw"])))
                count += 1
    assert count > 27


def test_captured_bodies_map_field_by_field() -> None:
    bodies = {
        r["body_json"]["externalId"]: (_endpoint(r["path"]), r["body_json"])
        for r in _captured("01-initial-sync")
        if r["body_json"]
    }

    unit = _validate(from_egil(*bodies[NORR]))
    assert (unit.school_unit_code, unit.organisation, unit.school_unit_group) == ("29384756", ORG, SUG)
    assert unit.municipality_code == "9999"
    assert unit.school_types == []  # the captured configuration sends none

    elsa = _validate(from_egil(*bodies[ELSA]))
    assert (elsa.given_name, elsa.family_name, elsa.eppn) == ("Elsa", "Lindqvist", ["elli01@gronkoping.se"])
    assert elsa.civic_no == "201203142383"
    assert [(e.value, e.type.value) for e in elsa.emails] == [("elsa.lindqvist@elev.gronkoping.se", "Skola elev")]
    [enrolment] = elsa.enrolments
    assert (enrolment.school_unit, enrolment.school_year, enrolment.school_type) == (CENTRAL, 7, SchoolType.GR)

    # The captured client's template has no securityMarking: unknown, not "Ingen".
    assert "securityMarking" not in json.dumps(bodies[ELSA][1])
    assert elsa.security_marking is None
    assert not elsa.marking_known

    eva = _validate(from_egil(*bodies[EVA]))
    assert eva.enrolments == []
    assert [e.type.value for e in eva.emails] == ["Skola personal"]  # no type, no enrolments: staff

    duty = _validate(from_egil(*bodies[EMPLOYMENT]))
    assert (duty.person, duty.school_unit, duty.role, duty.signature) == (EVA, NORR, DutyRole.LARARE, "ELU")

    group = _validate(from_egil(*bodies[GROUP_8B]))
    assert (group.display_name, group.group_type, group.school_type, group.school_unit) == (
        "8B",
        GroupType.KLASS,
        SchoolType.GR,
        NORR,
    )
    assert [m.person for m in group.memberships] == [f"c0a80101-0000-4000-8000-00000000000{c}" for c in "789a"]

    activity = _validate(from_egil(*bodies[ACTIVITY_8B]))
    assert (activity.school_unit, activity.groups) == (NORR, [GROUP_8B])
    assert activity.teachers == ["2a2a56cf-f953-5f84-a760-6474dc0e4b1d", EMPLOYMENT]


def test_from_egil_tolerates_client_variations() -> None:
    user = {
        "externalId": ELSA.upper(),
        "userName": "elli01@gronkoping.se",
        "name": {"givenName": "Elsa", "familyName": "Lindqvist"},
        "emails": [{"value": "elsa@example.se", "type": "home"}, {"value": "e@example.se", "type": "other"}],
        USER_EXTENSION: {
            "enrolments": [{"value": CENTRAL.upper(), "schoolYear": "0", "schoolType": "FSK"}],
            "securityMarking": True,
            "userRelations": [{"value": EVA, "relationType": "Vårdnadshavare"}],
        },
        "somethingNew": 1,
    }
    person = _validate(from_egil("Users", user))
    assert person.key == ELSA
    assert [e.type.value for e in person.emails] == ["Privat", "Arbete övrigt"]
    assert person.enrolments[0].school_unit == CENTRAL
    assert (person.enrolments[0].school_year, person.enrolments[0].school_type) == (0, SchoolType.FKLASS)
    assert person.security_marking.value == "Skyddad folkbokföring"

    old_activity = {
        "externalId": ACTIVITY_8B,
        "displayName": "8B",
        "owner": {"value": NORR},
        "group": {"value": GROUP_8B},
    }
    activity = _validate(from_egil(EgilResourceType.ACTIVITIES, old_activity))
    assert (activity.groups, activity.teachers) == ([GROUP_8B], [])

    unit = _validate(
        from_egil(
            "SchoolUnits",
            {
                "externalId": NORR,
                "displayName": "Norrskolan",
                "schoolUnitCode": "29384756",
                "schoolTypes": ["FSK", "GR", "SUV"],
                "SchoolUnitGroup": {"value": SUG},
                "organisation": None,
            },
        )
    )
    assert unit.school_types == [SchoolType.FKLASS, SchoolType.GR, SchoolType.SARVUX]
    assert (unit.school_unit_group, unit.organisation) == (SUG, None)

    group = _validate(
        from_egil("StudentGroups", {"externalId": GROUP_8B, "displayName": "x", "owner": {"value": NORR}})
    )
    assert (group.group_type, group.memberships) == (GroupType.OVRIGT, [])


# --- EgilMappingError ----------------------------------------------------------------------------

_USER = {
    "externalId": ELSA,
    "userName": "elli01@gronkoping.se",
    "displayName": "Elsa Lindqvist",
    "name": {"familyName": "Lindqvist", "givenName": "Elsa"},
    USER_EXTENSION: {"civicNo": "201203142383", "enrolments": [{"value": CENTRAL, "schoolYear": 7}]},
}


@pytest.mark.parametrize(
    ("resource_type", "changes", "field"),
    [
        ("Users", {"externalId": None}, "externalId"),
        ("Users", {"externalId": 42}, "externalId"),
        ("Users", {"externalId": "  "}, "externalId"),
        ("Users", {"name": "Elsa Lindqvist"}, "name"),
        ("Users", {"name": {"givenName": "Elsa"}}, "name.familyName"),
        ("Users", {"userName": ["elli01@gronkoping.se"]}, "userName"),
        ("Users", {"emails": {"value": "elsa@example.se"}}, "emails"),
        ("Users", {USER_EXTENSION: "201203142383"}, USER_EXTENSION),
        ("Users", {USER_EXTENSION: {"enrolments": [{"value": CENTRAL, "schoolYear": "sju"}]}},
         "enrolments[0].schoolYear"),
        ("Users", {USER_EXTENSION: {"enrolments": [{"schoolYear": 7}]}}, "enrolments[0].value"),
        ("Users", {USER_EXTENSION: {"securityMarking": "yes", "civicNo": 201203142383}}, "civicNo"),
        ("Employments", {"user": ELSA}, "user"),
        ("StudentGroups", {"displayName": "7A", "owner": {"value": CENTRAL}, "studentMemberships": [ELSA]},
         "studentMemberships[0]"),
        ("Activities", {"displayName": "7A"}, "owner"),
        ("SchoolUnits", {"displayName": "Centralskolan", "schoolUnitCode": 85412736}, "schoolUnitCode"),
    ],
)  # fmt: skip
def test_unmappable_bodies_raise_without_personal_data(resource_type: str, changes: dict[str, Any], field: str) -> None:
    body = {**_USER, **changes} if resource_type == "Users" else {"externalId": EMPLOYMENT, **changes}
    with pytest.raises(EgilMappingError) as caught:
        from_egil(resource_type, body)
    assert caught.value.field == field
    message = str(caught.value)
    for personal in ("Elsa", "Lindqvist", "elli01", "201203142383", ELSA, CENTRAL, "sju"):
        assert personal not in message


def test_unmappable_body_and_type() -> None:
    with pytest.raises(EgilMappingError, match="body"):
        from_egil("Users", ["not", "an", "object"])  # type: ignore[arg-type]
    with pytest.raises(EgilMappingError, match="resourceType"):
        from_egil("Students", _USER)
    with pytest.raises(EgilMappingError, match="userName"):
        to_egil({"id": ELSA, "kind": "person", "given_name": "Elsa", "family_name": "Lindqvist", "eppn": []})
    with pytest.raises(EgilMappingError, match="externalId: not a UUID"):
        to_egil({"id": "elli01", "kind": "organisation", "display_name": "x"})


# --- vendor resources -> EGIL bodies ------------------------------------------------------------------


def _student_resource(**overrides: Any) -> dict[str, Any]:
    return {
        "id": ELSA,
        "kind": "person",
        "roles": ["student"],
        "school_unit_ids": [CENTRAL],
        "given_name": "Elsa",
        "family_name": "Lindqvist",
        "eppn": ["elli01@gronkoping.se"],
        "emails": [{"value": "elsa.lindqvist@elev.gronkoping.se", "type": "Skola elev"}],
        "civic_no": "201203142383",
        "security_marking": "Ingen",
        "external_identifiers": [],
        "enrolments": [
            {
                "school_unit_id": CENTRAL,
                "school_unit_code": "85412736",
                "school_type": "GR",
                "school_year": 7,
                "start_date": "2025-08-18",
                "end_date": None,
                "programme_code": None,
            }
        ],
        **overrides,
    }


def test_student_body_matches_the_protocol_example() -> None:
    resource_type, body = to_egil(_student_resource())
    assert resource_type is EgilResourceType.USERS
    # egil-scim-protocol.md section 5.4, without the illustrative guardian relation.
    assert body == {
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User", "urn:scim:schemas:extension:sis:school:1.0:User"],
        "externalId": "c0a80101-0000-4000-8000-000000000001",
        "userName": "elli01@gronkoping.se",
        "displayName": "Elsa Lindqvist",
        "name": {"familyName": "Lindqvist", "givenName": "Elsa"},
        "emails": [{"value": "elsa.lindqvist@elev.gronkoping.se", "type": "work"}],
        "urn:scim:schemas:extension:sis:school:1.0:User": {
            "enrolments": [
                {
                    "value": "1a2b3c4d-5e6f-4a1b-8c2d-3e4f5a6b7c8d",
                    "$ref": "SchoolUnits/1a2b3c4d-5e6f-4a1b-8c2d-3e4f5a6b7c8d",
                    "schoolYear": 7,
                    "schoolType": "GR",
                }
            ],
            "civicNo": "201203142383",
            "securityMarking": False,
        },
    }
    assert json.loads(json.dumps(body)) == body  # strictly JSON, no nulls
    assert "null" not in json.dumps(body)


def test_minimised_and_protected_users_omit_what_they_lack() -> None:
    # A pseudonymised person: names and login only.
    minimal = {
        "id": ELSA.upper(),
        "kind": "person",
        "roles": ["student"],
        "school_unit_ids": [],
        "given_name": "Skyddad",
        "family_name": "Identitet",
        "eppn": ["x1@gronkoping.se"],
        "enrolments": [],
    }
    _, body = to_egil(minimal)
    assert body["externalId"] == ELSA
    assert set(body) == {"schemas", "externalId", "userName", "displayName", "name"}

    # An unknown marking (a person the organiser treats as not protected) is never sent as false.
    _, body = to_egil(_student_resource(security_marking=None))
    assert "securityMarking" not in body[USER_EXTENSION]
    _, body = to_egil(_student_resource(security_marking="Ingen"))
    assert body[USER_EXTENSION]["securityMarking"] is False

    _, body = to_egil(_student_resource(security_marking="Sekretessmarkering", civic_no=None, emails=[]))
    assert body[USER_EXTENSION]["securityMarking"] is True
    assert "civicNo" not in body[USER_EXTENSION]
    assert "emails" not in body

    _, body = to_egil(
        _student_resource(
            enrolments=[
                {"school_unit_id": CENTRAL, "school_type": "VUXSFI", "school_year": None, "programme_code": "SFI"}
            ]
        )
    )
    assert body[USER_EXTENSION]["enrolments"] == [
        {"value": CENTRAL, "$ref": f"SchoolUnits/{CENTRAL}", "schoolType": "VUX", "programCode": "SFI"}
    ]


def _resources() -> list[dict[str, Any]]:
    return [
        {"id": ORG, "kind": "organisation", "display_name": "Grönköpings kommun"},
        {"id": SUG, "kind": "school_unit_group", "display_name": "Grundskoleförvaltningen"},
        {
            "id": NORR,
            "kind": "school_unit",
            "organisation_id": ORG,
            "school_unit_group_id": SUG,
            "display_name": "Norrskolan",
            "school_unit_code": "29384756",
            "school_types": ["FKLASS", "GR", "FTH"],
            "municipality_code": "9999",
        },
        _student_resource(),
        {
            "id": EVA,
            "kind": "person",
            "roles": ["teacher"],
            "school_unit_ids": [NORR],
            "given_name": "Eva",
            "middle_name": "Maria",
            "family_name": "Lund",
            "eppn": ["evlu01@gronkoping.se"],
            "emails": [{"value": "eva.lund@gronkoping.se", "type": "Skola personal"}],
            "enrolments": [],
        },
        {
            "id": EMPLOYMENT,
            "kind": "duty",
            "person_id": EVA,
            "school_unit_id": NORR,
            "role": "Lärare",
            "signature": "ELU",
            "start_date": "2020-08-01",
            "end_date": None,
        },
        {
            "id": GROUP_8B,
            "kind": "group",
            "school_unit_id": NORR,
            "member_ids": [ELSA, "c0a80101-0000-4000-8000-000000000007"],
            "display_name": "8B",
            "group_type": "Klass",
            "school_type": "GR",
            "start_date": None,
            "end_date": None,
        },
        {
            "id": ACTIVITY_8B,
            "kind": "activity",
            "school_unit_id": NORR,
            "group_ids": [GROUP_8B],
            "teacher_duty_ids": [EMPLOYMENT],
            "display_name": "Matematik 8B",
        },
    ]


@pytest.mark.parametrize("resource", _resources(), ids=lambda r: str(r["kind"]))
def test_round_trip_preserves_ids_names_codes_and_references(resource: dict[str, Any]) -> None:
    resource_type, body = to_egil(resource)
    assert resource_type.kind.value == resource["kind"]
    assert body["schemas"] == resource_type.schemas
    record = from_egil(resource_type, json.loads(json.dumps(body)))
    entity = _validate(record)
    assert record.key == resource["id"]
    kind = record.kind
    if kind is EntityKind.PERSON:
        assert (entity.given_name, entity.family_name) == (resource["given_name"], resource["family_name"])
        assert entity.middle_name == resource.get("middle_name")
        assert entity.eppn == resource["eppn"][:1]
        assert [(e.value, e.type.value) for e in entity.emails] == [(e["value"], e["type"]) for e in resource["emails"]]
        assert [e.school_unit for e in entity.enrolments] == [e["school_unit_id"] for e in resource["enrolments"]]
        assert [(e.school_year, e.school_type.value) for e in entity.enrolments] == [
            (e["school_year"], e["school_type"]) for e in resource["enrolments"]
        ]
        assert entity.civic_no == resource.get("civic_no")
    elif kind is EntityKind.SCHOOL_UNIT:
        assert (entity.display_name, entity.school_unit_code, entity.municipality_code) == (
            "Norrskolan",
            "29384756",
            "9999",
        )
        assert (entity.organisation, entity.school_unit_group) == (ORG, SUG)
        assert [t.value for t in entity.school_types] == ["FKLASS", "GR", "FTH"]
    elif kind is EntityKind.DUTY:
        assert (entity.person, entity.school_unit, entity.role.value, entity.signature) == (EVA, NORR, "Lärare", "ELU")
    elif kind is EntityKind.GROUP:
        assert [m.person for m in entity.memberships] == resource["member_ids"]
        assert (entity.school_unit, entity.group_type.value, entity.display_name) == (NORR, "Klass", "8B")
    elif kind is EntityKind.ACTIVITY:
        assert (entity.school_unit, entity.groups, entity.teachers) == (NORR, [GROUP_8B], [EMPLOYMENT])
    else:
        assert entity.display_name == resource["display_name"]


def test_reference_shapes() -> None:
    bodies = dict(map(to_egil, _resources()))
    assert bodies[EgilResourceType.EMPLOYMENTS] == {
        "schemas": ["urn:scim:schemas:extension:sis:school:1.0:Employment"],
        "externalId": EMPLOYMENT,
        "employedAt": {"value": NORR, "$ref": f"SchoolUnits/{NORR}"},
        "user": {"value": EVA, "$ref": f"Users/{EVA}"},
        "employmentRole": "Lärare",
        "signature": "ELU",
    }
    activity = bodies[EgilResourceType.ACTIVITIES]
    assert activity["teachers"] == [{"value": EMPLOYMENT, "$ref": f"Employments/{EMPLOYMENT}"}]
    assert activity["groups"] == [{"value": GROUP_8B, "$ref": f"StudentGroups/{GROUP_8B}"}]
    assert (activity["owner"]["$ref"], activity["parentActivity"]) == (f"SchoolUnits/{NORR}", [])
    group = bodies[EgilResourceType.STUDENT_GROUPS]
    assert (group["studentGroupType"], group["schoolType"], group["owner"]["value"]) == ("Klass", "GR", NORR)
    assert bodies[EgilResourceType.SCHOOL_UNITS]["schoolTypes"] == ["FSK", "GR", "FTH"]
    teacher = bodies[EgilResourceType.USERS]
    assert teacher["name"] == {"familyName": "Lund", "givenName": "Eva", "middleName": "Maria"}
    assert teacher["displayName"] == "Eva Lund"
    assert USER_EXTENSION not in teacher  # nothing to carry


# --- enumerations ------------------------------------------------------------------------------------

SCHOOL_TYPE_TABLE = {
    "FS": "FS", "FKLASS": "FSK", "FTH": "FTH", "OPPFTH": "FTH", "GR": "GR", "GRS": "GRS", "TR": "AU",
    "SP": "SP", "SAM": "SAM", "GY": "GY", "GYS": "GYS", "VUX": "VUX", "VUXSFI": "VUX", "VUXGR": "VUX",
    "VUXGY": "VUX", "VUXSARGR": "SUV", "VUXSARTR": "SUV", "VUXSARGY": "SUV", "SFI": "AU", "SARVUX": "SUV",
    "SARVUXGR": "SUV", "SARVUXGY": "SUV", "KU": "AU", "YH": "YH", "FHS": "FHS", "STF": "AU", "KKU": "AU",
    "HS": "HS", "ABU": "AU", "AU": "AU",
}  # fmt: skip


def test_school_type_table_both_ways() -> None:
    assert {k.value: v for k, v in SCHOOL_TYPE_TO_2018.items()} == SCHOOL_TYPE_TABLE
    assert set(SCHOOL_TYPE_TO_2018.values()) == SCHOOL_TYPES_2018
    for code_21, code_2018 in SCHOOL_TYPE_TABLE.items():
        assert school_type_to_2018(code_21) == code_2018
        assert school_type_to_2018(SchoolType(code_21)) == code_2018
    for code_2018 in SCHOOL_TYPES_2018:
        back = school_type_from_2018(code_2018)
        assert isinstance(back, SchoolType)
        assert school_type_to_2018(back) == code_2018  # 2018 -> 2.1 -> 2018 is stable
    assert school_type_from_2018("FSK") is SchoolType.FKLASS
    assert school_type_from_2018("SUV") is SchoolType.SARVUX
    assert school_type_from_2018(" gr ") is SchoolType.GR
    assert school_type_from_2018("KOMVUX") is SchoolType.VUX
    assert school_type_from_2018("XYZ") == "XYZ"  # left for validation to report


def test_employment_roles_and_group_types() -> None:
    kept = {"Rektor", "Lärare", "Förskollärare", "Övrig pedagogisk personal"}
    teaching = {"Förstelärare", "Speciallärare/specialpedagog"}
    for role in DutyRole:
        expected = role.value if role.value in kept else "Lärare" if role.value in teaching else "Annan personal"
        assert employment_role(role) == expected
        assert employment_role(role.value) == expected
    assert employment_role("Vaktmästare") == "Annan personal"
    assert [student_group_type(t) for t in GroupType] == [
        "Undervisning", "Klass", "Mentor", "Övrigt", "Schema", "Övrigt", "Övrigt", "Övrigt"
    ]  # fmt: skip
    assert student_group_type(None) == "Övrigt"


def test_resource_types() -> None:
    assert [t.endpoint for t in EgilResourceType] == [
        "Organisations", "SchoolUnitGroups", "SchoolUnits", "Users", "Employments", "StudentGroups", "Activities"
    ]  # fmt: skip
    assert EgilResourceType.STUDENT_GROUPS.schemas == ["urn:scim:schemas:extension:sis:school:1.0:StudentGroup"]
    assert EgilResourceType.ACTIVITIES.type_name == "Activity"
    for egil_type in EgilResourceType:
        assert EgilResourceType.for_kind(egil_type.kind) is egil_type


# --- send order ----------------------------------------------------------------------------------------


def test_send_order_reproduces_the_initial_sync_capture() -> None:
    requests = _captured("01-initial-sync")
    keys = [
        egil_send_order(_endpoint(r["path"]), r["body_json"]["externalId"], student=is_student(r["body_json"]))
        for r in requests
    ]
    assert keys == sorted(keys)
    assert len(set(keys)) == len(keys)


def test_send_order_reproduces_the_unprovision_capture() -> None:
    requests = _captured("08-unprovision-skip-load")
    assert {r["method"] for r in requests} == {"DELETE"}
    keys = []
    for request in requests:
        endpoint, resource_id = request["path"].strip("/").split("/")
        keys.append(egil_send_order(endpoint, resource_id, delete=True, student=resource_id.startswith("c0a80101")))
    assert keys == sorted(keys)


def test_send_order_puts_creates_first_then_deletes_in_reverse() -> None:
    a, b = "00000000-0000-4000-8000-00000000000a", "00000000-0000-4000-8000-00000000000b"
    requests = [
        ("Organisations", a, True, False),
        ("Activities", b, True, False),
        ("Users", b, True, True),
        ("Users", a, True, False),
        (EntityKind.ACTIVITY, b, False, False),
        (EntityKind.PERSON, b, False, False),
        (EntityKind.PERSON, a, False, True),
        (EgilResourceType.EMPLOYMENTS, a, False, False),
        (EntityKind.ORGANISATION, b, False, False),
        (EntityKind.ORGANISATION, a.upper(), False, False),
        ("SchoolUnits", a, False, False),
        ("StudentGroups", a, False, False),
        ("SchoolUnitGroups", a, False, False),
    ]
    ordered = sorted(requests, key=lambda r: egil_send_order(r[0], r[1], delete=r[2], student=r[3]))

    def egil_type(value: Any) -> EgilResourceType:
        return EgilResourceType.for_kind(value) if isinstance(value, EntityKind) else EgilResourceType(value)

    names = [(egil_type(r[0]), r[1][-1].lower(), r[2]) for r in ordered]
    assert names == [
        (EgilResourceType.ORGANISATIONS, "a", False),
        (EgilResourceType.ORGANISATIONS, "b", False),
        (EgilResourceType.SCHOOL_UNIT_GROUPS, "a", False),
        (EgilResourceType.SCHOOL_UNITS, "a", False),
        (EgilResourceType.USERS, "a", False),  # the student
        (EgilResourceType.USERS, "b", False),  # the teacher
        (EgilResourceType.EMPLOYMENTS, "a", False),
        (EgilResourceType.STUDENT_GROUPS, "a", False),
        (EgilResourceType.ACTIVITIES, "b", False),
        (EgilResourceType.ACTIVITIES, "b", True),
        (EgilResourceType.USERS, "a", True),  # the teacher is deleted first
        (EgilResourceType.USERS, "b", True),
        (EgilResourceType.ORGANISATIONS, "a", True),
    ]
    assert is_student(_student_resource())
    assert not is_student({"roles": ["teacher", "other_staff"], "enrolments": []})
