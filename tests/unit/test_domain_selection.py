"""Selection: which entities one vendor gets from one organiser, minimised, and what a subscription
change would do (previews). The fixture organiser is described in ``domain_factories``."""

from __future__ import annotations

import json
import random
from datetime import date
from typing import Any
from uuid import UUID

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from skolsynk.domain.selection import (
    PSEUDONYM_FAMILY_NAME,
    PSEUDONYM_GIVEN_NAME,
    ProjectedResource,
    TenantState,
    compare,
    entities_by_kind,
    preview_subscription_change,
    project,
    pseudonym_id,
)
from skolsynk.domain.ss12000 import (
    TEACHING_ROLES,
    VENDOR_KINDS,
    Duty,
    DutyRole,
    EntityKind,
    GroupType,
    Person,
    PersonStatus,
    SchoolType,
    SecurityMarking,
)
from skolsynk.domain.subscription import (
    OPT_IN_FIELDS,
    OPTIONAL_FIELDS,
    SENSITIVE_FIELDS,
    MissingMarkingPolicy,
    ProtectedIdentityPolicy,
    Role,
    VendorProfile,
    VendorSubscription,
)
from tests.unit.domain_factories import (
    CODE_A,
    CODE_B,
    CODE_OLD,
    LAST_TERM_END,
    NEVER_SELECTED,
    OTHER_STAFF_A,
    STUDENTS_A,
    STUDENTS_B,
    TEACHERS_A,
    TEACHERS_B,
    TENANT,
    TODAY,
    VENDOR,
    duty,
    eid,
    entities,
    entity_by_key,
    keys_of,
    of_kind,
    person_keys,
    profile,
    state,
    subscription,
)

pytestmark = pytest.mark.unit

PERSON, DUTY, GROUP, ACTIVITY = EntityKind.PERSON, EntityKind.DUTY, EntityKind.GROUP, EntityKind.ACTIVITY
SCHOOL_UNIT, ORGANISATION, SUG = EntityKind.SCHOOL_UNIT, EntityKind.ORGANISATION, EntityKind.SCHOOL_UNIT_GROUP

#: The fields every resource of a kind carries whatever the vendor may have.
STRUCTURAL: dict[EntityKind, set[str]] = {
    PERSON: {"id", "kind", "roles", "school_unit_ids"},
    DUTY: {"id", "kind", "person_id", "school_unit_id"},
    GROUP: {"id", "kind", "school_unit_id", "member_ids"},
    ACTIVITY: {"id", "kind", "school_unit_id", "group_ids", "teacher_duty_ids"},
    SCHOOL_UNIT: {"id", "kind", "organisation_id", "school_unit_group_id"},
    ORGANISATION: {"id", "kind"},
    SUG: {"id", "kind"},
}

ALL_STUDENTS = set(STUDENTS_A) | set(STUDENTS_B)
ALL_STAFF = set(TEACHERS_A) | set(TEACHERS_B) | set(OTHER_STAFF_A)


def run(
    st8: TenantState | None = None,
    sub: VendorSubscription | None = None,
    prof: VendorProfile | None = None,
    today: date = TODAY,
) -> dict[UUID, ProjectedResource]:
    return project(st8 or state(), sub or subscription(), prof or profile(), today)


def resource(resources: dict[UUID, ProjectedResource], key: str, kind: EntityKind) -> dict[str, Any]:
    return resources[eid(key, kind)].resource


def as_text(resources: dict[UUID, ProjectedResource]) -> str:
    return json.dumps([r.resource for r in resources.values()], ensure_ascii=False, sort_keys=True)


def members(resources: dict[UUID, ProjectedResource], group_key: str) -> set[UUID]:
    return {UUID(m) for m in resource(resources, group_key, GROUP)["member_ids"]}


def ids(*keys: str, kind: EntityKind = PERSON) -> set[UUID]:
    return {eid(k, kind) for k in keys}


# --- school units -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("codes", "units", "persons"),
    [
        ({CODE_A}, {"su-a"}, set(STUDENTS_A) | set(TEACHERS_A) | set(OTHER_STAFF_A)),
        ({CODE_B}, {"su-b"}, set(STUDENTS_B) | set(TEACHERS_B)),
        ({CODE_A, CODE_B}, {"su-a", "su-b"}, ALL_STUDENTS | ALL_STAFF),
        ({CODE_OLD}, set(), set()),  # closed last term: nothing
        ({CODE_B, CODE_OLD}, {"su-b"}, set(STUDENTS_B) | set(TEACHERS_B)),
        ({"99999999"}, set(), set()),  # a code the organiser does not have
    ],
)
def test_school_units_are_selected_by_code_and_must_be_active(
    codes: set[str], units: set[str], persons: set[str]
) -> None:
    resources = run(sub=subscription(school_unit_codes=codes))
    assert keys_of(resources, SCHOOL_UNIT) == units
    assert person_keys(resources) == persons
    for r in of_kind(resources, PERSON).values():
        assert set(r.school_unit_codes) <= codes - {CODE_OLD}
    assert "klass-old" not in keys_of(resources, GROUP)
    assert "act-old" not in keys_of(resources, ACTIVITY)


def test_a_school_unit_that_has_not_opened_yet_is_not_selected() -> None:
    unit = entity_by_key("su-b").model_copy(update={"start_date": date(2025, 1, 1)})
    resources = run(state(replace=[unit]))
    assert keys_of(resources, SCHOOL_UNIT) == {"su-a"}
    assert person_keys(resources) == set(STUDENTS_A) | set(TEACHERS_A) | set(OTHER_STAFF_A)


