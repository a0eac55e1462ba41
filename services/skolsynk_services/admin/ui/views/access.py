"""Åtkomst: the tenant's API tokens (admins and viewers), and the operators' page of every token; a new
token is shown once, revoking one takes effect at once and ends its signed-in sessions."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import ValidationError

from skolsynk_services.admin import models
from skolsynk_services.admin.problems import Problem
from skolsynk_services.admin.ui.catalogue import text
from skolsynk_services.admin.ui.page import principal_of, refused, render, see_other, service_of, tenant_frame, url
from skolsynk_services.admin.ui.paging import paged_in_store
from skolsynk_services.admin.ui.texts import field_errors, swedish


async def _tokens(request: web.Request, tenant_id: str | None) -> dict[str, Any]:
    """One page of the tokens (paged and searched in the store) as the token table shows them."""
    service, principal = service_of(request), principal_of(request)

    async def fetch(search: str, skip: int, limit: int) -> tuple[list[models.TokenInfo], int]:
        return await service.tokens_page(principal, tenant_id, search=search, skip=skip, limit=limit)

    tokens, paging = await paged_in_store(request, fetch)
    return {"tokens": tokens, "token_paging": paging}


async def access(request: web.Request) -> web.StreamResponse:
    frame = await tenant_frame(request, "access")
    tokens = await _tokens(request, frame["tenant_id"])
    return render(request, "access.html", **frame, **tokens, created=None, form={}, errors={}, error=None)


async def create_token(request: web.Request) -> web.StreamResponse:
    """A new token is shown once, on the page that answers the POST (never in a redirect or cookie)."""
    frame = await tenant_frame(request, "access")
    return await _create(request, "access.html", frame["tenant_id"], _token_form(await request.post()), frame)


async def _create(
    request: web.Request, template: str, tenant_id: str | None, values: dict[str, Any], frame: dict[str, Any]
) -> web.StreamResponse:
    """Create a token from the form (of an organiser, or ``tenant_id`` None: an operator's) and render the
    page with it shown once, or with what was wrong."""
    principal, service = principal_of(request), service_of(request)
    created, errors, error, status = None, {}, None, 200
    try:
        created = await service.create_token(principal, tenant_id, models.TokenIn.model_validate(values))
    except ValidationError as invalid:
        errors, error, status = field_errors(invalid.errors()), text("forms.check_fields"), 422
    except Problem as problem:
        error, status = swedish(problem), problem.status
    return render(
        request,
        template,
        status=status,
        **frame,
        **await _tokens(request, tenant_id),
        created=created,
        form={} if created else values,
        errors=errors,
        error=error,
    )


async def revoke_token(request: web.Request) -> web.StreamResponse:
    tenant_id = request.match_info["tenant"]
    back = url(request, "access", tenant=tenant_id)
    try:
        await service_of(request).revoke_token(principal_of(request), tenant_id, request.match_info["token"])
    except Problem as problem:
        return refused(request, back, problem)
    return see_other(request, back, text("access.revoked"))


def _token_form(form: Any) -> dict[str, Any]:
    days = str(form.get("expires_in_days", "")).strip()
    return {
        "subject": str(form.get("subject", "")).strip(),
        "role": str(form.get("role", "organiser_admin")),
        "expires_in_days": days or None,
    }


async def operators(request: web.Request) -> web.StreamResponse:
    """Every token (operators only): the operators' own first, then each organiser's."""
    principal_of(request).require_operator()
    tokens = await _tokens(request, None)
    return render(request, "operators.html", **tokens, created=None, form={}, errors={}, error=None)


async def create_operator_token(request: web.Request) -> web.StreamResponse:
    principal_of(request).require_operator()
    values = {**_token_form(await request.post()), "role": "operator"}
    return await _create(request, "operators.html", None, values, {})


async def revoke_any_token(request: web.Request) -> web.StreamResponse:
    back = url(request, "operators")
    try:
        await service_of(request).revoke_token(principal_of(request), None, request.match_info["token"])
    except Problem as problem:
        return refused(request, back, problem)
    return see_other(request, back, text("access.revoked"))
