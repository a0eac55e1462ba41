"""The transactional outbox: a state change and the messages it causes are committed together.

Writers call :meth:`Outbox.add` (or :meth:`Outbox.add_many` for a batch: one ``insert_many``) with the
session of their transaction, and :meth:`Outbox.notify` after the commit. The :class:`OutboxRelay`
(one per process; any number of replicas may run) claims pending entries with a lease, publishes them
with confirms and marks them sent. If a process dies after the commit but before the publish, or after
the publish but before marking, the lease expires and another relay publishes the entry again: the
message is delivered at least once and its consumers' inboxes make the effect exactly once (the
message id is the outbox id and never changes).

Entry: ``{_id: message_id, exchange, routing_key, envelope, headers, created_at, lease_until,
lease_owner, attempts, sent_at}``. Sent entries expire after ``outbox_retention_seconds`` (TTL).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from skolsynk.contracts.envelope import Envelope
from skolsynk.logging import get_logger
from skolsynk.messaging.publisher import OutgoingMessage, Publisher, UnroutableMessage
from skolsynk.observability import Metrics
from skolsynk.storage import Database, Document, IndexSpec, Session

log = get_logger(__name__)

OUTBOX_COLLECTION = "outbox"
NEVER = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class OutboxEntry:
    """One message to write with :meth:`Outbox.add_many`."""

    envelope: Envelope
    exchange: str
    routing_key: str
    headers: Mapping[str, Any] = field(default_factory=dict)


class Outbox:
    """The write side, used inside a transaction."""

    def __init__(self, db: Database) -> None:
        self.collection = db[OUTBOX_COLLECTION]
        self._wakeup = asyncio.Event()

    @staticmethod
    def index_specs(retention_seconds: int) -> list[IndexSpec]:
        return [
            IndexSpec(OUTBOX_COLLECTION, [("sent_at", 1), ("lease_until", 1), ("created_at", 1)], name="pending"),
            IndexSpec(
                OUTBOX_COLLECTION,
                [("sent_at", 1)],
                name="sent_at_ttl",
                expire_after_seconds=retention_seconds,
                partial_filter={"sent_at": {"$type": "date"}},
            ),
        ]

    @staticmethod
    def entry(
        envelope: Envelope, *, exchange: str, routing_key: str, headers: Mapping[str, Any] | None = None
    ) -> Document:
        """The outbox document of one message (what :meth:`add` and :meth:`add_many` insert)."""
        return {
            "_id": str(envelope.message_id),
            "exchange": exchange,
            "routing_key": routing_key,
            "envelope": envelope.model_dump(mode="json"),
            "headers": dict(headers or {}),
            "created_at": datetime.now(UTC),
            "lease_until": NEVER,
            "lease_owner": None,
            "attempts": 0,
            "sent_at": None,
        }

    async def add(
        self,
        envelope: Envelope,
        *,
        exchange: str,
        routing_key: str,
        session: Session,
        headers: Mapping[str, Any] | None = None,
    ) -> None:
        await self.collection.insert_one(
            self.entry(envelope, exchange=exchange, routing_key=routing_key, headers=headers), session=session
        )

    async def add_many(self, entries: Iterable[OutboxEntry], *, session: Session) -> int:
        """Write many messages with one ``insert_many`` in the caller's transaction (same documents as
        :meth:`add`). Returns how many were written."""
        documents = [
            self.entry(e.envelope, exchange=e.exchange, routing_key=e.routing_key, headers=e.headers) for e in entries
        ]
        if documents:
            await self.collection.insert_many(documents, ordered=True, session=session)
        return len(documents)

    def notify(self) -> None:
        """Wake the relay in this process (call after the transaction committed). Costs nothing but
        setting a flag: any number of notifies before the relay's next pass make one pass."""
        self._wakeup.set()

    async def wait_for_work(self, timeout: float) -> bool:
        """Wait for a notify or the timeout; returns whether a notify woke us."""
        woken = False
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._wakeup.wait()
                woken = True
        self._wakeup.clear()
        return woken

    async def pending_count(self) -> int:
        return await self.collection.count_documents({"sent_at": None})


