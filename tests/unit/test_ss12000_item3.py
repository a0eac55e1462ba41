"""Issue 20, item 3: mentors (Duty.assignmentRole), subjects and courses (Activity.syllabus, /syllabuses),
teacher assignment dates and placements, from the canonical model to what vendors receive."""

from __future__ import annotations

import json
from datetime import date
from typing import Any
from uuid import UUID

import pytest
from pydantic import ValidationError

from skolsynk.adapters.egil import USER_EXTENSION, to_egil
from skolsynk.adapters.ss12000_api import Ss12000MappingError, deleted_entities, from_ss12000
from skolsynk.contracts.source import SourceRecord
from skolsynk.contracts.vendor import VendorChange, unknown_resource_fields
from skolsynk.domain.ids import entity_id
from skolsynk.domain.quality import FindingCode
from skolsynk.domain.reconcile import reconcile
from skolsynk.domain.selection import ProjectedResource, StoredEntity, project
from skolsynk.domain.ss12000 import (
    RESOLVED_KINDS,
    VENDOR_KINDS,
    Activity,
    AssignmentRoleType,
    Duty,
    DutyRole,
    Enrolment,
    Entity,
    EntityKind,
    Group,
    GroupType,
    Membership,
    Organisation,
    Person,
    Placement,
    SchoolType,
    SchoolUnit,
    Syllabus,
)
from skolsynk.domain.subscription import OPTIONAL_FIELDS, SENSITIVE_FIELDS, VendorProfile, VendorSubscription
from skolsynk_services.ss12000_puller.mapping import deleted_types, endpoints
from skolsynk_testkit.fakes.ss12000_api import to_ss12000
from tests import ss12000_openapi
from tests.reference import SS12000_EXAMPLES

pytestmark = pytest.mark.unit

DAY = date(2026, 3, 2)


# --- the canonical model ---------------------------------------------------------------------------


def test_a_duty_carries_its_assignment_roles_with_the_type_in_any_case() -> None:
    duty = Duty.model_validate(
        {
            "key": "d1",
            "person": "p1",
            "school_unit": "su",
            "role": "Lärare",
            "assignment_roles": [
                {"group": "7a", "assignment_role_type": "mentor", "start_date": "2025-08-15", "end_date": "2026-06-10"}
            ],
        }
    )
    (role,) = duty.assignment_roles
    assert role.assignment_role_type is AssignmentRoleType.MENTOR
    assert role.group == "7a"
    assert role.active_on(DAY)
    assert not role.active_on(date(2026, 6, 11))


def test_an_assignment_role_ss12000_does_not_have_is_invalid() -> None:
    with pytest.raises(ValidationError):
        Duty.model_validate(
            {
                "key": "d1",
                "person": "p1",
                "school_unit": "su",
                "role": "Lärare",
                "assignment_roles": [{"group": "7a", "assignment_role_type": "Klassföreståndare"}],
            }
        )


def test_an_activity_s_teacher_counts_while_their_assignment_is_active() -> None:
    activity = Activity.model_validate(
        {
            "key": "a1",
            "display_name": "Ma 7A",
            "school_unit": "su",
            "groups": ["7a"],
            "teachers": ["d1", "d2"],
            "teacher_assignments": [{"duty": "d2", "start_date": "2026-01-10", "end_date": "2026-02-28"}],
            "syllabus": "s-ma",
        }
    )
    assert activity.teaching_on("d1", DAY)  # no dates: the whole activity
    assert not activity.teaching_on("d2", DAY)
    assert activity.teaching_on("d2", date(2026, 2, 28))  # inclusive
    assert not activity.teaching_on("d2", date(2026, 1, 9))
    assert activity.syllabus == "s-ma"


def test_teacher_dates_for_a_duty_that_is_not_a_teacher_are_invalid() -> None:
    with pytest.raises(ValidationError, match="not among teachers"):
        Activity.model_validate(
            {"key": "a1", "display_name": "x", "school_unit": "su", "teacher_assignments": [{"duty": "d9"}]}
        )