def test_school_unit_resource_carries_its_references_and_allowed_fields() -> None:
    resources = run()
    unit_a = resource(resources, "su-a", SCHOOL_UNIT)
    assert unit_a["organisation_id"] == str(eid("org-1", ORGANISATION))
    assert unit_a["school_unit_group_id"] == str(eid("sug-1", SUG))
    assert unit_a["school_unit_code"] == CODE_A
    assert unit_a["school_types"] == ["GR"]
    unit_b = resource(resources, "su-b", SCHOOL_UNIT)
    assert unit_b["school_unit_group_id"] is None
    assert resources[eid("su-b", SCHOOL_UNIT)].school_unit_codes == (CODE_B,)


@pytest.mark.parametrize(
    ("codes", "parents"),
    [
        ({CODE_A}, {"org-1", "sug-1"}),
        ({CODE_B}, {"org-1"}),  # su-b belongs to no school-unit group
        ({CODE_OLD}, set()),  # a closed unit's parents are not sent
    ],
)
def test_organisation_and_school_unit_group_are_sent_when_a_selected_unit_refers_to_them(
    codes: set[str], parents: set[str]
) -> None:
    resources = run(sub=subscription(school_unit_codes=codes))
    assert keys_of(resources, ORGANISATION) | keys_of(resources, SUG) == parents
    for kind in (ORGANISATION, SUG):
        for r in of_kind(resources, kind).values():
            assert r.school_unit_codes == ()
            assert set(r.resource) >= STRUCTURAL[kind]


def test_parents_are_left_out_for_a_vendor_that_does_not_take_them() -> None:
    resources = run(prof=profile(kinds=frozenset(EntityKind) - {ORGANISATION, SUG}))
    assert not of_kind(resources, ORGANISATION)
    assert not of_kind(resources, SUG)
    assert resource(resources, "su-a", SCHOOL_UNIT)["organisation_id"] is None
    assert resource(resources, "su-a", SCHOOL_UNIT)["school_unit_group_id"] is None


@pytest.mark.parametrize("kinds", [{PERSON}, {PERSON, GROUP}, {SCHOOL_UNIT, ORGANISATION}, {ACTIVITY, GROUP}])
def test_only_the_kinds_the_vendor_takes_are_sent(kinds: set[EntityKind]) -> None:
    resources = run(prof=profile(kinds=frozenset(kinds)))
    assert resources
    assert {r.kind for r in resources.values()} == kinds


# --- persons --------------------------------------------------------------------------------------


def test_students_are_selected_through_active_enrolments_at_selected_units() -> None:
    resources = run(sub=subscription(roles={Role.STUDENT}))
    assert person_keys(resources) == ALL_STUDENTS
    assert not set(NEVER_SELECTED) & person_keys(resources)
    for key in ALL_STUDENTS:
        assert resources[eid(key)].roles == ("student",)


@pytest.mark.parametrize(
    ("school_types", "expected"),
    [
        (None, ALL_STUDENTS),
        ({SchoolType.GY}, {"stu-b1"}),
        ({SchoolType.GR}, {"stu-a1", "stu-a2", "stu-ab", "stu-b2"}),
        ({SchoolType.GR, SchoolType.GY}, ALL_STUDENTS),
        ({SchoolType.FS}, set()),
    ],
)
def test_students_are_filtered_by_school_type(school_types: set[SchoolType] | None, expected: set[str]) -> None:
    resources = run(sub=subscription(roles={Role.STUDENT}, school_types=school_types))
    assert person_keys(resources) == expected


@pytest.mark.parametrize(
    ("school_years", "expected"),
    [
        (None, ALL_STUDENTS),
        ({3}, {"stu-a1"}),
        ({5, 9}, {"stu-a2", "stu-b2"}),
        ({6}, {"stu-ab"}),
        ({1}, {"stu-b1"}),
        ({0, 10}, set()),
        (set(), set()),
    ],
)
def test_students_are_filtered_by_school_year(school_years: set[int] | None, expected: set[str]) -> None:
    resources = run(sub=subscription(roles={Role.STUDENT}, school_years=school_years))
    assert person_keys(resources) == expected


def test_school_year_filter_keeps_only_the_matching_enrolments() -> None:
    # stu-ab is in year 6 at both units; a filter on the unit's code narrows the enrolments too
    resources = run(sub=subscription(roles={Role.STUDENT}, school_unit_codes={CODE_B}, school_years={6}))
    assert person_keys(resources) == {"stu-ab"}
    enrolments = resource(resources, "stu-ab", PERSON)["enrolments"]
    assert [e["school_unit_code"] for e in enrolments] == [CODE_B]


def test_enrolment_resources_name_the_unit_by_id_and_code_and_hide_internal_fields() -> None:
    resources = run()
    [enrolment] = resource(resources, "stu-b1", PERSON)["enrolments"]
    assert enrolment == {
        "school_unit_id": str(eid("su-b", SCHOOL_UNIT)),
        "school_unit_code": CODE_B,
        "start_date": "2024-08-15",
        "end_date": None,
        "school_type": "GY",
        "school_year": 1,
        "programme_code": "NA",
    }
    both = resource(resources, "stu-ab", PERSON)["enrolments"]
    assert sorted(e["school_unit_code"] for e in both) == [CODE_A, CODE_B]


@pytest.mark.parametrize(
    ("roles", "expected"),
    [
        ({Role.STUDENT}, ALL_STUDENTS),
        ({Role.TEACHER}, {"tea-a", "tea-b"}),
        ({Role.OTHER_STAFF}, {"rektor-a"}),
        ({Role.TEACHER, Role.OTHER_STAFF}, ALL_STAFF),
        (set(Role), ALL_STUDENTS | ALL_STAFF),
    ],
)
def test_roles_filter_persons(roles: set[Role], expected: set[str]) -> None:
    resources = run(sub=subscription(roles=roles))
    assert person_keys(resources) == expected
    for r in of_kind(resources, PERSON).values():
        assert set(r.roles) <= {role.value for role in roles}
        assert r.resource["roles"] == list(r.roles)


