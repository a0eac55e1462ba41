"""Leverantörer: the subscriptions with their state, and the form that previews and saves a new or
changed subscription."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import web
from multidict import MultiDictProxy
from pydantic import ValidationError

from skolsynk.domain.ss12000 import EntityKind, GroupType, SchoolType
from skolsynk.domain.subscription import OPTIONAL_FIELDS, SENSITIVE_FIELDS, MassDeletionGuard, VendorProfile
from skolsynk_services.admin import models
from skolsynk_services.admin.problems import NotFound, Problem
from skolsynk_services.admin.ui.catalogue import plural, section, text
from skolsynk_services.admin.ui.formatting import decimal
from skolsynk_services.admin.ui.formatting import number as number_of
from skolsynk_services.admin.ui.page import principal_of, render, see_other, service_of, tenant_frame, url
from skolsynk_services.admin.ui.paging import PAGE_SIZE, Paging
from skolsynk_services.admin.ui.subscription_texts import (
    field_label,
    group_type_label,
    school_type_label,
    unit_about,
    warning_text,
)
from skolsynk_services.admin.ui.texts import (
    FIELD_MESSAGES,
    KIND_NAMES,
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


#: The mass-deletion guard's limits, as the form names its inputs (``guard_<name>``).
GUARD_FIELDS = ("max_removals", "max_percent", "percent_applies_from")
#: The checkbox groups whose wrong values get their own message (the API names them the same).
CHOICE_FIELDS = ("school_types", "group_types", "fields")


def _getall(form: Mapping[str, Any] | MultiDictProxy[Any], key: str) -> list[str]:
    if isinstance(form, MultiDictProxy):
        return [str(v) for v in form.getall(key, [])]
    value = form.get(key, [])
    return [str(v) for v in (value if isinstance(value, list | tuple) else [value])]


def _subscription_values(form: Mapping[str, Any] | MultiDictProxy[Any]) -> dict[str, Any]:
    """The form as it was sent (strings, kept as typed so an error shows what was entered)."""
    return {
        "vendor_id": str(form.get("vendor_id", "")).strip(),
        "school_unit_codes": _getall(form, "school_unit_codes"),
        "roles": _getall(form, "roles"),
        "school_types": _getall(form, "school_types"),
        "school_years": _getall(form, "school_years"),
        "group_types": _getall(form, "group_types"),
        "placements": form.get("placements") == "on",
        # The fields are "kind.field"; fields_vendor names the vendor whose fields the form showed.
        "fields": _getall(form, "fields"),
        "fields_vendor": str(form.get("fields_vendor", "")),
        "protected_identity_policy": str(form.get("protected_identity_policy", "exclude")),
        "deletion_grace_hours": str(form.get("deletion_grace_hours", "0")).strip(),
        **{f"guard_{name}": str(form.get(f"guard_{name}", "")).strip() for name in GUARD_FIELDS},
        # The preview's search and pages ("added:removed").
        "q": str(form.get("q", "")).strip()[:200],
        "pages": str(form.get("preview_pages", "")),
    }


def _guard_values(guard: Mapping[str, Any]) -> dict[str, str]:
    return {f"guard_{name}": decimal(float(guard[name])) for name in GUARD_FIELDS}


def _new_values(vendor_id: str) -> dict[str, Any]:
    return _subscription_values(
        {"vendor_id": vendor_id, "roles": list(PERSON_ROLES), **_guard_values(MassDeletionGuard().model_dump())}
    )


def _values_of(subscription: models.Subscription) -> dict[str, Any]:
    """The form of a saved subscription (its fields are checked from the vendor's profile when shown)."""
    stored = subscription.subscription
    grace = float(stored.get("deletion_grace_hours") or 0)
    return {
        **_subscription_values({}),
        "vendor_id": subscription.vendor_id,
        "school_unit_codes": list(stored.get("school_unit_codes") or []),
        "roles": list(stored.get("roles") or []),
        "school_types": list(stored.get("school_types") or []),
        "school_years": [str(y) for y in stored.get("school_years") or []],
        "group_types": list(stored.get("group_types") or []),
        "placements": bool(stored.get("placements")),
        "protected_identity_policy": stored.get("protected_identity_policy") or "exclude",
        "deletion_grace_hours": decimal(grace),
        **_guard_values(stored.get("guard") or MassDeletionGuard().model_dump()),
    }


def offered_fields(profile: VendorProfile) -> dict[str, list[str]]:
    """Per kind the vendor takes, the optional fields its profile accepts, in the catalogue's order."""
    offered: dict[str, list[str]] = {}
    for kind in EntityKind:
        accepted = profile.accepted_fields.get(kind, frozenset()) & OPTIONAL_FIELDS[kind]
        if kind not in profile.kinds or not accepted:
            continue
        order = list(section("subscription_form.field_names").get(kind.value, {}))
        offered[kind.value] = sorted(accepted, key=lambda f: (order.index(f) if f in order else len(order), f))
    return offered


def _default_fields(offered: dict[str, list[str]]) -> dict[str, list[str]]:
    """What a subscription without its own field choice gives: all the profile accepts but the sensitive."""
    return {kind: [f for f in names if f not in SENSITIVE_FIELDS] for kind, names in offered.items()}


def checked_fields(stored: Mapping[str, Any] | None, profile: VendorProfile) -> list[str]:
    """The form's checked fields ("kind.field") for a subscription's ``fields`` (None: the default)."""
    offered = offered_fields(profile)
    chosen = _default_fields(offered)
    for kind, names in (stored or {}).items():
        if kind in offered:
            chosen[kind] = [f for f in offered[kind] if f in names]
    return [f"{kind}.{name}" for kind, names in chosen.items() for name in names]


def _fields_of_form(checked: list[str], profile: VendorProfile) -> dict[str, list[str]] | None:
    """The form's checked fields as the subscription's ``fields``: None when they are the default (so
    a subscription keeps following its vendor's profile until someone narrows it)."""
    offered = offered_fields(profile)
    chosen = {kind: [f for f in names if f"{kind}.{f}" in checked] for kind, names in offered.items()}
    return None if chosen == _default_fields(offered) else chosen


def _subscription_body(
    values: dict[str, Any], current: models.Subscription | None, profile: VendorProfile | None
) -> models.SubscriptionIn:
    """The form as the service's body. The fields are the form's when it showed this vendor's (else
    the current subscription's); the persons explicitly included or excluded are kept by the service."""
    if profile is not None and values["fields_vendor"] == values["vendor_id"]:
        fields: Any = _fields_of_form(values["fields"], profile)
    else:
        fields = current.subscription.get("fields") if current is not None else None
    data: dict[str, Any] = {
        "school_unit_codes": values["school_unit_codes"],
        "roles": values["roles"],
        "school_types": values["school_types"] or None,
        "school_years": [int(y) for y in values["school_years"] if y.isdigit()] or None,
        "group_types": values["group_types"] or None,
        "placements": bool(values.get("placements")),
        "fields": fields,
        "protected_identity_policy": values["protected_identity_policy"],
        "deletion_grace_hours": values["deletion_grace_hours"].replace(",", ".") or "0",
        # Limits left blank keep the subscription's (or the defaults); a form always shows them.
        "guard": {name: values[f"guard_{name}"].replace(",", ".") for name in GUARD_FIELDS}
        if any(values[f"guard_{name}"] for name in GUARD_FIELDS)
        else None,
    }
    return models.SubscriptionIn.model_validate(data)


def _form_errors(errors: list[Any]) -> dict[str, str]:
    """Validation errors as form field -> Swedish message: the guard's limits and the checkbox groups by
    their own names, the rest as every form has them."""
    found: dict[str, str] = {}
    rest = []
    for error in errors:
        location = [str(p) for p in error.get("loc") or str(error.get("field") or "").split(".")]
        name = location[0]
        if name == "guard" and len(location) > 1 and location[1] in GUARD_FIELDS:
            found.setdefault(f"guard_{location[1]}", text(f"subscription_form.errors.guard_{location[1]}"))
        elif name in CHOICE_FIELDS:
            found.setdefault(name, text(f"subscription_form.errors.{name}"))
        else:
            rest.append(error)
    return field_errors(rest) | found


async def _profile_of(request: web.Request, tenant_id: str, vendor_id: str) -> VendorProfile | None:
    """The profile of a vendor the catalogue has (None for none chosen or an unknown one)."""
    service = service_of(request)
    if vendor_id not in {v.vendor_id for v in service.vendors()}:
        return None
    return await service.subscription_profile(principal_of(request), tenant_id, vendor_id)


def _pages(values: dict[str, Any]) -> tuple[int, int]:
    added, _, removed = values["pages"].partition(":")
    return (int(added) if added.isdigit() else 1, int(removed) if removed.isdigit() else 1)


def _preview_lists(preview: models.Preview, values: dict[str, Any], unit_names: dict[str, str]) -> list[dict[str, Any]]:
    """The preview's lists of who is added and who is removed, each searched and cut to its page."""
    search = values["q"].lower()

    def matches(entry: models.PreviewEntry) -> bool:
        names = [entry.label, *entry.school_unit_codes, *(unit_names.get(c, "") for c in entry.school_unit_codes)]
        return not search or any(search in name.lower() for name in names)

    lists = []
    for key, entries, number in (
        ("added", preview.added, _pages(values)[0]),
        ("removed", preview.removed, _pages(values)[1]),
    ):
        found = sorted((e for e in entries if matches(e)), key=lambda e: (e.label.lower(), str(e.entity_id)))
        paging = Paging(number, PAGE_SIZE, len(found))
        lists.append(
            {
                "key": key,
                "caption": text(f"subscription_form.preview.{key}", persons=plural("persons", len(entries))),
                "searched": text(
                    "subscription_form.preview.searched", shown=number_of(len(found)), total=number_of(len(entries))
                )
                if search
                else "",
                "rows": found[paging.skip : paging.skip + paging.size],
                "paging": paging,
            }
        )
    return lists


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
    tenant_id = frame["tenant_id"]
    populations = await service.unit_populations(principal, tenant_id)
    existing = {s.vendor_id for s in await service.list_subscriptions(principal, tenant_id)}
    profile = await _profile_of(request, tenant_id, values["vendor_id"])
    # The organiser's active school units, by name; a chosen code that is none of them after them.
    units = [(p.code, p.name, unit_about(p)) for p in sorted(populations.values(), key=lambda p: (p.name, p.code))]
    units += [(code, code, unit_about(None)) for code in sorted(set(values["school_unit_codes"]) - set(populations))]
    unit_names = {code: f"{name} ({code})" for code, name, _ in units} | {"-": text("subscription_form.no_unit")}
    # The school types the organiser's units and students have, and any chosen; every type without data.
    present = {t for p in populations.values() for t in (*p.student_school_types, *p.school_types)}
    present |= {t for t in SchoolType if t.value in values["school_types"]}
    school_types = [(t.value, school_type_label(t)) for t in SchoolType if t in present or not populations]
    fields: list[tuple[str, str, list[tuple[str, str, bool]]]] = []
    checked: list[str] = []
    if profile is not None:
        offered = offered_fields(profile)
        fields = [
            (kind, KIND_NAMES.get(kind, kind), [(f, field_label(kind, f), f in SENSITIVE_FIELDS) for f in names])
            for kind, names in offered.items()
        ]
        shown_here = values["fields_vendor"] == values["vendor_id"]
        stored = current.subscription.get("fields") if current is not None else None
        checked = values["fields"] if shown_here else checked_fields(stored, profile)
    kept = current.subscription if current is not None and not current.subscription.get("ended_at") else {}
    included, excluded = len(kept.get("include_persons") or []), len(kept.get("exclude_persons") or [])
    return render(
        request,
        "subscription_form.html",
        status=status,
        **frame,
        current=current,
        vendors=service.vendors(),
        existing=existing,
        units=units,
        unit_names=unit_names,
        school_types=school_types,
        group_types=[(t.value, group_type_label(t)) for t in GroupType],
        fields=fields,
        checked_fields=checked,
        exceptions=text(
            "subscription_form.exceptions",
            included=plural("persons", included),
            excluded=plural("persons", excluded),
        )
        if included or excluded
        else "",
        values=values,
        preview=preview,
        warnings=[warning_text(w) for w in preview.warnings] if preview else [],
        preview_lists=_preview_lists(preview, values, unit_names) if preview else [],
        errors=errors or {},
        error=error,
    )


async def subscription_new(request: web.Request) -> web.StreamResponse:
    frame = await tenant_frame(request, "vendors")
    return await _render_subscription_form(request, frame, None, _new_values(request.query.get("vendor_id", "")))


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
        errors["vendor_id"] = text("subscription_form.errors.vendor_required")
    if not values["roles"]:
        errors["roles"] = FIELD_MESSAGES["roles"]
    if current is None and values["vendor_id"]:
        try:
            other = await service.get_subscription(principal, tenant_id, values["vendor_id"])
        except NotFound:
            other = None
        if other is not None and not other.subscription.get("ended_at"):
            errors["vendor_id"] = text("subscription_form.errors.vendor_exists", vendor=other.vendor_name)
    body = None
    try:
        body = _subscription_body(values, current, await _profile_of(request, tenant_id, values["vendor_id"]))
    except ValidationError as invalid:
        errors = _form_errors(list(invalid.errors())) | errors
    if errors or body is None:
        return await _render_subscription_form(
            request, frame, current, values, errors=errors, error=text("subscription_form.errors.check_fields"),
            status=422,
        )  # fmt: skip
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
            errors=_form_errors(problem.extra.get("errors") or []),
            error=swedish(problem),
            status=problem.status,
        )
    message = (
        text("subscription_form.saved_test_mode", hours=decimal(service.promotion_hours))
        if current is None or current.promotion.test_mode or current.subscription.get("ended_at")
        else text("subscription_form.saved_live")
    )
    return see_other(request, url(request, "subscription", tenant=tenant_id, vendor=values["vendor_id"]), message)
