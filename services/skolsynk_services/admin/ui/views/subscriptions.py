"""Leverantörer: the subscriptions with their state, and the form that previews and saves a new or
changed subscription."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import web
from multidict import MultiDictProxy
from pydantic import ValidationError

from skolsynk_services.admin import models
from skolsynk_services.admin.problems import NotFound, Problem
from skolsynk_services.admin.ui.formatting import decimal
from skolsynk_services.admin.ui.page import MAX_ROWS, principal_of, render, see_other, service_of, tenant_frame, url
from skolsynk_services.admin.ui.texts import (
    FIELD_MESSAGES,
    PERSON_ROLES,
    field_errors,
    subscription_state,
    swedish,
    swedish_blockers,
)


async def vendors(request: web.Request) -> web.StreamResponse:
    frame = await tenant_frame(request, "vendors")
    principal, service = principal_of(request), service_of(request)
    subscriptions = await service.list_subscriptions(principal, frame["tenant_id"])
    history = await service.vendor_history(principal, frame["tenant_id"])
    names = {v.vendor_id: v.display_name for v in service.vendors()}
    return render(
        request,
        "vendors.html",
        **frame,
        subscriptions=[
            (s, subscription_state(s), swedish_blockers(s.promotion.blockers, s.promotion)) for s in subscriptions
        ],
        history=history[:30],
        vendor_names=names,
    )


def _subscription_values(form: Mapping[str, Any] | MultiDictProxy[Any]) -> dict[str, Any]:
    getall = form.getall if isinstance(form, MultiDictProxy) else (lambda key, default: form.get(key, default))
    return {
        "vendor_id": str(form.get("vendor_id", "")).strip(),
        "school_unit_codes": [str(v) for v in getall("school_unit_codes", [])],
        "roles": [str(v) for v in getall("roles", [])],
        "school_years": [str(v) for v in getall("school_years", [])],
        "protected_identity_policy": str(form.get("protected_identity_policy", "exclude")),
        "deletion_grace_hours": str(form.get("deletion_grace_hours", "0")).strip(),
        "placements": form.get("placements") == "on",
    }


def _values_of(subscription: models.Subscription) -> dict[str, Any]:
    stored = subscription.subscription
    grace = float(stored.get("deletion_grace_hours") or 0)
    return {
        "vendor_id": subscription.vendor_id,
        "school_unit_codes": list(stored.get("school_unit_codes") or []),
        "roles": list(stored.get("roles") or []),
        "school_years": [str(y) for y in stored.get("school_years") or []],
        "protected_identity_policy": stored.get("protected_identity_policy") or "exclude",
        "deletion_grace_hours": decimal(grace),
        "placements": bool(stored.get("placements")),
    }


def _subscription_body(values: dict[str, Any], current: models.Subscription | None) -> models.SubscriptionIn:
    """The form as the service's body; what the form does not show (school types, group types, fields) is
    kept from the current subscription."""
    grace = values["deletion_grace_hours"].replace(",", ".") or "0"
    data: dict[str, Any] = {
        "school_unit_codes": values["school_unit_codes"],
        "roles": values["roles"],
        "school_years": [int(y) for y in values["school_years"] if y.isdigit()] or None,
        "protected_identity_policy": values["protected_identity_policy"],
        "deletion_grace_hours": grace,
        "placements": bool(values.get("placements")),
    }
    if current is not None:
        stored = current.subscription
        data |= {k: stored.get(k) for k in ("school_types", "group_types", "fields")}
    return models.SubscriptionIn.model_validate(data)


async def _render_subscription_form(
    request: web.Request,
    frame: dict[str, Any],
    current: models.Subscription | None,
    values: dict[str, Any],
    *,
    preview: models.Preview | None = None,
    errors: dict[str, str] | None = None,
    error: str | None = None,
    status: int = 200,
) -> web.Response:
    principal, service = principal_of(request), service_of(request)
    units = await service.school_units(principal, frame["tenant_id"])
    existing = {s.vendor_id for s in await service.list_subscriptions(principal, frame["tenant_id"])}
    return render(
        request,
        "subscription_form.html",
        status=status,
        **frame,
        current=current,
        vendors=service.vendors(),
        existing=existing,
        units=units,
        unit_names={u["school_unit_code"]: f"{u['display_name']} ({u['school_unit_code']})" for u in units}
        | {"-": "Utan skolenhet"},
        values=values,
        preview=preview,
        errors=errors or {},
        error=error,
        max_rows=MAX_ROWS,
    )


async def subscription_new(request: web.Request) -> web.StreamResponse:
    frame = await tenant_frame(request, "vendors")
    values = _subscription_values({"vendor_id": request.query.get("vendor_id", ""), "roles": list(PERSON_ROLES)})
    return await _render_subscription_form(request, frame, None, values)


async def subscription_edit(request: web.Request) -> web.StreamResponse:
    frame = await tenant_frame(request, "vendors")
    current = await service_of(request).get_subscription(
        principal_of(request), frame["tenant_id"], request.match_info["vendor"]
    )
    return await _render_subscription_form(request, frame, current, _values_of(current))


async def subscription_post(request: web.Request) -> web.StreamResponse:
    """Preview (nothing is saved) or save a new or changed subscription."""
    frame = await tenant_frame(request, "vendors")
    principal, service = principal_of(request), service_of(request)
    tenant_id = frame["tenant_id"]
    form = await request.post()
    values = _subscription_values(form)
    vendor_id = request.match_info.get("vendor")
    current = await service.get_subscription(principal, tenant_id, vendor_id) if vendor_id else None
    if current is not None:
        values["vendor_id"] = current.vendor_id
    errors: dict[str, str] = {}
    if not values["vendor_id"]:
        errors["vendor_id"] = "Välj en leverantör."
    if not values["roles"]:
        errors["roles"] = FIELD_MESSAGES["roles"]
    if current is None and values["vendor_id"]:
        try:
            other = await service.get_subscription(principal, tenant_id, values["vendor_id"])
        except NotFound:
            other = None
        if other is not None and not other.subscription.get("ended_at"):
            errors["vendor_id"] = (
                f"Det finns redan en prenumeration för {other.vendor_name}. Ändra den i stället (under Leverantörer)."
            )
    body = None
    try:
        body = _subscription_body(values, current)
    except ValidationError as invalid:
        errors = field_errors(invalid.errors()) | errors
    if errors or body is None:
        return await _render_subscription_form(
            request, frame, current, values, errors=errors, error="Kontrollera de markerade fälten.", status=422
        )
    try:
        if form.get("action") == "save":
            await service.save_subscription(principal, tenant_id, values["vendor_id"], body)
        else:
            preview = await service.preview(principal, tenant_id, values["vendor_id"], body)
            return await _render_subscription_form(request, frame, current, values, preview=preview)
    except Problem as problem:
        return await _render_subscription_form(
            request,
            frame,
            current,
            values,
            errors=field_errors(problem.extra.get("errors") or []),
            error=swedish(problem),
            status=problem.status,
        )
    hours = decimal(service.promotion_hours)
    message = (
        "Prenumerationen är sparad och i testläge: skolsynk räknar fram vad leverantören skulle få, men skickar "
        f"ingenting. Granska testrapporten nedan; du kan gå live när testläget har pågått i {hours} timmar."
        if current is None or current.promotion.test_mode or current.subscription.get("ended_at")
        else "Ändringen är sparad och skickas till leverantören."
    )
    return see_other(request, url(request, "subscription", tenant=tenant_id, vendor=values["vendor_id"]), message)
