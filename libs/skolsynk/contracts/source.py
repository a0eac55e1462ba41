"""What source connectors send the normaliser (exchange ``source``, routing key
``{source_kind}.{tenant}``), in runs:

1. ``source.run.started``: a run begins (``full`` snapshot or ``incremental`` changes);
2. ``source.records`` pages: records of any kind, and (incremental runs) deletions;
3. ``source.run.completed``: how many pages were sent, the source-side count per kind, and whether the
   read was healthy.

Records are canonical-shaped and typed by kind: a record's ``data`` is the kind's fields
(:class:`PersonFields`, :class:`GroupFields` ...: the field names of the matching model of
:mod:`skolsynk.domain.ss12000`, exported as JSON Schema with this contract). The names are closed: a
field the kind does not have is refused where the record is built and again where it is read (a
connector bug, never the source's), with the field named. The *values* are checked one by one by the
normaliser: a bad value (a malformed e-mail, an unknown school type) becomes a data-quality finding,
never a rejected page. Only a complete and healthy full snapshot (every page received, counts matching,
no read errors) may remove what it did not contain.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime
from typing import Any, ClassVar, Literal, TypeAlias
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationInfo, field_validator, with_config
from typing_extensions import TypedDict  # pydantic reads typing's TypedDict only from Python 3.12

from skolsynk.contracts.envelope import MessageContract
from skolsynk.domain.ss12000 import EntityKind

SOURCE_ID = r"^[a-z0-9][a-z0-9-]{0,62}$"


DateValue: TypeAlias = date | str
"""A date, or its ISO text as it arrives from a source (checked by the normaliser)."""

#: The fields schemas say what they say: no other names (``additionalProperties: false``).
CLOSED = ConfigDict(extra="forbid")


# The fields of each kind. ``total=False``: a source sends what it has; what is required and what a value
# may be is the canonical model's business (skolsynk.domain.ss12000), checked by the normaliser, which
# turns a bad value into a finding. Enumerations are their SS 12000 text (a StrEnum member is one).
@with_config(CLOSED)
class EmailFields(TypedDict, total=False):
    value: str
    type: str


@with_config(CLOSED)
class ExternalIdentifierFields(TypedDict, total=False):
    value: str
    context: str
    globally_unique: bool


@with_config(CLOSED)
class EnrolmentFields(TypedDict, total=False):
    school_unit: str
    school_type: str
    school_year: int | None
    cancelled: bool
    programme_code: str | None
    start_date: DateValue | None
    end_date: DateValue | None


@with_config(CLOSED)
class MembershipFields(TypedDict, total=False):
    person: str
    start_date: DateValue | None
    end_date: DateValue | None


@with_config(CLOSED)
class OrganisationFields(TypedDict, total=False):
    key: str
    display_name: str
    organisation_type: str | None
    parent: str | None
    organisation_number: str | None
    organisation_code: str | None
    municipality_code: str | None


@with_config(CLOSED)
class SchoolUnitGroupFields(TypedDict, total=False):
    key: str
    display_name: str


@with_config(CLOSED)
class SchoolUnitFields(TypedDict, total=False):
    key: str
    display_name: str
    school_unit_code: str
    school_types: list[str]
    municipality_code: str | None
    organisation: str | None
    school_unit_group: str | None
    start_date: DateValue | None
    end_date: DateValue | None


@with_config(CLOSED)
class PersonFields(TypedDict, total=False):
    key: str
    given_name: str
    family_name: str
    middle_name: str | None
    eppn: list[str]
    emails: list[EmailFields]
    civic_no: str | None
    birth_date: DateValue | None
    security_marking: str | bool | None
    person_status: str | None
    external_identifiers: list[ExternalIdentifierFields]
    enrolments: list[EnrolmentFields]


@with_config(CLOSED)
class AssignmentRoleFields(TypedDict, total=False):
    group: str
    assignment_role_type: str
    start_date: DateValue | None
    end_date: DateValue | None


@with_config(CLOSED)
class DutyFields(TypedDict, total=False):
    key: str
    person: str
    school_unit: str
    role: str
    signature: str | None
    assignment_roles: list[AssignmentRoleFields]
    start_date: DateValue | None
    end_date: DateValue | None


@with_config(CLOSED)
class GroupFields(TypedDict, total=False):
    key: str
    display_name: str
    group_type: str
    school_type: str | None
    school_unit: str
    memberships: list[MembershipFields]
    start_date: DateValue | None
    end_date: DateValue | None


@with_config(CLOSED)
class SyllabusFields(TypedDict, total=False):
    key: str
    subject_name: str
    subject_code: str | None
    subject_designation: str | None
    course_code: str | None
    course_name: str | None
    school_type: str | None
    official: bool | None


@with_config(CLOSED)
class TeacherAssignmentFields(TypedDict, total=False):
    duty: str
    start_date: DateValue | None
    end_date: DateValue | None


@with_config(CLOSED)
class ActivityFields(TypedDict, total=False):
    key: str
    display_name: str
    school_unit: str
    groups: list[str]
    teachers: list[str]
    teacher_assignments: list[TeacherAssignmentFields]
    syllabus: str | None
    start_date: DateValue | None
    end_date: DateValue | None


@with_config(CLOSED)
class PlacementFields(TypedDict, total=False):
    key: str
    child: str
    school_unit: str
    school_type: str
    group: str | None
    start_date: DateValue | None
    end_date: DateValue | None


RecordFields: TypeAlias = (
    OrganisationFields
    | SchoolUnitGroupFields
    | SchoolUnitFields
    | PersonFields
    | DutyFields
    | GroupFields
    | SyllabusFields
    | ActivityFields
    | PlacementFields
)

#: The fields type of each kind.
FIELDS: dict[EntityKind, type[Any]] = {
    EntityKind.ORGANISATION: OrganisationFields,
    EntityKind.SCHOOL_UNIT_GROUP: SchoolUnitGroupFields,
    EntityKind.SCHOOL_UNIT: SchoolUnitFields,
    EntityKind.PERSON: PersonFields,
    EntityKind.DUTY: DutyFields,
    EntityKind.GROUP: GroupFields,
    EntityKind.SYLLABUS: SyllabusFields,
    EntityKind.ACTIVITY: ActivityFields,
    EntityKind.PLACEMENT: PlacementFields,
}

#: Fields whose value is a list of objects with closed field names of their own.
NESTED: dict[str, type[Any]] = {
    "emails": EmailFields,
    "external_identifiers": ExternalIdentifierFields,
    "enrolments": EnrolmentFields,
    "memberships": MembershipFields,
    "assignment_roles": AssignmentRoleFields,
    "teacher_assignments": TeacherAssignmentFields,
}


def unknown_names(declared: type[Any], nested: Mapping[str, type[Any]], data: Mapping[str, Any]) -> list[str]:
    """The names in ``data`` that the TypedDict ``declared`` does not have, and in its lists of objects
    (``nested``: field -> TypedDict of the items) those the items may not have, as ``emails.0.typ``.
    Names only: never a value (they may be personal data)."""
    allowed = declared.__annotations__
    unknown = [str(name) for name in data if name not in allowed]
    for name, fields in nested.items():
        items = data.get(name) if name in allowed else None
        if isinstance(items, list):
            for position, item in enumerate(items):
                if isinstance(item, Mapping):
                    unknown += [f"{name}.{position}.{key}" for key in item if key not in fields.__annotations__]
    return unknown


def unknown_fields(kind: EntityKind, data: Mapping[str, Any]) -> list[str]:
    """The field names in ``data`` that a ``kind`` record does not have."""
    return unknown_names(FIELDS[kind], NESTED, data)


def fields_schema() -> dict[str, Any]:
    """JSON Schema of each kind's fields (for connector authors): kind -> schema."""
    return {kind.value: TypeAdapter(fields).json_schema() for kind, fields in FIELDS.items()}


