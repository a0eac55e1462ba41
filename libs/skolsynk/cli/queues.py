"""Queue depths, dead-letter queues and replays, on a plain (not robust) aio-pika connection.

Replaying moves messages from ``Q.dlq`` back to ``Q`` safely: each message is published to the work
queue (persistent, mandatory, confirmed by the broker) before it is acknowledged in the DLQ, so a
crash in between leaves a duplicate, never a loss (consumers are idempotent). Messages that are not
replayed are held unacknowledged during the pass and returned to the DLQ at the end, in their order.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage
from aio_pika.exceptions import ChannelNotFoundEntity

from skolsynk.cli.output import Progress
from skolsynk.messaging.publisher import (
    HEADER_ATTEMPT,
    HEADER_FAILED_AT,
    HEADER_FAILURE_REASON,
    HEADER_FAILURE_TYPE,
    HEADER_ORIGINAL_QUEUE,
    HEADER_TENANT,
    copy_message,
)

#: Set on a replayed message: when, and how many times it was replayed.
HEADER_REPLAYED_AT = "x-skolsynk-replayed-at"
HEADER_REPLAYS = "x-skolsynk-replays"
#: Headers the broker manages; a republished message must not carry them.
BROKER_HEADERS = frozenset({"x-delivery-count"})
DLQ_SUFFIX = ".dlq"


class QueueNotFound(Exception):
    pass


@dataclass(frozen=True)
class QueueStats:
    name: str
    exists: bool
    messages: int = 0
    consumers: int = 0


async def queue_stats(connection: AbstractConnection, names: Iterable[str]) -> list[QueueStats]:
    """Ready messages and consumers per queue (passive declares; a missing queue is reported, not created)."""
    results: list[QueueStats] = []
    channel: AbstractChannel = await connection.channel()
    try:
        for name in names:
            try:
                queue = await channel.declare_queue(name, passive=True)
            except ChannelNotFoundEntity:
                results.append(QueueStats(name, exists=False))
                channel = await connection.channel()  # a failed passive declare closes the channel
                continue
            declared = queue.declaration_result
            results.append(QueueStats(name, True, int(declared.message_count or 0), int(declared.consumer_count or 0)))
    finally:
        if not channel.is_closed:
            await channel.close()
    return results


def resolve(namespace: str, name: str) -> tuple[str, str]:
    """(work queue, its DLQ) from ``ns.svc.purpose``, ``ns.svc.purpose.dlq`` or ``svc.purpose``."""
    if name.endswith(DLQ_SUFFIX):
        name = name[: -len(DLQ_SUFFIX)]
    if not name.startswith(f"{namespace}."):
        name = f"{namespace}.{name}"
    return name, name + DLQ_SUFFIX


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


@dataclass(frozen=True)
class DeadLetter:
    """What the operator sees of a dead letter: ids, type, tenant and the (scrubbed) failure."""

    message_id: str | None
    message_type: str | None
    tenant_id: str | None
    failure_type: str | None
    reason: str | None
    attempt: int | None
    failed_at: str | None
    original_queue: str | None

    @classmethod
    def of(cls, message: AbstractIncomingMessage) -> DeadLetter:
        headers = message.headers or {}
        attempt = headers.get(HEADER_ATTEMPT)
        reason = _text(headers.get(HEADER_FAILURE_REASON))
        if reason is None and headers.get("x-death"):
            reason = "dead-lettered by the broker (delivery limit: the consumer kept dying)"
        return cls(
            message_id=message.message_id,
            message_type=message.type,
            tenant_id=_text(headers.get(HEADER_TENANT)),
            failure_type=_text(headers.get(HEADER_FAILURE_TYPE)),
            reason=reason,
            attempt=attempt if isinstance(attempt, int) else None,
            failed_at=_text(headers.get(HEADER_FAILED_AT)),
            original_queue=_text(headers.get(HEADER_ORIGINAL_QUEUE)),
        )

    def matches(self, text: str | None) -> bool:
        """Case-insensitive substring of the failure reason or type; everything matches no filter."""
        if not text:
            return True
        haystack = f"{self.failure_type or ''} {self.reason or ''}".lower()
        return text.lower() in haystack


async def _declared(channel: AbstractChannel, name: str) -> aio_pika.abc.AbstractQueue:
    try:
        return await channel.declare_queue(name, passive=True)
    except ChannelNotFoundEntity as error:
        raise QueueNotFound(f"queue {name!r} does not exist") from error


async def list_dead_letters(
    connection: AbstractConnection, dlq: str, *, limit: int | None = None
) -> tuple[int, list[DeadLetter]]:
    """Browse a DLQ without changing it: (messages in it, the first ``limit`` of them)."""
    channel = await connection.channel()
    held: list[AbstractIncomingMessage] = []
    try:
        queue = await _declared(channel, dlq)
        total = int(queue.declaration_result.message_count or 0)
        while len(held) < total and (limit is None or len(held) < limit):
            message = await queue.get(no_ack=False, fail=False)
            if message is None:
                break
            held.append(message)
        return total, [DeadLetter.of(m) for m in held]
    finally:
        if held and not channel.is_closed:
            await held[-1].nack(requeue=True, multiple=True)
        if not channel.is_closed:
            await channel.close()


def replay_message(message: AbstractIncomingMessage, *, now: datetime | None = None) -> aio_pika.Message:
    """The dead letter as it goes back to its work queue: same body, message id, type, correlation id,
    timestamp and headers; ``x-skolsynk-attempt`` starts again at 0 (otherwise the first failure after a
    replay would send it straight back), and the replay is recorded."""
    headers = {k: v for k, v in (message.headers or {}).items() if k not in BROKER_HEADERS}
    previous = headers.get(HEADER_REPLAYS)
    headers[HEADER_REPLAYS] = (previous if isinstance(previous, int) else 0) + 1
    headers[HEADER_REPLAYED_AT] = (now or datetime.now(UTC)).isoformat()
    headers[HEADER_ATTEMPT] = 0
    return copy_message(message, headers=headers)


@dataclass(frozen=True)
class ReplayResult:
    """``replayed``: moved to the work queue (with ``dry_run``: would have been); ``kept``: examined and
    left in the DLQ."""

    examined: int
    replayed: int
    kept: int
    dry_run: bool


async def replay_dead_letters(
    connection: AbstractConnection,
    work_queue: str,
    dlq: str,
    *,
    reason_filter: str | None = None,
    limit: int | None = None,
    dry_run: bool = False,
    progress: Progress | None = None,
) -> ReplayResult:
    """Move dead letters (all, those whose failure matches ``reason_filter``, at most ``limit``) from
    ``dlq`` back to ``work_queue``. One pass over what the DLQ held when the replay started."""
    source_channel = await connection.channel()
    target_channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
    kept: list[AbstractIncomingMessage] = []
    examined = replayed = 0
    try:
        source = await _declared(source_channel, dlq)
        await _declared(target_channel, work_queue)
        total = int(source.declaration_result.message_count or 0)
        if progress is not None:
            progress.total = total  # messages examined, of those the DLQ held at the start
        while examined < total and (limit is None or replayed < limit):
            message = await source.get(no_ack=False, fail=False)
            if message is None:
                break
            examined += 1
            matched = DeadLetter.of(message).matches(reason_filter)
            if matched and not dry_run:
                await target_channel.default_exchange.publish(
                    replay_message(message), routing_key=work_queue, mandatory=True
                )
                await message.ack()
            else:
                kept.append(message)
            replayed += 1 if matched else 0
            if progress is not None:
                progress.advance()
    finally:
        if kept and not source_channel.is_closed:
            await kept[-1].nack(requeue=True, multiple=True)
        for channel in (source_channel, target_channel):
            if not channel.is_closed:
                await channel.close()
    if progress is not None:
        progress.finish()
    return ReplayResult(examined=examined, replayed=replayed, kept=examined - replayed, dry_run=dry_run)
