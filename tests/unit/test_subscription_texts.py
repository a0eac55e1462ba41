"""The subscription form's Swedish: every warning the selection can give has a sentence naming the unit
and the filter, and the unit summaries and filter summaries read as Swedish (plurals, school types in
SS 12000's order)."""

from __future__ import annotations

import pytest

from skolsynk.domain.selection_warnings import SelectionWarning, Shortfall, UnitPopulation, WarningCause
from skolsynk.domain.ss12000 import GroupType, SchoolType
from skolsynk.domain.subscription import Role
from skolsynk_services.admin import models
from skolsynk_services.admin.ui.subscription_texts import filters_summary, unit_about, warning_text

#: Every (what is missing, why) selection_warnings gives.
GIVEN = [
    (Shortfall.STUDENTS, WarningCause.NONE_AT_UNIT),
    (Shortfall.STUDENTS, WarningCause.SCHOOL_TYPES),
    (Shortfall.STUDENTS, WarningCause.SCHOOL_YEARS),
    (Shortfall.STUDENTS, WarningCause.SCHOOL_TYPES_AND_YEARS),
    (Shortfall.STUDENTS, WarningCause.COMBINATION),
    (Shortfall.TEACHERS, WarningCause.NONE_AT_UNIT),
    (Shortfall.GROUPS, WarningCause.GROUP_TYPES),
    (Shortfall.GROUPS, WarningCause.CLASSES_ONLY),
    (Shortfall.EVERYTHING, WarningCause.UNIT_UNKNOWN),
]


def swedish(warning: SelectionWarning) -> str:
    return warning_text(models.SubscriptionWarning.of(warning))


@pytest.mark.parametrize(("missing", "cause"), GIVEN)
def test_every_warning_has_a_swedish_sentence_naming_the_unit(missing: Shortfall, cause: WarningCause):
    warning = SelectionWarning(
        "44444444",
        None if cause is WarningCause.UNIT_UNKNOWN else "Granmogymnasiet",
        missing,
        cause,
        chosen_school_types=(SchoolType.GR,),
        chosen_school_years=(7, 8, 9),
        chosen_group_types=(GroupType.UNDERVISNING,),
        unit_school_types=(SchoolType.GY,),
        unit_school_years=(1, 2, 3),
        unit_group_types=(GroupType.KLASS,),
    )
    sentence = swedish(warning)
    assert ("44444444" if cause is WarningCause.UNIT_UNKNOWN else "Granmogymnasiet") in sentence
    assert "{" not in sentence
    assert sentence.endswith(".")


def test_the_sentences_say_which_filter_and_what_the_unit_has():
    years = SelectionWarning(
        "44444444", "Granmogymnasiet", Shortfall.STUDENTS, WarningCause.SCHOOL_YEARS,
        chosen_school_years=(7, 8, 9), unit_school_types=(SchoolType.GY,), unit_school_years=(1, 2, 3),
    )  # fmt: skip
    assert swedish(years) == (
        "Inga elever på Granmogymnasiet: årskurs 7\u20139 finns inte där (skolformen är gymnasieskola)."
    )
    types = SelectionWarning(
        "1", "Skola 1", Shortfall.STUDENTS, WarningCause.SCHOOL_TYPES,
        chosen_school_types=(SchoolType.GY, SchoolType.GYS), unit_school_types=(SchoolType.FKLASS, SchoolType.GR),
    )  # fmt: skip
    assert swedish(types) == (
        "Inga elever på Skola 1: skolformerna gymnasieskola och gymnasiesärskola finns inte där "
        "(skolformerna är förskoleklass och grundskola)."
    )
    none_chosen = SelectionWarning("1", "Skola 1", Shortfall.STUDENTS, WarningCause.SCHOOL_TYPES)
    assert "ingen skolform (ingen är vald)" in swedish(none_chosen)


def test_a_unit_says_what_it_has_with_the_right_plurals():
    one = UnitPopulation("1", "X", (SchoolType.GY,), {(SchoolType.GY, 2): 1}, {}, {Role.TEACHER: 1}, {})
    assert unit_about(one) == "Gymnasieskola, årskurs 2: 1 elev, 1 lärare, 0 övrig personal"
    empty = UnitPopulation("2", "Y", (SchoolType.FS,))
    assert unit_about(empty) == "Förskola: 0 elever, 0 lärare, 0 övrig personal"
    assert unit_about(None) == "inga uppgifter i källan ännu"


def test_a_saved_subscriptions_filters_in_brief_in_ss12000s_order():
    stored = {"school_years": [9, 7, 8], "school_types": ["GY", "GR"], "group_types": ["Mentor", "Klass"],
              "placements": True}  # fmt: skip
    assert filters_summary(stored) == [
        "årskurs 7\u20139",
        "skolformerna grundskola och gymnasieskola",
        "grupptyperna klass och mentorsgrupp",
        "med förskola och fritidshem",
    ]
    assert filters_summary({"school_types": None, "group_types": ["Klass"]}) == ["grupptypen klass"]