@pytest.mark.parametrize("role", list(DutyRole))
def test_duty_role_decides_teacher_or_other_staff(role: DutyRole) -> None:
    changed = duty("d-tea-a", "tea-a", "su-a", role)
    expected = Role.TEACHER if role in TEACHING_ROLES else Role.OTHER_STAFF
    resources = run(state(replace=[changed]))
    assert resources[eid("tea-a")].roles == (expected.value,)
    only_teachers = run(state(replace=[changed]), subscription(roles={Role.TEACHER}))
    assert ("tea-a" in person_keys(only_teachers)) is (expected is Role.TEACHER)


def test_teaching_roles_are_the_pedagogical_ones() -> None:
    assert {DutyRole.LARARE, DutyRole.FORSKOLLARARE, DutyRole.FORSTELARARE} <= TEACHING_ROLES
    assert DutyRole.REKTOR not in TEACHING_ROLES
    assert DutyRole.SKOLADMINISTRATOR not in TEACHING_ROLES


@pytest.mark.parametrize(
    ("start", "end", "selected"),
    [
        (date(2024, 8, 15), None, True),
        (date(2024, 8, 15), TODAY, True),  # the last day counts
        (date(2023, 8, 15), LAST_TERM_END, False),
        (date(2024, 10, 2), None, False),  # starts tomorrow
    ],
)
def test_staff_are_selected_through_active_duties(start: date, end: date | None, selected: bool) -> None:
    changed = Duty(
        key="d-tea-a", person="tea-a", school_unit="su-a", role=DutyRole.LARARE, start_date=start, end_date=end
    )
    resources = run(state(replace=[changed]))
    assert ("tea-a" in person_keys(resources)) is selected
    assert ("d-tea-a" in keys_of(resources, DUTY)) is selected


def test_a_person_with_enrolment_and_duty_has_both_roles() -> None:
    extra = duty("d-stu-b2", "stu-b2", "su-b", DutyRole.LARARASSISTENT)
    resources = run(state(add=[extra]))
    assert resources[eid("stu-b2")].roles == ("other_staff", "student")
    only_students = run(state(add=[extra]), subscription(roles={Role.STUDENT}))
    assert only_students[eid("stu-b2")].roles == ("student",)
    assert "d-stu-b2" not in keys_of(only_students, DUTY, extra=[extra])
    assert "d-stu-b2" in keys_of(resources, DUTY, extra=[extra])


def test_explicitly_included_persons_are_sent_without_a_relation() -> None:
    sub = subscription(include_persons={str(eid("stu-old")), str(eid("stu-cancelled"))})
    resources = run(sub=sub)
    assert {"stu-old", "stu-cancelled"} <= person_keys(resources)
    included = resources[eid("stu-old")]
    assert included.roles == ()
    assert included.school_unit_ids == ()
    assert included.resource["enrolments"] == []


def test_explicit_inclusion_does_not_bypass_the_roles_of_a_related_person() -> None:
    sub = subscription(roles={Role.STUDENT}, include_persons={str(eid("tea-a"))})
    resources = run(sub=sub)
    assert "tea-a" in person_keys(resources)
    assert resources[eid("tea-a")].roles == ()
    assert "d-tea-a" not in keys_of(resources, DUTY)


def test_explicitly_excluded_persons_are_never_sent() -> None:
    sub = subscription(
        exclude_persons={str(eid("stu-a1")), str(eid("tea-a"))},
        include_persons={str(eid("stu-a1"))},  # exclusion wins
    )
    resources = run(sub=sub)
    assert not {"stu-a1", "tea-a"} & person_keys(resources)
    assert "d-tea-a" not in keys_of(resources, DUTY)
    text = as_text(resources)
    assert str(eid("stu-a1")) not in text
    assert str(eid("tea-a")) not in text
    assert str(eid("d-tea-a", DUTY)) not in text  # nor the excluded teacher's duty in activities
    assert members(resources, "klass-3a") == ids("stu-ab")


def test_single_school_unit_per_user_keeps_the_lowest_code() -> None:
    extra = duty("d-tea-b-at-a", "tea-b", "su-a", DutyRole.LARARE)  # tea-b also teaches at su-a
    resources = run(state(add=[extra]), prof=profile(single_school_unit_per_user=True))
    for key in ("stu-ab", "tea-b"):
        assert resources[eid(key)].school_unit_codes == (CODE_A,)
        assert resources[eid(key)].school_unit_ids == (str(eid("su-a", SCHOOL_UNIT)),)
    assert [e["school_unit_code"] for e in resource(resources, "stu-ab", PERSON)["enrolments"]] == [CODE_A]
    assert keys_of(resources, DUTY, extra=[extra]) == {"d-tea-a", "d-rektor-a", "d-tea-b-at-a"}
    assert str(eid("d-tea-b", DUTY)) not in as_text(resources)
    # without the flag both units stay
    both = run(state(add=[extra]))
    assert both[eid("stu-ab")].school_unit_codes == (CODE_A, CODE_B)
    assert {"d-tea-b", "d-tea-b-at-a"} <= keys_of(both, DUTY, extra=[extra])


def test_single_school_unit_per_user_lowest_code_among_the_selected_units_only() -> None:
    resources = run(sub=subscription(school_unit_codes={CODE_B}), prof=profile(single_school_unit_per_user=True))
    assert resources[eid("stu-ab")].school_unit_codes == (CODE_B,)


