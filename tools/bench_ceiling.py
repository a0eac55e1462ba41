"""`make bench`'s raw ceilings: what the broker and the store do for a plain client, in the same run as
the scenario, so the scenario's figures can be read as ratios.

* the broker: aio-pika publish (confirms, 100 in flight) -> consume (manual acks) on a quorum queue;
* the store, empty (a fresh database): ``insert_many``, bulk upserts by ``_id`` and a full read;
* the store **holding the organiser** (taken after the full sync, on the bench's own database, beside
  the data the services wrote): whole-document bulk upserts by ``_id`` in batches of 100 over a
  collection as large as the organiser (as the normaliser writes entities), single-document upserts each
  in its own transaction (as a consumer's handler writes), and single-document inserts one at a time
  (what an intake that answers after one durable write can reach);
* skolsynk's own publisher and idempotent consumer (a Mongo transaction with the inbox per message).

Not a library: ``tools/bench.py`` imports it from this folder.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence
from typing import Any

import aio_pika
from pymongo import AsyncMongoClient, InsertOne, UpdateOne

from skolsynk.contracts import Envelope, SyncRequested
from skolsynk.messaging import MessageContext, OutgoingMessage
from skolsynk.service import ServiceApp
from skolsynk.settings import BrokerSettings, LifecycleSettings, ObservabilitySettings, ServiceSettings, StoreSettings

Client = AsyncMongoClient[dict[str, Any]]

#: Seconds an AMQP connection may take to open (a broker busy with other runs' vhosts can stall the
#: handshake; without a bound the benchmark would wait for ever).
CONNECT_TIMEOUT = 120.0

#: Document writes one vendor change needs by design, whatever the batching: the vendor view (what the
#: vendor holds, to compute the next delta) and the delivery-ledger entry (the receipt). The outbox (the
#: exactly-once hand-off to the broker) writes a bundle per batch of changes, not a document per change,
#: and the entity write of the record it came from is added per record (shared by every vendor the
#: record reaches): see :func:`minimum_writes_per_change`.
DESIGN_WRITES_PER_CHANGE = 2


def minimum_writes_per_change(records: int, vendor_changes: int) -> float:
    """The fewest document writes per vendor change the design needs: :data:`DESIGN_WRITES_PER_CHANGE`
    plus the records' entity writes spread over the changes they cause."""
    return DESIGN_WRITES_PER_CHANGE + records / max(1, vendor_changes)


async def raw_amqp(amqp_url: str, body: bytes, count: int) -> float:
    """Messages per second: publish with confirms (100 in flight), consume with manual acks, plain aio-pika."""
    queue_name = f"bench.raw.{uuid.uuid4().hex[:8]}"
    connection = await aio_pika.connect(amqp_url, timeout=CONNECT_TIMEOUT)
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
            if received == count:
                done.set()

        started = time.perf_counter()
        consumer_tag = await queue.consume(on_message)
        window = asyncio.Semaphore(100)

        async def publish() -> None:
            async with window:
                await channel.default_exchange.publish(
                    aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT), routing_key=queue_name
                )

        await asyncio.gather(*(publish() for _ in range(count)))
        await done.wait()
        elapsed = time.perf_counter() - started
        await queue.cancel(consumer_tag)
        await queue.delete(if_unused=False, if_empty=False)
    return count / elapsed


async def raw_mongo_empty(mongo_url: str, document: dict[str, Any], count: int) -> dict[str, float]:
    """Documents per second on a fresh database: insert_many, bulk upserts by _id (batches of 100), a read."""
    client: Client = AsyncMongoClient(mongo_url)
    db = client[f"bench_raw_{uuid.uuid4().hex[:6]}"]
    docs = [{**document, "_id": f"e{n}", "n": n} for n in range(count)]
    result: dict[str, float] = {}
    try:
        started = time.perf_counter()
        await db.entities.insert_many(docs, ordered=False)
        result["insert_many_docs_per_s"] = count / (time.perf_counter() - started)
        started = time.perf_counter()
        for first in range(0, count, 100):
            batch = docs[first : first + 100]
            await db.entities.bulk_write(
                [UpdateOne({"_id": d["_id"]}, {"$set": {"n": d["n"] + 1}}, upsert=True) for d in batch],
                ordered=False,
            )
        result["bulk_upsert_docs_per_s"] = count / (time.perf_counter() - started)
        started = time.perf_counter()
        read = len(await db.entities.find({}).to_list(None))
        result["read_docs_per_s"] = read / (time.perf_counter() - started)
    finally:
        await client.drop_database(db.name)
        await client.close()
    return result


