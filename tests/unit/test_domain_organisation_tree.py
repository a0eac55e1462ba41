"""The organiser's whole organisation tree (issue 20, item 1): every level is kept with its type and
parent; duties, enrolments, groups and activities placed at a level above school units resolve to the
school units beneath it by the rules of docs/domain-model.md; what does not resolve is a finding that
names the level; selection stays per school unit; an organisation of unknown type is a finding."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import pytest

from skolsynk.domain.dependencies import place_organisations, references, stored, token
from skolsynk.domain.ids import entity_id
from skolsynk.domain.organisation_tree import UNKNOWN_LEVEL, OrganisationTree
from skolsynk.domain.quality import Finding, FindingCode, Severity
from skolsynk.domain.reconcile import reconcile, school_unit_codes_by_entity
from skolsynk.domain.selection import ProjectedResource, TenantState, duty_at_unit_id, project, pseudonym_id
from skolsynk.domain.ss12000 import (
    DutyRole,
    Entity,
    EntityKind,
    GroupType,
    Organisation,
    OrganisationType,
    Person,
    SchoolType,
    SchoolUnit,
    SecurityMarking,
)
from skolsynk.domain.subscription import ProtectedIdentityPolicy
from skolsynk_services.normaliser.validation import RecordValidator
from tests.unit.domain_factories import (
    CODE_A,
    SOURCE,
    TENANT,
    TODAY,
    VENDOR,
    activity,
    duty,
    eid,
    enrolment,
    group,
    person,
    profile,
    record,
    school_unit,
    state,
    subscription,
)

pytestmark = pytest.mark.unit

CODE_X1, CODE_X2, CODE_Y, CODE_Z = "44444444", "55555555", "66666666", "77777777"


def level(key: str, organisation_type: OrganisationType | None, parent: str | None) -> Organisation:
    return Organisation(key=key, display_name=f"Nivå {key}", organisation_type=organisation_type, parent=parent)


def unit(key: str, code: str, parent: str) -> SchoolUnit:
    return school_unit(key, code, SchoolType.GR).model_copy(update={"organisation": parent})


def tree_entities() -> list[Entity]:
    """Beneath the fixture's Huvudman (org-1): a Förvaltning with a Skola of two school units, a Skola of
    one, a Skola of none, and a level of unknown type with one school unit."""
    return [
        level("forv", OrganisationType.FORVALTNING, "org-1"),
        level("skola-x", OrganisationType.SKOLA, "forv"),
        level("skola-y", OrganisationType.SKOLA, "org-1"),
        level("skola-tom", OrganisationType.SKOLA, "org-1"),
        level("okand", None, "org-1"),
        unit("su-x1", CODE_X1, "skola-x"),
        unit("su-x2", CODE_X2, "skola-x"),
        unit("su-y", CODE_Y, "skola-y"),
        unit("su-z", CODE_Z, "okand"),
    ]


def tree_state(*extra: Entity) -> TenantState:
    return state(add=[*tree_entities(), *extra])


def tree_of(tenant: TenantState) -> OrganisationTree:
    return OrganisationTree((s.source_id, s.entity) for s in tenant.entities)


def reconciled(*extra: Entity) -> tuple[TenantState, list[Finding]]:
    tenant = tree_state(*extra)
    return reconcile(TENANT, tenant.entities, TODAY)


def findings_of(findings: list[Finding], key: str) -> list[Finding]:
    return [f for f in findings if f.source_key == key]


def cleaned(tenant: TenantState, key: str) -> Any:
    return next(s.entity for s in tenant.entities if s.entity.key == key)


def selected(*extra: Entity, codes: set[str], **profile_values: Any) -> dict[UUID, ProjectedResource]:
    tenant, _ = reconciled(*extra)
    return project(tenant, subscription(school_unit_codes=codes), profile(**profile_values), TODAY)


def staff_at_skola_x() -> list[Entity]:
    return [person("tea-x"), duty("d-tea-x", "tea-x", "skola-x", DutyRole.LARARE, signature="TX")]


# --- the tree ------------------------------------------------------------------------------------


def test_a_level_resolves_to_every_school_unit_beneath_it_by_code() -> None:
    tree = tree_of(tree_state())
    assert tree.units_beneath(SOURCE, "skola-x") == ["su-x1", "su-x2"]
    assert tree.units_beneath(SOURCE, "forv") == ["su-x1", "su-x2"]
    assert tree.units_beneath(SOURCE, "okand") == ["su-z"]
    assert tree.units_beneath(SOURCE, "skola-tom") == []
    assert tree.units_beneath(SOURCE, "su-a") == ["su-a"]  # a school unit is itself
    assert tree.units_beneath(SOURCE, "nowhere") == []
    assert set(tree.units_beneath(SOURCE, "org-1")) == {"su-a", "su-b", "su-old", "su-x1", "su-x2", "su-y", "su-z"}
    assert tree.units_beneath("other-source", "skola-x") == []  # references stay within their source


def test_levels_are_named_and_an_unknown_type_is_a_neutral_level() -> None:
    tree = tree_of(tree_state())
    assert [tree.level(SOURCE, k) for k in ("org-1", "forv", "skola-x", "su-x1", "okand", "nowhere")] == [
        "Huvudman",
        "Förvaltning",
        "Skola",
        "Skolenhet",
        UNKNOWN_LEVEL,
        None,
    ]


def test_a_school_unit_is_delivered_under_the_nearest_huvudman_above_it() -> None:
    tree = tree_of(tree_state())
    units = {s.entity.key: s.entity for s in tree_state().entities if isinstance(s.entity, SchoolUnit)}
    assert [tree.huvudman(SOURCE, units[k]) for k in ("su-a", "su-x1", "su-y", "su-z")] == ["org-1"] * 4
    # A chain without a Huvudman: the level directly above, as before the tree was kept; none unknown.
    su_f = unit("su-f", "88888888", "f")
    lonely = OrganisationTree([(SOURCE, su_f), (SOURCE, level("f", OrganisationType.FORVALTNING, None))])
    assert lonely.huvudman(SOURCE, su_f) == "f"
    assert lonely.huvudman(SOURCE, unit("su-g", "99999999", "nowhere")) is None


def test_a_parent_chain_that_loops_ends() -> None:
    tenant = state(
        add=[
            level("a", OrganisationType.SKOLA, "b"),
            level("b", OrganisationType.REKTORSOMRADE, "a"),
            unit("su-loop", "88888888", "a"),
        ]
    )
    tree = tree_of(tenant)
    assert tree.units_beneath(SOURCE, "b") == ["su-loop"]
    looped = next(s.entity for s in tenant.entities if s.entity.key == "su-loop")
    assert isinstance(looped, SchoolUnit)
    assert tree.huvudman(SOURCE, looped) == "a"  # no Huvudman above: the direct parent


# --- reconcile: resolution and findings ----------------------------------------------------------


def test_a_teacher_whose_duty_is_at_a_skola_has_an_active_relation() -> None:
    # The case: withheld as duty.unknown_school_unit, then person.no_active_relation.
    tenant, findings = reconciled(*staff_at_skola_x())
    assert findings_of(findings, "d-tea-x") == []
    assert findings_of(findings, "tea-x") == []
    assert eid("d-tea-x", EntityKind.DUTY) not in tenant.withheld
    assert school_unit_codes_by_entity(tenant)[str(eid("d-tea-x", EntityKind.DUTY))] == CODE_X1
    assert school_unit_codes_by_entity(tenant)[str(eid("tea-x"))] == CODE_X1


def test_a_duty_at_a_level_with_no_school_unit_beneath_is_withheld_with_a_finding_naming_the_level() -> None:
    tenant, findings = reconciled(person("tea-t"), duty("d-tea-t", "tea-t", "skola-tom"))
    [finding] = findings_of(findings, "d-tea-t")
    assert (finding.code, finding.severity, finding.field) == (
        FindingCode.DUTY_UNRESOLVED_ORGANISATION,
        Severity.ERROR,
        "dutyAt",
    )
    assert finding.detail == "dutyAt is an organisation of type Skola with no school unit beneath it"
    assert eid("d-tea-t", EntityKind.DUTY) in tenant.withheld
    assert [f.code for f in findings_of(findings, "tea-t")] == [FindingCode.PERSON_NO_ACTIVE_RELATION]


def test_a_duty_at_nothing_the_organiser_has_stays_an_unknown_school_unit() -> None:
    _, findings = reconciled(person("tea-n"), duty("d-tea-n", "tea-n", "nowhere"))
    assert [f.code for f in findings_of(findings, "d-tea-n")] == [FindingCode.DUTY_UNKNOWN_SCHOOL_UNIT]


def test_a_duty_at_a_level_resolves_to_the_units_beneath_that_are_not_withheld() -> None:
    # su-x9 has the code of su-a: withheld (su-a keeps the code). A duty at skola-x still holds at its
    # other units; one at a Skola whose only unit is withheld is withheld without a finding of its own
    # (the unit's finding explains it).
    tenant, findings = reconciled(
        *staff_at_skola_x(),
        unit("su-x9", CODE_A, "skola-x"),
        level("skola-w", OrganisationType.SKOLA, "org-1"),
        unit("su-w", CODE_A, "skola-w"),
        person("tea-w"),
        duty("d-tea-w", "tea-w", "skola-w"),
    )
    assert {f.source_key for f in findings if f.code is FindingCode.SCHOOL_UNIT_CODE_DUPLICATE} == {"su-w", "su-x9"}
    assert eid("d-tea-x", EntityKind.DUTY) not in tenant.withheld
    assert findings_of(findings, "d-tea-x") == []
    assert eid("d-tea-w", EntityKind.DUTY) in tenant.withheld
    assert findings_of(findings, "d-tea-w") == []
    resources = project(tenant, subscription(school_unit_codes={CODE_A, CODE_X1, CODE_X2}), profile(), TODAY)
    assert resources[eid("tea-x")].school_unit_codes == (CODE_X1, CODE_X2)


@pytest.mark.parametrize(
    ("kind", "make"),
    [
        (EntityKind.GROUP, lambda place: group("g-1", place, GroupType.KLASS, "stu-a1")),
        (EntityKind.ACTIVITY, lambda place: activity("act-1", place, ["klass-3a"], ["d-tea-a"])),
    ],
)
def test_a_group_or_activity_at_a_level_belongs_to_its_only_school_unit(kind: EntityKind, make: Any) -> None:
    entity = make("skola-y")
    tenant, findings = reconciled(entity)
    assert findings_of(findings, entity.key) == []
    assert cleaned(tenant, entity.key).school_unit == "su-y"
    assert school_unit_codes_by_entity(tenant)[str(eid(entity.key, kind))] == CODE_Y


@pytest.mark.parametrize(
    ("kind", "make", "code"),
    [
        (
            EntityKind.GROUP,
            lambda place: group("g-1", place, GroupType.KLASS),
            FindingCode.GROUP_UNRESOLVED_ORGANISATION,
        ),
        (
            EntityKind.ACTIVITY,
            lambda place: activity("act-1", place, [], []),
            FindingCode.ACTIVITY_UNRESOLVED_ORGANISATION,
        ),
    ],
)
def test_a_group_or_activity_at_a_level_with_several_or_no_school_units_is_withheld_naming_the_level(
    kind: EntityKind, make: Any, code: FindingCode
) -> None:
    for place, beneath in (("skola-x", "2 school units"), ("skola-tom", "no school unit"), ("forv", "2 school units")):
        entity = make(place)
        tenant, findings = reconciled(entity)
        [finding] = findings_of(findings, entity.key)
        level_name = "Förvaltning" if place == "forv" else "Skola"
        assert (finding.code, finding.severity, finding.field) == (code, Severity.ERROR, "organisation")
        assert finding.detail == f"organisation is an organisation of type {level_name} with {beneath} beneath it"
        assert eid(entity.key, kind) in tenant.withheld


def test_an_enrolment_at_a_level_resolves_to_its_only_school_unit_or_is_dropped_with_a_finding() -> None:
    tenant, findings = reconciled(
        person("stu-y", enrolment("skola-y")),
        person("stu-x", enrolment("skola-x"), enrolment("su-a")),
    )
    student_y = cleaned(tenant, "stu-y")
    assert isinstance(student_y, Person)
    assert [e.school_unit for e in student_y.enrolments] == ["su-y"]
    assert findings_of(findings, "stu-y") == []
    student_x = cleaned(tenant, "stu-x")
    assert isinstance(student_x, Person)
    assert [e.school_unit for e in student_x.enrolments] == ["su-a"]
    [finding] = findings_of(findings, "stu-x")
    assert (finding.code, finding.severity, finding.field) == (
        FindingCode.ENROLMENT_UNRESOLVED_ORGANISATION,
        Severity.WARNING,
        "enrolments",
    )
    assert "Skola" in finding.detail
    assert "stu-x" not in finding.detail


# --- selection -----------------------------------------------------------------------------------


def duties(resources: dict[UUID, ProjectedResource]) -> dict[UUID, dict[str, Any]]:
    return {i: r.resource for i, r in resources.items() if r.kind is EntityKind.DUTY}


def test_a_teacher_at_a_skola_reaches_a_vendor_of_a_school_unit_beneath_it() -> None:
    resources = selected(*staff_at_skola_x(), codes={CODE_A, CODE_X2})
    teacher = resources[eid("tea-x")]
    unit_x2 = eid("su-x2", EntityKind.SCHOOL_UNIT)
    assert (teacher.roles, teacher.school_unit_ids, teacher.school_unit_codes) == (
        ("teacher",),
        (str(unit_x2),),
        (CODE_X2,),
    )
    instance = duty_at_unit_id(eid("d-tea-x", EntityKind.DUTY), unit_x2)
    duty_resource = duties(resources)[instance]
    assert (duty_resource["school_unit_id"], duty_resource["person_id"], duty_resource["signature"]) == (
        str(unit_x2),
        str(eid("tea-x")),
        "TX",
    )
    assert resources[instance].source_entity_id == eid("d-tea-x", EntityKind.DUTY)


def test_a_duty_at_a_level_is_delivered_once_per_selected_school_unit_with_stable_ids() -> None:
    resources = selected(*staff_at_skola_x(), codes={CODE_X1, CODE_X2})
    units = [eid(k, EntityKind.SCHOOL_UNIT) for k in ("su-x1", "su-x2")]
    expected = {duty_at_unit_id(eid("d-tea-x", EntityKind.DUTY), u) for u in units}
    of_tea_x = {i for i, r in duties(resources).items() if r["person_id"] == str(eid("tea-x"))}
    assert of_tea_x == expected
    assert resources[eid("tea-x")].school_unit_ids == tuple(sorted(str(u) for u in units))
    assert selected(*staff_at_skola_x(), codes={CODE_X1, CODE_X2}) == resources
    # One school unit per user: the lowest code only.
    single = selected(*staff_at_skola_x(), codes={CODE_X1, CODE_X2}, single_school_unit_per_user=True)
    assert {i for i, r in duties(single).items() if r["person_id"] == str(eid("tea-x"))} == {
        duty_at_unit_id(eid("d-tea-x", EntityKind.DUTY), units[0])
    }


def test_selection_per_school_unit_is_unchanged_a_vendor_of_other_units_gets_nothing_of_the_skola() -> None:
    without = project(state(), subscription(), profile(), TODAY)
    with_tree = selected(*staff_at_skola_x(), group("g-x", "skola-y", GroupType.KLASS), codes={CODE_A, "22222222"})
    assert with_tree == without


def test_an_activity_names_its_teacher_duty_at_its_own_school_unit() -> None:
    resources = selected(
        *staff_at_skola_x(),
        group("g-x1", "su-x1", GroupType.UNDERVISNING, "tea-x"),
        activity("act-x1", "su-x1", ["g-x1"], ["d-tea-x"]),
        codes={CODE_X1, CODE_X2},
    )
    act = resources[eid("act-x1", EntityKind.ACTIVITY)].resource
    unit_x1 = eid("su-x1", EntityKind.SCHOOL_UNIT)
    assert act["teacher_duty_ids"] == [str(duty_at_unit_id(eid("d-tea-x", EntityKind.DUTY), unit_x1))]


def test_a_pseudonymised_teacher_at_a_skola_gets_vendor_specific_duty_ids() -> None:
    hidden = person("tea-x", security_marking=SecurityMarking.SKYDDAD_FOLKBOKFORING)
    tenant, _ = reconciled(hidden, duty("d-tea-x", "tea-x", "skola-x", signature="TX"))
    policy = ProtectedIdentityPolicy.PSEUDONYMISE
    resources = project(
        tenant, subscription(school_unit_codes={CODE_X1}, protected_identity_policy=policy), profile(), TODAY
    )
    instance = duty_at_unit_id(eid("d-tea-x", EntityKind.DUTY), eid("su-x1", EntityKind.SCHOOL_UNIT))
    alias = str(pseudonym_id(TENANT, VENDOR, eid("tea-x")))
    [(duty_id, resource)] = [(i, r) for i, r in duties(resources).items() if r["person_id"] == alias]
    assert duty_id == pseudonym_id(TENANT, VENDOR, instance)
    assert "signature" not in resource


def test_units_beneath_a_skola_are_delivered_under_the_huvudman_and_the_levels_between_are_not() -> None:
    resources = selected(codes={CODE_X1, CODE_Z})
    for key in ("su-x1", "su-z"):
        unit = resources[eid(key, EntityKind.SCHOOL_UNIT)].resource
        assert unit["organisation_id"] == str(eid("org-1", EntityKind.ORGANISATION))
    organisations = {r.resource["id"] for r in resources.values() if r.kind is EntityKind.ORGANISATION}
    assert organisations == {str(eid("org-1", EntityKind.ORGANISATION))}
    assert all("parent" not in r.resource for r in resources.values())
    assert all("organisation_type" not in r.resource for r in resources.values())


# --- dependencies and ingest ---------------------------------------------------------------------


def test_an_organisation_depends_on_its_parent_and_places_name_the_organisations_they_may_be() -> None:
    tokens = references(TENANT, SOURCE, EntityKind.ORGANISATION, {"key": "skola-x", "parent": "forv"})
    assert tokens == [
        stored(EntityKind.ORGANISATION, token(EntityKind.ORGANISATION, eid("forv", EntityKind.ORGANISATION)))
    ]
    org_id = str(entity_id(TENANT, SOURCE, EntityKind.ORGANISATION, "skola-x"))
    assert place_organisations(TENANT, SOURCE, EntityKind.DUTY, {"school_unit": "skola-x"}) == {org_id}
    assert place_organisations(TENANT, SOURCE, EntityKind.GROUP, {"school_unit": "skola-x"}) == {org_id}
    assert place_organisations(TENANT, SOURCE, EntityKind.PERSON, {"enrolments": [{"school_unit": "skola-x"}]}) == {
        org_id
    }
    assert place_organisations(TENANT, SOURCE, EntityKind.SCHOOL_UNIT, {"organisation": "skola-x"}) == set()


@pytest.mark.parametrize("given", [None, "", "Kommundel"])
def test_an_organisation_of_missing_or_unknown_type_is_kept_with_a_finding(given: str | None) -> None:
    validator = RecordValidator(TENANT, SOURCE, eid("run", EntityKind.PERSON))
    entity, findings = validator.validate(
        record(EntityKind.ORGANISATION, "okand", display_name="Okänd nivå", organisation_type=given, parent="org-1")
    )
    assert isinstance(entity, Organisation)
    assert (entity.organisation_type, entity.parent) == (None, "org-1")
    assert [(f.code, f.severity, f.field) for f in findings] == [
        (FindingCode.ORGANISATION_TYPE_UNKNOWN, Severity.WARNING, "organisation_type")
    ]
    assert "Kommundel" not in findings[0].detail


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({}, OrganisationType.HUVUDMAN),  # EGIL, Google, Graph: the organiser itself
        ({"organisation_type": "Stadsdel"}, OrganisationType.FORVALTNING),
        ({"organisation_type": "rektorsområde"}, OrganisationType.REKTORSOMRADE),
    ],
)
def test_known_and_absent_organisation_types_are_no_finding(data: dict[str, Any], expected: OrganisationType) -> None:
    validator = RecordValidator(TENANT, SOURCE, eid("run", EntityKind.PERSON))
    entity, findings = validator.validate(record(EntityKind.ORGANISATION, "o", display_name="O", **data))
    assert isinstance(entity, Organisation)
    assert entity.organisation_type is expected
    assert findings == []