def test_single_school_unit_per_user_drops_memberships_at_the_other_units() -> None:
    resources = run(prof=profile(single_school_unit_per_user=True))
    assert resources[eid("stu-ab")].school_unit_codes == (CODE_A,)
    # klass-b is at su-b, a unit stu-ab does not belong to for this vendor
    assert eid("stu-ab") not in members(resources, "klass-b")


# --- groups and activities ------------------------------------------------------------------------


def test_group_members_are_selected_persons_with_active_memberships() -> None:
    resources = run()
    # prot-a: protected (excluded); stu-a2: membership ended; stu-cancelled: not selected
    assert members(resources, "klass-3a") == ids("stu-a1", "stu-ab")
    assert members(resources, "ma-3a") == ids("stu-a1", "tea-a")
    assert members(resources, "klass-b") == ids("stu-b1", "stu-b2", "stu-ab")
    only_students = run(sub=subscription(roles={Role.STUDENT}))
    assert members(only_students, "ma-3a") == ids("stu-a1")
    assert members(only_students, "mentor-b") == ids("stu-b1")


def test_groups_at_selected_active_units_only_and_ended_groups_left_out() -> None:
    assert keys_of(run(), GROUP) == {"klass-3a", "ma-3a", "klass-b", "mentor-b"}
    assert keys_of(run(sub=subscription(school_unit_codes={CODE_A})), GROUP) == {"klass-3a", "ma-3a"}
    ended = entity_by_key("mentor-b").model_copy(update={"end_date": LAST_TERM_END})
    assert "mentor-b" not in keys_of(run(state(replace=[ended])), GROUP)


def test_classes_only_keeps_klass_groups() -> None:
    resources = run(prof=profile(classes_only=True))
    assert keys_of(resources, GROUP) == {"klass-3a", "klass-b"}
    assert keys_of(resources, ACTIVITY) == {"act-klass-3a", "act-b"}
    assert resource(resources, "act-b", ACTIVITY)["group_ids"] == [str(eid("klass-b", GROUP))]


@pytest.mark.parametrize(
    ("group_types", "groups", "activities"),
    [
        (None, {"klass-3a", "ma-3a", "klass-b", "mentor-b"}, {"act-ma-3a", "act-klass-3a", "act-b"}),
        ({GroupType.UNDERVISNING}, {"ma-3a"}, {"act-ma-3a"}),
        ({GroupType.KLASS}, {"klass-3a", "klass-b"}, {"act-klass-3a", "act-b"}),
        ({GroupType.MENTOR}, {"mentor-b"}, {"act-b"}),
        ({GroupType.SCHEMA}, set(), set()),
    ],
)
def test_group_types_filter_groups_and_their_activities(
    group_types: set[GroupType] | None, groups: set[str], activities: set[str]
) -> None:
    resources = run(sub=subscription(group_types=group_types))
    assert keys_of(resources, GROUP) == groups
    assert keys_of(resources, ACTIVITY) == activities
    for r in of_kind(resources, ACTIVITY).values():
        assert {UUID(g) for g in r.resource["group_ids"]} <= set(of_kind(resources, GROUP))


def test_group_types_and_classes_only_both_apply() -> None:
    resources = run(sub=subscription(group_types={GroupType.MENTOR}), prof=profile(classes_only=True))
    assert not of_kind(resources, GROUP)
    assert not of_kind(resources, ACTIVITY)


def test_activity_teachers_are_the_selected_duties_only() -> None:
    resources = run()
    teachers = {UUID(t) for t in resource(resources, "act-ma-3a", ACTIVITY)["teacher_duty_ids"]}
    assert teachers == ids("d-tea-a", "d-rektor-a", kind=DUTY)  # d-prot-t: the teacher is protected
    no_staff = run(sub=subscription(roles={Role.STUDENT, Role.TEACHER}))
    assert resource(no_staff, "act-ma-3a", ACTIVITY)["teacher_duty_ids"] == [str(eid("d-tea-a", DUTY))]
    students_only = run(sub=subscription(roles={Role.STUDENT}))
    assert resource(students_only, "act-ma-3a", ACTIVITY)["teacher_duty_ids"] == []


def test_activity_without_a_selected_group_is_left_out() -> None:
    ended = entity_by_key("ma-3a").model_copy(update={"end_date": LAST_TERM_END})
    resources = run(state(replace=[ended]))
    assert "act-ma-3a" not in keys_of(resources, ACTIVITY)
    assert "act-klass-3a" in keys_of(resources, ACTIVITY)
    no_groups = run(prof=profile(kinds=frozenset(EntityKind) - {GROUP}))
    assert not of_kind(no_groups, ACTIVITY)


def test_duties_refer_to_person_and_unit() -> None:
    resources = run()
    assert keys_of(resources, DUTY) == {"d-tea-a", "d-tea-b", "d-rektor-a"}
    d = resource(resources, "d-tea-b", DUTY)
    assert d["person_id"] == str(eid("tea-b"))
    assert d["school_unit_id"] == str(eid("su-b", SCHOOL_UNIT))
    assert d["role"] == "Förstelärare"
    assert resources[eid("d-tea-b", DUTY)].school_unit_codes == (CODE_B,)


# --- minimisation ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", VENDOR_KINDS)
def test_a_resource_carries_only_structural_and_allowed_fields(kind: EntityKind) -> None:
    nothing = run(sub=subscription(fields={k: frozenset() for k in EntityKind}))
    assert of_kind(nothing, kind)
    for r in of_kind(nothing, kind).values():
        assert set(r.resource) == STRUCTURAL[kind]
    everything = run()
    for r in of_kind(everything, kind).values():
        assert set(r.resource) == STRUCTURAL[kind] | (
            OPTIONAL_FIELDS[kind] - SENSITIVE_FIELDS - OPT_IN_FIELDS.get(kind, frozenset())
        )


