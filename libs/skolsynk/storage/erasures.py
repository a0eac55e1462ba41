"""The erasure ledger, erasure requests (suppressions) and tombstones.

Written by the GDPR service; read by the normaliser (suppressions), the admin service and the
operator CLI (ledger, evidence). Every document holds pseudonymous ids, reasons, timestamps and
receipts only: never a name, an e-mail address or a civic number.

* ``erasure_ledger``: one entry per deletion of a person at a vendor (tenant x vendor x the vendor's
  id of the person x the version of the delete): ``pending`` -> ``overdue`` (past the deadline, retried)
  -> ``completed`` (a receipt) or ``superseded`` (the person came back before the delete was
  delivered). Finished entries get ``expires_at`` (the tombstone retention) and a TTL index removes them.
* ``erasure_requests``: erasure and objection requests; an ``active`` request suppresses the person
  from delivery to its vendors (all when ``vendor_ids`` is null) until withdrawn.
* ``gdpr_tombstones``: one per purged person: when, what was purged, how many deletions; TTL as well.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from uuid import UUID

from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

from skolsynk.storage.mongo import Database, Document, IndexSpec, Session, in_parts

LEDGER = "erasure_ledger"
REQUESTS = "erasure_requests"
TOMBSTONES = "gdpr_tombstones"

#: Default retention of finished ledger entries and tombstones (about 6 months).
DEFAULT_RETENTION = timedelta(days=183)

INDEXES = [
    IndexSpec(LEDGER, [("tenant_id", 1), ("vendor_id", 1), ("status", 1)], name="by_vendor_status"),
    IndexSpec(LEDGER, [("tenant_id", 1), ("person_id", 1)], name="by_person"),
    IndexSpec(LEDGER, [("status", 1), ("requested_at", 1)], name="by_status_age"),
    IndexSpec(LEDGER, [("purged", 1), ("finished_at", 1)], name="awaiting_purge"),
    IndexSpec(LEDGER, [("expires_at", 1)], name="expires_at_ttl", expire_after_seconds=0),
    IndexSpec(REQUESTS, [("tenant_id", 1), ("status", 1)], name="by_tenant_status"),
    # One person's requests (the person page).
    IndexSpec(REQUESTS, [("tenant_id", 1), ("person_id", 1)], name="by_person"),
    IndexSpec(TOMBSTONES, [("expires_at", 1)], name="expires_at_ttl", expire_after_seconds=0),
]

LedgerStatus = Literal["pending", "overdue", "completed", "superseded"]
OPEN: tuple[LedgerStatus, ...] = ("pending", "overdue")

EVIDENCE_COLUMNS = (
    "tenant_id",
    "vendor_id",
    "person_id",
    "vendor_entity_id",
    "version",
    "reason",
    "removed_at",
    "requested_at",
    "status",
    "outcome",
    "delivered_at",
    "vendor_status",
    "retries",
)


def utcnow() -> datetime:
    return datetime.now(UTC)


def _iso(value: Any) -> str:
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()
    return "" if value is None else str(value)


class ErasureLedger:
    def __init__(self, db: Database, *, retention: timedelta = DEFAULT_RETENTION) -> None:
        self.collection = db[LEDGER]
        self.retention = retention

    @staticmethod
    def entry_id(tenant_id: str, vendor_id: str, vendor_entity_id: UUID | str, version: int) -> str:
        return f"{tenant_id}:{vendor_id}:{vendor_entity_id}:{version}"

    async def requested(
        self,
        tenant_id: str,
        *,
        vendor_id: str,
        person_id: UUID,
        vendor_entity_id: UUID,
        version: int,
        reason: str,
        requested_at: datetime,
        removed_at: datetime | None,
        session: Session | None = None,
    ) -> None:
        """Open the entry (a receipt that arrived first has already finished it: keep its status)."""
        await self.collection.update_one(
            {"_id": self.entry_id(tenant_id, vendor_id, vendor_entity_id, version)},
            {
                "$set": {
                    "tenant_id": tenant_id,
                    "vendor_id": vendor_id,
                    "person_id": str(person_id),
                    "vendor_entity_id": str(vendor_entity_id),
                    "version": version,
                    "reason": reason,
                    "requested_at": requested_at,
                    "removed_at": removed_at or requested_at,
                },
                "$setOnInsert": {"status": "pending", "retries": 0},
            },
            upsert=True,
            session=session,
        )

    async def receipt(
        self,
        tenant_id: str,
        *,
        vendor_id: str,
        vendor_entity_id: UUID,
        version: int,
        outcome: str,
        delivered_at: datetime,
        vendor_status: int | None,
        session: Session | None = None,
    ) -> Document | None:
        """Finish the entry with its receipt; returns it (None if it was already finished)."""
        status: LedgerStatus = "superseded" if outcome == "superseded" else "completed"
        finished_at = utcnow()
        try:
            return await self._finish(tenant_id, vendor_id, vendor_entity_id, version, status, outcome, finished_at,
                                      delivered_at, vendor_status, session)  # fmt: skip
        except DuplicateKeyError:
            return None  # already completed: a redelivered or repeated receipt

    async def _finish(
        self,
        tenant_id: str,
        vendor_id: str,
        vendor_entity_id: UUID,
        version: int,
        status: LedgerStatus,
        outcome: str,
        finished_at: datetime,
        delivered_at: datetime,
        vendor_status: int | None,
        session: Session | None,
    ) -> Document | None:
        return await self.collection.find_one_and_update(
            {"_id": self.entry_id(tenant_id, vendor_id, vendor_entity_id, version), "status": {"$nin": ["completed"]}},
            {
                "$set": {
                    "tenant_id": tenant_id,
                    "vendor_id": vendor_id,
                    "vendor_entity_id": str(vendor_entity_id),
                    "version": version,
                    "status": status,
                    "receipt": {"outcome": outcome, "delivered_at": delivered_at, "vendor_status": vendor_status},
                    "finished_at": finished_at,
                    "expires_at": finished_at + self.retention,
                },
                "$setOnInsert": {"retries": 0},
            },
            upsert=True,
            return_document=ReturnDocument.AFTER,
            session=session,
        )

    async def open_for_person(self, tenant_id: str, person_id: str, *, session: Session | None = None) -> int:
        return await self.collection.count_documents(
            {"tenant_id": tenant_id, "person_id": person_id, "status": {"$in": list(OPEN)}}, session=session
        )

    async def claim_person(self, tenant_id: str, person_id: str, *, session: Session) -> None:
        """Write to every ledger entry of the person inside the caller's transaction, so that two
        receipts of one person handled at once conflict (one is retried and sees the other finished)
        instead of each seeing the other's deletion still open and neither purging (write skew)."""
        await self.collection.update_many(
            {"tenant_id": tenant_id, "person_id": person_id}, {"$inc": {"purge_checks": 1}}, session=session
        )

    async def for_person(self, tenant_id: str, person_id: str, *, session: Session | None = None) -> list[Document]:
        criteria = {"tenant_id": tenant_id, "person_id": person_id}
        return await self.collection.find(criteria, session=session).to_list(None)

    async def for_persons(self, tenant_id: str, person_ids: Iterable[str]) -> list[Document]:
        """The entries of these persons of the tenant (``by_person``): the receipts of erasure requests."""
        found: list[Document] = []
        for part in in_parts(person_ids):
            criteria = {"tenant_id": tenant_id, "person_id": {"$in": part}}
            found += await self.collection.find(criteria).to_list(None)
        return found

    async def mark_purged(self, tenant_id: str, person_id: str, *, session: Session | None = None) -> None:
        """The person's data is purged: their entries no longer wait for it."""
        await self.collection.update_many(
            {"tenant_id": tenant_id, "person_id": person_id}, {"$set": {"purged": True}}, session=session
        )

    async def awaiting_purge(self, *, limit: int = 500) -> list[tuple[str, str, datetime]]:
        """``(tenant, person, last finished)`` of persons with a finished deletion whose data is not purged
        yet, oldest first: what the sweep tries again (a purge blocked by another open deletion, by the
        person still being in the source or at a vendor, or that no event completed)."""
        criteria = {"purged": {"$ne": True}, "status": {"$in": ["completed", "superseded"]}, "person_id": {"$ne": None}}
        persons: dict[tuple[str, str], datetime] = {}
        cursor = self.collection.find(criteria, {"tenant_id": 1, "person_id": 1, "finished_at": 1})
        async for doc in cursor.sort("finished_at", 1).limit(limit * 4):
            key = (str(doc["tenant_id"]), str(doc["person_id"]))
            finished = doc.get("finished_at")
            if isinstance(finished, datetime):
                finished = finished if finished.tzinfo else finished.replace(tzinfo=UTC)
                persons[key] = max(persons.get(key, finished), finished)
        return [(t, p, at) for (t, p), at in list(persons.items())[:limit]]

    async def mark_overdue(self, deadline: timedelta, *, now: datetime | None = None) -> int:
        """Pending entries requested longer ago than the deadline become overdue."""
        cutoff = (now or utcnow()) - deadline
        result = await self.collection.update_many(
            {"status": "pending", "requested_at": {"$lt": cutoff}},
            {"$set": {"status": "overdue", "overdue_at": now or utcnow()}},
        )
        return result.modified_count

    async def due_for_retry(
        self, retry_after: timedelta, *, now: datetime | None = None, limit: int = 500
    ) -> list[Document]:
        """Open entries neither requested nor retried within ``retry_after``."""
        cutoff = (now or utcnow()) - retry_after
        criteria = {
            "status": {"$in": list(OPEN)},
            "requested_at": {"$lt": cutoff},
            "$or": [{"last_retry_at": None}, {"last_retry_at": {"$lt": cutoff}}],
        }
        return await self.collection.find(criteria).sort("requested_at", 1).limit(limit).to_list(None)

    async def retried(self, entry_id: str, *, now: datetime | None = None) -> None:
        await self.collection.update_one(
            {"_id": entry_id, "status": {"$in": list(OPEN)}},
            {"$set": {"last_retry_at": now or utcnow()}, "$inc": {"retries": 1}},
        )

    async def overdue_by_vendor(self) -> list[Document]:
        """Overdue deletions of every tenant per (tenant, vendor): ``_id`` ``{t, v}``, ``n``, and ``oldest``
        (when the first of them became overdue)."""
        cursor = await self.collection.aggregate(
            [
                {"$match": {"status": "overdue"}},
                {
                    "$group": {
                        "_id": {"t": "$tenant_id", "v": "$vendor_id"},
                        "n": {"$sum": 1},
                        "oldest": {"$min": "$overdue_at"},
                    }
                },
            ]
        )
        return [doc async for doc in cursor]

    async def counts(self, tenant_id: str | None = None) -> dict[tuple[str, str, str], int]:
        """(tenant, vendor, status) -> entries."""
        match: dict[str, Any] = {} if tenant_id is None else {"tenant_id": tenant_id}
        pipeline: list[dict[str, Any]] = [
            {"$match": match},
            {"$group": {"_id": {"t": "$tenant_id", "v": "$vendor_id", "s": "$status"}, "n": {"$sum": 1}}},
        ]
        cursor = await self.collection.aggregate(pipeline)
        return {(d["_id"]["t"], d["_id"]["v"], d["_id"]["s"]): d["n"] async for d in cursor}

    async def entries(
        self,
        tenant_id: str,
        *,
        vendor_id: str | None = None,
        status: LedgerStatus | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[Document]:
        criteria: dict[str, Any] = {"tenant_id": tenant_id}
        if vendor_id is not None:
            criteria["vendor_id"] = vendor_id
        if status is not None:
            criteria["status"] = status
        window: dict[str, datetime] = {}
        if since is not None:
            window["$gte"] = since
        if until is not None:
            window["$lt"] = until
        if window:
            criteria["requested_at"] = window
        cursor = self.collection.find(criteria, {"_id": 0}).sort([("requested_at", 1), ("vendor_id", 1)])
        return await cursor.to_list(None)

    async def evidence(self, tenant_id: str, *, vendor_id: str | None = None, **window: Any) -> list[dict[str, Any]]:
        """The deletions with their receipts, flat and pseudonymous, for the organiser's GDPR records."""
        rows = []
        for entry in await self.entries(tenant_id, vendor_id=vendor_id, **window):
            receipt = entry.get("receipt") or {}
            rows.append(
                {
                    "tenant_id": entry["tenant_id"],
                    "vendor_id": entry["vendor_id"],
                    "person_id": entry.get("person_id"),
                    "vendor_entity_id": entry["vendor_entity_id"],
                    "version": entry["version"],
                    "reason": entry.get("reason"),
                    "removed_at": _iso(entry.get("removed_at")) or None,
                    "requested_at": _iso(entry.get("requested_at")) or None,
                    "status": entry["status"],
                    "outcome": receipt.get("outcome"),
                    "delivered_at": _iso(receipt.get("delivered_at")) or None,
                    "vendor_status": receipt.get("vendor_status"),
                    "retries": entry.get("retries", 0),
                }
            )
        return rows

    async def evidence_csv(self, tenant_id: str, *, vendor_id: str | None = None, **window: Any) -> str:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=EVIDENCE_COLUMNS, lineterminator="\n")
        writer.writeheader()
        for row in await self.evidence(tenant_id, vendor_id=vendor_id, **window):
            writer.writerow({k: "" if v is None else v for k, v in row.items()})
        return buffer.getvalue()

    async def evidence_json(self, tenant_id: str, *, vendor_id: str | None = None, **window: Any) -> str:
        rows = await self.evidence(tenant_id, vendor_id=vendor_id, **window)
        document = {"tenant_id": tenant_id, "vendor_id": vendor_id, "generated_at": _iso(utcnow()), "deletions": rows}
        return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


