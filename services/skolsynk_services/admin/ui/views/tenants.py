"""The operators' start page: every organiser, and creating one (an organiser admin goes straight to
their own overview)."""

from __future__ import annotations

from aiohttp import web
from pydantic import ValidationError

from skolsynk_services.admin import models
from skolsynk_services.admin.problems import Conflict, Problem
from skolsynk_services.admin.ui.catalogue import text
from skolsynk_services.admin.ui.page import principal_of, render, see_other, service_of, url
from skolsynk_services.admin.ui.paging import Paging, paged_in_store
from skolsynk_services.admin.ui.texts import field_errors, swedish


async def home(request: web.Request) -> web.StreamResponse:
    principal = principal_of(request)
    if not principal.is_operator and principal.tenant_id:
        return see_other(request, url(request, "overview", tenant=principal.tenant_id))
    tenants, paging = await _tenants(request)
    return render(request, "tenants.html", tenants=tenants, paging=paging, form={}, errors={}, error=None)


async def _tenants(request: web.Request) -> tuple[list[models.Tenant], Paging]:
    """One page of the organisers (paged and searched in the store)."""
    service, principal = service_of(request), principal_of(request)

    async def fetch(search: str, skip: int, limit: int) -> tuple[list[models.Tenant], int]:
        return await service.tenants_page(principal, search=search, skip=skip, limit=limit)

    return await paged_in_store(request, fetch)


async def create_tenant(request: web.Request) -> web.StreamResponse:
    principal = principal_of(request)
    service = service_of(request)
    form = await request.post()
    values = {k: str(form.get(k, "")).strip() for k in ("tenant_id", "display_name", "organisation_number")}
    errors: dict[str, str] = {}
    error = None
    status = 422
    try:
        body = models.TenantIn.model_validate({**values, "organisation_number": values["organisation_number"] or None})
        tenant = await service.create_tenant(principal, body)
    except ValidationError as invalid:
        errors = field_errors(invalid.errors())
        error = text("forms.check_fields")
    except Problem as problem:
        error, status = swedish(problem), problem.status
        if isinstance(problem, Conflict):
            errors = {"tenant_id": error}
    else:
        return see_other(
            request,
            url(request, "overview", tenant=tenant.tenant_id),
            text("tenants.created", name=tenant.display_name),
        )
    tenants, paging = await _tenants(request)
    return render(request, "tenants.html", status=status, tenants=tenants, paging=paging, form=values, errors=errors,
                  error=error)  # fmt: skip
