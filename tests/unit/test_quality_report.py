"""The data-quality report's Swedish texts (every finding code has a title, what skolsynk does and how to fix
it in the source) and its CSV for a school office (semicolons, a BOM, Swedish columns, personal columns
only for those who may see them, no cell a spreadsheet would run as a formula)."""

from __future__ import annotations

import csv
import io
from typing import Any
from uuid import UUID

import pytest

from skolsynk.domain.quality import Finding, FindingCode
from skolsynk.domain.ss12000 import EntityKind
from skolsynk_services.admin.models import ReportedFinding, SourceKind
from skolsynk_services.admin.ui.catalogue import lookup
from skolsynk_services.admin.ui.findings_report import BOM, COLUMNS, effect, fix, school_office_csv, title
from skolsynk_services.admin.ui.texts import FINDINGS

pytestmark = pytest.mark.unit

TWIN = UUID("7278a908-3fc9-4485-a698-04704d2773bd")
KEEPER = UUID("0e5c6d1a-7a53-4d4e-9b8e-2f1f1f6f4a11")


# --- every code explained --------------------------------------------------------------------------


@pytest.mark.parametrize("code", list(FindingCode))
def test_every_finding_code_has_a_title_an_effect_and_a_fix(code: FindingCode) -> None:
    entry = lookup(f"findings.{code}")
    for part in ("title", "effect", "fix"):
        assert isinstance(entry.get(part), str), f"sv.json: findings.{code}.{part} is missing"
        assert entry[part].strip() == entry[part], f"findings.{code}.{part}"
    assert 3 < len(entry["title"]) < 80
    for sentence in (entry["effect"], entry["fix"], *entry.get("fix_by_source", {}).values()):
        assert sentence.endswith("."), f"findings.{code}: {sentence!r}"
        assert 20 < len(sentence) < 500, f"findings.{code}: {sentence!r}"
    assert set(entry) <= {"title", "effect", "fix", "fix_by_source"}
    assert set(entry.get("fix_by_source", {})) <= {k.value for k in SourceKind}, f"findings.{code}"


def test_the_fix_is_the_sources_own_where_it_differs_and_the_general_one_elsewhere() -> None:
    egil = fix(FindingCode.EPPN_MISSING, "egil")
    google = fix(FindingCode.EPPN_MISSING, "google")
    general = fix(FindingCode.EPPN_MISSING)
    assert "EGIL-klient" in egil
    assert "mapping.fields.eppn" in google
    assert len({egil, google, general}) == 3
    # a kind without its own text, and no kind at all, get the general one
    assert fix(FindingCode.PERSON_CONFLICTING_ROLES, "google") == fix(FindingCode.PERSON_CONFLICTING_ROLES)
    assert fix(FindingCode.EPPN_MISSING, "a-new-kind") == general


def test_the_old_findings_dict_is_a_view_on_the_catalogue() -> None:
    assert set(FINDINGS) == set(FindingCode)
    for code, (shown_title, shown_effect) in FINDINGS.items():
        assert (shown_title, shown_effect) == (title(code), effect(code))
    assert FINDINGS[FindingCode.EPPN_MISSING][0] == "Inloggnings-id (EPPN) saknas"  # what the UI tests look for


# --- the CSV for a school office -------------------------------------------------------------------


def reported(code: FindingCode, **values: Any) -> ReportedFinding:
    base = Finding.of(code, tenant_id="kommun-a", origin="reconcile", source_id="egil-1").model_dump()
    return ReportedFinding.model_validate({**base, "source_kind": "egil", **values})


ROWS = [
    reported(
        FindingCode.EPPN_DUPLICATE,
        entity_kind=EntityKind.PERSON,
        entity_id=TWIN,
        source_key="stu-2",
        school_unit_code="11111111",
        field="eppn",
        value="anna.a@skola.example",
        other_entity_id=KEEPER,
        entity_name="Anna Andersson",
        other_name="Anna Ahlström",
    ),
    reported(FindingCode.PERSON_NO_ACTIVE_RELATION, entity_kind=EntityKind.PERSON, entity_name="=HYPERLINK(1)"),
    reported(FindingCode.RUN_INCOMPLETE, source_kind=None, detail="1 of 2 pages received"),
]
UNITS = {"11111111": "Granmoskolan"}


def parse(text: str) -> list[dict[str, str]]:
    assert text.startswith(BOM), "Swedish Excel reads UTF-8 only with a byte-order mark"
    assert "\r\n" in text
    return list(csv.DictReader(io.StringIO(text[len(BOM) :], newline=""), delimiter=";"))


def test_the_csv_has_swedish_columns_names_values_and_how_to_fix_each() -> None:
    rows = parse(school_office_csv(ROWS, personal=True, unit_names=UNITS))
    assert list(rows[0]) == [
        "Skolenhet", "Skolenhetskod", "Allvarlighet", "Anmärkning", "Vad skolsynk gör", "Typ av post", "Namn",
        "Nyckel i källan", "Källa", "Fält", "Värde", "Samma värde som", "Samma värde som (id)",
        "Så rättar du i källan", "Detaljer", "Id i skolsynk",
    ]  # fmt: skip
    assert len(rows) == len(ROWS)
    first = rows[0]
    assert (first["Skolenhet"], first["Skolenhetskod"], first["Allvarlighet"]) == ("Granmoskolan", "11111111", "Fel")
    assert first["Anmärkning"] == "Samma inloggnings-id (EPPN) som en annan person"
    assert (first["Namn"], first["Värde"], first["Samma värde som"]) == (
        "Anna Andersson",
        "anna.a@skola.example",
        "Anna Ahlström",
    )
    assert (first["Samma värde som (id)"], first["Id i skolsynk"]) == (str(KEEPER), str(TWIN))
    assert first["Typ av post"] == "Person"
    assert first["Så rättar du i källan"] == fix(FindingCode.EPPN_DUPLICATE, "egil")
    assert rows[2]["Skolenhet"] == "Utan skolenhet"
    assert rows[2]["Så rättar du i källan"] == fix(FindingCode.RUN_INCOMPLETE)
    assert rows[2]["Detaljer"] == "1 of 2 pages received"


def test_a_cell_a_spreadsheet_would_run_as_a_formula_is_quoted() -> None:
    rows = parse(school_office_csv(ROWS, personal=True, unit_names=UNITS))
    assert rows[1]["Namn"] == "'=HYPERLINK(1)"


def test_without_the_right_to_personal_data_the_csv_has_no_names_or_values() -> None:
    text = school_office_csv(ROWS, personal=False, unit_names=UNITS)
    rows = parse(text)
    personal = {c.key for c in COLUMNS if c.personal}
    assert personal == {"name", "value", "other_name"}
    assert not {"Namn", "Värde", "Samma värde som"} & set(rows[0])
    assert rows[0]["Samma värde som (id)"] == str(KEEPER)  # ids and codes remain
    for value in ("Anna Andersson", "anna.a@skola.example", "Anna Ahlström", "HYPERLINK"):
        assert value not in text


def test_an_empty_report_is_the_header_alone() -> None:
    text = school_office_csv([], personal=True, unit_names={})
    assert text.count("\r\n") == 1
    assert parse(text) == []
