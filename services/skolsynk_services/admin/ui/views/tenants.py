"""The operators' start page: every organiser, and creating one (an organiser admin goes straight to
their own overview)."""

from __future__ import annotations

from aiohttp import web
from pydantic import ValidationError

from skolsynk_services.admin import models
from skolsynk_services.admin.problems import Conflict, Problem
from skolsynk_services.admin.ui.page import principal_of, render, see_other, service_of, url
from skolsynk_services.admin.ui.texts import field_errors, swedish


async def home(request: web.Request) -> web.StreamResponse:
    principal = principal_of(request)
    if not principal.is_operator and principal.tenant_id:
        return see_other(request, url(request, "overview", tenant=principal.tenant_id))
    tenants = await service_of(request).list_tenants(principal)
    return render(request, "tenants.html", tenants=tenants, form={}, errors={}, error=None)


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
        error = "Kontrollera de markerade fälten."
    except Problem as problem:
        error, status = swedish(problem), problem.status
        if isinstance(problem, Conflict):
            errors = {"tenant_id": error}
    else:
        return see_other(
            request,
            url(request, "overview", tenant=tenant.tenant_id),
            f"Huvudmannen {tenant.display_name} är skapad. Börja med att koppla en källa.",
        )
    tenants = await service.list_tenants(principal)
    return render(request, "tenants.html", status=status, tenants=tenants, form=values, errors=errors, error=error)
