"""Slots of periodic work (collection ``schedules``): one document per slot, ``{_id: slot, next_at}``,
so that one replica of a service does the work per interval. Each slot has one writer: the normaliser's
date check (``date-check``), the GDPR service's deadline sweep (``gdpr-sweep``), each vendor's drift
check (``drift:<vendor>``)."""

from __future__ import annotations

from datetime import datetime, timedelta

from pymongo import ReturnDocument

from skolsynk.storage.mongo import Database

SCHEDULES = "schedules"


class Schedules:
    def __init__(self, db: Database) -> None:
        self.collection = db[SCHEDULES]

    async def ensure(self, slot: str, *, first_at: datetime) -> None:
        """Create the slot, due at ``first_at``, unless it exists."""
        await self.collection.update_one({"_id": slot}, {"$setOnInsert": {"next_at": first_at}}, upsert=True)

    async def claim(self, slot: str, *, now: datetime, interval: timedelta) -> bool:
        """Take the slot if it is due (moving it one interval on from ``now``); True for the one caller
        that took it."""
        claimed = await self.collection.find_one_and_update(
            {"_id": slot, "next_at": {"$lte": now}},
            {"$set": {"next_at": now + interval}},
            return_document=ReturnDocument.AFTER,
        )
        return claimed is not None
