"""Data-quality findings (catalogue, CSV export, per-unit summary) and the subscription rules that
guard what a vendor may receive (mass-deletion guard, subscription validation, allowed fields)."""

from __future__ import annotations

import csv
import io
from typing import Any
from uuid import UUID

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from skolsynk.domain.quality import (
    CATALOGUE,
    CSV_COLUMNS,
    VALUE_LENGTH,
    Finding,
    FindingCode,
    Severity,
    joined,
    summary_by_school_unit,
    to_csv,
)
from skolsynk.domain.ss12000 import VENDOR_KINDS, EntityKind
from skolsynk.domain.subscription import (
    OPTIONAL_FIELDS,
    PERSON_FIELDS,
    SENSITIVE_FIELDS,
    MassDeletionGuard,
    ProtectedIdentityPolicy,
    Role,
    VendorProfile,
    VendorSubscription,
)

pytestmark = pytest.mark.unit

RUN_ID = UUID("22222222-2222-4222-8222-222222222222")
ENTITY = UUID("7278a908-3fc9-4485-a698-04704d2773bd")
OTHER = UUID("0e5c6d1a-7a53-4d4e-9b8e-2f1f1f6f4a11")


def _finding(code: FindingCode, **values: Any) -> Finding:
    return Finding.of(code, **{"tenant_id": "kommun-a", "origin": "reconcile", **values})


# --- findings and the catalogue -------------------------------------------------------------------


def test_every_finding_code_has_a_catalogue_entry() -> None:
    assert set(CATALOGUE) == set(FindingCode)
    for code, (severity, text) in CATALOGUE.items():
        assert isinstance(severity, Severity), code
        assert text.endswith("."), code
        assert 20 < len(text) < 200, code


@pytest.mark.parametrize("code", list(FindingCode))
def test_finding_of_takes_the_severity_from_the_catalogue(code: FindingCode) -> None:
    finding = _finding(code)
    assert finding.severity is CATALOGUE[code][0]
    assert finding.code is code


@pytest.mark.parametrize(
    ("code", "severity"),
    [
        (FindingCode.EPPN_DUPLICATE, Severity.ERROR),
        (FindingCode.SCHOOL_UNIT_CODE_MISSING, Severity.ERROR),
        (FindingCode.EMAIL_INVALID, Severity.WARNING),
        (FindingCode.EMAIL_DUPLICATE, Severity.WARNING),
        (FindingCode.DATES_INVERTED, Severity.WARNING),
        (FindingCode.RUN_INCOMPLETE, Severity.ERROR),
    ],
)
def test_catalogue_severities_follow_what_skolsynk_does(code: FindingCode, severity: Severity) -> None:
    # error: the record is withheld; warning: the value is dropped and the record sent
    assert CATALOGUE[code][0] is severity


@pytest.mark.parametrize("code", [c for c, (severity, _) in CATALOGUE.items() if severity is Severity.ERROR])
def test_every_record_error_says_the_record_is_withheld(code: FindingCode) -> None:
    if code is FindingCode.RUN_INCOMPLETE:
        assert "nothing was removed" in CATALOGUE[code][1]
    else:
        assert "withheld" in CATALOGUE[code][1]


def test_finding_severity_can_be_overridden() -> None:
    finding = _finding(FindingCode.DATES_INVERTED, severity=Severity.ERROR)
    assert finding.severity is Severity.ERROR


