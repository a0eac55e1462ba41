"""SS 12000:2020 REST API objects (2.1, tolerant of 2.0) as canonical source records: pure functions for
the SS 12000 source connector.

* :func:`from_ss12000` maps one object of ``/organisations``, ``/persons``, ``/duties``, ``/groups``,
  ``/syllabuses``, ``/activities`` or ``/placements`` to zero or more
  :class:`~skolsynk.contracts.source.SourceRecord`;
* :func:`deleted_entities` maps a ``/deletedEntities`` answer to
  :class:`~skolsynk.contracts.source.SourceDeletion`.

Keys are the SS 12000 ids (UUIDs in canonical lower-case form; any other id lower-cased); references
become the referenced object's key. Fields skolsynk does not model are ignored, and so are unknown ones.
Content is not validated here (the normaliser validates every record and reports what fails as a
data-quality finding); :class:`Ss12000MappingError` is raised only for an object that cannot be mapped at
all (not an object, no ``id``, a reference or list of the wrong JSON type). Its message names the
attribute and the problem, never a value.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final
from uuid import UUID

from skolsynk.contracts.source import SourceDeletion, SourceRecord
from skolsynk.domain.ss12000 import EntityKind, OrganisationType


class Ss12000MappingError(ValueError):
    """An SS 12000 object that cannot be mapped; ``field`` is the attribute path, ``problem`` what is wrong.
    Neither contains a value from the object."""

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"{field}: {problem}")


#: SS 12000 endpoints whose objects skolsynk does not provision: mapped to no records.
IGNORED_ENDPOINTS: Final = frozenset(
    {
        "programmes", "schoolunitofferings", "studyplans", "calendarevents",
        "attendances", "attendanceevents", "attendanceschedules", "absences", "grades", "aggregatedattendance",
        "resources", "rooms",
    }
)  # fmt: skip

#: ``deletedEntities`` list name -> the canonical kinds it may delete. An organisation id can be a
#: school unit or any other level (the list does not say which), so it deletes either.
DELETED_KINDS: Final[dict[str, tuple[EntityKind, ...]]] = {
    "persons": (EntityKind.PERSON,),
    "organisations": (EntityKind.ORGANISATION, EntityKind.SCHOOL_UNIT),
    "groups": (EntityKind.GROUP,),
    "duties": (EntityKind.DUTY,),
    "activities": (EntityKind.ACTIVITY,),
    "activitites": (EntityKind.ACTIVITY,),  # the spec's spelling (sic)
    "syllabuses": (EntityKind.SYLLABUS,),
    "placements": (EntityKind.PLACEMENT,),
}


def _key(value: object, field: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise Ss12000MappingError(field, "missing or not a string")
    text = value.strip()
    try:
        return str(UUID(text))
    except ValueError:
        return text.lower()


def _ref(obj: Mapping[str, Any], name: str, field: str) -> str | None:
    """The id of an ObjectReference ``{"id": ...}`` (``None`` when absent)."""
    reference = obj.get(name)
    if reference is None:
        return None
    if not isinstance(reference, Mapping):
        raise Ss12000MappingError(field, "not a reference object")
    return _key(reference.get("id"), f"{field}.id")


def _objects(obj: Mapping[str, Any], name: str, field: str) -> list[Mapping[str, Any]]:
    values = obj.get(name)
    if values is None:
        return []
    if not isinstance(values, list):
        raise Ss12000MappingError(field, "not a list")
    for index, value in enumerate(values):
        if not isinstance(value, Mapping):
            raise Ss12000MappingError(f"{field}[{index}]", "not an object")
    return values


def _copy(obj: Mapping[str, Any], data: dict[str, Any], fields: Mapping[str, str]) -> None:
    """Copy the present (non-null) values of ``obj``'s SS 12000 fields to ``data``'s canonical ones."""
    for source, target in fields.items():
        value = obj.get(source)
        if value is not None:
            data[target] = value


_DATES: Final = {"startDate": "start_date", "endDate": "end_date"}


def _organisation(obj: Mapping[str, Any], key: str) -> list[SourceRecord]:
    raw_type = obj.get("organisationType")
    if raw_type is not None and not isinstance(raw_type, str):
        raise Ss12000MappingError("organisationType", "not a string")
    org_type = (raw_type or "").strip()
    parent = _ref(obj, "parentOrganisation", "parentOrganisation")
    if org_type.casefold() != OrganisationType.SKOLENHET.value.casefold():
        # Every other level (Huvudman, Förvaltning, Skola, Rektorsområde, 2.0's Stadsdel ...) is kept with
        # its type and parent. A missing type travels as None and an unknown one verbatim: the
        # normaliser reports both (organisation.type_unknown) and keeps the organisation.
        data: dict[str, Any] = {"organisation_type": org_type or None}
        _copy(
            obj,
            data,
            {
                "displayName": "display_name",
                "organisationNumber": "organisation_number",
                "organisationCode": "organisation_code",
                "municipalityCode": "municipality_code",
            },
        )
        if parent is not None:
            data["parent"] = parent
        return [SourceRecord(kind=EntityKind.ORGANISATION, key=key, data=data)]
    data = {}
    _copy(
        obj,
        data,
        {
            "displayName": "display_name",
            "schoolUnitCode": "school_unit_code",
            "municipalityCode": "municipality_code",
            **_DATES,
        },
    )
    school_types = obj.get("schoolTypes")
    if school_types is not None and not isinstance(school_types, list):
        raise Ss12000MappingError("schoolTypes", "not a list")
    data["school_types"] = list(school_types or [])
    if parent is not None:
        data["organisation"] = parent
    return [SourceRecord(kind=EntityKind.SCHOOL_UNIT, key=key, data=data)]


def _person(obj: Mapping[str, Any], key: str) -> list[SourceRecord]:
    data: dict[str, Any] = {}
    _copy(
        obj,
        data,
        {
            "givenName": "given_name",
            "familyName": "family_name",
            "middleName": "middle_name",
            "birthDate": "birth_date",
            # Absent or null: not given (unknown, which is not "Ingen"); personStatus absent: Aktiv.
            "securityMarking": "security_marking",
            "personStatus": "person_status",
        },
    )
    eppn = obj.get("eduPersonPrincipalNames")
    if eppn is not None and not isinstance(eppn, list):
        raise Ss12000MappingError("eduPersonPrincipalNames", "not a list")
    data["eppn"] = list(eppn or [])

    emails: list[dict[str, Any]] = []
    for email in _objects(obj, "emails", "emails"):
        entry: dict[str, Any] = {}
        _copy(email, entry, {"value": "value", "type": "type"})
        emails.append(entry)
    data["emails"] = emails

    civic_no = obj.get("civicNo")
    if isinstance(civic_no, Mapping):
        if civic_no.get("value") is not None:
            data["civic_no"] = civic_no["value"]
    elif isinstance(civic_no, str):  # tolerated: a bare string
        data["civic_no"] = civic_no
    elif civic_no is not None:
        raise Ss12000MappingError("civicNo", "not an object")

    identifiers: list[dict[str, Any]] = []
    for identifier in _objects(obj, "externalIdentifiers", "externalIdentifiers"):
        entry = {}
        _copy(identifier, entry, {"value": "value", "context": "context", "globallyUnique": "globally_unique"})
        identifiers.append(entry)
    data["external_identifiers"] = identifiers

    enrolments: list[dict[str, Any]] = []
    for index, raw in enumerate(_objects(obj, "enrolments", "enrolments")):
        enrolment: dict[str, Any] = {}
        school_unit = _ref(raw, "enroledAt", f"enrolments[{index}].enroledAt")
        if school_unit is not None:
            enrolment["school_unit"] = school_unit
        _copy(
            raw,
            enrolment,
            {
                "schoolType": "school_type",
                "schoolYear": "school_year",
                "cancelled": "cancelled",
                "educationCode": "programme_code",
                **_DATES,
            },
        )
        enrolments.append(enrolment)
    data["enrolments"] = enrolments
    return [SourceRecord(kind=EntityKind.PERSON, key=key, data=data)]


def _duty(obj: Mapping[str, Any], key: str) -> list[SourceRecord]:
    person = _ref(obj, "person", "person")
    if person is None:
        # Duty.person is optional in the standard; a duty nobody holds provisions nothing.
        return []
    data: dict[str, Any] = {"person": person}
    school_unit = _ref(obj, "dutyAt", "dutyAt")
    if school_unit is not None:
        data["school_unit"] = school_unit
    _copy(obj, data, {"dutyRole": "role", "signature": "signature", **_DATES})
    roles: list[dict[str, Any]] = []
    for index, raw in enumerate(_objects(obj, "assignmentRole", "assignmentRole")):
        group = _ref(raw, "group", f"assignmentRole[{index}].group")
        if group is None:
            raise Ss12000MappingError(f"assignmentRole[{index}].group", "missing")
        role: dict[str, Any] = {"group": group}
        _copy(raw, role, {"assignmentRoleType": "assignment_role_type", **_DATES})
        roles.append(role)
    if roles:
        data["assignment_roles"] = roles
    return [SourceRecord(kind=EntityKind.DUTY, key=key, data=data)]


def _group(obj: Mapping[str, Any], key: str) -> list[SourceRecord]:
    data: dict[str, Any] = {}
    _copy(obj, data, {"displayName": "display_name", "groupType": "group_type", "schoolType": "school_type", **_DATES})
    school_unit = _ref(obj, "organisation", "organisation")
    if school_unit is not None:
        data["school_unit"] = school_unit
    memberships: list[dict[str, Any]] = []
    for index, raw in enumerate(_objects(obj, "groupMemberships", "groupMemberships")):
        membership: dict[str, Any] = {}
        person = _ref(raw, "person", f"groupMemberships[{index}].person")
        if person is not None:
            membership["person"] = person
        _copy(raw, membership, _DATES)
        memberships.append(membership)
    data["memberships"] = memberships
    return [SourceRecord(kind=EntityKind.GROUP, key=key, data=data)]


def _activity(obj: Mapping[str, Any], key: str) -> list[SourceRecord]:
    data: dict[str, Any] = {}
    _copy(obj, data, {"displayName": "display_name", **_DATES})
    school_unit = _ref(obj, "organisation", "organisation")
    if school_unit is not None:
        data["school_unit"] = school_unit
    groups: list[str] = []
    for index, raw in enumerate(_objects(obj, "groups", "groups")):
        group = _key(raw.get("id"), f"groups[{index}].id")
        if group not in groups:
            groups.append(group)
    data["groups"] = groups
    teachers: list[str] = []
    assignments: list[dict[str, Any]] = []
    for index, raw in enumerate(_objects(obj, "teachers", "teachers")):
        duty = _ref(raw, "duty", f"teachers[{index}].duty")
        if duty is None:
            raise Ss12000MappingError(f"teachers[{index}].duty", "missing")
        if duty not in teachers:
            teachers.append(duty)
            # A DutyAssignment's dates limit when the teacher counts; without them, the whole activity.
            dates: dict[str, Any] = {}
            _copy(raw, dates, _DATES)
            if dates:
                assignments.append({"duty": duty, **dates})
    data["teachers"] = teachers
    if assignments:
        data["teacher_assignments"] = assignments
    syllabus = _ref(obj, "syllabus", "syllabus")
    if syllabus is not None:
        data["syllabus"] = syllabus
    return [SourceRecord(kind=EntityKind.ACTIVITY, key=key, data=data)]


def _syllabus(obj: Mapping[str, Any], key: str) -> list[SourceRecord]:
    data: dict[str, Any] = {}
    _copy(
        obj,
        data,
        {
            "subjectName": "subject_name",
            "subjectCode": "subject_code",
            "subjectDesignation": "subject_designation",
            "courseCode": "course_code",
            "courseName": "course_name",
            "schoolType": "school_type",
            "official": "official",
        },
    )
    return [SourceRecord(kind=EntityKind.SYLLABUS, key=key, data=data)]


def _placement(obj: Mapping[str, Any], key: str) -> list[SourceRecord]:
    child = _ref(obj, "child", "child")
    if child is None:
        return []  # required by the spec; a placement of nobody provisions nothing
    data: dict[str, Any] = {"child": child}
    school_unit = _ref(obj, "placedAt", "placedAt")
    if school_unit is not None:
        data["school_unit"] = school_unit
    group = _ref(obj, "group", "group")
    if group is not None:
        data["group"] = group
    _copy(obj, data, {"schoolType": "school_type", **_DATES})
    return [SourceRecord(kind=EntityKind.PLACEMENT, key=key, data=data)]


_MAPPERS: Final = {
    "organisations": _organisation,
    "persons": _person,
    "duties": _duty,
    "groups": _group,
    "syllabuses": _syllabus,
    "activities": _activity,
    "placements": _placement,
}


def from_ss12000(endpoint: str, obj: Mapping[str, Any]) -> list[SourceRecord]:
    """One object of an SS 12000 collection as canonical source records (none, or one).

    ``endpoint`` is the collection (``organisations``, ``persons``, ``duties``, ``groups``, ``syllabuses``,
    ``activities``, ``placements``; a leading ``/`` and case are ignored).

    * organisations: ``Skolenhet`` -> SchoolUnit, whose ``organisation`` is the ``parentOrganisation``
      id; every other level (Huvudman, Förvaltning, Skola ..., or a missing or unknown type, which
      the normaliser reports) -> Organisation with its ``organisation_type`` and ``parent``;
    * persons -> Person (``civicNo.value``, ``eduPersonPrincipalNames``, e-mails with their types,
      external identifiers, enrolments with ``enroledAt.id`` as the school unit and ``educationCode`` as
      the programme code);
    * duties -> Duty (``person.id``, ``dutyAt.id``, ``dutyRole``, ``assignmentRole[]`` as assignment roles:
      ``group.id``, ``assignmentRoleType``, dates); a duty without a person -> no record;
    * groups -> Group (``organisation.id`` as the school unit, memberships by ``person.id`` with dates);
    * syllabuses -> Syllabus (subject name, code and designation, course code and name, school type, official);
    * activities -> Activity (``organisation.id``, group ids, ``teachers[].duty.id`` with the dates of those
      that have them as teacher assignments, ``syllabus.id``);
    * placements -> Placement (``child.id``, ``placedAt.id``, ``schoolType``, ``group.id``, dates); a
      placement without a child -> no record.

    Endpoints skolsynk does not provision (programmes, grades ...) map to no records; an unknown
    endpoint or an object that cannot be mapped raises :class:`Ss12000MappingError`.
    """
    name = endpoint.strip().strip("/").lower()
    if name in IGNORED_ENDPOINTS:
        return []
    mapper = _MAPPERS.get(name)
    if mapper is None:
        raise Ss12000MappingError("endpoint", "not an SS 12000 collection")
    if not isinstance(obj, Mapping):
        raise Ss12000MappingError("object", "not a JSON object")
    return mapper(obj, _key(obj.get("id"), "id"))


def deleted_entities(payload: Mapping[str, Any]) -> list[SourceDeletion]:
    """A ``/deletedEntities`` answer (the whole ``{"data": {...}, "pageToken": ...}`` or just its
    ``data``) as deletions: persons, organisations (as both Organisation and SchoolUnit: the answer does
    not say which level), groups, duties, activities (under the spec's ``activitites`` or ``activities``),
    syllabuses and placements. Other lists (absences ...) are ignored; duplicates are dropped."""
    if not isinstance(payload, Mapping):
        raise Ss12000MappingError("deletedEntities", "not a JSON object")
    data = payload.get("data", payload)
    if not isinstance(data, Mapping):
        raise Ss12000MappingError("data", "not an object")
    deletions: list[SourceDeletion] = []
    seen: set[tuple[EntityKind, str]] = set()
    for name, kinds in DELETED_KINDS.items():
        ids = data.get(name)
        if ids is None:
            continue
        if not isinstance(ids, list):
            raise Ss12000MappingError(f"data.{name}", "not a list")
        for index, raw in enumerate(ids):
            # The spec lists bare UUIDs; tolerate {"id": ...} objects.
            value = raw.get("id") if isinstance(raw, Mapping) else raw
            key = _key(value, f"data.{name}[{index}]")
            for kind in kinds:
                if (kind, key) not in seen:
                    seen.add((kind, key))
                    deletions.append(SourceDeletion(kind=kind, key=key))
    return deletions