def test_fields_are_the_intersection_of_profile_and_subscription() -> None:
    prof = profile(accepted_fields={PERSON: frozenset({"given_name", "family_name", "eppn"})})
    sub = subscription(fields={PERSON: frozenset({"family_name", "emails", "eppn"})})
    resources = run(sub=sub, prof=prof)
    for r in of_kind(resources, PERSON).values():
        assert set(r.resource) == STRUCTURAL[PERSON] | {"family_name", "eppn"}
    # a kind the profile does not list: nothing optional
    for r in of_kind(resources, GROUP).values():
        assert set(r.resource) == STRUCTURAL[GROUP]


@pytest.mark.parametrize(
    ("profile_accepts", "subscription_names", "sent"),
    [
        (False, False, False),
        (True, False, False),  # the profile alone is not enough
        (False, True, False),  # the subscription alone is not enough
        (True, True, True),
    ],
)
@pytest.mark.parametrize("sensitive", sorted(SENSITIVE_FIELDS))
def test_sensitive_fields_need_both_profile_and_subscription(
    sensitive: str, profile_accepts: bool, subscription_names: bool, sent: bool
) -> None:
    accepted = OPTIONAL_FIELDS[PERSON] if profile_accepts else OPTIONAL_FIELDS[PERSON] - SENSITIVE_FIELDS
    prof = profile(accepted_fields={PERSON: accepted})
    named = {"given_name", sensitive} if subscription_names else {"given_name"}
    resources = run(sub=subscription(fields={PERSON: frozenset(named)}), prof=prof)
    stu_a1 = resource(resources, "stu-a1", PERSON)
    assert (sensitive in stu_a1) is sent
    if sent:
        assert stu_a1[sensitive] in ("201501012384", "2015-01-01")
    else:
        assert "201501012384" not in as_text(resources)
    # a profile accepting everything with a subscription that does not narrow: still never sent
    loose = run(prof=profile(accepted_fields=dict(OPTIONAL_FIELDS)))
    assert "201501012384" not in as_text(loose)
    assert "2015-01-01" not in as_text(loose)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_minimisation_property(data: st.DataObject) -> None:
    accepted = {
        k: frozenset(data.draw(st.sets(st.sampled_from(sorted(v))), label=f"p-{k}"))
        for k, v in OPTIONAL_FIELDS.items()
        if v
    }
    named = {
        k: frozenset(data.draw(st.sets(st.sampled_from(sorted(v))), label=f"s-{k}"))
        for k, v in OPTIONAL_FIELDS.items()
        if v
    }
    resources = run(sub=subscription(fields=named), prof=profile(accepted_fields=accepted))
    for r in resources.values():
        assert set(r.resource) == STRUCTURAL[r.kind] | (accepted[r.kind] & named[r.kind])


def test_a_profile_cannot_widen_a_resource_beyond_the_optional_fields() -> None:
    wide = {
        k: v | {"key", "memberships", "person", "school_unit", "groups", "teachers"} for k, v in OPTIONAL_FIELDS.items()
    }
    try:
        prof = profile(accepted_fields=wide)
    except ValidationError:
        return  # rejecting such a profile is a fix too
    resources = run(prof=prof, sub=subscription(fields=wide))
    for r in resources.values():
        assert set(r.resource) <= STRUCTURAL[r.kind] | OPTIONAL_FIELDS[r.kind]
    # the excluded protected student's source key must not reach the vendor through raw memberships
    assert "prot-a" not in as_text(resources)


# --- protected identities -------------------------------------------------------------------------


def test_protected_persons_are_excluded_by_default() -> None:
    sub = subscription(include_persons={str(eid("prot-a"))})  # not even when named
    assert sub.protected_identity_policy is ProtectedIdentityPolicy.EXCLUDE
    resources = run(sub=sub)
    assert not {"prot-a", "prot-t"} & person_keys(resources)
    assert "d-prot-t" not in keys_of(resources, DUTY)
    text = as_text(resources)
    for secret in (str(eid("prot-a")), str(eid("prot-t")), str(eid("d-prot-t", DUTY)), "prot-a", "Skyddad"):
        assert secret not in text
    assert len(of_kind(resources, PERSON)) == len(ALL_STUDENTS | ALL_STAFF)


def test_pseudonymised_person_gets_a_vendor_specific_id_and_alias() -> None:
    sub = subscription(protected_identity_policy=ProtectedIdentityPolicy.PSEUDONYMISE)
    resources = run(sub=sub)
    alias_id = pseudonym_id(TENANT, VENDOR, eid("prot-a"))
    assert alias_id != eid("prot-a")
    pseudo = resources[alias_id]
    assert pseudo.source_entity_id == eid("prot-a")
    assert pseudo.roles == ("student",)
    assert pseudo.resource["id"] == str(alias_id)
    assert pseudo.resource["given_name"] == PSEUDONYM_GIVEN_NAME == "Skyddad"
    assert pseudo.resource["family_name"] == PSEUDONYM_FAMILY_NAME == "Identitet"
    assert pseudo.resource["eppn"] == ["prot-a@kommun-a.se"]  # the login only, not the alternative
    assert set(pseudo.resource) <= STRUCTURAL[PERSON] | {"given_name", "family_name", "eppn", "enrolments"}
    assert "emails" not in pseudo.resource
    text = as_text(resources)
    secrets = [str(eid("prot-a")), "Förnamn-prot-a", "Efternamn-prot-a", "prot-a.alt@", "prot-a@skola.", "201502022385"]
    for secret in secrets:
        assert secret not in text
    assert alias_id in members(resources, "klass-3a")
    assert alias_id in members(resources, "ma-3a")


