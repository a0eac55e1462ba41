"""Validation: one record at a time when it arrives (ingest), and across the organiser's whole state
before every projection (reconcile, in ``skolsynk.domain.reconcile``: the admin's previews use it
too). Both produce findings; neither ever drops a record silently.

Findings carry the offending value (``Finding.value``: an invalid e-mail address, an unknown status
or school type, a malformed code) for the admin's report, except for the sensitive fields (civic
number, birth date), whose value the report never shows.

Ingest drops bad values (invalid e-mail addresses, unknown school types, sub-items with inverted
dates) with a warning (a personStatus SS 12000 does not know is kept as unknown instead: dropping it
would make the person active), and withholds a record that still does not fit the model (error). Reconcile
checks what needs the whole picture: duplicates, references to unknown entities, persons without an
active relation, conflicting roles; it returns a cleaned state for the projections and the set of
withheld entity ids, whose vendor copies are left as they are.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from pydantic import ValidationError

from skolsynk.contracts.source import SourceRecord
from skolsynk.domain.ids import entity_id
from skolsynk.domain.quality import Finding, FindingCode, joined
from skolsynk.domain.ss12000 import (
    ENTITY_MODELS,
    LEGACY_SCHOOL_TYPES,
    SCHOOL_UNIT_CODE,
    Email,
    Enrolment,
    Entity,
    EntityKind,
    Membership,
    PersonStatus,
    SchoolType,
    known_organisation_type,
)
from skolsynk.domain.subscription import SENSITIVE_FIELDS


def _first_error(error: ValidationError) -> tuple[str, str, str | None]:
    """Where the first error is, what it is (no value), and the offending value when it is a plain one
    of a field that is not sensitive."""
    first = error.errors()[0]
    parts = [str(part) for part in first.get("loc", ())]
    location = ".".join(parts) or "(record)"
    value = first.get("input")
    shown = str(value) if isinstance(value, str | int | float) and not SENSITIVE_FIELDS & set(parts) else None
    return location, f"{first.get('type', 'invalid')}: {first.get('msg', '')}"[:200], shown


def _dates(item: Any) -> str | None:
    """A record's or item's inverted dates as the value of its finding ("2025-08-01 > 2025-06-30")."""
    if not isinstance(item, dict) or item.get("start_date") is None or item.get("end_date") is None:
        return None
    return f"{item['start_date']} > {item['end_date']}"


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
            status = data.get("person_status")
            if status is None:
                data.pop("person_status", None)  # absent (or null): Aktiv, SS 12000's default
            elif not _known_person_status(status):
                # Not dropped (that would make the person Aktiv): unknown, and kept out of every selection.
                findings.append(
                    self._finding(FindingCode.PERSON_STATUS_UNKNOWN, record, field="person_status", value=str(status))
                )
                data["person_status"] = None
        elif record.kind is EntityKind.GROUP:
            data["memberships"] = self._clean_items(
                record, data.get("memberships"), Membership, "memberships", findings
            )
            if data.get("school_type") is not None and not _known_school_type(data["school_type"]):
                findings.append(
                    self._finding(
                        FindingCode.VALUE_UNKNOWN, record, field="school_type", value=str(data["school_type"])
                    )
                )
                data["school_type"] = None
        elif record.kind is EntityKind.ORGANISATION and "organisation_type" in data:
            # Kept whatever its type (what is beneath it resolves through it), but never silently: a
            # missing or unknown type is a finding and the organisation a level of unknown type.
            organisation_type = known_organisation_type(data["organisation_type"])
            if organisation_type is None:
                given = data["organisation_type"]
                findings.append(
                    self._finding(
                        FindingCode.ORGANISATION_TYPE_UNKNOWN,
                        record,
                        field="organisation_type",
                        value=None if given is None else str(given),
                    )
                )
            data["organisation_type"] = organisation_type
        elif record.kind is EntityKind.SCHOOL_UNIT:
            code = data.get("school_unit_code")
            if isinstance(code, str):
                code = data["school_unit_code"] = code.strip()
            if not code:
                return None, [*findings, self._finding(FindingCode.SCHOOL_UNIT_CODE_MISSING, record)]
            if not isinstance(code, str) or not SCHOOL_UNIT_CODE.match(code):
                malformed = self._finding(FindingCode.SCHOOL_UNIT_CODE_MALFORMED, record, value=str(code))
                return None, [*findings, malformed]
            types = data.get("school_types") or []
            known = [t for t in types if _known_school_type(t)]
            if len(known) != len(types):
                unknown = joined(t for t in types if not _known_school_type(t))
                findings.append(self._finding(FindingCode.VALUE_UNKNOWN, record, field="school_types", value=unknown))
            data["school_types"] = known
        try:
            entity = ENTITY_MODELS[record.kind].model_validate(data)
        except ValidationError as error:
            if _is_date_order_error(error):
                findings.append(
                    self._finding(
                        FindingCode.DATES_INVERTED,
                        record,
                        severity="error",
                        detail="start_date is after end_date",
                        value=_dates(data),
                    )
                )
            else:
                location, detail, value = _first_error(error)
                findings.append(
                    self._finding(FindingCode.RECORD_INVALID, record, field=location, detail=detail, value=value)
                )
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
                location, detail, value = _first_error(error)
                if _is_date_order_error(error):
                    code, value = FindingCode.DATES_INVERTED, _dates(item)
                elif model is Email:
                    code = FindingCode.EMAIL_INVALID
                    value = str(item["value"]) if isinstance(item, dict) and item.get("value") is not None else value
                else:
                    code = FindingCode.VALUE_UNKNOWN
                findings.append(
                    self._finding(code, record, field=f"{field}.{position}.{location}", detail=detail, value=value)
                )
                continue
            kept.append(item)
        return kept


def _known_school_type(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    normalised = value.strip().upper()
    return normalised in SchoolType.__members__ or normalised in LEGACY_SCHOOL_TYPES


def _known_person_status(value: Any) -> bool:
    return isinstance(value, str) and value.strip().casefold() in {s.value.casefold() for s in PersonStatus}
