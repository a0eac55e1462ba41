"""What waits to reach each vendor, per (organiser, vendor) pair (``delivery_backlog``): how many changes
are pending and how long the oldest has waited, for the vendor's page, the overview, ``skolsynk status``
and the dispatchers' metrics.

Counted, never scanned: comparing the normaliser's vendor views with the delivery ledger would read every
entity of the organiser (27,000 documents per vendor at 20,000 persons) for one page view. Two documents
per pair instead, each with one writer, so neither ever conflicts with the other:

* ``{vendor}:{tenant}:queued``, written by the normaliser **in the transaction that writes the changes**
  (one update per batch): ``n``, the changes queued for the pair ever, and ``marks``, the last
  :data:`MARKS` batches as ``{at, n}`` (when, how many);
* ``{vendor}:{tenant}:settled``, written by the dispatchers (one ``$inc`` per tenant every few seconds,
  gathered over the batches meanwhile): ``n``, the
  changes that are done with (delivered, recorded in test mode, refused by the vendor, superseded or
  stale), and ``at``. A change still on the retry ladder is not settled; a duplicate of a change already
  done (the same version again: an outbox relay or broker redelivery) is not counted twice.

Pending is ``queued - settled``. The oldest pending change is taken to be the ``settled + 1``-th queued
(changes are delivered in the order queued, apart from retries): its batch's mark says when it was queued.
A backlog longer than the marks kept is reported as at least as old as the oldest mark
(``oldest_at_least``).

The counts can drift by the few changes a crash catches between a delivery and its count, or that are
dead-lettered without passing the deliverer. A dispatcher therefore **levels** them when the vendor is idle
(its queue and retry queues empty, nothing in flight in the process, nothing unsent in the outbox): every
pair's settled count is set to its queued count (:meth:`DeliveryBacklog.level`), so a quiet pair always
reads exact. No personal data: ids, counts and times only.
"""

from __future__ import annotations

import builtins
from dataclasses import dataclass
from datetime import datetime

from skolsynk.storage import Database, Document, IndexSpec, Session, stored_time

DELIVERY_BACKLOG = "delivery_backlog"
#: A vendor's pairs (the dispatchers' gauges), one pair (the admin), an organiser's pairs (``skolsynk status``).
INDEXES = [
    IndexSpec(DELIVERY_BACKLOG, (("vendor_id", 1), ("tenant_id", 1)), "vendor_tenant"),
    IndexSpec(DELIVERY_BACKLOG, (("tenant_id", 1),), "by_tenant"),
]
#: Batches whose time is kept per pair: the oldest pending change is dated exactly while the backlog spans
#: fewer batches than this (a full sync of a large organiser is hundreds; then "at least" this old).
MARKS = 200

QUEUED, SETTLED = "queued", "settled"


@dataclass(frozen=True)
class Backlog:
    """One pair's backlog: ``pending`` changes, the oldest queued at ``oldest_queued_at`` (or before, when
    ``oldest_at_least``); ``last_settled_at``: when a dispatcher last counted a change done."""

    tenant_id: str
    vendor_id: str
    queued: int
    settled: int
    oldest_queued_at: datetime | None
    oldest_at_least: bool
    last_settled_at: datetime | None

    @property
    def pending(self) -> int:
        return max(self.queued - self.settled, 0)

    def oldest_pending_seconds(self, *, now: datetime) -> float:
        if not self.pending or self.oldest_queued_at is None:
            return 0.0
        return max((now - self.oldest_queued_at).total_seconds(), 0.0)


def backlog_of(tenant_id: str, vendor_id: str, queued: Document | None, settled: Document | None) -> Backlog:
    """The pair's backlog from its two documents (either may be missing)."""
    queued_n = int((queued or {}).get("n", 0))
    settled_n = int((settled or {}).get("n", 0))
    oldest: datetime | None = None
    at_least = False
    if queued_n > settled_n:
        wanted = settled_n + 1  # the position (1-based, in the order queued) of the oldest pending change
        end = queued_n  # the position of the last change of the mark looked at
        marks = (queued or {}).get("marks") or []
        for mark in reversed(marks):
            size = int(mark.get("n", 0))
            oldest = stored_time(mark.get("at")) or oldest
            if end - size < wanted <= end:
                break
            end -= size
        else:
            at_least = bool(marks)  # older than every mark kept
    return Backlog(
        tenant_id,
        vendor_id,
        queued_n,
        settled_n,
        oldest,
        at_least,
        stored_time((settled or {}).get("at")),
    )


