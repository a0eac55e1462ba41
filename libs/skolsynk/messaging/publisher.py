"""Publishing with publisher confirms, mandatory routing and retries across reconnects.

* A publish returns only when the broker confirmed it (``basic.ack``): the message is on disk or in a
  quorum.
* An unroutable message (no queue bound for its routing key) raises :class:`UnroutableMessage`; it is
  never silently dropped (``on_return_raises=True``).
* A connection lost while a publish waits for its confirm does not lose the message: the publish is
  retried (with backoff, via stamina) once the robust connection is back, until
  ``publish_timeout_seconds``. A retried message may arrive twice; consumers are idempotent (inbox).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aio_pika
import stamina
from aio_pika.abc import AbstractExchange, AbstractIncomingMessage, AbstractRobustChannel
from aio_pika.exceptions import (
    AMQPConnectionError,
    ChannelClosed,
    ChannelInvalidStateError,
    ChannelNotFoundEntity,
    ChannelPreconditionFailed,
    ConnectionClosed,
    DeliveryError,
    PublishError,
)
from aiormq.exceptions import ChannelAccessRefused

from skolsynk.contracts.envelope import Envelope
from skolsynk.logging import get_logger
from skolsynk.messaging.broker import Broker
from skolsynk.observability import Metrics

log = get_logger(__name__)

#: Header names skolsynk sets on every message.
HEADER_TENANT = "x-tenant-id"
HEADER_SCHEMA_VERSION = "x-schema-version"
HEADER_ATTEMPT = "x-skolsynk-attempt"
HEADER_FAILURE_REASON = "x-skolsynk-failure-reason"
HEADER_FAILURE_TYPE = "x-skolsynk-failure-type"
HEADER_FAILED_AT = "x-skolsynk-failed-at"
HEADER_ORIGINAL_QUEUE = "x-skolsynk-original-queue"

#: Errors after which the same publish is tried again once the connection is back.
RETRYABLE_PUBLISH_ERRORS: tuple[type[Exception], ...] = (
    AMQPConnectionError,
    ChannelClosed,
    ChannelInvalidStateError,
    ConnectionClosed,
    ConnectionError,
    DeliveryError,  # basic.nack: the broker could not take it now
    TimeoutError,
    RuntimeError,  # aiormq raises it for "Writer is None" while reconnecting
)


#: One attempt waits this long for its confirm before it counts as failed and is retried.
CONFIRM_TIMEOUT_SECONDS = 10.0


def is_retryable_publish_error(error: Exception) -> bool:
    """Connection trouble and nacks are retried; a returned message or a missing exchange is not
    (both subclass retryable aiormq errors, hence the explicit check), nor is a refused permission
    (403) or a mismatched declaration (406)."""
    if isinstance(error, PublishError | ChannelNotFoundEntity | ChannelAccessRefused | ChannelPreconditionFailed):
        return False
    return isinstance(error, RETRYABLE_PUBLISH_ERRORS)


class PublisherNotStarted(Exception):
    """A programming error: publishing before :meth:`Publisher.start`. Never retried."""


class UnroutableMessage(Exception):
    """The broker returned the message: nothing is bound for its exchange and routing key."""


@dataclass(frozen=True)
class OutgoingMessage:
    envelope: Envelope
    exchange: str
    routing_key: str
    headers: Mapping[str, Any] = field(default_factory=dict)


def build_amqp_message(
    envelope: Envelope, headers: Mapping[str, Any] | None = None, *, expiration: float | None = None
) -> aio_pika.Message:
    """The AMQP message of ``envelope``; ``expiration`` (seconds) is its per-message TTL in the queue."""
    all_headers: dict[str, Any] = {HEADER_SCHEMA_VERSION: envelope.schema_version}
    if envelope.tenant_id:
        all_headers[HEADER_TENANT] = envelope.tenant_id
    all_headers.update(headers or {})
    return aio_pika.Message(
        body=envelope.model_dump_json().encode(),
        content_type="application/json",
        content_encoding="utf-8",
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        message_id=str(envelope.message_id),
        correlation_id=str(envelope.correlation_id) if envelope.correlation_id else None,
        type=envelope.message_type,
        timestamp=envelope.produced_at,
        app_id=envelope.producer,
        headers=all_headers,
        expiration=expiration,
    )


def copy_message(
    template: AbstractIncomingMessage,
    *,
    body: bytes | None = None,
    headers: Mapping[str, Any],
    expiration: float | None = None,
) -> aio_pika.Message:
    """A received message as it is published again (persistent): its body (or ``body``), content type and
    encoding, message and correlation ids, type, timestamp and producer, with ``headers`` and, if given, a
    new per-message TTL (``expiration`` seconds)."""
    return aio_pika.Message(
        body=template.body if body is None else body,
        headers=dict(headers),
        content_type=template.content_type,
        content_encoding=template.content_encoding,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        message_id=template.message_id,
        correlation_id=template.correlation_id,
        type=template.type,
        timestamp=template.timestamp,
        app_id=template.app_id,
        expiration=expiration,
    )


class Publisher:
    """One confirming channel per process. Safe for concurrent use; at most ``max_in_flight``
    publishes wait for confirms at once (pipelining is ~8x faster than awaiting one by one)."""

    def __init__(self, broker: Broker, metrics: Metrics, *, timeout_seconds: float, max_in_flight: int = 256) -> None:
        self._broker = broker
        self._metrics = metrics
        self._timeout = timeout_seconds
        self._window = asyncio.Semaphore(max_in_flight)
        self._channel: AbstractRobustChannel | None = None
        self._exchanges: dict[str, AbstractExchange] = {}

    async def start(self) -> None:
        self._channel = await self._broker.channel(confirms=True)

    async def _exchange(self, name: str) -> AbstractExchange:
        if self._channel is None:
            raise RuntimeError("publisher is not started")
        if name == "":
            return self._channel.default_exchange
        exchange = self._exchanges.get(name)
        if exchange is None:
            exchange = await self._channel.get_exchange(name, ensure=False)
            self._exchanges[name] = exchange
        return exchange

    async def publish(
        self,
        envelope: Envelope,
        *,
        exchange: str,
        routing_key: str,
        headers: Mapping[str, Any] | None = None,
        expiration: float | None = None,
    ) -> None:
        """Publish and wait for the confirm, retrying across reconnects. ``expiration`` (seconds): the
        message leaves its queue unread after this long (per-message TTL)."""
        await self._publish(lambda: build_amqp_message(envelope, headers, expiration=expiration), exchange, routing_key)

    async def publish_raw(
        self,
        body: bytes,
        *,
        exchange: str,
        routing_key: str,
        headers: Mapping[str, Any],
        template: AbstractIncomingMessage,
    ) -> None:
        """Re-publish a received message's exact body and properties with new headers (retry queues and
        dead letters keep even a body that does not parse)."""

        await self._publish(lambda: copy_message(template, body=body, headers=headers), exchange, routing_key)

    async def _publish(self, build: Callable[[], aio_pika.Message], exchange: str, routing_key: str) -> None:
        if self._channel is None:
            raise PublisherNotStarted("call Publisher.start() before publishing")
        started = time.monotonic()
        label = exchange or "(default)"
        async with self._window:
            try:
                async for attempt in stamina.retry_context(
                    on=is_retryable_publish_error,
                    attempts=None,
                    timeout=self._timeout,
                    wait_initial=0.05,
                    wait_max=2.0,
                ):
                    with attempt:
                        if attempt.num > 1:
                            log.warning("publish_retry", attempt=attempt.num, exchange=label)
                            await self._wait_for_connection()
                        target = await self._exchange(exchange)
                        await target.publish(
                            build(), routing_key=routing_key, mandatory=True, timeout=CONFIRM_TIMEOUT_SECONDS
                        )
            except PublishError as error:
                self._metrics.messages_published.labels(label, "returned").inc()
                raise UnroutableMessage(
                    f"no queue bound on exchange {label!r} for routing key {routing_key!r}"
                ) from error
            except ChannelNotFoundEntity as error:
                self._metrics.messages_published.labels(label, "returned").inc()
                raise UnroutableMessage(f"exchange {label!r} does not exist") from error
            except BaseException:
                self._metrics.messages_published.labels(label, "error").inc()
                raise
        self._metrics.messages_published.labels(label, "confirmed").inc()
        self._metrics.publish_confirm_seconds.labels(label).observe(time.monotonic() - started)

    async def publish_many(self, messages: Iterable[OutgoingMessage]) -> list[BaseException | None]:
        """Publish concurrently (bounded by the window). Returns, per message, None when confirmed or
        the error that made it fail, in input order."""

        async def one(item: OutgoingMessage) -> BaseException | None:
            try:
                await self.publish(
                    item.envelope, exchange=item.exchange, routing_key=item.routing_key, headers=item.headers
                )
            except Exception as error:  # noqa: BLE001 - reported per message to the caller
                return error
            return None

        return list(await asyncio.gather(*(one(m) for m in messages)))

    async def _wait_for_connection(self) -> None:
        remaining = max(self._timeout, 1.0)
        await self._broker.wait_connected(remaining)
        if self._channel is not None:
            async with asyncio.timeout(remaining):
                await self._channel.ready()

    async def close(self) -> None:
        if self._channel is not None and not self._channel.is_closed:
            await self._channel.close()
        self._channel = None
        self._exchanges.clear()