@pytest.mark.parametrize(
    "bad",
    [
        {"origin": "somewhere"},
        {"detail": "x" * 301},
        {"entity_id": "not-a-uuid"},
        {"unexpected": 1},
    ],
)
def test_finding_is_strict(bad: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        _finding(FindingCode.EMAIL_MISSING, **bad)


# --- CSV ------------------------------------------------------------------------------------------


FINDINGS = [
    _finding(
        FindingCode.EPPN_DUPLICATE,
        source_id="egil-main",
        run_id=RUN_ID,
        entity_kind=EntityKind.PERSON,
        entity_id=ENTITY,
        source_key="p-1",
        school_unit_code="11111111",
        field="eppn",
        detail='quoted "detail", with a comma',
        value="anna.a@skola.example",
        other_entity_id=OTHER,
    ),
    _finding(FindingCode.PERSON_NO_ACTIVE_RELATION),  # everything optional left out
    _finding(FindingCode.EMAIL_MISSING, school_unit_code="11111111", detail="rad ett\nrad två"),
]


def test_to_csv_has_the_header_and_one_row_per_finding() -> None:
    text = to_csv(FINDINGS)
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == list(CSV_COLUMNS)
    assert len(rows) == 1 + len(FINDINGS)
    assert all(len(row) == len(CSV_COLUMNS) for row in rows)
    first = dict(zip(CSV_COLUMNS, rows[1], strict=True))
    assert first == {
        "severity": "error",
        "code": "eppn.duplicate",
        "school_unit_code": "11111111",
        "entity_kind": "person",
        "entity_id": str(ENTITY),
        "source_id": "egil-main",
        "source_key": "p-1",
        "field": "eppn",
        "detail": 'quoted "detail", with a comma',
        "run_id": str(RUN_ID),
        "other_entity_id": str(OTHER),
        "value": "anna.a@skola.example",
    }
    empty = dict(zip(CSV_COLUMNS, rows[2], strict=True))
    assert empty["severity"] == "warning"
    assert empty["entity_id"] == empty["run_id"] == empty["school_unit_code"] == ""
    assert rows[3][CSV_COLUMNS.index("detail")] == "rad ett\nrad två"


def test_to_csv_leaves_out_the_values_for_those_who_may_not_see_them() -> None:
    rows = list(csv.DictReader(io.StringIO(to_csv(FINDINGS, personal=False))))
    assert "value" not in rows[0]
    assert rows[0]["other_entity_id"] == str(OTHER)  # an id, not personal data
    assert "anna.a@skola.example" not in to_csv(FINDINGS, personal=False)


def test_a_long_value_is_cut_to_what_is_stored() -> None:
    finding = _finding(FindingCode.EMAIL_INVALID, value="x" * 500)
    assert finding.value == "x" * VALUE_LENGTH
    assert joined(["g-1", "g-2", "g-1"]) == "g-1, g-2"
    assert joined([]) is None


def test_to_csv_never_writes_python_none() -> None:
    text = to_csv(FINDINGS)
    assert "None" not in text
    assert "null" not in text


def test_to_csv_of_nothing_is_the_header() -> None:
    assert to_csv([]).splitlines() == [",".join(CSV_COLUMNS)]


@given(
    st.lists(
        st.builds(
            _finding,
            st.sampled_from(list(FindingCode)),
            school_unit_code=st.none() | st.sampled_from(["11111111", "22222222"]),
            detail=st.text(max_size=50),
            field=st.none() | st.text(max_size=10),
        ),
        max_size=8,
    )
)
def test_to_csv_round_trips(findings: list[Finding]) -> None:
    rows = list(csv.DictReader(io.StringIO(to_csv(findings), newline="")))
    assert len(rows) == len(findings)
    for row, finding in zip(rows, findings, strict=True):
        assert row["code"] == finding.code.value
        assert row["detail"] == finding.detail
        assert row["field"] == (finding.field or "")
        assert row["school_unit_code"] == (finding.school_unit_code or "")


# --- summary --------------------------------------------------------------------------------------


def test_summary_counts_per_unit_severity_and_code() -> None:
    findings = [
        _finding(FindingCode.EPPN_DUPLICATE, school_unit_code="22222222"),
        _finding(FindingCode.EMAIL_MISSING, school_unit_code="22222222"),
        _finding(FindingCode.EMAIL_MISSING, school_unit_code="22222222"),
        _finding(FindingCode.EMAIL_MISSING, school_unit_code="11111111"),
        _finding(FindingCode.PERSON_NO_ACTIVE_RELATION),
        _finding(FindingCode.DUTY_UNKNOWN_SCHOOL_UNIT),
    ]
    summary = summary_by_school_unit(findings)
    assert summary == {
        "-": {"warning": 1, "person.no_active_relation": 1, "error": 1, "duty.unknown_school_unit": 1},
        "11111111": {"warning": 1, "email.missing": 1},
        "22222222": {"error": 1, "eppn.duplicate": 1, "warning": 2, "email.missing": 2},
    }
    assert list(summary) == sorted(summary)


def test_summary_of_nothing_is_empty() -> None:
    assert summary_by_school_unit([]) == {}


@given(st.lists(st.tuples(st.sampled_from(list(FindingCode)), st.sampled_from([None, "11111111", "22222222"]))))
def test_summary_severity_counts_add_up(items: list[tuple[FindingCode, str | None]]) -> None:
    summary = summary_by_school_unit(_finding(code, school_unit_code=unit) for code, unit in items)
    assert sum(row.get("error", 0) + row.get("warning", 0) for row in summary.values()) == len(items)
    codes = {c.value for c in FindingCode}
    assert sum(n for row in summary.values() for k, n in row.items() if k in codes) == len(items)


# --- mass-deletion guard --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("removals", "population", "breached"),
    [
        (0, 0, False),
        (0, 100, False),
        (50, 10_000, False),  # exactly the absolute maximum is allowed
        (51, 10_000, True),  # more than the absolute maximum
        (51, 0, True),  # the absolute rule needs no population
        (4, 5, False),  # 80 % but too few removals for the percent rule
        (4, 4, False),
        (5, 25, False),  # exactly 20 % is allowed
        (5, 24, True),  # just over 20 %
        (5, 10, True),
        (10, 100, False),
        (21, 100, True),
        (5, 0, False),  # no population: no percentage
    ],
)
def test_guard_with_defaults(removals: int, population: int, breached: bool) -> None:
    assert MassDeletionGuard().breached(removals, population) is breached


