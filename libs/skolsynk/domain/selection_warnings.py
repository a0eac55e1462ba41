"""Warnings about a subscription's filters: a chosen school unit where the roles, school types, school
years and group types together select no students, no teachers or no groups, with the filter that
causes it ("no students at Granmogymnasiet: years 7-9 are not there (its school type is GY)").

They are computed from counts per school unit (:class:`UnitPopulation`: what the organiser's data has
at the unit today, by school type and year, by role and by group type), never person by person, so
the subscription form, its preview and the subscription's page can show them cheaply. The counts are
taken before the person-level rules (protected identities, personStatus, explicit includes and
excludes, ``single_school_unit_per_user``): a warning says that the *filters* leave nothing, which is
what an admin can change in the form.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from enum import StrEnum

from skolsynk.domain.organisation_tree import OrganisationTree
from skolsynk.domain.ss12000 import TEACHING_ROLES, DutyRole, EntityKind, GroupType, SchoolType
from skolsynk.domain.subscription import Role, VendorProfile, VendorSubscription


class Relation(StrEnum):
    """What one counted row is: the kinds of relation to a school unit the selection reads."""

    ENROLMENT = "enrolment"  # a student's active enrolment: school type and year
    PLACEMENT = "placement"  # a child's active placement (förskola, fritidshem): school type
    DUTY = "duty"  # an active duty: its role (teaching roles make teachers)
    GROUP = "group"  # an active group: its type


@dataclass(frozen=True)
class RelationCount:
    """How many active relations of one shape point at one organisation element of one source (the
    store's aggregate, before the organisation tree resolves ``at`` to school units)."""

    source_id: str
    relation: Relation
    at: str  # the source key of the school unit (or the level above it) the relation names
    n: int
    school_type: str | None = None
    school_year: int | None = None
    value: str | None = None  # a duty's role, a group's type


@dataclass(frozen=True)
class UnitPopulation:
    """What one active school unit has today, as counts."""

    code: str
    name: str
    #: The school types the unit itself declares (SS 12000 schoolTypes).
    school_types: tuple[SchoolType, ...] = ()
    #: Active enrolments by (school type, school year); the year is None when the source gives none.
    students: Mapping[tuple[SchoolType, int | None], int] = field(default_factory=dict)
    #: Active placements (förskola, fritidshem) by school type.
    placements: Mapping[SchoolType, int] = field(default_factory=dict)
    #: Active duties by role: teachers and other staff.
    staff: Mapping[Role, int] = field(default_factory=dict)
    #: Active groups by type.
    groups: Mapping[GroupType, int] = field(default_factory=dict)

    @property
    def student_count(self) -> int:
        return sum(self.students.values())

    @property
    def student_school_types(self) -> tuple[SchoolType, ...]:
        """The school types students (and placed children) have here; the unit's own when it has none."""
        found = {t for t, _ in self.students} | set(self.placements)
        return _ordered(found) if found else self.school_types

    @property
    def student_years(self) -> tuple[int, ...]:
        return tuple(sorted({y for _, y in self.students if y is not None}))

    @property
    def group_types(self) -> tuple[GroupType, ...]:
        return tuple(t for t in GroupType if self.groups.get(t))


def _ordered(types: Iterable[SchoolType]) -> tuple[SchoolType, ...]:
    """School types in the order SS 12000 lists them (förskola first)."""
    wanted = set(types)
    return tuple(t for t in SchoolType if t in wanted)


def unit_populations(tree: OrganisationTree, counts: Iterable[RelationCount], today: date) -> dict[str, UnitPopulation]:
    """The population of every school unit active today, by school-unit code, from the store's counts.

    A relation at a level above school units resolves as the selection resolves it: a duty to every
    unit beneath the level, an enrolment, placement or group only when exactly one unit is beneath it.
    When two units share a code (a data-quality error), the first by source and key counts."""
    units: dict[tuple[str, str], str] = {}  # (source, key) -> code
    names: dict[str, tuple[str, tuple[SchoolType, ...]]] = {}
    for (source_id, key), unit in sorted(tree.units.items()):
        if not unit.active_on(today) or unit.school_unit_code in names:
            continue
        units[(source_id, key)] = unit.school_unit_code
        names[unit.school_unit_code] = (unit.display_name, _ordered(unit.school_types))
    students: dict[str, dict[tuple[SchoolType, int | None], int]] = defaultdict(lambda: defaultdict(int))
    placements: dict[str, dict[SchoolType, int]] = defaultdict(lambda: defaultdict(int))
    staff: dict[str, dict[Role, int]] = defaultdict(lambda: defaultdict(int))
    groups: dict[str, dict[GroupType, int]] = defaultdict(lambda: defaultdict(int))
    for row in counts:
        if row.relation is Relation.DUTY:
            keys = tree.units_beneath(row.source_id, row.at)
        else:
            one = tree.resolve_one(row.source_id, row.at)
            keys = [one] if one is not None else []
        for key in keys:
            code = units.get((row.source_id, key))
            if code is None:
                continue
            try:
                if row.relation is Relation.ENROLMENT:
                    students[code][(SchoolType(row.school_type or ""), row.school_year)] += row.n
                elif row.relation is Relation.PLACEMENT:
                    placements[code][SchoolType(row.school_type or "")] += row.n
                elif row.relation is Relation.DUTY:
                    role = Role.TEACHER if DutyRole(row.value or "") in TEACHING_ROLES else Role.OTHER_STAFF
                    staff[code][role] += row.n
                else:
                    groups[code][GroupType(row.value or "")] += row.n
            except ValueError:  # a value the domain does not know: the normaliser kept it out already
                continue
    return {
        code: UnitPopulation(
            code=code,
            name=name,
            school_types=types,
            students=dict(students.get(code, {})),
            placements=dict(placements.get(code, {})),
            staff=dict(staff.get(code, {})),
            groups=dict(groups.get(code, {})),
        )
        for code, (name, types) in names.items()
    }


class Shortfall(StrEnum):
    """What a vendor would get none of at a chosen school unit."""

    STUDENTS = "students"
    TEACHERS = "teachers"
    GROUPS = "groups"
    EVERYTHING = "everything"  # the unit is not one of the organiser's active school units


class WarningCause(StrEnum):
    """Why: the filter (or the data) that leaves nothing."""

    UNIT_UNKNOWN = "unit_unknown"  # the code is not an active school unit of the organiser
    NONE_AT_UNIT = "none_at_unit"  # the unit has none at all in the organiser's data
    SCHOOL_TYPES = "school_types"  # the chosen school types are not at the unit
    SCHOOL_YEARS = "school_years"  # the chosen school years are not at the unit
    SCHOOL_TYPES_AND_YEARS = "school_types_and_years"  # neither the chosen types nor the chosen years are
    COMBINATION = "combination"  # both are there, but no student has a chosen year in a chosen type
    GROUP_TYPES = "group_types"  # the chosen group types are not at the unit
    CLASSES_ONLY = "classes_only"  # the vendor takes classes only, and the unit's chosen groups are none


@dataclass(frozen=True)
class SelectionWarning:
    """One chosen school unit where the subscription selects no students, teachers or groups, and why.
    The values name only school types, years and group types: never a person."""

    school_unit_code: str
    school_unit_name: str | None  # None: the unit is unknown
    missing: Shortfall
    cause: WarningCause
    #: The subscription's filters that matter for the cause (empty: not a filter of this warning).
    chosen_school_types: tuple[SchoolType, ...] = ()
    chosen_school_years: tuple[int, ...] = ()
    chosen_group_types: tuple[GroupType, ...] = ()
    #: What the unit has: its students' school types and years, its groups' types.
    unit_school_types: tuple[SchoolType, ...] = ()
    unit_school_years: tuple[int, ...] = ()
    unit_group_types: tuple[GroupType, ...] = ()

    @property
    def message(self) -> str:
        """The warning in English (the API's; the admin UI words it in Swedish from the same fields)."""
        unit = self.school_unit_name or self.school_unit_code
        chosen_types = ", ".join(self.chosen_school_types) or "none"
        types_there = ", ".join(self.unit_school_types) or "none"
        years_there = year_span(self.unit_school_years) or "none"
        chosen_years = year_span(self.chosen_school_years) or "none"
        chosen_groups = ", ".join(self.chosen_group_types) or "none"
        groups_there = ", ".join(self.unit_group_types) or "none"
        what = {Shortfall.STUDENTS: "students", Shortfall.TEACHERS: "teachers", Shortfall.GROUPS: "groups"}
        texts = {
            WarningCause.UNIT_UNKNOWN: f"School unit {unit} is not an active school unit of the organiser: "
            "the vendor gets nothing from it.",
            WarningCause.NONE_AT_UNIT: f"No {what.get(self.missing, '')} at {unit}: the organiser's data has "
            "none there today.",
            WarningCause.SCHOOL_TYPES: f"No students at {unit}: school types {chosen_types} are not there "
            f"(school types there: {types_there}).",
            WarningCause.SCHOOL_YEARS: f"No students at {unit}: years {chosen_years} "
            f"are not there (school types there: {types_there}; years {years_there}).",
            WarningCause.SCHOOL_TYPES_AND_YEARS: f"No students at {unit}: neither school types {chosen_types} "
            f"nor years {chosen_years} are there (school types there: {types_there}; "
            f"years {years_there}).",
            WarningCause.COMBINATION: f"No students at {unit}: no student there is in years "
            f"{chosen_years} of school types {chosen_types}.",
            WarningCause.GROUP_TYPES: f"No groups at {unit}: group types {chosen_groups} are not there (group "
            f"types there: {groups_there}).",
            WarningCause.CLASSES_ONLY: f"No groups at {unit}: the vendor takes classes only and there are no "
            f"classes among the chosen groups there (group types there: {groups_there}).",
        }
        return texts[self.cause]


#: Between the first and last year of a run.
EN_DASH = "\u2013"


def year_span(years: Iterable[int]) -> str:
    """School years as a school writes them: runs joined with an en dash, förskoleklass as F
    (``[0, 1, 2, 3, 7, 8, 9]`` is ``F-3, 7-9`` with en dashes; ``[5]`` is ``5``)."""
    ordered = sorted(set(years))
    runs: list[list[int]] = []
    for year in ordered:
        if runs and year == runs[-1][-1] + 1:
            runs[-1].append(year)
        else:
            runs.append([year])

    def name(year: int) -> str:
        return "F" if year == 0 else str(year)

    return ", ".join(name(r[0]) if len(r) == 1 else f"{name(r[0])}{EN_DASH}{name(r[-1])}" for r in runs)


def selection_warnings(
    subscription: VendorSubscription, profile: VendorProfile, populations: Mapping[str, UnitPopulation]
) -> list[SelectionWarning]:
    """For each school unit the subscription lists (by name, then code): a warning when its filters select
    no students (while it asks for students), no teachers (while it asks for teachers) or no groups (while
    the vendor takes groups and the unit has some) there, naming the filter that causes it."""
    warnings: list[SelectionWarning] = []
    types, years, group_types = subscription.school_types, subscription.school_years, subscription.group_types
    placements_taken = subscription.placements and "placements" in subscription.allowed_fields(
        EntityKind.PERSON, profile
    )
    persons_taken = EntityKind.PERSON in profile.kinds

    def type_passes(school_type: SchoolType) -> bool:
        return types is None or school_type in types

    def year_passes(year: int | None) -> bool:
        return years is None or year in years

    def order(code: str) -> tuple[int, str, str]:
        population = populations.get(code)
        return (0, population.name, code) if population else (1, "", code)

    for code in sorted(subscription.school_unit_codes, key=order):
        population = populations.get(code)
        if population is None:
            warnings.append(SelectionWarning(code, None, Shortfall.EVERYTHING, WarningCause.UNIT_UNKNOWN))
            continue
        name, types_there, years_there = population.name, population.student_school_types, population.student_years
        if persons_taken and Role.STUDENT in subscription.roles:
            # Placed children count as students, filtered by school type only (they have no school year).
            placed = population.placements if placements_taken else {}
            total = population.student_count + sum(placed.values())
            by_type = sum(n for (t, _), n in population.students.items() if type_passes(t)) + sum(
                n for t, n in placed.items() if type_passes(t)
            )
            by_year = sum(n for (_, y), n in population.students.items() if year_passes(y)) + sum(placed.values())
            both = sum(n for (t, y), n in population.students.items() if type_passes(t) and year_passes(y)) + sum(
                n for t, n in placed.items() if type_passes(t)
            )
            cause = None
            if total == 0:
                cause = WarningCause.NONE_AT_UNIT
            elif both == 0:
                if by_type == 0 and by_year == 0:
                    cause = WarningCause.SCHOOL_TYPES_AND_YEARS
                elif by_type == 0:
                    cause = WarningCause.SCHOOL_TYPES
                elif by_year == 0:
                    cause = WarningCause.SCHOOL_YEARS
                else:
                    cause = WarningCause.COMBINATION
            if cause is not None:
                warnings.append(
                    SelectionWarning(
                        code,
                        name,
                        Shortfall.STUDENTS,
                        cause,
                        chosen_school_types=_ordered(types) if types is not None else (),
                        chosen_school_years=tuple(sorted(years)) if years is not None else (),
                        unit_school_types=types_there,
                        unit_school_years=years_there,
                    )
                )
        if persons_taken and Role.TEACHER in subscription.roles and not population.staff.get(Role.TEACHER):
            warnings.append(
                SelectionWarning(
                    code,
                    name,
                    Shortfall.TEACHERS,
                    WarningCause.NONE_AT_UNIT,
                    unit_school_types=types_there,
                    unit_school_years=years_there,
                )
            )
        if EntityKind.GROUP in profile.kinds and population.groups:
            chosen = {t: n for t, n in population.groups.items() if group_types is None or t in group_types}
            if not chosen or (profile.classes_only and not chosen.get(GroupType.KLASS)):
                warnings.append(
                    SelectionWarning(
                        code,
                        name,
                        Shortfall.GROUPS,
                        WarningCause.GROUP_TYPES if not chosen else WarningCause.CLASSES_ONLY,
                        chosen_group_types=tuple(t for t in GroupType if group_types is not None and t in group_types),
                        unit_group_types=population.group_types,
                    )
                )
    return warnings
