"""Spärrar: deletions held back because a school unit would lose too many at once. The list of open holds
with their cause, one hold's page (whom it affects, searchable and paged; why; approve or discard) and the
history of decisions."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from aiohttp import web

from skolsynk_services.admin import models
from skolsynk_services.admin.problems import Problem
from skolsynk_services.admin.ui.catalogue import section, text
from skolsynk_services.admin.ui.formatting import when
from skolsynk_services.admin.ui.page import principal_of, refused, render, see_other, service_of, tenant_frame, url
from skolsynk_services.admin.ui.paging import PAGE_SIZE, SEARCH, Paging, page_number, search_text
from skolsynk_services.admin.ui.texts import AUDIT_ACTIONS

#: Entries of the history per page.
HISTORY_PAGE = 20


def cause_texts(
    causes: Sequence[models.HoldCause],
    *,
    source_names: Mapping[str, str] | None = None,
    vendor_names: Mapping[str, str] | None = None,
) -> list[str]:
    """Why a hold's removals came, one Swedish sentence per cause: a source run (named, with when it
    finished), an admin's change in skolsynk (who did what, when: never worded as the source's fault), end
    dates in the source's data, or another recalculation. A hold without causes says its cause is unknown."""
    source_names, vendor_names = source_names or {}, vendor_names or {}
    sentences = []
    for cause in causes:
        if cause.kind == "source":
            source = source_names.get(cause.source_id or "", cause.source_id or "?")
            mode = section("holds.modes").get(cause.mode or "", cause.mode or "")
            sentences.append(text("holds.cause.source", source=source, mode=mode, at=when(cause.at)))
        elif cause.kind == "change":
            label = AUDIT_ACTIONS.get(cause.action or "", cause.action or "")
            action = label[:1].lower() + label[1:]
            vendor = (cause.target or "").split(":")[0]
            target = f" ({vendor_names[vendor]})" if vendor in vendor_names else ""
            sentences.append(
                text("holds.cause.change", actor=cause.actor or "?", action=action, target=target, at=when(cause.at))
            )
        elif cause.kind == "dates":
            sentences.append(text("holds.cause.dates"))
        else:
            reason = section("holds.other_reasons").get(cause.reason or "", cause.reason or "")
            sentences.append(text("holds.cause.other", reason=reason))
    return sentences or [text("holds.cause.unknown")]


def short_cause(causes: Sequence[models.HoldCause], *, source_names: Mapping[str, str] | None = None) -> str:
    """The cause in a few words, for the list: the admin's change first (it is never the source's fault)."""
    source_names = source_names or {}
    for kind in ("change", "source", "dates", "other"):
        for cause in causes:
            if cause.kind != kind:
                continue
            if kind == "change":
                return text("holds.short_cause.change", actor=cause.actor or "?")
            if kind == "source":
                source = source_names.get(cause.source_id or "", cause.source_id or "?")
                return text("holds.short_cause.source", source=source)
            return text(f"holds.short_cause.{kind}")
    return text("holds.short_cause.unknown")


async def _names(request: web.Request, tenant_id: str) -> dict[str, Any]:
    """What the pages name things by: school units by code, vendors, sources."""
    principal, service = principal_of(request), service_of(request)
    units = await service.school_units(principal, tenant_id)
    sources = await service.list_sources(principal, tenant_id)
    return {
        "unit_names": {u["school_unit_code"]: u["display_name"] for u in units},
        "vendor_names": {v.vendor_id: v.display_name for v in service.vendors()},
        "source_names": {s.source_id: s.display_name for s in sources},
    }


def unit_label(hold: models.Hold | models.HoldHistoryEntry, unit_names: Mapping[str, str]) -> str:
    codes = hold.school_unit_codes
    return ", ".join(f"{unit_names.get(c, c)} ({c})" for c in codes) if codes else hold.school_unit_id


async def holds(request: web.Request) -> web.StreamResponse:
    frame = await tenant_frame(request, "holds")
    principal, service = principal_of(request), service_of(request)
    tenant_id = frame["tenant_id"]
    names = await _names(request, tenant_id)
    found = await service.holds(principal, tenant_id)
    number = page_number(request)
    history, total = await service.hold_history(
        principal, tenant_id, skip=(number - 1) * HISTORY_PAGE, limit=HISTORY_PAGE
    )
    paging = Paging(number, HISTORY_PAGE, total)
    if paging.number != number:  # past the last page: show the last one
        history, _ = await service.hold_history(principal, tenant_id, skip=paging.skip, limit=HISTORY_PAGE)
    rows = [
        {
            "hold": h,
            "unit": unit_label(h, names["unit_names"]),
            "cause": short_cause(h.causes, source_names=names["source_names"]),
        }
        for h in found
    ]
    past = [
        {
            "entry": e,
            "unit": unit_label(e, names["unit_names"]),
            "cause": short_cause(e.causes, source_names=names["source_names"]),
        }
        for e in history
    ]
    return render(request, "holds.html", **frame, **names, rows=rows, history=past, paging=paging)


async def hold(request: web.Request) -> web.StreamResponse:
    frame = await tenant_frame(request, "holds")
    principal, service = principal_of(request), service_of(request)
    tenant_id, vendor_id, unit_id = frame["tenant_id"], request.match_info["vendor"], request.match_info["unit"]
    names = await _names(request, tenant_id)
    found = await service.hold(principal, tenant_id, vendor_id, unit_id)
    search, number = search_text(request), page_number(request)
    entities, total = await service.held_entities(
        principal, tenant_id, vendor_id, unit_id, search=search, skip=(number - 1) * PAGE_SIZE, limit=PAGE_SIZE
    )
    paging = Paging(number, PAGE_SIZE, total, {SEARCH: search} if search else {})
    if paging.number != number:
        entities, _ = await service.held_entities(
            principal, tenant_id, vendor_id, unit_id, search=search, skip=paging.skip, limit=PAGE_SIZE
        )
    return render(
        request,
        "hold.html",
        **frame,
        **names,
        hold=found,
        vendor=names["vendor_names"].get(vendor_id, vendor_id),
        unit=unit_label(found, names["unit_names"]),
        causes=cause_texts(found.causes, source_names=names["source_names"], vendor_names=names["vendor_names"]),
        entities=entities,
        paging=paging,
        personal=principal.may_see_personal_data,
    )


async def decide_hold(request: web.Request) -> web.StreamResponse:
    tenant_id = request.match_info["tenant"]
    back = url(request, "holds", tenant=tenant_id)
    form = await request.post()
    decision = str(form.get("decision", ""))
    vendor_id, unit_id = str(form.get("vendor_id", "")), str(form.get("school_unit_id", ""))
    if decision not in ("approve", "discard"):
        return see_other(request, back, text("holds.choose"), error=True)
    try:
        await service_of(request).decide_hold(principal_of(request), tenant_id, vendor_id, unit_id, decision)
    except Problem as problem:
        return refused(request, back, problem)
    return see_other(request, back, text("holds.flash_approved" if decision == "approve" else "holds.flash_discarded"))