class DeliveryBacklog:
    def __init__(self, db: Database) -> None:
        self.collection = db[DELIVERY_BACKLOG]

    @staticmethod
    def _id(vendor_id: str, tenant_id: str, side: str) -> str:
        return f"{vendor_id}:{tenant_id}:{side}"

    async def queued(self, vendor_id: str, tenant_id: str, count: int, *, at: datetime, session: Session) -> None:
        """The normaliser queued ``count`` changes for the pair (inside the transaction that writes them)."""
        if count <= 0:
            return
        await self.collection.update_one(
            {"_id": self._id(vendor_id, tenant_id, QUEUED)},
            {
                "$set": {"vendor_id": vendor_id, "tenant_id": tenant_id, "side": QUEUED},
                "$inc": {"n": count},
                "$push": {"marks": {"$each": [{"at": at, "n": count}], "$slice": -MARKS}},
            },
            upsert=True,
            session=session,
        )

    async def settled(self, vendor_id: str, counts: dict[str, int], *, at: datetime) -> None:
        """A dispatcher is done with ``counts[tenant]`` changes of each tenant (one write per tenant)."""
        for tenant_id, count in counts.items():
            if count <= 0:
                continue
            await self.collection.update_one(
                {"_id": self._id(vendor_id, tenant_id, SETTLED)},
                {
                    "$set": {"vendor_id": vendor_id, "tenant_id": tenant_id, "side": SETTLED, "at": at},
                    "$inc": {"n": count},
                },
                upsert=True,
            )

    async def _pairs(self, query: Document) -> builtins.list[Backlog]:
        sides: dict[tuple[str, str], dict[str, Document]] = {}
        async for doc in self.collection.find(query):
            key = (str(doc["tenant_id"]), str(doc["vendor_id"]))
            sides.setdefault(key, {})[str(doc.get("side"))] = doc
        return [
            backlog_of(tenant, vendor, docs.get(QUEUED), docs.get(SETTLED))
            for (tenant, vendor), docs in sorted(sides.items())
        ]

    async def get(self, vendor_id: str, tenant_id: str) -> Backlog:
        found = await self._pairs({"vendor_id": vendor_id, "tenant_id": tenant_id})
        return found[0] if found else backlog_of(tenant_id, vendor_id, None, None)

    async def for_tenant(self, tenant_id: str) -> dict[str, Backlog]:
        """The tenant's pairs, by vendor."""
        return {b.vendor_id: b for b in await self._pairs({"tenant_id": tenant_id})}

    async def of_vendors(self, vendor_ids: builtins.list[str]) -> builtins.list[Backlog]:
        return await self._pairs({"vendor_id": {"$in": vendor_ids}})

    async def all(self) -> builtins.list[Backlog]:
        return await self._pairs({})

    async def level(self, vendor_id: str, backlogs: builtins.list[Backlog], *, at: datetime) -> int:
        """The vendor is idle: every pair read in ``backlogs`` (read *before* the idle check) has had
        everything it queued then settled. Sets each settled count to the queued count read; a change queued
        since is counted when it is done, as usual. Returns how many pairs were corrected."""
        corrected = 0
        for backlog in backlogs:
            if backlog.vendor_id != vendor_id or backlog.settled == backlog.queued:
                continue
            await self.collection.update_one(
                {"_id": self._id(vendor_id, backlog.tenant_id, SETTLED)},
                {
                    "$set": {
                        "vendor_id": vendor_id,
                        "tenant_id": backlog.tenant_id,
                        "side": SETTLED,
                        "n": backlog.queued,
                        "leveled_at": at,
                    }
                },
                upsert=True,
            )
            corrected += 1
        return corrected
