"""The delivery ledger (collection ``delivery_ledger``), written by a vendor's dispatcher and read by the
admin service and the operator CLI: per (tenant, vendor, entity), what was last delivered (or, in test
mode, would have been), its version, hash, time and status. It drops stale updates, tells whether an
entity exists at the vendor (references), and feeds the vendor report, the test-mode report and the
drift check.

The dispatchers' drift reports (collection ``drift_reports``) are named here too; only the dispatcher
reads and writes them (``services/skolsynk_services/dispatcher/drift.py``, with their indexes).

No personal data: ids, kinds, school units, roles, versions, hashes, statuses and reasons only.
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal
from uuid import UUID

from pymongo import UpdateOne
from pymongo.errors import BulkWriteError

from skolsynk.storage import Database, Document, IndexSpec, in_parts
from skolsynk.storage.erasures import DEFAULT_RETENTION
from skolsynk.storage.mongo import DUPLICATE_KEY, RetiredIndex

LEDGER = "delivery_ledger"
DRIFT_REPORTS = "drift_reports"
#: The ledger's queries and what serves them (``_id`` is ``tenant:vendor:entity``):
#:
#: * the dispatcher's batch read of entries and references, and its upserts: ``_id`` (built in);
#: * a tenant's entries for a vendor, of test mode or live (test report, lists, summaries) or both
#:   (report CSV, by the index's first two fields, sorted here): ``by_vendor_test``;
#: * a vendor's delivered entries across tenants (drift check): ``by_vendor_status``.
#:
#: Every index is written with every entry (the dispatcher's hottest write): the ledger keeps no index
#: another one's prefix serves (:data:`RETIRED_INDEXES`).
INDEXES = [
    IndexSpec(LEDGER, [("tenant_id", 1), ("vendor_id", 1), ("test", 1), ("kind", 1)], name="by_vendor_test"),
    IndexSpec(LEDGER, [("vendor_id", 1), ("status", 1), ("test", 1)], name="by_vendor_status"),
    # The entry of a deleted entity expires with the tombstone's retention (ids outlive nothing).
    IndexSpec(LEDGER, [("expires_at", 1)], name="expires_at_ttl", expire_after_seconds=0),
]
#: ``(tenant_id, vendor_id, kind)``, served by ``by_vendor_test``'s first two fields since 2026-12-07: one
#: index less to write per entry (a fifth of the insert's time on the Mongo wire server).
RETIRED_INDEXES = [RetiredIndex(LEDGER, "by_vendor")]

#: How long the entry of a deleted entity is kept: the erasure ledger's and the tombstones' retention.
DELETED_RETENTION = DEFAULT_RETENTION

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

#: The status of an upsert the vendor has (or, in test mode, would have), and of one it refused (or would).
SENT_STATUS: dict[bool, Status] = {False: "delivered", True: "test"}
REFUSED_STATUS: dict[bool, Status] = {False: "rejected", True: "test_rejected"}
#: Where the ledger's lists of a tenant at a vendor (test mode or live) are read: ``by_vendor_test``.
LIST_INDEX = "by_vendor_test"


@dataclass(frozen=True)
class LedgerRecord:
    """One delivery outcome to record (no personal data: ids, kinds, units, roles, versions, hashes)."""

    tenant_id: str
    entity_id: UUID | str
    kind: str
    operation: str
    version: int
    resource_hash: str | None
    status: Status
    test: bool
    school_unit_ids: tuple[str, ...] = ()
    roles: tuple[str, ...] = ()
    reason: str | None = None
    at: datetime = field(default_factory=lambda: datetime.now(UTC))
    #: A group's members as the vendor gets them (how many: no ids), for the test report's group list.
    members: int | None = None


class DeliveryLedger:
    def __init__(self, db: Database, vendor_id: str) -> None:
        self.collection = db[LEDGER]
        self.vendor_id = vendor_id

    def _id(self, tenant_id: str, entity_id: UUID | str) -> str:
        return f"{tenant_id}:{self.vendor_id}:{entity_id}"

    async def get(self, tenant_id: str, entity_id: UUID) -> Document | None:
        return await self.collection.find_one({"_id": self._id(tenant_id, entity_id)})

    async def get_many(self, keys: Iterable[tuple[str, UUID | str]]) -> dict[tuple[str, str], Document]:
        """The entries of these (tenant, entity) pairs, by ``_id`` (in parts of ``IN_PART_SIZE``): a
        batch's own entities and everything they refer to."""
        found: dict[tuple[str, str], Document] = {}
        for part in in_parts(self._id(tenant_id, entity_id) for tenant_id, entity_id in keys):
            cursor = self.collection.find(
                {"_id": {"$in": part}},
                {"tenant_id": 1, "entity_id": 1, "status": 1, "operation": 1, "version": 1, "test": 1, "reason": 1},
            )
            found.update({(doc["tenant_id"], doc["entity_id"]): doc async for doc in cursor})
        return found

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
        await self.record_many(
            [
                LedgerRecord(
                    tenant_id,
                    entity_id,
                    kind=kind,
                    operation=operation,
                    version=version,
                    resource_hash=resource_hash,
                    status=status,
                    test=test,
                    school_unit_ids=tuple(school_unit_ids),
                    roles=tuple(roles),
                    reason=reason,
                )
            ]
        )

    async def record_many(self, records: Iterable[LedgerRecord], *, new: Iterable[tuple[str, str]] = ()) -> None:
        """Record a batch of deliveries with one bulk write, never moving an entity back to an older
        version. An entity the caller found without an entry (``new``: (tenant, entity id) pairs) is
        inserted, which the Mongo wire server does several times as fast as an upsert; if it got an entry
        meanwhile (another replica, a redelivered batch), the duplicate key sends it the upsert's way.
        Every other one is an upsert found by ``_id`` alone (a point lookup) whose update pipeline
        replaces the entry only when its recorded version is not newer."""
        fresh = set(new)
        inserts: list[LedgerRecord] = []
        upserts: list[LedgerRecord] = []
        for r in records:
            (inserts if (r.tenant_id, str(r.entity_id)) in fresh else upserts).append(r)
        if inserts:
            try:
                await self.collection.insert_many(
                    [{"_id": self._id(r.tenant_id, r.entity_id), **self._fields(r)} for r in inserts], ordered=False
                )
            except BulkWriteError as error:
                duplicates = {e["index"] for e in error.details["writeErrors"] if e.get("code") == DUPLICATE_KEY}
                if len(duplicates) < len(error.details["writeErrors"]):
                    raise
                upserts += [inserts[i] for i in sorted(duplicates)]
        operations = []
        for r in upserts:
            fields = {"_id": self._id(r.tenant_id, r.entity_id), **self._fields(r)}
            newer_or_new = {"$lte": [{"$ifNull": ["$version", -1]}, r.version]}
            replacement = {"$cond": {"if": newer_or_new, "then": {"$literal": fields}, "else": "$$ROOT"}}
            operations.append(UpdateOne({"_id": fields["_id"]}, [{"$replaceWith": replacement}], upsert=True))
        if operations:
            await self.collection.bulk_write(operations, ordered=False)

    def _fields(self, record: LedgerRecord) -> dict[str, Any]:
        return {
            "tenant_id": record.tenant_id,
            "vendor_id": self.vendor_id,
            "entity_id": str(record.entity_id),
            "kind": record.kind,
            "operation": record.operation,
            "version": record.version,
            "hash": record.resource_hash,
            "status": record.status,
            "test": record.test,
            "at": record.at,
            "school_unit_ids": list(record.school_unit_ids),
            "roles": list(record.roles),
            "reason": record.reason,
            "members": record.members,
            # A deletion's entry goes after the retention; an upsert (a comeback) keeps it again.
            "expires_at": record.at + DELETED_RETENTION if record.operation == "delete" else None,
        }

    async def present_live(self, tenant_id: str, entity_ids: Iterable[str]) -> set[str]:
        """Which of these entities exist at the vendor (delivered live, last operation an upsert)."""
        found: set[str] = set()
        for part in in_parts(self._id(tenant_id, e) for e in entity_ids):
            criteria = {"_id": {"$in": part}, "status": "delivered", "operation": "upsert", "test": False}
            found.update([doc["entity_id"] async for doc in self.collection.find(criteria, {"entity_id": 1})])
        return found

    async def rejected(self, tenant_id: str, entity_ids: Iterable[str]) -> set[str]:
        """Which of these entities the vendor refused for good (their deliveries are in the DLQ)."""
        found: set[str] = set()
        for part in in_parts(self._id(tenant_id, e) for e in entity_ids):
            criteria = {"_id": {"$in": part}, "status": "rejected"}
            found.update([doc["entity_id"] async for doc in self.collection.find(criteria, {"entity_id": 1})])
        return found

    async def delivered_live(self) -> AsyncIterator[Document]:
        """The vendor's entries delivered live, of every tenant (the drift check; ``by_vendor_status``):
        ``tenant_id``, ``entity_id``, ``kind`` and ``operation`` of each."""
        cursor = self.collection.find(
            {"vendor_id": self.vendor_id, "test": False, "status": "delivered"},
            {"tenant_id": 1, "entity_id": 1, "kind": 1, "operation": 1},
        )
        async for entry in cursor:
            yield entry

    async def entries(self, tenant_id: str, *, test: bool | None = None) -> list[Document]:
        """The tenant's entries at the vendor (of test mode or live, or both), by kind and id. Found on
        ``by_vendor_test`` and sorted here: every entry is read anyway, and no index is kept for the order."""
        criteria: dict[str, Any] = {"tenant_id": tenant_id, "vendor_id": self.vendor_id}
        if test is not None:
            criteria["test"] = test
        found = await self.collection.find(criteria, {"_id": 0}).to_list(None)
        return sorted(found, key=lambda entry: (entry["kind"], entry["entity_id"]))

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

    async def summary(self, tenant_id: str, *, test: bool) -> LedgerSummary:
        """What the vendor has of the tenant (``test``: would have, in test mode), counted in the store: the
        entities per kind, per school unit and role (persons by role, the rest by kind), and what it refused
        (would refuse) per kind and reason. Two aggregations over the pair's entries (``by_vendor_test``)."""
        sent, refused = SENT_STATUS[test], REFUSED_STATUS[test]
        match = {"$match": {"tenant_id": tenant_id, "vendor_id": self.vendor_id, "test": test, "operation": "upsert"}}
        summary = LedgerSummary()
        per_kind = await self.collection.aggregate(
            [match, {"$group": {"_id": {"k": "$kind", "s": "$status", "r": "$reason"}, "n": {"$sum": 1}}}]
        )
        async for doc in per_kind:
            kind, status, n = doc["_id"]["k"], doc["_id"].get("s"), int(doc["n"])
            if status == sent:
                summary.per_kind[kind] = summary.per_kind.get(kind, 0) + n
            elif status == refused:
                reason = str(doc["_id"].get("r") or "")
                summary.refused_per_kind[kind] = summary.refused_per_kind.get(kind, 0) + n
                summary.refused_per_reason[reason] = summary.refused_per_reason.get(reason, 0) + n
        per_unit = await self.collection.aggregate(
            [
                {"$match": {**match["$match"], "status": sent}},
                {"$unwind": {"path": "$school_unit_ids", "preserveNullAndEmptyArrays": True}},
                {"$unwind": {"path": "$roles", "preserveNullAndEmptyArrays": True}},
                {"$group": {"_id": {"u": "$school_unit_ids", "r": "$roles", "k": "$kind"}, "n": {"$sum": 1}}},
            ]
        )
        async for doc in per_unit:
            key = (doc["_id"].get("u") or "-", doc["_id"].get("r") or doc["_id"]["k"])
            summary.per_unit_and_role[key] = summary.per_unit_and_role.get(key, 0) + int(doc["n"])
        return summary

    def _listed(
        self, tenant_id: str, *, test: bool, kinds: Iterable[str], refused: bool, school_unit_id: str | None
    ) -> dict[str, Any]:
        criteria: dict[str, Any] = {
            "tenant_id": tenant_id,
            "vendor_id": self.vendor_id,
            "test": test,
            "kind": {"$in": sorted(kinds)},
            "operation": "upsert",
            "status": (REFUSED_STATUS if refused else SENT_STATUS)[test],
        }
        if school_unit_id is not None:
            criteria["school_unit_ids"] = school_unit_id
        return criteria

    async def listed(
        self,
        tenant_id: str,
        *,
        test: bool,
        kinds: Iterable[str],
        refused: bool = False,
        school_unit_id: str | None = None,
        skip: int = 0,
        limit: int = 50,
    ) -> tuple[list[Document], int]:
        """A page of what the vendor has of the tenant (``test``: would have; ``refused``: what it refused,
        or would) of ``kinds``, at one school unit or all, in :data:`LIST_ORDER`; and how many there are in
        all. Paged and counted in the store, on ``by_vendor_test``."""
        criteria = self._listed(tenant_id, test=test, kinds=kinds, refused=refused, school_unit_id=school_unit_id)
        total = await self.collection.count_documents(criteria, hint=LIST_INDEX)
        cursor = (
            self.collection.find(criteria, {"_id": 0, "expires_at": 0})
            .hint(LIST_INDEX)
            .sort(LIST_ORDER)
            .skip(max(skip, 0))
            .limit(max(limit, 1))
        )
        return await cursor.to_list(None), total

    async def listed_among(
        self,
        tenant_id: str,
        entity_ids: Iterable[str],
        *,
        test: bool,
        kinds: Iterable[str],
        refused: bool = False,
        school_unit_id: str | None = None,
    ) -> list[Document]:
        """The entries of :meth:`listed` among these entities (what a search found), by ``_id`` in parts,
        in :data:`LIST_ORDER`."""
        wanted = self._listed(tenant_id, test=test, kinds=kinds, refused=refused, school_unit_id=school_unit_id)
        found: list[Document] = []
        for part in in_parts(self._id(tenant_id, e) for e in entity_ids):
            # By ``_id`` alone (a point lookup each), the rest checked here: another predicate can make the
            # Mongo wire server walk the collection.
            cursor = self.collection.find({"_id": {"$in": part}}, {"_id": 0, "expires_at": 0})
            found += [doc async for doc in cursor if _matches(doc, wanted)]
        return sorted(found, key=_list_key)

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


