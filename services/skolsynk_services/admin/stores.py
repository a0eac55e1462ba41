"""The admin service's own collections: organisers (tenants), the audit log and each subscription's way
to going live. The sources it writes are the source registry (:mod:`skolsynk.storage.sources`), which the
connectors read too.

Everything else the admin shows it reads through the owners' repositories in ``skolsynk.storage``."""

from __future__ import annotations

import re
import secrets
from datetime import UTC, datetime
from typing import Any

from skolsynk.storage import Database, Document, IndexSpec
from skolsynk.storage.admin import ADMIN_AUDIT, ADMIN_CONSENTS, ADMIN_TENANTS, SUBSCRIPTION_LIFECYCLE
from skolsynk.storage.sources import INDEXES as SOURCE_INDEXES

TENANTS = ADMIN_TENANTS
AUDIT = ADMIN_AUDIT
LIFECYCLE = SUBSCRIPTION_LIFECYCLE

INDEXES = [
    *SOURCE_INDEXES,
    IndexSpec(AUDIT, [("tenant_id", 1), ("at", -1)], name="by_tenant_time"),
    IndexSpec(ADMIN_CONSENTS, [("created_at", 1)], name="expire", expire_after_seconds=3600),
]

#: How long a consent started in the admin may take at Microsoft.
CONSENT_SECONDS = 3600


def utcnow() -> datetime:
    return datetime.now(UTC)


class TenantStore:
    def __init__(self, db: Database) -> None:
        self.collection = db[TENANTS]

    async def create(self, tenant_id: str, display_name: str, organisation_number: str | None) -> Document | None:
        """The new tenant, or None if the id is taken."""
        doc = {
            "_id": tenant_id,
            "display_name": display_name,
            "organisation_number": organisation_number,
            "created_at": utcnow(),
        }
        result = await self.collection.update_one({"_id": tenant_id}, {"$setOnInsert": doc}, upsert=True)
        return doc if result.upserted_id is not None else None

    async def get(self, tenant_id: str) -> Document | None:
        return await self.collection.find_one({"_id": tenant_id})

    async def set_contacts(self, tenant_id: str, emails: list[str]) -> None:
        """Who is told when the organiser's deliveries fail and recover (admin.notify)."""
        await self.collection.update_one({"_id": tenant_id}, {"$set": {"notify_emails": emails}})

    async def set_webhook(self, tenant_id: str, url: str | None, sealed_secret: str | None) -> None:
        """Where notifications are also posted, signed with the (sealed) secret; None: nowhere."""
        await self.collection.update_one(
            {"_id": tenant_id}, {"$set": {"notify_webhook_url": url, "notify_webhook_secret": sealed_secret}}
        )

    async def list(self, only: str | None = None, *, search: str = "", skip: int = 0, limit: int = 0) -> list[Document]:
        """Every organiser (or ``only`` that one) by id; ``search``: part of the id, the name or the organisation
        number, in any case; ``skip``/``limit`` a page (``limit`` 0: all)."""
        cursor = self.collection.find(self._criteria(only, search)).sort("_id", 1).skip(max(skip, 0))
        return await (cursor.limit(limit) if limit else cursor).to_list(None)

    async def count(self, only: str | None = None, *, search: str = "") -> int:
        return await self.collection.count_documents(self._criteria(only, search))

    @staticmethod
    def _criteria(only: str | None, search: str) -> dict[str, Any]:
        criteria: dict[str, Any] = {} if only is None else {"_id": only}
        if search:
            pattern = {"$regex": re.escape(search), "$options": "i"}
            criteria["$or"] = [{field: pattern} for field in ("_id", "display_name", "organisation_number")]
        return criteria


