"""Graceful shutdown with work in flight, and recovery when the broker drops every connection."""

from __future__ import annotations

import asyncio

import pytest

from skolsynk.contracts import Envelope, SyncRequested
from skolsynk.messaging import MessageContext, OutgoingMessage
from skolsynk.service import ServiceApp
from skolsynk_testkit.devstack import rabbitmqctl
from tests.helpers import queue_depth, wait_for, wait_for_depth

pytestmark = [pytest.mark.connected, pytest.mark.queues("connectors.sync-requests")]


def numbered_requests(count: int, tenant: str = "kommun-a") -> list[Envelope]:
    return [
        SyncRequested(source_id=f"source-{n}", requested_by="test").to_envelope(tenant_id=tenant) for n in range(count)
    ]


def outcome(app: ServiceApp, queue: str, name: str) -> float:
    return app.metrics.messages_consumed.labels(queue, name)._value.get()


async def test_graceful_shutdown_with_100_in_flight_loses_none(make_app, settings, amqp_url, mongo):
    """100 deliveries are in flight when the service stops: those that finish within the drain budget
    are committed and acked, the rest are requeued; a second instance finishes them, each once."""
    settings.broker.prefetch = 100
    settings.broker.handler_timeout_seconds = 60
    first: ServiceApp = make_app("first")
    queue = first.queue_name("connectors", "sync-requests")
    finish_during_drain = asyncio.Event()
    quick = {f"source-{n}" for n in range(40)}

    async def slow_handler(envelope: Envelope, context: MessageContext) -> None:
        source_id = SyncRequested.from_envelope(envelope).source_id
        if source_id in quick:
            await finish_during_drain.wait()
        else:
            await asyncio.Event().wait()  # never finishes: must be requeued at the end of the drain
        assert context.session is not None
        await first.db["processed"].insert_one(
            {"_id": str(envelope.message_id), "by": "first"}, session=context.session
        )

    consumer = first.add_consumer(queue, slow_handler)
    await first.start()
    await first.publisher.publish_many(
        OutgoingMessage(e, first.topology.exchange("control"), "sync.requested") for e in numbered_requests(100)
    )
    await wait_for(lambda: consumer.inflight == 100, what="100 deliveries in flight")

    first.mark_shutting_down()
    draining = asyncio.create_task(first.drain(timeout=1.5))
    finish_during_drain.set()
    await draining
    await first.close()

    assert outcome(first, queue, "ack") == 40
    assert outcome(first, queue, "requeue_shutdown") == 60
    processed = mongo[settings.store.mongodb_database]["processed"]
    assert await processed.count_documents({}) == 40
    await wait_for_depth(amqp_url, queue, 60)

    second: ServiceApp = make_app("second")

    async def fast_handler(envelope: Envelope, context: MessageContext) -> None:
        await second.db["processed"].insert_one(
            {"_id": str(envelope.message_id), "by": "second"}, session=context.session
        )

    second.add_consumer(queue, fast_handler)
    await second.start()
    await wait_for(lambda: outcome(second, queue, "ack") == 60, what="the requeued 60 to be processed")
    assert await processed.count_documents({}) == 100
    assert await processed.count_documents({"by": "second"}) == 60
    assert await queue_depth(amqp_url, queue) == 0


async def test_broker_drops_all_connections_mid_stream_nothing_lost(make_app, settings, rabbitmq_vhost, mongo):
    """`rabbitmqctl close_all_connections` while messages are being published and consumed: the
    consumer comes back by itself, publishes that were not confirmed are sent again, and every
    message has its effect exactly once."""
    if rabbitmq_vhost is None:
        pytest.skip("needs rabbitmqctl on this machine")
    app: ServiceApp = make_app()
    queue = app.queue_name("connectors", "sync-requests")

    async def records(envelope: Envelope, context: MessageContext) -> None:
        await app.db["processed"].insert_one({"_id": str(envelope.message_id)}, session=context.session)

    app.add_consumer(queue, records)
    await app.start()
    processed = mongo[settings.store.mongodb_database]["processed"]
    published: list[Envelope] = []
    exchange = app.topology.exchange("control")

    async def publish(count: int) -> list[BaseException | None]:
        batch = numbered_requests(count)
        published.extend(batch)
        return await app.publisher.publish_many(OutgoingMessage(e, exchange, "sync.requested") for e in batch)

    results = await publish(150)

    async def some_processed() -> bool:
        return await processed.count_documents({}) >= 50

    await wait_for(some_processed, what="the first 50 messages")
    # Keep publishing while the broker drops every connection, and a little after, so publishes
    # straddle the drop whatever the timing.
    dropping = asyncio.create_task(
        asyncio.to_thread(rabbitmqctl, "close_all_connections", "--vhost", rabbitmq_vhost, "chaos test")
    )
    while not dropping.done():
        results += await publish(5)
    await dropping
    results += await publish(50)
    assert [r for r in results if r is not None] == []

    async def all_processed() -> bool:
        return await processed.count_documents({}) == len(published)

    await wait_for(all_processed, timeout=60, what="every published message processed")
    await wait_for(lambda: app.metrics.broker_reconnects._value.get() >= 1, what="the reconnect to be counted")
    assert {d["_id"] async for d in processed.find({})} == {str(e.message_id) for e in published}

    async def ready_again() -> bool:
        return all((await app.health.readiness()).values())

    await wait_for(ready_again, what="readiness after the reconnect")
