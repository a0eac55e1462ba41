"""Spärrar: deletions held back because a school unit would lose too many at once; approve or discard."""

from __future__ import annotations

from aiohttp import web

from skolsynk_services.admin.problems import Problem
from skolsynk_services.admin.ui.page import principal_of, refused, render, see_other, service_of, tenant_frame, url


async def holds(request: web.Request) -> web.StreamResponse:
    frame = await tenant_frame(request, "holds")
    principal, service = principal_of(request), service_of(request)
    found = await service.holds(principal, frame["tenant_id"])
    units = await service.school_units(principal, frame["tenant_id"])
    names = {u["school_unit_code"]: u["display_name"] for u in units}
    vendor_names = {v.vendor_id: v.display_name for v in service.vendors()}
    return render(request, "holds.html", **frame, holds=found, unit_names=names, vendor_names=vendor_names)


async def decide_hold(request: web.Request) -> web.StreamResponse:
    tenant_id = request.match_info["tenant"]
    back = url(request, "holds", tenant=tenant_id)
    form = await request.post()
    decision = str(form.get("decision", ""))
    if decision not in ("approve", "discard"):
        return see_other(request, back, "Välj att godkänna eller avvisa.", error=True)
    try:
        await service_of(request).decide_hold(
            principal_of(request),
            tenant_id,
            str(form.get("vendor_id", "")),
            str(form.get("school_unit_id", "")),
            decision,
        )
    except Problem as problem:
        return refused(request, back, problem)
    text = (
        "Borttagningarna är godkända och skickas till leverantören vid nästa beräkning."
        if decision == "approve"
        else "Borttagningarna är avvisade: de skickas inte. Rätta uppgifterna i källan."
    )
    return see_other(request, back, text)
