"""What a vendor's dispatcher (or the vendor itself, on its own queue) receives: one change to one
entity of its selection (exchange ``vendor``, routing key ``{vendor}.{tenant}``).

``version`` grows by one with every change to the same (tenant, vendor, entity): a consumer drops a
change whose version is not greater than the last one it applied, so redeliveries and reordering
never roll an entity back. Upserts carry the full minimised resource; deletes carry none.

A resource is typed by kind (:class:`PersonResource`, :class:`GroupResource` ..., exported as
``vendor-resource.<kind>.schema.json``): the canonical entity's fields that the vendor's profile and
subscription allow, plus the stable ids skolsynk resolves references to (``id``, ``school_unit_id``,
``member_ids`` ...). Which fields appear depends on the subscription; no other names ever do.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal, TypeAlias
from uuid import UUID

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationInfo,
    field_validator,
    with_config,
)
from typing_extensions import TypedDict  # pydantic reads typing's TypedDict only from Python 3.12

from skolsynk.contracts.envelope import MessageContract
from skolsynk.contracts.source import (
    CLOSED,
    DateValue,
    EmailFields,
    ExternalIdentifierFields,
    GroupFields,
    MembershipFields,
    OrganisationFields,
    SchoolUnitFields,
    SchoolUnitGroupFields,
    unknown_names,
)
from skolsynk.domain.ss12000 import EntityKind


# The ids skolsynk adds: every resource's own and the resolved references (entity UUIDs as text).
@with_config(CLOSED)
class ResourceIds(TypedDict, total=False):
    id: str
    kind: str


@with_config(CLOSED)
class OrganisationResource(ResourceIds, OrganisationFields, total=False):
    pass


@with_config(CLOSED)
class SchoolUnitGroupResource(ResourceIds, SchoolUnitGroupFields, total=False):
    pass


@with_config(CLOSED)
class SchoolUnitResource(ResourceIds, SchoolUnitFields, total=False):
    organisation_id: str | None
    school_unit_group_id: str | None


@with_config(CLOSED)
class EnrolmentResource(TypedDict, total=False):
    school_unit_id: str
    school_unit_code: str
    school_type: str
    school_year: int | None
    programme_code: str | None
    start_date: DateValue | None
    end_date: DateValue | None


@with_config(CLOSED)
class PlacementResource(TypedDict, total=False):
    """A child's placement at a förskola or fritidshem (subscriptions that ask for placements only)."""

    id: str
    school_unit_id: str
    school_unit_code: str
    school_type: str
    group_id: str | None
    start_date: DateValue | None
    end_date: DateValue | None


@with_config(CLOSED)
class PersonResource(ResourceIds, total=False):
    roles: list[str]
    school_unit_ids: list[str]
    key: str
    given_name: str
    family_name: str
    middle_name: str | None
    eppn: list[str]
    emails: list[EmailFields]
    civic_no: str | None
    birth_date: DateValue | None
    security_marking: str | None
    external_identifiers: list[ExternalIdentifierFields]
    enrolments: list[EnrolmentResource]
    placements: list[PlacementResource]


@with_config(CLOSED)
class AssignmentRoleResource(TypedDict, total=False):
    """A duty's task towards a group the vendor also receives (the mentor of a class ...)."""

    group_id: str
    assignment_role_type: str
    start_date: DateValue | None
    end_date: DateValue | None


@with_config(CLOSED)
class DutyResource(ResourceIds, total=False):
    person_id: str
    school_unit_id: str
    key: str
    person: str
    school_unit: str
    role: str
    signature: str | None
    assignment_roles: list[AssignmentRoleResource]
    start_date: DateValue | None
    end_date: DateValue | None


@with_config(CLOSED)
class GroupResource(ResourceIds, GroupFields, total=False):
    school_unit_id: str
    member_ids: list[str]


@with_config(CLOSED)
class TeacherAssignmentResource(TypedDict, total=False):
    """When one of the activity's teachers (``teacher_duty_ids``) takes part, when the source says."""

    duty_id: str
    start_date: DateValue | None
    end_date: DateValue | None


@with_config(CLOSED)
class SyllabusResource(TypedDict, total=False):
    """The subject or course of an activity, resolved from the organiser's syllabuses."""

    id: str
    subject_name: str
    subject_code: str | None
    subject_designation: str | None
    course_code: str | None
    course_name: str | None
    school_type: str | None
    official: bool | None


@with_config(CLOSED)
class ActivityResource(ResourceIds, total=False):
    school_unit_id: str
    group_ids: list[str]
    teacher_duty_ids: list[str]
    key: str
    display_name: str
    school_unit: str
    groups: list[str]
    teachers: list[str]
    teacher_assignments: list[TeacherAssignmentResource]
    syllabus: SyllabusResource | None
    start_date: DateValue | None
    end_date: DateValue | None