@pytest.mark.parametrize(
    ("guard", "removals", "population", "breached"),
    [
        (MassDeletionGuard(max_removals=0), 1, 1000, True),
        (MassDeletionGuard(max_removals=0), 0, 1000, False),
        (MassDeletionGuard(max_percent=100), 50, 50, False),  # percent rule off
        (MassDeletionGuard(max_percent=0, percent_applies_from=1), 1, 1000, True),
        (MassDeletionGuard(percent_applies_from=1), 1, 2, True),  # small units protected too
        (MassDeletionGuard(percent_applies_from=3), 2, 2, False),
        (MassDeletionGuard(max_removals=1000, max_percent=50), 400, 1000, False),
        (MassDeletionGuard(max_removals=1000, max_percent=50), 501, 1000, True),
    ],
)
def test_guard_thresholds(guard: MassDeletionGuard, removals: int, population: int, breached: bool) -> None:
    assert guard.breached(removals, population) is breached


@pytest.mark.parametrize(
    "bad",
    [{"max_removals": -1}, {"max_percent": 100.5}, {"max_percent": -1}, {"percent_applies_from": 0}],
)
def test_guard_settings_are_validated(bad: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        MassDeletionGuard(**bad)


@given(removals=st.integers(0, 500), population=st.integers(0, 5000), more=st.integers(1, 100))
def test_guard_is_monotonic_in_removals(removals: int, population: int, more: int) -> None:
    # more removals from the same population never un-breach the guard
    guard = MassDeletionGuard()
    if guard.breached(removals, population):
        assert guard.breached(removals + more, population)


# --- subscriptions --------------------------------------------------------------------------------


def _subscription(**values: Any) -> VendorSubscription:
    return VendorSubscription(**{"tenant_id": "kommun-a", "vendor_id": "laromedel-ab", **values})


def test_subscription_defaults() -> None:
    sub = _subscription(school_unit_codes={"11111111"})
    assert sub.roles == frozenset(Role)
    assert sub.school_types is None
    assert sub.school_years is None
    assert sub.group_types is None
    assert sub.protected_identity_policy is ProtectedIdentityPolicy.EXCLUDE
    assert sub.test_mode is True
    assert sub.guard == MassDeletionGuard()


@pytest.mark.parametrize(
    ("values", "ok"),
    [
        ({"school_unit_codes": {"11111111"}}, True),
        ({"school_unit_codes": {"11111111", "00000000"}}, True),
        ({"school_unit_codes": set()}, False),  # at least one unit
        ({"school_unit_codes": {"1111111"}}, False),
        ({"school_unit_codes": {"11111111", "1111111a"}}, False),
        ({"school_unit_codes": {"111111111"}}, False),
        ({"school_unit_codes": {"11111111"}, "school_years": {0, 10}}, True),
        ({"school_unit_codes": {"11111111"}, "school_years": set()}, True),
        ({"school_unit_codes": {"11111111"}, "school_years": {11}}, False),
        ({"school_unit_codes": {"11111111"}, "school_years": {-1, 3}}, False),
        ({"school_unit_codes": {"11111111"}, "school_types": {"KOMVUX"}}, False),  # 2.1 values only here
        ({"school_unit_codes": {"11111111"}, "roles": {"principal"}}, False),
        ({"school_unit_codes": {"11111111"}, "tenant_id": "Kommun A"}, False),
        ({"school_unit_codes": {"11111111"}, "vendor_id": "-vendor"}, False),
        ({"school_unit_codes": {"11111111"}, "protected_identity_policy": "reveal"}, False),
    ],
)
def test_subscription_validation(values: dict[str, Any], ok: bool) -> None:
    if ok:
        assert _subscription(**values).school_unit_codes == frozenset(values["school_unit_codes"])
    else:
        with pytest.raises(ValidationError):
            _subscription(**values)


def test_malformed_codes_are_named_in_the_error() -> None:
    with pytest.raises(ValidationError, match="12, abc"):
        _subscription(school_unit_codes={"11111111", "abc", "12"})


def test_default_profile_accepts_everything_but_the_sensitive_fields() -> None:
    profile = VendorProfile(vendor_id="laromedel-ab")
    assert profile.kinds == frozenset(VENDOR_KINDS)  # syllabuses and placements are never resources there
    assert VendorProfile(vendor_id="laromedel-ab", kinds=frozenset(EntityKind)).kinds == frozenset(VENDOR_KINDS)
    assert set(profile.accepted_fields) == set(EntityKind)
    assert profile.accepted_fields[EntityKind.PERSON] == PERSON_FIELDS - SENSITIVE_FIELDS - {"placements"}
    assert not any(SENSITIVE_FIELDS & fields for fields in profile.accepted_fields.values())
    assert {"civic_no", "birth_date"} == SENSITIVE_FIELDS
    assert SENSITIVE_FIELDS <= PERSON_FIELDS


PERSON = EntityKind.PERSON
FULL_PROFILE = VendorProfile(vendor_id="laromedel-ab", accepted_fields=dict(OPTIONAL_FIELDS))


@pytest.mark.parametrize(
    ("profile", "fields", "expected"),
    [
        (VendorProfile(vendor_id="v"), None, PERSON_FIELDS - SENSITIVE_FIELDS - {"placements"}),  # opt-in
        (FULL_PROFILE, None, PERSON_FIELDS - SENSITIVE_FIELDS),  # sensitive only when named
        (FULL_PROFILE, {PERSON: frozenset({"civic_no", "given_name"})}, {"civic_no", "given_name"}),
        (VendorProfile(vendor_id="v"), {PERSON: frozenset({"civic_no", "given_name"})}, {"given_name"}),
        (VendorProfile(vendor_id="v"), {PERSON: frozenset()}, set()),
        (FULL_PROFILE, {EntityKind.GROUP: frozenset()}, PERSON_FIELDS - SENSITIVE_FIELDS),  # other kinds unnarrowed
        (VendorProfile(vendor_id="v", accepted_fields={}), None, set()),  # a kind the profile leaves out
        (
            VendorProfile(vendor_id="v", accepted_fields={PERSON: frozenset({"given_name", "birth_date"})}),
            {PERSON: frozenset({"birth_date", "emails"})},
            {"birth_date"},
        ),
    ],
)
def test_allowed_fields(
    profile: VendorProfile, fields: dict[EntityKind, frozenset[str]] | None, expected: set[str]
) -> None:
    sub = _subscription(school_unit_codes={"11111111"}, fields=fields)
    assert sub.allowed_fields(PERSON, profile) == expected


@given(
    accepted=st.sets(st.sampled_from(sorted(PERSON_FIELDS))),
    named=st.none() | st.sets(st.sampled_from(sorted(PERSON_FIELDS))),
)
def test_allowed_fields_never_exceed_the_profile_and_need_naming_for_sensitive(
    accepted: set[str], named: set[str] | None
) -> None:
    profile = VendorProfile(vendor_id="v", accepted_fields={PERSON: frozenset(accepted)})
    sub = _subscription(school_unit_codes={"11111111"}, fields=None if named is None else {PERSON: frozenset(named)})
    allowed = sub.allowed_fields(PERSON, profile)
    assert allowed <= accepted
    if named is not None:
        assert allowed <= named
    for sensitive in SENSITIVE_FIELDS:
        assert (sensitive in allowed) is (sensitive in accepted and named is not None and sensitive in named)