def test_pseudonymised_teacher_keeps_duty_and_activity_under_the_pseudonym() -> None:
    sub = subscription(protected_identity_policy=ProtectedIdentityPolicy.PSEUDONYMISE)
    resources = run(sub=sub)
    alias_id = pseudonym_id(TENANT, VENDOR, eid("prot-t"))
    duty_alias = pseudonym_id(TENANT, VENDOR, eid("d-prot-t", DUTY))
    assert resources[alias_id].roles == ("teacher",)
    assert resources[duty_alias].resource["person_id"] == str(alias_id)
    assert str(duty_alias) in resource(resources, "act-ma-3a", ACTIVITY)["teacher_duty_ids"]
    assert str(eid("prot-t")) not in as_text(resources)
    assert str(eid("d-prot-t", DUTY)) not in as_text(resources), "the real duty id would link the pseudonym"


def test_pseudonymised_teachers_duty_does_not_reveal_the_signature() -> None:
    sub = subscription(protected_identity_policy=ProtectedIdentityPolicy.PSEUDONYMISE)
    resources = run(sub=sub)
    duty_alias = pseudonym_id(TENANT, VENDOR, eid("d-prot-t", DUTY))
    assert resources[duty_alias].resource.get("signature") is None


@pytest.mark.parametrize("other_vendor", ["annan-leverantor", "x"])
def test_different_vendors_get_different_pseudonyms(other_vendor: str) -> None:
    policy = ProtectedIdentityPolicy.PSEUDONYMISE
    ours = run(sub=subscription(protected_identity_policy=policy))
    theirs = run(
        sub=subscription(vendor_id=other_vendor, protected_identity_policy=policy),
        prof=profile(vendor_id=other_vendor),
    )
    ours_ids = {r.source_entity_id: rid for rid, r in of_kind(ours, PERSON).items()}
    theirs_ids = {r.source_entity_id: rid for rid, r in of_kind(theirs, PERSON).items()}
    assert ours_ids.keys() == theirs_ids.keys()
    for real_id in (eid("prot-a"), eid("prot-t")):
        assert ours_ids[real_id] != theirs_ids[real_id]
        assert theirs_ids[real_id] == pseudonym_id(TENANT, other_vendor, real_id)
    assert ours_ids[eid("stu-a1")] == theirs_ids[eid("stu-a1")] == eid("stu-a1")  # unprotected: the same id


def test_minimal_policy_sends_real_names_login_and_enrolments_only() -> None:
    resources = run(sub=subscription(protected_identity_policy=ProtectedIdentityPolicy.MINIMAL))
    minimal = resource(resources, "prot-a", PERSON)
    assert set(minimal) == STRUCTURAL[PERSON] | {"given_name", "family_name", "eppn", "enrolments"}
    assert minimal["given_name"] == "Förnamn-prot-a"
    assert minimal["family_name"] == "Efternamn-prot-a"
    assert minimal["eppn"] == ["prot-a@kommun-a.se", "prot-a.alt@kommun-a.se"]
    assert [e["school_unit_code"] for e in minimal["enrolments"]] == [CODE_A]
    assert resources[eid("prot-a")].roles == ("student",)
    assert eid("prot-a") in members(resources, "klass-3a")
    # unprotected persons are unaffected by the policy
    assert set(resource(resources, "stu-a1", PERSON)) == STRUCTURAL[PERSON] | (
        OPTIONAL_FIELDS[PERSON] - SENSITIVE_FIELDS - OPT_IN_FIELDS[PERSON]
    )


def test_minimal_policy_is_narrowed_further_by_the_subscription() -> None:
    sub = subscription(
        protected_identity_policy=ProtectedIdentityPolicy.MINIMAL,
        fields={PERSON: frozenset({"given_name", "emails", "civic_no"})},
    )
    prof = profile(accepted_fields={PERSON: OPTIONAL_FIELDS[PERSON]})
    minimal = resource(run(sub=sub, prof=prof), "prot-a", PERSON)
    assert set(minimal) == STRUCTURAL[PERSON] | {"given_name"}


def test_marking_change_under_pseudonymise_replaces_the_person() -> None:
    sub = subscription(protected_identity_policy=ProtectedIdentityPolicy.PSEUDONYMISE)
    prot_a = entity_by_key("prot-a")
    assert isinstance(prot_a, Person)
    before_state = state(replace=[prot_a.model_copy(update={"security_marking": SecurityMarking.INGEN})])
    before, after = run(before_state, sub), run(state(), sub)
    preview = compare(before, after)
    removed = [e for e in preview.removed if e.kind is PERSON]
    added = [e for e in preview.added if e.kind is PERSON]
    assert [e.id for e in removed] == [eid("prot-a")]
    assert [e.id for e in added] == [pseudonym_id(TENANT, VENDOR, eid("prot-a"))]
    assert all(e.kind is not PERSON for e in preview.changed)
    assert eid("klass-3a", GROUP) in {e.id for e in preview.changed}  # its member id changed


# --- persons without a securityMarking and personStatus ----------------------------------------


def _unmarked(key: str = "stu-a1") -> Person:
    """A fixture person whose source did not give the securityMarking."""
    person = entity_by_key(key)
    assert isinstance(person, Person)
    return person.model_copy(update={"security_marking": None})


def _with_setting(st8: TenantState, setting: MissingMarkingPolicy) -> TenantState:
    st8.missing_marking = setting
    return st8


