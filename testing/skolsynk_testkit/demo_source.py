"""``python -m skolsynk_testkit.demo_source``: a fake source for the docker-compose demo.

It subscribes a demo organiser to a demo vendor (live, not test mode) and publishes a synthetic full
snapshot (:mod:`skolsynk_testkit.synthetic`: made-up names, never real people) on the ``source`` exchange, as a
connector would; with ``--every SECONDS`` it sends one again at that interval (with a few students
renamed, so the dashboards show changes flowing). Settings come from the environment, as the services'.
Not for production: it writes a subscription.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys

import stamina
from aio_pika.exceptions import CONNECTION_EXCEPTIONS
from pymongo.errors import PyMongoError

from skolsynk.contracts.source import SourceRecord
from skolsynk.domain.ss12000 import EntityKind
from skolsynk.domain.subscription import VendorSubscription
from skolsynk.logging import configure_logging, get_logger
from skolsynk.messaging import Broker, Publisher, topology_for
from skolsynk.observability import Metrics
from skolsynk.settings import ServiceSettings
from skolsynk.storage import create_client
from skolsynk.storage.subscriptions import SubscriptionStore
from skolsynk_testkit.synthetic import full_run, organiser, school_unit_codes

log = get_logger(__name__)

PRODUCER = "demo-source"
CONNECT_TIMEOUT_SECONDS = 120.0


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="python -m skolsynk_testkit.demo_source", description=__doc__.split("\n", 1)[0])
    root.add_argument("--tenant", default="demo-kommun")
    root.add_argument("--vendor", default="demo-vendor")
    root.add_argument("--source", default="demo-egil")
    root.add_argument("--school-units", type=int, default=2)
    root.add_argument("--students-per-unit", type=int, default=12)
    root.add_argument("--every", type=float, default=0.0, help="seconds between snapshots; 0: send one and stop")
    return root


def renamed(records: list[SourceRecord], rng: random.Random, count: int = 2) -> list[SourceRecord]:
    """The same snapshot with ``count`` persons given another (made-up) first name."""
    persons = [i for i, r in enumerate(records) if r.kind is EntityKind.PERSON]
    changed = list(records)
    for index in rng.sample(persons, min(count, len(persons))):
        record = changed[index]
        changed[index] = SourceRecord(
            kind=record.kind, key=record.key, data={**record.data, "given_name": rng.choice(["Alva", "Elis", "Tilde"])}
        )
    return changed


async def run(args: argparse.Namespace, settings: ServiceSettings) -> None:
    records = organiser(seed=1, school_units=args.school_units, students_per_unit=args.students_per_unit)
    mongo = create_client(settings.store, app_name=PRODUCER)
    try:
        async for attempt in stamina.retry_context(on=PyMongoError, attempts=None, timeout=CONNECT_TIMEOUT_SECONDS):
            with attempt:
                await SubscriptionStore(mongo[settings.store.mongodb_database]).save(
                    VendorSubscription(
                        tenant_id=args.tenant,
                        vendor_id=args.vendor,
                        school_unit_codes=frozenset(school_unit_codes(records)),
                        test_mode=False,
                    )
                )
    finally:
        await mongo.close()
    broker_settings = settings.broker
    topology = topology_for(broker_settings, vendor_ids=[args.vendor])
    metrics = Metrics()
    broker = Broker(broker_settings, topology, metrics, name=PRODUCER)
    async for attempt in stamina.retry_context(
        on=CONNECTION_EXCEPTIONS, attempts=None, timeout=CONNECT_TIMEOUT_SECONDS
    ):
        with attempt:
            await broker.connect(timeout=CONNECT_TIMEOUT_SECONDS)
    publisher = Publisher(broker, metrics, timeout_seconds=broker_settings.publish_timeout_seconds)
    await publisher.start()
    rng = random.Random(7)  # noqa: S311 - made-up names for a demo, not security
    try:
        snapshot = records
        while True:
            sent = 0
            for message in full_run(snapshot, source_id=args.source, source_kind="egil", page_size=20):
                await publisher.publish(
                    message.to_envelope(tenant_id=args.tenant, producer=PRODUCER),
                    exchange=topology.exchange("source"),
                    routing_key=f"egil.{args.tenant}",
                )
                sent += 1
            log.info("demo_snapshot_sent", tenant_id=args.tenant, records=len(snapshot), messages=sent)
            if args.every <= 0:
                return
            await asyncio.sleep(args.every)
            snapshot = renamed(records, rng)
    finally:
        await publisher.close()
        await broker.close()


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    settings = ServiceSettings()
    configure_logging(
        log_format=settings.observability.log_format, level=settings.observability.log_level, service=PRODUCER
    )
    try:
        asyncio.run(run(args, settings))
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
