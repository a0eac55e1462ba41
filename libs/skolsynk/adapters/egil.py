"""The EGIL profile (SS 12000:2018 over SCIM) both ways, as pure functions.

* :func:`to_egil` turns one vendor resource (the minimised dict :func:`skolsynk.domain.selection.project`
  produces) into the SCIM body the reference EGIL client sends, for the EGIL dispatcher;
* :func:`egil_send_order` is the sort key of the EGIL send order;
* :func:`from_egil` turns a body an EGIL client pushed to skolsynk into a canonical
  :class:`~skolsynk.contracts.source.SourceRecord`, for the EGIL receiver.

The wire format is described in ``egil-scim-protocol.md`` (shared reference material): the id of every
resource is its ``externalId`` (a UUID, always lower case here), references are
``{"value": <id>, "$ref": "<Endpoint>/<id>"}``, teachers of an Activity are *Employments*, and a PUT is a
full replacement, so absent optional attributes are left out rather than sent as ``null``.

Enumerations: 2.1 school types are folded into the 2018 set (:data:`SCHOOL_TYPE_TO_2018`), 2.1 duty roles
into the five employment roles (:func:`employment_role`). Incoming 2018 values are mapped back to 2.1 where
the model knows how (``FSK`` -> ``FKLASS``, ``SUV`` -> ``SARVUX``); anything it does not know is passed on
verbatim so that the normaliser's validation reports it as a data-quality finding.

:class:`EgilMappingError` is raised for a body that cannot be mapped at all (not an object, a missing
``externalId`` or other attribute EGIL requires, a value of the wrong JSON type). Its message names the
attribute and the problem, never a value, so it is safe to log and to return to the client.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any, Final
from uuid import UUID

from skolsynk.contracts.source import SourceRecord
from skolsynk.domain.ss12000 import (
    LEGACY_SCHOOL_TYPES,
    DutyRole,
    EmailType,
    EntityKind,
    GroupType,
    SchoolType,
    SecurityMarking,
)

CORE_USER_SCHEMA: Final = "urn:ietf:params:scim:schemas:core:2.0:User"
SCHEMA_PREFIX: Final = "urn:scim:schemas:extension:sis:school:1.0:"
#: The extension URN of Users, which is also the attribute name of the extension object.
USER_EXTENSION: Final = SCHEMA_PREFIX + "User"


class EgilMappingError(ValueError):
    """A body (or resource) that cannot be mapped. ``field`` is the attribute path, ``problem`` what is
    wrong with it; neither ever contains a value from the body."""

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"{field}: {problem}")


class EgilResourceType(StrEnum):
    """The seven EGIL resource types; the value is the endpoint (collection) name."""

    ORGANISATIONS = "Organisations"
    SCHOOL_UNIT_GROUPS = "SchoolUnitGroups"
    SCHOOL_UNITS = "SchoolUnits"
    USERS = "Users"
    EMPLOYMENTS = "Employments"
    STUDENT_GROUPS = "StudentGroups"
    ACTIVITIES = "Activities"

    @property
    def endpoint(self) -> str:
        return self.value

    @property
    def type_name(self) -> str:
        """The singular SS 12000:2018 type name (``User``, ``StudentGroup`` ...)."""
        return _TYPE_NAMES[self]

    @property
    def schemas(self) -> list[str]:
        """The ``schemas`` list of a body of this type."""
        if self is EgilResourceType.USERS:
            return [CORE_USER_SCHEMA, USER_EXTENSION]
        return [SCHEMA_PREFIX + self.type_name]

    @property
    def kind(self) -> EntityKind:
        """The canonical kind this type maps to."""
        return _KINDS[self]

    @classmethod
    def for_kind(cls, kind: EntityKind | str) -> EgilResourceType:
        return _TYPES_BY_KIND[EntityKind(kind)]


_TYPE_NAMES: Final[dict[EgilResourceType, str]] = {
    EgilResourceType.ORGANISATIONS: "Organisation",
    EgilResourceType.SCHOOL_UNIT_GROUPS: "SchoolUnitGroup",
    EgilResourceType.SCHOOL_UNITS: "SchoolUnit",
    EgilResourceType.USERS: "User",
    EgilResourceType.EMPLOYMENTS: "Employment",
    EgilResourceType.STUDENT_GROUPS: "StudentGroup",
    EgilResourceType.ACTIVITIES: "Activity",
}
_KINDS: Final[dict[EgilResourceType, EntityKind]] = {
    EgilResourceType.ORGANISATIONS: EntityKind.ORGANISATION,
    EgilResourceType.SCHOOL_UNIT_GROUPS: EntityKind.SCHOOL_UNIT_GROUP,
    EgilResourceType.SCHOOL_UNITS: EntityKind.SCHOOL_UNIT,
    EgilResourceType.USERS: EntityKind.PERSON,
    EgilResourceType.EMPLOYMENTS: EntityKind.DUTY,
    EgilResourceType.STUDENT_GROUPS: EntityKind.GROUP,
    EgilResourceType.ACTIVITIES: EntityKind.ACTIVITY,
}
_TYPES_BY_KIND: Final[dict[EntityKind, EgilResourceType]] = {kind: t for t, kind in _KINDS.items()}

# --- enumerations ----------------------------------------------------------------------------------

#: The SS 12000:2018 school types.
SCHOOL_TYPES_2018: Final = frozenset(
    {"FS", "FSK", "FTH", "GR", "GRS", "SP", "SAM", "GY", "GYS", "VUX", "SUV", "YH", "FHS", "HS", "AU"}
)
_FOLDED_2018: Final[dict[SchoolType, str]] = {
    SchoolType.FKLASS: "FSK",
    SchoolType.OPPFTH: "FTH",
    SchoolType.VUXGR: "VUX",
    SchoolType.VUXGY: "VUX",
    SchoolType.VUXSFI: "VUX",
    SchoolType.SARVUX: "SUV",
    SchoolType.SARVUXGR: "SUV",
    SchoolType.SARVUXGY: "SUV",
    SchoolType.VUXSARGR: "SUV",
    SchoolType.VUXSARTR: "SUV",
    SchoolType.VUXSARGY: "SUV",
    SchoolType.ABU: "AU",
    SchoolType.KU: "AU",
    SchoolType.KKU: "AU",
    SchoolType.SFI: "AU",
    SchoolType.STF: "AU",
    SchoolType.TR: "AU",
}
#: Every 2.1 school type -> its 2018 code (``FKLASS`` -> ``FSK``, the adult-education family -> ``VUX`` or
#: ``SUV``, the rest of the non-school forms -> ``AU``; codes both versions share are unchanged).
SCHOOL_TYPE_TO_2018: Final[dict[SchoolType, str]] = {st: _FOLDED_2018.get(st, st.value) for st in SchoolType}

#: The SS 12000:2018 employment roles; every other 2.1 duty role is sent as "Annan personal".
EMPLOYMENT_ROLES: Final = frozenset(
    {DutyRole.REKTOR, DutyRole.LARARE, DutyRole.FORSKOLLARARE, DutyRole.OVRIG_PEDAGOGISK_PERSONAL}
)
#: The 2018 student group types; every other 2.1 group type is sent as "Övrigt".
STUDENT_GROUP_TYPES: Final = frozenset(
    {GroupType.KLASS, GroupType.UNDERVISNING, GroupType.MENTOR, GroupType.SCHEMA, GroupType.OVRIGT}
)
#: 2.1 e-mail type -> SCIM e-mail type, and back (``work`` depends on the user, see :func:`from_egil`).
_EMAIL_TYPE_TO_SCIM: Final[dict[EmailType, str]] = {
    EmailType.PRIVAT: "home",
    EmailType.SKOLA_ELEV: "work",
    EmailType.SKOLA_PERSONAL: "work",
    EmailType.ARBETE_OVRIGT: "other",
}
_EMAIL_TYPE_FROM_SCIM: Final[dict[str, EmailType]] = {"home": EmailType.PRIVAT, "other": EmailType.ARBETE_OVRIGT}


def school_type_to_2018(value: SchoolType | str) -> str:
    """A 2.1 (or 2.0/2018) school type as its 2018 code; unknown values are returned as given."""
    canonical = school_type_from_2018(value)
    if isinstance(canonical, SchoolType):
        return SCHOOL_TYPE_TO_2018[canonical]
    return canonical


def school_type_from_2018(value: str) -> SchoolType | str:
    """A 2018 (or 2.0/2.1) school type as a 2.1 :class:`SchoolType` (``FSK`` -> ``FKLASS``, ``SUV`` ->
    ``SARVUX``); a value the model does not know is returned stripped, for validation to report."""
    code = value.strip().upper()
    if code in LEGACY_SCHOOL_TYPES:
        return LEGACY_SCHOOL_TYPES[code]
    try:
        return SchoolType(code)
    except ValueError:
        return value.strip()


def employment_role(role: DutyRole | str) -> str:
    """A 2.1 duty role as a 2018 ``employmentRole``: Rektor, Lärare, Förskollärare and Övrig pedagogisk
    personal are kept; the 2.1 teaching roles that 2018 lacks (Förstelärare, Speciallärare/specialpedagog)
    are "Lärare", so vendors treat them as teachers; every other role (Fritidspedagog, Kurator ...) is
    "Annan personal"."""
    try:
        duty_role = DutyRole(role)
    except ValueError:
        return DutyRole.ANNAN_PERSONAL.value
    if duty_role in (DutyRole.FORSTELARARE, DutyRole.SPECIALLARARE):
        return DutyRole.LARARE.value
    return duty_role.value if duty_role in EMPLOYMENT_ROLES else DutyRole.ANNAN_PERSONAL.value


def student_group_type(group_type: GroupType | str | None) -> str:
    """A 2.1 group type as a 2018 ``studentGroupType`` (Klass, Undervisning, Mentor, Schema, else Övrigt)."""
    try:
        value = GroupType(group_type) if group_type is not None else GroupType.OVRIGT
    except ValueError:
        return GroupType.OVRIGT.value
    return value.value if value in STUDENT_GROUP_TYPES else GroupType.OVRIGT.value


# --- send order ------------------------------------------------------------------------------------

_SEND_RANK: Final[dict[EgilResourceType, int]] = {
    EgilResourceType.ORGANISATIONS: 0,
    EgilResourceType.SCHOOL_UNIT_GROUPS: 1,
    EgilResourceType.SCHOOL_UNITS: 2,
    EgilResourceType.USERS: 3,  # students 3, everyone else 4
    EgilResourceType.EMPLOYMENTS: 5,
    EgilResourceType.STUDENT_GROUPS: 6,
    EgilResourceType.ACTIVITIES: 7,
}
_LAST_RANK: Final = 7


def egil_send_order(
    resource_type: EgilResourceType | EntityKind | str,
    resource_id: str | UUID,
    *,
    delete: bool = False,
    student: bool = False,
) -> tuple[int, int, str]:
    """The sort key of one request in the EGIL send order.

    All creates and updates come first, type by type: Organisation, SchoolUnitGroup, SchoolUnit, Users
    that are students (``student=True``), other Users, Employment, StudentGroup, Activity. Then all
    deletes (``delete=True``) in the reverse type order (so students are deleted after teachers). Within a
    type, requests go in ascending (lower-case) id string order, for deletes too.
    ``resource_type`` is an :class:`EgilResourceType`, its endpoint name or a canonical kind.
    """
    try:
        egil_type = EgilResourceType(resource_type)
    except ValueError:
        egil_type = EgilResourceType.for_kind(resource_type)
    rank = _SEND_RANK[egil_type]
    if egil_type is EgilResourceType.USERS and not student:
        rank += 1
    key = str(resource_id).strip().lower()
    return (1, _LAST_RANK - rank, key) if delete else (0, rank, key)


def is_student(resource: Mapping[str, Any]) -> bool:
    """Whether a User counts as a student for :func:`egil_send_order`: a vendor resource whose roles
    include ``student`` (or, without roles, that has enrolments), or an EGIL body with enrolments."""
    roles = resource.get("roles")
    if isinstance(roles, list | tuple):
        return "student" in roles
    if resource.get("enrolments"):
        return True
    extension = resource.get(USER_EXTENSION)
    return isinstance(extension, Mapping) and bool(extension.get("enrolments"))


# --- canonical vendor resource -> EGIL body ---------------------------------------------------------


def _egil_id(value: object, field: str) -> str:
    if isinstance(value, UUID):
        return str(value)
    if not isinstance(value, str):
        raise EgilMappingError(field, "missing or not a string")
    try:
        return str(UUID(value.strip()))
    except ValueError:
        raise EgilMappingError(field, "not a UUID") from None


def _ref(endpoint: EgilResourceType, value: object, field: str) -> dict[str, str]:
    ref_id = _egil_id(value, field)
    return {"value": ref_id, "$ref": f"{endpoint.endpoint}/{ref_id}"}


def _required_text(resource: Mapping[str, Any], name: str, field: str) -> str:
    value = resource.get(name)
    if not isinstance(value, str) or not value.strip():
        raise EgilMappingError(field, "missing or empty")
    return value


def _optional_text(resource: Mapping[str, Any], name: str, field: str) -> str | None:
    value = resource.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise EgilMappingError(field, "not a string")
    return value


def _list_of(resource: Mapping[str, Any], name: str, field: str) -> list[Any]:
    value = resource.get(name)
    if value is None:
        return []
    if not isinstance(value, list | tuple):
        raise EgilMappingError(field, "not a list")
    return list(value)


def _user_body(resource: Mapping[str, Any]) -> dict[str, Any]:
    given = _required_text(resource, "given_name", "name.givenName")
    family = _required_text(resource, "family_name", "name.familyName")
    eppn = _list_of(resource, "eppn", "userName")
    if not eppn or not isinstance(eppn[0], str) or not eppn[0].strip():
        raise EgilMappingError("userName", "the person has no eduPersonPrincipalName")
    name: dict[str, str] = {"familyName": family, "givenName": given}
    middle = _optional_text(resource, "middle_name", "name.middleName")
    if middle:
        name["middleName"] = middle
    body: dict[str, Any] = {
        "schemas": EgilResourceType.USERS.schemas,
        "externalId": _egil_id(resource.get("id"), "externalId"),
        "userName": eppn[0].strip(),
        "displayName": f"{given} {family}",
        "name": name,
    }
    emails: list[dict[str, str]] = []
    for index, email in enumerate(_list_of(resource, "emails", "emails")):
        if not isinstance(email, Mapping) or not isinstance(email.get("value"), str):
            raise EgilMappingError(f"emails[{index}].value", "missing or not a string")
        try:
            scim_type = _EMAIL_TYPE_TO_SCIM[EmailType(email.get("type", EmailType.SKOLA_PERSONAL))]
        except ValueError:
            raise EgilMappingError(f"emails[{index}].type", "not an SS 12000 e-mail type") from None
        emails.append({"value": email["value"], "type": scim_type})
    if emails:
        body["emails"] = emails

    extension: dict[str, Any] = {}
    enrolments: list[dict[str, Any]] = []
    for index, enrolment in enumerate(_list_of(resource, "enrolments", "enrolments")):
        field = f"enrolments[{index}]"
        if not isinstance(enrolment, Mapping):
            raise EgilMappingError(field, "not an object")
        entry: dict[str, Any] = _ref(EgilResourceType.SCHOOL_UNITS, enrolment.get("school_unit_id"), f"{field}.value")
        year = enrolment.get("school_year")
        if year is not None:
            if isinstance(year, bool) or not isinstance(year, int):
                raise EgilMappingError(f"{field}.schoolYear", "not an integer")
            entry["schoolYear"] = year
        school_type = _optional_text(enrolment, "school_type", f"{field}.schoolType")
        if school_type:
            entry["schoolType"] = school_type_to_2018(school_type)
        programme = _optional_text(enrolment, "programme_code", f"{field}.programCode")
        if programme:
            entry["programCode"] = programme
        enrolments.append(entry)
    # A child's placement (förskola, fritidshem) has no 2018 resource of its own: it goes out as the
    # enrolment the 2018 profile has, at the school unit with the placement's school type.
    for index, placement in enumerate(_list_of(resource, "placements", "placements")):
        field = f"placements[{index}]"
        if not isinstance(placement, Mapping):
            raise EgilMappingError(field, "not an object")
        entry = _ref(EgilResourceType.SCHOOL_UNITS, placement.get("school_unit_id"), f"{field}.value")
        entry["schoolType"] = school_type_to_2018(_required_text(placement, "school_type", f"{field}.schoolType"))
        enrolments.append(entry)
    if enrolments:
        extension["enrolments"] = enrolments
    civic_no = _optional_text(resource, "civic_no", "civicNo")
    if civic_no:
        extension["civicNo"] = civic_no
    if "security_marking" in resource and resource["security_marking"] is not None:
        marking = resource["security_marking"]
        if isinstance(marking, bool):
            extension["securityMarking"] = marking
        elif isinstance(marking, str):
            extension["securityMarking"] = marking != SecurityMarking.INGEN.value
        else:
            raise EgilMappingError("securityMarking", "not a security marking")
    if extension:
        body[USER_EXTENSION] = extension
    return body


def to_egil(resource: Mapping[str, Any]) -> tuple[EgilResourceType, dict[str, Any]]:
    """One vendor resource (as :func:`~skolsynk.domain.selection.project` produces it) as the EGIL SCIM
    body to POST/PUT, and the type (endpoint) to send it to.

    * ``externalId`` is the resource id in lower case; references carry a relative ``$ref``.
    * Users: ``userName`` is the first eduPersonPrincipalName, ``displayName`` "given family"; the
      extension object carries the enrolments (school unit id, ``schoolYear`` as an integer, the 2018
      school type, ``programCode``), ``civicNo`` and ``securityMarking`` (a boolean: anything but "Ingen"
      is true) only when the resource has them (an unknown marking, null, is left out: never sent as
      false), and is left out when empty.
    * StudentGroups: ``studentMemberships`` are the resource's ``member_ids``. EGIL groups hold
      **students only** (teachers reach a group through Activities): a caller that cares passes a resource
      whose ``member_ids`` are the students' ids only; this function sends what it is given.
    * Activities: ``teachers`` are the duty ids as Employment references (with ``startDate`` / ``endDate``
      when the resource has their ``teacher_assignments``), ``topic`` the syllabus (a resource with
      ``syllabus``: its id, ``Course`` or ``Subject``, the name), ``parentActivity`` is empty.
    * A child's ``placements`` go out as enrolments (school unit, the placement's 2018 school type).
    * Optional attributes the resource lacks are left out (never ``null``); a missing attribute EGIL
      requires (a user's login or names, a school unit's code, a display name, an employment's role) or an
      id that is not a UUID raises :class:`EgilMappingError`.
    """
    try:
        kind = EntityKind(str(resource.get("kind")))
    except ValueError:
        raise EgilMappingError("kind", "not a canonical entity kind") from None
    egil_type = EgilResourceType.for_kind(kind)
    if egil_type is EgilResourceType.USERS:
        return egil_type, _user_body(resource)

    body: dict[str, Any] = {"schemas": egil_type.schemas, "externalId": _egil_id(resource.get("id"), "externalId")}
    if egil_type is EgilResourceType.EMPLOYMENTS:
        body["employedAt"] = _ref(EgilResourceType.SCHOOL_UNITS, resource.get("school_unit_id"), "employedAt")
        body["user"] = _ref(EgilResourceType.USERS, resource.get("person_id"), "user")
        body["employmentRole"] = employment_role(_required_text(resource, "role", "employmentRole"))
        signature = _optional_text(resource, "signature", "signature")
        if signature:
            body["signature"] = signature
        return egil_type, body

    body["displayName"] = _required_text(resource, "display_name", "displayName")
    if egil_type is EgilResourceType.SCHOOL_UNITS:
        body["schoolUnitCode"] = _required_text(resource, "school_unit_code", "schoolUnitCode")
        if resource.get("organisation_id") is not None:
            body["organisation"] = _ref(EgilResourceType.ORGANISATIONS, resource["organisation_id"], "organisation")
        if resource.get("school_unit_group_id") is not None:
            body["schoolUnitGroup"] = _ref(
                EgilResourceType.SCHOOL_UNIT_GROUPS, resource["school_unit_group_id"], "schoolUnitGroup"
            )
        school_types: list[str] = []
        for index, school_type in enumerate(_list_of(resource, "school_types", "schoolTypes")):
            if not isinstance(school_type, str):
                raise EgilMappingError(f"schoolTypes[{index}]", "not a string")
            code = school_type_to_2018(school_type)
            if code not in school_types:
                school_types.append(code)
        if school_types:
            body["schoolTypes"] = school_types
        municipality = _optional_text(resource, "municipality_code", "municipalityCode")
        if municipality:
            body["municipalityCode"] = municipality
    elif egil_type is EgilResourceType.STUDENT_GROUPS:
        body["studentGroupType"] = student_group_type(_optional_text(resource, "group_type", "studentGroupType"))
        school_type = _optional_text(resource, "school_type", "schoolType")
        if school_type:
            body["schoolType"] = school_type_to_2018(school_type)
        body["owner"] = _ref(EgilResourceType.SCHOOL_UNITS, resource.get("school_unit_id"), "owner")
        body["studentMemberships"] = [
            _ref(EgilResourceType.USERS, member, f"studentMemberships[{index}]")
            for index, member in enumerate(_list_of(resource, "member_ids", "studentMemberships"))
        ]
    elif egil_type is EgilResourceType.ACTIVITIES:
        body["owner"] = _ref(EgilResourceType.SCHOOL_UNITS, resource.get("school_unit_id"), "owner")
        body["groups"] = [
            _ref(EgilResourceType.STUDENT_GROUPS, group, f"groups[{index}]")
            for index, group in enumerate(_list_of(resource, "group_ids", "groups"))
        ]
        dates = _teacher_dates(resource)
        body["teachers"] = [
            _ref(EgilResourceType.EMPLOYMENTS, duty, f"teachers[{index}]") | dates.get(str(duty).lower(), {})
            for index, duty in enumerate(_list_of(resource, "teacher_duty_ids", "teachers"))
        ]
        topic = _topic(resource.get("syllabus"))
        if topic is not None:
            body["topic"] = topic
        body["parentActivity"] = []
    return egil_type, body


def _teacher_dates(resource: Mapping[str, Any]) -> dict[str, dict[str, str]]:
    """Duty id -> the 2018 ``startDate`` / ``endDate`` of that teacher's part in the activity."""
    dates: dict[str, dict[str, str]] = {}
    for index, assignment in enumerate(_list_of(resource, "teacher_assignments", "teachers")):
        if not isinstance(assignment, Mapping):
            raise EgilMappingError(f"teachers[{index}]", "not an object")
        entry = {
            name: str(assignment[key])
            for key, name in (("start_date", "startDate"), ("end_date", "endDate"))
            if assignment.get(key) is not None
        }
        dates[_egil_id(assignment.get("duty_id"), f"teachers[{index}].value")] = entry
    return dates


def _topic(syllabus: object) -> dict[str, Any] | None:
    """An activity's syllabus as the 2018 ``topic``: a Course when it has a course code, else a Subject,
    named by the course's or the subject's name. No ``$ref``: the EGIL profile has no /Courses or
    /Subjects to refer to, and the codes have no place on the Activity."""
    if syllabus is None:
        return None
    if not isinstance(syllabus, Mapping):
        raise EgilMappingError("topic", "not an object")
    course = _optional_text(syllabus, "course_code", "topic.type")
    display = _optional_text(syllabus, "course_name", "topic.display") if course else None
    return {
        "value": _egil_id(syllabus.get("id"), "topic.value"),
        "type": "Course" if course else "Subject",
        "display": display or _required_text(syllabus, "subject_name", "topic.display"),
    }


# --- EGIL body -> canonical source record -----------------------------------------------------------


def _key(value: object, field: str) -> str:
    """A source key: a non-empty string, lower case (UUIDs in their canonical form)."""
    if not isinstance(value, str) or not value.strip():
        raise EgilMappingError(field, "missing or not a string")
    text = value.strip()
    try:
        return str(UUID(text))
    except ValueError:
        return text.lower()


def _ref_key(body: Mapping[str, Any], name: str, field: str, *, required: bool) -> str | None:
    """The id a reference ``{"value": <id>, ...}`` points to (``None`` when absent and optional)."""
    reference = body.get(name)
    if reference is None:
        if required:
            raise EgilMappingError(field, "missing")
        return None
    if not isinstance(reference, Mapping):
        raise EgilMappingError(field, "not a reference object")
    return _key(reference.get("value"), f"{field}.value")


def _ref_keys(body: Mapping[str, Any], name: str) -> list[str]:
    references = body.get(name)
    if references is None:
        return []
    if not isinstance(references, list):
        raise EgilMappingError(name, "not a list")
    keys: list[str] = []
    for index, reference in enumerate(references):
        if not isinstance(reference, Mapping):
            raise EgilMappingError(f"{name}[{index}]", "not a reference object")
        key = _key(reference.get("value"), f"{name}[{index}].value")
        if key not in keys:
            keys.append(key)
    return keys


def _text(body: Mapping[str, Any], name: str, field: str, *, required: bool = False) -> str | None:
    value = body.get(name)
    if value is None:
        if required:
            raise EgilMappingError(field, "missing")
        return None
    if not isinstance(value, str):
        raise EgilMappingError(field, "not a string")
    if required and not value.strip():
        raise EgilMappingError(field, "empty")
    return value.strip()


def _school_type_value(value: object, field: str) -> str:
    if not isinstance(value, str):
        raise EgilMappingError(field, "not a string")
    mapped = school_type_from_2018(value)
    return mapped.value if isinstance(mapped, SchoolType) else mapped


def _dates(body: Mapping[str, Any], field: str, data: dict[str, Any]) -> None:
    for name, target in (("startDate", "start_date"), ("endDate", "end_date")):
        value = _text(body, name, f"{field}{name}")
        if value:
            data[target] = value


def _school_year(value: object, field: str) -> int | None:
    # The reference client sends an integer, but an organiser's template may quote it.
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise EgilMappingError(field, "not an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    raise EgilMappingError(field, "not an integer")


def _person(body: Mapping[str, Any]) -> dict[str, Any]:
    name = body.get("name")
    if not isinstance(name, Mapping):
        raise EgilMappingError("name", "missing or not an object")
    data: dict[str, Any] = {
        "given_name": _text(name, "givenName", "name.givenName", required=True),
        "family_name": _text(name, "familyName", "name.familyName", required=True),
    }
    middle = _text(name, "middleName", "name.middleName")
    if middle:
        data["middle_name"] = middle
    data["eppn"] = [_text(body, "userName", "userName", required=True)]

    extension = body.get(USER_EXTENSION)
    if extension is None:
        extension = {}
    if not isinstance(extension, Mapping):
        raise EgilMappingError(USER_EXTENSION, "not an object")
    raw_enrolments = extension.get("enrolments")
    if raw_enrolments is None:
        raw_enrolments = []
    if not isinstance(raw_enrolments, list):
        raise EgilMappingError("enrolments", "not a list")

    enrolments: list[dict[str, Any]] = []
    for index, raw in enumerate(raw_enrolments):
        field = f"enrolments[{index}]"
        if not isinstance(raw, Mapping):
            raise EgilMappingError(field, "not an object")
        enrolment: dict[str, Any] = {"school_unit": _key(raw.get("value"), f"{field}.value")}
        if raw.get("schoolType") is not None:
            enrolment["school_type"] = _school_type_value(raw["schoolType"], f"{field}.schoolType")
        year = _school_year(raw.get("schoolYear"), f"{field}.schoolYear")
        if year is not None:
            enrolment["school_year"] = year
        programme = _text(raw, "programCode", f"{field}.programCode")
        if programme:
            enrolment["programme_code"] = programme
        _dates(raw, f"{field}.", enrolment)
        enrolments.append(enrolment)

    # EGIL has only SCIM's e-mail types: "work" (or none) is the school address, a student's when the
    # user has enrolments, a staff member's otherwise.
    work_type = EmailType.SKOLA_ELEV if enrolments else EmailType.SKOLA_PERSONAL
    raw_emails = body.get("emails")
    if raw_emails is None:
        raw_emails = []
    if not isinstance(raw_emails, list):
        raise EgilMappingError("emails", "not a list")
    emails: list[dict[str, str]] = []
    for index, raw in enumerate(raw_emails):
        if not isinstance(raw, Mapping):
            raise EgilMappingError(f"emails[{index}]", "not an object")
        value = _text(raw, "value", f"emails[{index}].value", required=True)
        scim_type = _text(raw, "type", f"emails[{index}].type") or ""
        try:
            email_type = EmailType(scim_type)  # a 2.1 value passed through by a 2020-aware template
        except ValueError:
            email_type = _EMAIL_TYPE_FROM_SCIM.get(scim_type.lower(), work_type)
        emails.append({"value": str(value), "type": email_type.value})
    data["emails"] = emails

    civic_no = _text(extension, "civicNo", "civicNo")
    if civic_no:
        data["civic_no"] = civic_no
    marking = extension.get("securityMarking")
    if isinstance(marking, bool):
        # The 2018 boolean cannot tell the two protection levels apart: take the strictest.
        data["security_marking"] = (
            SecurityMarking.SKYDDAD_FOLKBOKFORING.value if marking else SecurityMarking.INGEN.value
        )
    elif isinstance(marking, str):
        data["security_marking"] = marking.strip()
    elif marking is not None:
        raise EgilMappingError("securityMarking", "not a boolean")
    data["enrolments"] = enrolments
    return data


def from_egil(resource_type: EgilResourceType | str, body: Mapping[str, Any]) -> SourceRecord:
    """One EGIL body (as an EGIL client POSTs or PUTs it) as a canonical source record, keyed by its
    ``externalId`` in lower case.

    References become source keys (lower case): a SchoolUnit's ``organisation``/``schoolUnitGroup``, an
    enrolment's ``value`` (the school unit), an Employment's ``user``/``employedAt``, a StudentGroup's
    ``owner``/``studentMemberships``, an Activity's ``owner``/``groups`` (or the old single ``group``)/
    ``teachers`` (Employments, i.e. duties). 2018 school types become 2.1 ones, the boolean
    ``securityMarking`` true becomes "Skyddad folkbokföring" and false "Ingen"; a User without it (the
    captured client does not send it unless its template has it) has an unknown marking, not "Ingen".
    SCIM e-mail types become SS 12000 ones.
    A missing ``studentGroupType`` is "Övrigt". A User's ``displayName`` is not kept (the model has given
    and family names); unknown attributes (``schemas``, ``userRelations``, ``parentActivity`` ...) are
    ignored. Content is not validated here (the normaliser does that); only
    a body that cannot be mapped raises :class:`EgilMappingError`.
    """
    try:
        egil_type = EgilResourceType(resource_type)
    except ValueError:
        raise EgilMappingError("resourceType", "not an EGIL resource type") from None
    if not isinstance(body, Mapping):
        raise EgilMappingError("body", "not a JSON object")
    key = _key(body.get("externalId"), "externalId")
    data: dict[str, Any]

    if egil_type is EgilResourceType.USERS:
        data = _person(body)
    elif egil_type is EgilResourceType.EMPLOYMENTS:
        data = {
            "person": _ref_key(body, "user", "user", required=True),
            "school_unit": _ref_key(body, "employedAt", "employedAt", required=True),
            "role": _text(body, "employmentRole", "employmentRole", required=True),
        }
        signature = _text(body, "signature", "signature")
        if signature:
            data["signature"] = signature
        _dates(body, "", data)
    else:
        data = {"display_name": _text(body, "displayName", "displayName", required=True)}
        if egil_type is EgilResourceType.SCHOOL_UNITS:
            data["school_unit_code"] = _text(body, "schoolUnitCode", "schoolUnitCode", required=True)
            raw_types = body.get("schoolTypes")
            if raw_types is not None and not isinstance(raw_types, list):
                raise EgilMappingError("schoolTypes", "not a list")
            data["school_types"] = [
                _school_type_value(value, f"schoolTypes[{index}]") for index, value in enumerate(raw_types or [])
            ]
            municipality = _text(body, "municipalityCode", "municipalityCode")
            if municipality:
                data["municipality_code"] = municipality
            organisation = _ref_key(body, "organisation", "organisation", required=False)
            if organisation:
                data["organisation"] = organisation
            # EGIL spells it schoolUnitGroup; the 2018 schema SchoolUnitGroup.
            group_name = "schoolUnitGroup" if body.get("schoolUnitGroup") is not None else "SchoolUnitGroup"
            unit_group = _ref_key(body, group_name, "schoolUnitGroup", required=False)
            if unit_group:
                data["school_unit_group"] = unit_group
            _dates(body, "", data)
        elif egil_type is EgilResourceType.STUDENT_GROUPS:
            data["group_type"] = _text(body, "studentGroupType", "studentGroupType") or GroupType.OVRIGT.value
            if body.get("schoolType") is not None:
                data["school_type"] = _school_type_value(body["schoolType"], "schoolType")
            data["school_unit"] = _ref_key(body, "owner", "owner", required=True)
            memberships: list[dict[str, Any]] = []
            raw_members = body.get("studentMemberships")
            if raw_members is not None and not isinstance(raw_members, list):
                raise EgilMappingError("studentMemberships", "not a list")
            seen: set[str] = set()
            for index, member in enumerate(raw_members or []):
                field = f"studentMemberships[{index}]"
                if not isinstance(member, Mapping):
                    raise EgilMappingError(field, "not a reference object")
                membership: dict[str, Any] = {"person": _key(member.get("value"), f"{field}.value")}
                _dates(member, f"{field}.", membership)
                if membership["person"] not in seen:
                    seen.add(membership["person"])
                    memberships.append(membership)
            data["memberships"] = memberships
            _dates(body, "", data)
        elif egil_type is EgilResourceType.ACTIVITIES:
            data["school_unit"] = _ref_key(body, "owner", "owner", required=True)
            groups = _ref_keys(body, "groups")
            single = _ref_key(body, "group", "group", required=False)  # old EGIL clients
            if single and single not in groups:
                groups.append(single)
            data["groups"] = groups
            data["teachers"] = _ref_keys(body, "teachers")
            _dates(body, "", data)
    return SourceRecord(kind=egil_type.kind, key=key, data=data)
