"""Validation: one record at a time when it arrives (ingest), and across the organiser's whole state
before every projection (reconcile). Both produce findings; neither ever drops a record silently.

Ingest drops bad values (invalid e-mail addresses, unknown school types, sub-items with inverted
dates) with a warning, and withholds a record that still does not fit the model (error). Reconcile
checks what needs the whole picture: duplicates, references to unknown entities, persons without an
active relation, conflicting roles; it returns a cleaned state for the projections and the set of
withheld entity ids, whose vendor copies are left as they are.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import date
from typing import Any
from uuid import UUID

from pydantic import ValidationError

from skolsynk.contracts.source import SourceRecord
from skolsynk.domain.ids import entity_id
from skolsynk.domain.quality import Finding, FindingCode
from skolsynk.domain.selection import StoredEntity, TenantState
from skolsynk.domain.ss12000 import (
    ENTITY_MODELS,
    LEGACY_SCHOOL_TYPES,
    SCHOOL_UNIT_CODE,
    Activity,
    Duty,
    Email,
    Enrolment,
    Entity,
    EntityKind,
    Group,
    Membership,
    Person,
    SchoolType,
    SchoolUnit,
)


def _first_error(error: ValidationError) -> tuple[str, str]:
    first = error.errors()[0]
    location = ".".join(str(part) for part in first.get("loc", ())) or "(record)"
    return location, f"{first.get('type', 'invalid')}: {first.get('msg', '')}"[:200]


def _is_date_order_error(error: ValidationError) -> bool:
    return any("start_date is after end_date" in str(e.get("msg", "")) for e in error.errors())


class RecordValidator:
    """Validates the records of one run of one source."""

    def __init__(self, tenant_id: str, source_id: str, run_id: UUID) -> None:
        self.tenant_id = tenant_id
        self.source_id = source_id
        self.run_id = run_id

    def _finding(self, code: FindingCode, record: SourceRecord, **values: Any) -> Finding:
        return Finding.of(
            code,
            tenant_id=self.tenant_id,
            source_id=self.source_id,
            run_id=self.run_id,
            origin="ingest",
            entity_kind=record.kind,
            entity_id=entity_id(self.tenant_id, self.source_id, record.kind, record.key),
            source_key=record.key,
            **values,
        )

    def validate(self, record: SourceRecord) -> tuple[Entity | None, list[Finding]]:
        """The canonical entity (None when withheld) and what was found on the way."""
        findings: list[Finding] = []
        data = {**record.data, "key": record.key, "kind": record.kind.value}
        if record.kind is EntityKind.PERSON:
            data["emails"] = self._clean_items(record, data.get("emails"), Email, "emails", findings)
            data["enrolments"] = self._clean_items(record, data.get("enrolments"), Enrolment, "enrolments", findings)
        elif record.kind is EntityKind.GROUP:
            data["memberships"] = self._clean_items(
                record, data.get("memberships"), Membership, "memberships", findings
            )
            if data.get("school_type") is not None and not _known_school_type(data["school_type"]):
                findings.append(self._finding(FindingCode.VALUE_UNKNOWN, record, field="school_type"))
                data["school_type"] = None
        elif record.kind is EntityKind.SCHOOL_UNIT:
            code = data.get("school_unit_code")
            if isinstance(code, str):
                code = data["school_unit_code"] = code.strip()
            if not code:
                return None, [*findings, self._finding(FindingCode.SCHOOL_UNIT_CODE_MISSING, record)]
            if not isinstance(code, str) or not SCHOOL_UNIT_CODE.match(code):
                return None, [*findings, self._finding(FindingCode.SCHOOL_UNIT_CODE_MALFORMED, record)]
            types = data.get("school_types") or []
            known = [t for t in types if _known_school_type(t)]
            if len(known) != len(types):
                findings.append(self._finding(FindingCode.VALUE_UNKNOWN, record, field="school_types"))
            data["school_types"] = known
        try:
            entity = ENTITY_MODELS[record.kind].model_validate(data)
        except ValidationError as error:
            if _is_date_order_error(error):
                findings.append(
                    self._finding(
                        FindingCode.DATES_INVERTED, record, severity="error", detail="start_date is after end_date"
                    )
                )
            else:
                location, detail = _first_error(error)
                findings.append(self._finding(FindingCode.RECORD_INVALID, record, field=location, detail=detail))
            return None, findings
        return entity, findings

    def _clean_items(
        self, record: SourceRecord, items: Any, model: type[Any], field: str, findings: list[Finding]
    ) -> list[Any]:
        if not isinstance(items, list):
            return [] if items is None else items  # type errors are reported by the model
        kept = []
        for position, item in enumerate(items):
            try:
                model.model_validate(item)
            except ValidationError as error:
                if _is_date_order_error(error):
                    code = FindingCode.DATES_INVERTED
                elif model is Email:
                    code = FindingCode.EMAIL_INVALID
                else:
                    code = FindingCode.VALUE_UNKNOWN
                location, detail = _first_error(error)
                findings.append(self._finding(code, record, field=f"{field}.{position}.{location}", detail=detail))
                continue
            kept.append(item)
        return kept


def _known_school_type(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    normalised = value.strip().upper()
    return normalised in SchoolType.__members__ or normalised in LEGACY_SCHOOL_TYPES


# --- reconcile -----------------------------------------------------------------------------------


def reconcile(tenant_id: str, entities: Iterable[StoredEntity], today: date) -> tuple[TenantState, list[Finding]]:
    """Cross-record checks over the organiser's whole state."""
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

    # School units: one per code.
    units: dict[tuple[str, str], SchoolUnit] = {}
    withheld_units: set[tuple[str, str]] = set()
    seen_codes: set[str] = set()
    for stored in by_kind[EntityKind.SCHOOL_UNIT]:
        unit = stored.entity
        assert isinstance(unit, SchoolUnit)
        if unit.school_unit_code in seen_codes:
            withheld.add(stored.id)
            withheld_units.add((stored.source_id, unit.key))
            finding(FindingCode.SCHOOL_UNIT_CODE_DUPLICATE, stored, school_unit_code=unit.school_unit_code)
            continue
        seen_codes.add(unit.school_unit_code)
        units[(stored.source_id, unit.key)] = unit

    def code_of(source_id: str, key: str) -> str | None:
        unit = units.get((source_id, key))
        return unit.school_unit_code if unit else None

    def unit_code_or_withhold(stored: StoredEntity, unit_key: str, unknown: FindingCode) -> str | None:
        """The code of the school unit ``stored`` belongs to; None (and ``stored`` withheld) when the
        unit is unknown (a finding) or itself withheld (no finding: the unit's own explains it)."""
        unit_code = code_of(stored.source_id, unit_key)
        if unit_code is None:
            withheld.add(stored.id)
            if (stored.source_id, unit_key) not in withheld_units:
                finding(unknown, stored)
        return unit_code

    # Persons: unique logins, unique e-mail addresses, enrolments at known units.
    persons: dict[tuple[str, str], Person] = {}
    known_persons = {(s.source_id, s.entity.key) for s in by_kind[EntityKind.PERSON]}
    eppns: set[str] = set()
    emails: set[str] = set()
    for stored in by_kind[EntityKind.PERSON]:
        person = stored.entity
        assert isinstance(person, Person)
        unit_code = next((code_of(stored.source_id, e.school_unit) for e in person.enrolments), None)
        if any(e.lower() in eppns for e in person.eppn):
            withheld.add(stored.id)
            finding(FindingCode.EPPN_DUPLICATE, stored, school_unit_code=unit_code, field="eppn")
            continue
        eppns.update(e.lower() for e in person.eppn)
        if not person.eppn:
            finding(FindingCode.EPPN_MISSING, stored, school_unit_code=unit_code, field="eppn")
        kept_emails = []
        for email in person.emails:
            if email.value in emails:
                finding(FindingCode.EMAIL_DUPLICATE, stored, school_unit_code=unit_code, field="emails")
            else:
                emails.add(email.value)
                kept_emails.append(email)
        if not kept_emails:
            finding(FindingCode.EMAIL_MISSING, stored, school_unit_code=unit_code, field="emails")
        if any((stored.source_id, e.school_unit) in withheld_units for e in person.enrolments):
            withheld.add(stored.id)  # depends on a withheld school unit: the vendor keeps what it has
            continue
        kept_enrolments = []
        for enrolment in person.enrolments:
            if (stored.source_id, enrolment.school_unit) in units:
                kept_enrolments.append(enrolment)
            else:
                finding(FindingCode.ENROLMENT_UNKNOWN_SCHOOL_UNIT, stored, field="enrolments")
        if len(kept_emails) != len(person.emails) or len(kept_enrolments) != len(person.enrolments):
            person = person.model_copy(update={"emails": kept_emails, "enrolments": kept_enrolments})
            replaced[stored.id] = person
        persons[(stored.source_id, person.key)] = person

    # Duties: known unit and person.
    active_duty_units: dict[tuple[str, str], str | None] = {}
    for stored in by_kind[EntityKind.DUTY]:
        duty = stored.entity
        assert isinstance(duty, Duty)
        unit_code = unit_code_or_withhold(stored, duty.school_unit, FindingCode.DUTY_UNKNOWN_SCHOOL_UNIT)
        if unit_code is None:
            continue
        if (stored.source_id, duty.person) not in known_persons:
            withheld.add(stored.id)
            finding(FindingCode.DUTY_UNKNOWN_PERSON, stored, school_unit_code=unit_code)
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
        group = stored.entity
        assert isinstance(group, Group)
        unit_code = unit_code_or_withhold(stored, group.school_unit, FindingCode.GROUP_UNKNOWN_SCHOOL_UNIT)
        if unit_code is None:
            continue
        groups.add((stored.source_id, group.key))
        members = [m for m in group.memberships if (stored.source_id, m.person) in known_persons]
        if len(members) != len(group.memberships):
            finding(
                FindingCode.GROUP_UNKNOWN_MEMBER,
                stored,
                school_unit_code=unit_code,
                field="memberships",
                detail=f"{len(group.memberships) - len(members)} membership(s) dropped",
            )
            replaced[stored.id] = group.model_copy(update={"memberships": members})
    duties = {(s.source_id, s.entity.key) for s in by_kind[EntityKind.DUTY] if s.id not in withheld}
    for stored in by_kind[EntityKind.ACTIVITY]:
        activity = stored.entity
        assert isinstance(activity, Activity)
        unit_code = unit_code_or_withhold(stored, activity.school_unit, FindingCode.ACTIVITY_UNKNOWN_SCHOOL_UNIT)
        if unit_code is None:
            continue
        kept_groups = [g for g in activity.groups if (stored.source_id, g) in groups]
        kept_teachers = [t for t in activity.teachers if (stored.source_id, t) in duties]
        if len(kept_groups) != len(activity.groups) or len(kept_teachers) != len(activity.teachers):
            finding(FindingCode.ACTIVITY_UNKNOWN_REFERENCE, stored, school_unit_code=unit_code)
            replaced[stored.id] = activity.model_copy(update={"groups": kept_groups, "teachers": kept_teachers})

    cleaned = [
        StoredEntity(s.id, s.source_id, replaced.get(s.id, s.entity))
        for kind in by_kind.values()
        for s in kind
        if s.id not in withheld
    ]
    return TenantState(tenant_id=tenant_id, entities=cleaned, withheld=withheld), findings
