"""Datakvalitet: the findings per school unit, filtered by severity, code or school unit, and the CSV."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from skolsynk.domain.quality import FindingCode, Severity
from skolsynk_services.admin.ui.page import MAX_ROWS, download, principal_of, render, service_of, tenant_frame
from skolsynk_services.admin.ui.texts import SEVERITIES


def _enum_or_none(cls: type[Severity] | type[FindingCode], value: str | None) -> Any:
    try:
        return cls(value) if value else None
    except ValueError:
        return None


async def quality(request: web.Request) -> web.StreamResponse:
    frame = await tenant_frame(request, "quality")
    principal, service = principal_of(request), service_of(request)
    tenant_id = frame["tenant_id"]
    query = request.query
    severity = _enum_or_none(Severity, query.get("severity"))
    code = _enum_or_none(FindingCode, query.get("code"))
    unit = query.get("school_unit") or None
    found = await service.findings(
        principal, tenant_id, severity=severity, code=code, school_unit_code=unit, limit=MAX_ROWS + 1
    )
    summary = await service.findings_summary(principal, tenant_id)
    units = await service.school_units(principal, tenant_id)
    names = {u["school_unit_code"]: u["display_name"] for u in units}
    rows = []
    for unit_code, counts in summary.items():
        codes = sorted(((c, n) for c, n in counts.items() if c not in SEVERITIES), key=lambda item: (-item[1], item[0]))
        rows.append(
            {
                "code": unit_code,
                "name": names.get(unit_code),
                "errors": counts.get("error", 0),
                "warnings": counts.get("warning", 0),
                "codes": codes,
            }
        )
    return render(
        request,
        "quality.html",
        **frame,
        filters={"severity": severity.value if severity else "", "code": code.value if code else "", "unit": unit},
        findings=found[:MAX_ROWS],
        truncated=len(found) > MAX_ROWS,
        summary=rows,
        unit_names=names,
        unit_codes=sorted(set(names) | {c for c in summary if c != "-"}),
        codes=[c.value for c in FindingCode],
    )


async def findings_csv(request: web.Request) -> web.StreamResponse:
    tenant_id = request.match_info["tenant"]
    text = await service_of(request).findings_csv(principal_of(request), tenant_id)
    return download(text, f"datakvalitet-{tenant_id}.csv", "text/csv")
