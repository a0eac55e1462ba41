"""The canonical SS 12000 model: tolerant legacy values, strict formats, inclusive dates, stable ids
and order-blind content hashes."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any
from uuid import UUID

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from skolsynk.domain.ids import SKOLSYNK_NAMESPACE, content_hash, entity_id
from skolsynk.domain.ss12000 import (
    ENTITY_MODELS,
    KIND_ORDER,
    LEGACY_SCHOOL_TYPES,
    Activity,
    Dated,
    Duty,
    DutyRole,
    Email,
    Enrolment,
    EntityKind,
    Group,
    GroupType,
    Membership,
    Organisation,
    OrganisationType,
    Person,
    PersonStatus,
    SchoolType,
    SchoolUnit,
    SecurityMarking,
)

pytestmark = pytest.mark.unit

D1 = date(2024, 8, 15)
D2 = date(2025, 6, 13)


def _person(**values: Any) -> Person:
    return Person.model_validate({"key": "p-1", "given_name": "Ingrid", "family_name": "Lindqvist", **values})


# --- enumerations: 2.1 values verbatim, 2.0/2018 values mapped --------------------------------------


@pytest.mark.parametrize(
    ("given_value", "expected"),
    [
        ("KOMVUX", SchoolType.VUX),  # SS 12000:2.0
        ("FSK", SchoolType.FKLASS),  # 2018
        ("SUV", SchoolType.SARVUX),  # 2018
        ("komvux", SchoolType.VUX),  # case and whitespace are forgiven
        (" fsk ", SchoolType.FKLASS),
        ("GR", SchoolType.GR),
        ("gy", SchoolType.GY),
        ("VUXSFI", SchoolType.VUXSFI),
        (SchoolType.FS, SchoolType.FS),
    ],
)
def test_school_types_accept_legacy_values(given_value: Any, expected: SchoolType) -> None:
    assert Enrolment(school_unit="su-a", school_type=given_value).school_type is expected
    assert Group(
        key="g", display_name="G", group_type=GroupType.KLASS, school_unit="su-a", school_type=given_value
    ).school_type is (expected)
    unit = SchoolUnit(key="su", display_name="S", school_unit_code="12345678", school_types=[given_value])
    assert unit.school_types == [expected]


def test_every_legacy_school_type_maps_to_a_2_1_value() -> None:
    assert set(LEGACY_SCHOOL_TYPES) == {"KOMVUX", "FSK", "SUV"}
    assert not set(LEGACY_SCHOOL_TYPES) & set(SchoolType.__members__.values())


@pytest.mark.parametrize("bad", ["XYZ", "GRUND", "", "VUX-GR", 7, None])
def test_unknown_school_types_are_rejected(bad: Any) -> None:
    with pytest.raises(ValidationError):
        Enrolment(school_unit="su-a", school_type=bad)


@pytest.mark.parametrize(
    ("given_value", "expected"),
    [
        ("Stadsdel", OrganisationType.FORVALTNING),
        ("Förvaltning", OrganisationType.FORVALTNING),
        ("Huvudman", OrganisationType.HUVUDMAN),
        ("Skolenhet", OrganisationType.SKOLENHET),
    ],
)
def test_organisation_types_accept_legacy_values(given_value: str, expected: OrganisationType) -> None:
    org = Organisation(key="o", display_name="O", organisation_type=given_value)
    assert org.organisation_type is expected


@pytest.mark.parametrize("bad", ["Kommun", "stadsdel-x", ""])
def test_unknown_organisation_types_are_rejected(bad: str) -> None:
    with pytest.raises(ValidationError):
        Organisation(key="o", display_name="O", organisation_type=bad)


@pytest.mark.parametrize(
    ("given_value", "expected", "protected"),
    [
        (True, SecurityMarking.SKYDDAD_FOLKBOKFORING, True),  # 2018 boolean: the strictest level
        (False, SecurityMarking.INGEN, False),
        ("Ingen", SecurityMarking.INGEN, False),
        (" ingen ", SecurityMarking.INGEN, False),
        ("Sekretessmarkering", SecurityMarking.SEKRETESSMARKERING, True),
        ("Skyddad folkbokföring", SecurityMarking.SKYDDAD_FOLKBOKFORING, True),
    ],
)
def test_security_marking_accepts_the_2018_boolean(
    given_value: Any, expected: SecurityMarking, protected: bool
) -> None:
    person = _person(security_marking=given_value)
    assert person.security_marking is expected
    assert person.marking_known
    # A known marking decides by itself, whatever the organiser chose for unknown ones.
    assert person.is_protected() is protected
    assert person.is_protected(unknown_is_protected=False) is protected


@pytest.mark.parametrize("given", [{}, {"security_marking": None}])
def test_a_missing_security_marking_is_unknown_not_ingen(given: dict[str, Any]) -> None:
    person = _person(**given)
    assert person.security_marking is None
    assert not person.marking_known
    assert person.is_protected()  # the safe default
    assert not person.is_protected(unknown_is_protected=False)
    assert person.model_dump(mode="json")["security_marking"] is None  # stored as unknown, not "Ingen"


def test_security_marking_rejects_other_values() -> None:
    with pytest.raises(ValidationError):
        _person(security_marking="Hemlig")


@pytest.mark.parametrize(
    ("given", "expected", "active"),
    [
        ({}, PersonStatus.AKTIV, True),  # SS 12000's default
        ({"person_status": "Aktiv"}, PersonStatus.AKTIV, True),
        ({"person_status": " aktiv"}, PersonStatus.AKTIV, True),
        ({"person_status": "Utvandrad"}, PersonStatus.UTVANDRAD, False),
        ({"person_status": "Avliden"}, PersonStatus.AVLIDEN, False),
        ({"person_status": None}, None, False),  # a value SS 12000 does not know, as ingest keeps it
    ],
)
def test_person_status_is_the_2_1_values_and_only_aktiv_is_active(
    given: dict[str, Any], expected: PersonStatus | None, active: bool
) -> None:
    person = _person(**given)
    assert person.person_status is expected
    assert person.active is active


def test_person_status_rejects_values_ss12000_does_not_know() -> None:
    with pytest.raises(ValidationError):
        _person(person_status="Utflyttad")


def test_duty_roles_are_the_2_1_values_verbatim() -> None:
    assert Duty(key="d", person="p", school_unit="su", role="Lärare").role is DutyRole.LARARE
    with pytest.raises(ValidationError):
        Duty(key="d", person="p", school_unit="su", role="Larare")


# --- formats ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given_value", "expected"),
    [
        ("Anna.Berg@Skola.Kommun.SE", "anna.berg@skola.kommun.se"),
        ("  anna@skola.se ", "anna@skola.se"),
        ("a+tag@sub.domain.org", "a+tag@sub.domain.org"),
    ],
)
def test_email_is_normalised_to_lower_case(given_value: str, expected: str) -> None:
    assert Email(value=given_value).value == expected


@pytest.mark.parametrize(
    "bad",
    ["anna", "anna@", "@skola.se", "anna@skola", "anna berg@skola.se", "anna@@skola.se", "anna@skola.s", ""],
)
def test_invalid_email_is_rejected(bad: str) -> None:
    with pytest.raises(ValidationError):
        Email(value=bad)


def test_email_longer_than_254_characters_is_rejected() -> None:
    with pytest.raises(ValidationError):
        Email(value="a" * 250 + "@x.se")


@pytest.mark.parametrize(
    ("given_value", "expected"),
    [
        ("201501012384", "201501012384"),
        ("20150101-2384", "201501012384"),
        ("19121212+1212", "191212121212"),  # over a hundred years old
        ("20130101TF01", "20130101TF01"),  # temporary number (samordnings-/reservnummer) with letters
        ("  199001011234 ", "199001011234"),
    ],
)
def test_civic_numbers_are_twelve_characters_compacted(given_value: str, expected: str) -> None:
    assert _person(civic_no=given_value).civic_no == expected


@pytest.mark.parametrize(
    "bad",
    [
        "1501012384",  # 10 digits: the century is ambiguous
        "150101-2384",
        "2015010123845",
        "18991231-1234",  # no 19th-century births
        "2015010123",
        "20150101 2384",
        "20130101tf01",
        "abcdefghijkl",
    ],
)
def test_malformed_civic_numbers_are_rejected(bad: str) -> None:
    with pytest.raises(ValidationError):
        _person(civic_no=bad)


@pytest.mark.parametrize(
    ("code", "ok"),
    [
        ("12345678", True),
        ("00000001", True),
        ("1234567", False),
        ("123456789", False),
        ("1234567a", False),
        ("1234-5678", False),
        ("", False),
    ],
)
def test_school_unit_code_must_be_eight_digits(code: str, ok: bool) -> None:
    def build() -> SchoolUnit:
        return SchoolUnit(key="su", display_name="S", school_unit_code=code)

    if ok:
        assert build().school_unit_code == code
    else:
        with pytest.raises(ValidationError):
            build()


def test_models_are_frozen_and_forbid_unknown_fields() -> None:
    person = _person()
    with pytest.raises(ValidationError):
        person.given_name = "Other"  # type: ignore[misc]
    with pytest.raises(ValidationError):
        _person(shoe_size=42)


@pytest.mark.parametrize("bad_year", [-1, 11])
def test_school_year_is_zero_to_ten(bad_year: int) -> None:
    assert Enrolment(school_unit="su", school_type="GR", school_year=0).school_year == 0
    assert Enrolment(school_unit="su", school_type="GR", school_year=10).school_year == 10
    with pytest.raises(ValidationError):
        Enrolment(school_unit="su", school_type="GR", school_year=bad_year)


# --- dates ------------------------------------------------------------------------------------------

DATED_MODELS: list[tuple[type[Dated], dict[str, Any]]] = [
    (Enrolment, {"school_unit": "su", "school_type": "GR"}),
    (Membership, {"person": "p"}),
    (Duty, {"key": "d", "person": "p", "school_unit": "su", "role": "Lärare"}),
    (Group, {"key": "g", "display_name": "G", "group_type": "Klass", "school_unit": "su"}),
    (Activity, {"key": "a", "display_name": "A", "school_unit": "su"}),
    (SchoolUnit, {"key": "su", "display_name": "S", "school_unit_code": "12345678"}),
]


@pytest.mark.parametrize(("model", "values"), DATED_MODELS, ids=lambda v: getattr(v, "__name__", ""))
def test_inverted_dates_are_rejected(model: type[Dated], values: dict[str, Any]) -> None:
    with pytest.raises(ValidationError, match="start_date is after end_date"):
        model.model_validate({**values, "start_date": D2, "end_date": D1})
    same_day = model.model_validate({**values, "start_date": D1, "end_date": D1})
    assert same_day.active_on(D1)


@pytest.mark.parametrize(
    ("start", "end", "day", "active"),
    [
        (D1, D2, D1, True),  # first day included
        (D1, D2, D2, True),  # last day included
        (D1, D2, D1 - timedelta(days=1), False),
        (D1, D2, D2 + timedelta(days=1), False),
        (None, D2, date(1990, 1, 1), True),
        (D1, None, date(2100, 1, 1), True),
        (None, None, D1, True),
        (None, D2, D2 + timedelta(days=1), False),
        (D1, None, D1 - timedelta(days=1), False),
    ],
)
def test_active_on_is_inclusive_of_both_ends(start: date | None, end: date | None, day: date, active: bool) -> None:
    assert Membership(person="p", start_date=start, end_date=end).active_on(day) is active
    assert Enrolment(school_unit="su", school_type="GR", start_date=start, end_date=end).active_on(day) is active


@given(
    start=st.none() | st.dates(date(2000, 1, 1), date(2030, 1, 1)),
    length=st.none() | st.integers(0, 3000),
    day=st.dates(date(1999, 1, 1), date(2040, 1, 1)),
)
def test_cancelled_enrolment_is_never_active(start: date | None, length: int | None, day: date) -> None:
    end = None if length is None or start is None else start + timedelta(days=length)
    live = Enrolment(school_unit="su", school_type="GR", start_date=start, end_date=end)
    cancelled = live.model_copy(update={"cancelled": True})
    assert cancelled.active_on(day) is False
    assert live.active_on(day) is ((start is None or start <= day) and (end is None or day <= end))


# --- ids and hashes ---------------------------------------------------------------------------------

SLUG = st.from_regex(r"[a-z0-9][a-z0-9-]{0,20}", fullmatch=True)
KEYS = st.text(min_size=1, max_size=40)
KINDS = st.sampled_from(list(EntityKind))


def test_entity_id_is_a_pinned_uuid5() -> None:
    # The namespace and the derivation must never change: vendors hold these ids.
    assert UUID("476f9e93-9f57-5032-a3eb-55588119eed6") == SKOLSYNK_NAMESPACE
    some_id = entity_id("kommun-a", "egil-main", EntityKind.PERSON, "p-1")
    assert some_id.version == 5
    assert some_id == entity_id("kommun-a", "egil-main", "person", "p-1")


@given(tenant=SLUG, source=SLUG, kind=KINDS, key=KEYS)
def test_entity_id_is_deterministic(tenant: str, source: str, kind: EntityKind, key: str) -> None:
    assert entity_id(tenant, source, kind, key) == entity_id(tenant, source, kind.value, key)


@given(
    a=st.tuples(SLUG, SLUG, KINDS, KEYS),
    b=st.tuples(SLUG, SLUG, KINDS, KEYS),
)
def test_entity_id_differs_when_any_part_differs(
    a: tuple[str, str, EntityKind, str], b: tuple[str, str, EntityKind, str]
) -> None:
    assert (entity_id(*a) == entity_id(*b)) is (a == b)


@pytest.mark.parametrize("position", [0, 1, 2, 3])
def test_entity_id_changes_with_each_part(position: int) -> None:
    base: list[Any] = ["kommun-a", "egil-main", EntityKind.PERSON, "p-1"]
    other = list(base)
    other[position] = ["kommun-b", "egil-other", EntityKind.DUTY, "p-2"][position]
    assert entity_id(*base) != entity_id(*other)


def test_entity_id_rejects_unknown_kinds() -> None:
    with pytest.raises(ValueError, match="kind"):
        entity_id("kommun-a", "egil-main", "kind-that-does-not-exist", "p-1")


JSON_SCALARS = st.none() | st.booleans() | st.integers() | st.text(max_size=10)
JSON = st.recursive(
    JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=15,
)


def _reordered(value: Any, reverse: bool) -> Any:
    if isinstance(value, dict):
        items = sorted(value.items(), reverse=reverse)
        return {k: _reordered(v, reverse) for k, v in items}
    if isinstance(value, list):
        return [_reordered(v, reverse) for v in value]
    return value


@given(st.dictionaries(st.text(max_size=6), JSON, max_size=6))
def test_content_hash_ignores_key_order(data: dict[str, Any]) -> None:
    forwards, backwards = _reordered(data, False), _reordered(data, True)
    assert content_hash(forwards) == content_hash(backwards) == content_hash(data)


@given(st.dictionaries(st.text(max_size=6), JSON, min_size=1, max_size=6), st.data())
def test_content_hash_changes_with_content(data: dict[str, Any], draw: st.DataObject) -> None:
    key = draw.draw(st.sampled_from(sorted(data)))
    changed = {**data, key: [data[key], "changed"]}
    assert content_hash(changed) != content_hash(data)
    extra = {**data, "\x00new": 1}
    assert content_hash(extra) != content_hash(data)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ({"x": [1, 2]}, {"x": [2, 1]}),  # list order is content
        ({"x": 1}, {"x": "1"}),
        ({"x": None}, {}),
        ({"x": True}, {"x": 1}),
    ],
)
def test_content_hash_distinguishes(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert content_hash(a) != content_hash(b)


def test_content_hash_of_dates_and_uuids_is_their_text() -> None:
    some = UUID("7278a908-3fc9-4485-a698-04704d2773bd")
    assert content_hash({"d": D1, "u": some}) == content_hash({"u": str(some), "d": "2024-08-15"})


def test_every_kind_has_a_model_and_references_come_first() -> None:
    assert set(ENTITY_MODELS) == set(EntityKind)
    for kind, model in ENTITY_MODELS.items():
        assert model.model_fields["kind"].default is kind
    order = list(KIND_ORDER)
    assert order.index(EntityKind.ORGANISATION) < order.index(EntityKind.SCHOOL_UNIT)
    assert order.index(EntityKind.SCHOOL_UNIT) < order.index(EntityKind.PERSON)
    assert order.index(EntityKind.PERSON) < order.index(EntityKind.DUTY) < order.index(EntityKind.ACTIVITY)
    assert order.index(EntityKind.GROUP) < order.index(EntityKind.ACTIVITY)
