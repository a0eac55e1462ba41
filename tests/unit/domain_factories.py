"""A tiny organiser in memory, for the domain and normaliser unit tests.

Two active school units (``11111111`` with grundskola, ``22222222`` with grundskola and gymnasium)
and one that closed last year (``33333333``); an organisation and a school-unit group the units refer
to; students, teachers, other staff and two protected persons; a Klass and an Undervisning group at
each active unit; activities with teacher duties. Every id is :func:`entity_id` of the entity's key,
so tests can name anything by key (:func:`eid`).

The day of every test is :data:`TODAY` unless it says otherwise.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date
from typing import Any
from uuid import UUID

from skolsynk.contracts.source import SourceRecord
from skolsynk.domain.ids import entity_id
from skolsynk.domain.selection import ProjectedResource, StoredEntity, TenantState
from skolsynk.domain.ss12000 import (
    Activity,
    Duty,
    DutyRole,
    Email,
    EmailType,
    Enrolment,
    Entity,
    EntityKind,
    Group,
    GroupType,
    Membership,
    Organisation,
    Person,
    SchoolType,
    SchoolUnit,
    SchoolUnitGroup,
    SecurityMarking,
)
from skolsynk.domain.subscription import VendorProfile, VendorSubscription

TENANT = "kommun-a"
SOURCE = "egil-main"
VENDOR = "laromedel-ab"
TODAY = date(2024, 10, 1)
TERM_START = date(2024, 8, 15)
LAST_TERM_END = date(2024, 6, 14)

CODE_A = "11111111"
CODE_B = "22222222"
CODE_OLD = "33333333"


def eid(key: str, kind: EntityKind = EntityKind.PERSON, *, tenant: str = TENANT, source: str = SOURCE) -> UUID:
    """The stable id of the entity with ``key`` in the fixture organiser."""
    return entity_id(tenant, source, kind, key)


def stored(entity: Entity, *, tenant: str = TENANT, source: str = SOURCE) -> StoredEntity:
    return StoredEntity(entity_id(tenant, source, entity.kind, entity.key), source, entity)


# --- entities ------------------------------------------------------------------------------------


def organisation() -> Organisation:
    return Organisation(
        key="org-1",
        display_name="Exempelstads kommun",
        organisation_number="212000-0000",
        municipality_code="0180",
    )


def school_unit_group() -> SchoolUnitGroup:
    return SchoolUnitGroup(key="sug-1", display_name="Grundskolor norr")


def school_unit(key: str, code: str, *types: SchoolType, **extra: Any) -> SchoolUnit:
    return SchoolUnit(
        key=key,
        display_name=f"Skola {key}",
        school_unit_code=code,
        school_types=list(types),
        municipality_code="0180",
        organisation="org-1",
        **extra,
    )


def enrolment(unit: str, school_type: SchoolType = SchoolType.GR, year: int | None = 3, **extra: Any) -> Enrolment:
    return Enrolment(school_unit=unit, school_type=school_type, school_year=year, start_date=TERM_START, **extra)


def person(key: str, *enrolments: Enrolment, **extra: Any) -> Person:
    values: dict[str, Any] = {
        "key": key,
        "given_name": f"Förnamn-{key}",
        "family_name": f"Efternamn-{key}",
        "eppn": [f"{key}@kommun-a.se"],
        "emails": [Email(value=f"{key}@skola.kommun-a.se", type=EmailType.SKOLA_ELEV)],
        # The fixture's sources say every person's marking: a missing one is unknown (security_marking=None).
        "security_marking": SecurityMarking.INGEN,
        "enrolments": list(enrolments),
    }
    values.update(extra)
    return Person(**values)


def duty(key: str, person_key: str, unit: str, role: DutyRole = DutyRole.LARARE, **extra: Any) -> Duty:
    return Duty(key=key, person=person_key, school_unit=unit, role=role, start_date=TERM_START, **extra)


def group(key: str, unit: str, group_type: GroupType, *members: str | Membership, **extra: Any) -> Group:
    memberships = [m if isinstance(m, Membership) else Membership(person=m) for m in members]
    return Group(
        key=key,
        display_name=f"Grupp {key}",
        group_type=group_type,
        school_unit=unit,
        memberships=memberships,
        **extra,
    )


def activity(key: str, unit: str, groups: Iterable[str], teachers: Iterable[str]) -> Activity:
    return Activity(
        key=key, display_name=f"Aktivitet {key}", school_unit=unit, groups=list(groups), teachers=list(teachers)
    )


#: Persons of the fixture by what they are, for expectations.
STUDENTS_A = ("stu-a1", "stu-a2", "stu-ab")  # active students at 11111111 (stu-ab also at 22222222)
STUDENTS_B = ("stu-b1", "stu-b2", "stu-ab")  # active students at 22222222
TEACHERS_A = ("tea-a",)
TEACHERS_B = ("tea-b",)
OTHER_STAFF_A = ("rektor-a",)
PROTECTED = ("prot-a", "prot-t")  # a protected student and a protected teacher, both at 11111111
NEVER_SELECTED = ("stu-cancelled", "stu-ended", "stu-old", "stu-future")


def entities() -> list[Entity]:
    """The organiser's canonical state (a fresh list every call; the entities are immutable)."""
    return [
        organisation(),
        school_unit_group(),
        school_unit("su-a", CODE_A, SchoolType.GR, school_unit_group="sug-1"),
        school_unit("su-b", CODE_B, SchoolType.GR, SchoolType.GY),
        school_unit("su-old", CODE_OLD, SchoolType.GR, end_date=LAST_TERM_END),
        # students
        person(
            "stu-a1",
            enrolment("su-a", year=3),
            civic_no="201501012384",
            birth_date=date(2015, 1, 1),
            middle_name="Mellan",
        ),
        person("stu-a2", enrolment("su-a", year=5)),
        person("stu-ab", enrolment("su-a", year=6), enrolment("su-b", year=6)),
        person("stu-b1", enrolment("su-b", SchoolType.GY, year=1, programme_code="NA")),
        person("stu-b2", enrolment("su-b", SchoolType.GR, year=9)),
        person("stu-cancelled", enrolment("su-a", cancelled=True)),
        person("stu-ended", Enrolment(school_unit="su-a", school_type=SchoolType.GR, end_date=LAST_TERM_END)),
        person("stu-future", Enrolment(school_unit="su-a", school_type=SchoolType.GR, start_date=date(2025, 1, 8))),
        person("stu-old", Enrolment(school_unit="su-old", school_type=SchoolType.GR, school_year=3)),
        person(
            "prot-a",
            enrolment("su-a", year=3),
            security_marking=SecurityMarking.SKYDDAD_FOLKBOKFORING,
            eppn=["prot-a@kommun-a.se", "prot-a.alt@kommun-a.se"],
            civic_no="201502022385",
        ),
        # staff
        person("tea-a"),
        person("tea-b"),
        person("rektor-a"),
        person("prot-t", security_marking=SecurityMarking.SEKRETESSMARKERING),
        duty("d-tea-a", "tea-a", "su-a", DutyRole.LARARE, signature="TA"),
        duty("d-tea-b", "tea-b", "su-b", DutyRole.FORSTELARARE, signature="TB"),
        duty("d-rektor-a", "rektor-a", "su-a", DutyRole.REKTOR),
        duty("d-prot-t", "prot-t", "su-a", DutyRole.LARARE, signature="PT"),
        # groups
        group(
            "klass-3a",
            "su-a",
            GroupType.KLASS,
            "stu-a1",
            "prot-a",
            "stu-ab",
            Membership(person="stu-a2", end_date=LAST_TERM_END),  # left last term
            "stu-cancelled",  # not selected: cancelled enrolment
            school_type=SchoolType.GR,
        ),
        group("ma-3a", "su-a", GroupType.UNDERVISNING, "stu-a1", "prot-a", "tea-a", school_type=SchoolType.GR),
        group("klass-b", "su-b", GroupType.KLASS, "stu-b1", "stu-b2", "stu-ab"),
        group("mentor-b", "su-b", GroupType.MENTOR, "stu-b1", "tea-b"),
        group("klass-old", "su-old", GroupType.KLASS, "stu-old"),
        # activities
        activity("act-ma-3a", "su-a", ["ma-3a"], ["d-tea-a", "d-prot-t", "d-rektor-a"]),
        activity("act-klass-3a", "su-a", ["klass-3a"], ["d-tea-a"]),
        activity("act-b", "su-b", ["klass-b", "mentor-b"], ["d-tea-b"]),
        activity("act-old", "su-old", ["klass-old"], []),
    ]