class SourceRecord(BaseModel):
    # hide_input_in_errors: a refused record's error names fields, never their values (personal data).
    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    kind: EntityKind
    key: str = Field(min_length=1, max_length=200, description="The source's own id of the entity.")
    data: dict[str, Any] = Field(
        description=(
            "The entity's fields: the names of the kind's fields schema (record-fields.<kind>), nothing else; "
            "'key' may be omitted. Values are checked by the normaliser (a bad one is a data-quality finding)."
        ),
        json_schema_extra={"x-fields-by-kind": "record-fields.<kind>.schema.json"},
    )

    @field_validator("data")
    @classmethod
    def _names_of_the_kind(cls, data: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        kind = info.data.get("kind")
        if isinstance(kind, EntityKind):
            unknown = unknown_fields(kind, data)
            if unknown:
                raise ValueError(f"{kind.value} has no field {', '.join(sorted(unknown))}")
        return data

    @classmethod
    def of(cls, kind: EntityKind, key: str, fields: RecordFields) -> SourceRecord:
        """A record built from its kind's typed fields (mypy checks the names where they are written)."""
        return cls(kind=kind, key=key, data=dict(fields))


class SourceDeletion(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: EntityKind
    key: str = Field(min_length=1, max_length=200)


class SourceRunStarted(MessageContract):
    message_type: ClassVar[str] = "source.run.started"
    schema_version: ClassVar[int] = 1

    run_id: UUID
    source_id: str = Field(pattern=SOURCE_ID)
    source_kind: str = Field(pattern=r"^[a-z0-9-]{1,40}$", description="egil, ss12000, google, microsoft ...")
    mode: Literal["full", "incremental"]
    started_at: datetime


class SourceRecordPage(MessageContract):
    message_type: ClassVar[str] = "source.records"
    schema_version: ClassVar[int] = 1

    run_id: UUID
    source_id: str = Field(pattern=SOURCE_ID)
    page: int = Field(ge=0, description="0-based page number within the run.")
    records: list[SourceRecord] = Field(default_factory=list, max_length=5000)
    deletions: list[SourceDeletion] = Field(
        default_factory=list, max_length=5000, description="Incremental runs only: removed at the source."
    )


class SourceRunCompleted(MessageContract):
    message_type: ClassVar[str] = "source.run.completed"
    schema_version: ClassVar[int] = 1

    run_id: UUID
    source_id: str = Field(pattern=SOURCE_ID)
    pages: int = Field(ge=0, description="How many pages the run sent.")
    counts: dict[EntityKind, int] = Field(
        default_factory=dict, description="Source-side number of records per kind (full runs)."
    )
    healthy: bool = Field(description="False when any read failed: such a run never removes anything.")
    errors: list[str] = Field(default_factory=list, max_length=50, description="Error codes, no personal data.")
