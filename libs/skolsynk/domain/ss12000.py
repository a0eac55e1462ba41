"""The canonical model: SS 12000:2020 (2.1) entities, as skolsynk stores and reasons about them.

Every entity comes from one source of one organiser (tenant) and carries the source's own key
(``key``). References between entities are the referenced entity's source key within the same
source; the stable UUID of any entity is derived from (tenant, source, kind, key) by
:func:`skolsynk.domain.ids.entity_id`, so references never need rewriting and re-syncs always give
the same ids.

Enumerations keep SS 12000:2.1's Swedish values verbatim. Values of 2.0 and of the 2018 SCIM profile
are accepted and mapped (``KOMVUX`` -> ``VUX``, ``FSK`` -> ``FKLASS``, ``Stadsdel`` -> ``Förvaltning``
...); anything else is a validation error that the normaliser turns into a data-quality finding.
Dates are inclusive (a relation ending on D is active on D).
"""

from __future__ import annotations

import re
from datetime import date
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator


class EntityKind(StrEnum):
    ORGANISATION = "organisation"
    SCHOOL_UNIT_GROUP = "school_unit_group"
    SCHOOL_UNIT = "school_unit"
    PERSON = "person"
    DUTY = "duty"
    GROUP = "group"
    SYLLABUS = "syllabus"
    ACTIVITY = "activity"
    PLACEMENT = "placement"


#: The order in which upserts are sent (references first); deletions go in reverse.
KIND_ORDER: tuple[EntityKind, ...] = tuple(EntityKind)

#: Kinds kept in the canonical state but never delivered as resources of their own: a syllabus goes out
#: resolved onto its activities, a placement onto its child's person resource.
RESOLVED_KINDS: frozenset[EntityKind] = frozenset({EntityKind.SYLLABUS, EntityKind.PLACEMENT})
#: Kinds a vendor receives as resources.
VENDOR_KINDS: tuple[EntityKind, ...] = tuple(k for k in EntityKind if k not in RESOLVED_KINDS)


class SchoolType(StrEnum):
    FS = "FS"
    FKLASS = "FKLASS"
    FTH = "FTH"
    OPPFTH = "OPPFTH"
    GR = "GR"
    GRS = "GRS"
    TR = "TR"
    SP = "SP"
    SAM = "SAM"
    GY = "GY"
    GYS = "GYS"
    VUX = "VUX"
    VUXSFI = "VUXSFI"
    VUXGR = "VUXGR"
    VUXGY = "VUXGY"
    VUXSARGR = "VUXSARGR"
    VUXSARTR = "VUXSARTR"
    VUXSARGY = "VUXSARGY"
    SFI = "SFI"
    SARVUX = "SARVUX"
    SARVUXGR = "SARVUXGR"
    SARVUXGY = "SARVUXGY"
    KU = "KU"
    YH = "YH"
    FHS = "FHS"
    STF = "STF"
    KKU = "KKU"
    HS = "HS"
    ABU = "ABU"
    AU = "AU"


#: SS 12000:2.0 and 2018 (EGIL) school types that 2.1 names differently.
LEGACY_SCHOOL_TYPES: dict[str, SchoolType] = {
    "KOMVUX": SchoolType.VUX,  # 2.0
    "FSK": SchoolType.FKLASS,  # 2018
    "SUV": SchoolType.SARVUX,  # 2018
}


class OrganisationType(StrEnum):
    HUVUDMAN = "Huvudman"
    VERKSAMHETSOMRADE = "Verksamhetsområde"
    FORVALTNING = "Förvaltning"
    REKTORSOMRADE = "Rektorsområde"
    SKOLA = "Skola"
    SKOLENHET = "Skolenhet"
    VARUMARKE = "Varumärke"
    BOLAG = "Bolag"
    OVRIGT = "Övrigt"


LEGACY_ORGANISATION_TYPES: dict[str, OrganisationType] = {"Stadsdel": OrganisationType.FORVALTNING}


