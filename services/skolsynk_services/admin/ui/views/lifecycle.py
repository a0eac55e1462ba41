"""A subscription's own page: the test report, its review, the promotion gate and going live (an
operator may override the gate), back to test mode, the end, and the delivery report."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from skolsynk.domain.ss12000 import SchoolUnit
from skolsynk_services.admin import models
from skolsynk_services.admin.auth import Principal
from skolsynk_services.admin.problems import Problem
from skolsynk_services.admin.service import AdminService
from skolsynk_services.admin.ui.page import (
    download,
    principal_of,
    refused,
    render,
    see_other,
    service_of,
    tenant_frame,
    url,
)
from skolsynk_services.admin.ui.texts import FIELD_MESSAGES, KIND_NAMES, subscription_state, swedish_blockers


async def _unit_labels(request: web.Request, tenant_id: str) -> dict[str, str]:
    """School unit id -> "name (code)" for reports that name school units by id. Authorised by
    ``school_units``; the ids come from the canonical state until ``school_units`` returns them."""
    service = service_of(request)
    units = await service.school_units(principal_of(request), tenant_id)
    if all("entity_id" in u for u in units):
        return {str(u["entity_id"]): f"{u['display_name']} ({u['school_unit_code']})" for u in units}
    return {
        str(stored.id): f"{stored.entity.display_name} ({stored.entity.school_unit_code})"
        for stored in await service.entities.load_tenant(tenant_id)
        if isinstance(stored.entity, SchoolUnit)
    }


async def subscription_page(request: web.Request) -> web.StreamResponse:
    """The test report and the way to going live."""
    frame = await tenant_frame(request, "vendors")
    principal, service = principal_of(request), service_of(request)
    tenant_id, vendor_id = frame["tenant_id"], request.match_info["vendor"]
    subscription = await service.get_subscription(principal, tenant_id, vendor_id)
    report = await service.test_report(principal, tenant_id, vendor_id)
    history = await service.vendor_history(principal, tenant_id, vendor_id)
    labels = await _unit_labels(request, tenant_id)
    per_unit = []
    for key, count in report.get("per_school_unit_and_role", {}).items():
        unit, _, role = key.partition("|")
        per_unit.append(
            {
                "unit": "Utan skolenhet" if unit == "-" else labels.get(unit, unit),
                "role": KIND_NAMES.get(role, role),
                "count": count,
            }
        )
    per_unit.sort(key=lambda r: (r["unit"], r["role"]))
    promotion = subscription.promotion
    return render(
        request,
        "subscription.html",
        **frame,
        subscription=subscription,
        state=subscription_state(subscription),
        blockers=swedish_blockers(promotion.blockers, promotion),
        report=report,
        per_unit=per_unit,
        history=history[:20],
    )


async def _subscription_action(
    request: web.Request, action: Callable[[AdminService, Principal, str, str], Awaitable[Any]], done: str
) -> web.StreamResponse:
    tenant_id, vendor_id = request.match_info["tenant"], request.match_info["vendor"]
    back = url(request, "subscription", tenant=tenant_id, vendor=vendor_id)
    try:
        await action(service_of(request), principal_of(request), tenant_id, vendor_id)
    except Problem as problem:
        return refused(request, back, problem)
    return see_other(request, back, done)


async def mark_reviewed(request: web.Request) -> web.StreamResponse:
    return await _subscription_action(
        request, lambda s, p, t, v: s.mark_reviewed(p, t, v), "Testrapporten är markerad som granskad."
    )


async def back_to_test(request: web.Request) -> web.StreamResponse:
    return await _subscription_action(
        request,
        lambda s, p, t, v: s.back_to_test(p, t, v),
        "Prenumerationen är tillbaka i testläge: ingenting skickas till leverantören förrän den går live igen. "
        "Det leverantören redan har ligger kvar.",
    )


async def go_live(request: web.Request) -> web.StreamResponse:
    tenant_id, vendor_id = request.match_info["tenant"], request.match_info["vendor"]
    back = url(request, "subscription", tenant=tenant_id, vendor=vendor_id)
    form = await request.post()
    reason: str | None = None
    if "override" in form:
        reason = str(form.get("override_reason", "")).strip()
        try:
            reason = models.GoLiveIn(override_reason=reason).override_reason
        except ValidationError:
            return see_other(request, back, FIELD_MESSAGES["override_reason"], error=True)
    try:
        await service_of(request).go_live(principal_of(request), tenant_id, vendor_id, reason)
    except Problem as problem:
        return refused(request, back, problem)
    return see_other(
        request, back, "Prenumerationen är live. Leverantören får nu uppgifterna, och ändringar skickas löpande."
    )


async def end_confirm(request: web.Request) -> web.StreamResponse:
    frame = await tenant_frame(request, "vendors")
    subscription = await service_of(request).get_subscription(
        principal_of(request), frame["tenant_id"], request.match_info["vendor"]
    )
    return render(request, "subscription_end.html", **frame, subscription=subscription)


async def end_subscription(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    if form.get("confirm") != "yes":
        tenant_id, vendor_id = request.match_info["tenant"], request.match_info["vendor"]
        return see_other(
            request,
            url(request, "subscription_end", tenant=tenant_id, vendor=vendor_id),
            "Kryssa i rutan för att bekräfta att prenumerationen ska avslutas.",
            error=True,
        )
    return await _subscription_action(
        request,
        lambda s, p, t, v: s.end_subscription(p, t, v),
        "Prenumerationen är avslutad. Allt leverantören har fått raderas nu hos leverantören; "
        "raderingarna och kvittona syns under GDPR.",
    )


async def delivery_report(request: web.Request) -> web.StreamResponse:
    tenant_id, vendor_id = request.match_info["tenant"], request.match_info["vendor"]
    text = await service_of(request).delivery_report_csv(principal_of(request), tenant_id, vendor_id)
    return download(text, f"leveransrapport-{tenant_id}-{vendor_id}.csv", "text/csv")
