"""Data-quality findings in MongoDB (collection ``dq_findings``): written by the normaliser, read by the
admin service (the report a page at a time, CSV export, counts per school unit and code); the GDPR purge
removes a purged person's, and those naming them as the other party of a duplicate."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from skolsynk.domain.quality import Finding, FindingCode, Severity, to_csv
from skolsynk.storage.mongo import Database, Document, IndexSpec, RetiredIndex, Session, in_parts

FINDINGS = "dq_findings"
#: Findings of given entities. Asked with exactly its fields (``tenant_id`` and an ``$in`` of entity ids),
#: everything else checked on what was found, and never hinted: the Mongo wire server serves a filter
#: on an index's fields as a range of it, walks the collection for a further predicate and the whole
#: index (every tenant's findings) for a hint, though its explain names the index either way.
ENTITY_INDEX = "by_entity"
#: Findings naming given entities as the other party of a duplicate (only duplicates have one): the GDPR
#: purge's lookup. Not partial (``other_entity_id`` is null but in duplicates): the Mongo wire server plans no
#: query on a partial index; ids are unique across tenants, so the id alone is the key.
OTHER_PARTY_INDEX = "by_other_party_id"

INDEXES = [
    IndexSpec(FINDINGS, [("tenant_id", 1), ("origin", 1), ("source_id", 1)], name="by_origin"),
    IndexSpec(FINDINGS, [("tenant_id", 1), ("school_unit_code", 1)], name="by_school_unit"),
    IndexSpec(FINDINGS, [("tenant_id", 1), ("entity_id", 1)], name=ENTITY_INDEX),
    IndexSpec(FINDINGS, [("other_entity_id", 1)], name=OTHER_PARTY_INDEX),
]
#: Made by earlier versions: the partial index of the other party, which the Mongo wire server never used.
RETIRED_INDEXES = [RetiredIndex(FINDINGS, "by_other_party")]
#: The report's order: errors first, then by school unit, code and the source's key (the id last, so
#: that pages of equal findings neither repeat nor skip one).
REPORT_ORDER = [("severity", 1), ("school_unit_code", 1), ("code", 1), ("source_key", 1), ("_id", 1)]
#: The shortest search text (one letter would match nearly everything).
SEARCH_MIN_LENGTH = 2


@dataclass(frozen=True)
class FindingFilter:
    """Which of a tenant's findings a report, page or CSV shows. ``text`` is contained (ignoring case) in
    the source's key or the entity id, and, when ``personal``, in the offending value; ``entity_ids``
    (persons, units ... whose names matched the text, looked up by the caller) add their findings and
    those naming them as the other party."""

    severity: Severity | None = None
    code: FindingCode | None = None
    school_unit_code: str | None = None
    text: str | None = None
    entity_ids: frozenset[str] = frozenset()
    personal: bool = True

    def criteria(self, tenant_id: str) -> dict[str, Any]:
        criteria: dict[str, Any] = {"tenant_id": tenant_id}
        if self.severity is not None:
            criteria["severity"] = self.severity.value
        if self.code is not None:
            criteria["code"] = self.code.value
        if self.school_unit_code is not None:
            criteria["school_unit_code"] = None if self.school_unit_code == "-" else self.school_unit_code
        text = (self.text or "").strip()
        if len(text) >= SEARCH_MIN_LENGTH:
            pattern = {"$regex": re.escape(text), "$options": "i"}
            alternatives: list[dict[str, Any]] = [{"source_key": pattern}, {"entity_id": text.lower()}]
            if self.personal:
                alternatives.append({"value": pattern})
            if self.entity_ids:
                ids = sorted(self.entity_ids)
                alternatives += [{"entity_id": {"$in": ids}}, {"other_entity_id": {"$in": ids}}]
            criteria["$or"] = alternatives
        return criteria


class FindingStore:
    def __init__(self, db: Database) -> None:
        self.collection = db[FINDINGS]

    async def _of_entities(
        self, tenant_id: str, entity_ids: Iterable[str], fields: Iterable[str]
    ) -> AsyncIterator[Document]:
        """The findings of these entities of the tenant (``ENTITY_INDEX``, in parts), with ``fields``."""
        projection = dict.fromkeys(fields, 1)
        for part in in_parts(entity_ids):
            async for doc in self.collection.find({"tenant_id": tenant_id, "entity_id": {"$in": part}}, projection):
                yield doc

    async def _delete_ids(self, ids: list[Any]) -> None:
        for part in in_parts(ids):
            await self.collection.delete_many({"_id": {"$in": part}})

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
            found = self._of_entities(tenant_id, only_entities, ["origin"])
            await self._delete_ids([doc["_id"] async for doc in found if doc.get("origin") == "reconcile"])
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
        unplaced: list[Document] = []
        if only_entities is None:
            # ``by_school_unit``'s fields alone; findings of no entity are left out here.
            cursor = self.collection.find({"tenant_id": tenant_id, "school_unit_code": None}, {"entity_id": 1})
            unplaced = [d async for d in cursor if d.get("entity_id") is not None]
        else:
            found = self._of_entities(tenant_id, only_entities, ["entity_id", "school_unit_code"])
            unplaced = [d async for d in found if d.get("school_unit_code") is None and d.get("entity_id") is not None]
        by_code: dict[str, list[Any]] = {}
        for doc in unplaced:
            code = codes.get(str(doc["entity_id"]))
            if code is not None:
                by_code.setdefault(code, []).append(doc["_id"])
        placed = 0
        for code, ids in by_code.items():
            for part in in_parts(ids):
                # By ``_id`` alone (found above, under the tenant's projection lock): the Mongo wire server
                # looks each one up; with a further predicate it would walk the collection.
                result = await self.collection.update_many({"_id": {"$in": part}}, {"$set": {"school_unit_code": code}})
                placed += result.modified_count
        return placed

    async def keep_only_run(
        self, tenant_id: str, source_id: str, run_id: UUID, *, only_entities: Iterable[str] | None = None
    ) -> None:
        """Findings of older runs of this source are superseded by this run's: all ingest and run findings
        after a full run; after an incremental run only the ingest findings of the entities the run carried
        (the unchanged records' findings still stand)."""
        if only_entities is None:
            # ``by_origin``'s three fields, origin by origin; the run checked on what was found.
            superseded_all: list[Any] = []
            for origin in ("ingest", "run"):
                cursor = self.collection.find(
                    {"tenant_id": tenant_id, "origin": origin, "source_id": source_id}, {"run_id": 1}
                )
                superseded_all += [doc["_id"] async for doc in cursor if doc.get("run_id") != str(run_id)]
            await self._delete_ids(superseded_all)
            return
        found = self._of_entities(tenant_id, only_entities, ["origin", "source_id", "run_id"])
        superseded = [
            doc["_id"]
            async for doc in found
            if (doc.get("origin"), doc.get("source_id")) == ("ingest", source_id) and doc.get("run_id") != str(run_id)
        ]
        await self._delete_ids(superseded)

    async def forget_entities(self, tenant_id: str, entity_ids: list[str], *, session: Session | None = None) -> int:
        """Remove the findings of these entities of the tenant, and those naming one of them as the other
        party of a duplicate (their value is the purged person's too) (the GDPR purge: a person's few
        ids); returns how many were removed."""
        # No hints: the GDPR service, which purges, does not create these indexes (the normaliser does).
        own = await self.collection.delete_many(
            {"tenant_id": tenant_id, "entity_id": {"$in": entity_ids}}, session=session
        )
        # Found by the ids alone (with the tenant in the filter the Mongo wire server walks the collection),
        # then removed by ``_id`` where the tenant is this one.
        naming = self.collection.find({"other_entity_id": {"$in": entity_ids}}, {"tenant_id": 1}, session=session)
        doomed = [doc["_id"] async for doc in naming if doc.get("tenant_id") == tenant_id]
        if not doomed:
            return own.deleted_count
        removed = await self.collection.delete_many({"_id": {"$in": doomed}}, session=session)
        return own.deleted_count + removed.deleted_count

    async def query(
        self,
        tenant_id: str,
        *,
        severity: Severity | None = None,
        code: FindingCode | None = None,
        school_unit_code: str | None = None,
        limit: int = 0,
        skip: int = 0,
        matching: FindingFilter | None = None,
    ) -> list[Finding]:
        """The tenant's current findings in the report's order (errors first, then by school unit, code
        and key): those ``matching`` a filter (or the severity, code and school unit given), ``skip``
        and ``limit`` (0: all) for a page. A school unit of ``"-"`` is the findings without one."""
        matching = matching or FindingFilter(severity, code, school_unit_code)
        cursor = self.collection.find(matching.criteria(tenant_id), {"_id": 0}).sort(REPORT_ORDER)
        if skip:
            cursor = cursor.skip(skip)
        if limit:
            cursor = cursor.limit(limit)
        return [Finding.model_validate(doc) async for doc in cursor]

    async def count(self, tenant_id: str, matching: FindingFilter | None = None) -> int:
        """How many findings ``matching`` the filter there are (a report's total, for its paging)."""
        return await self.collection.count_documents((matching or FindingFilter()).criteria(tenant_id))

    async def csv(self, tenant_id: str, matching: FindingFilter | None = None) -> str:
        """The findings (of a filter) as CSV for programs (``to_csv``); values only when ``personal``."""
        matching = matching or FindingFilter()
        return to_csv(await self.query(tenant_id, matching=matching), personal=matching.personal)

    async def summary(self, tenant_id: str) -> dict[str, dict[str, int]]:
        """Per school-unit code ("-" for findings without one): the count per severity and per code,
        counted in the store (``skolsynk.domain.quality.summary_by_school_unit``'s shape)."""
        pipeline: list[dict[str, Any]] = [
            {"$match": {"tenant_id": tenant_id}},
            {"$group": {"_id": {"u": "$school_unit_code", "c": "$code", "s": "$severity"}, "n": {"$sum": 1}}},
        ]
        table: dict[str, dict[str, int]] = {}
        async for doc in await self.collection.aggregate(pipeline):
            key = doc["_id"]
            row = table.setdefault(key.get("u") or "-", {})
            for name in (key["s"], key["c"]):
                row[name] = row.get(name, 0) + doc["n"]
        return dict(sorted(table.items()))
