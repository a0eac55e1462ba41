"""A subscription's own page: in test mode the test report (whether it is final, the persons and groups
per school unit and what the vendor would refuse, searchable a page at a time), its review, the promotion
gate and going live (an operator may override the gate); live, the deliveries' health and what the vendor
holds (the same lists); back to test mode, the end, and the delivery report."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from skolsynk_services.admin import models
from skolsynk_services.admin.auth import Principal
from skolsynk_services.admin.problems import Problem
from skolsynk_services.admin.service import AdminService
from skolsynk_services.admin.ui.catalogue import plural, text
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
from skolsynk_services.admin.ui.paging import PAGE, PAGE_SIZE, SEARCH, Paging
from skolsynk_services.admin.ui.texts import FIELD_MESSAGES, KIND_NAMES, subscription_state, swedish_blockers

#: The query parameters of the report's lists: which list, and which school unit (with ``q`` and ``sida``).
LIST, UNIT = "lista", "skolenhet"
#: The longest search text read.
SEARCH_LENGTH = 200
#: The lists by the word in the URL.
LISTS = {
    "personer": models.ReportList.PERSONS,
    "grupper": models.ReportList.GROUPS,
    "avvisas": models.ReportList.REFUSED,
}
#: The plural that counts each kind on the report's cards.
KIND_PLURALS = {
    "organisation": "test_report_organisations",
    "school_unit_group": "test_report_school_unit_groups",
    "school_unit": "school_units",
    "person": "persons",
    "duty": "test_report_duties",
    "group": "groups",
    "activity": "test_report_activities",
}


def unit_label(unit: models.ReportSchoolUnit | None) -> str:
    """A school unit as the report names it: "name (code)", or what is known of it."""
    if unit is None:
        return text("test_report.no_unit")
    if unit.display_name and unit.school_unit_code:
        return f"{unit.display_name} ({unit.school_unit_code})"
    return unit.display_name or unit.school_unit_code or unit.school_unit_id


def kind_count(kind: str, n: int) -> str:
    """A card's count: "14 personer", "1 grupp"."""
    key = KIND_PLURALS.get(kind)
    return plural(key, n) if key else f"{n} {KIND_NAMES.get(kind, kind).lower()}"


def reason_text(code: str) -> str:
    return text(f"test_report.reasons.{code}")


def _page_number(value: Any) -> int:
    try:
        return max(1, int(str(value or "1")))
    except ValueError:
        return 1


async def _report(
    request: web.Request, tenant_id: str, vendor_id: str, *, test: bool, fields: Mapping[str, Any]
) -> dict[str, Any]:
    """The report of a subscription in test mode (``test``) or live, and the page of the list ``fields``
    ask for (``lista``, ``skolenhet``, ``sida``; the search ``q`` only when posted, so that a name never
    travels in a URL), paged in the store."""
    principal, service = principal_of(request), service_of(request)
    if test:
        report = await service.test_report(principal, tenant_id, vendor_id)
    else:
        report = await service.delivered_report(principal, tenant_id, vendor_id)
    listed = str(fields.get(LIST) or "personer")
    which = LISTS.get(listed, models.ReportList.PERSONS)
    listed = next(word for word, w in LISTS.items() if w is which)
    units = {r.school_unit_id: r for r in report.per_school_unit if r.school_unit_id}
    unit = str(fields.get(UNIT) or "") or None
    if unit not in units:
        unit = None
    query = {LIST: listed, **({UNIT: unit} if unit else {})}
    search = str(fields.get(SEARCH) or "").strip()[:SEARCH_LENGTH] if request.method == "POST" else ""
    if search:
        query[SEARCH] = search
    number = _page_number(fields.get(PAGE))
    lister = service.test_report_list if test else service.delivered_list
    page = await lister(
        principal,
        tenant_id,
        vendor_id,
        which,
        text=search,
        school_unit_id=unit,
        skip=(number - 1) * PAGE_SIZE,
        limit=PAGE_SIZE,
    )
    paging = Paging(number, PAGE_SIZE, page.total, query)
    if paging.number != number:  # past the last page: show the last
        page = await lister(
            principal, tenant_id, vendor_id, which, text=search, school_unit_id=unit, skip=paging.skip, limit=PAGE_SIZE
        )
    unit_names: dict[str, str] = {}
    for row in report.per_school_unit:
        if row.school_unit_id:
            unit_names[row.school_unit_id] = unit_label(
                models.ReportSchoolUnit(
                    school_unit_id=row.school_unit_id,
                    school_unit_code=row.school_unit_code,
                    display_name=row.display_name,
                )
            )
    per_unit = sorted(
        (
            {
                "unit": unit_names.get(r.school_unit_id or "", unit_label(None)),
                "role": KIND_NAMES.get(r.role, r.role),
                "count": r.count,
            }
            for r in report.per_school_unit
        ),
        key=lambda r: (r["unit"], r["role"]),
    )
    return {
        "report": report,
        "per_unit": per_unit,
        "cards": [kind_count(kind, n) for kind, n in report.would_send.items()],
        "refused_total": sum(report.would_be_refused.values()),
        "refused_reasons": [(reason_text(code), n) for code, n in report.refused_per_reason.items()],
        "list": {
            "name": listed,
            "which": which.value,
            "rows": page.rows,
            "paging": paging,
            "search_cut": page.search_cut,
            "search": search,
            "unit": unit,
            "units": sorted(unit_names.items(), key=lambda u: u[1]),
            "tabs": [(word, w.value, _list_count(report, w), word == listed) for word, w in LISTS.items()],
        },
        "unit_label": unit_label,
        "reason_text": reason_text,
    }


