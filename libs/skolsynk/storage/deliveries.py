"""The delivery ledger, written by a vendor's dispatcher and read by the admin service and the operator
CLI: per (tenant, vendor, entity), what was last delivered (or, in test mode, would have been), its
version, hash, time and status. It drops stale updates, tells whether an
entity exists at the vendor (references), and feeds the vendor report and the test-mode report.

No personal data: ids, kinds, school units, roles, versions, hashes, statuses and reasons only.
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, Literal
from uuid import UUID

from skolsynk.storage import Database, Document, IndexSpec

LEDGER = "delivery_ledger"
INDEXES = [IndexSpec(LEDGER, [("tenant_id", 1), ("vendor_id", 1), ("kind", 1)], name="by_vendor")]

Status = Literal["delivered", "test", "test_rejected", "rejected"]

REPORT_COLUMNS = (
    "entity_id",
    "kind",
    "operation",
    "version",
    "status",
    "test",
    "at",
    "school_unit_ids",
    "roles",
    "reason",
)


class DeliveryLedger:
    def __init__(self, db: Database, vendor_id: str) -> None:
        self.collection = db[LEDGER]
        self.vendor_id = vendor_id

    def _id(self, tenant_id: str, entity_id: UUID | str) -> str:
        return f"{tenant_id}:{self.vendor_id}:{entity_id}"

    async def get(self, tenant_id: str, entity_id: UUID) -> Document | None:
        return await self.collection.find_one({"_id": self._id(tenant_id, entity_id)})

    async def record(
        self,
        tenant_id: str,
        entity_id: UUID,
        *,
        kind: str,
        operation: str,
        version: int,
        resource_hash: str | None,
        status: Status,
        test: bool,
        school_unit_ids: Iterable[str] = (),
        roles: Iterable[str] = (),
        reason: str | None = None,
    ) -> None:
        """Record a delivery, never moving an entity back to an older version."""
        fields: dict[str, Any] = {
            "tenant_id": tenant_id,
            "vendor_id": self.vendor_id,
            "entity_id": str(entity_id),
            "kind": kind,
            "operation": operation,
            "version": version,
            "hash": resource_hash,
            "status": status,
            "test": test,
            "at": datetime.now(UTC),
            "school_unit_ids": list(school_unit_ids),
            "roles": list(roles),
            "reason": reason,
        }
        await self._upsert_if_newer(tenant_id, entity_id, version, fields)

    async def _upsert_if_newer(self, tenant_id: str, entity_id: UUID, version: int, fields: dict[str, Any]) -> None:
        document_id = self._id(tenant_id, entity_id)
        result = await self.collection.update_one({"_id": document_id, "version": {"$lte": version}}, {"$set": fields})
        if result.matched_count == 0 and await self.collection.count_documents({"_id": document_id}) == 0:
            await self.collection.update_one({"_id": document_id}, {"$setOnInsert": fields}, upsert=True)

    async def present_live(self, tenant_id: str, entity_ids: Iterable[str]) -> set[str]:
        """Which of these entities exist at the vendor (delivered live, last operation an upsert)."""
        ids = [self._id(tenant_id, e) for e in entity_ids]
        cursor = self.collection.find(
            {"_id": {"$in": ids}, "status": "delivered", "operation": "upsert", "test": False}, {"entity_id": 1}
        )
        return {doc["entity_id"] async for doc in cursor}

    async def rejected(self, tenant_id: str, entity_ids: Iterable[str]) -> set[str]:
        """Which of these entities the vendor refused for good (their deliveries are in the DLQ)."""
        ids = [self._id(tenant_id, e) for e in entity_ids]
        cursor = self.collection.find({"_id": {"$in": ids}, "status": "rejected"}, {"entity_id": 1})
        return {doc["entity_id"] async for doc in cursor}

    async def entries(self, tenant_id: str, *, test: bool | None = None) -> list[Document]:
        criteria: dict[str, Any] = {"tenant_id": tenant_id, "vendor_id": self.vendor_id}
        if test is not None:
            criteria["test"] = test
        return await self.collection.find(criteria, {"_id": 0}).sort([("kind", 1), ("entity_id", 1)]).to_list(None)

    async def report_csv(self, tenant_id: str) -> str:
        """What was sent to the vendor (or recorded in test mode), when, with what status."""
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(REPORT_COLUMNS)
        for entry in await self.entries(tenant_id):
            row = {**entry, "at": entry["at"].isoformat(), "school_unit_ids": " ".join(entry["school_unit_ids"]),
                   "roles": " ".join(entry["roles"])}  # fmt: skip
            writer.writerow(["" if row.get(c) is None else row[c] for c in REPORT_COLUMNS])
        return buffer.getvalue()

    async def test_report(self, tenant_id: str) -> dict[str, Any]:
        """What a subscription in test mode would send: counts per school unit and role, per kind,
        and what the vendor would reject and why."""
        per_unit_role: dict[str, int] = defaultdict(int)
        per_kind: dict[str, int] = defaultdict(int)
        rejected: list[dict[str, Any]] = []
        for entry in await self.entries(tenant_id, test=True):
            if entry["operation"] != "upsert":
                continue
            if entry["status"] == "test_rejected":
                rejected.append({"entity_id": entry["entity_id"], "kind": entry["kind"], "reason": entry["reason"]})
                continue
            per_kind[entry["kind"]] += 1
            for unit in entry["school_unit_ids"] or ["-"]:
                for role in entry["roles"] or [entry["kind"]]:
                    per_unit_role[f"{unit}|{role}"] += 1
        return {
            "would_send": dict(per_kind),
            "per_school_unit_and_role": dict(sorted(per_unit_role.items())),
            "would_be_rejected": rejected,
        }