class DutyRole(StrEnum):
    REKTOR = "Rektor"
    LARARE = "Lärare"
    FORSKOLLARARE = "Förskollärare"
    BARNSKOTARE = "Barnskötare"
    BIBLIOTEKARIE = "Bibliotekarie"
    LARARASSISTENT = "Lärarassistent"
    FRITIDSPEDAGOG = "Fritidspedagog"
    ANNAN_PERSONAL = "Annan personal"
    SYV = "Studie- och yrkesvägledare"
    FORSTELARARE = "Förstelärare"
    KURATOR = "Kurator"
    SKOLSKOTERSKA = "Skolsköterska"
    SKOLLAKARE = "Skolläkare"
    SKOLPSYKOLOG = "Skolpsykolog"
    SPECIALLARARE = "Speciallärare/specialpedagog"
    SKOLADMINISTRATOR = "Skoladministratör"
    OVRIG_ARBETSLEDNING = "Övrig arbetsledning"
    OVRIG_PEDAGOGISK_PERSONAL = "Övrig pedagogisk personal"  # deprecated in 2.1, still valid
    FORSKOLECHEF = "Förskolechef"  # deprecated in 2.1, still valid


#: Duty roles that make a person a teacher for vendors; every other duty is "other staff".
TEACHING_ROLES: frozenset[DutyRole] = frozenset(
    {
        DutyRole.LARARE,
        DutyRole.FORSKOLLARARE,
        DutyRole.FORSTELARARE,
        DutyRole.SPECIALLARARE,
        DutyRole.FRITIDSPEDAGOG,
    }
)


class GroupType(StrEnum):
    UNDERVISNING = "Undervisning"
    KLASS = "Klass"
    MENTOR = "Mentor"
    PROVGRUPP = "Provgrupp"
    SCHEMA = "Schema"
    AVDELNING = "Avdelning"
    PERSONALGRUPP = "Personalgrupp"
    OVRIGT = "Övrigt"


class AssignmentRoleType(StrEnum):
    """SS 12000:2.1's ``AssignmentRoleTypeEnum``: a duty's task towards a group (teaching is not one: it
    is an Activity)."""

    MENTOR = "Mentor"
    FORSKOLLARARE = "Förskollärare"
    BARNSKOTARE = "Barnskötare"
    FRITIDSPEDAGOG = "Fritidspedagog"
    SPECIALPEDAGOG = "Specialpedagog"
    ELEVHALSOPERSONAL = "Elevhälsopersonal"
    PEDAGOGISK_LEDARE = "Pedagogisk ledare"
    SCHEMALAGGARE = "Schemaläggare"
    LARARASSISTENT = "Lärarassistent"
    ADMINISTRATIV_PERSONAL = "Administrativ personal"


#: The school types a Placement may have (förskola, fritidshem, öppen fritidsverksamhet).
PLACEMENT_SCHOOL_TYPES: frozenset[SchoolType] = frozenset({SchoolType.FS, SchoolType.FTH, SchoolType.OPPFTH})


class SecurityMarking(StrEnum):
    INGEN = "Ingen"
    SEKRETESSMARKERING = "Sekretessmarkering"
    SKYDDAD_FOLKBOKFORING = "Skyddad folkbokföring"


class PersonStatus(StrEnum):
    """SS 12000:2.1's ``personStatus`` (absent: ``Aktiv``, the spec's default)."""

    AKTIV = "Aktiv"
    UTVANDRAD = "Utvandrad"
    AVLIDEN = "Avliden"


class EmailType(StrEnum):
    PRIVAT = "Privat"
    SKOLA_ELEV = "Skola elev"
    SKOLA_PERSONAL = "Skola personal"
    ARBETE_OVRIGT = "Arbete övrigt"


def _school_type(value: Any) -> Any:
    if isinstance(value, str):
        value = value.strip().upper()
        return LEGACY_SCHOOL_TYPES.get(value, value)
    return value


def _organisation_type(value: Any) -> Any:
    # Spelling as 2.1 has it, in any case; 2.0's Stadsdel as Förvaltning. Anything else fails validation
    # (the normaliser makes that an ``organisation.type_unknown`` finding and keeps the organisation).
    if isinstance(value, str):
        folded = value.strip().casefold()
        for known in OrganisationType:
            if known.value.casefold() == folded:
                return known
        for legacy, known in LEGACY_ORGANISATION_TYPES.items():
            if legacy.casefold() == folded:
                return known
    return value


def known_organisation_type(value: Any) -> OrganisationType | None:
    """The OrganisationType ``value`` names (2.1's spelling in any case, or 2.0's), or None."""
    normalised = _organisation_type(value)
    return normalised if isinstance(normalised, OrganisationType) else None


def _casefold_enum(enum: type[StrEnum]) -> Any:
    def normalise(value: Any) -> Any:
        if isinstance(value, str):
            for member in enum:
                if member.value.casefold() == value.strip().casefold():
                    return member
        return value

    return normalise