def _list_count(report: models.SubscriptionReport, which: models.ReportList) -> int:
    if which is models.ReportList.PERSONS:
        return report.would_send.get("person", 0)
    if which is models.ReportList.GROUPS:
        return report.would_send.get("group", 0)
    return sum(report.would_be_refused.values())


async def subscription_page(request: web.Request) -> web.StreamResponse:
    """In test mode the test report and the way to going live; live, the deliveries and what the vendor
    holds; ended, how to start again. The lists' search is posted (to ``subscription_search``, this page too)."""
    frame = await tenant_frame(request, "vendors")
    principal, service = principal_of(request), service_of(request)
    tenant_id, vendor_id = frame["tenant_id"], request.match_info["vendor"]
    subscription = await service.get_subscription(principal, tenant_id, vendor_id)
    history = await service.vendor_history(principal, tenant_id, vendor_id)
    promotion = subscription.promotion
    state = subscription_state(subscription)
    ended = bool(subscription.subscription.get("ended_at"))
    shown: dict[str, Any] = {}
    if not ended:
        fields: Mapping[str, Any] = await request.post() if request.method == "POST" else request.query
        shown = await _report(request, tenant_id, vendor_id, test=promotion.test_mode, fields=fields)
    return render(
        request,
        "subscription.html",
        **frame,
        subscription=subscription,
        state=state,
        test_mode=promotion.test_mode and not ended,
        live=not promotion.test_mode and not ended,
        blockers=swedish_blockers(promotion.blockers, promotion),
        history=history[:20],
        **shown,
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
        request, lambda s, p, t, v: s.mark_reviewed(p, t, v), text("subscription_actions.reviewed")
    )


async def back_to_test(request: web.Request) -> web.StreamResponse:
    return await _subscription_action(
        request,
        lambda s, p, t, v: s.back_to_test(p, t, v),
        text("subscription_actions.back_to_test"),
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
    return see_other(request, back, text("subscription_actions.live"))


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
            text("subscription_actions.confirm_end"),
            error=True,
        )
    return await _subscription_action(
        request,
        lambda s, p, t, v: s.end_subscription(p, t, v),
        text("subscription_actions.ended"),
    )


async def delivery_report(request: web.Request) -> web.StreamResponse:
    tenant_id, vendor_id = request.match_info["tenant"], request.match_info["vendor"]
    text = await service_of(request).delivery_report_csv(principal_of(request), tenant_id, vendor_id)
    return download(text, f"leveransrapport-{tenant_id}-{vendor_id}.csv", "text/csv")
