"""Notifications sent to organisers (``notifications``): one document per **episode** of a problem (for
example the deliveries of one organiser to one vendor failing), keyed by the problem and the moment it
began, so every admin replica that sees the same episode finds the same document and only one of them
sends. It records when the problem was noticed, when the e-mail went (to how many contacts; no
addresses), and when the recovery was noticed and its e-mail went. Written by the admin's notifier; read
by the admin UI."""

from __future__ import annotations

import builtins
from datetime import UTC, datetime
from typing import Any

from pymongo.errors import DuplicateKeyError

from skolsynk.storage import Database, Document, IndexSpec

NOTIFICATIONS = "notifications"
INDEXES = [
    IndexSpec(NOTIFICATIONS, (("tenant_id", 1), ("opened_at", -1)), "tenant_opened"),
    IndexSpec(NOTIFICATIONS, (("state", 1),), "state"),
]


def episode_id(tenant_id: str, kind: str, subject: str, began_at: datetime) -> str:
    began = began_at if began_at.tzinfo else began_at.replace(tzinfo=UTC)
    return f"{tenant_id}:{kind}:{subject}:{began.isoformat(timespec='milliseconds')}"


class NotificationLog:
    def __init__(self, db: Database) -> None:
        self.collection = db[NOTIFICATIONS]

    async def open(
        self, tenant_id: str, kind: str, subject: str, *, began_at: datetime, at: datetime, details: dict[str, Any]
    ) -> str | None:
        """Open the episode; its id, or None when it is open already (another replica, an earlier check)."""
        ident = episode_id(tenant_id, kind, subject, began_at)
        try:
            await self.collection.insert_one(
                {
                    "_id": ident,
                    "tenant_id": tenant_id,
                    "kind": kind,
                    "subject": subject,
                    "state": "open",
                    "began_at": began_at,
                    "opened_at": at,
                    "details": details,
                }
            )
        except DuplicateKeyError:
            return None
        return ident

    async def sent(self, ident: str, *, at: datetime, recipients: int, error: str | None = None) -> None:
        await self.collection.update_one(
            {"_id": ident}, {"$set": {"sent_at": at, "recipients": recipients, "send_error": error}}
        )

    async def open_episodes(self, kind: str) -> builtins.list[Document]:
        return [doc async for doc in self.collection.find({"kind": kind, "state": "open"})]

    async def close(self, ident: str, *, at: datetime) -> bool:
        """Close an open episode (the problem is over); False when another replica did."""
        result = await self.collection.update_one(
            {"_id": ident, "state": "open"}, {"$set": {"state": "closed", "recovered_at": at}}
        )
        return result.modified_count == 1

    async def recovery_sent(self, ident: str, *, at: datetime, recipients: int, error: str | None = None) -> None:
        await self.collection.update_one(
            {"_id": ident}, {"$set": {"recovery_sent_at": at, "recovery_recipients": recipients, "send_error": error}}
        )

    async def for_tenant(self, tenant_id: str, *, limit: int = 50) -> builtins.list[Document]:
        cursor = self.collection.find({"tenant_id": tenant_id}).sort("opened_at", -1).limit(limit)
        return [doc async for doc in cursor]