def test_a_syllabus_needs_a_subject_name() -> None:
    course = Syllabus(key="s", subject_name="Matematik", subject_code="GRGRMAT01", course_code="MATMAT01a")
    assert course.kind is EntityKind.SYLLABUS
    with pytest.raises(ValidationError):
        Syllabus.model_validate({"key": "s", "course_code": "MATMAT01a"})


@pytest.mark.parametrize("school_type", ["FS", "FTH", "OPPFTH", "fth"])
def test_a_placement_is_at_a_forskola_or_fritidshem(school_type: str) -> None:
    placement = Placement.model_validate(
        {"key": "pl", "child": "c1", "school_unit": "su", "school_type": school_type, "start_date": "2026-01-01"}
    )
    assert placement.school_type in (SchoolType.FS, SchoolType.FTH, SchoolType.OPPFTH)


def test_a_placement_in_another_school_type_is_invalid() -> None:
    with pytest.raises(ValidationError, match="FS, FTH or OPPFTH"):
        Placement.model_validate({"key": "pl", "child": "c1", "school_unit": "su", "school_type": "GR"})


def test_syllabuses_and_placements_are_stored_but_never_delivered_on_their_own() -> None:
    assert {EntityKind.SYLLABUS, EntityKind.PLACEMENT} == RESOLVED_KINDS
    assert not RESOLVED_KINDS & set(VENDOR_KINDS)
    assert set(VENDOR_KINDS) | RESOLVED_KINDS == set(EntityKind)


# --- SS 12000:2020 objects as records, and back as the fake serves them ------------------------------

EXAMPLES = json.loads(SS12000_EXAMPLES.read_text(encoding="utf-8"))
META = {"created": "2026-01-01T08:00:00+01:00", "modified": "2026-01-01T08:00:00+01:00"}


def only(records: list[SourceRecord]) -> SourceRecord:
    (record,) = records
    return record


def test_a_duty_s_assignment_roles_are_read() -> None:
    record = only(from_ss12000("duties", EXAMPLES["Duty"]))
    (role,) = record.data["assignment_roles"]
    assert role["group"] == EXAMPLES["Duty"]["assignmentRole"][0]["group"]["id"]
    assert role["assignment_role_type"] == "Mentor"
    assert Duty.model_validate({**record.data, "key": record.key}).assignment_roles[0].group == role["group"]


def test_an_assignment_role_without_a_group_cannot_be_mapped() -> None:
    duty = {**EXAMPLES["Duty"], "assignmentRole": [{"assignmentRoleType": "Mentor"}]}
    with pytest.raises(Ss12000MappingError, match=r"assignmentRole\[0\]\.group: missing"):
        from_ss12000("duties", duty)


def test_an_activity_s_syllabus_and_dated_teachers_are_read() -> None:
    activity = EXAMPLES["Activity"]
    record = only(from_ss12000("activities", activity))
    assert record.data["syllabus"] == activity["syllabus"]["id"]
    duty = activity["teachers"][0]["duty"]["id"]
    assert record.data["teacher_assignments"] == [{"duty": duty, "start_date": "2025-08-18"}]
    # A teacher without dates gets no entry: they teach the whole activity.
    undated = {**activity, "teachers": [{"duty": {"id": duty}}]}
    assert "teacher_assignments" not in only(from_ss12000("activities", undated)).data