class AuditLog:
    """Who changed what, when, from what to what (admin actions only; never secrets)."""

    def __init__(self, db: Database) -> None:
        self.collection = db[AUDIT]

    async def record(
        self,
        *,
        actor: str,
        role: str,
        tenant_id: str | None,
        action: str,
        target: str,
        before: Any = None,
        after: Any = None,
        note: str | None = None,
        via: str | None = None,
    ) -> None:
        """``via``: the identity provider the actor signed in with (None: an API token)."""
        entry = {
            "at": utcnow(),
            "actor": actor,
            "role": role,
            "tenant_id": tenant_id,
            "action": action,
            "target": target,
            "before": before,
            "after": after,
            "note": note,
        }
        if via is not None:
            entry["via"] = via
        await self.collection.insert_one(entry)

    async def entries(
        self,
        tenant_id: str | None,
        *,
        limit: int = 200,
        skip: int = 0,
        search: str = "",
        actions: tuple[str, ...] = (),
    ) -> list[Document]:
        """The organiser's (or, ``tenant_id`` None, every) entry, newest first; ``search``: part of who, the
        organiser, the target or the note (any case), or one of ``actions`` (the caller's reading of the text)."""
        criteria = self._criteria(tenant_id, search, actions)
        cursor = self.collection.find(criteria, {"_id": 0}).sort("at", -1).skip(max(skip, 0)).limit(limit)
        return await cursor.to_list(None)

    async def count(self, tenant_id: str | None, *, search: str = "", actions: tuple[str, ...] = ()) -> int:
        return await self.collection.count_documents(self._criteria(tenant_id, search, actions))

    @staticmethod
    def _criteria(tenant_id: str | None, search: str, actions: tuple[str, ...]) -> dict[str, Any]:
        criteria: dict[str, Any] = {} if tenant_id is None else {"tenant_id": tenant_id}
        if search:
            pattern = {"$regex": re.escape(search), "$options": "i"}
            matches: list[dict[str, Any]] = [{f: pattern} for f in ("actor", "tenant_id", "target", "note")]
            if actions:
                matches.append({"action": {"$in": list(actions)}})
            criteria["$or"] = matches
        return criteria


class LifecycleStore:
    """Per subscription: since when it has been in test mode, whether its test report was reviewed,
    when it went live and who overrode the promotion gate."""

    def __init__(self, db: Database) -> None:
        self.collection = db[LIFECYCLE]

    @staticmethod
    def _id(tenant_id: str, vendor_id: str) -> str:
        return f"{tenant_id}:{vendor_id}"

    async def get(self, tenant_id: str, vendor_id: str) -> Document:
        doc = await self.collection.find_one({"_id": self._id(tenant_id, vendor_id)})
        return doc or {"_id": self._id(tenant_id, vendor_id), "test_started_at": None, "reviewed_at": None}

    async def test_started(self, tenant_id: str, vendor_id: str, at: datetime) -> None:
        """Test mode (re)starts: the clock restarts and an earlier review no longer counts."""
        await self.collection.update_one(
            {"_id": self._id(tenant_id, vendor_id)},
            {
                "$set": {"test_started_at": at, "reviewed_at": None, "reviewed_by": None, "live_at": None},
                "$setOnInsert": {"tenant_id": tenant_id, "vendor_id": vendor_id},
            },
            upsert=True,
        )

    async def review_needed(self, tenant_id: str, vendor_id: str) -> None:
        await self.collection.update_one(
            {"_id": self._id(tenant_id, vendor_id)}, {"$set": {"reviewed_at": None, "reviewed_by": None}}
        )

    async def reviewed(self, tenant_id: str, vendor_id: str, *, by: str, at: datetime) -> None:
        await self.collection.update_one(
            {"_id": self._id(tenant_id, vendor_id)}, {"$set": {"reviewed_at": at, "reviewed_by": by}}, upsert=True
        )

    async def went_live(self, tenant_id: str, vendor_id: str, *, by: str, at: datetime, override: str | None) -> None:
        await self.collection.update_one(
            {"_id": self._id(tenant_id, vendor_id)},
            {"$set": {"live_at": at, "live_by": by, "override_reason": override}},
            upsert=True,
        )


class ConsentStore:
    """Microsoft admin consents in flight: the random ``state`` sent along binds Microsoft's redirect back to
    the organiser and source it was started for (and is used once)."""

    def __init__(self, db: Database) -> None:
        self.collection = db[ADMIN_CONSENTS]

    async def start(self, tenant_id: str, source_id: str, display_name: str, *, actor: str) -> str:
        state = secrets.token_urlsafe(24)
        await self.collection.insert_one(
            {"_id": state, "tenant_id": tenant_id, "source_id": source_id, "display_name": display_name,
             "actor": actor, "created_at": utcnow()}
        )  # fmt: skip
        return state

    async def take(self, state: str) -> Document | None:
        """The consent started with ``state``, once (None: unknown, used or older than an hour)."""
        doc = await self.collection.find_one_and_delete({"_id": state})
        if doc is None:
            return None
        created = doc["created_at"]
        created = created if created.tzinfo is not None else created.replace(tzinfo=UTC)
        return doc if (utcnow() - created).total_seconds() <= CONSENT_SECONDS else None
