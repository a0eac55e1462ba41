"""Holds: the removals the mass-deletion guard keeps back because a school unit would suddenly lose too
many at one vendor. Who each hold affects (a page at a time, names joined when it is read, for roles that
may see personal data), why its removals came (the source's data, or which admin's change), approve or
discard, and the history of decisions."""

from __future__ import annotations

from skolsynk.storage import Document
from skolsynk_services.admin import models
from skolsynk_services.admin.auth import Principal
from skolsynk_services.admin.problems import NotFound
from skolsynk_services.admin.service.core import AdminCore

#: The most entities of a hold, or entries of the history, one request returns.
HOLDS_PAGE = 200
#: The most entities of the source a search by name looks for among a hold's.
NAMED_LIMIT = 5000
#: A search longer than this is cut.
SEARCH_LIMIT = 200


def hold_view(doc: Document) -> models.Hold:
    return models.Hold.model_validate({**doc, "causes": doc.get("causes") or []})


class HoldsAdmin(AdminCore):
    async def holds(self, principal: Principal, tenant_id: str) -> list[models.Hold]:
        """The tenant's open holds (pending, or discarded while the same removals are still wanted)."""
        await self._tenant(principal, tenant_id)
        return [hold_view(d) for d in await self.holds_store.for_tenant(tenant_id)]

    async def hold(self, principal: Principal, tenant_id: str, vendor_id: str, school_unit_id: str) -> models.Hold:
        await self._tenant(principal, tenant_id)
        doc = await self.holds_store.get(tenant_id, vendor_id, school_unit_id)
        if doc is None:
            raise NotFound("no hold for that vendor and school unit")
        return hold_view(doc)

    async def held_entities(
        self,
        principal: Principal,
        tenant_id: str,
        vendor_id: str,
        school_unit_id: str,
        *,
        search: str = "",
        skip: int = 0,
        limit: int = HOLDS_PAGE,
    ) -> tuple[list[models.HeldEntity], int]:
        """A page of whom a hold affects (persons first) and how many match. ``search`` finds them by id;
        for roles that may see personal data also by name, login or e-mail address, and the page carries
        their names (one read of the source's entities per page; for those no longer in the source, the
        name the hold kept)."""
        await self.hold(principal, tenant_id, vendor_id, school_unit_id)
        personal = principal.may_see_personal_data
        search = search.strip()[:SEARCH_LIMIT]
        named = await self.entities.named(tenant_id, search, limit=NAMED_LIMIT) if personal and search else None
        docs, total = await self.holds_store.affected(
            tenant_id,
            vendor_id,
            school_unit_id,
            skip=skip,
            limit=limit,
            text=search,
            by_name=personal,
            source_ids=named,
        )
        names = await self.entities.names(d["source_entity_id"] for d in docs) if personal and docs else {}
        page = []
        for doc in docs:
            name = (names.get(doc["source_entity_id"]) or doc.get("name")) if personal else None
            page.append(
                models.HeldEntity(
                    entity_id=doc["entity_id"],
                    source_entity_id=doc["source_entity_id"],
                    kind=doc["kind"],
                    reason=doc.get("reason"),
                    name=name,
                )
            )
        return page, total

    async def hold_history(
        self, principal: Principal, tenant_id: str, *, skip: int = 0, limit: int = HOLDS_PAGE
    ) -> tuple[list[models.HoldHistoryEntry], int]:
        """A page of what became of the tenant's holds, newest first: decisions (who, when, what) and holds
        that closed undecided because their removals no longer applied."""
        await self._tenant(principal, tenant_id)
        docs, total = await self.holds_store.history(tenant_id, skip=skip, limit=limit)
        return [models.HoldHistoryEntry.model_validate({**d, "causes": d.get("causes") or []}) for d in docs], total

    async def decide_hold(
        self, principal: Principal, tenant_id: str, vendor_id: str, school_unit_id: str, decision: str
    ) -> None:
        await self._tenant(principal, tenant_id)
        principal.require_change()
        status = "approved" if decision == "approve" else "discarded"
        if not await self.holds_store.decide(tenant_id, vendor_id, school_unit_id, status, by=principal.subject):  # type: ignore[arg-type]
            raise NotFound("no pending hold for that vendor and school unit")
        action = f"hold.{decision}"
        target = f"{vendor_id}:{school_unit_id}"
        await self._audit(principal, tenant_id, action, target)
        await self._project(tenant_id, "hold-decided", by=principal, action=action, target=target)
