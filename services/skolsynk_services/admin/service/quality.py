"""Data quality: the findings of the latest runs per school unit (the report a page at a time, with the
names of whom they are about joined when it is read) and the school units the sources have (the deletions
held back because a school unit would suddenly lose too many are in ``holds``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from skolsynk.domain.quality import Finding, FindingCode, Severity
from skolsynk.domain.ss12000 import EntityKind, SchoolUnit
from skolsynk.storage.findings import SEARCH_MIN_LENGTH, FindingFilter
from skolsynk_services.admin import models
from skolsynk_services.admin.auth import Principal
from skolsynk_services.admin.service.core import AdminCore

#: The most findings one request of the report returns (more: page with ``skip``).
FINDINGS_LIMIT = 1000
#: The most entities a search by name looks for findings of.
NAMED_LIMIT = 5000


@dataclass(frozen=True)
class FindingsPage:
    """One page of the report (``findings``) and how many findings the filter has in all (``total``)."""

    findings: list[models.ReportedFinding]
    total: int


class QualityAdmin(AdminCore):
    # --- findings and school units -----------------------------------------------------------------

    async def findings(
        self,
        principal: Principal,
        tenant_id: str,
        *,
        severity: Severity | None = None,
        code: FindingCode | None = None,
        school_unit_code: str | None = None,
        text: str | None = None,
        skip: int = 0,
        limit: int = FINDINGS_LIMIT,
    ) -> FindingsPage:
        """A page of the report: the findings of a filter (``school_unit_code`` "-": those without one;
        ``text``: contained in the source's key, or for those who may see personal data in the value or
        the name of whom the finding is about or of a duplicate's other party), in the report's order,
        with names (one read per page) and the total. ``limit`` 0: every finding (the CSV)."""
        await self._tenant(principal, tenant_id)
        matching = await self._finding_filter(principal, tenant_id, severity, code, school_unit_code, text)
        found = await self.findings_store.query(tenant_id, matching=matching, skip=skip, limit=limit)
        if limit and (skip or len(found) == limit):
            total = await self.findings_store.count(tenant_id, matching)
        else:  # the whole rest of the list is here: no count needed
            total = skip + len(found)
        return FindingsPage(await self._reported(principal, tenant_id, found), total)

    async def _finding_filter(
        self,
        principal: Principal,
        tenant_id: str,
        severity: Severity | None,
        code: FindingCode | None,
        school_unit_code: str | None,
        text: str | None,
    ) -> FindingFilter:
        text = (text or "").strip() or None
        personal = principal.may_see_personal_data
        named: frozenset[str] = frozenset()
        if personal and text and len(text) >= SEARCH_MIN_LENGTH:
            named = frozenset(await self.entities.named(tenant_id, text, limit=NAMED_LIMIT))
        return FindingFilter(severity, code, school_unit_code, text, named, personal)

    async def _reported(
        self, principal: Principal, tenant_id: str, found: list[Finding]
    ) -> list[models.ReportedFinding]:
        """The findings with their source's kind and, for those who may see personal data, the names of
        whom they are about and of a duplicate's other party (a duty's or placement's: its person's)."""
        kinds = {doc["source_id"]: doc.get("kind") for doc in await self.sources.list(tenant_id)}
        names: dict[str, str] = {}
        persons: dict[str, str] = {}
        if principal.may_see_personal_data and found:
            ids = {str(i) for f in found for i in (f.entity_id, f.other_entity_id) if i is not None}
            related = [str(f.entity_id) for f in found if f.entity_kind in (EntityKind.DUTY, EntityKind.PLACEMENT)]
            persons = await self.entities.persons_of(related) if related else {}
            names = await self.entities.names(ids | set(persons.values()))
        reported = []
        for finding in found:
            values = finding.model_dump()
            values["source_kind"] = kinds.get(finding.source_id or "")
            if principal.may_see_personal_data:
                own = str(finding.entity_id) if finding.entity_id else ""
                values["entity_name"] = names.get(persons.get(own, own))
                values["other_name"] = names.get(str(finding.other_entity_id)) if finding.other_entity_id else None
            else:
                values["value"] = None
            reported.append(models.ReportedFinding.model_validate(values))
        return reported

    async def findings_csv(
        self,
        principal: Principal,
        tenant_id: str,
        *,
        severity: Severity | None = None,
        code: FindingCode | None = None,
        school_unit_code: str | None = None,
        text: str | None = None,
    ) -> str:
        """The findings of a filter as CSV for programs (English column names; the values only for
        those who may see personal data)."""
        await self._tenant(principal, tenant_id)
        matching = await self._finding_filter(principal, tenant_id, severity, code, school_unit_code, text)
        return await self.findings_store.csv(tenant_id, matching)

    async def findings_summary(self, principal: Principal, tenant_id: str) -> dict[str, dict[str, int]]:
        """Per school-unit code ("-": none), the findings per severity and per code (counted in the store)."""
        await self._tenant(principal, tenant_id)
        return await self.findings_store.summary(tenant_id)

    async def school_units(self, principal: Principal, tenant_id: str) -> list[dict[str, Any]]:
        """The organiser's school units as the sources have them (for choosing what a vendor gets)."""
        await self._tenant(principal, tenant_id)
        units = []
        for stored in await self.entities.load_kind(tenant_id, EntityKind.SCHOOL_UNIT):
            if isinstance(stored.entity, SchoolUnit):
                unit = stored.entity
                units.append(
                    {
                        "entity_id": str(stored.id),
                        "school_unit_code": unit.school_unit_code,
                        "display_name": unit.display_name,
                        "school_types": [str(t) for t in unit.school_types],
                        "source_id": stored.source_id,
                    }
                )
        return sorted(units, key=lambda u: (u["display_name"], u["school_unit_code"]))