def test_syllabuses_and_placements_are_read() -> None:
    syllabus = {
        "id": "F0E1D2C3-B4A5-4968-8776-655443322110",
        "meta": META,
        "schoolType": "GY",
        "subjectName": "Matematik",
        "subjectCode": "MAT",
        "subjectDesignation": "MA",
        "courseCode": "MATMAT01a",
        "courseName": "Matematik 1a",
        "official": True,
        "points": 100,
    }
    record = only(from_ss12000("syllabuses", syllabus))
    assert record.key == "f0e1d2c3-b4a5-4968-8776-655443322110"
    assert record.data == {
        "subject_name": "Matematik",
        "subject_code": "MAT",
        "subject_designation": "MA",
        "course_code": "MATMAT01a",
        "course_name": "Matematik 1a",
        "school_type": "GY",
        "official": True,
    }
    placement = EXAMPLES["Placement"]
    record = only(from_ss12000("placements", placement))
    assert record.kind is EntityKind.PLACEMENT
    assert record.data == {
        "child": placement["child"]["id"],
        "school_unit": placement["placedAt"]["id"],
        "group": placement["group"]["id"],
        "school_type": "FS",
        "start_date": "2025-04-01",
    }
    assert from_ss12000("placements", {k: v for k, v in placement.items() if k != "child"}) == []


def test_deleted_syllabuses_and_placements_are_deletions() -> None:
    deletions = deleted_entities({"data": {"syllabuses": ["s1"], "placements": ["p1"], "absences": ["x"]}})
    assert {(d.kind, d.key) for d in deletions} == {(EntityKind.SYLLABUS, "s1"), (EntityKind.PLACEMENT, "p1")}


def test_placements_are_read_only_when_asked_for() -> None:
    assert "placements" not in endpoints(placements=False)
    assert "Placement" not in deleted_types(placements=False)
    assert endpoints(placements=True)[-1] == "placements"
    assert "Placement" in deleted_types(placements=True)
    # A syllabus is read before the activities that refer to it.
    assert endpoints(placements=False).index("syllabuses") < endpoints(placements=False).index("activities")


ROUND_TRIP = [
    SourceRecord(
        kind=EntityKind.DUTY,
        key="0b8e2f6a-1c4d-4e5f-8a9b-0c1d2e3f4a01",
        data={
            "person": "0b8e2f6a-1c4d-4e5f-8a9b-0c1d2e3f4a02",
            "school_unit": "0b8e2f6a-1c4d-4e5f-8a9b-0c1d2e3f4a03",
            "role": "Lärare",
            "start_date": "2025-08-01",
            "assignment_roles": [
                {
                    "group": "0b8e2f6a-1c4d-4e5f-8a9b-0c1d2e3f4a04",
                    "assignment_role_type": "Mentor",
                    "start_date": "2025-08-15",
                    "end_date": "2026-06-10",
                }
            ],
        },
    ),
    SourceRecord(
        kind=EntityKind.SYLLABUS,
        key="0b8e2f6a-1c4d-4e5f-8a9b-0c1d2e3f4a05",
        data={"subject_name": "Matematik", "subject_code": "GRGRMAT01", "school_type": "GR", "official": True},
    ),
    SourceRecord(
        kind=EntityKind.ACTIVITY,
        key="0b8e2f6a-1c4d-4e5f-8a9b-0c1d2e3f4a06",
        data={
            "display_name": "Ma 7A",
            "school_unit": "0b8e2f6a-1c4d-4e5f-8a9b-0c1d2e3f4a03",
            "start_date": "2025-08-18",
            "groups": ["0b8e2f6a-1c4d-4e5f-8a9b-0c1d2e3f4a04"],
            "teachers": ["0b8e2f6a-1c4d-4e5f-8a9b-0c1d2e3f4a01", "0b8e2f6a-1c4d-4e5f-8a9b-0c1d2e3f4a07"],
            "teacher_assignments": [{"duty": "0b8e2f6a-1c4d-4e5f-8a9b-0c1d2e3f4a07", "end_date": "2026-01-31"}],
            "syllabus": "0b8e2f6a-1c4d-4e5f-8a9b-0c1d2e3f4a05",
        },
    ),
    SourceRecord(
        kind=EntityKind.PLACEMENT,
        key="0b8e2f6a-1c4d-4e5f-8a9b-0c1d2e3f4a08",
        data={
            "child": "0b8e2f6a-1c4d-4e5f-8a9b-0c1d2e3f4a09",
            "school_unit": "0b8e2f6a-1c4d-4e5f-8a9b-0c1d2e3f4a03",
            "group": "0b8e2f6a-1c4d-4e5f-8a9b-0c1d2e3f4a0a",
            "school_type": "FTH",
            "start_date": "2025-08-01",
        },
    ),
]


