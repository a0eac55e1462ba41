"""The vendor catalogue in the store (``vendors``): one document per vendor with its catalogue entry
(:class:`skolsynk.catalogue.VendorCatalogueEntry`, as JSON), a ``version`` raised on every change, and
``retired_at`` once an operator retired it. Written by the admin API (operators) and by
``skolsynk vendors import`` (the files of ``deploy/vendors``); read by the admin, the dispatchers and the
CLI, which follow changes by version (:class:`CatalogueFollower`).

A retired vendor keeps its document (subscriptions, the ledger and receipts still name it) and is served by
no dispatcher; saving it again revives it. An import never revives one: retiring is an operator's decision
that a file in a repository must not undo.
"""

from __future__ import annotations

import asyncio
import builtins
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError
from pymongo.errors import DuplicateKeyError

from skolsynk.catalogue import VendorCatalogueEntry, load_catalogue
from skolsynk.logging import get_logger
from skolsynk.storage import Database, Document, IndexSpec

log = get_logger(__name__)

VENDORS = "vendors"
INDEXES = [IndexSpec(VENDORS, (("retired_at", 1),), "retired_at")]

Outcome = Literal["created", "updated", "unchanged", "retired"]


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class StoredVendor:
    """A vendor as stored: its entry, version, and whether (and when) it was retired."""

    entry: VendorCatalogueEntry
    version: int
    retired_at: datetime | None
    updated_at: datetime
    updated_by: str

    @property
    def active(self) -> bool:
        return self.retired_at is None


def _stored(doc: Document) -> StoredVendor | None:
    """The document as a vendor; ``None`` (logged) when it no longer validates (a newer writer's fields)."""
    try:
        entry = VendorCatalogueEntry.model_validate(doc["entry"])
    except (KeyError, ValidationError):
        log.warning("vendor_document_invalid", vendor_id=str(doc.get("_id")))
        return None
    return StoredVendor(
        entry=entry,
        version=int(doc.get("version") or 0),
        retired_at=doc.get("retired_at"),
        updated_at=doc.get("updated_at") or utcnow(),
        updated_by=str(doc.get("updated_by") or ""),
    )


