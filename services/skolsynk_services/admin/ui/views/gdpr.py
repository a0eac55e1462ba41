"""GDPR: finding a person, erasure requests and objections, withdrawing them, and the deletions at the
vendors with their receipts (the evidence as CSV or JSON)."""

from __future__ import annotations

import uuid

from aiohttp import web
from pydantic import ValidationError

from skolsynk_services.admin import models
from skolsynk_services.admin.problems import Problem
from skolsynk_services.admin.ui.catalogue import text
from skolsynk_services.admin.ui.page import (
    MAX_ROWS,
    download,
    principal_of,
    refused,
    render,
    see_other,
    service_of,
    tenant_frame,
    url,
)
from skolsynk_services.admin.ui.paging import PAGE, Paging
from skolsynk_services.admin.ui.texts import FIELD_MESSAGES, field_errors

#: Persons per page of the search.
SEARCH_PAGE_SIZE = 20


async def gdpr(request: web.Request) -> web.StreamResponse:
    return await _gdpr_page(request, "", request.query.get("person"))


async def gdpr_search(request: web.Request) -> web.StreamResponse:
    """The person search is a POST: names and e-mail addresses never travel in a URL (proxies log URLs).
    Its pages are buttons that post the search again with their number (``sida``)."""
    form = await request.post()
    chosen = form.get("person")
    try:
        number = max(1, int(str(form.get(PAGE, "1"))))
    except ValueError:
        number = 1
    return await _gdpr_page(request, str(form.get("q", ""))[:200], str(chosen) if chosen else None, number)


async def _gdpr_page(request: web.Request, text: str, chosen: str | None, number: int = 1) -> web.StreamResponse:
    frame = await tenant_frame(request, "gdpr")
    principal, service = principal_of(request), service_of(request)
    tenant_id = frame["tenant_id"]
    query = request.query
    text = text.strip()
    persons: list[dict[str, str | None]] = []
    paging = Paging(1, SEARCH_PAGE_SIZE, 0)
    if text:
        found = await service.search_persons(principal, tenant_id, text, page=number, size=SEARCH_PAGE_SIZE)
        paging = Paging(found.page, found.size, found.total)
        persons = [{"person_id": str(p.person_id), "name": p.name, "login": p.login} for p in found.persons]
    selected = next((p for p in persons if p["person_id"] == chosen), None)
    if selected is None and chosen:
        try:
            selected = {"person_id": str(uuid.UUID(chosen)), "name": None, "login": None}
        except ValueError:
            selected = None
    requests = await service.erasure_requests(principal, tenant_id)
    ledger = await service.erasure_ledger(principal, tenant_id)
    counts: dict[str, dict[str, int]] = {}
    for row in ledger:
        counts.setdefault(row["vendor_id"], {}).setdefault(row["status"], 0)
        counts[row["vendor_id"]][row["status"]] += 1
    vendor_filter = query.get("vendor") or ""
    status_filter = query.get("status") or ""
    shown = [
        r
        for r in ledger
        if (not vendor_filter or r["vendor_id"] == vendor_filter)
        and (not status_filter or r["status"] == status_filter)
    ]
    vendor_names = {v.vendor_id: v.display_name for v in service.vendors()}
    return render(
        request,
        "gdpr.html",
        **frame,
        q=text,
        persons=persons,
        paging=paging,
        selected=selected,
        requests=sorted(requests, key=lambda r: (r.get("status") != "active", str(r.get("requested_at")))),
        ledger=shown[-MAX_ROWS:],
        truncated=len(shown) > MAX_ROWS,
        counts=counts,
        vendors=service.vendors(),
        vendor_names=vendor_names,
        filters={"vendor": vendor_filter, "status": status_filter},
    )


async def request_erasure(request: web.Request) -> web.StreamResponse:
    tenant_id = request.match_info["tenant"]
    back = url(request, "gdpr", tenant=tenant_id)
    form = await request.post()
    if form.get("confirm") != "yes":
        return see_other(
            request,
            url(request, "gdpr", {"person": form.get("person_id", "")}, tenant=tenant_id),
            text("gdpr_actions.confirm_person"),
            error=True,
        )
    everyone = form.get("scope", "all") == "all"
    data = {
        "person_id": str(form.get("person_id", "")),
        "kind": str(form.get("kind", "erasure")),
        "vendor_ids": None if everyone else [str(v) for v in form.getall("vendor_ids", [])],
        "reference": str(form.get("reference", "")).strip() or None,
    }
    if not everyone and not data["vendor_ids"]:
        return see_other(request, back, FIELD_MESSAGES["vendor_ids"], error=True)
    try:
        body = models.ErasureIn.model_validate(data)
        await service_of(request).request_erasure(principal_of(request), tenant_id, body)
    except ValidationError as invalid:
        return see_other(request, back, " ".join(field_errors(invalid.errors()).values()), error=True)
    except Problem as problem:
        return refused(request, back, problem)
    return see_other(request, back, text(f"gdpr_actions.sent.{'objection' if body.kind == 'objection' else 'erasure'}"))


async def withdraw_erasure(request: web.Request) -> web.StreamResponse:
    tenant_id = request.match_info["tenant"]
    back = url(request, "gdpr", tenant=tenant_id)
    try:
        request_id = uuid.UUID(request.match_info["request_id"])
        await service_of(request).withdraw_erasure(principal_of(request), tenant_id, request_id)
    except ValueError:
        return see_other(request, back, text("gdpr_actions.no_request"), error=True)
    except Problem as problem:
        return refused(request, back, problem)
    return see_other(request, back, text("gdpr_actions.withdrawn"))


async def evidence(request: web.Request) -> web.StreamResponse:
    tenant_id = request.match_info["tenant"]
    fmt = request.match_info["format"]
    vendor_id = request.query.get("vendor") or None
    text = await service_of(request).evidence(principal_of(request), tenant_id, vendor_id=vendor_id, fmt=fmt)
    name = f"raderingar-{tenant_id}{'-' + vendor_id if vendor_id else ''}.{fmt}"
    return download(text, name, "application/json" if fmt == "json" else "text/csv")
