"""The vendor catalogue, as operators keep it: list every vendor (retired ones too), add or edit one
(validated as a catalogue entry), retire one. The catalogue lives in the store (``vendors``); dispatchers
and every admin replica follow it within their poll interval, this replica at once."""

from __future__ import annotations

from skolsynk.catalogue import VendorCatalogueEntry
from skolsynk.storage.sources import SecretsUnavailable
from skolsynk.storage.vendors import StoredVendor
from skolsynk.tls import client_identity
from skolsynk_services.admin import models
from skolsynk_services.admin.auth import Principal
from skolsynk_services.admin.problems import Invalid, NotFound, Unavailable
from skolsynk_services.admin.service.core import AdminCore


def vendor_view(stored: StoredVendor, outcome: str | None = None) -> models.CatalogueVendor:
    return models.CatalogueVendor(
        vendor_id=stored.entry.vendor_id,
        entry=stored.entry.model_dump(mode="json"),
        version=stored.version,
        retired_at=stored.retired_at,
        updated_at=stored.updated_at,
        updated_by=stored.updated_by,
        outcome=outcome,
    )


class VendorAdmin(AdminCore):
    async def catalogue_vendors(self, principal: Principal) -> list[models.CatalogueVendor]:
        principal.require_operator()
        return [vendor_view(v) for v in await self.vendor_store.all()]

    async def catalogue_vendor(self, principal: Principal, vendor_id: str) -> models.CatalogueVendor:
        principal.require_operator()
        stored = await self.vendor_store.get(vendor_id)
        if stored is None:
            raise NotFound("no vendor with that id in the catalogue")
        return vendor_view(stored)

    async def put_vendor(
        self, principal: Principal, vendor_id: str, entry: VendorCatalogueEntry
    ) -> models.CatalogueVendor:
        """Add or replace a vendor (a retired one is revived). Dispatchers serve the new settings within
        their poll interval, without a restart."""
        principal.require_operator()
        if entry.vendor_id != vendor_id:
            raise Invalid("vendor_id in the body must be the one in the path")
        before = await self.vendor_store.get(vendor_id)
        outcome = await self.vendor_store.put(entry, by=principal.subject)
        stored = await self.vendor_store.get(vendor_id)
        assert stored is not None
        if outcome != "unchanged":
            await self._audit(
                principal,
                None,
                "vendor.put",
                vendor_id,
                before=before.entry.model_dump(mode="json") if before else None,
                after=stored.entry.model_dump(mode="json"),
            )
        await self.catalogue.refresh()
        return vendor_view(stored, outcome)

    async def retire_vendor(self, principal: Principal, vendor_id: str) -> models.CatalogueVendor:
        """Retire a vendor: no dispatcher serves it any more; its subscriptions, ledger and receipts stay."""
        principal.require_operator()
        if not await self.vendor_store.retire(vendor_id, by=principal.subject):
            stored = await self.vendor_store.get(vendor_id)
            if stored is None:
                raise NotFound("no vendor with that id in the catalogue")
            return vendor_view(stored, "unchanged")
        await self._audit(principal, None, "vendor.retire", vendor_id)
        await self.catalogue.refresh()
        stored = await self.vendor_store.get(vendor_id)
        assert stored is not None
        return vendor_view(stored, "retired")

    # --- one tenant per organiser at each vendor ---------------------------------------------------------

    async def vendor_credentials(self, principal: Principal, vendor_id: str) -> list[models.VendorCredential]:
        principal.require_operator()
        return [
            models.VendorCredential(
                vendor_id=vendor_id,
                tenant_id=d["tenant_id"],
                version=int(d.get("version") or 1),
                kinds=d.get("kinds") or ["api_key"],
                certificate_pin=d.get("certificate_pin"),
                certificate_not_after=d.get("certificate_not_after"),
                secret_refs={str(k): str(v) for k, v in (d.get("secret_refs") or {}).items()},
                updated_at=d["updated_at"],
                updated_by=str(d.get("updated_by") or ""),
                readable=bool(d.get("readable", True)),
            )
            for d in await self.credentials.listed(vendor_id)
        ]

    async def put_vendor_credential(
        self, principal: Principal, vendor_id: str, tenant_id: str, body: models.VendorCredentialIn
    ) -> list[models.VendorCredential]:
        """Set or rotate an organiser's own API key or client certificate at a vendor: its data goes to its
        own tenant there. The dispatchers use it from their next poll on."""
        principal.require_operator()
        stored = await self.vendor_store.get(vendor_id)
        if stored is None:
            raise NotFound("no vendor with that id in the catalogue")
        await self._tenant(principal, tenant_id)
        identity = None
        key_pem = body.client_key_pem.get_secret_value() if body.client_key_pem is not None else None
        refs = body.secret_refs()
        if body.client_certificate_pem is not None or "certificate_pem" in refs:
            scim = stored.entry.scim
            if scim is None or not scim.base_url.startswith("https://"):
                field = "client_certificate_ref" if body.client_certificate_pem is None else "client_certificate_pem"
                message = "a client certificate needs an EGIL SCIM vendor reached over https"
                raise Invalid(message, errors=[{"field": field, "message": message}])
        if body.client_certificate_pem is not None and key_pem is not None:
            try:
                identity = client_identity(body.client_certificate_pem, key_pem)
            except ValueError as error:
                field = "client_certificate_pem" if "certificate is not" in str(error) else "client_key_pem"
                raise Invalid(str(error), errors=[{"field": field, "message": str(error)}]) from None
        try:
            await self.credentials.put(
                vendor_id,
                tenant_id,
                api_key=body.api_key.get_secret_value() if body.api_key is not None else None,
                certificate_pem=body.client_certificate_pem if identity is not None else None,
                key_pem=key_pem if identity is not None else None,
                identity=identity,
                refs=refs,
                by=principal.subject,
            )
        except SecretsUnavailable as error:
            raise Unavailable(str(error)) from None
        await self._audit(principal, tenant_id, "vendor.credential.set", f"{vendor_id}:{tenant_id}")
        return await self.vendor_credentials(principal, vendor_id)

    async def delete_vendor_credential(self, principal: Principal, vendor_id: str, tenant_id: str) -> None:
        principal.require_operator()
        if not await self.credentials.delete(vendor_id, tenant_id):
            raise NotFound("the organiser has no credentials of its own at that vendor")
        await self._audit(principal, tenant_id, "vendor.credential.delete", f"{vendor_id}:{tenant_id}")
