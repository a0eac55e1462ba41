"""Microsoft Graph Education objects as canonical source records: pure functions.

* **educationSchool** -> SchoolUnit (key: the Graph id). The school-unit code is ``schoolNumber`` when it
  has 8 digits, else ``externalId`` when that has 8 digits, else whichever is present (the normaliser
  then reports a malformed code). School types come from the tenant configuration (Graph has none).
* **educationUser** -> Person (key: the Graph id, which is the Entra object id): ``givenName``,
  ``surname``, ``middleName``, ``userPrincipalName`` as the login (eppn), ``mail`` (type ``Skola elev``
  for students, ``Skola personal`` for teachers), ``student.birthDate``; the Entra object id as an
  external identifier (context: the tenant's token issuer), the SIS id (``student.externalId`` /
  ``teacher.externalId`` / ``externalId``) as a second one.

  - ``primaryRole == "student"``: one enrolment per school the user belongs to (within the school
    filter), school type from the configuration, school year from ``student.grade`` (``7``, ``07``,
    ``F``/``FK`` = 0) or else from ``graduationYear``;
  - ``primaryRole == "teacher"``: one Duty per school (key ``{user id}:{school id}``, role from the
    configuration, ``Lärare`` by default);
  - any other role (``none``, ``unknownFutureValue``) is not provisioned.
* **educationClass** -> Group (key: the Graph id; members who are not the class's teachers) and Activity
  (same key; the group, and the teachers' duties at the class's school). The class's school is its first
  school within the filter; a class without one is not provisioned. ``term.startDate`` /
  ``term.endDate`` become the dates. The group type is ``class_group_type`` (``Undervisning``), or
  ``Klass`` when ``klass_pattern`` matches the display name.

Content is not validated here (the normaliser validates every record and reports findings);
:class:`GraphMappingError` is raised only for an object that cannot be mapped at all (not an object,
no id). Its message names the attribute, never a value.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from skolsynk.connectors.sources.microsoft import SourceConfig
from skolsynk.contracts.source import (
    ActivityFields,
    DutyFields,
    EmailFields,
    EnrolmentFields,
    ExternalIdentifierFields,
    GroupFields,
    MembershipFields,
    OrganisationFields,
    PersonFields,
    SchoolUnitFields,
    SourceRecord,
)
from skolsynk.domain.ss12000 import (
    SCHOOL_UNIT_CODE,
    EmailType,
    EntityKind,
    GroupType,
    OrganisationType,
    SchoolType,
    SecurityMarking,
)

#: Context of the SIS id School Data Sync carries (``externalId``): not globally unique.
SIS_CONTEXT = "urn:skolsynk:microsoft:sis-id"
ORGANISATION_KEY = "organisation"
STUDENT, TEACHER = "student", "teacher"
#: Years of each school type after which a student graduates (for ``graduationYear``).
FINAL_YEAR: dict[SchoolType, int] = {SchoolType.GR: 9, SchoolType.GRS: 9, SchoolType.GY: 3, SchoolType.GYS: 4}
_GRADE = re.compile(r"^(?:[ÅåAa][Kk]\.?\s*)?0*([0-9]{1,2})$")
_DATE = re.compile(r"^([0-9]{4}-[0-9]{2}-[0-9]{2})")


class GraphMappingError(ValueError):
    """A Graph object that cannot be mapped; ``field`` and ``problem`` never contain a value."""

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"{field}: {problem}")


def object_id(obj: Any) -> str:
    """The Graph id of ``obj`` (lower case), or :class:`GraphMappingError`."""
    if not isinstance(obj, Mapping):
        raise GraphMappingError("object", "not a JSON object")
    value = obj.get("id")
    if not isinstance(value, str) or not value.strip():
        raise GraphMappingError("id", "missing or not a string")
    return value.strip().lower()


def _text(obj: Mapping[str, Any], name: str) -> str | None:
    value = obj.get(name)
    if isinstance(value, str) and value.strip():
        return value.strip()
    return None


def _section(obj: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = obj.get(name)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise GraphMappingError(name, "not an object")
    return value


def _date(value: Any) -> str | None:
    """``2001-01-01`` or ``2001-01-01T00:00:00Z`` as a date (Graph sends both)."""
    if isinstance(value, str):
        match = _DATE.match(value.strip())
        if match:
            try:
                return date.fromisoformat(match.group(1)).isoformat()
            except ValueError:
                return None
    return None


def issuer_context(source: SourceConfig) -> str:
    """The id space of Entra object ids: the tenant's token issuer (``iss`` of its v2 tokens), so a
    vendor can match a Microsoft sign-in (issuer + ``oid``) to the person."""
    return f"https://login.microsoftonline.com/{source.azure_tenant_id}/v2.0"


def duty_key(user_id: str, school_id: str) -> str:
    return f"{user_id}:{school_id}"


# ---------------------------------------------------------------------------------------------------
# schools


def school_unit_code(school: Mapping[str, Any]) -> str | None:
    number, external = _text(school, "schoolNumber"), _text(school, "externalId")
    for candidate in (number, external):
        if candidate is not None and SCHOOL_UNIT_CODE.match(candidate):
            return candidate
    return number or external


def in_filter(school: Mapping[str, Any], wanted: Iterable[str] | None) -> bool:
    """Whether the school passes the tenant's school filter (its Graph id, externalId or schoolNumber)."""
    if wanted is None:
        return True
    names = {n.strip().lower() for n in wanted}
    candidates = (school.get("id"), school.get("externalId"), school.get("schoolNumber"))
    return any(isinstance(c, str) and c.strip().lower() in names for c in candidates)