VendorResource: TypeAlias = (
    OrganisationResource
    | SchoolUnitGroupResource
    | SchoolUnitResource
    | PersonResource
    | DutyResource
    | GroupResource
    | ActivityResource
)

#: The resource type of each kind a vendor receives (``skolsynk.domain.ss12000.VENDOR_KINDS``).
RESOURCES: dict[EntityKind, type[Any]] = {
    EntityKind.ORGANISATION: OrganisationResource,
    EntityKind.SCHOOL_UNIT_GROUP: SchoolUnitGroupResource,
    EntityKind.SCHOOL_UNIT: SchoolUnitResource,
    EntityKind.PERSON: PersonResource,
    EntityKind.DUTY: DutyResource,
    EntityKind.GROUP: GroupResource,
    EntityKind.ACTIVITY: ActivityResource,
}

#: A resource's lists of objects and the names their objects may have.
RESOURCE_NESTED: dict[str, type[Any]] = {
    "emails": EmailFields,
    "external_identifiers": ExternalIdentifierFields,
    "enrolments": EnrolmentResource,
    "memberships": MembershipFields,
    "assignment_roles": AssignmentRoleResource,
    "teacher_assignments": TeacherAssignmentResource,
    "placements": PlacementResource,
}


def unknown_resource_fields(kind: EntityKind, resource: dict[str, Any]) -> list[str]:
    """Names in ``resource`` that a ``kind`` resource does not have (nested as ``enrolments.0.x``)."""
    return unknown_names(RESOURCES[kind], RESOURCE_NESTED, resource)


def resources_schema() -> dict[str, Any]:
    """JSON Schema of each kind's vendor resource: kind -> schema."""
    return {kind.value: TypeAdapter(resource).json_schema() for kind, resource in RESOURCES.items()}


class VendorChange(MessageContract):
    # A refused resource's error names fields, never their values (personal data).
    model_config = ConfigDict(hide_input_in_errors=True)

    message_type: ClassVar[str] = "vendor.change"
    schema_version: ClassVar[int] = 1

    vendor_id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")
    entity_kind: EntityKind
    entity_id: UUID
    operation: Literal["upsert", "delete"]
    version: int = Field(ge=1)
    resource: dict[str, Any] | None = Field(
        default=None,
        description="The minimised resource (upserts): the names of vendor-resource.<entity_kind>, nothing else.",
        json_schema_extra={"x-fields-by-kind": "vendor-resource.<kind>.schema.json"},
    )
    school_unit_ids: list[UUID] = Field(default_factory=list)
    test_mode: bool = Field(description="Record what would be sent; deliver nothing.")
    reason: str = Field(max_length=64, description="Why: 'snapshot', 'incremental', 'dates', 'subscription' ...")

    @field_validator("resource")
    @classmethod
    def _names_of_the_kind(cls, resource: dict[str, Any] | None, info: ValidationInfo) -> dict[str, Any] | None:
        kind = info.data.get("entity_kind")
        if resource is not None and isinstance(kind, EntityKind):
            unknown = unknown_resource_fields(kind, resource)
            if unknown:
                raise ValueError(f"a {kind.value} resource has no field {', '.join(sorted(unknown))}")
        return resource


class ProjectionRequested(MessageContract):
    """Recompute what every vendor of a tenant should hold and send the differences (after a run, a
    subscription change, a hold decision, or the daily date check)."""

    message_type: ClassVar[str] = "tenant.projection.requested"
    schema_version: ClassVar[int] = 1

    reason: str = Field(max_length=64)
    run_id: UUID | None = Field(default=None, description="The source run that finished, if any.")
    resend_vendor_id: str | None = Field(
        default=None,
        pattern=r"^[a-z0-9][a-z0-9-]{0,62}$",
        description="Send this vendor its whole current selection again, changed or not (a full resend).",
    )


class ProjectionRequester(BaseModel):
    """Who asked for a projection by changing something in the admin service, as the audit log records it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    actor: str = Field(min_length=1, max_length=200, description="The admin's user id (the audit log's actor).")
    action: str = Field(max_length=64, description="The audited action, e.g. 'subscription.update'.")
    target: str | None = Field(default=None, max_length=200, description="What it changed, e.g. the vendor id.")
    at: AwareDatetime = Field(description="When the change was made.")


class ProjectionRequestedV2(ProjectionRequested):
    """Version 2 of ``tenant.projection.requested``: version 1's fields and, when an admin's change asked for
    it, who made which change (``requested_by``), so the holds that projection makes can name the change.
    The normaliser reads both versions; the admin service sends this one (upgrade the normaliser first)."""

    schema_version: ClassVar[int] = 2

    requested_by: ProjectionRequester | None = Field(
        default=None, description="The admin's change that asked for this projection, if any."
    )
