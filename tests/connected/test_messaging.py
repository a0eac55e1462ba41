"""Messaging against the real RabbitMQ and the Mongo wire server: confirms, returns, retries, DLQ,
idempotency and the broker's own delivery limit."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Mapping

import aio_pika
import pytest
from pymongo import AsyncMongoClient
from pymongo.monitoring import CommandFailedEvent, CommandListener, CommandStartedEvent, CommandSucceededEvent

from skolsynk.contracts import Envelope, SyncRequested
from skolsynk.messaging import (
    BatchConsumer,
    BatchHandler,
    Deferred,
    Inbox,
    MessageContext,
    PermanentError,
    TransientError,
    UnroutableMessage,
)
from skolsynk.messaging.publisher import (
    HEADER_ATTEMPT,
    HEADER_FAILURE_REASON,
    HEADER_FAILURE_TYPE,
    HEADER_ORIGINAL_QUEUE,
)
from skolsynk.service import ServiceApp
from tests.helpers import delete_topology, drain_queue, queue_depth, wait_for, wait_for_depth

pytestmark = [pytest.mark.connected, pytest.mark.queues("connectors.sync-requests")]


def sync_request(tenant: str = "kommun-a") -> Envelope:
    return SyncRequested(source_id="google", requested_by="test").to_envelope(tenant_id=tenant, producer="test")


def consumed(app: ServiceApp, queue: str, outcome: str) -> float:
    return app.metrics.messages_consumed.labels(queue, outcome)._value.get()


async def test_round_trip_with_confirms(make_app, amqp_url):
    app: ServiceApp = make_app()
    queue = app.queue_name("connectors", "sync-requests")
    received: list[Envelope] = []

    async def handler(envelope: Envelope, context: MessageContext) -> None:
        received.append(envelope)

    app.add_consumer(queue, handler)
    await app.start()
    sent = sync_request()
    await app.publisher.publish(sent, exchange=app.topology.exchange("control"), routing_key="sync.requested")

    await wait_for(lambda: len(received) == 1, what="the message to be consumed")
    assert received[0] == sent
    assert SyncRequested.from_envelope(received[0]).source_id == "google"
    assert app.metrics.messages_published.labels(app.topology.exchange("control"), "confirmed")._value.get() == 1
    await wait_for(lambda: consumed(app, queue, "ack") == 1, what="the ack")
    assert await queue_depth(amqp_url, queue) == 0


async def test_unroutable_publish_raises_and_publisher_keeps_working(make_app):
    app: ServiceApp = make_app()
    await app.start()
    vendor_exchange = app.topology.exchange("vendor")

    with pytest.raises(UnroutableMessage, match="no queue bound"):
        await app.publisher.publish(sync_request(), exchange=vendor_exchange, routing_key="nobody.kommun-a")
    with pytest.raises(UnroutableMessage, match="does not exist"):
        await app.publisher.publish(sync_request(), exchange=f"{vendor_exchange}-missing", routing_key="x")

    # The broker closed the channel for the missing exchange; the next publish still confirms.
    await app.publisher.publish(sync_request(), exchange=app.topology.exchange("control"), routing_key="sync.requested")
    assert app.metrics.messages_published.labels(vendor_exchange, "returned")._value.get() == 1


async def test_failing_message_is_retried_with_delays_then_dead_lettered_with_reason(make_app, amqp_url, settings):
    app: ServiceApp = make_app()
    queue = app.queue_name("connectors", "sync-requests")
    attempts: list[float] = []

    async def always_fails(envelope: Envelope, context: MessageContext) -> None:
        attempts.append(time.monotonic())
        raise RuntimeError("vendor rejected anna.svensson@example.se (19900101-1234)")

    app.add_consumer(queue, always_fails)
    await app.start()
    sent = sync_request()
    await app.publisher.publish(sent, exchange=app.topology.exchange("control"), routing_key="sync.requested")

    dlq = app.topology.queue(queue).dead_letter_queue
    await wait_for_depth(amqp_url, dlq, 1)
    max_attempts = settings.broker.max_attempts
    assert len(attempts) == max_attempts
    delays = settings.broker.retry_delays_seconds
    for n in range(1, max_attempts):
        # Each retry waits at least its step of the ladder (TTL queues are not early).
        assert attempts[n] - attempts[n - 1] >= delays[min(n, len(delays)) - 1] * 0.9

    [dead] = await drain_queue(amqp_url, dlq)
    assert Envelope.model_validate_json(dead.body) == sent
    assert dead.headers[HEADER_ATTEMPT] == max_attempts
    assert dead.headers[HEADER_FAILURE_TYPE] == "RuntimeError"
    assert dead.headers[HEADER_ORIGINAL_QUEUE] == queue
    reason = dead.headers[HEADER_FAILURE_REASON]
    assert "vendor rejected" in reason
    assert "anna" not in reason
    assert "19900101" not in reason
    assert consumed(app, queue, "retry") == max_attempts - 1
    assert consumed(app, queue, "dead_letter") == 1


async def test_permanent_error_goes_to_dlq_without_retries(make_app, amqp_url):
    app: ServiceApp = make_app()
    queue = app.queue_name("connectors", "sync-requests")
    calls = 0

    async def rejects(envelope: Envelope, context: MessageContext) -> None:
        nonlocal calls
        calls += 1
        raise PermanentError("school unit code must have 8 digits")

    app.add_consumer(queue, rejects)
    await app.start()
    await app.publisher.publish(sync_request(), exchange=app.topology.exchange("control"), routing_key="sync.requested")

    dlq = app.topology.queue(queue).dead_letter_queue
    await wait_for_depth(amqp_url, dlq, 1)
    assert calls == 1
    [dead] = await drain_queue(amqp_url, dlq)
    assert dead.headers[HEADER_FAILURE_TYPE] == "PermanentError"
    assert dead.headers[HEADER_FAILURE_REASON] == "school unit code must have 8 digits"


async def test_message_that_is_not_an_envelope_is_dead_lettered_untouched(make_app, amqp_url):
    app: ServiceApp = make_app()
    queue = app.queue_name("connectors", "sync-requests")
    calls = 0

    async def handler(envelope: Envelope, context: MessageContext) -> None:
        nonlocal calls
        calls += 1

    app.add_consumer(queue, handler)
    await app.start()
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        exchange = await channel.get_exchange(app.topology.exchange("control"))
        await exchange.publish(aio_pika.Message(body=b'{"not": "an envelope"'), routing_key="sync.requested")

    dlq = app.topology.queue(queue).dead_letter_queue
    await wait_for_depth(amqp_url, dlq, 1)
    [dead] = await drain_queue(amqp_url, dlq)
    assert dead.body == b'{"not": "an envelope"'
    assert dead.headers[HEADER_FAILURE_TYPE] == "InvalidEnvelope"
    assert dead.headers[HEADER_FAILURE_REASON].startswith("invalid envelope")
    assert calls == 0


async def test_same_message_id_twice_has_its_effect_once(make_app, mongo, settings):
    app: ServiceApp = make_app()
    queue = app.queue_name("connectors", "sync-requests")
    counters = app.db["counters"]

    async def counts(envelope: Envelope, context: MessageContext) -> None:
        await counters.update_one({"_id": "runs"}, {"$inc": {"n": 1}}, upsert=True, session=context.session)

    app.add_consumer(queue, counts)
    await app.start()
    sent = sync_request()
    for _ in range(2):
        await app.publisher.publish(sent, exchange=app.topology.exchange("control"), routing_key="sync.requested")

    await wait_for(lambda: consumed(app, queue, "ack") + consumed(app, queue, "duplicate") == 2, what="both deliveries")
    assert consumed(app, queue, "duplicate") == 1
    stored = await mongo[settings.store.mongodb_database]["counters"].find_one({"_id": "runs"})
    assert stored["n"] == 1


async def test_broker_dead_letters_after_the_delivery_limit(make_app, amqp_url, settings):
    """A consumer that dies on a message (simulated by reject+requeue) cannot loop forever: the quorum
    queue's explicit x-delivery-limit moves it to the DLQ."""
    app: ServiceApp = make_app()
    await app.start()  # declares the topology
    queue = app.queue_name("connectors", "sync-requests")
    await app.publisher.publish(sync_request(), exchange=app.topology.exchange("control"), routing_key="sync.requested")

    deliveries = 0
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        work = await channel.declare_queue(queue, passive=True)

        async def crashes(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            nonlocal deliveries
            deliveries += 1
            await message.reject(requeue=True)

        await work.consume(crashes)
        dlq = app.topology.queue(queue).dead_letter_queue
        await wait_for_depth(amqp_url, dlq, 1)
    assert deliveries == settings.broker.delivery_limit + 1
    [dead] = await drain_queue(amqp_url, dlq)
    assert dead.headers["x-first-death-reason"] == "delivery_limit"


async def test_outbox_message_emitted_by_a_handler_is_relayed(make_app, amqp_url):
    app: ServiceApp = make_app(vendor_ids=("demo-vendor",))
    source_queue = app.queue_name("connectors", "sync-requests")
    vendor_queue = app.queue_name("dispatcher", "demo-vendor")
    received: list[Envelope] = []

    async def forwards(envelope: Envelope, context: MessageContext) -> None:
        await context.emit(
            SyncRequested(source_id="forwarded", requested_by="test"),
            exchange=app.topology.exchange("vendor"),
            routing_key=f"demo-vendor.{envelope.tenant_id}",
        )

    async def collects(envelope: Envelope, context: MessageContext) -> None:
        received.append(envelope)

    app.add_consumer(source_queue, forwards)
    app.add_consumer(vendor_queue, collects)
    await app.start()
    cause = sync_request()
    await app.publisher.publish(cause, exchange=app.topology.exchange("control"), routing_key="sync.requested")

    await wait_for(lambda: len(received) == 1, what="the emitted message")
    assert received[0].causation_id == cause.message_id
    assert received[0].correlation_id == cause.message_id
    assert received[0].tenant_id == "kommun-a"
    assert uuid.UUID(str(received[0].message_id)) != cause.message_id


async def test_transient_errors_are_retried_past_max_attempts_and_never_dead_lettered(make_app, amqp_url, settings):
    app: ServiceApp = make_app()
    queue = app.queue_name("connectors", "sync-requests")
    calls = 0

    async def vendor_down_for_a_while(envelope: Envelope, context: MessageContext) -> None:
        nonlocal calls
        calls += 1
        if calls <= settings.broker.max_attempts + 1:
            raise TransientError("vendor unavailable")

    app.add_consumer(queue, vendor_down_for_a_while)
    await app.start()
    await app.publisher.publish(sync_request(), exchange=app.topology.exchange("control"), routing_key="sync.requested")

    await wait_for(lambda: consumed(app, queue, "ack") == 1, timeout=30, what="success after the outage")
    assert calls == settings.broker.max_attempts + 2
    assert consumed(app, queue, "dead_letter") == 0
    assert await queue_depth(amqp_url, app.topology.queue(queue).dead_letter_queue) == 0


# --- Batch consumers ----------------------------------------------------------------------------------


class Commands(CommandListener):
    """Counts the commands (store round trips) a client sends, by name and collection."""

    def __init__(self) -> None:
        self.sent: Counter[tuple[str, str]] = Counter()

    def started(self, event: CommandStartedEvent) -> None:
        collection = event.command.get(event.command_name)
        self.sent[(event.command_name, collection if isinstance(collection, str) else "-")] += 1

    def succeeded(self, event: CommandSucceededEvent) -> None:
        pass

    def failed(self, event: CommandFailedEvent) -> None:
        pass


def batch_consumer(
    app: ServiceApp,
    queue: str,
    handler: BatchHandler,
    *,
    batch_size: int = 50,
    idempotent: bool = True,
    mongo: AsyncMongoClient | None = None,
) -> BatchConsumer:
    client = mongo or app.mongo
    broker = app.settings.broker
    return BatchConsumer(
        broker=app.broker,
        publisher=app.publisher,
        topology=app.topology,
        queue=app.topology.queue(queue),
        handler=handler,
        metrics=app.metrics,
        batch_size=batch_size,
        max_attempts=broker.max_attempts,
        handler_timeout_seconds=broker.handler_timeout_seconds,
        mongo=client if idempotent else None,
        inbox=Inbox(client[app.settings.store.mongodb_database], consumer=f"{app.name}:{queue}", ttl_seconds=3600)
        if idempotent
        else None,
        outbox=app.outbox,
    )


async def publish_then_consume(app: ServiceApp, consumer: BatchConsumer, envelopes: list[Envelope]) -> None:
    """Queue the messages first, so the consumer's first batch holds them all, then start consuming."""
    for envelope in envelopes:
        await app.publisher.publish(envelope, exchange=app.topology.exchange("control"), routing_key="sync.requested")
    await consumer.start()
    app.consumers.append(consumer)  # drained and stopped with the app


def source_of(context: MessageContext) -> str:
    return str(context.envelope.payload["source_id"])


def request(source_id: str) -> Envelope:
    return SyncRequested(source_id=source_id, requested_by="test").to_envelope(tenant_id="kommun-a", producer="test")


async def test_batch_commits_in_one_transaction_with_one_inbox_insert(make_app, settings, mongo_url):
    app: ServiceApp = make_app()
    queue = app.queue_name("connectors", "sync-requests")
    commands = Commands()
    client: AsyncMongoClient = AsyncMongoClient(mongo_url, event_listeners=[commands], tz_aware=True)
    counters = client[settings.store.mongodb_database]["counters"]
    batches: list[list[str]] = []

    async def counts(contexts: list[MessageContext]) -> None:
        batches.append([source_of(c) for c in contexts])
        await counters.update_one(
            {"_id": "runs"}, {"$inc": {"n": len(contexts)}}, upsert=True, session=contexts[0].session
        )

    await app.start()
    consumer = batch_consumer(app, queue, counts, batch_size=50, mongo=client)
    sent = [request(f"source-{n}") for n in range(10)]
    try:
        await publish_then_consume(app, consumer, [*sent, sent[3]])  # one of them twice
        await wait_for(lambda: consumed(app, queue, "ack") == 10, what="the batch to be acked")
        await wait_for(lambda: consumed(app, queue, "duplicate") == 1, what="the copy to be acked as a duplicate")
        assert batches == [[f"source-{n}" for n in range(10)]]
        assert (await counters.find_one({"_id": "runs"}))["n"] == 10
        inbox = client[settings.store.mongodb_database]["inbox"]
        assert await inbox.count_documents({}) == 10
        assert commands.sent[("insert", "inbox")] == 1, "one inbox insert for the whole batch"
        assert commands.sent[("find", "inbox")] == 1, "one inbox read for the whole batch"
        assert commands.sent[("commitTransaction", "-")] == 1

        # Redelivered later (a crash before the acks, say): every one is a duplicate, nothing runs again.
        await app.publisher.publish(sent[0], exchange=app.topology.exchange("control"), routing_key="sync.requested")
        await app.publisher.publish(sent[1], exchange=app.topology.exchange("control"), routing_key="sync.requested")
        await wait_for(lambda: consumed(app, queue, "duplicate") == 3, what="the redeliveries to be skipped")
        assert (await counters.find_one({"_id": "runs"}))["n"] == 10
    finally:
        await client.close()


async def test_a_poison_message_in_a_batch_is_dead_lettered_alone_and_the_rest_applied_once(
    make_app, amqp_url, settings
):
    app: ServiceApp = make_app()
    queue = app.queue_name("connectors", "sync-requests")
    counters = app.db["counters"]
    batches: list[list[str]] = []

    async def counts_but_refuses_poison(contexts: list[MessageContext]) -> Mapping[int, BaseException]:
        batches.append([source_of(c) for c in contexts])
        for context in contexts:  # writes for every message, the poison one too: the abort undoes them
            await counters.update_one(
                {"_id": source_of(context)}, {"$inc": {"n": 1}}, upsert=True, session=context.session
            )
        return {i: PermanentError("school unit code must have 8 digits") for i, c in enumerate(contexts)
                if source_of(c) == "poison"}  # fmt: skip

    await app.start()
    consumer = batch_consumer(app, queue, counts_but_refuses_poison)
    await publish_then_consume(app, consumer, [request("a"), request("poison"), request("b"), request("c")])

    dlq = app.topology.queue(queue).dead_letter_queue
    await wait_for_depth(amqp_url, dlq, 1)
    await wait_for(lambda: consumed(app, queue, "ack") == 3, what="the rest of the batch")
    assert batches == [["a", "poison", "b", "c"], ["a", "b", "c"]]
    assert {d["_id"]: d["n"] async for d in counters.find()} == {"a": 1, "b": 1, "c": 1}
    [dead] = await drain_queue(amqp_url, dlq)
    assert Envelope.model_validate_json(dead.body).payload["source_id"] == "poison"
    assert dead.headers[HEADER_FAILURE_TYPE] == "PermanentError"
    assert dead.headers[HEADER_FAILURE_REASON] == "school unit code must have 8 digits"
    assert consumed(app, queue, "dead_letter") == 1
    assert consumed(app, queue, "retry") == 0


async def test_a_batch_that_raises_is_taken_apart_and_only_the_culprit_walks_the_retry_ladder(
    make_app, amqp_url, settings
):
    app: ServiceApp = make_app()
    queue = app.queue_name("connectors", "sync-requests")
    handled: Counter[str] = Counter()
    batch_sizes: list[int] = []

    async def crashes_on_poison(contexts: list[MessageContext]) -> None:
        batch_sizes.append(len(contexts))
        if any(source_of(c) == "poison" for c in contexts):
            raise RuntimeError("handler bug")
        handled.update(source_of(c) for c in contexts)

    await app.start()
    consumer = batch_consumer(app, queue, crashes_on_poison, idempotent=False)
    await publish_then_consume(app, consumer, [request("a"), request("poison"), request("b")])

    dlq = app.topology.queue(queue).dead_letter_queue
    await wait_for_depth(amqp_url, dlq, 1)
    assert handled == {"a": 1, "b": 1}
    assert batch_sizes[0] == 3
    assert batch_sizes[1:] == [1] * (len(batch_sizes) - 1)
    [dead] = await drain_queue(amqp_url, dlq)
    assert Envelope.model_validate_json(dead.body).payload["source_id"] == "poison"
    assert dead.headers[HEADER_ATTEMPT] == settings.broker.max_attempts
    assert dead.headers[HEADER_FAILURE_TYPE] == "RuntimeError"
    assert consumed(app, queue, "retry") == settings.broker.max_attempts - 1
    assert consumed(app, queue, "ack") == 2


async def test_a_batch_failing_for_an_outage_is_retried_whole_and_never_dead_lettered(make_app, amqp_url, settings):
    app: ServiceApp = make_app()
    queue = app.queue_name("connectors", "sync-requests")
    calls = 0
    handled: Counter[str] = Counter()

    async def vendor_down_for_a_while(contexts: list[MessageContext]) -> None:
        nonlocal calls
        calls += 1
        if calls <= settings.broker.max_attempts:
            raise TransientError("vendor unavailable")
        handled.update(source_of(c) for c in contexts)

    await app.start()
    consumer = batch_consumer(app, queue, vendor_down_for_a_while, idempotent=False)
    await publish_then_consume(app, consumer, [request("a"), request("b")])

    await wait_for(lambda: consumed(app, queue, "ack") == 2, timeout=30, what="success after the outage")
    assert handled == {"a": 1, "b": 1}
    assert consumed(app, queue, "retry") >= 2 * settings.broker.max_attempts - 1
    assert consumed(app, queue, "dead_letter") == 0
    assert await queue_depth(amqp_url, app.topology.queue(queue).dead_letter_queue) == 0


async def test_while_a_batch_runs_the_next_one_gathers_past_its_linger(make_app):
    """A message alone starts within the linger; what arrives while that batch runs, however spread out, is
    one batch once it ends (a batch per linger would make [1, 3, 3] here: at M about 28 changes a dispatcher
    batch where 50 are allowed, each batch two or more ledger round trips)."""
    app: ServiceApp = make_app()
    queue = app.queue_name("connectors", "sync-requests")
    release = asyncio.Event()
    batches: list[list[str]] = []

    async def slow_first(contexts: list[MessageContext]) -> None:
        batches.append([source_of(c) for c in contexts])
        if len(batches) == 1:
            await release.wait()

    async def publish(*sources: str) -> None:
        for source in sources:
            await app.publisher.publish(
                request(source), exchange=app.topology.exchange("control"), routing_key="sync.requested"
            )

    await app.start()
    consumer = batch_consumer(app, queue, slow_first, idempotent=False)
    await consumer.start()
    app.consumers.append(consumer)
    await publish("alone")
    await wait_for(lambda: batches == [["alone"]], what="the first message started alone")
    await publish("b", "c", "d")
    await wait_for(lambda: consumer.inflight == 4, what="three more received")
    await wait_for(lambda: consumer._lingered, what="their linger over while the first batch runs")
    await publish("e", "f", "g")
    await wait_for(lambda: consumer.inflight == 7, what="three more received")
    assert batches == [["alone"]]
    release.set()
    await wait_for(lambda: consumed(app, queue, "ack") == 7, what="every message acked")
    assert batches == [["alone"], ["b", "c", "d", "e", "f", "g"]]


async def test_stopping_requeues_a_batch_that_outlives_the_drain_budget(make_app, amqp_url):
    app: ServiceApp = make_app()
    queue = app.queue_name("connectors", "sync-requests")
    started = asyncio.Event()

    async def hangs(contexts: list[MessageContext]) -> None:
        started.set()
        await asyncio.Event().wait()

    await app.start()
    consumer = batch_consumer(app, queue, hangs, idempotent=False)
    await publish_then_consume(app, consumer, [request("a"), request("b"), request("c")])
    await asyncio.wait_for(started.wait(), timeout=10)
    await consumer.stop(0.2)

    await wait_for(lambda: consumed(app, queue, "requeue_shutdown") == 3, what="the batch to be requeued")
    assert await queue_depth(amqp_url, queue) == 3
    assert consumed(app, queue, "ack") == 0


async def test_a_deferred_message_waits_on_the_first_step_however_often_it_failed_before(settings, amqp_url):
    """``Deferred`` (a reference on its way) has a ladder of its own: after an outage's retries it is
    tried again after the first step (0.2 s here), not the long one the attempt count would give (60 s)."""
    ladder = settings.broker.model_copy(update={"retry_delays_seconds": (0.2, 60.0)})
    app = ServiceApp.create("test-service", settings.model_copy(update={"broker": ladder}))
    queue = app.queue_name("connectors", "sync-requests")
    attempts: list[int] = []

    async def outage_then_not_yet(envelope: Envelope, context: MessageContext) -> None:
        attempts.append(context.attempt)
        if context.attempt == 1:
            raise TransientError("vendor unavailable")  # waits the first step (0.2 s)
        if context.attempt == 2:
            raise Deferred("a referenced entity is on its way")  # the attempt count would give 60 s

    app.add_consumer(queue, outage_then_not_yet, idempotent=False)
    try:
        await app.start()
        await app.publisher.publish(
            sync_request(), exchange=app.topology.exchange("control"), routing_key="sync.requested"
        )
        await wait_for(lambda: consumed(app, queue, "ack") == 1, timeout=30, what="the deferred message to succeed")
        assert attempts == [1, 2, 3]
        assert consumed(app, queue, "dead_letter") == 0
    finally:
        await app.drain(1.0)
        await app.close()
        await delete_topology(amqp_url, app.topology)
