"""`make bench`: throughput of skolsynk's messaging stack against the raw ceiling, in one run.

Measured side by side and interleaved (raw, stack, raw, stack ...) because this machine is shared
and noisy; the figures that matter are the ratios, not the absolute numbers. No assertions: the
benchmark reports, tests check behaviour.

* raw AMQP:   aio-pika publish with confirms (100 in flight) then consume with manual acks
* stack:      skolsynk Publisher.publish_many + Consumer with the idempotency inbox (a Mongo
              transaction per message), the path every service uses
* raw Mongo:  insert_many, bulk upserts by _id, full read of the Mongo wire server

Environment: BENCH_MESSAGES (default 2000), BENCH_ROUNDS (default 2), BENCH_DOCUMENTS (default 5000).
Writes a table to stdout and JSON to bench-results/messaging.json.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import time
import uuid
from pathlib import Path

import aio_pika
from pymongo import AsyncMongoClient, UpdateOne

from skolsynk.contracts import Envelope, SyncRequested
from skolsynk.devstack import (
    amqp_url_with_vhost,
    create_vhost,
    delete_vhost,
    ensure_rabbitmq,
    start_mongo_wire_server,
)
from skolsynk.logging import configure_logging
from skolsynk.messaging import MessageContext, OutgoingMessage
from skolsynk.service import ServiceApp
from skolsynk.settings import (
    DEFAULT_AMQP_URL,
    BrokerSettings,
    LifecycleSettings,
    ObservabilitySettings,
    ServiceSettings,
    StoreSettings,
)

ROOT = Path(__file__).resolve().parent.parent
MESSAGES = int(os.environ.get("BENCH_MESSAGES", "2000"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "2"))
DOCUMENTS = int(os.environ.get("BENCH_DOCUMENTS", "5000"))


def envelopes(count: int) -> list[Envelope]:
    return [
        SyncRequested(source_id=f"source-{n}", requested_by="bench").to_envelope(tenant_id="bench-kommun")
        for n in range(count)
    ]


async def raw_amqp(amqp_url: str) -> float:
    """Messages per second, publish-with-confirms + consume, plain aio-pika."""
    queue_name = f"bench.raw.{uuid.uuid4().hex[:8]}"
    bodies = [e.model_dump_json().encode() for e in envelopes(MESSAGES)]
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        await channel.set_qos(prefetch_count=50)
        queue = await channel.declare_queue(queue_name, durable=True, arguments={"x-queue-type": "quorum"})
        done = asyncio.Event()
        received = 0

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            nonlocal received
            await message.ack()
            received += 1
            if received == MESSAGES:
                done.set()

        started = time.perf_counter()
        consumer_tag = await queue.consume(on_message)
        window = asyncio.Semaphore(100)

        async def publish(body: bytes) -> None:
            async with window:
                await channel.default_exchange.publish(
                    aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT), routing_key=queue_name
                )

        await asyncio.gather(*(publish(b) for b in bodies))
        await done.wait()
        elapsed = time.perf_counter() - started
        await queue.cancel(consumer_tag)
        await queue.delete(if_unused=False, if_empty=False)
    return MESSAGES / elapsed


async def skolsynk_stack(settings: ServiceSettings) -> float:
    """Messages per second through Publisher.publish_many and an idempotent Consumer."""
    settings.broker.namespace = f"bench{uuid.uuid4().hex[:6]}"
    settings.store.mongodb_database = f"bench_{settings.broker.namespace}"
    app = ServiceApp.create("bench", settings)
    queue = app.queue_name("connectors", "sync-requests")
    done = asyncio.Event()
    handled = 0

    async def handler(envelope: Envelope, context: MessageContext) -> None:
        nonlocal handled
        handled += 1
        if handled == MESSAGES:
            done.set()

    app.add_consumer(queue, handler)
    await app.start()
    try:
        started = time.perf_counter()
        await app.publisher.publish_many(
            OutgoingMessage(e, app.topology.exchange("control"), "sync.requested") for e in envelopes(MESSAGES)
        )
        await done.wait()
        elapsed = time.perf_counter() - started
    finally:
        await app.drain(5)
        await app.close()
        client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(settings.store.mongodb_url.get_secret_value())
        await client.drop_database(settings.store.mongodb_database)
        await client.close()
    return MESSAGES / elapsed


async def raw_mongo(mongo_url: str) -> dict[str, float]:
    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(mongo_url)
    db = client[f"bench_raw_{uuid.uuid4().hex[:6]}"]
    docs = [{"_id": f"p{n}", "n": n, "school_unit": f"{n % 40:08d}"} for n in range(DOCUMENTS)]
    result: dict[str, float] = {}
    started = time.perf_counter()
    await db.persons.insert_many(docs, ordered=False)
    result["insert_many_docs_per_s"] = DOCUMENTS / (time.perf_counter() - started)
    started = time.perf_counter()
    await db.persons.bulk_write(
        [UpdateOne({"_id": d["_id"]}, {"$set": {"n": d["n"] + 1}}, upsert=True) for d in docs], ordered=False
    )
    result["bulk_upsert_docs_per_s"] = DOCUMENTS / (time.perf_counter() - started)
    started = time.perf_counter()
    count = len(await db.persons.find({}).to_list(None))
    result["read_docs_per_s"] = count / (time.perf_counter() - started)
    await client.drop_database(db.name)
    await client.close()
    return result


async def run(amqp_url: str, mongo_url: str) -> dict[str, object]:
    raw: list[float] = []
    stack: list[float] = []
    for _ in range(ROUNDS):
        raw.append(await raw_amqp(amqp_url))
        stack.append(
            await skolsynk_stack(
                ServiceSettings(
                    broker=BrokerSettings(amqp_url=amqp_url),
                    store=StoreSettings(mongodb_url=mongo_url),
                    observability=ObservabilitySettings(health_host="127.0.0.1", health_port=0),
                    lifecycle=LifecycleSettings(readiness_grace_seconds=0),
                )
            )
        )
    mongo = await raw_mongo(mongo_url)
    return {
        "messages": MESSAGES,
        "rounds": ROUNDS,
        "raw_amqp_msgs_per_s": raw,
        "stack_msgs_per_s": stack,
        "stack_to_raw_ratio": statistics.median(s / r for s, r in zip(stack, raw, strict=True)),
        "mongo": mongo,
    }


def main() -> int:
    configure_logging(log_format="console", level="WARNING")
    ensure_rabbitmq()
    base = os.environ.get("AMQP_URL", DEFAULT_AMQP_URL)
    vhost = f"skolsynk-bench-{uuid.uuid4().hex[:6]}"
    create_vhost(vhost)
    mongo = start_mongo_wire_server()
    try:
        results = asyncio.run(run(amqp_url_with_vhost(base, vhost), mongo.url))
    finally:
        mongo.stop()
        delete_vhost(vhost)
    out = ROOT / "bench-results"
    out.mkdir(exist_ok=True)
    (out / "messaging.json").write_text(json.dumps(results, indent=2) + "\n")
    raw = results["raw_amqp_msgs_per_s"]
    stack = results["stack_msgs_per_s"]
    assert isinstance(raw, list)
    assert isinstance(stack, list)
    lines = [
        f"{'measure':<46} {'value':>12}",
        *(f"{'raw aio-pika publish+consume, round ' + str(i + 1):<46} {r:>9.0f}/s" for i, r in enumerate(raw)),
        *(f"{'skolsynk publish+consume+inbox, round ' + str(i + 1):<46} {s:>9.0f}/s" for i, s in enumerate(stack)),
        f"{'stack / raw (median of rounds)':<46} {results['stack_to_raw_ratio']:>12.2f}",
        *(f"{'mongo ' + k:<46} {v:>9.0f}/s" for k, v in results["mongo"].items()),  # type: ignore[union-attr]
    ]
    sys.stdout.write("\n".join(lines) + f"\nresults: {out / 'messaging.json'}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