def state(
    *,
    replace: Iterable[Entity] = (),
    add: Iterable[Entity] = (),
    drop: Iterable[str] = (),
    base: Iterable[Entity] | None = None,
) -> TenantState:
    """The fixture organiser's state, with entities replaced (same kind and key), added or dropped (by key)."""
    replacements = {(e.kind, e.key): e for e in replace}
    dropped = set(drop)
    chosen = [replacements.pop((e.kind, e.key), e) for e in (entities() if base is None else base)]
    assert not replacements, f"nothing to replace for {sorted(replacements)}"
    chosen = [e for e in chosen if e.key not in dropped] + list(add)
    return TenantState(TENANT, [stored(e) for e in chosen])


def entity_by_key(key: str) -> Entity:
    return next(e for e in entities() if e.key == key)


def subscription(**overrides: Any) -> VendorSubscription:
    values: dict[str, Any] = {"tenant_id": TENANT, "vendor_id": VENDOR, "school_unit_codes": {CODE_A, CODE_B}}
    values.update(overrides)
    return VendorSubscription(**values)


def profile(**overrides: Any) -> VendorProfile:
    values: dict[str, Any] = {"vendor_id": VENDOR}
    values.update(overrides)
    return VendorProfile(**values)


# --- reading projections -------------------------------------------------------------------------


