"""Personer: the organiser's persons a page at a time, a search by name (in any order), login, e-mail
address or id (posted, so names never travel in a URL; paged in the store), and the person page: the
source records, relations, groups and findings, every subscription's verdict with its reasons in
Swedish, the deliveries, deletions with receipts, and erasure requests with what became of them.
Personal data: a viewer gets the 403 page."""

from __future__ import annotations

import uuid
from typing import Any

from aiohttp import web

from skolsynk.explain import PersonExplanation
from skolsynk_services.admin.models import PersonPage
from skolsynk_services.admin.problems import NotFound
from skolsynk_services.admin.ui import verdict_texts
from skolsynk_services.admin.ui.catalogue import section, text
from skolsynk_services.admin.ui.page import principal_of, render, service_of, tenant_frame
from skolsynk_services.admin.ui.paging import PAGE, Paging, page_number

#: Persons per page of the list and of a search.
PAGE_SIZE = 50


async def persons(request: web.Request) -> web.StreamResponse:
    """Every person of the organiser by name, a page at a time (``?sida=``), and the search form."""
    return await _persons_page(request, "", page_number(request))


async def persons_search(request: web.Request) -> web.StreamResponse:
    """A search: the words are posted (a page's buttons post them again with the page's number)."""
    form = await request.post()
    try:
        number = max(1, int(str(form.get(PAGE, "1"))))
    except ValueError:
        number = 1
    return await _persons_page(request, str(form.get("q", "")).strip()[:200], number)


async def _persons_page(request: web.Request, text_: str, number: int) -> web.StreamResponse:
    frame = await tenant_frame(request, "persons")
    service, principal = service_of(request), principal_of(request)
    found: PersonPage = await service.search_persons(principal, frame["tenant_id"], text_, page=number, size=PAGE_SIZE)
    paging = Paging(found.page, found.size, found.total)
    if paging.number != found.page:  # past the last page: show the last one
        found = await service.search_persons(principal, frame["tenant_id"], text_, page=paging.number, size=PAGE_SIZE)
    return render(request, "persons.html", **frame, q=text_, found=found, paging=paging)


async def person(request: web.Request) -> web.StreamResponse:
    frame = await tenant_frame(request, "persons")
    try:
        person_id = uuid.UUID(request.match_info["person_id"])
    except ValueError:
        raise NotFound("no person with that id") from None
    explanation = await service_of(request).explain_person(principal_of(request), frame["tenant_id"], person_id)
    titles = {f.code: _finding_title(f.code) for f in explanation.findings}
    return render(
        request,
        "person.html",
        **frame,
        x=explanation,
        verdicts=_verdicts(explanation),
        name=_name(explanation),
        finding_titles=titles,
        kinds=section("person.kinds"),
        delivery_statuses=section("person.delivery_statuses"),
    )


def _finding_title(code: str) -> str:
    try:
        return text(f"findings.{code}.title")
    except KeyError:
        return code


def _name(explanation: PersonExplanation) -> str:
    person = explanation.person
    if person is None:
        return text("person.unknown_person")
    return " ".join(n for n in (person.given_name, person.middle_name, person.family_name) if n)


def _verdicts(explanation: PersonExplanation) -> list[dict[str, Any]]:
    """Each subscription's verdict as the page shows it: the vendor's name, the verdict, its sentence and
    every reason on its own."""
    rows = []
    for verdict in explanation.verdicts:
        vendor = explanation.vendor_names.get(verdict.vendor_id, verdict.vendor_id)
        rows.append(
            {
                "vendor_id": verdict.vendor_id,
                "vendor": vendor,
                "verdict": verdict.verdict.value,
                "sentence": verdict_texts.sentence(verdict, vendor),
                "reasons": verdict_texts.reasons(verdict),
            }
        )
    return rows
