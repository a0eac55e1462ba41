"""The transactional outbox: a state change and the messages it causes are committed together.

Writers call :meth:`Outbox.add` (or :meth:`Outbox.add_many` for a batch) with the session of their
transaction, and :meth:`Outbox.notify` after the commit. The :class:`OutboxRelay` (one per process; any
number of replicas may run) claims pending documents with a lease, publishes their messages with
confirms and marks them sent. If a process dies after the commit but before the publish, or after
the publish but before marking, the lease expires and another relay publishes the messages again: a
message is delivered at least once and its consumers' inboxes (or, for a dispatcher, its ledger's
versions) make the effect exactly once (a message's id never changes).

A message from :meth:`add` is one document: ``{_id: message_id, exchange, routing_key, envelope, headers,
created_at, lease_until, lease_owner, attempts, sent_at}``. A batch of messages from :meth:`add_many`
is one *bundle* document: ``{_id: "bundle:<uuid>", messages: [{_id: message_id, exchange,
routing_key, envelope, headers}, ...], size, created_at, lease_until, lease_owner, attempts,
sent_at}``, leased, published and marked sent as a whole. Bundles keep the number of pending
documents (what every claim and the pending count look through) at the number of batches, not of
messages: on the Mongo wire server a claim's cost grows with the pending documents (about 0.5 s for
200 of 20,000), and the claim and mark of a message were two of the 5.7 document writes of a vendor
change (docs/benchmarks.md). Sent documents expire after ``outbox_retention_seconds`` (TTL).
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

from pymongo import UpdateMany

from skolsynk.contracts.envelope import Envelope
from skolsynk.logging import get_logger
from skolsynk.messaging.publisher import OutgoingMessage, Publisher, UnroutableMessage
from skolsynk.observability import Metrics
from skolsynk.storage import Database, Document, IndexSpec, Session

log = get_logger(__name__)

OUTBOX_COLLECTION = "outbox"
NEVER = datetime(1970, 1, 1, tzinfo=UTC)
#: The ``_id`` prefix of a bundle document (several messages written together by :meth:`Outbox.add_many`).
BUNDLE_PREFIX = "bundle:"


@dataclass(frozen=True)
class OutboxEntry:
    """One message to write with :meth:`Outbox.add_many`."""

    envelope: Envelope
    exchange: str
    routing_key: str
    headers: Mapping[str, Any] = field(default_factory=dict)
    #: Payload fields removed once the message is sent (by whichever relay sends it): what no one needs
    #: after the broker confirmed it and would otherwise stay until the outbox's TTL (a vendor change's
    #: resource, the EGIL receiver's source pages' records: personal data).
    forget_when_sent: tuple[str, ...] = ()


class Outbox:
    """The write side, used inside a transaction."""

    def __init__(self, db: Database) -> None:
        self.collection = db[OUTBOX_COLLECTION]
        self._wakeup = asyncio.Event()

    @staticmethod
    def index_specs(retention_seconds: int) -> list[IndexSpec]:
        return [
            IndexSpec(OUTBOX_COLLECTION, [("sent_at", 1), ("lease_until", 1), ("created_at", 1)], name="pending"),
            # The GDPR purge: a person's messages, single and in bundles (see forget_sent).
            IndexSpec(OUTBOX_COLLECTION, [("envelope.payload.entity_id", 1)], name="by_entity"),
            IndexSpec(OUTBOX_COLLECTION, [("messages.envelope.payload.entity_id", 1)], name="by_bundled_entity"),
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
        """The outbox document of one message (what :meth:`add` inserts)."""
        return {**_message(envelope, exchange, routing_key, headers), **_pending()}

    @staticmethod
    def bundle(entries: list[OutboxEntry]) -> Document:
        """One document holding several messages, in the order they are to be published."""
        return {
            "_id": f"{BUNDLE_PREFIX}{uuid.uuid4()}",
            "messages": [
                _message(e.envelope, e.exchange, e.routing_key, e.headers, e.forget_when_sent) for e in entries
            ],
            "size": len(entries),
            **_pending(),
        }

    @staticmethod
    def messages_of(document: Document) -> list[Document]:
        """The messages of an outbox document (each with ``_id``, ``exchange``, ``routing_key``,
        ``envelope`` and ``headers``): a bundle's, or the single message the document is."""
        messages: list[Document] = document.get("messages", [document])
        return messages

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
        """Write many messages in the caller's transaction with one insert of one bundle document.
        Returns how many messages were written."""
        batch = list(entries)
        if batch:
            await self.collection.insert_one(self.bundle(batch), session=session)
        return len(batch)

    async def forget_sent(self, tenant_id: str, entity_ids: list[str], *, session: Session | None = None) -> int:
        """Remove what sent messages still say about these entities of the tenant (the GDPR purge). Single
        messages about them are deleted. A bundle's messages lose their personal data when the bundle is
        sent (``forget_when_sent``), so a sent bundle is written only when a message about them there
        forgot nothing (written before vendor changes forgot their resource, until the outbox's TTL takes
        it): then it loses those messages and keeps the others. Unsent ones stay (they are still to be
        delivered). Found through the entity indexes by the ids alone, then written by ``_id``: on the
        Mongo wire server any other filter walks the whole outbox. Returns how many documents were
        deleted or changed."""
        wanted = sorted(set(entity_ids))
        projection = {"sent_at": 1, "envelope.tenant_id": 1}
        singles = await self.collection.find(
            {"envelope.payload.entity_id": {"$in": wanted}}, projection, session=session
        ).to_list(None)
        doomed = [d["_id"] for d in singles if d.get("sent_at") and d["envelope"].get("tenant_id") == tenant_id]
        changed = 0
        if doomed:
            changed += (await self.collection.delete_many({"_id": {"$in": doomed}}, session=session)).deleted_count
        bundles = await self.collection.find(
            {"messages.envelope.payload.entity_id": {"$in": wanted}},
            {
                "sent_at": 1,
                "messages.forget": 1,
                "messages.envelope.tenant_id": 1,
                "messages.envelope.payload.entity_id": 1,
            },
            session=session,
        ).to_list(None)
        about = {"envelope.tenant_id": tenant_id, "envelope.payload.entity_id": {"$in": wanted}}
        wanted_ids = set(wanted)
        for bundle in bundles:
            if bundle.get("sent_at") and _still_telling(bundle, tenant_id, wanted_ids):
                result = await self.collection.update_one(
                    {"_id": bundle["_id"]}, {"$pull": {"messages": about}}, session=session
                )
                changed += result.modified_count
        return changed

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
        """Messages not yet sent (a bundle counts its messages)."""
        cursor = await self.collection.aggregate(
            [{"$match": {"sent_at": None}}, {"$group": {"_id": None, "n": {"$sum": {"$ifNull": ["$size", 1]}}}}]
        )
        totals = await cursor.to_list(None)
        return int(totals[0]["n"]) if totals else 0


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
        """Lease due documents, oldest first, up to ``batch_size`` messages (at least one document,
        however large its bundle). The lease is one conditional update of the chosen documents (each
        is updated atomically, and only while its lease is free), tagged with a token of this claim,
        so two relays never hold the same document at once; the documents are then read by ``_id``
        and kept where the token is ours. Three round trips per claim, whatever the batch holds."""
        collection = self._outbox.collection
        now = datetime.now(UTC)
        due = {"sent_at": None, "lease_until": {"$lt": now}}
        self.round_trips += 1
        candidates = await collection.find(due, {"size": 1}).sort("created_at", 1).limit(self._batch_size).to_list(None)
        chosen: list[Any] = []
        messages = 0
        for candidate in candidates:
            size = int(candidate.get("size", 1))
            if chosen and messages + size > self._batch_size:
                break
            chosen.append(candidate["_id"])
            messages += size
        if not chosen:
            return []
        self._claims += 1
        token = f"{self._owner}:{self._claims}"
        self.round_trips += 1
        result = await collection.update_many(
            {"_id": {"$in": chosen}, **due},
            {"$set": {"lease_until": now + self._lease, "lease_owner": token}, "$inc": {"attempts": 1}},
        )
        if result.modified_count == 0:
            return []
        self.round_trips += 1
        claimed = await collection.find({"_id": {"$in": chosen}}).to_list(None)
        order = {document_id: position for position, document_id in enumerate(chosen)}
        return sorted((d for d in claimed if d.get("lease_owner") == token), key=lambda d: order[d["_id"]])

    async def relay_once(self) -> int:
        """Publish one batch; returns how many messages were confirmed and marked sent."""
        return (await self._relay_batch())[1]

    async def _relay_batch(self) -> tuple[int, int]:
        """Publish one batch; returns how many messages were claimed and how many confirmed (a
        document is marked sent when every one of its messages was confirmed; otherwise all of them
        go again after the lease, and their consumers drop what they already applied)."""
        documents = await self._claim()
        if not documents:
            return 0, 0
        self._gauge_stale = True
        parts = [Outbox.messages_of(document) for document in documents]
        messages = [
            OutgoingMessage(
                envelope=Envelope.model_validate(message["envelope"]),
                exchange=message["exchange"],
                routing_key=message["routing_key"],
                headers=message.get("headers") or {},
            )
            for part in parts
            for message in part
        ]
        results = iter(await self._publisher.publish_many(messages))
        sent: list[Document] = []
        confirmed = 0
        for document, part in zip(documents, parts, strict=True):
            failed = 0
            for message in part:
                error = next(results)
                if isinstance(error, UnroutableMessage):
                    # A topology error, not a transient one: keep the document and retry after the lease
                    # so an operator can fix the binding; it is visible in the pending metric meanwhile.
                    log.error("outbox_entry_unroutable", message_id=message["_id"], exchange=message["exchange"])
                elif error is not None:
                    log.warning("outbox_publish_failed", message_id=message["_id"], error_type=type(error).__name__)
                failed += error is not None
            if not failed:
                sent.append(document)
                confirmed += len(part)
        if sent:
            self.round_trips += 1
            await self.mark_sent(sent)
        self._metrics.outbox_relayed.inc(confirmed)
        return len(messages), confirmed

    async def mark_sent(self, documents: list[Document]) -> None:
        """Mark these documents sent, in one round trip. A message that asked to forget fields once
        sent (``OutboxEntry.forget_when_sent``: a vendor change's resource, a source page's records) has
        them removed in the same write, by array filters (the server removes them in place; nothing is
        sent back): sent messages keep ids and no personal data, so the GDPR purge has nothing to take
        out of a sent bundle, and never writes one (a bundle holds many persons: purges writing it
        conflicted with each other)."""
        marked = {"sent_at": datetime.now(UTC), "lease_owner": None}
        forgetting = {d["_id"]: sorted(_forgotten_names(d)) for d in documents}
        names = sorted({name for found in forgetting.values() for name in found})
        if not names:
            await self._outbox.collection.update_many({"_id": {"$in": list(forgetting)}}, {"$set": marked})
            return
        filters = {name: f"f{position}" for position, name in enumerate(names)}
        operations = [
            UpdateMany(
                {"_id": {"$in": [i for i, found in forgetting.items() if found]}},
                {
                    "$set": marked,
                    "$unset": {f"messages.$[{filters[name]}].envelope.payload.{name}": "" for name in names},
                },
                array_filters=[{f"{identifier}.forget": name} for name, identifier in filters.items()],
            )
        ]
        others = [i for i, found in forgetting.items() if not found]
        if others:
            operations.append(UpdateMany({"_id": {"$in": others}}, {"$set": marked}))
        await self._outbox.collection.bulk_write(operations, ordered=False)

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


