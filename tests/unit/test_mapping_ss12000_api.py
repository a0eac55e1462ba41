"""SS 12000:2020 REST objects (2.1, tolerant of 2.0) to canonical source records and deletions."""

from __future__ import annotations

import json
from typing import Any

import pytest

from skolsynk.adapters.ss12000_api import Ss12000MappingError, deleted_entities, from_ss12000
from skolsynk.contracts.source import SourceDeletion, SourceRecord
from skolsynk.domain.ss12000 import (
    ENTITY_MODELS,
    DutyRole,
    EntityKind,
    GroupType,
    OrganisationType,
    PersonStatus,
    SchoolType,
    SecurityMarking,
)
from tests.reference import SS12000_EXAMPLES

pytestmark = pytest.mark.unit


#: Example name -> the collection it comes from, for the provisioning types.
PROVISIONING_EXAMPLES = {
    "Organisation_huvudman": "organisations",
    "Organisation_skolenhet": "organisations",
    "Person_student": "persons",
    "Person_teacher": "persons",
    "Duty": "duties",
    "Group_klass": "groups",
    "Activity": "activities",
}

HUVUDMAN = "0f3c6c1e-6a51-4c1a-9d0e-2b7f4a1c9e01"
SKOLENHET = "5b1f0f8e-3c2d-4b7e-8f61-0d9a7c2e4b10"
STUDENT = "9a7e2c3d-1f44-4a8b-b2c5-6d0e9f1a2b30"
TEACHER = "3e8d1b2a-7c6f-4e5d-9a0b-1c2d3e4f5a60"
DUTY = "7f6e5d4c-3b2a-4190-8a7b-6c5d4e3f2a10"
GROUP = "2d3c4b5a-6978-4a6b-9c8d-7e6f5a4b3c20"
ACTIVITY = "e1f2a3b4-c5d6-4e7f-8a9b-0c1d2e3f4a80"


@pytest.fixture(scope="module")
def examples() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(SS12000_EXAMPLES.read_text(encoding="utf-8"))
    return data


def _validate(record: SourceRecord) -> Any:
    return ENTITY_MODELS[record.kind].model_validate({**record.data, "key": record.key, "kind": record.kind})


def _one(endpoint: str, obj: dict[str, Any]) -> Any:
    [record] = from_ss12000(endpoint, obj)
    return _validate(record)


def test_every_provisioning_example_maps_and_validates(examples: dict[str, Any]) -> None:
    kinds = {}
    for name, endpoint in PROVISIONING_EXAMPLES.items():
        records = from_ss12000(endpoint, examples[name])
        assert len(records) == 1, name
        entity = _validate(records[0])
        assert entity.key == examples[name]["id"]
        kinds[name] = entity.kind
    assert kinds == {
        "Organisation_huvudman": EntityKind.ORGANISATION,
        "Organisation_skolenhet": EntityKind.SCHOOL_UNIT,
        "Person_student": EntityKind.PERSON,
        "Person_teacher": EntityKind.PERSON,
        "Duty": EntityKind.DUTY,
        "Group_klass": EntityKind.GROUP,
        "Activity": EntityKind.ACTIVITY,
    }
    # Placements are records of their own (selected only for subscriptions that ask for them).
    assert _one("/placements", examples["Placement"]).kind is EntityKind.PLACEMENT


