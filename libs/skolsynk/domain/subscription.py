"""What a vendor may receive from an organiser: the subscription (tenant x vendor) and the vendor's
capability profile."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import Field, field_validator

from skolsynk.domain.ss12000 import SCHOOL_UNIT_CODE, VENDOR_KINDS, EntityKind, GroupType, Model, SchoolType


class Role(StrEnum):
    STUDENT = "student"
    TEACHER = "teacher"
    OTHER_STAFF = "other_staff"


class ProtectedIdentityPolicy(StrEnum):
    """What a vendor gets for a protected person: securityMarking "Sekretessmarkering" or "Skyddad
    folkbokföring", or unknown while the organiser's :class:`MissingMarkingPolicy` is ``protected``."""

    EXCLUDE = "exclude"  # not provisioned at all (default)
    PSEUDONYMISE = "pseudonymise"  # a vendor-specific id, alias names, only the login (eppn) kept
    MINIMAL = "minimal"  # real names and login, nothing else


class MissingMarkingPolicy(StrEnum):
    """An organiser's setting: how a person whose source did not say their securityMarking is treated by
    every vendor's selection."""

    PROTECTED = "protected"  # like a protected identity: the subscription's policy applies (default)
    NOT_PROTECTED = "not_protected"  # like "Ingen" (the vendor still never receives "Ingen" for them)

    @property
    def unknown_is_protected(self) -> bool:
        return self is MissingMarkingPolicy.PROTECTED


#: Every field a vendor can be given, per kind (structural fields such as ids, references, roles and
#: school units are always included).
PERSON_FIELDS = frozenset(
    {
        "given_name",
        "family_name",
        "middle_name",
        "eppn",
        "emails",
        "civic_no",
        "birth_date",
        "external_identifiers",
        "security_marking",
        "enrolments",
        "placements",
    }
)
OPTIONAL_FIELDS: dict[EntityKind, frozenset[str]] = {
    EntityKind.ORGANISATION: frozenset(
        {"display_name", "organisation_number", "organisation_code", "municipality_code"}
    ),
    EntityKind.SCHOOL_UNIT_GROUP: frozenset({"display_name"}),
    EntityKind.SCHOOL_UNIT: frozenset({"display_name", "school_unit_code", "school_types", "municipality_code"}),
    EntityKind.PERSON: PERSON_FIELDS,
    EntityKind.DUTY: frozenset({"role", "signature", "start_date", "end_date", "assignment_roles"}),
    EntityKind.GROUP: frozenset({"display_name", "group_type", "school_type", "start_date", "end_date"}),
    EntityKind.ACTIVITY: frozenset({"display_name", "start_date", "end_date", "syllabus", "teacher_assignments"}),
    # Never delivered on their own (skolsynk.domain.ss12000.RESOLVED_KINDS).
    EntityKind.SYLLABUS: frozenset(),
    EntityKind.PLACEMENT: frozenset(),
}
#: Fields nobody gets unless both the vendor's profile and the subscription name them.
SENSITIVE_FIELDS: frozenset[str] = frozenset({"civic_no", "birth_date"})
#: Fields (issue 20, item 3) a vendor gets only when its profile names them: never in a profile's defaults,
#: so what existing vendors receive does not change. A person's ``placements`` also need the
#: subscription's ``placements``.
OPT_IN_FIELDS: dict[EntityKind, frozenset[str]] = {
    EntityKind.PERSON: frozenset({"placements"}),
    EntityKind.DUTY: frozenset({"assignment_roles"}),
    EntityKind.ACTIVITY: frozenset({"syllabus", "teacher_assignments"}),
}


class VendorProfile(Model):
    """What a vendor can take (from the vendor catalogue)."""

    vendor_id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")
    #: The kinds of resource the vendor takes (never syllabuses or placements: they reach vendors only as
    #: fields of activities and persons).
    kinds: frozenset[EntityKind] = Field(default_factory=lambda: frozenset(VENDOR_KINDS))
    accepted_fields: dict[EntityKind, frozenset[str]] = Field(
        default_factory=lambda: {
            k: v - SENSITIVE_FIELDS - OPT_IN_FIELDS.get(k, frozenset()) for k, v in OPTIONAL_FIELDS.items()
        }
    )
    classes_only: bool = Field(default=False, description="Only groups of type Klass.")
    single_school_unit_per_user: bool = Field(
        default=False, description="A user belongs to one school unit only (the lowest code wins)."
    )

    @field_validator("kinds")
    @classmethod
    def _vendor_kinds(cls, kinds: frozenset[EntityKind]) -> frozenset[EntityKind]:
        """Syllabuses and placements are never resources of their own at a vendor: "every kind" means the
        kinds vendors receive."""
        return kinds & frozenset(VENDOR_KINDS)


