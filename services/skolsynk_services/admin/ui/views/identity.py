"""Inloggning (operators): the identity providers the sign-in page offers (Microsoft, Google) and the account
rules that give signed-in accounts an organiser and a role; the address to register at the providers."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import ValidationError

from skolsynk_services.admin import models
from skolsynk_services.admin.problems import Forbidden, Problem
from skolsynk_services.admin.ui.catalogue import lookup, text
from skolsynk_services.admin.ui.page import principal_of, refused, render, see_other, service_of, url
from skolsynk_services.admin.ui.paging import paged_in_store
from skolsynk_services.admin.ui.texts import swedish
from skolsynk_services.admin.ui.views.signin import redirect_uri

#: Account rules per page.
RULES_SHOWN = 50
PROVIDER_FIELDS = ("provider_id", "display_name", "issuer", "client_id")
RULE_FIELDS = ("provider_id", "kind", "value", "directory", "tenant_id", "role")


def _field_errors(errors: list[dict[str, Any]]) -> dict[str, str]:
    """Field -> Swedish message: the service's codes (``signin.errors.<code>``), else the field's own text
    (``signin.fields.<field>``)."""
    found: dict[str, str] = {}
    for error in errors:
        location = error.get("loc")
        name = str(location[0]) if location else str(error.get("field", ""))
        code = error.get("code")
        try:
            message = str(lookup(f"signin.errors.{code}")) if code else str(lookup(f"signin.fields.{name}"))
        except KeyError:
            message = text("signin.errors.invalid")
        found.setdefault(name or "_form", message)
    return found


def _problem(problem: Problem) -> tuple[dict[str, str], str, int]:
    """A refused form: its fields' messages, the message above the form and the status."""
    if isinstance(problem, Forbidden):
        raise problem
    errors = problem.extra.get("errors")
    if errors:
        return _field_errors(errors), text("signin.check_fields"), problem.status
    return {}, swedish(problem), problem.status


async def identity(request: web.Request) -> web.StreamResponse:
    return await _page(request)


async def _page(
    request: web.Request, *, status: int = 200, provider_form: dict[str, Any] | None = None,
    provider_errors: dict[str, str] | None = None, provider_error: str | None = None,
    rule_form: dict[str, Any] | None = None, rule_errors: dict[str, str] | None = None, rule_error: str | None = None,
) -> web.Response:  # fmt: skip
    principal, service = principal_of(request), service_of(request)
    principal.require_operator()

    async def fetch(search: str, skip: int, limit: int) -> tuple[list[models.AccountRule], int]:
        return await service.list_account_rules(principal, search=search, skip=skip, limit=limit)

    rules, paging = await paged_in_store(request, fetch, size=RULES_SHOWN)
    providers = await service.list_identity_providers(principal)
    return render(
        request,
        "identity.html",
        status=status,
        redirect_uri=redirect_uri(request),
        providers=providers,
        provider_names={p.provider_id: p.display_name for p in providers},
        tenants=await service.list_tenants(principal),
        rules=rules,
        paging=paging,
        provider_form=provider_form or {},
        provider_errors=provider_errors or {},
        provider_error=provider_error,
        rule_form=rule_form or {},
        rule_errors=rule_errors or {},
        rule_error=rule_error,
    )


async def provider_create(request: web.Request) -> web.StreamResponse:
    principal_of(request).require_operator()
    form = await request.post()
    values: dict[str, Any] = {name: str(form.get(name, "")).strip() for name in PROVIDER_FIELDS}
    secret = str(form.get("client_secret", "")).strip()
    try:
        body = models.IdentityProviderIn.model_validate({**values, "client_secret": secret, "enabled": True})
        created = await service_of(request).create_identity_provider(principal_of(request), body)
    except ValidationError as invalid:
        errors = _field_errors([dict(e) for e in invalid.errors()])
        return await _page(request, status=422, provider_form=values, provider_errors=errors,
                           provider_error=text("signin.check_fields"))  # fmt: skip
    except Problem as problem:
        errors, error, status = _problem(problem)
        return await _page(request, status=status, provider_form=values, provider_errors=errors,
                           provider_error=error)  # fmt: skip
    return see_other(request, url(request, "identity"), text("signin.provider_created", name=created.display_name))


async def provider_edit(request: web.Request) -> web.StreamResponse:
    principal = principal_of(request)
    provider = await service_of(request).get_identity_provider(principal, request.match_info["provider"])
    return render(request, "identity_provider.html", provider=provider, form={}, errors={}, error=None,
                  redirect_uri=redirect_uri(request))  # fmt: skip


async def provider_save(request: web.Request) -> web.StreamResponse:
    principal, service = principal_of(request), service_of(request)
    provider_id = request.match_info["provider"]
    provider = await service.get_identity_provider(principal, provider_id)
    form = await request.post()
    values: dict[str, Any] = {name: str(form.get(name, "")).strip() for name in ("display_name", "client_id")}
    values["enabled"] = form.get("enabled") == "on"
    secret = str(form.get("client_secret", "")).strip()
    try:
        body = models.IdentityProviderUpdate.model_validate({**values, "client_secret": secret or None})
        await service.update_identity_provider(principal, provider_id, body)
    except ValidationError as invalid:
        errors, error, status = _field_errors([dict(e) for e in invalid.errors()]), text("signin.check_fields"), 422
    except Problem as problem:
        errors, error, status = _problem(problem)
    else:
        return see_other(request, url(request, "identity"), text("signin.provider_saved", name=values["display_name"]))
    return render(request, "identity_provider.html", status=status, provider=provider, form=values, errors=errors,
                  error=error, redirect_uri=redirect_uri(request))  # fmt: skip


async def provider_delete(request: web.Request) -> web.StreamResponse:
    back = url(request, "identity")
    try:
        await service_of(request).delete_identity_provider(principal_of(request), request.match_info["provider"])
    except Problem as problem:
        return refused(request, back, problem)
    return see_other(request, back, text("signin.provider_deleted"))


async def rule_create(request: web.Request) -> web.StreamResponse:
    principal_of(request).require_operator()
    form = await request.post()
    values: dict[str, Any] = {name: str(form.get(name, "")).strip() for name in RULE_FIELDS}
    body_values = {**values, "directory": values["directory"] or None, "tenant_id": values["tenant_id"] or None}
    try:
        body = models.AccountRuleIn.model_validate(body_values)
        await service_of(request).create_account_rule(principal_of(request), body)
    except ValidationError as invalid:
        errors = _field_errors([dict(e) for e in invalid.errors()])
        return await _page(request, status=422, rule_form=values, rule_errors=errors,
                           rule_error=text("signin.check_fields"))  # fmt: skip
    except Problem as problem:
        errors, error, status = _problem(problem)
        return await _page(request, status=status, rule_form=values, rule_errors=errors, rule_error=error)
    return see_other(request, url(request, "identity"), text("signin.rule_created"))


async def rule_delete(request: web.Request) -> web.StreamResponse:
    back = url(request, "identity")
    try:
        await service_of(request).delete_account_rule(principal_of(request), request.match_info["rule"])
    except Problem as problem:
        return refused(request, back, problem)
    return see_other(request, back, text("signin.rule_deleted"))
