"""What the connector remembers per tenant and source (MongoDB):

* ``graph_delta_links``: one document per tenant, source and resource (``schools``, ``users``,
  ``classes``) with the ``@odata.deltaLink`` of the last healthy run. Written only after that run's
  messages were all confirmed by the broker, so a failed run is read again from the same links.
* ``graph_sync_state``: one document per tenant and source: the last full and incremental run (ids,
  times, health, error codes), ``last_full_success_at`` (the reconciliation schedule), and
  ``teacher_schools`` (teacher id -> the schools skolsynk published a Duty at), so a removed or moved
  teacher's duties can be deleted exactly.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime

from skolsynk.connectors.runs import Mode as Mode
from skolsynk.connectors.runs import RunReport as BaseRunReport
from skolsynk.connectors.runs import RunStateStore
from skolsynk.connectors.runs import utcnow as utcnow
from skolsynk.storage import Database, IndexSpec
from skolsynk_services.graph_connector.tenants import TenantConfig

DELTA_COLLECTION = "graph_delta_links"
STATE_COLLECTION = "graph_sync_state"
RESOURCES: tuple[str, ...] = ("schools", "users", "classes")

INDEXES = [
    IndexSpec(
        DELTA_COLLECTION, (("tenant_id", 1), ("source_id", 1), ("resource", 1)), "tenant_source_resource", unique=True
    ),
    IndexSpec(STATE_COLLECTION, (("tenant_id", 1), ("source_id", 1)), "tenant_source", unique=True),
]


@dataclass(kw_only=True)
class RunReport(BaseRunReport):
    """What one run did (ids, counts and codes only)."""

    mode: Mode
    requested_mode: Mode
    deletions: int = 0
    #: Why an incremental run became a full one (``no_delta_links``, ``syncStateNotFound``, ``gone`` ...).
    resync: str | None = None
    #: ``@removed`` entries by resource and reason (``users:deleted`` -> 3).
    removed: dict[str, int] = field(default_factory=dict)
    delta_links_stored: bool = False


class GraphStateStore(RunStateStore):
    def __init__(self, db: Database) -> None:
        super().__init__(db, STATE_COLLECTION)
        self.links = db[DELTA_COLLECTION]

    @staticmethod
    def _link_id(tenant: TenantConfig, resource: str) -> str:
        return f"{tenant.key}:{resource}"

    async def delta_links(self, tenant: TenantConfig) -> dict[str, str]:
        links: dict[str, str] = {}
        async for doc in self.links.find({"tenant_id": tenant.tenant_id, "source_id": tenant.source_id}):
            if isinstance(doc.get("delta_link"), str) and doc.get("resource") in RESOURCES:
                links[doc["resource"]] = doc["delta_link"]
        return links

    async def store_delta_links(
        self, tenant: TenantConfig, links: dict[str, str], *, run_id: uuid.UUID, at: datetime
    ) -> None:
        for resource, link in links.items():
            await self.links.update_one(
                {"_id": self._link_id(tenant, resource)},
                {
                    "$set": {
                        "tenant_id": tenant.tenant_id,
                        "source_id": tenant.source_id,
                        "resource": resource,
                        "delta_link": link,
                        "run_id": str(run_id),
                        "stored_at": at,
                    }
                },
                upsert=True,
            )

    async def teacher_schools(self, tenant: TenantConfig) -> dict[str, list[str]]:
        doc = await self.get(tenant) or {}
        raw = doc.get("teacher_schools") or {}
        return {str(k): [str(s) for s in v] for k, v in raw.items() if isinstance(v, list)}

    async def record_run(
        self,
        tenant: TenantConfig,
        report: RunReport,
        *,
        finished_at: datetime,
        teacher_schools: dict[str, list[str]] | None,
    ) -> None:
        """The run's outcome; ``teacher_schools`` (healthy runs only) replaces the stored map."""
        fields = self.run_fields(tenant, report, mode=report.mode, finished_at=finished_at, resync=report.resync)
        if report.healthy and teacher_schools is not None:
            fields["teacher_schools"] = teacher_schools
        await self.collection.update_one({"_id": tenant.key}, {"$set": fields}, upsert=True)