class MassDeletionGuard(Model):
    """Hold removals for review when a run would remove too many from one school unit for one vendor."""

    max_removals: int = Field(default=50, ge=0, description="More removals than this in one school unit hold.")
    max_percent: float = Field(default=20.0, ge=0, le=100, description="A larger share of the unit's selection holds.")
    percent_applies_from: int = Field(
        default=5, ge=1, description="The percent rule applies from this many removals (small units)."
    )

    def breached(self, removals: int, population: int) -> bool:
        if removals > self.max_removals:
            return True
        if removals >= self.percent_applies_from and population > 0:
            return 100.0 * removals / population > self.max_percent
        return False


class VendorSubscription(Model):
    """An organiser's choice of what one vendor gets."""

    tenant_id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")
    vendor_id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")
    school_unit_codes: frozenset[str] = Field(min_length=1)
    roles: frozenset[Role] = Field(default_factory=lambda: frozenset(Role))
    school_types: frozenset[SchoolType] | None = Field(default=None, description="None: every school type.")
    school_years: frozenset[int] | None = Field(default=None, description="None: every school year.")
    group_types: frozenset[GroupType] | None = Field(default=None, description="None: every group type.")
    placements: bool = Field(
        default=False,
        description="Also children placed at a förskola or fritidshem (SS 12000 Placement, school types FS, FTH, "
        "OPPFTH) of the listed school units, as students. Off: placements are not even read from SS 12000 sources.",
    )
    include_persons: frozenset[str] = Field(default_factory=frozenset, description="Person ids always included.")
    exclude_persons: frozenset[str] = Field(default_factory=frozenset, description="Person ids never included.")
    fields: dict[EntityKind, frozenset[str]] | None = Field(
        default=None, description="Narrows the profile's accepted fields per kind; None: all the profile accepts."
    )
    protected_identity_policy: ProtectedIdentityPolicy = ProtectedIdentityPolicy.EXCLUDE
    test_mode: bool = Field(default=True, description="Compute and record, deliver nothing.")
    guard: MassDeletionGuard = Field(default_factory=MassDeletionGuard)
    deletion_grace_hours: float = Field(
        default=0.0,
        ge=0,
        le=24 * 90,
        description=(
            "Two-phase deletion: a person or group that leaves the selection is deleted at the vendor only after "
            "this many hours (it stays if it comes back meanwhile), so a short source outage never destroys "
            "vendor accounts. 0: delete at once. Erasure requests and ended subscriptions never wait."
        ),
    )
    ended_at: datetime | None = Field(
        default=None, description="The organiser ended the subscription: everything is deleted at the vendor."
    )

    @field_validator("school_unit_codes")
    @classmethod
    def _codes(cls, value: frozenset[str]) -> frozenset[str]:
        bad = sorted(code for code in value if not SCHOOL_UNIT_CODE.match(code))
        if bad:
            raise ValueError(f"school unit codes must be 8 digits: {', '.join(bad)}")
        return value

    @field_validator("school_years")
    @classmethod
    def _years(cls, value: frozenset[int] | None) -> frozenset[int] | None:
        if value is not None and any(y < 0 or y > 10 for y in value):
            raise ValueError("school years are 0 to 10")
        return value

    def allowed_fields(self, kind: EntityKind, profile: VendorProfile) -> frozenset[str]:
        """Profile ∩ subscription, never beyond the optional fields of the kind (a profile cannot
        widen a resource to raw source keys)."""
        accepted = profile.accepted_fields.get(kind, frozenset()) & OPTIONAL_FIELDS[kind]
        if self.fields is not None and kind in self.fields:
            return accepted & self.fields[kind]
        return accepted - SENSITIVE_FIELDS
