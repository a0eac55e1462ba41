"""`make bench`: skolsynk end to end against the raw ceiling of its broker and database, in one run on one
machine. No assertions: the benchmark reports figures and ratios, the tests check behaviour.

Measured (docs/benchmarks.md explains each and has the latest figures):

1. **Raw ceiling**, before and after the scenario (the machine is shared and noisy):
   * aio-pika publish (confirms, 100 in flight) -> consume (manual acks) on a quorum queue, for the two
     message sizes skolsynk sends: a source page (``BENCH_PAGE`` records) and a per-vendor change;
   * the Mongo wire server: ``insert_many``, bulk upserts by ``_id`` (batches of 100, like the
     normaliser) and a full read, of entity-sized documents;
   * skolsynk's own publisher and idempotent consumer (a Mongo transaction per message) on the same broker.
2. **Full initial sync** of a synthetic organiser (``BENCH_SIZE``: S, M (default), L or a number of
   persons): the normaliser, a queue-mode vendor's dispatcher and the GDPR service as processes, the
   organiser published as a full run (as a connector does); from the first page published until the
   vendor's own queue holds exactly what the normaliser's rules select. End-to-end time, records/s,
   vendor changes/s, and the ratio to the ceiling.
3. **No-change resync**: the same snapshot again; time until the normaliser has projected it, and the
   deliveries it caused (must be 0).
4. **A 1 % change set** (students moving, leaving, joining): an incremental run; time until the last delivery.
5. **Change latency** under a steady trickle (``BENCH_TRICKLE_SECONDS`` at ``BENCH_TRICKLE_RATE`` changes/s,
   each a one-record incremental run): from publishing the source event until the vendor's queue delivers
   the change; p50, p90, p99, max.
6. **Peak RSS** per process (VmHWM).

Writes a table to stdout and JSON to ``.bench/bench-<size>.json``. Environment: ``BENCH_SIZE``,
``BENCH_SEED`` (1), ``BENCH_PAGE`` (500), ``BENCH_MESSAGES`` (2000, raw AMQP messages per size),
``BENCH_DOCUMENTS`` (5000, raw Mongo documents), ``BENCH_TRICKLE_SECONDS`` (60), ``BENCH_TRICKLE_RATE``
(1), ``BENCH_TIMEOUT`` (3600 s per phase).
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import statistics
import sys
import time
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aio_pika
from pymongo import AsyncMongoClient, UpdateOne
from scenario import ROOT, Expectation, FeedConsumer, Stack, exactly, metric, peak_rss_mb, wait_for

from dispatcher.onboarding import feed_queue_name
from skolsynk.contracts import Envelope, SyncRequested
from skolsynk.contracts.source import SourceRecord, SourceRecordPage
from skolsynk.contracts.vendor import VendorChange
from skolsynk.devstack import publish_messages, write_vendor_catalogue
from skolsynk.domain.ids import entity_id
from skolsynk.domain.ss12000 import EntityKind
from skolsynk.domain.subscription import VendorSubscription
from skolsynk.logging import configure_logging
from skolsynk.messaging import MessageContext, OutgoingMessage
from skolsynk.service import ServiceApp
from skolsynk.settings import BrokerSettings, LifecycleSettings, ObservabilitySettings, ServiceSettings, StoreSettings
from skolsynk.storage.subscriptions import SubscriptionStore
from skolsynk.synthetic import SizeSpec, change_set, full_run, generate, incremental_run, today

OUT = ROOT / ".bench"
NAMESPACE = "bench"
DATABASE = "skolsynk_bench"
TENANT = "bench-kommun"
SOURCE = "bench-source"
VENDOR = "bench-queue"

SIZE = os.environ.get("BENCH_SIZE", "M")
SEED = int(os.environ.get("BENCH_SEED", "1"))
PAGE = int(os.environ.get("BENCH_PAGE", "500"))
MESSAGES = int(os.environ.get("BENCH_MESSAGES", "2000"))
DOCUMENTS = int(os.environ.get("BENCH_DOCUMENTS", "5000"))
TRICKLE_SECONDS = float(os.environ.get("BENCH_TRICKLE_SECONDS", "60"))
TRICKLE_RATE = float(os.environ.get("BENCH_TRICKLE_RATE", "1"))
TIMEOUT = float(os.environ.get("BENCH_TIMEOUT", "3600"))


def say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(share * (len(ordered) - 1))))] if ordered else float("nan")


# --- the raw ceiling -------------------------------------------------------------------------------------


async def raw_amqp(amqp_url: str, body: bytes, count: int) -> float:
    """Messages per second: publish with confirms (100 in flight), consume with manual acks, plain aio-pika."""
    queue_name = f"bench.raw.{uuid.uuid4().hex[:8]}"
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


async def raw_mongo(mongo_url: str, document: dict[str, Any]) -> dict[str, float]:
    """Documents per second: insert_many, bulk upserts by _id in batches of 100, a full read."""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_url)
    db = client[f"bench_raw_{uuid.uuid4().hex[:6]}"]
    docs = [{**document, "_id": f"e{n}", "n": n} for n in range(DOCUMENTS)]
    result: dict[str, float] = {}
    started = time.perf_counter()
    await db.entities.insert_many(docs, ordered=False)
    result["insert_many_docs_per_s"] = DOCUMENTS / (time.perf_counter() - started)
    started = time.perf_counter()
    for first in range(0, DOCUMENTS, 100):
        batch = docs[first : first + 100]
        await db.entities.bulk_write(
            [UpdateOne({"_id": d["_id"]}, {"$set": {"n": d["n"] + 1}}, upsert=True) for d in batch], ordered=False
        )
    result["bulk_upsert_docs_per_s"] = DOCUMENTS / (time.perf_counter() - started)
    started = time.perf_counter()
    count = len(await db.entities.find({}).to_list(None))
    result["read_docs_per_s"] = count / (time.perf_counter() - started)
    await client.drop_database(db.name)
    await client.close()
    return result


async def skolsynk_messaging(amqp_url: str, mongo_url: str, body_count: int) -> float:
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
        if handled == body_count:
            done.set()

    app.add_consumer(queue, handler)
    await app.start()
    try:
        envelopes = [
            SyncRequested(source_id=f"source-{n}", requested_by="bench").to_envelope(tenant_id=TENANT)
            for n in range(body_count)
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
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_url)
        await client.drop_database(settings.store.mongodb_database)
        await client.close()
    return body_count / elapsed


async def ceiling(stack: Stack, page_body: bytes, change_body: bytes, entity_doc: dict[str, Any]) -> dict[str, Any]:
    pages = max(50, MESSAGES // 10)
    return {
        "amqp_page_msgs_per_s": await raw_amqp(stack.amqp_url, page_body, pages),
        "amqp_change_msgs_per_s": await raw_amqp(stack.amqp_url, change_body, MESSAGES),
        "mongo": await raw_mongo(stack.mongo_url, entity_doc),
        "skolsynk_publish_consume_inbox_msgs_per_s": await skolsynk_messaging(
            stack.amqp_url, stack.mongo_url, MESSAGES // 2
        ),
    }


# --- the scenario ----------------------------------------------------------------------------------------


class Bench:
    def __init__(self, stack: Stack, records: list[SourceRecord]) -> None:
        self.stack = stack
        self.records = records
        self.feed = FeedConsumer(stack.amqp_url, feed_queue_name(NAMESPACE, VENDOR))
        self.subscription = VendorSubscription(
            tenant_id=TENANT,
            vendor_id=VENDOR,
            school_unit_codes=frozenset(
                str(r.data["school_unit_code"]) for r in records if r.kind is EntityKind.SCHOOL_UNIT
            ),
            test_mode=False,
        )

    def normaliser(self, queue: str, outcome: str = "ack") -> float:
        name = f"{NAMESPACE}.normaliser.{queue}"
        return metric(
            self.stack.services["normaliser"], "skolsynk_messages_consumed_total", queue=name, outcome=outcome
        )

    def delivered(self) -> float:
        service = self.stack.services[f"dispatcher-{VENDOR}"]
        return metric(
            service, "skolsynk_messages_consumed_total", queue=f"{NAMESPACE}.dispatcher.{VENDOR}", outcome="ack"
        )

    async def publish(self, messages: Iterable[Any]) -> int:
        return await publish_messages(
            self.stack.amqp_url, f"{NAMESPACE}.source", f"egil.{TENANT}", messages, tenant_id=TENANT
        )

    async def settled(self) -> None:
        """The normaliser has handled every source message and projected, and nothing is in flight."""
        quiet_since = [time.monotonic()]
        last = [""]

        def idle() -> bool:
            normaliser = self.stack.services["normaliser"]
            state = repr(
                [
                    self.normaliser("source-events"),
                    self.normaliser("projections"),
                    metric(normaliser, "skolsynk_consumer_inflight"),
                    metric(normaliser, "skolsynk_outbox_pending"),
                    self.delivered(),
                ]
            )
            busy = (
                metric(normaliser, "skolsynk_consumer_inflight") > 0
                or metric(normaliser, "skolsynk_outbox_pending") > 0
            )
            if state != last[0] or busy:
                last[0], quiet_since[0] = state, time.monotonic()
                return False
            return time.monotonic() - quiet_since[0] >= 5

        await wait_for(idle, timeout=TIMEOUT, interval=0.5, what="the normaliser to settle")

    async def full_sync(self, expected: dict[Any, Any]) -> dict[str, Any]:
        messages = list(full_run(self.records, source_id=SOURCE, source_kind="egil", page_size=PAGE))
        started = time.monotonic()
        await self.publish(messages)
        published = time.monotonic() - started
        progress = [time.monotonic()]

        def done() -> bool:
            if time.monotonic() - progress[0] > 30:
                progress[0] = time.monotonic()
                say(f"    {time.monotonic() - started:6.0f}s  {len(self.feed.held):,}/{len(expected):,} at the vendor")
            return exactly(self.feed, expected)

        await wait_for(done, timeout=TIMEOUT, interval=0.5, what="the full sync")
        elapsed = self.feed.last_at - started
        return {
            "records": len(self.records),
            "vendor_changes": len(expected),
            "messages_published": len(messages),
            "publish_seconds": published,
            "seconds": elapsed,
            "records_per_s": len(self.records) / elapsed,
            "vendor_changes_per_s": len(expected) / elapsed,
        }

    async def resync(self) -> dict[str, Any]:
        before_feed, before_delivered = self.feed.received, self.delivered()
        messages = list(full_run(self.records, source_id=SOURCE, source_kind="egil", page_size=PAGE))
        events = self.normaliser("source-events")
        projections = self.normaliser("projections")
        started = time.monotonic()
        await self.publish(messages)
        await wait_for(
            lambda: (
                self.normaliser("source-events") >= events + len(messages)
                and self.normaliser("projections") > projections
            ),
            timeout=TIMEOUT,
            interval=0.5,
            what="the resync to be projected",
        )
        await self.settled()
        return {
            "seconds_until_projected": time.monotonic() - started - 5.0,
            "deliveries": self.feed.received - before_feed,
            "dispatcher_acks": self.delivered() - before_delivered,
        }

    async def change(self, changes: Any, expected: dict[Any, Any]) -> dict[str, Any]:
        messages = list(incremental_run(changes.changed, changes.deleted, source_id=SOURCE, source_kind="egil"))
        before = self.feed.received
        started = time.monotonic()
        await self.publish(messages)
        await wait_for(lambda: exactly(self.feed, expected), timeout=TIMEOUT, interval=0.2, what="the change set")
        return {
            "moved": len(changes.moved),
            "left": len(changes.left),
            "joined": len(changes.joined),
            "records_changed": len(changes.changed),
            "records_deleted": len(changes.deleted),
            "deliveries": self.feed.received - before,
            "seconds_until_last_delivery": self.feed.last_at - started,
        }

    async def trickle(self, records: list[SourceRecord]) -> dict[str, Any]:
        """One changed student every 1/rate seconds (a new family name), each its own incremental run."""
        students = [r for r in records if r.kind is EntityKind.PERSON and r.data.get("enrolments")]
        count = max(1, int(TRICKLE_SECONDS * TRICKLE_RATE))
        step = max(1, len(students) // count)
        sent: dict[str, float] = {}
        for n in range(count):
            student = students[(n * step) % len(students)]
            changed = SourceRecord(
                kind=student.kind,
                key=student.key,
                data={**student.data, "family_name": f"{student.data['family_name']}-Trickle{n}"},
            )
            vendor_id = str(entity_id(TENANT, SOURCE, EntityKind.PERSON, student.key))
            messages = list(incremental_run([changed], [], source_id=SOURCE, source_kind="egil"))
            sent[vendor_id] = time.monotonic()
            await self.publish(messages)
            await asyncio.sleep(max(0.0, 1 / TRICKLE_RATE - (time.monotonic() - sent[vendor_id])))
        await wait_for(
            lambda: all(self.feed.arrivals.get(k, 0) >= t for k, t in sent.items()),
            timeout=TIMEOUT,
            interval=0.2,
            what="the trickle to be delivered",
        )
        latencies = [self.feed.arrivals[k] - t for k, t in sent.items()]
        return {
            "changes": count,
            "rate_per_s": TRICKLE_RATE,
            "p50_s": percentile(latencies, 0.5),
            "p90_s": percentile(latencies, 0.9),
            "p99_s": percentile(latencies, 0.99),
            "max_s": max(latencies),
            "mean_s": statistics.fmean(latencies),
        }


async def scenario(stack: Stack, records: list[SourceRecord]) -> dict[str, Any]:
    bench = Bench(stack, records)
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(stack.mongo_url)
    await SubscriptionStore(client[DATABASE]).save(bench.subscription)
    await client.close()
    await bench.feed.start()
    results: dict[str, Any] = {}
    try:
        say("  computing what the vendor should hold (the normaliser's rules, locally) ...")
        expected = Expectation(TENANT, {SOURCE: records}, today()).desired(bench.subscription)
        say(f"  full initial sync: {len(records):,} records -> {len(expected):,} vendor changes ...")
        results["full_sync"] = await bench.full_sync(expected)
        await bench.settled()
        say("  no-change resync ...")
        results["no_change_resync"] = await bench.resync()
        say("  1 % change set ...")
        changes = change_set(records, seed=SEED, moves=0.005, leavers=0.0025, joiners=0.0025)
        after = Expectation(TENANT, {SOURCE: changes.records}, today()).desired(bench.subscription)
        results["change_set"] = await bench.change(changes, after)
        await bench.settled()
        say(f"  change latency: {TRICKLE_SECONDS:.0f}s of {TRICKLE_RATE:g} change/s ...")
        results["trickle"] = await bench.trickle(changes.records)
    finally:
        await bench.feed.close()
    return results


def sample_messages(records: list[SourceRecord]) -> tuple[bytes, bytes, dict[str, Any]]:
    """Bodies of the sizes skolsynk sends: a source page, a vendor change (a student); an entity document."""
    page = SourceRecordPage(run_id=uuid.uuid4(), source_id=SOURCE, page=0, records=records[:PAGE])
    page_body = page.to_envelope(tenant_id=TENANT).model_dump_json().encode()
    expectation = Expectation(TENANT, {SOURCE: records[: PAGE * 2]}, today())
    subscription = VendorSubscription(
        tenant_id=TENANT,
        vendor_id=VENDOR,
        school_unit_codes=frozenset(
            str(r.data["school_unit_code"]) for r in records if r.kind is EntityKind.SCHOOL_UNIT
        ),
    )
    person = next(r for r in expectation.desired(subscription).values() if r.kind is EntityKind.PERSON)
    change = VendorChange(
        vendor_id=VENDOR,
        entity_kind=person.kind,
        entity_id=person.id,
        operation="upsert",
        version=1,
        resource=person.resource,
        school_unit_ids=[uuid.UUID(u) for u in person.school_unit_ids],
        test_mode=False,
        reason="bench",
    )
    change_body = change.to_envelope(tenant_id=TENANT).model_dump_json().encode()
    student = next(r for r in records if r.kind is EntityKind.PERSON)
    entity_doc = {"tenant_id": TENANT, "source_id": SOURCE, "kind": "person", "key": student.key, "data": student.data}
    return page_body, change_body, entity_doc


def machine() -> dict[str, Any]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in line
        ),
        platform.processor(),
    )
    memory = next(
        (
            int(line.split()[1]) // 1024
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal")
        ),
        0,
    )
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_mb": memory,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average_at_start": os.getloadavg(),
    }


def table(results: dict[str, Any]) -> str:
    c0, c1 = results["ceiling_before"], results["ceiling_after"]
    full, resync, change, trickle = (results[k] for k in ("full_sync", "no_change_resync", "change_set", "trickle"))
    ratios, size = results["ratios"], results["size"]

    def both(*path: str, unit: str) -> str:
        first, second = c0, c1
        for key in path:
            first, second = first[key], second[key]
        return f"{first:,.0f} / {second:,.0f} {unit} (before / after)"

    last = change["seconds_until_last_delivery"]
    rows = [
        ("raw aio-pika, source-page messages", both("amqp_page_msgs_per_s", unit="msg/s")),
        ("raw aio-pika, change messages", both("amqp_change_msgs_per_s", unit="msg/s")),
        ("raw Mongo insert_many", both("mongo", "insert_many_docs_per_s", unit="docs/s")),
        ("raw Mongo bulk upsert (100 per batch)", both("mongo", "bulk_upsert_docs_per_s", unit="docs/s")),
        ("raw Mongo read", both("mongo", "read_docs_per_s", unit="docs/s")),
        ("skolsynk publish+consume+inbox", both("skolsynk_publish_consume_inbox_msgs_per_s", unit="msg/s")),
        (f"full sync {size}: records", f"{full['records']:,} -> {full['vendor_changes']:,} vendor changes"),
        (f"full sync {size}: end to end", f"{full['seconds']:,.1f} s"),
        (f"full sync {size}: throughput", f"{full['records_per_s']:,.1f} records/s"),
        (f"full sync {size}: vendor changes", f"{full['vendor_changes_per_s']:,.1f} changes/s"),
        ("  / raw AMQP change messages", f"{ratios['changes_to_amqp']:.4f}"),
        ("  / raw Mongo bulk upserts", f"{ratios['changes_to_mongo_bulk_upsert']:.4f}"),
        ("  / skolsynk messaging (publish+inbox)", f"{ratios['changes_to_skolsynk_messaging']:.3f}"),
        ("no-change resync", f"{resync['seconds_until_projected']:,.1f} s, {resync['deliveries']} deliveries"),
        ("1 % change set", f"{change['records_changed'] + change['records_deleted']:,} records changed"),
        ("1 % change set: deliveries", f"{change['deliveries']:,}, the last after {last:,.1f} s"),
        (f"change latency ({trickle['changes']} at {trickle['rate_per_s']:g}/s)", f"p50 {trickle['p50_s']:.2f} s"),
        (
            "change latency p90 / p99 / max",
            f"{trickle['p90_s']:.2f} / {trickle['p99_s']:.2f} / {trickle['max_s']:.2f} s",
        ),
        *((f"peak RSS {name}", f"{mb:,.0f} MiB") for name, mb in results["peak_rss_mb"].items()),
    ]
    width = max(len(r[0]) for r in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


async def run(stack: Stack, records: list[SourceRecord], size: str) -> dict[str, Any]:
    page_body, change_body, entity_doc = sample_messages(records)
    say(f"  raw ceiling (source page {len(page_body):,} B, change {len(change_body):,} B) ...")
    before = await ceiling(stack, page_body, change_body, entity_doc)
    catalogue = write_vendor_catalogue(stack.log_dir / "vendors", VENDOR)
    stack.env["SKOLSYNK_VENDOR_CATALOGUE_DIR"] = str(catalogue)
    stack.start_service("normaliser", "normaliser", SKOLSYNK_HANDLER_TIMEOUT_SECONDS=str(int(TIMEOUT)))
    stack.start_service(f"dispatcher-{VENDOR}", "dispatcher", SKOLSYNK_VENDOR_ID=VENDOR)
    stack.start_service("gdpr", "gdpr")
    for service in stack.services.values():
        await asyncio.to_thread(service.wait_ready, 120)
    results: dict[str, Any] = {
        "size": size,
        "seed": SEED,
        "page_size": PAGE,
        "message_bytes": {"source_page": len(page_body), "vendor_change": len(change_body)},
        "machine": machine(),
        "started_at": datetime.now(UTC).isoformat(),
        "ceiling_before": before,
    }
    results |= await scenario(stack, records)
    results["peak_rss_mb"] = {name: peak_rss_mb(s.process.pid) for name, s in stack.services.items()}
    if stack.mongo is not None:
        results["peak_rss_mb"]["secantusd (Mongo wire server)"] = peak_rss_mb(stack.mongo.process.pid)
    results["peak_rss_mb"]["bench (generator, expectation, consumer)"] = peak_rss_mb(os.getpid())
    exits = await asyncio.to_thread(stack.stop_services)
    results["service_exit_codes"] = exits
    say("  raw ceiling again ...")
    results["ceiling_after"] = after = await ceiling(stack, page_body, change_body, entity_doc)
    changes_per_s = results["full_sync"]["vendor_changes_per_s"]
    amqp = statistics.fmean([before["amqp_change_msgs_per_s"], after["amqp_change_msgs_per_s"]])
    upserts = statistics.fmean([before["mongo"]["bulk_upsert_docs_per_s"], after["mongo"]["bulk_upsert_docs_per_s"]])
    messaging = statistics.fmean(
        [before["skolsynk_publish_consume_inbox_msgs_per_s"], after["skolsynk_publish_consume_inbox_msgs_per_s"]]
    )
    results["ratios"] = {
        "changes_to_amqp": changes_per_s / amqp,
        "changes_to_mongo_bulk_upsert": changes_per_s / upserts,
        "changes_to_skolsynk_messaging": changes_per_s / messaging,
    }
    results["finished_at"] = datetime.now(UTC).isoformat()
    return results


def main() -> int:
    configure_logging(log_format="console", level="WARNING")
    size_arg = SIZE.upper()
    size: str | SizeSpec = SizeSpec.for_persons(int(size_arg)) if size_arg.isdigit() else size_arg
    started = time.monotonic()
    records = generate(size, seed=SEED)
    say(f"skolsynk bench: size {size_arg}, {len(records):,} records (generated in {time.monotonic() - started:.1f}s)")
    stack = Stack.start(
        log_dir=OUT / "logs", namespace=NAMESPACE, database=DATABASE, vhost=f"skolsynk-bench-{uuid.uuid4().hex[:6]}"
    )
    try:
        results = asyncio.run(run(stack, records, size_arg))
    finally:
        stack.close()
    OUT.mkdir(exist_ok=True)
    path = OUT / f"bench-{size_arg}.json"
    path.write_text(json.dumps(results, indent=2, default=str) + "\n")
    say(table(results))
    say(f"results: {path}   (the whole run took {time.monotonic() - started:.0f}s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