def test_examples_map_field_by_field(examples: dict[str, Any]) -> None:
    organisation = _one("organisations", examples["Organisation_huvudman"])
    assert (organisation.display_name, organisation.organisation_number, organisation.organisation_code) == (
        "Exempelkommun, Utbildningsförvaltningen",
        "2120009999",
        "UTB",
    )
    assert organisation.municipality_code == "9999"

    unit = _one("organisations", examples["Organisation_skolenhet"])
    assert (unit.school_unit_code, unit.organisation, unit.municipality_code) == ("87654321", HUVUDMAN, "9999")
    assert unit.school_types == [SchoolType.FKLASS, SchoolType.GR, SchoolType.FTH]
    assert str(unit.start_date) == "2019-07-01"

    student = _one("persons", examples["Person_student"])
    assert (student.given_name, student.family_name) == ("Alva", "Lindqvist")
    assert student.eppn == ["alva.lindqvist@edu.exempelkommun.se"]
    assert student.civic_no == "201204129983"
    assert str(student.birth_date) == "2012-04-12"
    assert student.security_marking is SecurityMarking.INGEN
    assert [(e.value, e.type.value) for e in student.emails] == [("alva.lindqvist@edu.exempelkommun.se", "Skola elev")]
    [identifier] = student.external_identifiers
    assert (identifier.value, identifier.globally_unique) == ("alvlin12", False)
    [enrolment] = student.enrolments
    assert (enrolment.school_unit, enrolment.school_type, enrolment.school_year) == (SKOLENHET, SchoolType.GR, 7)
    assert (str(enrolment.start_date), enrolment.cancelled) == ("2019-08-19", False)

    teacher = _one("persons", examples["Person_teacher"])
    assert (teacher.civic_no, teacher.enrolments) == ("197909219987", [])

    duty = _one("duties", examples["Duty"])
    assert (duty.person, duty.school_unit, duty.role, duty.signature) == (TEACHER, SKOLENHET, DutyRole.LARARE, "ANLA")

    group = _one("groups", examples["Group_klass"])
    assert (group.school_unit, group.group_type, group.school_type) == (SKOLENHET, GroupType.KLASS, SchoolType.GR)
    [membership] = group.memberships
    assert (membership.person, str(membership.end_date)) == (STUDENT, "2026-06-12")

    activity = _one("activities", examples["Activity"])
    assert (activity.school_unit, activity.groups, activity.teachers) == (SKOLENHET, [GROUP], [DUTY])
    assert (activity.display_name, str(activity.end_date)) == ("Matematik 7B", "2026-06-12")


def test_ids_are_lower_case_keys_and_references() -> None:
    group = _one(
        "Groups",
        {
            "id": GROUP.upper(),
            "displayName": "7B",
            "startDate": "2025-08-18",
            "groupType": "Undervisning",
            "organisation": {"id": SKOLENHET.upper()},
            "groupMemberships": [{"person": {"id": STUDENT.upper(), "securityMarking": "Ingen"}}],
        },
    )
    assert (group.key, group.school_unit, group.memberships[0].person) == (GROUP, SKOLENHET, STUDENT)


SKOLA = "c4d5e6f7-0819-4a2b-8c3d-4e5f60718293"


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ("Huvudman", OrganisationType.HUVUDMAN),
        ("Skola", OrganisationType.SKOLA),
        ("Rektorsområde", OrganisationType.REKTORSOMRADE),
        ("Förvaltning", OrganisationType.FORVALTNING),
        ("Stadsdel", OrganisationType.FORVALTNING),  # 2.0
        ("Verksamhetsområde", OrganisationType.VERKSAMHETSOMRADE),
        ("Övrigt", OrganisationType.OVRIGT),
        (" skola ", OrganisationType.SKOLA),
    ],
)
def test_every_level_above_school_units_is_kept_with_its_type_and_parent(given: str, kept: OrganisationType) -> None:
    obj = {"id": SKOLA, "displayName": "X", "organisationType": given, "parentOrganisation": {"id": HUVUDMAN.upper()}}
    [record] = from_ss12000("organisations", obj)
    organisation = _validate(record)
    assert (record.kind, organisation.organisation_type, organisation.parent) == (
        EntityKind.ORGANISATION,
        kept,
        HUVUDMAN,
    )


