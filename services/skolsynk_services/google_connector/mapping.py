"""Google Workspace users, OUs and groups as canonical source records, following a tenant's mapping
(:class:`~google_connector.sources.MappingConfig`). Pure: no I/O.

* the organisation (from the configuration) and one **school unit** per school-unit code, keyed by the
  code (an OU that matches a school-unit rule but yields no code is a school unit without a code, keyed
  ``ou-{orgUnitId}``: the normaliser reports it);
* per user a **person** keyed by the immutable Google user id, carrying that id as an external
  identifier; a student also gets an enrolment at their school unit, a teacher or other staff member a
  **duty** (``{user id}-duty``). A user whose school unit or role cannot be decided is still sent, without
  enrolment or duty, so the normaliser reports them as a data-quality finding (``person.no_active_relation``)
  instead of them disappearing silently;
* per selected Google group a **group** (its students as members) and, unless switched off, an
  **activity** taught by the group's teachers (their duties).

Values are copied as they are: the normaliser validates every record and reports what is wrong.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from skolsynk.connectors.sources.google import GroupRule, MappingConfig, RoleRule, SchoolUnitRule
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
from skolsynk.domain.ss12000 import SCHOOL_UNIT_CODE, EmailType, EntityKind, SchoolType, SecurityMarking

_SEGMENT = re.compile(r"([A-Za-z0-9_]+)(?:\[([A-Za-z0-9_]+)=([^\]]*)\])?\.?")


class UnmappableUser(ValueError):
    """A user resource without an id: it cannot be keyed (and so makes the run unhealthy)."""


def _scalar(value: Any) -> str | None:
    if isinstance(value, list):
        value = value[0] if value else None
    if isinstance(value, Mapping):
        value = value.get("value")
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str):
        return value.strip() or None
    return None


def read_path(obj: Mapping[str, Any], path: str) -> str | None:
    """The value at a field path (``name.givenName``, ``customSchemas.SS12000.Personnummer``,
    ``externalIds[type=organization].value``) as text; ``None`` when absent or empty. A list without a
    filter gives its first item; a ``{"value": ...}`` object (multi-valued custom fields) its value."""
    current: Any = obj
    for match in _SEGMENT.finditer(path):
        name, key, wanted = match.groups()
        if isinstance(current, list):
            current = current[0] if current else None
        if not isinstance(current, Mapping):
            return None
        current = current.get(name)
        if key is not None:
            if not isinstance(current, list):
                return None
            current = next(
                (
                    item
                    for item in current
                    if isinstance(item, Mapping) and (_scalar(item.get(key)) or "").casefold() == wanted.casefold()
                ),
                None,
            )
    return _scalar(current)


def ancestors(path: str) -> list[str]:
    """``/a/b`` -> ``["/a/b", "/a", "/"]``."""
    chain = []
    current = "/" + path.strip("/") if path.strip("/") else "/"
    while True:
        chain.append(current)
        if current == "/":
            return chain
        current = current.rsplit("/", 1)[0] or "/"


def quote_query_value(value: str) -> str:
    """A value for the users.list search language: single-quoted, quotes escaped."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


@dataclass(frozen=True)
class SchoolUnitInfo:
    key: str
    code: str | None
    display_name: str
    school_types: tuple[SchoolType, ...]
    org_unit_path: str | None = None


@dataclass(frozen=True)
class Placement:
    """Where a user ended up: role and school unit (either may be None), and their duty's key."""

    user_id: str
    role: str | None
    unit: SchoolUnitInfo | None
    duty_key: str | None = None


@dataclass
class MappingStats:
    """Counts only (no personal data), for the run report and the logs."""

    users: int = 0
    unplaced: int = 0
    no_role: int = 0
    no_school_unit: int = 0
    #: per school-unit code (``-`` for none), per role: how many users were placed there.
    by_school_unit: dict[str, Counter[str]] = field(default_factory=dict)
    #: configuration or data problems seen (``org_unit_without_code``, ``school_year_unreadable`` ...).
    problems: Counter[str] = field(default_factory=Counter)