def test_a_person_without_a_marking_is_protected_by_default() -> None:
    st8 = state(replace=[_unmarked()])
    assert st8.missing_marking is MissingMarkingPolicy.PROTECTED
    resources = run(st8)
    assert "stu-a1" not in person_keys(resources)
    assert eid("stu-a1") not in members(resources, "klass-3a")
    assert str(eid("stu-a1")) not in as_text(resources)
    # every other subscription policy applies to them as to a marked person
    pseudonymised = run(st8, subscription(protected_identity_policy=ProtectedIdentityPolicy.PSEUDONYMISE))
    alias = pseudonymised[pseudonym_id(TENANT, VENDOR, eid("stu-a1"))]
    assert alias.resource["given_name"] == PSEUDONYM_GIVEN_NAME
    assert "security_marking" not in alias.resource
    minimal = run(st8, subscription(protected_identity_policy=ProtectedIdentityPolicy.MINIMAL))
    assert set(resource(minimal, "stu-a1", PERSON)) == STRUCTURAL[PERSON] | {
        "given_name",
        "family_name",
        "eppn",
        "enrolments",
    }


def test_the_organiser_may_treat_persons_without_a_marking_as_not_protected() -> None:
    st8 = _with_setting(state(replace=[_unmarked()]), MissingMarkingPolicy.NOT_PROTECTED)
    prof = profile(accepted_fields={PERSON: OPTIONAL_FIELDS[PERSON] - SENSITIVE_FIELDS})
    resources = run(st8, prof=prof)
    sent = resource(resources, "stu-a1", PERSON)
    assert sent["security_marking"] is None, "an unknown marking is never sent as 'Ingen'"
    assert eid("stu-a1") in members(resources, "klass-3a")
    # a known marking still decides by itself
    assert not {"prot-a", "prot-t"} & person_keys(resources)
    assert resource(resources, "stu-a2", PERSON)["security_marking"] == SecurityMarking.INGEN.value


def test_the_setting_changes_only_persons_without_a_marking() -> None:
    protected = run(state(replace=[_unmarked()]))
    not_protected = run(_with_setting(state(replace=[_unmarked()]), MissingMarkingPolicy.NOT_PROTECTED))
    preview = compare(protected, not_protected)
    assert {e.id for e in preview.added} == {eid("stu-a1")}
    assert not preview.removed
    assert {e.kind for e in preview.changed} <= {GROUP}  # the groups gain them as a member


@pytest.mark.parametrize("status", [PersonStatus.UTVANDRAD, PersonStatus.AVLIDEN, None])
def test_a_person_who_is_not_active_is_in_no_selection(status: PersonStatus | None) -> None:
    student, teacher = entity_by_key("stu-a1"), entity_by_key("tea-a")
    assert isinstance(student, Person)
    assert isinstance(teacher, Person)
    gone = [p.model_copy(update={"person_status": status}) for p in (student, teacher)]
    sub = subscription(include_persons={str(eid("stu-a1"))})  # not even when named
    for policy in ProtectedIdentityPolicy:
        resources = run(state(replace=gone), sub.model_copy(update={"protected_identity_policy": policy}))
        assert not {"stu-a1", "tea-a"} & person_keys(resources)
        assert "d-tea-a" not in keys_of(resources, DUTY)
        assert eid("stu-a1") not in members(resources, "klass-3a")
        assert str(eid("stu-a1")) not in as_text(resources)
    before, after = run(), run(state(replace=gone))
    removed = {e.id for e in compare(before, after).removed}
    assert removed == {eid("stu-a1"), eid("tea-a"), eid("d-tea-a", DUTY)}  # a deletion for the vendor


# --- previews -------------------------------------------------------------------------------------


def test_adding_a_school_unit_adds_exactly_its_persons() -> None:
    current = subscription(school_unit_codes={CODE_A})
    proposed = subscription(school_unit_codes={CODE_A, CODE_B})
    preview = preview_subscription_change(state(), current, proposed, profile(), TODAY)
    added_persons = {e.id for e in preview.added if e.kind is PERSON}
    assert added_persons == ids("stu-b1", "stu-b2", "tea-b")  # stu-ab was already there
    assert not preview.removed
    assert all(e.school_unit_codes == (CODE_B,) for e in preview.added)
    assert eid("stu-ab") in {e.id for e in preview.changed}  # gains an enrolment
    counts = preview.counts()
    assert counts[(CODE_B, "student")] == {"added": 2, "removed": 0, "changed": 1}
    assert counts[(CODE_B, "teacher")] == {"added": 1, "removed": 0, "changed": 0}
    assert counts[(CODE_B, "school_unit")]["added"] == 1
    assert counts[(CODE_B, "group")]["added"] == 2
    assert counts[(CODE_B, "duty")]["added"] == 1
    assert counts[(CODE_B, "activity")]["added"] == 1
    assert (CODE_A, "teacher") not in counts
    assert counts[(CODE_A, "student")] == {"added": 0, "removed": 0, "changed": 1}  # stu-ab, counted per unit


def test_removing_a_role_shows_its_removals() -> None:
    current = subscription()
    proposed = subscription(roles={Role.STUDENT})
    preview = preview_subscription_change(state(), current, proposed, profile(), TODAY)
    assert not preview.added
    assert {e.id for e in preview.removed if e.kind is PERSON} == ids(*ALL_STAFF)
    assert {e.id for e in preview.removed if e.kind is DUTY} == ids("d-tea-a", "d-tea-b", "d-rektor-a", kind=DUTY)
    assert {e.kind for e in preview.removed} == {PERSON, DUTY}
    counts = preview.counts()
    assert counts[(CODE_A, "teacher")]["removed"] == 1
    assert counts[(CODE_A, "other_staff")]["removed"] == 1
    assert counts[(CODE_B, "teacher")]["removed"] == 1
    assert counts[(CODE_A, "duty")]["removed"] == 2
    changed = {e.id for e in preview.changed}
    assert changed == {eid("ma-3a", GROUP), eid("mentor-b", GROUP)} | ids(
        "act-ma-3a", "act-klass-3a", "act-b", kind=ACTIVITY
    )