async def entries_of(db: Database, tenant_id: str, entities: Iterable[tuple[str, str]]) -> list[Document]:
    """The ledger entries of these (vendor, entity id) pairs of one tenant, by ``_id`` (one person's
    deliveries at every vendor, for the person page)."""
    found: list[Document] = []
    for part in in_parts(f"{tenant_id}:{vendor_id}:{entity_id}" for vendor_id, entity_id in entities):
        found += await db[LEDGER].find({"_id": {"$in": part}}, {"_id": 0, "expires_at": 0}).to_list(None)
    return found


#: The order of the ledger's lists: by kind, school unit and role, then id (the ledger has no names).
LIST_ORDER = [("kind", 1), ("school_unit_ids", 1), ("roles", 1), ("entity_id", 1)]


def _list_key(entry: Document) -> tuple[str, str, str, str]:
    """:data:`LIST_ORDER` in Python (an array sorts by its least element, as the store sorts it)."""
    units, roles = entry.get("school_unit_ids") or [], entry.get("roles") or []
    return (entry["kind"], min(units, default=""), min(roles, default=""), entry["entity_id"])


def _matches(entry: Document, criteria: dict[str, Any]) -> bool:
    for name, wanted in criteria.items():
        value = entry.get(name)
        if isinstance(wanted, dict):  # {"$in": [...]}
            if value not in wanted["$in"]:
                return False
        elif name == "school_unit_ids":
            if wanted not in (value or []):
                return False
        elif value != wanted:
            return False
    return True