class DirectoryMapping:
    """One run's mapping state: built from the OUs, told the role groups' members, then fed the users
    page by page and the groups at the end."""

    def __init__(self, mapping: MappingConfig, org_units: Iterable[Mapping[str, Any]]) -> None:
        self.mapping = mapping
        self.units: dict[str, SchoolUnitInfo] = {}
        self.placements: dict[str, Placement] = {}
        self.role_members: dict[str, set[str]] = {}
        self.stats = MappingStats()
        self._published_units: set[str] = set()
        ous = {str(u.get("orgUnitPath", "")).casefold(): u for u in org_units if isinstance(u, Mapping)}
        self._rules: list[tuple[SchoolUnitRule, dict[str, SchoolUnitInfo] | None]] = [
            (rule, self._unit_table(rule, ous)) for rule in mapping.school_units
        ]

    # ------------------------------------------------------------------------------------------
    # school units

    def _unit(self, code: str, name: str, types: Iterable[SchoolType], path: str | None) -> SchoolUnitInfo:
        """The school unit with ``code`` (the first definition of a code wins)."""
        if code not in self.units:
            self.units[code] = SchoolUnitInfo(code, code, name, tuple(types), path)
        return self.units[code]

    def _unit_table(
        self, rule: SchoolUnitRule, ous: Mapping[str, Mapping[str, Any]]
    ) -> dict[str, SchoolUnitInfo] | None:
        if rule.from_ == "custom_field":
            return None
        table: dict[str, SchoolUnitInfo] = {}
        if rule.from_ == "table":
            for entry in rule.units:
                ou = ous.get(entry.org_unit.casefold())
                if ou is None and entry.org_unit != "/":
                    self.stats.problems["table_org_unit_missing"] += 1
                name = entry.display_name or str((ou or {}).get("name") or entry.org_unit.rsplit("/", 1)[-1] or "/")
                types = entry.school_types or rule.school_types
                table[entry.org_unit.casefold()] = self._unit(entry.code, name, types, entry.org_unit)
            return table
        assert rule.path_pattern is not None
        pattern = re.compile(rule.code_pattern)
        for folded, ou in ous.items():
            path = str(ou.get("orgUnitPath", ""))
            if not re.fullmatch(rule.path_pattern, path):
                continue
            text = path if rule.code_from == "path" else str(ou.get(rule.code_from) or "")
            found = pattern.search(text)
            code = (found.group("code") if "code" in pattern.groupindex else found.group(0)) if found else None
            name = str(ou.get("name") or path.rsplit("/", 1)[-1])
            if code and SCHOOL_UNIT_CODE.match(code):
                table[folded] = self._unit(code, name, rule.school_types, path)
            else:
                self.stats.problems["org_unit_without_code"] += 1
                key = f"ou-{ou.get('orgUnitId') or folded}"
                table[folded] = self.units.setdefault(
                    key, SchoolUnitInfo(key, None, name, tuple(rule.school_types), path)
                )
        return table

    def unit_for(self, user: Mapping[str, Any]) -> SchoolUnitInfo | None:
        path = str(user.get("orgUnitPath") or "/")
        for rule, table in self._rules:
            if table is None:
                assert rule.field is not None
                value = read_path(user, rule.field)
                if value is None:
                    continue
                if not SCHOOL_UNIT_CODE.match(value):
                    self.stats.problems["school_unit_code_malformed"] += 1
                    continue
                name = rule.display_names.get(value) or f"Skolenhet {value}"
                return self._unit(value, name, rule.school_types, None)
            for ancestor in ancestors(path):
                unit = table.get(ancestor.casefold())
                if unit is not None:
                    return unit
        return None

    def unit_records(self) -> list[SourceRecord]:
        """The organisation (first time) and every school unit not sent yet."""
        records: list[SourceRecord] = []
        organisation = self.mapping.organisation
        if organisation is not None and organisation.key not in self._published_units:
            self._published_units.add(organisation.key)
            organisation_fields = OrganisationFields(display_name=organisation.display_name)
            if organisation.organisation_number:
                organisation_fields["organisation_number"] = organisation.organisation_number
            if organisation.municipality_code:
                organisation_fields["municipality_code"] = organisation.municipality_code
            records.append(SourceRecord.of(EntityKind.ORGANISATION, organisation.key, organisation_fields))
        for unit in self.units.values():
            if unit.key in self._published_units:
                continue
            self._published_units.add(unit.key)
            data = SchoolUnitFields(display_name=unit.display_name, school_types=[t.value for t in unit.school_types])
            if unit.code is not None:
                data["school_unit_code"] = unit.code
            if organisation is not None:
                data["organisation"] = organisation.key
                if organisation.municipality_code:
                    data["municipality_code"] = organisation.municipality_code
            records.append(SourceRecord.of(EntityKind.SCHOOL_UNIT, unit.key, data))
        return records

    # ------------------------------------------------------------------------------------------
    # roles

    def is_role_group(self, group: Mapping[str, Any]) -> bool:
        keys = {str(group.get("id", "")).casefold(), str(group.get("email", "")).casefold()}
        return any(g.casefold() in keys for g in self.mapping.role_groups())

    def add_role_group_members(self, group: Mapping[str, Any], members: Iterable[Mapping[str, Any]]) -> None:
        ids = {str(m["id"]) for m in members if m.get("type", "USER") == "USER" and m.get("id")}
        for key in (str(group.get("id", "")), str(group.get("email", ""))):
            if key:
                self.role_members.setdefault(key.casefold(), set()).update(ids)

    def role_for(self, user: Mapping[str, Any]) -> RoleRule | None:
        path = str(user.get("orgUnitPath") or "/")
        user_id = str(user.get("id", ""))
        for rule in self.mapping.roles:
            if rule.org_unit is not None:
                if re.search(rule.org_unit, path):
                    return rule
            elif rule.group is not None:
                if user_id in self.role_members.get(rule.group.casefold(), ()):
                    return rule
            elif rule.field is not None:
                value = read_path(user, rule.field)
                if value is not None and (not rule.values or value.casefold() in {v.casefold() for v in rule.values}):
                    return rule
        return None

    # ------------------------------------------------------------------------------------------
    # users

    def map_user(self, user: Mapping[str, Any]) -> list[SourceRecord]:
        """The person (and duty) of one user; remembers the placement for the groups."""
        user_id = _scalar(user.get("id"))
        if user_id is None:
            raise UnmappableUser("id")
        fields = self.mapping.fields
        unit = self.unit_for(user)
        rule = self.role_for(user)
        role = rule.role if rule is not None else None
        data = PersonFields()
        given_name = read_path(user, fields.given_name)
        if given_name is not None:
            data["given_name"] = given_name
        family_name = read_path(user, fields.family_name)
        if family_name is not None:
            data["family_name"] = family_name
        email = read_path(user, fields.email) if fields.email else None
        if email is not None:
            email_type = EmailType.SKOLA_ELEV if role == "student" else EmailType.SKOLA_PERSONAL
            data["emails"] = [EmailFields(value=email, type=email_type.value)]
        eppn = read_path(user, fields.eppn) if fields.eppn else None
        if eppn is not None:
            data["eppn"] = [eppn]
        civic_no = read_path(user, fields.civic_no) if fields.civic_no else None
        if civic_no is not None:
            data["civic_no"] = civic_no
        if fields.security_marking:
            marking = read_path(user, fields.security_marking)
            if marking is not None:  # absent: unknown (the organiser's setting decides)
                data["security_marking"] = {"true": True, "false": False}.get(marking.casefold(), marking)
        else:
            # Google Workspace has no securityMarking: without a mapped field every person is "Ingen", as
            # before the marking could be unknown (docs/google-connector.md).
            data["security_marking"] = SecurityMarking.INGEN.value
        identifiers = [ExternalIdentifierFields(value=user_id, context=fields.user_id_context, globally_unique=True)]
        for external in fields.external_ids:
            value = read_path(user, external.field)
            if value is not None:
                identifiers.append(
                    ExternalIdentifierFields(
                        value=value, context=external.context, globally_unique=external.globally_unique
                    )
                )
        data["external_identifiers"] = identifiers
        records: list[SourceRecord] = []
        duty_key: str | None = None
        if unit is not None and role == "student":
            enrolment = EnrolmentFields(school_unit=unit.key)
            school_type = read_path(user, fields.school_type) if fields.school_type else None
            if school_type is None and unit.school_types:
                school_type = unit.school_types[0].value
            if school_type is not None:
                enrolment["school_type"] = school_type
            year = read_path(user, fields.school_year) if fields.school_year else None
            if year is not None:
                try:
                    enrolment["school_year"] = int(year)
                except ValueError:
                    self.stats.problems["school_year_unreadable"] += 1
            data["enrolments"] = [enrolment]
        elif unit is not None and rule is not None and role in ("teacher", "staff"):
            duty_key = f"{user_id}-duty"
            duty = DutyFields(person=user_id, school_unit=unit.key, role=rule.effective_duty_role.value)
            records.append(SourceRecord.of(EntityKind.DUTY, duty_key, duty))
        records.insert(0, SourceRecord.of(EntityKind.PERSON, user_id, data))
        self.placements[user_id] = Placement(user_id, role, unit, duty_key)
        stats = self.stats
        stats.users += 1
        if unit is None or role is None:
            stats.unplaced += 1
            stats.no_role += role is None
            stats.no_school_unit += unit is None
        placed_at = (unit.code or unit.key) if unit is not None else "-"
        stats.by_school_unit.setdefault(placed_at, Counter())[role or "none"] += 1
        return records

    # ------------------------------------------------------------------------------------------
    # groups

    def group_rule(self, group: Mapping[str, Any]) -> tuple[GroupRule, re.Match[str] | None] | None:
        email = str(group.get("email") or "")
        for rule in self.mapping.groups:
            matched = rule.matches(email)
            if matched:
                return rule, matched if isinstance(matched, re.Match) else None
        return None

    def wants_members(self, group: Mapping[str, Any]) -> bool:
        """Whether the run needs this group's members (a class or teaching group, or a role group)."""
        return self.group_rule(group) is not None or self.is_role_group(group)

    def group_records(
        self, groups: Iterable[Mapping[str, Any]], members: Mapping[str, list[dict[str, Any]]]
    ) -> list[SourceRecord]:
        """Groups and activities of the selected Google groups; only members in this snapshot count."""
        records: list[SourceRecord] = []
        for group in groups:
            selected = self.group_rule(group)
            group_id = _scalar(group.get("id"))
            if selected is None or group_id is None:
                continue
            rule, matched = selected
            students: set[str] = set()
            teachers: set[str] = set()
            student_units: Counter[str] = Counter()
            teacher_units: Counter[str] = Counter()
            for member in members.get(group_id, []):
                if member.get("type", "USER") != "USER":
                    continue
                placement = self.placements.get(str(member.get("id")))
                if placement is None:
                    continue  # not in this snapshot (out of scope, suspended, ...)
                if placement.role == "student":
                    students.add(placement.user_id)
                    if placement.unit is not None:
                        student_units[placement.unit.key] += 1
                elif placement.role == "teacher" and placement.duty_key is not None:
                    teachers.add(placement.duty_key)
                    if placement.unit is not None:
                        teacher_units[placement.unit.key] += 1
            unit_key: str | None
            if rule.school_unit == "members":
                votes = student_units or teacher_units
                unit_key = min(votes, key=lambda k: (-votes[k], k)) if votes else None
            elif rule.school_unit == "pattern":
                unit_key = matched.group("code") if matched is not None else None
            else:
                unit_key = rule.school_unit
            if unit_key is None:
                self.stats.problems["group_without_school_unit"] += 1
            unit = self.units.get(unit_key) if unit_key is not None else None
            name = _scalar(group.get("name")) or str(group.get("email", group_id)).split("@")[0]
            data = GroupFields(
                display_name=name,
                group_type=rule.group_type.value,
                memberships=[MembershipFields(person=person) for person in sorted(students)],
            )
            if unit_key is not None:
                data["school_unit"] = unit_key
            school_type = rule.school_type or (unit.school_types[0] if unit is not None and unit.school_types else None)
            if school_type is not None:
                data["school_type"] = school_type.value
            records.append(SourceRecord.of(EntityKind.GROUP, group_id, data))
            if rule.activity:
                activity = ActivityFields(display_name=name, groups=[group_id], teachers=sorted(teachers))
                if unit_key is not None:
                    activity["school_unit"] = unit_key
                records.append(SourceRecord.of(EntityKind.ACTIVITY, f"{group_id}-activity", activity))
        return records


def users_queries(mapping: MappingConfig) -> list[str | None]:
    """The ``users.list`` ``query`` per scope root; a root inside another root is read with it. Leavers are
    read too and left out here, so a run can say how many there were.

    The whole domain (``/`` in scope) is read with no query at all, listed by customer: a ``query`` goes
    through Google's search index, whose results "can take up to 36 hours" to include a new or changed
    user (developers.google.com/admin-sdk/directory/v1/guides/search-users), and a complete snapshot
    missing a user removes them at every vendor."""
    roots = sorted(set(mapping.scope))
    if "/" in roots:
        return [None]
    roots = [r for r in roots if not any(r != o and r.startswith(o + "/") for o in roots)]
    return [f"orgUnitPath={quote_query_value(root)}" for root in roots]


def in_scope(org_unit_path: str, mapping: MappingConfig) -> bool:
    """Whether a user in ``org_unit_path`` is read by a run (inside one of the scope's OU subtrees; Google
    compares OU paths case-insensitively)."""
    path = "/" + org_unit_path.strip("/").casefold()
    roots = {"/" + root.strip("/").casefold() for root in mapping.scope}
    return "/" in roots or any(path == root or path.startswith(root + "/") for root in roots)
