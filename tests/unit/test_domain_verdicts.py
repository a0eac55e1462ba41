"""Verdicts: why one person is, or is not, at one vendor. Every reason code has a case here that produces
it with the verdict it belongs to; and the selection's explanation never disagrees with the projection
(``select_person`` says selected exactly for the persons ``project`` delivers). The fixture organiser is
described in ``domain_factories``."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import pytest

from skolsynk.domain.reconcile import reconcile
from skolsynk.domain.selection import PersonOutcome, project, pseudonym_id, select_person
from skolsynk.domain.ss12000 import (
    DutyRole,
    Enrolment,
    EntityKind,
    GroupType,
    Organisation,
    OrganisationType,
    PersonStatus,
    Placement,
    SchoolType,
    SecurityMarking,
)
from skolsynk.domain.subscription import OPTIONAL_FIELDS, ProtectedIdentityPolicy, Role
from skolsynk.domain.verdicts import AtVendor, HeldRemoval, ReasonCode, VendorVerdict, Verdict, judge
from skolsynk.explain import egil_check
from tests.unit.domain_factories import (
    CODE_A,
    CODE_B,
    CODE_OLD,
    TENANT,
    TERM_START,
    TODAY,
    VENDOR,
    duty,
    eid,
    enrolment,
    entities,
    person,
    profile,
    school_unit,
    state,
    stored,
    subscription,
)

pytestmark = pytest.mark.unit

NOW = datetime(2024, 10, 1, 12, 0, tzinfo=UTC)


def delivered(key: str, **options: Any) -> AtVendor:
    """What the vendor holds when it has the person exactly as the subscription gives them today."""
    sub, prof = options.get("sub", subscription()), options.get("prof", profile())
    resources = project(options.get("st", state()), sub, prof, TODAY)
    resource = next(r for r in resources.values() if (r.source_entity_id or r.id) == eid(key))
    return AtVendor(
        resource.id, present=True, version=3, hash=resource.hash, delivered_version=3, delivered_status="test"
    )


def still_there(key: str, **changes: Any) -> AtVendor:
    """A vendor that still has the person (an old version), whatever the selection says now."""
    values: dict[str, Any] = {"present": True, "version": 2, "hash": "old", "delivered_version": 2}
    values.update(changes)
    return AtVendor(eid(key), **values)


def verdict(key: str, *, sub: Any = None, prof: Any = None, st: Any = None, **options: Any) -> VendorVerdict:
    current = st if st is not None else state()
    return judge(current, [], eid(key), sub or subscription(), prof or profile(), TODAY, **options)


def reconciled(*extra: Any, **replace: Any) -> tuple[Any, Any]:
    return reconcile(TENANT, [stored(e) for e in [*entities(), *extra]], TODAY)


def duplicate_login() -> VendorVerdict:
    # "stu-zz" sorts after "stu-a1": it loses the login they share and is withheld.
    twin = person("stu-zz", enrolment("su-a"), eppn=["stu-a1@kommun-a.se"])
    current, findings = reconciled(twin)
    return judge(current, findings, eid("stu-zz"), subscription(), profile(), TODAY, at_vendor=still_there("stu-zz"))


def school_unit_withheld() -> VendorVerdict:
    twin_unit = school_unit("su-z", CODE_A)  # the same code as su-a: withheld, and so is who is enrolled there
    pupil = person("stu-z", enrolment("su-z"))
    current, findings = reconciled(twin_unit, pupil)
    return judge(current, findings, eid("stu-z"), subscription(), profile(), TODAY)


def placed_child(**sub: Any) -> VendorVerdict:
    child = person("child-1")
    place = Placement(key="pl-1", child="child-1", school_unit="su-a", school_type=SchoolType.FS, start_date=TERM_START)
    return verdict("child-1", st=state(add=[child, place]), sub=subscription(**sub))


def placements_not_taken() -> VendorVerdict:
    return placed_child(placements=True)


LIVE = {"test_mode": False}
#: reason code -> (a case that gives it, the verdict it comes with)
CASES: dict[ReasonCode, tuple[Callable[[], VendorVerdict], Verdict]] = {
    ReasonCode.SELECTED: (lambda: verdict("stu-a1", at_vendor=delivered("stu-a1")), Verdict.DELIVERED),
    ReasonCode.INCLUDED: (
        lambda: verdict("tea-a", sub=subscription(roles={Role.STUDENT}, include_persons={str(eid("tea-a"))})),
        Verdict.WAITING,
    ),
    ReasonCode.TEST_MODE: (lambda: verdict("stu-a1", at_vendor=delivered("stu-a1")), Verdict.DELIVERED),
    ReasonCode.PSEUDONYMISED: (
        lambda: verdict(
            "prot-a",
            sub=subscription(protected_identity_policy=ProtectedIdentityPolicy.PSEUDONYMISE),
            at_vendor=delivered(
                "prot-a", sub=subscription(protected_identity_policy=ProtectedIdentityPolicy.PSEUDONYMISE)
            ),
        ),
        Verdict.DELIVERED,
    ),
    ReasonCode.MINIMAL: (
        lambda: verdict("prot-a", sub=subscription(protected_identity_policy=ProtectedIdentityPolicy.MINIMAL)),
        Verdict.WAITING,
    ),
    ReasonCode.UPDATE_PENDING: (
        lambda: verdict("stu-a1", at_vendor=still_there("stu-a1", delivered_version=2)),
        Verdict.DELIVERED,
    ),
    ReasonCode.NOT_IN_SOURCE: (lambda: verdict("nobody"), Verdict.NOT_SELECTED),
    ReasonCode.SUBSCRIPTION_ENDED: (lambda: verdict("stu-a1", sub=subscription(ended_at=NOW)), Verdict.NOT_SELECTED),
    ReasonCode.EXCLUDED: (
        lambda: verdict("stu-a1", sub=subscription(exclude_persons={str(eid("stu-a1"))})),
        Verdict.NOT_SELECTED,
    ),
    ReasonCode.NOT_ACTIVE: (
        lambda: verdict(
            "stu-a1", st=state(replace=[person("stu-a1", enrolment("su-a"), person_status=PersonStatus.UTVANDRAD)])
        ),
        Verdict.NOT_SELECTED,
    ),
    ReasonCode.NO_RELATION: (lambda: verdict("tea-a", st=state(drop=["d-tea-a"])), Verdict.NOT_SELECTED),
    ReasonCode.UNIT_NOT_CHOSEN: (
        lambda: verdict("stu-b1", sub=subscription(school_unit_codes={CODE_A})),
        Verdict.NOT_SELECTED,
    ),
    ReasonCode.UNIT_NOT_ACTIVE: (
        lambda: verdict("stu-old", sub=subscription(school_unit_codes={CODE_OLD})),
        Verdict.NOT_SELECTED,
    ),
    ReasonCode.RELATION_NOT_ACTIVE: (lambda: verdict("stu-ended"), Verdict.NOT_SELECTED),
    ReasonCode.SCHOOL_TYPE: (
        lambda: verdict("stu-b1", sub=subscription(school_types={SchoolType.GR})),
        Verdict.NOT_SELECTED,
    ),
    ReasonCode.SCHOOL_YEAR: (lambda: verdict("stu-a2", sub=subscription(school_years={3})), Verdict.NOT_SELECTED),
    ReasonCode.SCHOOL_YEAR_MISSING: (
        lambda: verdict(
            "stu-a1",
            st=state(replace=[person("stu-a1", enrolment("su-a", year=None))]),
            sub=subscription(school_years={3}),
        ),
        Verdict.NOT_SELECTED,
    ),
    ReasonCode.ROLE: (lambda: verdict("tea-a", sub=subscription(roles={Role.STUDENT})), Verdict.NOT_SELECTED),
    ReasonCode.PLACEMENTS_NOT_ASKED: (placed_child, Verdict.NOT_SELECTED),
    ReasonCode.PLACEMENTS_NOT_TAKEN: (placements_not_taken, Verdict.NOT_SELECTED),
    ReasonCode.PROFILE_NO_PERSONS: (
        lambda: verdict("stu-a1", prof=profile(kinds={EntityKind.SCHOOL_UNIT, EntityKind.GROUP})),
        Verdict.NOT_SELECTED,
    ),
    ReasonCode.PROTECTED_IDENTITY: (lambda: verdict("prot-a"), Verdict.WITHHELD),
    ReasonCode.MARKING_MISSING: (
        lambda: verdict("stu-a1", st=state(replace=[person("stu-a1", enrolment("su-a"), security_marking=None)])),
        Verdict.WITHHELD,
    ),
    ReasonCode.DUPLICATE_LOGIN: (duplicate_login, Verdict.WITHHELD),
    ReasonCode.SCHOOL_UNIT_WITHHELD: (school_unit_withheld, Verdict.WITHHELD),
    ReasonCode.VENDOR_REQUIRES_LOGIN: (
        lambda: verdict(
            "stu-a1", st=state(replace=[person("stu-a1", enrolment("su-a"), eppn=[])]), format_check=egil_check
        ),
        Verdict.WITHHELD,
    ),
    ReasonCode.VENDOR_REQUIRES_FIELD: (
        lambda: verdict(
            "stu-a1",
            sub=subscription(fields={EntityKind.PERSON: OPTIONAL_FIELDS[EntityKind.PERSON] - {"given_name"}}),
            format_check=egil_check,
        ),
        Verdict.WITHHELD,
    ),
    ReasonCode.VENDOR_REJECTED: (
        lambda: verdict(
            "stu-a1", sub=subscription(**LIVE), at_vendor=still_there("stu-a1", delivered_status="rejected")
        ),
        Verdict.WITHHELD,
    ),
    ReasonCode.VENDOR_KEEPS: (duplicate_login, Verdict.WITHHELD),
    ReasonCode.HOLD: (
        lambda: verdict(
            "stu-b1",
            sub=subscription(school_unit_codes={CODE_A}, **LIVE),
            at_vendor=still_there("stu-b1"),
            held=HeldRemoval(CODE_B, "pending"),
        ),
        Verdict.WAITING,
    ),
    ReasonCode.HOLD_DISCARDED: (
        lambda: verdict(
            "stu-b1",
            sub=subscription(school_unit_codes={CODE_A}),
            at_vendor=still_there("stu-b1"),
            held=HeldRemoval(CODE_B, "discarded"),
        ),
        Verdict.WAITING,
    ),
    ReasonCode.GRACE_PERIOD: (
        lambda: verdict(
            "stu-b1",
            sub=subscription(school_unit_codes={CODE_A}, deletion_grace_hours=48),
            at_vendor=still_there("stu-b1", removal_pending_since=NOW),
        ),
        Verdict.WAITING,
    ),
    ReasonCode.REMOVAL_NEXT: (
        lambda: verdict("stu-b1", sub=subscription(school_unit_codes={CODE_A}), at_vendor=still_there("stu-b1")),
        Verdict.WAITING,
    ),
    ReasonCode.NOT_SENT_YET: (lambda: verdict("stu-a1"), Verdict.WAITING),
    ReasonCode.IN_DELIVERY: (
        lambda: verdict("stu-a1", at_vendor=still_there("stu-a1", version=3, delivered_version=2)),
        Verdict.WAITING,
    ),
    ReasonCode.ERASURE_REQUEST: (
        lambda: verdict("stu-a1", suppression="erasure", at_vendor=still_there("stu-a1", present=False)),
        Verdict.ERASED,
    ),
    ReasonCode.OBJECTION: (lambda: verdict("stu-a1", suppression="objection"), Verdict.ERASED),
}


def test_every_reason_code_has_a_case():
    assert set(CASES) == set(ReasonCode)


@pytest.mark.parametrize("code", list(ReasonCode), ids=str)
def test_each_reason_comes_with_its_verdict(code: ReasonCode):
    case, expected = CASES[code]
    given = case()
    assert code in [r.code for r in given.reasons], given
    assert given.verdict is expected, given


def test_a_reason_names_the_rule_with_its_parameters_never_a_personal_datum():
    """The unit by its name and code, the role, the year; no name, login or address of the person."""
    unit = verdict("stu-b1", sub=subscription(school_unit_codes={CODE_A}))
    [reason] = unit.reasons[:1]
    assert (reason.code, reason.params) == (
        ReasonCode.UNIT_NOT_CHOSEN,
        {"relation": "enrolment", "role": "student", "unit": "Skola su-b", "unit_code": CODE_B},
    )
    year = verdict("stu-a2", sub=subscription(school_years={3}))
    assert year.reasons[0].params["school_year"] == 5
    role = verdict("tea-a", sub=subscription(roles={Role.STUDENT}))
    assert role.reasons[0].params["role"] == "teacher"
    status = verdict(
        "stu-a1", st=state(replace=[person("stu-a1", enrolment("su-a"), person_status=PersonStatus.AVLIDEN)])
    )
    assert status.reasons[0].params == {"person_status": "Avliden"}
    everything = " ".join(repr(r.params) for code in ReasonCode for r in CASES[code][0]().reasons if r.params)
    for personal in ("@", "Förnamn", "Efternamn"):
        assert personal not in everything


def test_a_selected_person_is_named_with_their_roles_and_school_units():
    given = verdict("stu-ab", sub=subscription(**LIVE), at_vendor=delivered("stu-ab", sub=subscription(**LIVE)))
    assert given.verdict is Verdict.DELIVERED
    assert given.reasons == [given.reasons[0]]  # live: no test-mode note
    assert given.reasons[0].params == {"roles": ["student"], "units": ["Skola su-a", "Skola su-b"]}
    assert given.vendor_entity_id == eid("stu-ab")


def test_a_pseudonymised_person_is_known_to_the_vendor_by_the_pseudonym():
    sub = subscription(protected_identity_policy=ProtectedIdentityPolicy.PSEUDONYMISE)
    given = verdict("prot-a", sub=sub, at_vendor=delivered("prot-a", sub=sub))
    assert given.vendor_entity_id == pseudonym_id(TENANT, VENDOR, eid("prot-a"))


def test_a_duty_above_school_units_that_reaches_no_chosen_unit_names_each_unit_beneath():
    """A rektor at a Skola above two units: with neither chosen, both are named."""
    skola = Organisation(key="skola-1", display_name="Skolan", organisation_type=OrganisationType.SKOLA, parent="org-1")
    beneath = [
        school_unit(key, code, SchoolType.GR).model_copy(update={"organisation": "skola-1"})
        for key, code in (("su-c", "44444444"), ("su-d", "55555555"))
    ]
    current = state(replace=[duty("d-rektor-a", "rektor-a", "skola-1", DutyRole.REKTOR)], add=[skola, *beneath])
    given = verdict("rektor-a", st=current, sub=subscription(school_unit_codes={CODE_A}, **LIVE))
    assert given.verdict is Verdict.NOT_SELECTED
    assert {(r.code, r.params["unit_code"]) for r in given.reasons} == {
        (ReasonCode.UNIT_NOT_CHOSEN, "44444444"),
        (ReasonCode.UNIT_NOT_CHOSEN, "55555555"),
    }
    chosen = verdict("rektor-a", st=current, sub=subscription(school_unit_codes={"55555555"}))
    selected = next(r for r in chosen.reasons if r.code is ReasonCode.SELECTED)
    assert selected.params == {"roles": ["other_staff"], "units": ["Skola su-d"]}


SUBSCRIPTIONS = [
    subscription(),
    subscription(school_unit_codes={CODE_A}),
    subscription(school_unit_codes={CODE_B}, roles={Role.STUDENT}),
    subscription(school_types={SchoolType.GY}),
    subscription(school_years={3, 9}),
    subscription(roles={Role.TEACHER, Role.OTHER_STAFF}),
    subscription(protected_identity_policy=ProtectedIdentityPolicy.PSEUDONYMISE),
    subscription(include_persons={str(eid("stu-old"))}, exclude_persons={str(eid("stu-a1"))}),
    subscription(group_types={GroupType.KLASS}, placements=True),
]


@pytest.mark.parametrize("sub", SUBSCRIPTIONS, ids=[f"subscription-{i}" for i in range(len(SUBSCRIPTIONS))])
@pytest.mark.parametrize("single", [False, True])
def test_the_explanation_never_disagrees_with_the_projection(sub: Any, single: bool):
    extra = [
        person("child-1"),
        Placement(key="pl-1", child="child-1", school_unit="su-a", school_type=SchoolType.FS, start_date=TERM_START),
        person("stu-noyear", Enrolment(school_unit="su-b", school_type=SchoolType.GR, start_date=TERM_START)),
    ]
    current = state(add=extra)
    prof = profile(
        single_school_unit_per_user=single,
        accepted_fields={EntityKind.PERSON: OPTIONAL_FIELDS[EntityKind.PERSON]},
    )
    delivered_ids = {
        r.source_entity_id or r.id for r in project(current, sub, prof, TODAY).values() if r.kind is EntityKind.PERSON
    }
    persons = [s for s in current.entities if s.kind is EntityKind.PERSON]
    for stored_person in persons:
        selection = select_person(current, sub, prof, TODAY, stored_person.id)
        assert selection is not None
        assert selection.selected == (stored_person.id in delivered_ids), (stored_person.entity.key, selection)
        if not selection.selected and selection.outcome is PersonOutcome.NO_RELATION:
            relations = len(getattr(stored_person.entity, "enrolments", []))
            assert selection.skipped or not relations, stored_person.entity.key


def test_an_unknown_person_has_no_selection():
    assert select_person(state(), subscription(), profile(), TODAY, UUID(int=7)) is None


def test_security_markings_name_the_marking():
    given = verdict("prot-t")
    assert (given.verdict, given.reasons[0].params) == (
        Verdict.WITHHELD,
        {"security_marking": SecurityMarking.SEKRETESSMARKERING.value},
    )