def _security_marking(value: Any) -> Any:
    # SS 12000:2018 has a boolean: true cannot tell the two levels apart, so take the strictest. None
    # (the source did not say) stays None: unknown, which is not "Ingen".
    if value is True:
        return SecurityMarking.SKYDDAD_FOLKBOKFORING
    if value is False:
        return SecurityMarking.INGEN
    if isinstance(value, str):
        for marking in SecurityMarking:
            if marking.value.casefold() == value.strip().casefold():
                return marking
    return value


def _person_status(value: Any) -> Any:
    if isinstance(value, str):
        for status in PersonStatus:
            if status.value.casefold() == value.strip().casefold():
                return status
    return value


SchoolTypeField = Annotated[SchoolType, BeforeValidator(_school_type)]

SCHOOL_UNIT_CODE = re.compile(r"^[0-9]{8}$")
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[A-Za-z]{2,}$")
CIVIC_NO = re.compile(r"^(?:19|20)[0-9]{6}[0-9A-Z]{4}$")
KEY = Annotated[str, Field(min_length=1, max_length=200)]


class Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True, use_enum_values=False)


class Dated(Model):
    start_date: date | None = None
    end_date: date | None = None

    @model_validator(mode="after")
    def _dates_in_order(self) -> Dated:
        if self.start_date and self.end_date and self.start_date > self.end_date:
            raise ValueError("start_date is after end_date")
        return self

    def active_on(self, day: date) -> bool:
        return (self.start_date is None or self.start_date <= day) and (self.end_date is None or day <= self.end_date)


class Email(Model):
    value: str = Field(max_length=254)
    type: EmailType = EmailType.SKOLA_PERSONAL

    @field_validator("value")
    @classmethod
    def _valid(cls, value: str) -> str:
        if not EMAIL.match(value):
            raise ValueError("not a valid e-mail address")
        return value.lower()


class ExternalIdentifier(Model):
    """An id the person has elsewhere. The cloud provider's immutable user id (Google user id, Entra
    object id) travels here, so a vendor keeps the account when the e-mail address changes."""

    value: str = Field(min_length=1, max_length=200)
    context: str = Field(min_length=1, max_length=200, description="A URI naming the id space.")
    globally_unique: bool = True


class Enrolment(Dated):
    school_unit: KEY = Field(
        description="Source key of the SchoolUnit (SS 12000 enroledAt); an organisation above school units "
        "resolves only when exactly one school unit is beneath it."
    )
    school_type: SchoolTypeField
    school_year: int | None = Field(default=None, ge=0, le=10)
    cancelled: bool = False
    programme_code: str | None = Field(default=None, max_length=20)

    def active_on(self, day: date) -> bool:
        return not self.cancelled and super().active_on(day)


class Organisation(Model):
    """Any organisation of the organiser's tree that is not a school unit: the huvudman and every level
    between it and the school units (Förvaltning, Rektorsområde, Skola ...), linked by ``parent``."""

    kind: Literal[EntityKind.ORGANISATION] = EntityKind.ORGANISATION
    key: KEY
    display_name: str = Field(min_length=1, max_length=200)
    organisation_type: Annotated[OrganisationType | None, BeforeValidator(_organisation_type)] = Field(
        default=OrganisationType.HUVUDMAN,
        description="None: the source gave no type, or one SS 12000 does not have (a data-quality finding).",
    )
    parent: KEY | None = Field(default=None, description="Source key of the organisation above (parentOrganisation).")
    organisation_number: str | None = Field(default=None, max_length=20)
    organisation_code: str | None = Field(default=None, max_length=40)
    municipality_code: str | None = Field(default=None, pattern=r"^[0-9]{4}$")


class SchoolUnitGroup(Model):
    kind: Literal[EntityKind.SCHOOL_UNIT_GROUP] = EntityKind.SCHOOL_UNIT_GROUP
    key: KEY
    display_name: str = Field(min_length=1, max_length=200)


