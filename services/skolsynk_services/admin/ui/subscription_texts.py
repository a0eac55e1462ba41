"""The subscription form's words: school types, group types and fields in Swedish, what a school unit
has (beside its checkbox), and each selection warning as a plain sentence naming the unit and the
filter that causes it ("Inga elever på Granmogymnasiet: årskurs 7-9 finns inte där (skolformen är
gymnasieskola)"). Every text comes from the catalogue's ``subscription_form`` section."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from skolsynk.domain.selection_warnings import UnitPopulation, year_span
from skolsynk.domain.ss12000 import GroupType, SchoolType
from skolsynk.domain.subscription import Role
from skolsynk_services.admin import models
from skolsynk_services.admin.ui.catalogue import plural, section, text


def school_type_name(school_type: SchoolType | str) -> str:
    """The school type as a Swedish noun in a sentence ("gymnasieskola"); an unknown code as it is."""
    return str(section("subscription_form.school_type_names").get(str(school_type), str(school_type)))


def school_type_label(school_type: SchoolType | str) -> str:
    """The school type as a checkbox label: "Gymnasieskola (GY)"."""
    name = school_type_name(school_type)
    return f"{name[:1].upper()}{name[1:]} ({school_type})"


def group_type_name(group_type: GroupType | str) -> str:
    return str(section("subscription_form.group_type_names").get(str(group_type), str(group_type)))


def group_type_label(group_type: GroupType | str) -> str:
    name = group_type_name(group_type)
    return f"{name[:1].upper()}{name[1:]}"


def field_label(kind: str, name: str) -> str:
    """A field a vendor can be given, in Swedish ("Förnamn"); its code when the catalogue lacks it."""
    return str(section("subscription_form.field_names").get(kind, {}).get(name, name))


def listed(items: Iterable[str]) -> str:
    """``a, b och c``."""
    words = list(items)
    if len(words) < 2:
        return "".join(words)
    return ", ".join(words[:-1]) + text("subscription_form.warnings.and") + words[-1]


def _in_order(values: Iterable[str], order: type[SchoolType] | type[GroupType]) -> list[str]:
    """Codes in the order SS 12000 lists them (a stored set has none); unknown ones last."""
    given = {str(v) for v in values}
    known = [m.value for m in order if m.value in given]
    return known + sorted(given - set(known))


def _types(key: str, types: Sequence[SchoolType | str]) -> str:
    ordered = _in_order(types, SchoolType)
    return plural(key, len(ordered), types=listed(school_type_name(t) for t in ordered))


def unit_about(population: UnitPopulation | None) -> str:
    """What a school unit has today, beside its checkbox: "gymnasieskola, årskurs 1-3: 90 elever, 6 lärare,
    2 övrig personal"."""
    if population is None:
        return text("subscription_form.units.no_data")
    types = listed(school_type_name(t) for t in population.student_school_types)
    years = population.student_years
    return text(
        "subscription_form.units.about",
        types=types[:1].upper() + types[1:],
        years=text("subscription_form.units.years", years=year_span(years)) if years else "",
        students=plural("subscription_form_students", population.student_count),
        teachers=plural("subscription_form_teachers", population.staff.get(Role.TEACHER, 0)),
        other_staff=plural("subscription_form_other_staff", population.staff.get(Role.OTHER_STAFF, 0)),
    )


def warning_text(warning: models.SubscriptionWarning) -> str:
    """One warning as a Swedish sentence, from its fields (never from its English ``message``)."""
    unit = warning.school_unit_name or warning.school_unit_code
    chosen_types = (
        _types("subscription_form_chosen_types", warning.chosen_school_types)
        if warning.chosen_school_types
        else text("subscription_form.warnings.no_school_type")
    )
    chosen_groups = (
        plural(
            "subscription_form_chosen_groups",
            len(warning.chosen_group_types),
            types=listed(group_type_name(t) for t in warning.chosen_group_types),
        )
        if warning.chosen_group_types
        else text("subscription_form.warnings.no_group_type")
    )
    return text(
        f"subscription_form.warnings.{warning.missing.value}.{warning.cause.value}",
        unit=unit,
        chosen_types=chosen_types,
        types_there=_types("subscription_form_types_there", warning.unit_school_types)
        if warning.unit_school_types
        else text("subscription_form.warnings.unknown_types"),
        years=year_span(warning.chosen_school_years) or text("subscription_form.warnings.no_years"),
        years_there=year_span(warning.unit_school_years) or text("subscription_form.warnings.unknown_years"),
        chosen_groups=chosen_groups,
        groups_there=listed(group_type_name(t) for t in warning.unit_group_types),
    )


def filters_summary(stored: Mapping[str, Any]) -> list[str]:
    """A saved subscription's filters besides its units and roles, in brief: "årskurs 7-9", "skolformen
    gymnasieskola", "grupptypen klass", "med förskola och fritidshem"."""
    summary = []
    if stored.get("school_years"):
        summary.append(text("subscription_form.summary.years", years=year_span(stored["school_years"])))
    if stored.get("school_types"):
        summary.append(_types("subscription_form_chosen_types", stored["school_types"]))
    if stored.get("group_types"):
        ordered = _in_order(stored["group_types"], GroupType)
        names = listed(group_type_name(t) for t in ordered)
        summary.append(plural("subscription_form_chosen_groups", len(ordered), types=names))
    if stored.get("placements"):
        summary.append(text("subscription_form.summary.placements"))
    return summary
