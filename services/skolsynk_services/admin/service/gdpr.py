"""GDPR: finding a person, erasure requests and objections (sent to the GDPR service), and the ledger of
deletions at the vendors with its receipts as evidence."""

from __future__ import annotations

import uuid
from typing import Any

from skolsynk.contracts.gdpr import ErasureRequested, ErasureWithdrawn
from skolsynk.domain.ss12000 import Person
from skolsynk.storage import Document
from skolsynk_services.admin import models
from skolsynk_services.admin.auth import Principal
from skolsynk_services.admin.problems import NotFound
from skolsynk_services.admin.service.core import AdminCore


class GdprAdmin(AdminCore):
    async def persons(self, principal: Principal, tenant_id: str, text: str) -> list[dict[str, Any]]:
        """Find a person by name, login or e-mail (for an erasure request). Organiser-only data."""
        await self._tenant(principal, tenant_id)
        found: list[tuple[uuid.UUID, Person]] = await self.entities.find_persons(tenant_id, text)
        return [
            {"person_id": str(pid), "name": f"{p.given_name} {p.family_name}", "login": p.eppn[0] if p.eppn else None}
            for pid, p in found
        ]

    async def erasure_requests(self, principal: Principal, tenant_id: str) -> list[Document]:
        await self._tenant(principal, tenant_id)
        return [
            {"request_id": d["_id"], **{k: v for k, v in d.items() if k != "_id"}}
            for d in await self.erasures.for_tenant(tenant_id)
        ]

    async def request_erasure(self, principal: Principal, tenant_id: str, body: models.ErasureIn) -> uuid.UUID:
        await self._tenant(principal, tenant_id)
        for vendor_id in body.vendor_ids or []:
            self._vendor(vendor_id)
        request = ErasureRequested(
            request_id=uuid.uuid4(),
            person_id=body.person_id,
            vendor_ids=body.vendor_ids,
            kind=body.kind,
            requested_by=principal.subject[:64],
            reference=body.reference,
        )
        await self._send(tenant_id, request, self.exchanges.gdpr, ErasureRequested.message_type)
        await self._audit(
            principal, tenant_id, f"gdpr.{body.kind}", str(body.person_id), after=body.model_dump(mode="json")
        )
        return request.request_id

    async def withdraw_erasure(self, principal: Principal, tenant_id: str, request_id: uuid.UUID) -> None:
        await self._tenant(principal, tenant_id)
        found = [d for d in await self.erasures.for_tenant(tenant_id, status="active") if d["_id"] == str(request_id)]
        if not found:
            raise NotFound("no active erasure request with that id")
        message = ErasureWithdrawn(request_id=request_id, withdrawn_by=principal.subject[:64])
        await self._send(tenant_id, message, self.exchanges.gdpr, ErasureWithdrawn.message_type)
        await self._audit(principal, tenant_id, "gdpr.withdraw", str(request_id))

    async def erasure_ledger(
        self, principal: Principal, tenant_id: str, *, vendor_id: str | None = None, status: str | None = None
    ) -> list[dict[str, Any]]:
        await self._tenant(principal, tenant_id)
        rows = await self.ledger.evidence(tenant_id, vendor_id=vendor_id)
        return [r for r in rows if status is None or r["status"] == status]

    async def evidence(self, principal: Principal, tenant_id: str, *, vendor_id: str | None, fmt: str) -> str:
        await self._tenant(principal, tenant_id)
        if fmt == "json":
            return await self.ledger.evidence_json(tenant_id, vendor_id=vendor_id)
        return await self.ledger.evidence_csv(tenant_id, vendor_id=vendor_id)
