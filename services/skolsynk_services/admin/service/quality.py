"""Data quality: the findings of the latest runs per school unit and the school units the sources have (the
deletions held back because a school unit would suddenly lose too many are in ``holds``)."""

from __future__ import annotations

from typing import Any

from skolsynk.domain.quality import FindingCode, Severity
from skolsynk.domain.ss12000 import SchoolUnit
from skolsynk_services.admin.auth import Principal
from skolsynk_services.admin.service.core import AdminCore


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
        limit: int = 1000,
    ) -> list[dict[str, Any]]:
        await self._tenant(principal, tenant_id)
        found = await self.findings_store.query(
            tenant_id, severity=severity, code=code, school_unit_code=school_unit_code, limit=limit
        )
        return [f.model_dump(mode="json") for f in found]

    async def findings_csv(self, principal: Principal, tenant_id: str) -> str:
        await self._tenant(principal, tenant_id)
        return await self.findings_store.csv(tenant_id)

    async def findings_summary(self, principal: Principal, tenant_id: str) -> dict[str, dict[str, int]]:
        await self._tenant(principal, tenant_id)
        return await self.findings_store.summary(tenant_id)

    async def school_units(self, principal: Principal, tenant_id: str) -> list[dict[str, Any]]:
        """The organiser's school units as the sources have them (for choosing what a vendor gets)."""
        await self._tenant(principal, tenant_id)
        units = []
        for stored in await self.entities.load_tenant(tenant_id):
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