class VendorStore:
    def __init__(self, db: Database) -> None:
        self.collection = db[VENDORS]

    async def get(self, vendor_id: str) -> StoredVendor | None:
        doc = await self.collection.find_one({"_id": vendor_id})
        return _stored(doc) if doc else None

    async def all(self) -> builtins.list[StoredVendor]:
        """Every vendor, retired ones included, by id."""
        vendors = [_stored(doc) async for doc in self.collection.find({}).sort("_id", 1)]
        return [v for v in vendors if v is not None]

    async def active(self) -> dict[str, VendorCatalogueEntry]:
        """The catalogue: every vendor not retired, by id."""
        return {v.entry.vendor_id: v.entry for v in await self.all() if v.active}

    async def versions(self) -> dict[str, int]:
        """``vendor id -> version`` of the vendors not retired (cheap: what followers poll)."""
        cursor = self.collection.find({"retired_at": None}, {"version": 1})
        return {str(doc["_id"]): int(doc.get("version") or 0) async for doc in cursor}

    async def put(self, entry: VendorCatalogueEntry, *, by: str, revive: bool = True) -> Outcome:
        """Create or replace ``entry``. An unchanged entry writes nothing; a retired vendor is revived
        (``revive=False``: left retired, its entry still updated)."""
        now = utcnow()
        data = entry.model_dump(mode="json")
        current = await self.collection.find_one({"_id": entry.vendor_id})
        if current is None:
            try:
                await self.collection.insert_one(self._new(entry, by, now))
                return "created"
            except DuplicateKeyError:  # another process created it meanwhile: update it as it is now
                current = await self.collection.find_one({"_id": entry.vendor_id})
                assert current is not None
        retired = current.get("retired_at") is not None
        if current.get("entry") == data and (not retired or not revive):
            return "retired" if retired else "unchanged"
        changes: dict[str, Any] = {"entry": data, "updated_at": now, "updated_by": by}
        if revive:
            changes["retired_at"] = None
        await self.collection.update_one({"_id": entry.vendor_id}, {"$set": changes, "$inc": {"version": 1}})
        return "retired" if retired and not revive else "updated"

    @staticmethod
    def _new(entry: VendorCatalogueEntry, by: str, now: datetime) -> Document:
        return {
            "_id": entry.vendor_id,
            "entry": entry.model_dump(mode="json"),
            "version": 1,
            "retired_at": None,
            "updated_at": now,
            "updated_by": by,
            "created_at": now,
        }

    async def retire(self, vendor_id: str, *, by: str) -> bool:
        """Retire a vendor (no dispatcher serves it any more); False when there is none or it is retired."""
        result = await self.collection.update_one(
            {"_id": vendor_id, "retired_at": None},
            {"$set": {"retired_at": utcnow(), "updated_at": utcnow(), "updated_by": by}, "$inc": {"version": 1}},
        )
        return result.modified_count == 1

    async def import_entries(
        self, entries: Iterable[VendorCatalogueEntry], *, by: str, create_only: bool = False
    ) -> dict[str, Outcome]:
        """Bring the store in line with ``entries`` (the catalogue files): create, update, leave alone;
        never revive a retired vendor. ``create_only``: add the vendors the store does not have and touch no
        other (a service seeding the store from its folder at start)."""
        outcomes: dict[str, Outcome] = {}
        for entry in entries:
            if create_only:
                # Insert or nothing: services seeding at the same start race here, and the first one wins.
                try:
                    await self.collection.insert_one(self._new(entry, by, utcnow()))
                    outcomes[entry.vendor_id] = "created"
                except DuplicateKeyError:
                    outcomes[entry.vendor_id] = "unchanged"
                continue
            outcomes[entry.vendor_id] = await self.put(entry, by=by, revive=False)
        return outcomes


async def seed_catalogue(store: VendorStore, folder: Path | None) -> list[str]:
    """Add the vendors of the catalogue files in ``folder`` that the store does not have yet (a service's
    start; never overwriting or reviving one); the ids added. No folder, or none there: nothing."""
    if folder is None or not folder.is_dir():  # noqa: ASYNC240 (once, at start, a local folder)
        return []
    added = await store.import_entries(load_catalogue(folder).values(), by="catalogue-files", create_only=True)
    created = sorted(v for v, outcome in added.items() if outcome == "created")
    if created:
        log.info("vendor_catalogue_seeded", vendors=created)
    return created


class CatalogueFollower:
    """The catalogue as this process knows it (:attr:`entries`), refreshed from the store every
    ``poll_seconds`` and at once after a write of its own (:meth:`refresh`)."""

    def __init__(self, store: VendorStore, *, poll_seconds: float = 10.0) -> None:
        self.store = store
        self.poll_seconds = poll_seconds
        self.entries: dict[str, VendorCatalogueEntry] = {}
        self._versions: dict[str, int] = {}

    def get(self, vendor_id: str) -> VendorCatalogueEntry | None:
        return self.entries.get(vendor_id)

    def values(self) -> builtins.list[VendorCatalogueEntry]:
        return builtins.list(self.entries.values())

    async def refresh(self) -> bool:
        """Read the catalogue again if a version moved; True when it changed."""
        versions = await self.store.versions()
        if versions == self._versions:
            return False
        self.entries = await self.store.active()
        self._versions = versions
        return True

    async def run_forever(self) -> None:
        while True:
            await asyncio.sleep(self.poll_seconds)
            try:
                await self.refresh()
            except Exception:  # the store is away for a moment: the next poll tries again
                log.warning("vendor_catalogue_refresh_failed", exc_info=True)
