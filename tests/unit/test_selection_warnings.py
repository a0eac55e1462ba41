"""The subscription form's warnings: a chosen school unit where the filters select no students, no
teachers or no groups, with the filter that causes it; and the per-unit counts they are computed from
(the fixture organiser of ``domain_factories``: 11111111 grundskola, 22222222 grundskola and
gymnasium, 33333333 closed)."""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterable

import pytest

from skolsynk.domain.organisation_tree import OrganisationTree
from skolsynk.domain.selection import project
from skolsynk.domain.selection_warnings import (
    Relation,
    RelationCount,
    SelectionWarning,
    Shortfall,
    UnitPopulation,
    WarningCause,
    selection_warnings,
    unit_populations,
    year_span,
)
from skolsynk.domain.ss12000 import (
    Duty,
    DutyRole,
    Entity,
    EntityKind,
    Group,
    GroupType,
    Organisation,
    OrganisationType,
    Person,
    Placement,
    SchoolType,
)
from skolsynk.domain.subscription import Role
from tests.unit.domain_factories import (
    CODE_A,
    CODE_B,
    CODE_OLD,
    SOURCE,
    TERM_START,
    TODAY,
    duty,
    enrolment,
    entities,
    group,
    person,
    profile,
    school_unit,
    state,
    subscription,
)

GRANMO = "44444444"


def counts_of(items: Iterable[Entity]) -> list[RelationCount]:
    """What the store's aggregate returns for these entities (``EntityReader.unit_populations``; the
    connected test checks the aggregate itself against the same rules)."""
    rows: Counter[tuple[Relation, str, str | None, int | None, str | None]] = Counter()
    for entity in items:
        if isinstance(entity, Person) and entity.active:
            for e in entity.enrolments:
                if e.active_on(TODAY):
                    rows[(Relation.ENROLMENT, e.school_unit, e.school_type.value, e.school_year, None)] += 1
        elif isinstance(entity, Duty) and entity.active_on(TODAY):
            rows[(Relation.DUTY, entity.school_unit, None, None, entity.role.value)] += 1
        elif isinstance(entity, Placement) and entity.active_on(TODAY):
            rows[(Relation.PLACEMENT, entity.school_unit, entity.school_type.value, None, None)] += 1
        elif isinstance(entity, Group) and entity.active_on(TODAY):
            rows[(Relation.GROUP, entity.school_unit, None, None, entity.group_type.value)] += 1
    return [RelationCount(SOURCE, r, at, n, t, y, v) for (r, at, t, y, v), n in rows.items()]


def populations(items: list[Entity] | None = None) -> dict[str, UnitPopulation]:
    items = entities() if items is None else items
    return unit_populations(OrganisationTree((SOURCE, e) for e in items), counts_of(items), TODAY)


def with_granmo() -> list[Entity]:
    """The fixture plus Granmogymnasiet: gymnasieskola years 1-3, a teacher, a Klass and a Mentor group."""
    return [
        *entities(),
        school_unit("su-granmo", GRANMO, SchoolType.GY).model_copy(update={"display_name": "Granmogymnasiet"}),
        *(person(f"gy-{y}", enrolment("su-granmo", SchoolType.GY, year=y)) for y in (1, 2, 3)),
        person("tea-gy"),
        duty("d-tea-gy", "tea-gy", "su-granmo"),
        group("klass-gy", "su-granmo", GroupType.KLASS, "gy-1"),
        group("mentor-gy", "su-granmo", GroupType.MENTOR, "gy-2", "tea-gy"),
    ]


def test_the_counts_per_unit_follow_the_selections_rules_for_who_is_there_today():
    found = populations()
    assert set(found) == {CODE_A, CODE_B}  # 33333333 closed last term
    a, b = found[CODE_A], found[CODE_B]
    assert a.name == "Skola su-a"
    # Active enrolments only: cancelled, ended and future ones are not counted; prot-a is (a person-level rule).
    assert dict(a.students) == {(SchoolType.GR, 3): 2, (SchoolType.GR, 5): 1, (SchoolType.GR, 6): 1}
    assert dict(b.students) == {(SchoolType.GR, 6): 1, (SchoolType.GY, 1): 1, (SchoolType.GR, 9): 1}
    assert b.student_school_types == (SchoolType.GR, SchoolType.GY)
    assert b.student_years == (1, 6, 9)
    assert dict(a.staff) == {Role.TEACHER: 2, Role.OTHER_STAFF: 1}
    assert dict(b.staff) == {Role.TEACHER: 1}  # a Förstelärare teaches
    assert dict(a.groups) == {GroupType.KLASS: 1, GroupType.UNDERVISNING: 1}
    assert b.group_types == (GroupType.KLASS, GroupType.MENTOR)