def of_kind(resources: dict[UUID, ProjectedResource], kind: EntityKind) -> dict[UUID, ProjectedResource]:
    return {rid: r for rid, r in resources.items() if r.kind is kind}


def keys_of(resources: dict[UUID, ProjectedResource], kind: EntityKind, *, extra: Iterable[Entity] = ()) -> set[str]:
    """The keys of the projected entities of ``kind``: fixture entities and ``extra`` ones by key, any other
    id (a pseudonym) as ``"?<id>"`` so that it still shows in a comparison."""
    by_id = {eid(e.key, e.kind): e.key for e in [*entities(), *extra] if e.kind is kind}
    return {by_id.get(rid, f"?{rid}") for rid in of_kind(resources, kind)}


def person_keys(resources: dict[UUID, ProjectedResource], *, extra: Iterable[Entity] = ()) -> set[str]:
    """The keys of the projected persons sent under their own id (pseudonymised persons are left out)."""
    return {k for k in keys_of(resources, EntityKind.PERSON, extra=extra) if not k.startswith("?")}


# --- source records (ingest) ---------------------------------------------------------------------


def record(kind: EntityKind, key: str, **data: Any) -> SourceRecord:
    return SourceRecord(kind=kind, key=key, data=data)


def person_record(key: str = "p-1", **data: Any) -> SourceRecord:
    values: dict[str, Any] = {
        "given_name": "Ingrid",
        "family_name": "Lindqvist",
        "eppn": ["ingrid.lindqvist@kommun-a.se"],
        "emails": [{"value": "ingrid.lindqvist@skola.kommun-a.se", "type": "Skola elev"}],
        "civic_no": "20150101-2384",
        "security_marking": "Ingen",
        "enrolments": [{"school_unit": "su-a", "school_type": "GR", "school_year": 3, "start_date": "2024-08-15"}],
    }
    values.update(data)
    return record(EntityKind.PERSON, key, **{k: v for k, v in values.items() if v is not ...})
