"""Removals held by the mass-deletion guard (collection ``holds``): written by the normaliser (its
projection's queries are in ``services/skolsynk_services/normaliser/projection.py``), decided by an
operator through the admin service, counted by the operator CLI.

* **approve**: the held removals go out at the next projection, and the hold closes;
* **discard**: the held removals are not sent; the hold stays (status ``discarded``) while the
  same removals are still wanted, so nobody is asked again about the same thing, and a new pending
  hold appears if the situation changes (more removals, or the source comes back). Fix the source,
  or approve later.

After a decision, request a projection (``tenant.projection.requested``) for it to take effect.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from skolsynk.storage.mongo import Database, Document, IndexSpec

HOLDS = "holds"

INDEXES = [IndexSpec(HOLDS, [("tenant_id", 1), ("vendor_id", 1)], name="by_vendor")]

Decision = Literal["approved", "discarded"]


class HoldStore:
    def __init__(self, db: Database) -> None:
        self.collection = db[HOLDS]

    @staticmethod
    def hold_id(tenant_id: str, vendor_id: str, school_unit_id: str) -> str:
        return f"{tenant_id}:{vendor_id}:{school_unit_id}"

    async def for_tenant(self, tenant_id: str, *, status: str | None = None) -> list[Document]:
        criteria: dict[str, str] = {"tenant_id": tenant_id}
        if status is not None:
            criteria["status"] = status
        return await self.collection.find(criteria).sort("_id", 1).to_list(None)

    async def pending_by_vendor(self) -> list[Document]:
        """Pending holds of every tenant, per (tenant, vendor): ``_id`` is ``{t: tenant, v: vendor}``,
        then ``n`` (holds), ``removals`` (held removals) and ``oldest`` (when the oldest was created)."""
        cursor = await self.collection.aggregate(
            [
                {"$match": {"status": "pending"}},
                {
                    "$group": {
                        "_id": {"t": "$tenant_id", "v": "$vendor_id"},
                        "n": {"$sum": 1},
                        "removals": {"$sum": "$removals"},
                        "oldest": {"$min": "$created_at"},
                    }
                },
            ]
        )
        return [doc async for doc in cursor]

    async def decide(self, tenant_id: str, vendor_id: str, school_unit_id: str, decision: Decision, *, by: str) -> bool:
        """Record a decision on a pending hold; False when there is no such pending hold."""
        result = await self.collection.update_one(
            {"_id": self.hold_id(tenant_id, vendor_id, school_unit_id), "status": "pending"},
            {"$set": {"status": decision, "decided_by": by, "decided_at": datetime.now(UTC)}},
        )
        return result.modified_count == 1