def test_no_change_previews_nothing() -> None:
    preview = preview_subscription_change(state(), subscription(), subscription(), profile(), TODAY)
    assert (preview.added, preview.removed, preview.changed) == ([], [], [])
    assert preview.counts() == {}


def test_a_new_subscription_adds_everything() -> None:
    preview = preview_subscription_change(state(), None, subscription(), profile(), TODAY)
    resources = run()
    assert {e.id for e in preview.added} == set(resources)
    assert not preview.removed
    assert not preview.changed
    counts = preview.counts()
    assert counts[("-", "organisation")]["added"] == 1  # no school unit of its own
    assert counts[("-", "school_unit_group")]["added"] == 1
    assert sum(c["added"] for (code, label), c in counts.items() if label == "student") == 6  # stu-ab twice
    assert entities_by_kind(resources.values()) == {
        PERSON: 8,
        DUTY: 3,
        GROUP: 4,
        ACTIVITY: 3,
        ORGANISATION: 1,
        SUG: 1,
        SCHOOL_UNIT: 2,
    }


def test_compare_reports_changed_content_only() -> None:
    stu = entity_by_key("stu-a1")
    renamed = state(replace=[stu.model_copy(update={"given_name": "Nytt"})])
    preview = compare(run(), run(renamed))
    assert [e.id for e in preview.changed] == [eid("stu-a1")]
    assert not preview.added
    assert not preview.removed
    assert preview.counts() == {(CODE_A, "student"): {"added": 0, "removed": 0, "changed": 1}}


def test_compare_lists_are_sorted_by_kind_and_id() -> None:
    preview = compare({}, run())
    keys = [(e.kind.value, str(e.id)) for e in preview.added]
    assert keys == sorted(keys)
    back = compare(run(), {})
    assert {e.id for e in back.removed} == set(run())


def test_a_day_later_the_same_projection() -> None:
    assert run() == run(today=date(2024, 10, 2))
    after_term = run(today=date(2025, 1, 9))
    assert "stu-future" in person_keys(after_term)


# --- properties -----------------------------------------------------------------------------------


SUBSCRIPTIONS = st.builds(
    subscription,
    school_unit_codes=st.sets(st.sampled_from([CODE_A, CODE_B, CODE_OLD, "99999999"]), min_size=1),
    roles=st.sets(st.sampled_from(list(Role))),
    school_types=st.none() | st.sets(st.sampled_from([SchoolType.GR, SchoolType.GY, SchoolType.FS])),
    school_years=st.none() | st.sets(st.integers(0, 10)),
    group_types=st.none() | st.sets(st.sampled_from(list(GroupType))),
    protected_identity_policy=st.sampled_from(list(ProtectedIdentityPolicy)),
    include_persons=st.sets(st.sampled_from([str(eid(k)) for k in ("stu-old", "tea-a", "prot-a")]), max_size=2),
    exclude_persons=st.sets(st.sampled_from([str(eid(k)) for k in ("stu-ab", "tea-b", "prot-t")]), max_size=2),
)
PROFILES = st.builds(profile, classes_only=st.booleans(), single_school_unit_per_user=st.booleans())


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sub=SUBSCRIPTIONS, prof=PROFILES, seed=st.integers(0, 2**32 - 1))
def test_projection_is_deterministic_and_order_blind(sub: VendorSubscription, prof: VendorProfile, seed: int) -> None:
    first = project(state(), sub, prof, TODAY)
    second = project(state(), sub, prof, TODAY)
    shuffled_entities = entities()
    random.Random(seed).shuffle(shuffled_entities)
    shuffled = project(state(base=shuffled_entities), sub, prof, TODAY)
    assert first == second == shuffled
    for rid, r in first.items():
        assert r.hash == second[rid].hash == shuffled[rid].hash
        assert r.resource["id"] == str(rid)
    assert compare(first, shuffled).counts() == {}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sub=SUBSCRIPTIONS, prof=PROFILES)
def test_projection_is_referentially_whole_and_respects_the_rules(sub: VendorSubscription, prof: VendorProfile) -> None:
    resources = project(state(), sub, prof, TODAY)
    by_kind = {kind: {str(i) for i in of_kind(resources, kind)} for kind in EntityKind}
    for r in resources.values():
        body = r.resource
        if r.kind is GROUP:
            assert set(body["member_ids"]) <= by_kind[PERSON]
            assert body["school_unit_id"] in by_kind[SCHOOL_UNIT]
        elif r.kind is ACTIVITY:
            assert body["group_ids"]
            assert set(body["group_ids"]) <= by_kind[GROUP]
            assert set(body["teacher_duty_ids"]) <= by_kind[DUTY]
        elif r.kind is DUTY:
            assert body["person_id"] in by_kind[PERSON]
        elif r.kind is PERSON:
            assert set(body["school_unit_ids"]) <= by_kind[SCHOOL_UNIT]
            assert set(r.school_unit_codes) <= sub.school_unit_codes
            assert set(r.roles) <= {role.value for role in sub.roles}
            assert str(r.source_entity_id) not in sub.exclude_persons
            if prof.single_school_unit_per_user:
                assert len(r.school_unit_codes) <= 1
    text = as_text(resources)
    assert "201501012384" not in text  # sensitive: never by default
    if sub.protected_identity_policy is not ProtectedIdentityPolicy.MINIMAL:
        assert str(eid("prot-a")) not in text
        assert "Förnamn-prot-a" not in text