#: Every vendor: a request that names no vendor covers all of them, including future ones.
ALL_VENDORS = "*"


class ErasureRequestStore:
    def __init__(self, db: Database) -> None:
        self.collection = db[REQUESTS]

    async def add(
        self,
        tenant_id: str,
        *,
        request_id: UUID,
        person_id: UUID,
        vendor_ids: Iterable[str] | None,
        kind: str,
        requested_by: str,
        reference: str | None,
        requested_at: datetime,
        session: Session | None = None,
    ) -> bool:
        """Record an active request; False if it was known already (a redelivery)."""
        result = await self.collection.update_one(
            {"_id": str(request_id)},
            {
                "$setOnInsert": {
                    "tenant_id": tenant_id,
                    "person_id": str(person_id),
                    "vendor_ids": None if vendor_ids is None else sorted(set(vendor_ids)),
                    "kind": kind,
                    "requested_by": requested_by,
                    "reference": reference,
                    "requested_at": requested_at,
                    "status": "active",
                }
            },
            upsert=True,
            session=session,
        )
        return result.upserted_id is not None

    async def withdraw(
        self, tenant_id: str, request_id: UUID, *, by: str, at: datetime, session: Session | None = None
    ) -> Document | None:
        """Withdraw an active request of the tenant; returns it, or None if there is no such active request."""
        return await self.collection.find_one_and_update(
            {"_id": str(request_id), "tenant_id": tenant_id, "status": "active"},
            {"$set": {"status": "withdrawn", "withdrawn_by": by, "withdrawn_at": at}},
            return_document=ReturnDocument.AFTER,
            session=session,
        )

    async def for_tenant(self, tenant_id: str, *, status: str | None = None) -> list[Document]:
        criteria: dict[str, Any] = {"tenant_id": tenant_id}
        if status is not None:
            criteria["status"] = status
        return await self.collection.find(criteria).sort("requested_at", 1).to_list(None)

    async def for_person(self, tenant_id: str, person_id: str) -> list[Document]:
        """One person's requests, active and withdrawn, oldest first (``by_person``)."""
        criteria = {"tenant_id": tenant_id, "person_id": person_id}
        return await self.collection.find(criteria).sort("requested_at", 1).to_list(None)

    async def suppressed(self, tenant_id: str) -> dict[str, dict[str, str]]:
        """person id -> {vendor id or ``*`` -> the request kind}, for the active requests of a tenant."""
        return suppressions([doc async for doc in self.collection.find({"tenant_id": tenant_id, "status": "active"})])


