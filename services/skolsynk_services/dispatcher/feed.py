"""Compacting a queue vendor's unread feed after deletes: an upsert that waits in the feed behind a later
delete of the same entity is taken out, so that an erased person's or a leaver's name, e-mail address and
login do not wait in the broker until the feed's retention expires (issue 24, docs/gdpr.md).

RabbitMQ cannot remove one message from the middle of a queue, so a compaction pass takes messages from
the head (``basic.get``, unacknowledged), publishes again, in the same order and with what is left of
their retention, every message it keeps, and only then acknowledges what it took. What it drops is an
``upsert`` of a (tenant, entity) whose delete of a higher version this dispatcher forwarded. The delete
itself stays: the vendor may hold an earlier upsert from before it stopped reading.

Replay safety (the feed's contract, docs/asyncapi.yaml): a pass that dies after publishing and before
acknowledging leaves a message twice (same ``message_id`` and version: the vendor drops the second); a
message published by the normal flow during a pass lands between kept ones, which only moves a reference
ahead of the entity it names, something a consumer already tolerates; two replicas compacting at once
each hold the messages they took, so nothing is lost or applied twice.

A pass runs only when the feed has messages and **no consumer**: a vendor that reads gets the upsert and
the delete right after it, and compacting under a live consumer would only reorder what it reads. What is
to be compacted is held in memory; after a restart, what was pending expires with the feed's retention
(the backstop, at most the deletion deadline).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage

from skolsynk.contracts.vendor import VendorChange
from skolsynk.logging import get_logger
from skolsynk.messaging.publisher import copy_message
from skolsynk_services.dispatcher.metrics import FeedCompactionMetrics

log = get_logger(__name__)

#: Header of every feed message: when it was published into the feed (epoch milliseconds). A compaction
#: pass gives a message it publishes again what is left of its retention, counted from this.
HEADER_QUEUED_AT = "x-skolsynk-queued-at"

#: Messages taken (and held unacknowledged) before the kept ones are published again and the batch is
#: acknowledged: bounds memory and what a dying pass leaves twice.
CHUNK = 500

#: Longest wait for the broker to confirm the compactor's connection's close (it returns what a pass held).
CLOSE_TIMEOUT_SECONDS = 5.0

Key = tuple[str, str]  # (tenant, entity id)


@dataclass(frozen=True)
class CompactionPass:
    """What one pass did (for logs, metrics and tests)."""

    taken: int
    dropped: int
    expired: int
    skipped: str | None = None  # why no pass ran: "no_messages", "consumed", "nothing_pending"


class FeedCompactor:
    """Collects the deletes forwarded to one vendor's feed (or, with ``queue_of``, to its per-organiser
    feeds) and, every ``interval_seconds``, takes the upserts they supersede out of each feed nobody is
    reading."""

    def __init__(
        self,
        vendor_id: str,
        feed_queue: str,
        *,
        retention_seconds: float,
        interval_seconds: float,
        amqp_url: str,
        metrics: FeedCompactionMetrics | None = None,
        queue_of: Callable[[str], str] | None = None,
    ) -> None:
        self.vendor_id = vendor_id
        self.feed_queue = feed_queue
        #: tenant -> its own feed (``feed_per_organiser``); None: every tenant's deletes are in ``feed_queue``.
        self.queue_of = queue_of
        self.retention_seconds = retention_seconds
        self.interval_seconds = interval_seconds
        self.metrics = metrics
        #: Deletes forwarded and not yet compacted: (tenant, entity) -> the delete's version.
        self.pending: dict[Key, int] = {}
        self._wake = asyncio.Event()
        self._amqp_url = amqp_url
        #: A connection of the compactor's own, and one channel on it for every pass, kept open between passes
        #: (see :meth:`_pass`). Not the service's connection: a quorum queue settling what a pass took has
        #: been seen to hold a connection's close for minutes, and the service must stop in its budget.
        self._connection: AbstractConnection | None = None
        self._channel: AbstractChannel | None = None

    def deleted(self, tenant_id: str, entity_id: str, version: int) -> None:
        """A delete went into the feed: upserts of the entity below ``version`` are now moot."""
        key = (tenant_id, entity_id)
        if version > self.pending.get(key, 0):
            self.pending[key] = version
        self._wake.set()

    async def run_forever(self) -> None:
        """The background task: a pass at most every ``interval_seconds``, only when deletes are pending."""
        while True:
            await self._wake.wait()
            await asyncio.sleep(self.interval_seconds)  # deletes of one change set go in one pass
            self._wake.clear()
            try:
                await self.compact()
            except Exception:  # the broker: the pending deletes stay for the next pass
                log.exception("feed_compaction_failed", vendor_id=self.vendor_id)
                self._wake.set()

    async def compact(self) -> CompactionPass:
        """One pass over the feed as it is now (see the module docstring)."""
        if not self.pending:
            return CompactionPass(0, 0, 0, skipped="nothing_pending")
        superseding = dict(self.pending)
        try:
            if self._connection is None or self._connection.is_closed:
                self._connection = await aio_pika.connect(self._amqp_url)
            if self._channel is None or self._channel.is_closed:
                self._channel = await self._connection.channel(publisher_confirms=True)
            by_queue: dict[str, dict[Key, int]] = {}
            for key, version in superseding.items():
                queue = self.queue_of(key[0]) if self.queue_of is not None else self.feed_queue
                by_queue.setdefault(queue, {})[key] = version
            passes = [await self._pass(self._channel, queue, deletes) for queue, deletes in sorted(by_queue.items())]
            ran = [p for p in passes if p.skipped is None]
            result = (
                CompactionPass(sum(p.taken for p in ran), sum(p.dropped for p in ran), sum(p.expired for p in ran))
                if ran
                else passes[0]
            )
        except BaseException:
            # What the pass holds goes back to the feed with the connection (in the broker's order).
            await self.close()
            raise
        self._forget(superseding)
        self._count(result.skipped or "compacted")
        if result.skipped is None:
            if self.metrics is not None and result.dropped:
                self.metrics.dropped.labels(self.vendor_id).inc(result.dropped)
            log.info(
                "feed_compacted", vendor_id=self.vendor_id, taken=result.taken, dropped=result.dropped,
                expired=result.expired,
            )  # fmt: skip
        return result

    async def close(self) -> None:
        """At shutdown, after the background task stopped (and after a failed pass)."""
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None and not connection.is_closed:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(connection.close(), CLOSE_TIMEOUT_SECONDS)

    async def _pass(self, channel: AbstractChannel, name: str, superseding: dict[Key, int]) -> CompactionPass:
        queue = await channel.declare_queue(name, passive=True)
        declared = queue.declaration_result
        if not declared.message_count or declared.consumer_count:
            # Nothing waits, or the vendor reads it with the delete right behind the upsert.
            return CompactionPass(0, 0, 0, skipped="consumed" if declared.consumer_count else "no_messages")
        taken = dropped = expired = 0
        remaining = declared.message_count  # what is there now: kept messages come back behind it
        while remaining > 0:
            held: list[AbstractIncomingMessage] = []
            while len(held) < min(CHUNK, remaining):
                message = await queue.get(no_ack=False, fail=False)
                if message is None:
                    break
                held.append(message)
            if not held:
                break
            keep: list[aio_pika.Message] = []
            for message in held:
                if self._supersedes(message, superseding):
                    dropped += 1
                    continue
                again = self._again(message)
                if again is None:
                    expired += 1
                else:
                    keep.append(again)
            await asyncio.gather(*(channel.default_exchange.publish(m, routing_key=name) for m in keep))
            # Only once every kept message is confirmed, and one by one: on a quorum queue (RabbitMQ 3.10) a
            # multiple ack of messages taken with basic.get settles only some of them.
            for message in held:
                await message.ack()
            taken += len(held)
            remaining -= len(held)
        # A synchronous round trip behind the acks. The channel stays open: a quorum queue's client may hold
        # acks back briefly, and closing the channel at once would hand those messages back (duplicates).
        await channel.declare_queue(name, passive=True)
        return CompactionPass(taken, dropped, expired)

    def _forget(self, superseding: dict[Key, int]) -> None:
        for key, version in superseding.items():
            if self.pending.get(key) == version:
                del self.pending[key]

    def _count(self, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.passes.labels(self.vendor_id, outcome).inc()

    @staticmethod
    def _supersedes(message: AbstractIncomingMessage, superseding: dict[Key, int]) -> bool:
        """An upsert with a later delete of its entity pending. Anything that does not parse is kept."""
        if message.type != VendorChange.message_type:
            return False
        try:
            envelope = json.loads(message.body)
            payload = envelope["payload"]
            key = (str(envelope["tenant_id"]), str(payload["entity_id"]))
            return payload["operation"] == "upsert" and int(payload["version"]) < superseding.get(key, 0)
        except (ValueError, KeyError, TypeError):
            return False

    def _again(self, message: AbstractIncomingMessage) -> aio_pika.Message | None:
        """The message as it was, with what is left of its retention (None: already past it)."""
        headers = dict(message.headers or {})
        queued_at = headers.get(HEADER_QUEUED_AT)
        now = time.time()
        if isinstance(queued_at, int):
            age = now - queued_at / 1000
        elif message.timestamp is not None:
            age = now - message.timestamp.timestamp()
        else:
            age = 0.0
        # An incoming message's expiration is the header's milliseconds as seconds (aio-pika decodes it).
        ttl = float(message.expiration) if isinstance(message.expiration, int | float) else self.retention_seconds
        left = ttl - max(age, 0.0)
        if left <= 0:
            return None
        headers[HEADER_QUEUED_AT] = int(now * 1000)  # the new message's retention counts from now
        return copy_message(message, headers=headers, expiration=left)