def test_a_duty_above_school_units_counts_at_every_unit_beneath_an_enrolment_only_at_a_single_one():
    skola = Organisation(key="skola-1", display_name="Skolan", organisation_type=OrganisationType.SKOLA)
    items = [
        skola,
        school_unit("su-x", "55555555", SchoolType.GR).model_copy(update={"organisation": "skola-1"}),
        school_unit("su-y", "66666666", SchoolType.GR).model_copy(update={"organisation": "skola-1"}),
        person("kurator"),
        duty("d-kurator", "kurator", "skola-1", DutyRole.KURATOR),
        person("stu-above", enrolment("skola-1")),  # two units beneath: it resolves to none
    ]
    found = populations(items)
    assert found["55555555"].staff == found["66666666"].staff == {Role.OTHER_STAFF: 1}
    assert found["55555555"].student_count == found["66666666"].student_count == 0


def test_years_7_to_9_at_an_upper_secondary_school_say_no_students_because_of_the_years():
    sub = subscription(school_unit_codes={CODE_A, GRANMO}, school_years={7, 8, 9})
    warnings = selection_warnings(sub, profile(), populations(with_granmo()))
    # Skola su-a (grundskola 3-6) has no year 7-9 either; Granmogymnasiet's years are 1-3 of gymnasieskolan.
    assert [(w.school_unit_name, w.missing, w.cause) for w in warnings] == [
        ("Granmogymnasiet", Shortfall.STUDENTS, WarningCause.SCHOOL_YEARS),
        ("Skola su-a", Shortfall.STUDENTS, WarningCause.SCHOOL_YEARS),
    ]
    granmo = warnings[0]
    assert granmo.chosen_school_years == (7, 8, 9)
    assert (granmo.unit_school_types, granmo.unit_school_years) == ((SchoolType.GY,), (1, 2, 3))
    assert granmo.message == (
        "No students at Granmogymnasiet: years 7\u20139 are not there (school types there: GY; years 1\u20133)."
    )


@pytest.mark.parametrize(
    ("filters", "cause"),
    [
        ({"school_types": {SchoolType.GR}}, WarningCause.SCHOOL_TYPES),
        ({"school_types": frozenset()}, WarningCause.SCHOOL_TYPES),  # the API may send an empty list
        ({"school_years": {8}}, WarningCause.SCHOOL_YEARS),
        ({"school_types": {SchoolType.GR}, "school_years": {8}}, WarningCause.SCHOOL_TYPES_AND_YEARS),
        ({"school_types": {SchoolType.GY, SchoolType.GR}, "school_years": {2}}, None),
        ({"school_types": {SchoolType.GY}, "school_years": {1, 2}}, None),
        ({}, None),
    ],
)
def test_the_warning_names_the_filter_that_leaves_no_students(filters: dict[str, object], cause: WarningCause | None):
    sub = subscription(school_unit_codes={GRANMO}, roles={Role.STUDENT}, **filters)
    warnings = selection_warnings(sub, profile(), populations(with_granmo()))
    assert [w.cause for w in warnings] == ([cause] if cause else [])


def test_each_filter_alone_leaves_students_but_together_none_is_the_combination():
    # 22222222: GR years 6 and 9, GY year 1. GY and year 9 are both there, never in one student.
    sub = subscription(school_unit_codes={CODE_B}, school_types={SchoolType.GY}, school_years={9})
    [warning] = [w for w in selection_warnings(sub, profile(), populations()) if w.missing is Shortfall.STUDENTS]
    assert warning.cause is WarningCause.COMBINATION
    assert (warning.chosen_school_types, warning.chosen_school_years) == ((SchoolType.GY,), (9,))


def test_no_teachers_and_a_unit_without_anyone():
    items = [*entities(), school_unit("su-empty", "77777777", SchoolType.FS)]
    sub = subscription(school_unit_codes={"77777777", CODE_A})
    warnings = selection_warnings(sub, profile(), populations(items))
    assert [(w.school_unit_code, w.missing, w.cause) for w in warnings] == [
        ("77777777", Shortfall.STUDENTS, WarningCause.NONE_AT_UNIT),
        ("77777777", Shortfall.TEACHERS, WarningCause.NONE_AT_UNIT),
    ]
    assert warnings[1].message == "No teachers at Skola su-empty: the organiser's data has none there today."
    # Not asking for a role asks for no warning about it.
    only_staff = subscription(school_unit_codes={"77777777"}, roles={Role.OTHER_STAFF})
    assert selection_warnings(only_staff, profile(), populations(items)) == []


