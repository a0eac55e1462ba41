"""GDPR: erasure requests and objections (sent to the GDPR service), and the ledger of deletions at the
vendors with its receipts as evidence (finding the person: ``persons``)."""

from __future__ import annotations

import uuid
from typing import Any

from skolsynk.contracts.gdpr import ErasureRequested, ErasureWithdrawn
from skolsynk.storage import Document
from skolsynk.storage.erasures import receipts_of
from skolsynk_services.admin import models
from skolsynk_services.admin.auth import Principal
from skolsynk_services.admin.problems import NotFound
from skolsynk_services.admin.service.core import AdminCore


class GdprAdmin(AdminCore):
    async def erasure_requests(self, principal: Principal, tenant_id: str) -> list[Document]:
        """The organiser's requests, each with what became of it at every vendor (``receipts``: the deletion
        it caused there with its status and receipt, or status ``none`` while nothing was deleted)."""
        await self._tenant(principal, tenant_id)
        requests = await self.erasures.for_tenant(tenant_id)
        ledger = await self.ledger.for_persons(tenant_id, {str(d["person_id"]) for d in requests})
        by_person: dict[str, list[Document]] = {}
        for entry in ledger:
            by_person.setdefault(str(entry.get("person_id")), []).append(entry)
        subscribed = [s.vendor_id for s, _ in await self.subscriptions.for_tenant(tenant_id) if s.ended_at is None]
        return [
            {
                "request_id": d["_id"],
                **{k: v for k, v in d.items() if k != "_id"},
                "receipts": receipts_of(d, by_person.get(str(d["person_id"]), []), subscribed),
            }
            for d in requests
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
