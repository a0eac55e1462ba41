"""Data-quality findings: what was wrong with an organiser's data, and what skolsynk did about it.

Severity ``error``: the record is withheld (not stored, or its last good version kept; vendors keep
what they had). Severity ``warning``: the record is sent, the bad value dropped. Findings identify
records by id and the source's key; ``detail`` never carries personal data. What the admin needs to
fix the source is in ``value`` (the offending value: an invalid e-mail address, a duplicated login or
school-unit code, an unknown reference) and, for a duplicate, ``other_entity_id`` (the record that kept
the value). ``value`` may be personal data: it is stored and shown to those allowed to see personal
data, never logged, counted in a metric label or put in an error message.
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from collections.abc import Iterable
from enum import StrEnum
from typing import Literal
from uuid import UUID

from pydantic import Field, field_validator

from skolsynk.domain.ss12000 import EntityKind, Model


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"


class FindingCode(StrEnum):
    RECORD_INVALID = "record.invalid"
    EMAIL_INVALID = "email.invalid"
    EMAIL_MISSING = "email.missing"
    EMAIL_DUPLICATE = "email.duplicate"
    EPPN_MISSING = "eppn.missing"
    EPPN_DUPLICATE = "eppn.duplicate"
    SCHOOL_UNIT_CODE_MISSING = "school_unit_code.missing"
    SCHOOL_UNIT_CODE_MALFORMED = "school_unit_code.malformed"
    SCHOOL_UNIT_CODE_DUPLICATE = "school_unit_code.duplicate"
    ORGANISATION_TYPE_UNKNOWN = "organisation.type_unknown"
    ENROLMENT_UNKNOWN_SCHOOL_UNIT = "enrolment.unknown_school_unit"
    ENROLMENT_UNRESOLVED_ORGANISATION = "enrolment.unresolved_organisation"
    DUTY_UNKNOWN_SCHOOL_UNIT = "duty.unknown_school_unit"
    DUTY_UNRESOLVED_ORGANISATION = "duty.unresolved_organisation"
    DUTY_UNKNOWN_PERSON = "duty.unknown_person"
    DUTY_UNKNOWN_GROUP = "duty.unknown_group"
    GROUP_UNKNOWN_SCHOOL_UNIT = "group.unknown_school_unit"
    GROUP_UNRESOLVED_ORGANISATION = "group.unresolved_organisation"
    GROUP_UNKNOWN_MEMBER = "group.unknown_member"
    ACTIVITY_UNKNOWN_SCHOOL_UNIT = "activity.unknown_school_unit"
    ACTIVITY_UNRESOLVED_ORGANISATION = "activity.unresolved_organisation"
    ACTIVITY_UNKNOWN_REFERENCE = "activity.unknown_reference"
    PLACEMENT_UNKNOWN_CHILD = "placement.unknown_child"
    PLACEMENT_UNKNOWN_SCHOOL_UNIT = "placement.unknown_school_unit"
    PLACEMENT_UNRESOLVED_ORGANISATION = "placement.unresolved_organisation"
    PERSON_NO_ACTIVE_RELATION = "person.no_active_relation"
    PERSON_CONFLICTING_ROLES = "person.conflicting_roles"
    DATES_INVERTED = "dates.inverted"
    VALUE_UNKNOWN = "value.unknown"
    PERSON_STATUS_UNKNOWN = "person_status.unknown"
    SECURITY_MARKING_MISSING = "security_marking.missing"
    RUN_INCOMPLETE = "run.incomplete"


#: Severity and a one-line explanation per code (docs/data-quality.md is generated from the same text).
CATALOGUE: dict[FindingCode, tuple[Severity, str]] = {
    FindingCode.RECORD_INVALID: (Severity.ERROR, "The record does not follow the model (a required field is missing or malformed); withheld."),
    FindingCode.EMAIL_INVALID: (Severity.WARNING, "An e-mail address is not valid; the address is dropped."),
    FindingCode.EMAIL_MISSING: (Severity.WARNING, "The person has no e-mail address; vendors that need one cannot create the account."),
    FindingCode.EMAIL_DUPLICATE: (Severity.WARNING, "Another person has the same e-mail address; it is dropped from this one."),
    FindingCode.EPPN_MISSING: (Severity.WARNING, "The person has no eduPersonPrincipalName (login); vendors using EGIL cannot create the account."),
    FindingCode.EPPN_DUPLICATE: (Severity.ERROR, "Another person has the same eduPersonPrincipalName; this one is withheld."),
    FindingCode.SCHOOL_UNIT_CODE_MISSING: (Severity.ERROR, "The school unit has no school-unit code; withheld."),
    FindingCode.SCHOOL_UNIT_CODE_MALFORMED: (Severity.ERROR, "The school-unit code is not 8 digits; withheld."),
    FindingCode.SCHOOL_UNIT_CODE_DUPLICATE: (Severity.ERROR, "Another school unit has the same code; this one is withheld."),
    FindingCode.ORGANISATION_TYPE_UNKNOWN: (Severity.WARNING, "The organisation has no organisationType, or one SS 12000 does not have; kept as a level of unknown type (what is beneath it still resolves through it), never as a school unit."),
    FindingCode.ENROLMENT_UNKNOWN_SCHOOL_UNIT: (Severity.WARNING, "An enrolment refers to a school unit the organiser does not have; the enrolment is dropped."),
    FindingCode.ENROLMENT_UNRESOLVED_ORGANISATION: (Severity.WARNING, "An enrolment is at an organisation above school units (the detail names its type) with no or several school units beneath it; the enrolment is dropped."),
    FindingCode.DUTY_UNKNOWN_SCHOOL_UNIT: (Severity.ERROR, "The duty refers to an unknown school unit; withheld."),
    FindingCode.DUTY_UNRESOLVED_ORGANISATION: (Severity.ERROR, "The duty is at an organisation (the detail names its type) with no school unit beneath it; withheld."),
    FindingCode.DUTY_UNKNOWN_PERSON: (Severity.ERROR, "The duty refers to an unknown person; withheld."),
    FindingCode.DUTY_UNKNOWN_GROUP: (Severity.WARNING, "A task of the duty towards a group (assignmentRole: a mentor, ...) refers to an unknown or withheld group; the task is dropped."),
    FindingCode.GROUP_UNKNOWN_SCHOOL_UNIT: (Severity.ERROR, "The group refers to an unknown school unit; withheld."),
    FindingCode.GROUP_UNRESOLVED_ORGANISATION: (Severity.ERROR, "The group is at an organisation above school units (the detail names its type) with no or several school units beneath it; withheld."),
    FindingCode.GROUP_UNKNOWN_MEMBER: (Severity.WARNING, "A membership refers to an unknown person; the membership is dropped."),
    FindingCode.ACTIVITY_UNKNOWN_SCHOOL_UNIT: (Severity.ERROR, "The activity refers to an unknown school unit; withheld."),
    FindingCode.ACTIVITY_UNRESOLVED_ORGANISATION: (Severity.ERROR, "The activity is at an organisation above school units (the detail names its type) with no or several school units beneath it; withheld."),
    FindingCode.ACTIVITY_UNKNOWN_REFERENCE: (Severity.WARNING, "The activity refers to an unknown group or duty; the reference is dropped."),
    FindingCode.PLACEMENT_UNKNOWN_CHILD: (Severity.ERROR, "The placement refers to an unknown person; withheld."),
    FindingCode.PLACEMENT_UNKNOWN_SCHOOL_UNIT: (Severity.ERROR, "The placement refers to an unknown school unit; withheld."),
    FindingCode.PLACEMENT_UNRESOLVED_ORGANISATION: (Severity.ERROR, "The placement is at an organisation above school units (the detail names its type) with no or several school units beneath it; withheld."),
    FindingCode.PERSON_NO_ACTIVE_RELATION: (Severity.WARNING, "The person has no active enrolment or duty; no vendor receives them."),
    FindingCode.PERSON_CONFLICTING_ROLES: (Severity.WARNING, "The person is both enrolled as a student and employed as staff today."),
    FindingCode.DATES_INVERTED: (Severity.WARNING, "A start date is after its end date; the enrolment, membership or duty is dropped (a whole record with inverted dates is withheld)."),
    FindingCode.VALUE_UNKNOWN: (Severity.WARNING, "A value is not one SS 12000 knows (for example a school type); the value is dropped."),
    FindingCode.PERSON_STATUS_UNKNOWN: (Severity.WARNING, "The person's personStatus is not one SS 12000 knows (Aktiv, Utvandrad, Avliden); the person is treated as not active and kept out of every vendor's selection."),
    FindingCode.SECURITY_MARKING_MISSING: (Severity.WARNING, "A summary per source: how many of its persons have no securityMarking; they are treated as protected identities unless the organiser chose otherwise."),
    FindingCode.RUN_INCOMPLETE: (Severity.ERROR, "The source read was incomplete or unhealthy; nothing was removed because of it."),
}  # fmt: skip


#: The longest ``value`` a finding stores.
VALUE_LENGTH = 200


def joined(values: Iterable[object]) -> str | None:
    """Several offending values (the keys of unknown references) as one ``value``; None for none."""
    text = ", ".join(dict.fromkeys(str(v) for v in values))
    return text or None


class Finding(Model):
    tenant_id: str
    source_id: str | None = None
    run_id: UUID | None = None
    origin: Literal["ingest", "reconcile", "run", "summary"]
    code: FindingCode
    severity: Severity
    entity_kind: EntityKind | None = None
    entity_id: UUID | None = None
    source_key: str | None = None
    school_unit_code: str | None = None
    field: str | None = None
    detail: str = Field(default="", max_length=300, description="What was wrong, without personal data.")
    value: str | None = Field(
        default=None,
        max_length=VALUE_LENGTH,
        description="The offending value as the source has it (an e-mail address, a login, a code, the key of "
        "an unknown reference; cut to 200 characters). May be personal data: shown only to roles that may "
        "see it, never logged.",
    )
    other_entity_id: UUID | None = Field(
        default=None, description="For a duplicate: the record that has the same value and kept it."
    )

    @field_validator("value", mode="before")
    @classmethod
    def _cut(cls, value: object) -> object:
        """A value longer than the stored length is cut (the finding matters more than its last characters)."""
        return value[:VALUE_LENGTH] if isinstance(value, str) else value

    @classmethod
    def of(cls, code: FindingCode, *, severity: Severity | None = None, **values: object) -> Finding:
        return cls.model_validate({"code": code, "severity": severity or CATALOGUE[code][0], **values})


CSV_COLUMNS = (
    "severity",
    "code",
    "school_unit_code",
    "entity_kind",
    "entity_id",
    "source_id",
    "source_key",
    "field",
    "detail",
    "run_id",
    "other_entity_id",
    "value",
)
#: The columns that may hold personal data (left out for roles that may not see it).
PERSONAL_CSV_COLUMNS = frozenset({"value"})


def to_csv(findings: Iterable[Finding], *, personal: bool = True) -> str:
    """The findings as CSV (comma-separated, English column names: for programs); ``personal=False``
    leaves out the offending values."""
    columns = [c for c in CSV_COLUMNS if personal or c not in PERSONAL_CSV_COLUMNS]
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(columns)
    for finding in findings:
        row = finding.model_dump(mode="json")
        writer.writerow(["" if row.get(c) is None else row[c] for c in columns])
    return buffer.getvalue()


def summary_by_school_unit(findings: Iterable[Finding]) -> dict[str, dict[str, int]]:
    """school unit code ("-" when none) -> {"error": n, "warning": n, "<code>": n ...}."""
    table: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for finding in findings:
        row = table[finding.school_unit_code or "-"]
        row[finding.severity.value] += 1
        row[finding.code.value] += 1
    return {code: dict(counts) for code, counts in sorted(table.items())}
