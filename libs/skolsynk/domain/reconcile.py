"""Reconcile: the checks that need the organiser's whole state (duplicates, references to unknown
entities, persons without an active relation, conflicting roles). Returns a cleaned state for the
projections, the set of withheld entity ids (whose vendor copies are left as they are), and findings.

Pure: the normaliser runs it before every projection, the admin service before a subscription preview,
so both see the same selection.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import date
from typing import Any
from uuid import UUID

from skolsynk.domain.organisation_tree import SCHOOL_UNIT_LEVEL, OrganisationTree
from skolsynk.domain.quality import Finding, FindingCode, joined
from skolsynk.domain.selection import StoredEntity, TenantState
from skolsynk.domain.ss12000 import Activity, Duty, Entity, EntityKind, Group, Person, Placement, SchoolUnit
from skolsynk.domain.subscription import MissingMarkingPolicy


def reconcile(
    tenant_id: str,
    entities: Iterable[StoredEntity],
    today: date,
    *,
    missing_marking: MissingMarkingPolicy = MissingMarkingPolicy.PROTECTED,
) -> tuple[TenantState, list[Finding]]:
    """Cross-record checks over the organiser's whole state; the state carries the organiser's
    ``missing_marking`` setting to the selection."""
    findings: list[Finding] = []
    by_kind: dict[EntityKind, list[StoredEntity]] = defaultdict(list)
    for stored in sorted(entities, key=lambda s: (s.source_id, s.entity.key)):
        by_kind[stored.kind].append(stored)
    withheld: set[UUID] = set()
    replaced: dict[UUID, Entity] = {}

    def finding(code: FindingCode, stored: StoredEntity, **values: Any) -> None:
        findings.append(
            Finding.of(
                code,
                tenant_id=tenant_id,
                source_id=stored.source_id,
                origin="reconcile",
                entity_kind=stored.kind,
                entity_id=stored.id,
                source_key=stored.entity.key,
                **values,
            )
        )

    # School units: one per code. The first holder of a code is the duplicate's other party.
    units: dict[tuple[str, str], SchoolUnit] = {}
    withheld_units: set[tuple[str, str]] = set()
    seen_codes: dict[str, UUID] = {}
    for stored in by_kind[EntityKind.SCHOOL_UNIT]:
        unit = stored.entity
        assert isinstance(unit, SchoolUnit)
        if unit.school_unit_code in seen_codes:
            withheld.add(stored.id)
            withheld_units.add((stored.source_id, unit.key))
            finding(
                FindingCode.SCHOOL_UNIT_CODE_DUPLICATE,
                stored,
                school_unit_code=unit.school_unit_code,
                value=unit.school_unit_code,
                other_entity_id=seen_codes[unit.school_unit_code],
            )
            continue
        seen_codes[unit.school_unit_code] = stored.id
        units[(stored.source_id, unit.key)] = unit

    def code_of(source_id: str, key: str) -> str | None:
        unit = units.get((source_id, key))
        return unit.school_unit_code if unit else None

    # The organisation tree (withheld school units included: what resolves to one is withheld with it).
    tree = OrganisationTree(
        (s.source_id, s.entity) for kind in (EntityKind.ORGANISATION, EntityKind.SCHOOL_UNIT) for s in by_kind[kind]
    )

    def above_units(source_id: str, key: str) -> bool:
        """Whether ``key`` is an organisation above school units (not a school unit, not unknown)."""
        return tree.level(source_id, key) not in (None, SCHOOL_UNIT_LEVEL)

    def unresolved(source_id: str, key: str, field: str) -> str:
        count = len(tree.units_beneath(source_id, key))
        beneath = "no school unit" if count == 0 else f"{count} school units"
        return f"{field} is an organisation of type {tree.level(source_id, key)} with {beneath} beneath it"

    def one_unit_or_withhold(stored: StoredEntity, key: str, code: FindingCode, field: str) -> str | None:
        """The school unit a group or activity at ``key`` belongs to: ``key`` itself unless it is an
        organisation above school units, then the only school unit beneath it; None (withheld, a
        finding naming the level) when there are none or several."""
        if not above_units(stored.source_id, key):
            return key
        unit_key = tree.resolve_one(stored.source_id, key)
        if unit_key is None:
            withheld.add(stored.id)
            finding(code, stored, field=field, detail=unresolved(stored.source_id, key, field), value=key)
        return unit_key

    def unit_code_or_withhold(stored: StoredEntity, unit_key: str, unknown: FindingCode) -> str | None:
        """The code of the school unit ``stored`` belongs to; None (and ``stored`` withheld) when the
        unit is unknown (a finding) or itself withheld (no finding: the unit's own explains it)."""
        unit_code = code_of(stored.source_id, unit_key)
        if unit_code is None:
            withheld.add(stored.id)
            if (stored.source_id, unit_key) not in withheld_units:
                finding(unknown, stored, value=unit_key)
        return unit_code

    def at_one_unit(
        stored: StoredEntity, unresolved: FindingCode, unknown: FindingCode, field: str
    ) -> tuple[Any, str] | None:
        """A group, activity or placement at its one school unit (resolved from a level above, recorded in
        ``replaced``) and that unit's code; None when it is withheld (with a finding, see above)."""
        entity: Any = stored.entity
        unit_key = one_unit_or_withhold(stored, entity.school_unit, unresolved, field)
        if unit_key is None:
            return None
        unit_code = unit_code_or_withhold(stored, unit_key, unknown)
        if unit_code is None:
            return None
        if unit_key != entity.school_unit:
            entity = replaced[stored.id] = entity.model_copy(update={"school_unit": unit_key})
        return entity, unit_code

    # Persons: unique logins, unique e-mail addresses, enrolments at known units. Who has a login or an
    # address first keeps it, and is the other party of the duplicate's finding.
    persons: dict[tuple[str, str], Person] = {}
    known_persons = {(s.source_id, s.entity.key) for s in by_kind[EntityKind.PERSON]}
    eppns: dict[str, UUID] = {}
    emails: dict[str, UUID] = {}
    for stored in by_kind[EntityKind.PERSON]:
        person = stored.entity
        assert isinstance(person, Person)
        # Enrolments at an organisation above school units resolve to the only school unit beneath it.
        enrolments = []
        for enrolment in person.enrolments:
            if not above_units(stored.source_id, enrolment.school_unit):
                enrolments.append(enrolment)
            elif (unit_key := tree.resolve_one(stored.source_id, enrolment.school_unit)) is not None:
                enrolments.append(enrolment.model_copy(update={"school_unit": unit_key}))
            else:
                detail = unresolved(stored.source_id, enrolment.school_unit, "enroledAt")
                finding(
                    FindingCode.ENROLMENT_UNRESOLVED_ORGANISATION,
                    stored,
                    field="enrolments",
                    detail=detail,
                    value=enrolment.school_unit,
                )
        unit_code = next((code_of(stored.source_id, e.school_unit) for e in enrolments), None)
        taken = next((e for e in person.eppn if e.lower() in eppns), None)
        if taken is not None:
            withheld.add(stored.id)
            finding(
                FindingCode.EPPN_DUPLICATE,
                stored,
                school_unit_code=unit_code,
                field="eppn",
                value=taken,
                other_entity_id=eppns[taken.lower()],
            )
            continue
        eppns.update((e.lower(), stored.id) for e in person.eppn if e.lower() not in eppns)
        if not person.eppn:
            finding(FindingCode.EPPN_MISSING, stored, school_unit_code=unit_code, field="eppn")
        kept_emails = []
        for email in person.emails:
            if email.value in emails:
                finding(
                    FindingCode.EMAIL_DUPLICATE,
                    stored,
                    school_unit_code=unit_code,
                    field="emails",
                    value=email.value,
                    other_entity_id=emails[email.value],
                )
            else:
                emails[email.value] = stored.id
                kept_emails.append(email)
        if not kept_emails:
            finding(FindingCode.EMAIL_MISSING, stored, school_unit_code=unit_code, field="emails")
        if any((stored.source_id, e.school_unit) in withheld_units for e in enrolments):
            withheld.add(stored.id)  # depends on a withheld school unit: the vendor keeps what it has
            continue
        kept_enrolments = []
        for enrolment in enrolments:
            if (stored.source_id, enrolment.school_unit) in units:
                kept_enrolments.append(enrolment)
            else:
                finding(
                    FindingCode.ENROLMENT_UNKNOWN_SCHOOL_UNIT, stored, field="enrolments", value=enrolment.school_unit
                )
        if len(kept_emails) != len(person.emails) or kept_enrolments != list(person.enrolments):
            person = person.model_copy(update={"emails": kept_emails, "enrolments": kept_enrolments})
            replaced[stored.id] = person
        persons[(stored.source_id, person.key)] = person

    # Duties: known unit (or an organisation with school units beneath it) and person.
    active_duty_units: dict[tuple[str, str], str | None] = {}
    for stored in by_kind[EntityKind.DUTY]:
        duty = stored.entity
        assert isinstance(duty, Duty)
        if above_units(stored.source_id, duty.school_unit):
            beneath = tree.units_beneath(stored.source_id, duty.school_unit)
            if not beneath:
                withheld.add(stored.id)
                detail = unresolved(stored.source_id, duty.school_unit, "dutyAt")
                finding(
                    FindingCode.DUTY_UNRESOLVED_ORGANISATION,
                    stored,
                    field="dutyAt",
                    detail=detail,
                    value=duty.school_unit,
                )
                continue
            # Every unit beneath withheld: so is the duty (no finding: the units' own explain it).
            unit_code = next((c for u in beneath if (c := code_of(stored.source_id, u))), None)
            if unit_code is None:
                withheld.add(stored.id)
                continue
        else:
            unit_code = unit_code_or_withhold(stored, duty.school_unit, FindingCode.DUTY_UNKNOWN_SCHOOL_UNIT)
            if unit_code is None:
                continue
        if (stored.source_id, duty.person) not in known_persons:
            withheld.add(stored.id)
            finding(FindingCode.DUTY_UNKNOWN_PERSON, stored, school_unit_code=unit_code, value=duty.person)
        elif duty.active_on(today):
            active_duty_units[(stored.source_id, duty.person)] = unit_code

    for stored in by_kind[EntityKind.PERSON]:
        if stored.id in withheld:
            continue
        person = replaced.get(stored.id, stored.entity)
        assert isinstance(person, Person)
        enrolled = [e for e in person.enrolments if e.active_on(today)]
        employed = (stored.source_id, person.key) in active_duty_units
        unit_code = (
            code_of(stored.source_id, enrolled[0].school_unit)
            if enrolled
            else active_duty_units.get((stored.source_id, person.key))
        )
        if not enrolled and not employed:
            finding(FindingCode.PERSON_NO_ACTIVE_RELATION, stored)
        elif enrolled and employed:
            finding(FindingCode.PERSON_CONFLICTING_ROLES, stored, school_unit_code=unit_code)

    # Groups and activities: known unit, known members and references.
    groups: set[tuple[str, str]] = set()
    for stored in by_kind[EntityKind.GROUP]:
        placed = at_one_unit(
            stored, FindingCode.GROUP_UNRESOLVED_ORGANISATION, FindingCode.GROUP_UNKNOWN_SCHOOL_UNIT, "organisation"
        )
        if placed is None:
            continue
        group, unit_code = placed
        assert isinstance(group, Group)
        groups.add((stored.source_id, group.key))
        members = [m for m in group.memberships if (stored.source_id, m.person) in known_persons]
        if len(members) != len(group.memberships):
            finding(
                FindingCode.GROUP_UNKNOWN_MEMBER,
                stored,
                school_unit_code=unit_code,
                field="memberships",
                detail=f"{len(group.memberships) - len(members)} membership(s) dropped",
                value=joined(m.person for m in group.memberships if m not in members),
            )
            replaced[stored.id] = group.model_copy(update={"memberships": members})
    # Duties' tasks towards groups (mentors ...): a task towards a group that is unknown or withheld goes.
    for stored in by_kind[EntityKind.DUTY]:
        duty = replaced.get(stored.id, stored.entity)
        assert isinstance(duty, Duty)
        if stored.id in withheld or not duty.assignment_roles:
            continue
        tasks = [r for r in duty.assignment_roles if (stored.source_id, r.group) in groups]
        if len(tasks) != len(duty.assignment_roles):
            finding(
                FindingCode.DUTY_UNKNOWN_GROUP,
                stored,
                school_unit_code=code_of(stored.source_id, duty.school_unit),
                field="assignmentRole",
                detail=f"{len(duty.assignment_roles) - len(tasks)} task(s) dropped",
                value=joined(r.group for r in duty.assignment_roles if r not in tasks),
            )
            replaced[stored.id] = duty.model_copy(update={"assignment_roles": tasks})
    # Placements (förskola, fritidshem): a known child at a known school unit (or the only one beneath). Its
    # group (the avdelning) is passed on as a reference, as a membership's person is.
    for stored in by_kind[EntityKind.PLACEMENT]:
        placed = at_one_unit(
            stored, FindingCode.PLACEMENT_UNRESOLVED_ORGANISATION, FindingCode.PLACEMENT_UNKNOWN_SCHOOL_UNIT, "placedAt"
        )
        if placed is None:
            continue
        placement, unit_code = placed
        assert isinstance(placement, Placement)
        if (stored.source_id, placement.child) not in known_persons:
            withheld.add(stored.id)
            finding(
                FindingCode.PLACEMENT_UNKNOWN_CHILD,
                stored,
                school_unit_code=unit_code,
                field="child",
                value=placement.child,
            )

    duties = {(s.source_id, s.entity.key) for s in by_kind[EntityKind.DUTY] if s.id not in withheld}
    syllabuses = {(s.source_id, s.entity.key) for s in by_kind[EntityKind.SYLLABUS]}
    for stored in by_kind[EntityKind.ACTIVITY]:
        placed = at_one_unit(
            stored,
            FindingCode.ACTIVITY_UNRESOLVED_ORGANISATION,
            FindingCode.ACTIVITY_UNKNOWN_SCHOOL_UNIT,
            "organisation",
        )
        if placed is None:
            continue
        activity, unit_code = placed
        assert isinstance(activity, Activity)
        kept_groups = [g for g in activity.groups if (stored.source_id, g) in groups]
        kept_teachers = [t for t in activity.teachers if (stored.source_id, t) in duties]
        syllabus = activity.syllabus if (stored.source_id, activity.syllabus) in syllabuses else None
        if (
            len(kept_groups) != len(activity.groups)
            or len(kept_teachers) != len(activity.teachers)
            or syllabus != activity.syllabus
        ):
            unknown = [
                *(g for g in activity.groups if g not in kept_groups),
                *(t for t in activity.teachers if t not in kept_teachers),
                *([activity.syllabus] if activity.syllabus and syllabus is None else []),
            ]
            finding(FindingCode.ACTIVITY_UNKNOWN_REFERENCE, stored, school_unit_code=unit_code, value=joined(unknown))
            replaced[stored.id] = activity.model_copy(
                update={
                    "groups": kept_groups,
                    "teachers": kept_teachers,
                    "teacher_assignments": [a for a in activity.teacher_assignments if a.duty in kept_teachers],
                    "syllabus": syllabus,
                }
            )

    cleaned = [
        StoredEntity(s.id, s.source_id, replaced.get(s.id, s.entity))
        for kind in by_kind.values()
        for s in kind
        if s.id not in withheld
    ]
    state = TenantState(tenant_id=tenant_id, entities=cleaned, withheld=withheld, missing_marking=missing_marking)
    return state, findings


def missing_marking_summary(
    tenant_id: str, counts: dict[str, tuple[int, int]], policy: MissingMarkingPolicy
) -> list[Finding]:
    """One ``security_marking.missing`` finding per source with persons whose securityMarking the source
    did not give: ``counts`` is source id -> (persons without a marking, persons). A summary, not a
    finding per person: a source that withholds the field (an attribute scope, an EGIL client's template)
    withholds it for everyone."""
    treated = (
        "treated as protected identities (the organiser's setting)"
        if policy.unknown_is_protected
        else "treated as not protected (the organiser's setting)"
    )
    return [
        Finding.of(
            FindingCode.SECURITY_MARKING_MISSING,
            tenant_id=tenant_id,
            source_id=source_id,
            origin="summary",
            entity_kind=EntityKind.PERSON,
            field="security_marking",
            detail=f"{missing} of {persons} persons have no securityMarking; {treated}",
        )
        for source_id, (missing, persons) in sorted(counts.items())
        if missing
    ]


def school_unit_codes_by_entity(state: TenantState) -> dict[str, str]:
    """entity id -> the school-unit code it belongs to (a person: their first enrolment's unit, else
    their first duty's; duties, groups and activities: their unit, for a duty at an organisation above
    school units the first unit beneath it by code; a unit: itself), for placing findings in the
    per-school-unit report."""
    codes: dict[tuple[str, str], str] = {}
    tree = state.tree
    for stored in state.entities:
        if isinstance(stored.entity, SchoolUnit):
            codes[(stored.source_id, stored.entity.key)] = stored.entity.school_unit_code
    placed: dict[str, str] = {}
    duty_units: dict[tuple[str, str], str] = {}
    for stored in state.entities:
        entity = stored.entity
        code: str | None = None
        if isinstance(entity, SchoolUnit):
            code = entity.school_unit_code
        elif isinstance(entity, Duty):
            beneath = tree.units_beneath(stored.source_id, entity.school_unit)
            code = next((c for u in beneath if (c := codes.get((stored.source_id, u)))), None)
            if code is not None:
                duty_units.setdefault((stored.source_id, entity.person), code)
        elif isinstance(entity, Group | Activity):
            code = codes.get((stored.source_id, entity.school_unit))
        elif isinstance(entity, Person):
            code = next((c for e in entity.enrolments if (c := codes.get((stored.source_id, e.school_unit)))), None)
        if code is not None:
            placed[str(stored.id)] = code
    for stored in state.entities:
        if isinstance(stored.entity, Person) and str(stored.id) not in placed:
            code = duty_units.get((stored.source_id, stored.entity.key))
            if code is not None:
                placed[str(stored.id)] = code
    return placed
