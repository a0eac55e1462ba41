"""The idempotency inbox: which messages a consumer has already applied.

A document ``{_id: "<consumer>:<message_id>", consumer, message_id, processed_at}`` is inserted in the
same transaction as the handler's state change. A redelivered message finds its id and is acked
without running again, so "at least once" delivery has its effect once. Entries expire by a TTL index
after ``inbox_ttl_seconds``, longer than any redelivery or retry window.

Only ids are stored: no payloads, no personal data.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from uuid import UUID

from pymongo.errors import BulkWriteError, DuplicateKeyError

from skolsynk.storage import Database, IndexSpec, Session
from skolsynk.storage.mongo import DUPLICATE_KEY

INBOX_COLLECTION = "inbox"


class AlreadyProcessed(Exception):
    """This consumer has applied the message before."""


class Inbox:
    def __init__(self, db: Database, *, consumer: str, ttl_seconds: int) -> None:
        self.collection = db[INBOX_COLLECTION]
        self.consumer = consumer
        self.ttl_seconds = ttl_seconds

    @staticmethod
    def index_specs(ttl_seconds: int) -> list[IndexSpec]:
        return [
            IndexSpec(
                INBOX_COLLECTION, [("processed_at", 1)], name="processed_at_ttl", expire_after_seconds=ttl_seconds
            )
        ]

    def _key(self, message_id: UUID) -> str:
        return f"{self.consumer}:{message_id}"

    async def seen(self, message_id: UUID) -> bool:
        return await self.collection.find_one({"_id": self._key(message_id)}, projection={"_id": 1}) is not None

    async def seen_many(self, message_ids: Iterable[UUID]) -> set[UUID]:
        """Which of these messages were applied before (one read for a batch)."""
        keys = [self._key(m) for m in message_ids]
        cursor = self.collection.find({"_id": {"$in": keys}}, projection={"message_id": 1})
        return {UUID(doc["message_id"]) async for doc in cursor}

    async def record_many(self, message_ids: Iterable[UUID], *, session: Session | None = None) -> None:
        """Record a batch as applied in one insert; raises :class:`AlreadyProcessed` if any was."""
        now = datetime.now(UTC)
        documents = [
            {"_id": self._key(m), "consumer": self.consumer, "message_id": str(m), "processed_at": now}
            for m in message_ids
        ]
        if not documents:
            return
        try:
            await self.collection.insert_many(documents, ordered=True, session=session)
        except DuplicateKeyError as error:
            raise AlreadyProcessed("a message of the batch") from error
        except BulkWriteError as error:
            if any(e.get("code") == DUPLICATE_KEY for e in error.details.get("writeErrors", [])):
                raise AlreadyProcessed("a message of the batch") from error
            raise

    async def record(self, message_id: UUID, *, session: Session | None = None) -> None:
        """Record the message as applied; raises :class:`AlreadyProcessed` if it was."""
        try:
            await self.collection.insert_one(
                {
                    "_id": self._key(message_id),
                    "consumer": self.consumer,
                    "message_id": str(message_id),
                    "processed_at": datetime.now(UTC),
                },
                session=session,
            )
        except DuplicateKeyError as error:
            raise AlreadyProcessed(str(message_id)) from error