@pytest.mark.parametrize("given", [None, "", "Kommundel", "Skolenheten"])
def test_a_missing_or_unknown_organisation_type_is_passed_on_for_the_normaliser_to_report(given: str | None) -> None:
    # Not dropped (the normaliser reports it as organisation.type_unknown and keeps the organisation);
    # the model refuses it, so the record cannot pass as a Huvudman by default.
    obj = {"id": SKOLA, "displayName": "X", "organisationType": given}
    [record] = from_ss12000("organisations", obj)
    assert record.kind is EntityKind.ORGANISATION
    assert record.data["organisation_type"] == (given or None)
    if given:
        with pytest.raises(ValueError, match="organisation_type"):
            _validate(record)


def test_a_school_unit_beneath_a_skola_refers_to_the_skola() -> None:
    obj = {
        "id": SKOLENHET,
        "displayName": "X",
        "organisationType": "skolenhet",
        "schoolUnitCode": "12345678",
        "parentOrganisation": {"id": SKOLA},
    }
    unit = _one("organisations", obj)
    assert (unit.kind, unit.organisation) == (EntityKind.SCHOOL_UNIT, SKOLA)


def test_version_2_0_tolerances() -> None:
    person = _one(
        "persons",
        {
            "id": STUDENT,
            "givenName": "Alva",
            "familyName": "Lindqvist",
            "civicNo": "201204129983",  # tolerated bare string
            "enrolments": [{"enroledAt": {"id": SKOLENHET}, "schoolType": "KOMVUX", "startDate": "2024-01-08"}],
            "sex": "Kvinna",
            "somethingNew": {"x": 1},
        },
    )
    assert person.enrolments[0].school_type is SchoolType.VUX
    assert person.civic_no == "201204129983"
    enrolment = {
        "enroledAt": {"id": SKOLENHET},
        "schoolType": "GY",
        "startDate": "2024-08-19",
        "educationCode": "NANAT",
    }
    person = _one("persons", {"id": STUDENT, "givenName": "A", "familyName": "B", "enrolments": [enrolment]})
    assert person.enrolments[0].programme_code == "NANAT"


def test_duty_without_person_provisions_nothing() -> None:
    duty = {"id": DUTY, "dutyAt": {"id": SKOLENHET}, "dutyRole": "Lärare", "startDate": "2020-08-01"}
    assert from_ss12000("duties", duty) == []


def test_missing_required_content_is_left_for_validation() -> None:
    # No schoolUnitCode: still a record, so the normaliser can report it as a data-quality finding.
    [record] = from_ss12000("organisations", {"id": SKOLENHET, "displayName": "X", "organisationType": "Skolenhet"})
    assert record.kind is EntityKind.SCHOOL_UNIT
    with pytest.raises(ValueError, match="school_unit_code"):
        _validate(record)


@pytest.mark.parametrize(
    ("endpoint", "obj", "field"),
    [
        ("persons", {"givenName": "Alva", "familyName": "Lindqvist"}, "id"),
        ("persons", {"id": 12, "givenName": "Alva"}, "id"),
        ("persons", {"id": STUDENT, "givenName": "Alva", "civicNo": 201204129983}, "civicNo"),
        ("persons", {"id": STUDENT, "givenName": "Alva", "emails": {"value": "alva@example.se"}}, "emails"),
        ("persons", {"id": STUDENT, "enrolments": [{"enroledAt": SKOLENHET}]}, "enrolments[0].enroledAt"),
        ("groups", {"id": GROUP, "displayName": "7B", "groupMemberships": ["Alva Lindqvist"]}, "groupMemberships[0]"),
        ("activities", {"id": ACTIVITY, "teachers": [{"grader": True}]}, "teachers[0].duty"),
        ("organisations", {"id": HUVUDMAN, "organisationType": ["Huvudman"]}, "organisationType"),
        ("students", {"id": STUDENT}, "endpoint"),
    ],
)  # fmt: skip
def test_unmappable_objects_raise_without_personal_data(endpoint: str, obj: dict[str, Any], field: str) -> None:
    with pytest.raises(Ss12000MappingError) as caught:
        from_ss12000(endpoint, obj)
    assert caught.value.field == field
    for personal in ("Alva", "Lindqvist", "201204129983", "alva@", STUDENT, SKOLENHET):
        assert personal not in str(caught.value)