@pytest.mark.parametrize("record", ROUND_TRIP, ids=lambda r: r.kind.value)
def test_the_fake_serves_valid_2_1_that_maps_back_to_the_record(record: SourceRecord) -> None:
    endpoint, obj = to_ss12000(record)
    schema = {"duties": "Duty", "syllabuses": "Syllabus", "activities": "Activity", "placements": "Placement"}
    problems = ss12000_openapi.violations(ss12000_openapi.component(schema[endpoint]), {**obj, "meta": META})
    assert not problems, problems
    assert from_ss12000(endpoint, obj) == [record]


# --- selection: what vendors get -------------------------------------------------------------------

TENANT, SOURCE, CODE = "kommun-a", "ss12000-1", "12345678"
ENTITIES: list[Entity] = [
    Organisation(key="hm", display_name="Kommunen"),
    SchoolUnit(key="su", display_name="Skolan", school_unit_code=CODE, school_types=["GR", "FS"], organisation="hm"),
    Person(key="t1", given_name="Lärare", family_name="Ett", eppn=["t1@k.se"], security_marking="Ingen"),
    Person(key="t2", given_name="Lärare", family_name="Två", eppn=["t2@k.se"], security_marking="Ingen"),
    Person(
        key="s1",
        given_name="Elev",
        family_name="Ett",
        eppn=["s1@k.se"],
        security_marking="Ingen",
        enrolments=[Enrolment(school_unit="su", school_type="GR", school_year=7)],
    ),
    Person(key="c1", given_name="Barn", family_name="Ett", eppn=["c1@k.se"], security_marking="Ingen"),
    Duty.model_validate(
        {
            "key": "d1",
            "person": "t1",
            "school_unit": "su",
            "role": "Lärare",
            "assignment_roles": [
                {"group": "7a", "assignment_role_type": "Mentor", "start_date": "2025-08-15"},
                {"group": "7a", "assignment_role_type": "Specialpedagog", "end_date": "2026-01-31"},  # ended
                {"group": "elsewhere", "assignment_role_type": "Mentor"},  # no such group
            ],
        }
    ),
    Duty(key="d2", person="t2", school_unit="su", role=DutyRole.LARARE),
    Group(
        key="7a", display_name="7A", group_type=GroupType.KLASS, school_unit="su", memberships=[Membership(person="s1")]
    ),
    Group(key="humlan", display_name="Humlan", group_type=GroupType.AVDELNING, school_unit="su"),
    Syllabus(key="ma", subject_name="Matematik", subject_code="GRGRMAT01", subject_designation="MA", school_type="GR"),
    Activity.model_validate(
        {
            "key": "ma7a",
            "display_name": "Ma 7A",
            "school_unit": "su",
            "groups": ["7a"],
            "teachers": ["d1", "d2"],
            "teacher_assignments": [
                {"duty": "d1", "start_date": "2025-08-18"},
                {"duty": "d2", "end_date": "2026-02-28"},  # ended before DAY
            ],
            "syllabus": "ma",
        }
    ),
    Placement(key="pl1", child="c1", school_unit="su", school_type="FS", group="humlan", start_date=date(2025, 8, 1)),
]
EVERYTHING = VendorProfile(
    vendor_id="gleerups", accepted_fields={k: v - SENSITIVE_FIELDS for k, v in OPTIONAL_FIELDS.items()}
)


def eid(kind: EntityKind, key: str) -> UUID:
    return entity_id(TENANT, SOURCE, kind, key)


def select(profile: VendorProfile = EVERYTHING, **subscription: Any) -> dict[UUID, ProjectedResource]:
    state, _ = reconcile(TENANT, [StoredEntity(eid(e.kind, e.key), SOURCE, e) for e in ENTITIES], DAY)
    sub = VendorSubscription(tenant_id=TENANT, vendor_id=profile.vendor_id, school_unit_codes={CODE}, **subscription)
    return project(state, sub, profile, DAY)


