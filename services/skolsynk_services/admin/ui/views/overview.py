"""A tenant's home page: the onboarding checklist, the numbers and the sync-history chart."""

from __future__ import annotations

from aiohttp import web
from pydantic import ValidationError

from skolsynk.domain.subscription import MissingMarkingPolicy
from skolsynk_services.admin import models
from skolsynk_services.admin.ui.catalogue import plural, text
from skolsynk_services.admin.ui.chart import runs_chart
from skolsynk_services.admin.ui.formatting import decimal
from skolsynk_services.admin.ui.page import principal_of, render, see_other, service_of, tenant_frame, url
from skolsynk_services.admin.ui.texts import MISSING_MARKING, subscription_state


async def overview(request: web.Request) -> web.StreamResponse:
    frame = await tenant_frame(request, "overview")
    tenant_id = frame["tenant_id"]
    data = await service_of(request).overview(principal_of(request), tenant_id)
    steps_done = data["steps"]
    subscriptions: list[models.Subscription] = data["subscriptions"]
    first = next((s for s in subscriptions if not s.subscription.get("ended_at")), None)
    report = url(request, "subscription", tenant=tenant_id, vendor=first.vendor_id) if first else None
    hours = decimal(service_of(request).promotion_hours)
    vendors = url(request, "vendors", tenant=tenant_id)
    # The onboarding steps in order, each with where it is done (its words: the catalogue's overview.steps).
    steps = [
        ("source", url(request, "sources", tenant=tenant_id)),
        ("data", url(request, "quality", tenant=tenant_id)),
        ("subscription", vendors),
        ("test", vendors),
        ("reviewed", report or vendors),
        ("live", report or vendors),
    ]
    checklist = [
        {
            "key": key,
            "title": text(f"overview.steps.{key}.title"),
            "text": text(f"overview.steps.{key}.text", hours=hours),
            "href": href,
            "done": bool(steps_done.get(key)),
        }
        for key, href in steps
    ]
    next_step = next((s["key"] for s in checklist if not s["done"]), None)
    service = service_of(request)
    return render(
        request,
        "overview.html",
        **frame,
        data=data,
        checklist=checklist,
        next_step=next_step,
        subscriptions=[(s, subscription_state(s)) for s in subscriptions],
        chart=runs_chart(data["runs"]),
        notifications=await service.notifications(principal_of(request), tenant_id),
        contacts=await service.get_contacts(principal_of(request), tenant_id),
        privacy=await service.get_privacy(principal_of(request), tenant_id),
        missing_marking_options=MISSING_MARKING,
        vendor_names={v.vendor_id: v.display_name for v in service.catalogue.values()},
        contacts_error=None,
    )


async def contacts_save(request: web.Request) -> web.StreamResponse:
    """Who is e-mailed when deliveries fail and recover: one address a line."""
    tenant_id = request.match_info["tenant"]
    form = await request.post()
    addresses = [line.strip() for line in str(form.get("notify_emails", "")).splitlines() if line.strip()]
    try:
        body = models.ContactsIn(notify_emails=addresses)
    except ValidationError:
        return see_other(
            request,
            url(request, "overview", tenant=tenant_id) + "#aviseringar",
            text("overview.contacts_invalid"),
            error=True,
        )
    await service_of(request).set_contacts(principal_of(request), tenant_id, body)
    return see_other(
        request,
        url(request, "overview", tenant=tenant_id) + "#aviseringar",
        text("overview.contacts_saved", recipients=plural("overview_recipients", len(body.notify_emails))),
    )


async def privacy_save(request: web.Request) -> web.StreamResponse:
    """How persons without a securityMarking are treated; a change projects the organiser again."""
    tenant_id = request.match_info["tenant"]
    form = await request.post()
    try:
        body = models.PrivacyIn(missing_marking=MissingMarkingPolicy(str(form.get("missing_marking", ""))))
    except ValueError:
        return see_other(
            request,
            url(request, "overview", tenant=tenant_id) + "#skyddade",
            text("overview.privacy_invalid"),
            error=True,
        )
    await service_of(request).set_privacy(principal_of(request), tenant_id, body)
    return see_other(
        request,
        url(request, "overview", tenant=tenant_id) + "#skyddade",
        text("overview.privacy_saved"),
    )