async def raw_mongo_populated(
    mongo_url: str, database: str, documents: Sequence[dict[str, Any]], *, upserts: int, transactions: int
) -> dict[str, Any]:
    """The store's ceiling while it holds the organiser (call it after the full sync): a collection as large
    as ``documents`` is filled in the bench's database (not timed), then timed on it

    * ``bulk_upsert_docs_per_s``: whole-document upserts by ``_id`` of existing documents, batches of 100,
      unordered (as entities and vendor views are written);
    * ``transaction_upsert_docs_per_s``: one upsert per transaction, one transaction at a time (a handler
      writing one document with its inbox entry would add one more write);
    * ``single_insert_docs_per_s``: new documents, one ``insert_one`` at a time.
    """
    client: Client = AsyncMongoClient(mongo_url)
    collection = client[database][f"bench_ceiling_{uuid.uuid4().hex[:6]}"]
    prepared = [{**d, "_id": f"e{n}"} for n, d in enumerate(documents)]
    result: dict[str, Any] = {"documents_held": len(prepared)}
    try:
        for first in range(0, len(prepared), 1000):
            await collection.bulk_write([InsertOne(d) for d in prepared[first : first + 1000]], ordered=False)
        upserts = min(upserts, len(prepared))
        started = time.perf_counter()
        for first in range(0, upserts, 100):
            batch = prepared[first : min(upserts, first + 100)]
            await collection.bulk_write(
                [
                    UpdateOne({"_id": d["_id"]}, {"$set": {**{k: v for k, v in d.items() if k != "_id"}, "v": 2}})
                    for d in batch
                ],
                ordered=False,
            )
        result["bulk_upsert_docs_per_s"] = upserts / (time.perf_counter() - started)
        transactions = min(transactions, len(prepared))
        started = time.perf_counter()
        for d in prepared[:transactions]:
            async with client.start_session() as session, await session.start_transaction():
                await collection.update_one({"_id": d["_id"]}, {"$set": {"v": 3}}, upsert=True, session=session)
        result["transaction_upsert_docs_per_s"] = transactions / (time.perf_counter() - started)
        result["single_insert_docs_per_s"] = await single_inserts(
            collection, [{k: v for k, v in d.items() if k != "_id"} for d in prepared[:transactions]]
        )
    finally:
        await collection.drop()
        await client.close()
    return result


async def single_inserts(collection: Any, documents: Sequence[dict[str, Any]]) -> float:
    """Documents per second: ``insert_one`` of each (fresh ids), one at a time, awaited before the next."""
    started = time.perf_counter()
    for document in documents:
        await collection.insert_one({**document, "_id": uuid.uuid4().hex})
    return len(documents) / (time.perf_counter() - started)


async def skolsynk_messaging(amqp_url: str, mongo_url: str, count: int, tenant_id: str) -> float:
    """Messages per second through Publisher.publish_many and an idempotent Consumer (inbox transaction)."""
    settings = ServiceSettings(
        broker=BrokerSettings(amqp_url=amqp_url),
        store=StoreSettings(mongodb_url=mongo_url),
        observability=ObservabilitySettings(health_host="127.0.0.1", health_port=0),
        lifecycle=LifecycleSettings(readiness_grace_seconds=0),
    )
    settings.broker.namespace = f"bench{uuid.uuid4().hex[:6]}"
    settings.store.mongodb_database = f"bench_{settings.broker.namespace}"
    app = ServiceApp.create("bench", settings)
    queue = app.queue_name("connectors", "sync-requests")
    done = asyncio.Event()
    handled = 0

    async def handler(envelope: Envelope, context: MessageContext) -> None:
        nonlocal handled
        handled += 1
        if handled == count:
            done.set()

    app.add_consumer(queue, handler)
    await app.start()
    try:
        envelopes = [
            SyncRequested(source_id=f"source-{n}", requested_by="bench").to_envelope(tenant_id=tenant_id)
            for n in range(count)
        ]
        started = time.perf_counter()
        await app.publisher.publish_many(
            OutgoingMessage(e, app.topology.exchange("control"), "sync.requested") for e in envelopes
        )
        await done.wait()
        elapsed = time.perf_counter() - started
    finally:
        await app.drain(5)
        await app.close()
        client: Client = AsyncMongoClient(mongo_url)
        await client.drop_database(settings.store.mongodb_database)
        await client.close()
    return count / elapsed


async def ceiling(
    amqp_url: str,
    mongo_url: str,
    *,
    page_body: bytes,
    change_body: bytes,
    entity_doc: dict[str, Any],
    messages: int,
    documents: int,
    tenant_id: str,
) -> dict[str, Any]:
    """The broker, the empty store and skolsynk's messaging, one after the other."""
    return {
        "amqp_page_msgs_per_s": await raw_amqp(amqp_url, page_body, max(50, messages // 10)),
        "amqp_change_msgs_per_s": await raw_amqp(amqp_url, change_body, messages),
        "mongo": await raw_mongo_empty(mongo_url, entity_doc, documents),
        "skolsynk_publish_consume_inbox_msgs_per_s": await skolsynk_messaging(
            amqp_url, mongo_url, messages // 2, tenant_id
        ),
    }
