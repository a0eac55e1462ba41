"""Datakvalitet: a summary per school unit and code (each count links to its list), the findings filtered
by severity, code and school unit (in the URL) and a search by name, value or key (posted, so that names
and addresses never travel in a URL), a page at a time from the store, with names, the offending value and
a duplicate's other party for those who may see personal data; and the CSV for a school office, filtered
like the page."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from skolsynk.domain.quality import FindingCode, Severity
from skolsynk_services.admin.ui.catalogue import section
from skolsynk_services.admin.ui.findings_report import fix, school_office_csv
from skolsynk_services.admin.ui.page import download, principal_of, render, see_other, service_of, tenant_frame, url
from skolsynk_services.admin.ui.paging import PAGE, PAGE_SIZE, SEARCH, Paging

#: The filter's fields (in the URL, kept by the pager's links and the CSV link).
FILTERS = ("severity", "code", "school_unit")
#: The longest search text.
SEARCH_LENGTH = 200


def _enum_or_none(cls: type[Severity] | type[FindingCode], value: str | None) -> Any:
    try:
        return cls(value) if value else None
    except ValueError:
        return None


def _filters(fields: Mapping[str, Any]) -> dict[str, Any]:
    """The report's filter (from the URL or a posted form) as the service takes it (an unknown severity or
    code is no filter)."""
    return {
        "severity": _enum_or_none(Severity, str(fields.get("severity") or "") or None),
        "code": _enum_or_none(FindingCode, str(fields.get("code") or "") or None),
        "school_unit_code": str(fields.get("school_unit") or "")[:20] or None,
    }


def _number(fields: Mapping[str, Any]) -> int:
    try:
        return max(1, int(str(fields.get(PAGE) or "1")))
    except ValueError:
        return 1


@dataclass(frozen=True)
class SummaryRow:
    """A school unit's row of the summary (``code`` "-": the findings without a school unit)."""

    code: str
    name: str | None
    errors: int
    warnings: int
    counts: dict[str, int]


def _summary(summary: dict[str, dict[str, int]], names: dict[str, str]) -> tuple[list[SummaryRow], list[str]]:
    """The rows of the table per school unit and code (units with the most errors first) and its code
    columns (the most frequent first)."""
    severities = {s.value for s in Severity}
    totals: dict[str, int] = {}
    for counts in summary.values():
        for code, n in counts.items():
            if code not in severities:
                totals[code] = totals.get(code, 0) + n
    columns = sorted(totals, key=lambda code: (-totals[code], code))
    rows = [
        SummaryRow(unit, names.get(unit), counts.get("error", 0), counts.get("warning", 0), counts)
        for unit, counts in summary.items()
    ]
    rows.sort(key=lambda r: (r.code == "-", -r.errors, -r.warnings, r.name or r.code))
    return rows, columns


async def quality(request: web.Request) -> web.StreamResponse:
    """The report with the filter of the URL (no search: a search is posted)."""
    return await _report(request, request.query, "")


async def quality_search(request: web.Request) -> web.StreamResponse:
    """The filter form posted: with a search, the report of it (the pager posts it again with the page's
    number); without one, back to the filter's URL."""
    form = await request.post()
    text = str(form.get(SEARCH, "")).strip()[:SEARCH_LENGTH]
    if not text:
        kept = {name: str(form[name]) for name in FILTERS if form.get(name)}
        return see_other(request, url(request, "quality", kept, tenant=request.match_info["tenant"]))
    return await _report(request, form, text)


async def _report(request: web.Request, fields: Mapping[str, Any], text: str) -> web.StreamResponse:
    frame = await tenant_frame(request, "quality")
    principal, service = principal_of(request), service_of(request)
    tenant_id = frame["tenant_id"]
    filters = _filters(fields)
    number = _number(fields)
    search = text or None
    page = await service.findings(
        principal, tenant_id, **filters, text=search, skip=(number - 1) * PAGE_SIZE, limit=PAGE_SIZE
    )
    kept = {name: str(fields[name]) for name in FILTERS if fields.get(name)}
    paging = Paging(number, PAGE_SIZE, page.total, kept)
    if paging.number != number:  # past the last page: show the last one
        page = await service.findings(principal, tenant_id, **filters, text=search, skip=paging.skip, limit=PAGE_SIZE)
    units = await service.school_units(principal, tenant_id)
    names = {u["school_unit_code"]: u["display_name"] for u in units}
    summary = await service.findings_summary(principal, tenant_id)
    rows, columns = _summary(summary, names)
    return render(
        request,
        "quality.html",
        **frame,
        filters={
            "severity": filters["severity"].value if filters["severity"] else "",
            "code": filters["code"].value if filters["code"] else "",
            "unit": filters["school_unit_code"] or "",
            "q": text,
        },
        filtered=bool(kept) or bool(text),
        kept=kept,
        findings=[(f, fix(f.code, f.source_kind)) for f in page.findings],
        paging=paging,
        personal=principal.may_see_personal_data,
        kinds=section("quality.kinds"),
        summary=rows,
        summary_codes=columns,
        unit_names=names,
        unit_codes=sorted(set(names) | {c for c in summary if c != "-"}),
        codes=[c.value for c in FindingCode],
    )


async def findings_csv(request: web.Request) -> web.StreamResponse:
    """The CSV for a school office, filtered like the page (every finding of the filter, not a page): the
    filter in the URL, or posted with a search."""
    fields: Mapping[str, Any] = await request.post() if request.method == "POST" else request.query
    tenant_id = request.match_info["tenant"]
    principal, service = principal_of(request), service_of(request)
    filters = _filters(fields)
    text = str(fields.get(SEARCH, "")).strip()[:SEARCH_LENGTH] if request.method == "POST" else ""
    page = await service.findings(principal, tenant_id, **filters, text=text or None, limit=0)
    names = {u["school_unit_code"]: u["display_name"] for u in await service.school_units(principal, tenant_id)}
    csv_text = school_office_csv(page.findings, personal=principal.may_see_personal_data, unit_names=names)
    unit = filters["school_unit_code"]
    name = f"datakvalitet-{tenant_id}" + (f"-{unit}" if unit and unit.isdigit() else "")
    return download(csv_text, f"{name}.csv", "text/csv")
