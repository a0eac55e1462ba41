"""Data-quality findings in MongoDB (collection ``dq_findings``): written by the normaliser, read by the
admin service (report, CSV export, summary per school unit); the GDPR purge removes a purged person's."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from uuid import UUID

from skolsynk.domain.quality import Finding, FindingCode, Severity, summary_by_school_unit, to_csv
from skolsynk.storage.mongo import Database, Document, IndexSpec, Session, in_parts

FINDINGS = "dq_findings"
#: Findings of given entities (hinted: the Mongo wire server's planner would scan the collection).
ENTITY_INDEX = "by_entity"

INDEXES = [
    IndexSpec(FINDINGS, [("tenant_id", 1), ("origin", 1), ("source_id", 1)], name="by_origin"),
    IndexSpec(FINDINGS, [("tenant_id", 1), ("school_unit_code", 1)], name="by_school_unit"),
    IndexSpec(FINDINGS, [("tenant_id", 1), ("entity_id", 1)], name=ENTITY_INDEX),
]


class FindingStore:
    def __init__(self, db: Database) -> None:
        self.collection = db[FINDINGS]

    async def add(self, findings: list[Finding], *, session: Session | None = None) -> None:
        if findings:
            await self.collection.insert_many([f.model_dump(mode="json") for f in findings], session=session)

    async def replace_reconcile(
        self, tenant_id: str, findings: list[Finding], *, only_entities: Iterable[str] | None = None
    ) -> None:
        """The whole-state checks of the latest projection replace the previous ones: all of them, or
        (an incremental projection) those of ``only_entities``."""
        criteria: dict[str, Any] = {"tenant_id": tenant_id, "origin": "reconcile"}
        if only_entities is None:
            await self.collection.delete_many(criteria)
        else:
            for part in in_parts(only_entities):
                await self.collection.delete_many({**criteria, "entity_id": {"$in": part}}, hint=ENTITY_INDEX)
        await self.add(findings)

    async def replace_summaries(self, tenant_id: str, findings: list[Finding]) -> None:
        """The summaries over the organiser's whole state (origin ``summary``, counted at every whole
        projection) replace the previous ones."""
        await self.collection.delete_many({"tenant_id": tenant_id, "origin": "summary"})
        await self.add(findings)

    async def place_in_school_units(
        self, tenant_id: str, codes: dict[str, str], *, only_entities: Iterable[str] | None = None
    ) -> int:
        """Give findings that name no school unit (ingest findings: a record is checked alone) the
        code of the unit their entity belongs to (of all entities, or of ``only_entities``); returns
        how many were placed."""
        criteria: dict[str, Any] = {"tenant_id": tenant_id, "school_unit_code": None, "entity_id": {"$ne": None}}
        unplaced: list[Document] = []
        if only_entities is None:
            unplaced = await self.collection.find(criteria, {"entity_id": 1}).to_list(None)
        else:
            for part in in_parts(only_entities):
                query = {**criteria, "entity_id": {"$in": part}}
                unplaced += await self.collection.find(query, {"entity_id": 1}).hint(ENTITY_INDEX).to_list(None)
        by_code: dict[str, list[str]] = {}
        for doc in unplaced:
            code = codes.get(str(doc["entity_id"]))
            if code is not None:
                by_code.setdefault(code, []).append(str(doc["entity_id"]))
        placed = 0
        for code, entity_ids in by_code.items():
            for part in in_parts(entity_ids):
                result = await self.collection.update_many(
                    {"tenant_id": tenant_id, "school_unit_code": None, "entity_id": {"$in": part}},
                    {"$set": {"school_unit_code": code}},
                    hint=ENTITY_INDEX,
                )
                placed += result.modified_count
        return placed

    async def keep_only_run(
        self, tenant_id: str, source_id: str, run_id: UUID, *, only_entities: Iterable[str] | None = None
    ) -> None:
        """Findings of older runs of this source are superseded by this run's: all ingest and run findings
        after a full run; after an incremental run only the ingest findings of the entities the run carried
        (the unchanged records' findings still stand)."""
        criteria: dict[str, Any] = {"tenant_id": tenant_id, "source_id": source_id, "run_id": {"$ne": str(run_id)}}
        if only_entities is None:
            criteria["origin"] = {"$in": ["ingest", "run"]}
            await self.collection.delete_many(criteria)
            return
        criteria["origin"] = "ingest"
        for part in in_parts(only_entities):
            await self.collection.delete_many({**criteria, "entity_id": {"$in": part}}, hint=ENTITY_INDEX)

    async def forget_entities(self, tenant_id: str, entity_ids: list[str], *, session: Session | None = None) -> int:
        """Remove the findings of these entities of the tenant (the GDPR purge: a person's few ids);
        returns how many were removed."""
        result = await self.collection.delete_many(
            {"tenant_id": tenant_id, "entity_id": {"$in": entity_ids}}, session=session
        )
        return result.deleted_count

    async def query(
        self,
        tenant_id: str,
        *,
        severity: Severity | None = None,
        code: FindingCode | None = None,
        school_unit_code: str | None = None,
        limit: int = 0,
    ) -> list[Finding]:
        """The tenant's current findings, errors first, then by school unit and code."""
        criteria: dict[str, Any] = {"tenant_id": tenant_id}
        if severity is not None:
            criteria["severity"] = severity.value
        if code is not None:
            criteria["code"] = code.value
        if school_unit_code is not None:
            criteria["school_unit_code"] = school_unit_code
        cursor = self.collection.find(criteria, {"_id": 0}).sort(
            [("severity", 1), ("school_unit_code", 1), ("code", 1), ("source_key", 1)]
        )
        if limit:
            cursor = cursor.limit(limit)
        return [Finding.model_validate(doc) async for doc in cursor]

    async def csv(self, tenant_id: str) -> str:
        return to_csv(await self.query(tenant_id))

    async def summary(self, tenant_id: str) -> dict[str, dict[str, int]]:
        return summary_by_school_unit(await self.query(tenant_id))