def suppressions(requests: Iterable[Document]) -> dict[str, dict[str, str]]:
    """person id -> {vendor id or ``*`` -> the request kind}, for the active ones among ``requests``."""
    found: dict[str, dict[str, str]] = {}
    for doc in requests:
        if doc.get("status") != "active":
            continue
        vendors = doc["vendor_ids"] if doc["vendor_ids"] is not None else [ALL_VENDORS]
        for vendor_id in vendors:
            found.setdefault(doc["person_id"], {})[vendor_id] = doc["kind"]
    return found


#: The deletion reason each kind of request leaves in the ledger.
REQUEST_REASONS = {"erasure": "erasure_request", "objection": "objection"}


def receipts_of(request: Document, ledger: Iterable[Document], vendor_ids: Iterable[str] = ()) -> list[dict[str, Any]]:
    """What became of one erasure request or objection at each vendor, from the person's ledger entries:
    the deletions its kind caused (a deletion the request's reason names, requested at or after it, at a
    vendor it covers), the latest per vendor, with its status and receipt. A vendor the request names (or,
    for a request of every vendor, one of ``vendor_ids``: those the organiser subscribes to) without such
    a deletion is listed with status ``none`` (nothing deleted there yet: the person may never have been
    delivered, or the deletion is still on its way)."""
    reason = REQUEST_REASONS.get(str(request.get("kind")), "erasure_request")
    since = _aware(request.get("requested_at"))
    covered = request.get("vendor_ids")
    latest: dict[str, Document] = {}
    for entry in ledger:
        if entry.get("reason") != reason or (covered is not None and entry.get("vendor_id") not in covered):
            continue
        requested = _aware(entry.get("requested_at"))
        if since is not None and requested is not None and requested < since:
            continue
        vendor_id = str(entry.get("vendor_id"))
        if vendor_id not in latest or _order(entry) > _order(latest[vendor_id]):
            latest[vendor_id] = entry
    rows: list[dict[str, Any]] = []
    for vendor_id in sorted(set(latest) | set(covered if covered is not None else vendor_ids)):
        found = latest.get(vendor_id)
        receipt = (found or {}).get("receipt") or {}
        rows.append(
            {
                "vendor_id": vendor_id,
                "status": found["status"] if found else "none",
                "requested_at": found.get("requested_at") if found else None,
                "outcome": receipt.get("outcome"),
                "delivered_at": receipt.get("delivered_at"),
                "vendor_status": receipt.get("vendor_status"),
            }
        )
    return rows


