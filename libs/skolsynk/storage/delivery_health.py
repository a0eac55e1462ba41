"""How each (organiser, vendor) pair's deliveries fare (``delivery_health``): one document per pair with
``state`` (``ok`` or ``retrying``), ``since`` (the first failure of the current episode), the last error
as a code (``http_503``, ``timeout``, ``connection``, ``tls``, ``pin_mismatch``; never a vendor's text or
personal data), when it happened, how many batches failed in the episode, and the last successful
delivery. Written by the dispatchers (at most once a minute per pair while nothing changes); read by the
admin, the operator CLI and the dispatchers' metrics. A pair retrying for longer than the failing
threshold is **failing** (:func:`state_of`): the threshold is the reader's, so changing it needs no
rewrite.
"""

from __future__ import annotations

import builtins
from datetime import datetime, timedelta
from typing import Literal

from skolsynk.storage import Database, Document, IndexSpec, stored_time

DELIVERY_HEALTH = "delivery_health"
INDEXES = [IndexSpec(DELIVERY_HEALTH, (("tenant_id", 1), ("vendor_id", 1)), "tenant_vendor")]
#: A pair retrying this long is failing (the admin and the alert say so), unless the reader says otherwise.
DEFAULT_FAILING_AFTER = timedelta(minutes=15)

State = Literal["ok", "retrying", "failing", "unknown"]


def retrying_seconds(doc: Document, *, now: datetime) -> float:
    """How long the pair has been retrying; 0 while it is ok."""
    since = stored_time(doc.get("since")) if doc.get("state") == "retrying" else None
    return max((now - since).total_seconds(), 0.0) if since is not None else 0.0


def state_of(doc: Document | None, *, now: datetime, failing_after: timedelta = DEFAULT_FAILING_AFTER) -> State:
    """``unknown`` (nothing delivered yet), ``ok``, ``retrying`` or, retrying longer than ``failing_after``,
    ``failing``."""
    if doc is None:
        return "unknown"
    if doc.get("state") != "retrying":
        return "ok"
    return "failing" if retrying_seconds(doc, now=now) >= failing_after.total_seconds() else "retrying"


class DeliveryHealth:
    def __init__(self, db: Database) -> None:
        self.collection = db[DELIVERY_HEALTH]

    @staticmethod
    def _id(vendor_id: str, tenant_id: str) -> str:
        return f"{vendor_id}:{tenant_id}"

    async def succeeded(self, vendor_id: str, tenant_id: str, *, at: datetime) -> None:
        """A batch reached the vendor: the pair is ok (an episode of failures ends; its last error stays)."""
        await self.collection.update_one(
            {"_id": self._id(vendor_id, tenant_id)},
            {
                "$set": {"tenant_id": tenant_id, "vendor_id": vendor_id, "state": "ok", "last_success_at": at},
                "$unset": {"since": "", "failures": ""},
            },
            upsert=True,
        )

    async def failed(self, vendor_id: str, tenant_id: str, *, code: str, at: datetime, batches: int = 1) -> None:
        """A batch could not reach the vendor: the pair is retrying, since the first failure of the episode."""
        await self.collection.update_one(
            {"_id": self._id(vendor_id, tenant_id), "state": {"$ne": "retrying"}},
            {"$set": {"tenant_id": tenant_id, "vendor_id": vendor_id, "state": "retrying", "since": at}},
            upsert=False,
        )
        await self.collection.update_one(
            {"_id": self._id(vendor_id, tenant_id)},
            {
                "$set": {"tenant_id": tenant_id, "vendor_id": vendor_id, "last_error": code, "last_error_at": at},
                "$setOnInsert": {"state": "retrying", "since": at},
                "$inc": {"failures": batches},
            },
            upsert=True,
        )

    async def get(self, vendor_id: str, tenant_id: str) -> Document | None:
        return await self.collection.find_one({"_id": self._id(vendor_id, tenant_id)})

    async def for_tenant(self, tenant_id: str) -> dict[str, Document]:
        """The tenant's pairs, by vendor."""
        return {str(doc["vendor_id"]): doc async for doc in self.collection.find({"tenant_id": tenant_id})}

    async def of_vendors(self, vendor_ids: builtins.list[str]) -> builtins.list[Document]:
        return [doc async for doc in self.collection.find({"vendor_id": {"$in": vendor_ids}})]

    async def all(self) -> builtins.list[Document]:
        return [doc async for doc in self.collection.find({}).sort("_id", 1)]