class SchoolUnit(Dated):
    kind: Literal[EntityKind.SCHOOL_UNIT] = EntityKind.SCHOOL_UNIT
    key: KEY
    display_name: str = Field(min_length=1, max_length=200)
    school_unit_code: str = Field(description="Skolverket's skolenhetskod: 8 digits.")
    school_types: list[SchoolTypeField] = Field(default_factory=list)
    municipality_code: str | None = Field(default=None, pattern=r"^[0-9]{4}$")
    organisation: KEY | None = Field(
        default=None,
        description="Source key of the Organisation above (parentOrganisation): the huvudman or a level below it.",
    )
    school_unit_group: KEY | None = None

    @field_validator("school_unit_code")
    @classmethod
    def _eight_digits(cls, value: str) -> str:
        if not SCHOOL_UNIT_CODE.match(value):
            raise ValueError("school unit code must be exactly 8 digits")
        return value


class Person(Model):
    kind: Literal[EntityKind.PERSON] = EntityKind.PERSON
    key: KEY
    given_name: str = Field(min_length=1, max_length=100)
    family_name: str = Field(min_length=1, max_length=100)
    middle_name: str | None = Field(default=None, max_length=100)
    eppn: list[str] = Field(default_factory=list, description="eduPersonPrincipalNames; the first is the login.")
    emails: list[Email] = Field(default_factory=list)
    civic_no: str | None = Field(default=None, description="Personnummer, 12 characters; sensitive.")
    birth_date: date | None = None
    security_marking: Annotated[SecurityMarking | None, BeforeValidator(_security_marking)] = Field(
        default=None,
        description="None: the source did not say (absent in the record), which is not 'Ingen': the organiser's "
        "setting decides whether such a person is treated as protected (by default they are).",
    )
    person_status: Annotated[PersonStatus | None, BeforeValidator(_person_status)] = Field(
        default=PersonStatus.AKTIV,
        description="Absent: Aktiv (SS 12000's default). None: a value SS 12000 does not know (a data-quality "
        "finding). Anything but Aktiv keeps the person out of every vendor's selection.",
    )
    external_identifiers: list[ExternalIdentifier] = Field(default_factory=list)
    enrolments: list[Enrolment] = Field(default_factory=list)

    @field_validator("civic_no")
    @classmethod
    def _civic_no(cls, value: str | None) -> str | None:
        if value is None:
            return None
        compact = value.replace("-", "").replace("+", "")
        if not CIVIC_NO.match(compact):
            raise ValueError("civic number must have 12 characters (YYYYMMDDNNNN)")
        return compact

    @property
    def marking_known(self) -> bool:
        """Whether the source said what the person's securityMarking is ("Ingen" included)."""
        return self.security_marking is not None

    def is_protected(self, *, unknown_is_protected: bool = True) -> bool:
        """Marked "Sekretessmarkering" or "Skyddad folkbokföring" (a 2018 ``true`` included); a person whose
        marking is unknown counts as protected unless ``unknown_is_protected`` is False (the organiser's
        choice, :class:`skolsynk.domain.subscription.MissingMarkingPolicy`)."""
        if self.security_marking is None:
            return unknown_is_protected
        return self.security_marking is not SecurityMarking.INGEN

    @property
    def active(self) -> bool:
        """personStatus Aktiv: anything else (Utvandrad, Avliden, a value SS 12000 does not know) is not."""
        return self.person_status is PersonStatus.AKTIV


class AssignmentRole(Dated):
    """One task of a duty towards a group (SS 12000 ``Duty.assignmentRole``): the mentor of a class, the
    förskollärare of an avdelning ... Dates are the relation's (inclusive)."""

    group: KEY = Field(description="Source key of the Group.")
    assignment_role_type: Annotated[AssignmentRoleType, BeforeValidator(_casefold_enum(AssignmentRoleType))]


class Duty(Dated):
    kind: Literal[EntityKind.DUTY] = EntityKind.DUTY
    key: KEY
    person: KEY
    school_unit: KEY = Field(
        description="Source key of where the duty is (SS 12000 dutyAt): a SchoolUnit, or an Organisation above "
        "school units, which resolves to every school unit beneath it."
    )
    role: DutyRole
    signature: str | None = Field(default=None, max_length=20)
    assignment_roles: list[AssignmentRole] = Field(
        default_factory=list, description="Tasks towards groups (SS 12000 assignmentRole): mentors and the like."
    )


class Membership(Dated):
    person: KEY


class Group(Dated):
    kind: Literal[EntityKind.GROUP] = EntityKind.GROUP
    key: KEY
    display_name: str = Field(min_length=1, max_length=200)
    group_type: GroupType
    school_type: SchoolTypeField | None = None
    school_unit: KEY = Field(
        description="Source key of the SchoolUnit (SS 12000 organisation); an organisation above school units "
        "resolves only when exactly one school unit is beneath it."
    )
    memberships: list[Membership] = Field(default_factory=list)