def organisation_record(source: SourceConfig) -> SourceRecord | None:
    if source.organisation_name is None:
        return None
    data = OrganisationFields(display_name=source.organisation_name, organisation_type=OrganisationType.HUVUDMAN.value)
    if source.municipality_code is not None:
        data["municipality_code"] = source.municipality_code
    return SourceRecord.of(EntityKind.ORGANISATION, ORGANISATION_KEY, data)


def map_school(school: Mapping[str, Any], source: SourceConfig) -> SourceRecord:
    key = object_id(school)
    code = school_unit_code(school)
    data = SchoolUnitFields(
        display_name=_text(school, "displayName") or code or key,
        school_types=[t.value for t in source.types_of(code)],
    )
    if code is not None:
        data["school_unit_code"] = code
    if source.municipality_code is not None:
        data["municipality_code"] = source.municipality_code
    if source.organisation_name is not None:
        data["organisation"] = ORGANISATION_KEY
    return SourceRecord.of(EntityKind.SCHOOL_UNIT, key, data)


@dataclass(frozen=True)
class SchoolInfo:
    """What mapping a user or class needs to know of a school in scope."""

    id: str
    code: str | None
    school_type: SchoolType


def school_info(school: Mapping[str, Any], source: SourceConfig) -> SchoolInfo:
    code = school_unit_code(school)
    return SchoolInfo(object_id(school), code, source.types_of(code)[0])


# ---------------------------------------------------------------------------------------------------
# users


def role_of(user: Mapping[str, Any]) -> str | None:
    """``student`` or ``teacher``; None for roles skolsynk does not provision."""
    role = user.get("primaryRole")
    if isinstance(role, str) and role.strip().lower() in (STUDENT, TEACHER):
        return role.strip().lower()
    return None


def school_year(student: Mapping[str, Any], school_type: SchoolType, today: date) -> int | None:
    """The school year (0-10) from ``grade`` (``7``, ``07``, ``Åk 7``, ``F``/``FK``/``K`` = 0), or from
    ``graduationYear`` for school types with a known final year."""
    grade = student.get("grade")
    if isinstance(grade, int) and not isinstance(grade, bool):
        grade = str(grade)
    if isinstance(grade, str) and grade.strip():
        text = grade.strip()
        if text.upper() in ("F", "FK", "K", "FSK"):
            return 0
        match = _GRADE.match(text)
        if match and 0 <= int(match.group(1)) <= 10:
            return int(match.group(1))
    graduation = student.get("graduationYear")
    final = FINAL_YEAR.get(school_type)
    if final is not None and isinstance(graduation, str | int) and not isinstance(graduation, bool):
        try:
            graduation_year = int(str(graduation).strip())
        except ValueError:
            return None
        year_end = today.year + 1 if today.month >= 8 else today.year
        year = final - (graduation_year - year_end)
        if 0 <= year <= 10:
            return year
    return None


@dataclass(frozen=True)
class UserRecords:
    """A user's records: the person (None: not provisioned) and a teacher's duties, with the schools the
    duties are at."""

    person: SourceRecord | None
    duties: list[SourceRecord]

    @property
    def records(self) -> list[SourceRecord]:
        return ([self.person] if self.person is not None else []) + self.duties

    @property
    def duty_schools(self) -> list[str]:
        return [str(d.data["school_unit"]) for d in self.duties]