def test_a_mentor_s_duty_names_the_groups_it_has_a_task_towards() -> None:
    duty = select()[eid(EntityKind.DUTY, "d1")].resource
    assert duty["assignment_roles"] == [
        {
            "group_id": str(eid(EntityKind.GROUP, "7a")),
            "assignment_role_type": "Mentor",
            "start_date": "2025-08-15",
            "end_date": None,
        }
    ]
    # A group the vendor does not get (Klass only, here: excluded by type) is not named.
    assert select(group_types={GroupType.AVDELNING})[eid(EntityKind.DUTY, "d1")].resource["assignment_roles"] == []


def test_an_activity_has_its_syllabus_and_only_the_teachers_teaching_today() -> None:
    activity = select()[eid(EntityKind.ACTIVITY, "ma7a")].resource
    d1 = str(eid(EntityKind.DUTY, "d1"))
    assert activity["teacher_duty_ids"] == [d1]
    assert activity["teacher_assignments"] == [{"duty_id": d1, "start_date": "2025-08-18", "end_date": None}]
    assert activity["syllabus"] == {
        "id": str(eid(EntityKind.SYLLABUS, "ma")),
        "subject_name": "Matematik",
        "subject_code": "GRGRMAT01",
        "subject_designation": "MA",
        "course_code": None,
        "course_name": None,
        "school_type": "GR",
        "official": None,
    }


def test_the_new_fields_are_opt_in_but_teacher_dates_apply_to_every_vendor() -> None:
    plain = VendorProfile(vendor_id="ne")
    resources = select(plain, placements=True)
    activity = resources[eid(EntityKind.ACTIVITY, "ma7a")].resource
    assert "syllabus" not in activity
    assert "teacher_assignments" not in activity
    assert activity["teacher_duty_ids"] == [str(eid(EntityKind.DUTY, "d1"))]
    assert "assignment_roles" not in resources[eid(EntityKind.DUTY, "d1")].resource
    assert eid(EntityKind.PERSON, "c1") not in resources  # the profile takes no placements


def test_a_placed_child_is_selected_only_when_the_subscription_asks_for_placements() -> None:
    assert eid(EntityKind.PERSON, "c1") not in select()
    resources = select(placements=True)
    child = resources[eid(EntityKind.PERSON, "c1")]
    assert child.roles == ("student",)
    assert child.resource["enrolments"] == []
    assert child.resource["placements"] == [
        {
            "id": str(eid(EntityKind.PLACEMENT, "pl1")),
            "school_unit_id": str(eid(EntityKind.SCHOOL_UNIT, "su")),
            "school_unit_code": CODE,
            "group_id": str(eid(EntityKind.GROUP, "humlan")),
            "school_type": "FS",
            "start_date": "2025-08-01",
            "end_date": None,
        }
    ]
    assert resources[eid(EntityKind.PERSON, "s1")].resource["placements"] == []
    # The school-type filter applies to placements as to enrolments.
    assert eid(EntityKind.PERSON, "c1") not in select(placements=True, school_types={SchoolType.GR})


def test_every_resource_with_the_new_fields_fits_the_queue_contract() -> None:
    for resource in select(placements=True).values():
        assert unknown_resource_fields(resource.kind, resource.resource) == [], resource.kind
        VendorChange(
            vendor_id="gleerups",
            entity_kind=resource.kind,
            entity_id=resource.id,
            operation="upsert",
            version=1,
            resource=resource.resource,
            test_mode=False,
            reason="snapshot",
        )


def test_an_unknown_syllabus_is_dropped_from_the_activity_with_a_finding() -> None:
    stored = [StoredEntity(eid(e.kind, e.key), SOURCE, e) for e in ENTITIES if e.kind is not EntityKind.SYLLABUS]
    state, findings = reconcile(TENANT, stored, DAY)
    assert [f.code for f in findings if f.entity_kind is EntityKind.ACTIVITY] == [
        FindingCode.ACTIVITY_UNKNOWN_REFERENCE
    ]
    sub = VendorSubscription(tenant_id=TENANT, vendor_id="gleerups", school_unit_codes={CODE})
    assert project(state, sub, EVERYTHING, DAY)[eid(EntityKind.ACTIVITY, "ma7a")].resource["syllabus"] is None