def test_deleted_entities_from_the_example_uses_the_spec_spelling(examples: dict[str, Any]) -> None:
    assert deleted_entities(examples["DeletedEntities"]) == [
        SourceDeletion(kind=EntityKind.PERSON, key="0c9b8a7d-6e5f-4a3b-9c2d-1e0f9a8b7c60"),
        SourceDeletion(kind=EntityKind.ACTIVITY, key="a0b1c2d3-e4f5-4a6b-8c7d-9e0f1a2b3c40"),
    ]


def test_deleted_entities_accepts_both_spellings_and_the_bare_data() -> None:
    upper = ACTIVITY.upper()
    both = {"data": {"activitites": [ACTIVITY], "activities": [upper, GROUP]}, "pageToken": None}
    assert deleted_entities(both) == [
        SourceDeletion(kind=EntityKind.ACTIVITY, key=ACTIVITY),
        SourceDeletion(kind=EntityKind.ACTIVITY, key=GROUP),
    ]
    assert deleted_entities({"activities": [ACTIVITY]}) == [SourceDeletion(kind=EntityKind.ACTIVITY, key=ACTIVITY)]
    payload = {
        "data": {
            "organisations": [SKOLENHET],
            "duties": [{"id": DUTY}],
            "groups": [GROUP],
            "placements": ["b1c2d3e4-f5a6-4b7c-8d9e-0f1a2b3c4d50"],
            "absences": [],
        }
    }
    assert deleted_entities(payload) == [
        SourceDeletion(kind=EntityKind.ORGANISATION, key=SKOLENHET),
        SourceDeletion(kind=EntityKind.SCHOOL_UNIT, key=SKOLENHET),
        SourceDeletion(kind=EntityKind.GROUP, key=GROUP),
        SourceDeletion(kind=EntityKind.DUTY, key=DUTY),
        SourceDeletion(kind=EntityKind.PLACEMENT, key="b1c2d3e4-f5a6-4b7c-8d9e-0f1a2b3c4d50"),
    ]
    assert deleted_entities({"data": {}, "pageToken": None}) == []
    with pytest.raises(Ss12000MappingError, match=r"data\.persons: not a list"):
        deleted_entities({"data": {"persons": STUDENT}})


# --- securityMarking and personStatus ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "marking"),
    [
        ({"securityMarking": "Skyddad folkbokföring"}, SecurityMarking.SKYDDAD_FOLKBOKFORING),
        ({"securityMarking": "Ingen"}, SecurityMarking.INGEN),
        ({"securityMarking": None}, None),  # null: not given
        ({}, None),  # withheld (an attribute scope): unknown, which is not "Ingen"
    ],
)
def test_a_person_without_security_marking_has_an_unknown_one(
    given: dict[str, Any], marking: SecurityMarking | None
) -> None:
    person = _one("persons", {"id": STUDENT, "givenName": "A", "familyName": "B", **given})
    assert person.security_marking is marking


@pytest.mark.parametrize(
    ("given", "status"),
    [
        ({}, PersonStatus.AKTIV),  # the spec's default
        ({"personStatus": None}, PersonStatus.AKTIV),
        ({"personStatus": "Aktiv"}, PersonStatus.AKTIV),
        ({"personStatus": "Utvandrad"}, PersonStatus.UTVANDRAD),
        ({"personStatus": "Avliden"}, PersonStatus.AVLIDEN),
    ],
)
def test_person_status_is_mapped(given: dict[str, Any], status: PersonStatus) -> None:
    [record] = from_ss12000("persons", {"id": STUDENT, "givenName": "A", "familyName": "B", **given})
    assert record.data.get("person_status") == given.get("personStatus")  # null is not copied
    assert _validate(record).person_status is status