def _aware(value: Any) -> datetime | None:
    if not isinstance(value, datetime):
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _order(entry: Document) -> tuple[datetime, int]:
    return (_aware(entry.get("requested_at")) or datetime.min.replace(tzinfo=UTC), int(entry.get("version") or 0))


def suppressed_for_vendor(suppressed: dict[str, dict[str, str]], vendor_id: str) -> dict[str, str]:
    """person id -> request kind, for the persons suppressed from one vendor."""
    found: dict[str, str] = {}
    for person_id, vendors in suppressed.items():
        kind = vendors.get(vendor_id) or vendors.get(ALL_VENDORS)
        if kind is not None:
            found[person_id] = kind
    return found


class TombstoneStore:
    def __init__(self, db: Database, *, retention: timedelta = DEFAULT_RETENTION) -> None:
        self.collection = db[TOMBSTONES]
        self.retention = retention

    async def record(
        self,
        tenant_id: str,
        person_id: str,
        *,
        purged: dict[str, int],
        vendors: list[str],
        deletions: int,
        session: Session | None = None,
    ) -> None:
        at = utcnow()
        await self.collection.update_one(
            {"_id": f"{tenant_id}:{person_id}"},
            {
                "$set": {
                    "tenant_id": tenant_id,
                    "person_id": person_id,
                    "purged_at": at,
                    "purged": purged,
                    "vendors": sorted(vendors),
                    "deletions": deletions,
                    "expires_at": at + self.retention,
                }
            },
            upsert=True,
            session=session,
        )

    async def get(self, tenant_id: str, person_id: str) -> Document | None:
        return await self.collection.find_one({"_id": f"{tenant_id}:{person_id}"})