def _message(
    envelope: Envelope,
    exchange: str,
    routing_key: str,
    headers: Mapping[str, Any] | None,
    forget: tuple[str, ...] = (),
) -> Document:
    message = {
        "_id": str(envelope.message_id),
        "exchange": exchange,
        "routing_key": routing_key,
        "envelope": envelope.model_dump(mode="json"),
        "headers": dict(headers or {}),
    }
    return {**message, "forget": list(forget)} if forget else message


def _still_telling(bundle: Document, tenant_id: str, entity_ids: set[str]) -> bool:
    """Whether a sent bundle holds a message about one of these entities of the tenant that forgot
    nothing when it was sent (what the GDPR purge must take out)."""
    for message in bundle.get("messages", ()):
        envelope = message.get("envelope") or {}
        about = (envelope.get("payload") or {}).get("entity_id") in entity_ids
        if about and envelope.get("tenant_id") == tenant_id and not message.get("forget"):
            return True
    return False


def _forgotten_names(document: Document) -> set[str]:
    """The payload fields the messages of a bundle forget once sent (a single message forgets none)."""
    return {name for message in document.get("messages", ()) for name in message.get("forget") or ()}


def _pending() -> Document:
    """The lease and delivery fields of a document not yet claimed or sent."""
    return {"created_at": datetime.now(UTC), "lease_until": NEVER, "lease_owner": None, "attempts": 0, "sent_at": None}