class Syllabus(Model):
    """A subject or course (SS 12000 ``Syllabus``, from ``/syllabuses``) that activities refer to: what
    learning-material vendors license by. Vendors get it resolved onto each activity, never on its own."""

    kind: Literal[EntityKind.SYLLABUS] = EntityKind.SYLLABUS
    key: KEY
    subject_name: str = Field(min_length=1, max_length=200, description="Matematik, Svenska som andraspråk ...")
    subject_code: str | None = Field(default=None, max_length=40, description="Skolverket's code, e.g. GRGRMAT01.")
    subject_designation: str | None = Field(default=None, max_length=20, description="The short code, e.g. MA.")
    course_code: str | None = Field(default=None, max_length=40, description="Set for a course, e.g. MATMAT01a.")
    course_name: str | None = Field(default=None, max_length=200, description="Set for a course, e.g. Matematik 1a.")
    school_type: SchoolTypeField | None = None
    official: bool | None = Field(default=None, description="Defined by Skolverket (or another authority).")


class TeacherAssignment(Dated):
    """When one teacher takes part in an activity (SS 12000 ``DutyAssignment`` startDate / endDate)."""

    duty: KEY = Field(description="Source key of the Duty; one of the activity's teachers.")


class Activity(Dated):
    kind: Literal[EntityKind.ACTIVITY] = EntityKind.ACTIVITY
    key: KEY
    display_name: str = Field(min_length=1, max_length=200)
    school_unit: KEY = Field(
        description="Source key of the SchoolUnit (SS 12000 organisation); an organisation above school units "
        "resolves only when exactly one school unit is beneath it."
    )
    groups: list[KEY] = Field(default_factory=list)
    teachers: list[KEY] = Field(default_factory=list, description="Source keys of Duties.")
    teacher_assignments: list[TeacherAssignment] = Field(
        default_factory=list,
        description="The dates of teachers' assignments, for the teachers whose source gives them: a teacher "
        "counts only while theirs is active; a teacher without an entry teaches the whole activity.",
    )
    syllabus: KEY | None = Field(default=None, description="Source key of the Syllabus (subject or course).")

    @model_validator(mode="after")
    def _assignments_of_teachers(self) -> Activity:
        if any(a.duty not in self.teachers for a in self.teacher_assignments):
            raise ValueError("teacher_assignments names a duty that is not among teachers")
        return self

    def teaching_on(self, duty: str, day: date) -> bool:
        """Whether the teacher with duty ``duty`` takes part on ``day`` (their assignment's dates)."""
        return all(a.active_on(day) for a in self.teacher_assignments if a.duty == duty)


class Placement(Dated):
    """A child's place at a förskola or fritidshem (SS 12000 ``Placement``, from ``/placements``): a
    relation like an enrolment, selected only for subscriptions that ask for placements."""

    kind: Literal[EntityKind.PLACEMENT] = EntityKind.PLACEMENT
    key: KEY
    child: KEY = Field(description="Source key of the Person placed.")
    school_unit: KEY = Field(description="Source key of the SchoolUnit (SS 12000 placedAt).")
    school_type: SchoolTypeField = Field(description="FS, FTH or OPPFTH.")
    group: KEY | None = Field(default=None, description="Source key of the Group (the avdelning), if any.")

    @field_validator("school_type")
    @classmethod
    def _placement_school_type(cls, value: SchoolType) -> SchoolType:
        if value not in PLACEMENT_SCHOOL_TYPES:
            raise ValueError("a placement's school type is FS, FTH or OPPFTH")
        return value


Entity = Organisation | SchoolUnitGroup | SchoolUnit | Person | Duty | Group | Syllabus | Activity | Placement
ENTITY_MODELS: dict[EntityKind, type[Entity]] = {
    EntityKind.ORGANISATION: Organisation,
    EntityKind.SCHOOL_UNIT_GROUP: SchoolUnitGroup,
    EntityKind.SCHOOL_UNIT: SchoolUnit,
    EntityKind.PERSON: Person,
    EntityKind.DUTY: Duty,
    EntityKind.GROUP: Group,
    EntityKind.SYLLABUS: Syllabus,
    EntityKind.ACTIVITY: Activity,
    EntityKind.PLACEMENT: Placement,
}
