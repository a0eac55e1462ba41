"""Issue 20, item 3: mentors (Duty.assignmentRole), subjects and courses (Activity.syllabus, /syllabuses),
teacher assignment dates and placements, from the canonical model to what vendors receive."""

from __future__ import annotations

from datetime import date

import pytest
from pydantic import ValidationError

from skolsynk.domain.ss12000 import (
    RESOLVED_KINDS,
    VENDOR_KINDS,
    Activity,
    AssignmentRoleType,
    Duty,
    EntityKind,
    Placement,
    SchoolType,
    Syllabus,
)

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