def test_egil_carries_teacher_dates_the_topic_and_placements_as_enrolments() -> None:
    resources = select(placements=True)
    _, activity = to_egil(resources[eid(EntityKind.ACTIVITY, "ma7a")].resource)
    d1 = str(eid(EntityKind.DUTY, "d1"))
    assert activity["teachers"] == [{"value": d1, "$ref": f"Employments/{d1}", "startDate": "2025-08-18"}]
    assert activity["topic"] == {
        "value": str(eid(EntityKind.SYLLABUS, "ma")),
        "type": "Subject",
        "display": "Matematik",
    }
    _, child = to_egil(resources[eid(EntityKind.PERSON, "c1")].resource)
    su = str(eid(EntityKind.SCHOOL_UNIT, "su"))
    assert child[USER_EXTENSION]["enrolments"] == [{"value": su, "$ref": f"SchoolUnits/{su}", "schoolType": "FS"}]
    # Mentors have no place in 2018: the Employment is as before.
    _, employment = to_egil(resources[eid(EntityKind.DUTY, "d1")].resource)
    assert set(employment) == {"schemas", "externalId", "employedAt", "user", "employmentRole"}
    # A course is a Course, named by the course.
    course = {
        "id": str(eid(EntityKind.SYLLABUS, "ma")),
        "subject_name": "Matematik",
        "course_code": "MATMAT01a",
        "course_name": "Matematik 1a",
    }
    _, with_course = to_egil({**resources[eid(EntityKind.ACTIVITY, "ma7a")].resource, "syllabus": course})
    assert with_course["topic"]["type"] == "Course"
    assert with_course["topic"]["display"] == "Matematik 1a"


def test_a_task_towards_an_unknown_group_is_dropped_with_a_finding() -> None:
    """Issue 20: an unresolvable reference is a finding, never a silent drop."""
    state, findings = reconcile(TENANT, [StoredEntity(eid(e.kind, e.key), SOURCE, e) for e in ENTITIES], DAY)
    assert [(f.code, f.detail) for f in findings if f.entity_kind is EntityKind.DUTY] == [
        (FindingCode.DUTY_UNKNOWN_GROUP, "1 task(s) dropped")
    ]
    duty = next(s.entity for s in state.entities if s.entity.key == "d1")
    assert isinstance(duty, Duty)
    assert [r.group for r in duty.assignment_roles] == ["7a", "7a"]


@pytest.mark.parametrize(
    ("placement", "code"),
    [
        ({"child": "nobody"}, FindingCode.PLACEMENT_UNKNOWN_CHILD),
        ({"school_unit": "no-such-unit"}, FindingCode.PLACEMENT_UNKNOWN_SCHOOL_UNIT),
        ({"school_unit": "hm"}, None),  # the Huvudman has one school unit beneath it: resolved to it
    ],
)
def test_a_placement_with_an_unknown_child_or_unit_is_withheld_with_a_finding(
    placement: dict[str, str], code: FindingCode | None
) -> None:
    entities = [e.model_copy(update=placement) if isinstance(e, Placement) else e for e in ENTITIES]
    state, findings = reconcile(TENANT, [StoredEntity(eid(e.kind, e.key), SOURCE, e) for e in entities], DAY)
    placed = [f.code for f in findings if f.entity_kind is EntityKind.PLACEMENT]
    kept = [s.entity for s in state.entities if isinstance(s.entity, Placement)]
    if code is None:
        assert placed == []
        assert [p.school_unit for p in kept] == ["su"]
    else:
        assert placed == [code]
        assert kept == []
        assert eid(EntityKind.PLACEMENT, "pl1") in state.withheld