def test_placed_children_count_as_students_when_the_subscription_and_the_profile_take_placements():
    items = [
        *entities(),
        school_unit("su-fs", "88888888", SchoolType.FS),
        person("barn-1"),
        Placement(key="pl-1", child="barn-1", school_unit="su-fs", school_type=SchoolType.FS, start_date=TERM_START),
    ]
    takes = profile(accepted_fields={EntityKind.PERSON: frozenset({"given_name", "placements"})})
    found = populations(items)
    asked = subscription(school_unit_codes={"88888888"}, roles={Role.STUDENT}, placements=True)
    assert selection_warnings(asked, takes, found) == []
    for sub, vendor in ((asked.model_copy(update={"placements": False}), takes), (asked, profile())):
        [warning] = selection_warnings(sub, vendor, found)
        assert (warning.cause, warning.unit_school_types) == (WarningCause.NONE_AT_UNIT, (SchoolType.FS,))
    # A school-type filter applies to placements; school years do not (a placement has none).
    assert selection_warnings(asked.model_copy(update={"school_years": frozenset({3})}), takes, found) == []
    [warning] = selection_warnings(asked.model_copy(update={"school_types": frozenset({SchoolType.FTH})}), takes, found)
    assert warning.cause is WarningCause.SCHOOL_TYPES


def test_group_types_and_a_classes_only_vendor_that_leave_no_groups():
    found = populations(with_granmo())
    sub = subscription(school_unit_codes={GRANMO}, group_types={GroupType.UNDERVISNING})
    [warning] = selection_warnings(sub, profile(), found)
    assert (warning.missing, warning.cause) == (Shortfall.GROUPS, WarningCause.GROUP_TYPES)
    assert (warning.chosen_group_types, warning.unit_group_types) == (
        (GroupType.UNDERVISNING,),
        (GroupType.KLASS, GroupType.MENTOR),
    )
    mentors = subscription(school_unit_codes={GRANMO}, group_types={GroupType.MENTOR})
    assert selection_warnings(mentors, profile(), found) == []
    [warning] = selection_warnings(mentors, profile(classes_only=True), found)
    assert warning.cause is WarningCause.CLASSES_ONLY
    # A vendor that takes no groups is not warned about them.
    assert selection_warnings(sub, profile(kinds=frozenset({EntityKind.PERSON})), found) == []


def test_a_chosen_code_that_is_no_active_unit_is_warned_about():
    [warning] = selection_warnings(subscription(school_unit_codes={CODE_OLD}), profile(), populations())
    assert warning == SelectionWarning(CODE_OLD, None, Shortfall.EVERYTHING, WarningCause.UNIT_UNKNOWN)


def test_a_students_warning_is_given_exactly_when_the_projection_gets_no_student_at_the_unit():
    """Over every combination of the filters on the fixture organiser (persons with an ordinary marking,
    so the person-level rules leave everyone in), the warnings and the selection agree."""
    items = [e for e in with_granmo() if not (isinstance(e, Person) and e.security_marking != "Ingen")]
    found = populations(items)
    tenant = state(base=items)
    type_choices = [None, {SchoolType.GR}, {SchoolType.GY}, {SchoolType.GR, SchoolType.GY}]
    year_choices = [None, {1}, {3}, {6, 9}, {7, 8, 9}]
    checked = 0
    for types, years in itertools.product(type_choices, year_choices):
        sub = subscription(school_unit_codes={CODE_A, CODE_B, GRANMO}, school_types=types, school_years=years)
        selected = project(tenant, sub, profile(), TODAY)
        with_students = {
            code
            for r in selected.values()
            if r.kind is EntityKind.PERSON and "student" in r.roles
            for code in r.school_unit_codes
        }
        warned = {
            w.school_unit_code for w in selection_warnings(sub, profile(), found) if w.missing is Shortfall.STUDENTS
        }
        assert warned == {CODE_A, CODE_B, GRANMO} - with_students, (types, years)
        checked += len(warned)
    assert checked > 10  # the grid does reach warnings


@pytest.mark.parametrize(
    ("years", "text"),
    [([7, 8, 9], "7\u20139"), ([0, 1, 2, 3, 7, 8, 9], "F\u20133, 7\u20139"), ([5], "5"), ([1, 3], "1, 3"), ([], "")],
)
def test_years_are_written_as_a_school_writes_them(years: list[int], text: str):
    assert year_span(years) == text