@dataclass
class LedgerSummary:
    """What a vendor has (or would have) of one tenant, counted (:meth:`DeliveryLedger.summary`)."""

    #: Entities per kind.
    per_kind: dict[str, int] = field(default_factory=dict)
    #: (school unit id, or "-" for none; role for persons, the kind for the rest) -> entities.
    per_unit_and_role: dict[tuple[str, str], int] = field(default_factory=dict)
    #: What the vendor refused (would refuse), per kind and per reason (as recorded: no personal data).
    refused_per_kind: dict[str, int] = field(default_factory=dict)
    refused_per_reason: dict[str, int] = field(default_factory=dict)

    @property
    def refused(self) -> int:
        return sum(self.refused_per_kind.values())

    @property
    def empty(self) -> bool:
        return not self.per_kind and not self.refused_per_kind


async def status_counts(db: Database) -> dict[tuple[str, str], int]:
    """(vendor, status) -> ledger entries, over every tenant (test-mode entries have status ``test``)."""
    cursor = await db[LEDGER].aggregate([{"$group": {"_id": {"v": "$vendor_id", "s": "$status"}, "n": {"$sum": 1}}}])
    return {(d["_id"]["v"], d["_id"]["s"]): d["n"] async for d in cursor}


async def latest_drift_report(db: Database, vendor_id: str) -> Document | None:
    """The vendor's last drift check (``drift_reports``), or None."""
    return await db[DRIFT_REPORTS].find_one({"vendor_id": vendor_id}, sort=[("at", -1)])
