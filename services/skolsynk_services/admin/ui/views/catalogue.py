"""The vendor catalogue, for operators: every vendor (retired ones too), adding or editing one as its
catalogue entry (the YAML of ``deploy/vendors/<vendor_id>.yaml``), retiring one. What is saved here is
what the dispatchers serve, within their poll interval, without a restart."""

from __future__ import annotations

from typing import Any

import yaml
from aiohttp import web
from pydantic import ValidationError

from skolsynk.catalogue import VendorCatalogueEntry
from skolsynk_services.admin import models
from skolsynk_services.admin.problems import Problem
from skolsynk_services.admin.ui.catalogue import section, text
from skolsynk_services.admin.ui.page import principal_of, render, see_other, service_of, url
from skolsynk_services.admin.ui.paging import paged
from skolsynk_services.admin.ui.texts import swedish

#: What saving an entry did (the service's outcome), as the end of "Leverantören X ...".
OUTCOMES: dict[str, str] = section("vendor_catalogue.outcomes")


def _yaml(entry: dict[str, Any]) -> str:
    return yaml.safe_dump(entry, allow_unicode=True, sort_keys=False)


async def _page(request: web.Request, *, status: int = 200, text: str = "", error: str | None = None,
                problems: list[str] | None = None, editing: str | None = None) -> web.Response:  # fmt: skip
    service, principal = service_of(request), principal_of(request)
    vendors, paging = paged(
        request,
        await service.catalogue_vendors(principal),
        matches=lambda v, q: q in v.vendor_id.lower() or q in str(v.entry.get("display_name", "")).lower(),
    )
    credentials = await service.vendor_credentials(principal, editing) if editing else []
    tenants = await service.list_tenants(principal) if editing else []
    return render(request, "catalogue.html", status=status, vendors=vendors, paging=paging, text=text, error=error,
                  problems=problems or [], editing=editing, credentials=credentials, tenants=tenants)  # fmt: skip


async def catalogue(request: web.Request) -> web.StreamResponse:
    return await _page(request)


async def catalogue_edit(request: web.Request) -> web.StreamResponse:
    vendor = await service_of(request).catalogue_vendor(principal_of(request), request.match_info["vendor"])
    return await _page(request, text=_yaml(vendor.entry), editing=vendor.vendor_id)


async def catalogue_save(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    entry_text = str(form.get("entry", ""))
    try:
        data = yaml.safe_load(entry_text)
    except yaml.YAMLError:
        return await _page(request, status=422, text=entry_text, error=text("vendor_catalogue.not_yaml"))
    if not isinstance(data, dict):
        return await _page(request, status=422, text=entry_text, error=text("vendor_catalogue.not_a_mapping"))
    try:
        entry = VendorCatalogueEntry.model_validate(data)
    except ValidationError as invalid:
        whole = text("vendor_catalogue.whole_entry")
        problems = [f"{'.'.join(str(p) for p in e['loc']) or whole}: {e['msg']}" for e in invalid.errors()]
        return await _page(
            request, status=422, text=entry_text, error=text("vendor_catalogue.unusable"), problems=problems
        )
    try:
        saved = await service_of(request).put_vendor(principal_of(request), entry.vendor_id, entry)
    except Problem as problem:
        return await _page(request, status=problem.status, text=entry_text, error=swedish(problem))
    done = OUTCOMES.get(saved.outcome or "", OUTCOMES["saved"])
    return see_other(
        request, url(request, "catalogue"), text("vendor_catalogue.saved", name=entry.display_name, outcome=done)
    )


async def catalogue_retire(request: web.Request) -> web.StreamResponse:
    vendor = await service_of(request).retire_vendor(principal_of(request), request.match_info["vendor"])
    return see_other(
        request,
        url(request, "catalogue"),
        text("vendor_catalogue.retired", name=vendor.entry.get("display_name", vendor.vendor_id)),
    )


async def credential_save(request: web.Request) -> web.StreamResponse:
    """An organiser's own API key and/or client certificate at the vendor (write-only): set or rotated."""
    vendor_id = request.match_info["vendor"]
    form = await request.post()
    tenant_id = str(form.get("tenant_id", "")).strip()
    given = {
        name: str(form.get(name, "")).strip() or None
        for name in (
            "api_key",
            "client_certificate_pem",
            "client_key_pem",
            "api_key_ref",
            "client_certificate_ref",
            "client_key_ref",
        )
    }
    back = url(request, "catalogue_edit", vendor=vendor_id) + "#nycklar"
    try:
        body = models.VendorCredentialIn.model_validate(given)
    except ValidationError as error:
        return see_other(request, back, CREDENTIAL_FORM_TEXTS.get(_first_field(error), CREDENTIAL_MISSING), error=True)
    try:
        await service_of(request).put_vendor_credential(principal_of(request), vendor_id, tenant_id, body)
    except Problem as problem:
        return see_other(request, back, swedish(problem), error=True)
    return see_other(request, back, text("vendor_catalogue.credentials_saved", tenant=tenant_id))


#: What is wrong with the credential form, by the field pydantic names (the body's rules: models.VendorCredentialIn).
CREDENTIAL_MISSING = text("vendor_catalogue.credential_missing")
CREDENTIAL_FORM_TEXTS = {
    field: text(f"vendor_catalogue.credential_fields.{'reference' if field.endswith('_ref') else field}")
    for field in (
        "api_key",
        "api_key_ref",
        "client_certificate_ref",
        "client_key_ref",
        "client_key_pem",
        "client_certificate_pem",
    )
}


def _first_field(error: ValidationError) -> str:
    locations = [e["loc"] for e in error.errors(include_url=False, include_input=False)]
    return str(locations[0][0]) if locations and locations[0] else ""


async def credential_delete(request: web.Request) -> web.StreamResponse:
    vendor_id, tenant_id = request.match_info["vendor"], request.match_info["tenant"]
    await service_of(request).delete_vendor_credential(principal_of(request), vendor_id, tenant_id)
    return see_other(
        request,
        url(request, "catalogue_edit", vendor=vendor_id) + "#nycklar",
        text("vendor_catalogue.credentials_deleted", tenant=tenant_id),
    )
