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
from skolsynk_services.admin.ui.page import principal_of, render, see_other, service_of, url
from skolsynk_services.admin.ui.texts import swedish

OUTCOMES = {
    "created": "är tillagd",
    "updated": "är ändrad",
    "unchanged": "var redan sparad så",
    "retired": "är avvecklad",
}


def _yaml(entry: dict[str, Any]) -> str:
    return yaml.safe_dump(entry, allow_unicode=True, sort_keys=False)


async def _page(request: web.Request, *, status: int = 200, text: str = "", error: str | None = None,
                problems: list[str] | None = None, editing: str | None = None) -> web.Response:  # fmt: skip
    service, principal = service_of(request), principal_of(request)
    vendors = await service.catalogue_vendors(principal)
    credentials = await service.vendor_credentials(principal, editing) if editing else []
    tenants = await service.list_tenants(principal) if editing else []
    return render(request, "catalogue.html", status=status, vendors=vendors, text=text, error=error,
                  problems=problems or [], editing=editing, credentials=credentials, tenants=tenants)  # fmt: skip


async def catalogue(request: web.Request) -> web.StreamResponse:
    return await _page(request)


async def catalogue_edit(request: web.Request) -> web.StreamResponse:
    vendor = await service_of(request).catalogue_vendor(principal_of(request), request.match_info["vendor"])
    return await _page(request, text=_yaml(vendor.entry), editing=vendor.vendor_id)


async def catalogue_save(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    text = str(form.get("entry", ""))
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        return await _page(request, status=422, text=text, error="Texten är inte giltig YAML.")
    if not isinstance(data, dict):
        return await _page(request, status=422, text=text, error="Skriv leverantörens post som nycklar och värden.")
    try:
        entry = VendorCatalogueEntry.model_validate(data)
    except ValidationError as invalid:
        problems = [f"{'.'.join(str(p) for p in e['loc']) or '(posten)'}: {e['msg']}" for e in invalid.errors()]
        return await _page(request, status=422, text=text, error="Posten går inte att använda:", problems=problems)
    try:
        saved = await service_of(request).put_vendor(principal_of(request), entry.vendor_id, entry)
    except Problem as problem:
        return await _page(request, status=problem.status, text=text, error=swedish(problem))
    done = OUTCOMES.get(saved.outcome or "", "är sparad")
    return see_other(
        request,
        url(request, "catalogue"),
        f"Leverantören {entry.display_name} {done}. Dispatchern levererar enligt den inom några sekunder.",
    )


async def catalogue_retire(request: web.Request) -> web.StreamResponse:
    vendor = await service_of(request).retire_vendor(principal_of(request), request.match_info["vendor"])
    return see_other(
        request,
        url(request, "catalogue"),
        f"Leverantören {vendor.entry.get('display_name', vendor.vendor_id)} är avvecklad: ingen dispatcher levererar "
        "till den längre. Prenumerationer, leveranslogg och raderingskvitton finns kvar.",
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
    return see_other(
        request, back, f"Uppgifterna för {tenant_id} är sparade. Dispatchern använder dem inom några sekunder."
    )


#: What is wrong with the credential form, by the field pydantic names (the body's rules: models.VendorCredentialIn).
CREDENTIAL_MISSING = (
    "Fyll i en API-nyckel, eller ett klientcertifikat med dess privata nyckel. Värden eller hänvisningar "
    "till hemligheten, inte blandat."
)
REFERENCE_TEXT = "En hänvisning är namnet på en nyckel i hemligheten: bokstäver, siffror, punkt, - och _."
CREDENTIAL_FORM_TEXTS = {
    "api_key": "En API-nyckel har 16 till 512 tecken.",
    "api_key_ref": REFERENCE_TEXT,
    "client_certificate_ref": REFERENCE_TEXT,
    "client_key_ref": REFERENCE_TEXT,
    "client_key_pem": "Den privata nyckeln är för lång.",
    "client_certificate_pem": "Certifikatet är för långt.",
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
        f"{tenant_id} använder nu leverantörens gemensamma nyckel igen.",
    )
