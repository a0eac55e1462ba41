"""The data-quality report in Swedish: per finding code what it is, what skolsynk did and how to fix it in
the source (the catalogue's ``findings`` section, keyed by the code: ``findings.email.invalid.fix``, with
``fix_by_source.<kind>`` where the sources differ), and the CSV an admin hands to a school office.

The CSV is what Swedish Excel opens as it is: semicolon-separated, UTF-8 with a byte-order mark, one
finding a row, Swedish column names. For a role that may not see personal data the name, value and other
party's name columns are left out (ids and codes remain). A cell that a spreadsheet would read as a
formula (starting with ``=``, ``+``, ``-``, ``@``) is prefixed with an apostrophe: names and values come
from the sources, and a school office opens the file."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from skolsynk.domain.quality import FindingCode
from skolsynk_services.admin.models import ReportedFinding
from skolsynk_services.admin.ui.catalogue import lookup, section, text
from skolsynk_services.admin.ui.texts import SEVERITIES

#: A spreadsheet reads a cell starting with one of these as a formula.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
BOM = "\ufeff"


def title(code: FindingCode | str) -> str:
    return text(f"findings.{code}.title")


def effect(code: FindingCode | str) -> str:
    return text(f"findings.{code}.effect")


def fix(code: FindingCode | str, source_kind: str | None = None) -> str:
    """How to fix a finding in the source: the text for the source's kind where there is one, else the
    general one."""
    by_source: Mapping[str, str] = lookup(f"findings.{code}").get("fix_by_source", {})
    if source_kind and source_kind in by_source:
        return by_source[source_kind]
    return text(f"findings.{code}.fix")


@dataclass(frozen=True)
class Column:
    key: str  # the column's name in the catalogue (quality.csv.<key>)
    personal: bool = False  # left out for roles that may not see personal data


COLUMNS = (
    Column("school_unit"),
    Column("school_unit_code"),
    Column("severity"),
    Column("finding"),
    Column("effect"),
    Column("kind"),
    Column("name", personal=True),
    Column("source_key"),
    Column("source"),
    Column("field"),
    Column("value", personal=True),
    Column("other_name", personal=True),
    Column("other_id"),
    Column("fix"),
    Column("detail"),
    Column("id"),
)


def _cell(value: object) -> str:
    shown = "" if value is None else str(value)
    return "'" + shown if shown.startswith(FORMULA_STARTS) else shown


def school_office_csv(findings: Iterable[ReportedFinding], *, personal: bool, unit_names: Mapping[str, str]) -> str:
    """The findings as a CSV file for a school office (see the module): ``unit_names`` are the school
    units' names by code."""
    columns = [c for c in COLUMNS if personal or not c.personal]
    kinds = section("quality.kinds")
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=";", lineterminator="\r\n")
    writer.writerow([text(f"quality.csv.{c.key}") for c in columns])
    for f in findings:
        unit = f.school_unit_code
        row = {
            "school_unit": unit_names.get(unit, "") if unit else text("quality.without_unit"),
            "school_unit_code": unit or "",
            "severity": SEVERITIES[f.severity.value][0],
            "finding": title(f.code),
            "effect": effect(f.code),
            "kind": kinds.get(f.entity_kind.value, f.entity_kind.value) if f.entity_kind else "",
            "name": f.entity_name,
            "source_key": f.source_key,
            "source": f.source_id,
            "field": f.field,
            "value": f.value,
            "other_name": f.other_name,
            "other_id": f.other_entity_id,
            "fix": fix(f.code, f.source_kind),
            "detail": f.detail,
            "id": f.entity_id,
        }
        writer.writerow([_cell(row[c.key]) for c in columns])
    return BOM + buffer.getvalue()