def map_user(
    user: Mapping[str, Any],
    schools: Sequence[SchoolInfo],
    source: SourceConfig,
    *,
    today: date,
    require_school: bool,
) -> UserRecords:
    """``schools``: the user's schools within the filter. ``require_school`` (a school filter is set):
    a user at none of them is out of scope."""
    key = object_id(user)
    role = role_of(user)
    if role is None or (require_school and not schools):
        return UserRecords(None, [])
    student = _section(user, "student")
    teacher = _section(user, "teacher")
    data = PersonFields()
    given_name = _text(user, "givenName")
    if given_name is not None:
        data["given_name"] = given_name
    family_name = _text(user, "surname")
    if family_name is not None:
        data["family_name"] = family_name
    middle_name = _text(user, "middleName")
    if middle_name is not None:
        data["middle_name"] = middle_name
    login = _text(user, "userPrincipalName")
    data["eppn"] = [login] if login else []
    mail = _text(user, "mail")
    email_type = EmailType.SKOLA_ELEV if role == STUDENT else EmailType.SKOLA_PERSONAL
    data["emails"] = [EmailFields(value=mail, type=email_type.value)] if mail else []
    birth = _date(student.get("birthDate"))
    if birth is not None:
        data["birth_date"] = birth
    # Graph Education has no securityMarking: every person is "Ingen", as before the marking could be
    # unknown (docs/graph-connector.md says what an organiser with protected identities does).
    data["security_marking"] = SecurityMarking.INGEN.value
    identifiers = [ExternalIdentifierFields(value=key, context=issuer_context(source), globally_unique=True)]
    sis_id = _text(student if role == STUDENT else teacher, "externalId") or _text(user, "externalId")
    if sis_id is not None:
        identifiers.append(ExternalIdentifierFields(value=sis_id, context=SIS_CONTEXT, globally_unique=False))
    data["external_identifiers"] = identifiers
    duties: list[SourceRecord] = []
    enrolments: list[EnrolmentFields] = []
    if role == STUDENT:
        for school in schools:
            enrolment = EnrolmentFields(school_unit=school.id, school_type=school.school_type.value)
            year = school_year(student, school.school_type, today)
            if year is not None:
                enrolment["school_year"] = year
            enrolments.append(enrolment)
    else:
        for school in schools:
            duty = DutyFields(person=key, school_unit=school.id, role=source.teacher_role.value)
            duties.append(SourceRecord.of(EntityKind.DUTY, duty_key(key, school.id), duty))
    data["enrolments"] = enrolments
    return UserRecords(SourceRecord.of(EntityKind.PERSON, key, data), duties)


# ---------------------------------------------------------------------------------------------------
# classes


def group_type(klass: Mapping[str, Any], source: SourceConfig) -> GroupType:
    name = _text(klass, "displayName")
    if source.klass_pattern is not None and name is not None and re.fullmatch(source.klass_pattern, name):
        return GroupType.KLASS
    return source.class_group_type


def map_class(
    klass: Mapping[str, Any],
    schools: Sequence[SchoolInfo],
    members: Iterable[str],
    teachers: Iterable[str],
    source: SourceConfig,
) -> list[SourceRecord]:
    """A class as a Group and an Activity; nothing when none of its schools is in scope. ``members`` and
    ``teachers`` are user ids."""
    key = object_id(klass)
    if not schools:
        return []
    school = schools[0]
    teacher_ids = list(dict.fromkeys(t.lower() for t in teachers))
    member_ids = [m for m in dict.fromkeys(m.lower() for m in members) if m not in teacher_ids]
    name = _text(klass, "displayName") or _text(klass, "classCode") or _text(klass, "externalName") or key
    group_fields = GroupFields(
        display_name=name,
        group_type=group_type(klass, source).value,
        school_type=school.school_type.value,
        school_unit=school.id,
        memberships=[MembershipFields(person=m) for m in member_ids],
    )
    activity_fields = ActivityFields(
        display_name=name, school_unit=school.id, groups=[key], teachers=[duty_key(t, school.id) for t in teacher_ids]
    )
    term = _section(klass, "term")
    start, end = _date(term.get("startDate")), _date(term.get("endDate"))
    if start is not None:
        group_fields["start_date"] = activity_fields["start_date"] = start
    if end is not None:
        group_fields["end_date"] = activity_fields["end_date"] = end
    group = SourceRecord.of(EntityKind.GROUP, key, group_fields)
    activity = SourceRecord.of(EntityKind.ACTIVITY, key, activity_fields)
    return [group, activity]


def relation_ids(items: Iterable[Any]) -> list[str]:
    """The ids of a relation listing (``members``, ``schools`` ...), lower case, in order, once each."""
    ids: list[str] = []
    for item in items:
        identifier = object_id(item)
        if identifier not in ids:
            ids.append(identifier)
    return ids
