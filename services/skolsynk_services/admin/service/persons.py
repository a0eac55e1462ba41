"""Persons: finding one by name, login, e-mail address or id (paged in the store), and following one from
the source to every vendor (:class:`skolsynk.explain.PersonExplainer`, which ``skolsynk explain`` shares).
Personal data: only for roles that may see it (a viewer is refused)."""

from __future__ import annotations

from uuid import UUID

from skolsynk.explain import PersonExplainer, PersonExplanation
from skolsynk_services.admin import models
from skolsynk_services.admin.auth import Principal
from skolsynk_services.admin.problems import NotFound
from skolsynk_services.admin.service.core import AdminCore

#: Persons per page of a search unless the caller says otherwise, and the most it may ask for.
PAGE_SIZE = 20
MAX_PAGE_SIZE = 100


class PersonAdmin(AdminCore):
    async def search_persons(
        self, principal: Principal, tenant_id: str, text: str, *, page: int = 1, size: int = PAGE_SIZE
    ) -> models.PersonPage:
        """The page ``page`` of the persons every word of ``text`` finds (every person of the organiser when
        ``text`` is empty), by family and given name, and how many there are in all."""
        await self._tenant(principal, tenant_id)
        principal.require_personal_data()
        size = max(1, min(size, MAX_PAGE_SIZE))
        page = max(1, page)
        found = await self.entities.find_persons(tenant_id, text, skip=(page - 1) * size, limit=size)
        return models.PersonPage(
            persons=[
                models.PersonSummary(
                    person_id=p.person_id,
                    source_id=p.source_id,
                    name=" ".join(n for n in (p.person.given_name, p.person.middle_name, p.person.family_name) if n),
                    login=p.person.eppn[0] if p.person.eppn else None,
                    email=p.person.emails[0].value if p.person.emails else None,
                    person_status=None if p.person.person_status is None else p.person.person_status.value,
                )
                for p in found.persons
            ],
            total=found.total,
            page=page,
            size=size,
        )

    async def explain_person(self, principal: Principal, tenant_id: str, person_id: UUID) -> PersonExplanation:
        """One person from the source to every vendor: records, findings, verdicts, deliveries, deletions."""
        await self._tenant(principal, tenant_id)
        principal.require_personal_data()
        explanation = await PersonExplainer(self.db, clock=self.clock).explain(tenant_id, person_id)
        if explanation is None:
            raise NotFound("no person with that id")
        return explanation