class OutboxRelay:
    """Publishes committed outbox entries. Start it as a background task with :meth:`run`.

    Idle means no store work: the relay sleeps until a writer in its process calls
    :meth:`Outbox.notify`; without notifies it looks for due entries (a dead writer's, an expired
    lease) only on a timer that backs off from ``poll_interval_seconds`` to ``idle_poll_max_seconds``.
    A notify is coalesced with those that follow within ``coalesce_seconds``, so a writer committing
    one entry at a time costs one claim per burst, not one per entry. The pending gauge is counted at
    most once per ``pending_gauge_interval_seconds`` and only after the relay has had work (or while
    the last count was not zero), never on every pass.
    """

    def __init__(
        self,
        outbox: Outbox,
        publisher: Publisher,
        metrics: Metrics,
        *,
        batch_size: int = 200,
        lease_seconds: float = 30.0,
        poll_interval_seconds: float = 1.0,
        idle_poll_max_seconds: float | None = None,
        coalesce_seconds: float = 0.02,
        pending_gauge_interval_seconds: float = 5.0,
    ) -> None:
        self._outbox = outbox
        self._publisher = publisher
        self._metrics = metrics
        self._batch_size = batch_size
        self._lease = timedelta(seconds=lease_seconds)
        self._poll_interval = poll_interval_seconds
        idle_max = lease_seconds if idle_poll_max_seconds is None else idle_poll_max_seconds
        self._idle_poll_max = max(poll_interval_seconds, idle_max)
        self._coalesce = coalesce_seconds
        self._gauge_interval = pending_gauge_interval_seconds
        self._owner = uuid.uuid4().hex
        self._claims = 0
        self._stopping = asyncio.Event()
        #: Whether the pending gauge may be out of date, and when it was last counted (monotonic).
        self._gauge_stale = True
        self._gauge_value = 0
        self._gauge_counted_at = -math.inf
        #: Store round trips made by this relay (claims, marks, counts): what tests assert on when idle.
        self.round_trips = 0

    async def _claim(self) -> list[Document]:
        """Lease up to ``batch_size`` due entries, oldest first. The lease is one conditional update of
        the batch (each document is updated atomically, and only while its lease is free), tagged with
        a token of this claim, so two relays never hold the same entry at once. One update per batch,
        not one per entry: per-entry round trips made the relay the bottleneck of a large projection
        (docs/benchmarks.md). The candidates are read whole, so an uncontended claim is two round
        trips; only when another relay took some of them are ours read back by the token."""
        collection = self._outbox.collection
        now = datetime.now(UTC)
        self.round_trips += 1
        candidates = await (
            collection.find({"sent_at": None, "lease_until": {"$lt": now}})
            .sort("created_at", 1)
            .limit(self._batch_size)
            .to_list(None)
        )
        if not candidates:
            return []
        ids = [candidate["_id"] for candidate in candidates]
        self._claims += 1
        token = f"{self._owner}:{self._claims}"
        self.round_trips += 1
        result = await collection.update_many(
            {"_id": {"$in": ids}, "sent_at": None, "lease_until": {"$lt": now}},
            {"$set": {"lease_until": now + self._lease, "lease_owner": token}, "$inc": {"attempts": 1}},
        )
        if result.modified_count == len(ids):
            return candidates
        if result.modified_count == 0:
            return []
        self.round_trips += 1
        claimed = {
            entry["_id"] async for entry in collection.find({"_id": {"$in": ids}, "lease_owner": token}, {"_id": 1})
        }
        return [candidate for candidate in candidates if candidate["_id"] in claimed]

    async def relay_once(self) -> int:
        """Publish one batch; returns how many entries were confirmed and marked sent."""
        return (await self._relay_batch())[1]

    async def _relay_batch(self) -> tuple[int, int]:
        """Publish one batch; returns how many entries were claimed and how many confirmed."""
        entries = await self._claim()
        if not entries:
            return 0, 0
        self._gauge_stale = True
        messages = [
            OutgoingMessage(
                envelope=Envelope.model_validate(entry["envelope"]),
                exchange=entry["exchange"],
                routing_key=entry["routing_key"],
                headers=entry.get("headers") or {},
            )
            for entry in entries
        ]
        results = await self._publisher.publish_many(messages)
        confirmed = [entry["_id"] for entry, error in zip(entries, results, strict=True) if error is None]
        for entry, error in zip(entries, results, strict=True):
            if isinstance(error, UnroutableMessage):
                # A topology error, not a transient one: keep the entry and retry after the lease so an
                # operator can fix the binding; it is visible in the pending metric meanwhile.
                log.error("outbox_entry_unroutable", message_id=entry["_id"], exchange=entry["exchange"])
            elif error is not None:
                log.warning("outbox_publish_failed", message_id=entry["_id"], error_type=type(error).__name__)
        if confirmed:
            self.round_trips += 1
            await self.mark_sent(confirmed)
        self._metrics.outbox_relayed.inc(len(confirmed))
        return len(entries), len(confirmed)

    async def mark_sent(self, ids: list[Any]) -> None:
        await self._outbox.collection.update_many(
            {"_id": {"$in": ids}}, {"$set": {"sent_at": datetime.now(UTC), "lease_owner": None}}
        )

    def _gauge_due_in(self) -> float | None:
        """Seconds until the pending gauge should be counted again; None when it is up to date."""
        if not self._gauge_stale and self._gauge_value == 0:
            return None
        return max(0.0, self._gauge_counted_at + self._gauge_interval - time.monotonic())

    async def _refresh_gauge_if_due(self) -> None:
        due_in = self._gauge_due_in()
        if due_in is None or due_in > 0:
            return
        self._gauge_counted_at = time.monotonic()  # a failed count is tried again after the interval
        self.round_trips += 1
        self._gauge_value = await self._outbox.pending_count()
        self._gauge_stale = False
        self._metrics.outbox_pending.set(self._gauge_value)

    async def run(self) -> None:
        """Relay until :meth:`stop`. Errors are logged and retried; the loop never dies of one."""
        idle_poll = self._poll_interval
        look = True  # claim on this turn (False when only the gauge's timer woke us)
        next_look = 0.0
        while not self._stopping.is_set():
            claimed = confirmed = 0
            try:
                if look:
                    claimed, confirmed = await self._relay_batch()
                await self._refresh_gauge_if_due()
            except Exception:
                log.exception("outbox_relay_error")
                idle_poll = self._poll_interval
            if self._stopping.is_set():
                break
            if claimed >= self._batch_size and confirmed:
                look = True
                continue  # a full batch went out: more may be due right away
            if claimed:
                idle_poll = self._poll_interval
            if look:
                next_look = time.monotonic() + idle_poll
            # Drained: sleep until notified, the next look for orphaned entries, or the gauge's turn.
            timeout = next_look - time.monotonic()
            gauge_due_in = self._gauge_due_in()
            if gauge_due_in is not None:
                timeout = min(timeout, gauge_due_in)
            if await self._outbox.wait_for_work(max(timeout, 0.0)):
                look, idle_poll = True, self._poll_interval
                if self._coalesce > 0 and not self._stopping.is_set():
                    await asyncio.sleep(self._coalesce)  # the rest of the burst commits meanwhile
            elif time.monotonic() >= next_look:
                look, idle_poll = True, min(idle_poll * 2, self._idle_poll_max)
            else:
                look = False

    def stop(self) -> None:
        self._stopping.set()
        self._outbox.notify()
