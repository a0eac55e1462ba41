"""`make bench`: skolsynk end to end against the raw ceiling of its broker and database, in one run on one
machine. No assertions: the benchmark reports figures, ratios and counts; the tests check behaviour.

The stack: the normaliser, five vendors' dispatchers (two EGIL SCIM push vendors against the fake EGIL
vendor server, three queue-mode vendors, each with its own selection of school units, roles and school
years), the GDPR service and the EGIL receiver, each its own process, on a RabbitMQ vhost of its own and
the Mongo wire server. Every service is awaited through ``/readyz``, which answers 200 only once the
service has started (start-up hooks run, consumers attached). Only the services' public surface is used:
messages, HTTP, ``/metrics`` and settings.

Phases (``BENCH_PHASES``, comma-separated; default all; docs/benchmarks.md explains each):

``ceiling``        the broker, the empty store and skolsynk's own messaging, before anything else;
``full``           a full initial sync of a synthetic organiser (``BENCH_SIZE``) to all five vendors;
``store_ceiling``  the store's ceiling while it holds the organiser (whole-document bulk upserts, one upsert
                   per transaction, single inserts) and the minimum document writes a vendor change needs;
``resync``         the same snapshot again: time as a share of the full sync, deliveries (must be 0);
``change``         a 1 % change set as one incremental run;
``one``            one person's change: store round trips and documents read and written;
``trickle``        change latency under a steady trickle (p50, p90, p99, max);
``scim``           the dispatcher pushing to the fake vendor server beside a bare aiohttp client pushing the
                   same bodies with the same concurrency;
``egil``           the EGIL receiver fed one object at a time over one kept-alive HTTPS connection beside a
                   bare loop of single-document inserts on the same store;
``ceiling_after``  the broker and empty-store ceiling again, the services idle (the machine is shared and
                   noisy).

``resync``, ``change``, ``one``, ``trickle`` and ``store_ceiling`` need the organiser in place, so they
bring ``full`` with them. Store work (round trips, documents read and written) comes from the services'
own counters (``skolsynk_store_*`` on /metrics), scraped before and after each phase.

Writes a table to stdout and JSON to ``.bench/bench-<size>.json``. Environment: ``BENCH_SIZE`` (S, M, L or
a number of persons; M), ``BENCH_SEED`` (1), ``BENCH_PAGE`` (500), ``BENCH_MESSAGES`` (2000 raw AMQP
messages), ``BENCH_DOCUMENTS`` (5000 raw Mongo documents), ``BENCH_TRANSACTIONS`` (1000 single-document
transactions and inserts), ``BENCH_TRICKLE_SECONDS`` (60), ``BENCH_TRICKLE_RATE`` (1),
``BENCH_PUSH_PERSONS`` (2000: the organiser of the SCIM push and EGIL intake phases),
``BENCH_PUSH_CONCURRENCY`` (32), ``BENCH_EGIL_OBJECTS`` (2000), ``BENCH_TIMEOUT`` (3600 s per phase; also
the normaliser's handler and projection budget, the latter at most 1700 s), ``BENCH_PHASES``,
``BENCH_TTL_SWEEP_SECONDS`` (the Mongo wire server's TTL sweep; 0, never, unless set: docs/benchmarks.md),
``BENCH_STORE_CACHE`` (the Mongo wire server's cache, which in memory holds all its data: 1G up to M, 10G at L).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import platform
import secrets
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import aio_pika
import aiohttp
import yaml
from bench_ceiling import CONNECT_TIMEOUT, ceiling, minimum_writes_per_change, raw_mongo_populated, single_inserts
from bench_http import (
    Pki,
    VendorServer,
    bare_scim_push,
    egil_bodies,
    egil_client,
    expected_ids,
    make_pki,
    start_vendor_server,
    vendor_ids,
)
from bench_store import StoreWork, difference, report, snapshot
from pymongo import AsyncMongoClient
from pymongo.errors import OperationFailure
from scenario import ROOT, Expectation, FeedConsumer, Stack, exactly, metric, peak_rss_mb, wait_for

from skolsynk.adapters.egil import egil_send_order, is_student
from skolsynk.contracts.source import SourceRecord, SourceRecordPage
from skolsynk.contracts.vendor import VendorChange
from skolsynk.domain.ids import entity_id
from skolsynk.domain.selection import ProjectedResource
from skolsynk.domain.ss12000 import EntityKind
from skolsynk.domain.subscription import MassDeletionGuard, Role, VendorSubscription
from skolsynk.logging import configure_logging
from skolsynk.messaging.vhosts import amqp_url_with_vhost
from skolsynk.settings import DEFAULT_AMQP_URL
from skolsynk.storage.sources import SecretBox, SourceStore
from skolsynk.storage.subscriptions import SubscriptionStore
from skolsynk_testkit.devstack import DevStackError, ServiceProcess, ensure_rabbitmq, rabbitmqctl
from skolsynk_testkit.synthetic import SizeSpec, change_set, full_run, generate, incremental_run, today

OUT = ROOT / ".bench"
NAMESPACE = "bench"
DATABASE = "skolsynk_bench"
TENANT = "bench-kommun"
SOURCE = "bench-source"
PUSH_TENANT = "bench-push"
PUSH_SOURCE = "bench-push-source"
EGIL_TENANT = "bench-egil"
EGIL_SOURCE = "bench-egil"
SCIM_VENDORS = ("bench-scim-a", "bench-scim-b")
QUEUE_VENDORS = ("bench-queue-a", "bench-queue-b", "bench-queue-c")
LATENCY_VENDOR = "bench-queue-a"  # selects every school unit and role: the trickle is timed on its queue
PUSH_VENDOR = "bench-scim-a"
BARE_TENANT = "bench-bare"  # the fake vendor's tenants the bare client pushes to (one per round)
BARE_ROUNDS = 3  # the bare client's rate is the median of three rounds (short rounds are noisy)

ALL_PHASES = (
    "ceiling",
    "full",
    "store_ceiling",
    "resync",
    "change",
    "one",
    "trickle",
    "scim",
    "egil",
    "ceiling_after",
)
NEEDS_FULL = {"store_ceiling", "resync", "change", "one", "trickle"}

SIZE = os.environ.get("BENCH_SIZE", "M")
SEED = int(os.environ.get("BENCH_SEED", "1"))
PAGE = int(os.environ.get("BENCH_PAGE", "500"))
MESSAGES = int(os.environ.get("BENCH_MESSAGES", "2000"))
DOCUMENTS = int(os.environ.get("BENCH_DOCUMENTS", "5000"))
TRANSACTIONS = int(os.environ.get("BENCH_TRANSACTIONS", "1000"))
TRICKLE_SECONDS = float(os.environ.get("BENCH_TRICKLE_SECONDS", "60"))
TRICKLE_RATE = float(os.environ.get("BENCH_TRICKLE_RATE", "1"))
PUSH_PERSONS = int(os.environ.get("BENCH_PUSH_PERSONS", "2000"))
PUSH_CONCURRENCY = int(os.environ.get("BENCH_PUSH_CONCURRENCY", "32"))
EGIL_OBJECTS = int(os.environ.get("BENCH_EGIL_OBJECTS", "2000"))
TIMEOUT = float(os.environ.get("BENCH_TIMEOUT", "3600"))
#: How often the Mongo wire server sweeps its TTL indexes: never unless asked for. Its sweep decodes every
#: document of every TTL-indexed collection under its one lock once a minute (a 2-5 s stall of every
#: service at M, growing with the organiser), which mongod's index-driven TTL monitor does not; nothing
#: expires within a benchmark. ``BENCH_TTL_SWEEP_SECONDS=60`` shows the server's own behaviour.
TTL_SWEEP_SECONDS = float(os.environ.get("BENCH_TTL_SWEEP_SECONDS", "0"))


def store_cache(records: int) -> str:
    """The Mongo wire server's cache (``BENCH_STORE_CACHE``): in memory it holds every document the run
    writes, and its default 1G overflows (``WT_CACHE_FULL``) between M and L; 1G up to M's size, then
    about 50 kB per record (10G at L)."""
    given = os.environ.get("BENCH_STORE_CACHE")
    if given:
        return given
    return "1G" if records <= 30_000 else f"{max(2, round(records * 50_000 / 2**30))}G"


VHOST_TIMEOUT = 300.0  # rabbitmqctl add_vhost / delete_vhost on a busy broker
PROJECTION_TIMEOUT = min(TIMEOUT, 1700.0)  # the normaliser's bound: under RabbitMQ's acknowledgement timeout


def phases_wanted() -> list[str]:
    text = os.environ.get("BENCH_PHASES", "")
    wanted = [p.strip() for p in text.split(",") if p.strip()] if text else list(ALL_PHASES)
    unknown = sorted(set(wanted) - set(ALL_PHASES))
    if unknown:
        raise SystemExit(f"unknown BENCH_PHASES {unknown}: choose from {', '.join(ALL_PHASES)}")
    if NEEDS_FULL & set(wanted):
        wanted.append("full")
    return [p for p in ALL_PHASES if p in wanted]


def say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


Pings = tuple[list[float], list[list[float]], list[dict[str, Any]]]

#: The store's profiler records every command slower than this during the trickle (``profile`` level 1).
PROFILE_SLOW_MS = 500


async def pings_result(task: asyncio.Task[Pings]) -> Pings:
    """What a cancelled :meth:`Bench.store_pings` measured."""
    try:
        return await task
    except asyncio.CancelledError:
        return [], [], []


def store_stalls(profiled: list[dict[str, Any]], *, started_at: datetime) -> list[dict[str, Any]]:
    """The store's slow commands (``system.profile``: op, namespace, end time, millis) grouped by the moment
    they ended: commands that all end within 0.3 s of each other waited for the same thing. Each stall
    says when it began and ended (seconds into the phase), how many commands waited, and which command
    began first: a command of skolsynk's, or (every command beginning after the stall did) something of
    the server's own, such as its TTL sweep. Collection and operation only, never the command's values."""
    spans = [
        (
            (entry["ts"] - timedelta(milliseconds=int(entry.get("millis", 0))) - started_at).total_seconds(),
            (entry["ts"] - started_at).total_seconds(),
            f"{entry.get('op', '?')} {str(entry.get('ns', '?')).split('.', 1)[-1]}",
        )
        for entry in profiled
    ]
    groups: list[list[tuple[float, float, str]]] = []
    for span in sorted(spans, key=lambda s: s[1]):
        if groups and span[1] - groups[-1][-1][1] <= 0.3:
            groups[-1].append(span)
        else:
            groups.append([span])
    stalls = []
    for group in groups:
        first = min(group)
        stalls.append(
            {
                "began_s": round(first[0], 1),
                "ended_s": round(max(s[1] for s in group), 1),
                "commands": len(group),
                "first": first[2],
            }
        )
    return stalls


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(share * (len(ordered) - 1))))] if ordered else float("nan")


# --- the five vendors ------------------------------------------------------------------------------------


def selections(records: list[SourceRecord]) -> dict[str, dict[str, Any]]:
    """Each vendor's selection: school units, roles, school years (never empty, whatever the size)."""
    units = [r for r in records if r.kind is EntityKind.SCHOOL_UNIT]
    every = sorted(str(u.data["school_unit_code"]) for u in units)

    def codes(school_type: str) -> list[str]:
        found = sorted(str(u.data["school_unit_code"]) for u in units if school_type in u.data["school_types"])
        return found or every

    half = every[::2] or every
    return {
        "bench-scim-a": {"school_unit_codes": every},
        "bench-scim-b": {
            "school_unit_codes": codes("GR"),
            "roles": [Role.STUDENT, Role.TEACHER],
            "school_years": [7, 8, 9],
        },
        "bench-queue-a": {"school_unit_codes": every},
        "bench-queue-b": {"school_unit_codes": half, "roles": [Role.STUDENT, Role.TEACHER]},
        "bench-queue-c": {"school_unit_codes": codes("GY"), "roles": [Role.TEACHER, Role.OTHER_STAFF]},
    }


@dataclass
class Vendor:
    vendor_id: str
    subscription: VendorSubscription
    feed: FeedConsumer | None = None  # queue-mode vendors
    api_key: str | None = None  # SCIM vendors: the key (and fake tenant) at the fake vendor server
    last_acks: float = 0.0
    last_progress: float = 0.0  # when its dispatcher's acks last grew (monotonic), seen by polling
    last_listed: float = 0.0

    @property
    def scim(self) -> bool:
        return self.api_key is not None


class Bench:
    def __init__(self, stack: Stack, records: list[SourceRecord], pki: Pki) -> None:
        self.stack = stack
        self.records = records
        self.pki = pki
        self.expectation: Expectation | None = None
        self.vendor_server: VendorServer | None = None
        self.http: aiohttp.ClientSession | None = None
        guard = MassDeletionGuard(max_removals=10**9, max_percent=100.0)
        self.vendors: dict[str, Vendor] = {}
        for vendor_id, plan in selections(records).items():
            subscription = VendorSubscription.model_validate(
                {"tenant_id": TENANT, "vendor_id": vendor_id, "test_mode": False, "guard": guard, **plan}
            )
            vendor = Vendor(vendor_id, subscription)
            if vendor_id in SCIM_VENDORS:
                vendor.api_key = secrets.token_urlsafe(24)
            else:
                vendor.feed = FeedConsumer(stack.amqp_url, f"{NAMESPACE}.vendor-feed.{vendor_id}")
            self.vendors[vendor_id] = vendor
        self.producer = Producer(stack.amqp_url)
        self.bare_keys = [secrets.token_urlsafe(24) for _ in range(BARE_ROUNDS)]
        self.egil_key = secrets.token_urlsafe(24)

    # -- the stack

    def write_catalogue(self, directory: Path) -> Path:
        """Five vendors: queue delivery, or EGIL SCIM push over HTTPS to the fake vendor server, its rate
        limit out of the way (the push phase compares the dispatcher with a bare client, not a limiter)."""
        assert self.vendor_server is not None
        directory.mkdir(parents=True, exist_ok=True)
        for old in directory.glob("*.yaml"):
            old.unlink()
        for vendor in self.vendors.values():
            entry: dict[str, Any] = {
                "vendor_id": vendor.vendor_id,
                "display_name": f"{vendor.vendor_id} (bench)",
                "delivery": "egil_scim" if vendor.scim else "queue",
                "profile": {},
            }
            if vendor.scim:
                entry["scim"] = {
                    "base_url": self.vendor_server.base_url,
                    "auth": {"ca_file": str(self.pki.ca_file), "api_key_env": env_name(vendor.vendor_id)},
                    "concurrency": PUSH_CONCURRENCY,
                    "rate_per_second": 1_000_000,
                    "burst": 10_000,
                }
            (directory / f"{vendor.vendor_id}.yaml").write_text(yaml.safe_dump(entry, sort_keys=False))
        return directory

    async def register_egil_client(self, db: Any) -> None:
        """The bench's EGIL client, a source in the source registry (as the admin registers one)."""
        settings = {
            "api_key_sha256": hashlib.sha256(self.egil_key.encode()).hexdigest(),
            "rate_per_second": 1_000_000,
            "burst": 1_000_000,
        }
        await SourceStore(db, SecretBox(None)).put(
            EGIL_TENANT, EGIL_SOURCE, kind="egil", display_name="bench", settings=settings, secret_refs={}
        )

    async def start(self, phases: list[str]) -> None:
        stack = self.stack
        keys = {v.api_key: v.vendor_id for v in self.vendors.values() if v.api_key}
        self.vendor_server = await asyncio.to_thread(
            start_vendor_server,
            stack.log_dir,
            {**keys, **{key: f"{BARE_TENANT}-{n}" for n, key in enumerate(self.bare_keys)}},
            self.pki,
        )
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(stack.mongo_url)
        store = SubscriptionStore(client[DATABASE])
        for vendor in self.vendors.values():
            await store.save(vendor.subscription)
        if "egil" in phases:
            await self.register_egil_client(client[DATABASE])
        await client.close()
        stack.env["SKOLSYNK_VENDOR_CATALOGUE_DIR"] = str(self.write_catalogue(stack.log_dir / "vendors"))
        stack.env |= {env_name(v.vendor_id): v.api_key for v in self.vendors.values() if v.api_key}
        stack.start_service(
            "normaliser",
            "skolsynk_services.normaliser",
            SKOLSYNK_HANDLER_TIMEOUT_SECONDS=str(int(TIMEOUT)),
            SKOLSYNK_PROJECTION_TIMEOUT_SECONDS=str(int(PROJECTION_TIMEOUT)),
        )
        for vendor in self.vendors.values():
            if vendor.feed is not None:  # onboarded first: its feed lives in a vhost of its own, read as the vendor
                vendor.feed.amqp_url = await stack.onboard_queue_vendor(vendor.vendor_id)
        for vendor_id in self.vendors:
            stack.start_service(f"dispatcher-{vendor_id}", "skolsynk_services.dispatcher", SKOLSYNK_VENDOR_ID=vendor_id)
        stack.start_service("gdpr", "skolsynk_services.gdpr")
        if "egil" in phases:
            stack.start_service(
                "egil-receiver",
                "skolsynk_services.egil_receiver",
                SKOLSYNK_EGIL_TLS_CERT_FILE=str(self.pki.server_file),
            )
        await asyncio.gather(*(asyncio.to_thread(s.wait_ready, 180) for s in stack.services.values()))
        for vendor in self.vendors.values():
            if vendor.feed is not None:
                await vendor.feed.start()  # its queue exists: the dispatcher declared it before it was ready
        self.http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=self.pki.client_context()))
        await self.producer.start()

    async def close(self) -> None:
        await self.producer.close()
        for vendor in self.vendors.values():
            if vendor.feed is not None:
                await vendor.feed.close()
        if self.http is not None:
            await self.http.close()

    # -- reading the services

    def dispatcher(self, vendor_id: str) -> ServiceProcess:
        return self.stack.services[f"dispatcher-{vendor_id}"]

    def acks(self, vendor_id: str) -> float:
        queue = f"{NAMESPACE}.dispatcher.{vendor_id}"
        return metric(self.dispatcher(vendor_id), "skolsynk_messages_consumed_total", queue=queue, outcome="ack")

    def all_acks(self) -> float:
        return sum(self.acks(v) for v in self.vendors)

    def normaliser(self, queue: str, outcome: str = "ack") -> float:
        name = f"{NAMESPACE}.normaliser.{queue}"
        return metric(
            self.stack.services["normaliser"], "skolsynk_messages_consumed_total", queue=name, outcome=outcome
        )

    def store_work(self) -> dict[str, StoreWork]:
        return snapshot(self.stack.services)

    async def publish(self, messages: Iterable[Any], *, tenant: str = TENANT) -> int:
        """A source run's messages on the source exchange, in order, as a connector sends them."""
        return await self.producer.publish(f"{NAMESPACE}.source", f"egil.{tenant}", messages, tenant_id=tenant)

    def desired(self, records: list[SourceRecord]) -> dict[str, dict[UUID, ProjectedResource]]:
        self.expectation = Expectation(TENANT, {SOURCE: records}, today())
        return {v.vendor_id: self.expectation.desired(v.subscription) for v in self.vendors.values()}

    def progress(self) -> None:
        """Note when each dispatcher's acks last grew (the SCIM vendors' last delivery, to the poll)."""
        now = time.monotonic()
        for vendor in self.vendors.values():
            acks = self.acks(vendor.vendor_id)
            if acks != vendor.last_acks:
                vendor.last_acks, vendor.last_progress = acks, now

    async def holds(self, vendor: Vendor, desired: Mapping[UUID, ProjectedResource], *, acks_needed: float = 0) -> bool:
        """The vendor holds exactly ``desired``: its queue (same entities, same content), or the fake SCIM
        server's lists (same ids per type; listed only once its dispatcher has acknowledged ``acks_needed``
        changes, at most every few seconds, and only when the dispatcher moved since the last listing: a
        listing of a large organiser is heavy for the fake server)."""
        if vendor.feed is not None:
            return exactly(vendor.feed, desired)
        assert self.http is not None
        assert self.vendor_server is not None
        assert vendor.api_key is not None
        if vendor.last_acks < acks_needed and time.monotonic() - vendor.last_progress < 60:
            return False  # (after a minute without progress it is listed anyway: acks may count otherwise)
        interval = max(2.0, len(desired) / 5000)
        if vendor.last_listed > vendor.last_progress and time.monotonic() - vendor.last_listed < 30:
            return False  # nothing moved since it was last listed and found wanting
        if time.monotonic() - vendor.last_listed < interval:
            return False
        vendor.last_listed = time.monotonic()
        held = await vendor_ids(self.http, self.vendor_server.base_url, vendor.api_key)
        return held == expected_ids(desired.values())

    def last_delivery(self, vendor: Vendor) -> float:
        return vendor.feed.last_at if vendor.feed is not None else vendor.last_progress

    async def until_held(
        self, desired: Mapping[str, Mapping[UUID, ProjectedResource]], what: str, *, initial: bool = False
    ) -> float:
        """Wait until every vendor holds its ``desired``; returns when the last one got its last change.
        ``initial``: the vendors held nothing before, so each dispatcher acknowledges at least as many
        changes as its vendor should hold before its SCIM server is listed."""
        started = time.monotonic()
        self.progress()
        needed = {v: self.vendors[v].last_acks + (len(d) if initial else 0) for v, d in desired.items()}
        done: set[str] = set()
        shown = [started]

        async def check() -> bool:
            self.progress()
            for vendor_id, wanted in desired.items():
                vendor = self.vendors[vendor_id]
                if vendor_id not in done and await self.holds(vendor, wanted, acks_needed=needed[vendor_id]):
                    done.add(vendor_id)
            if time.monotonic() - shown[0] > 30:
                shown[0] = time.monotonic()
                counts = ", ".join(
                    f"{v}: {int(self.acks(v)):,}" + (" (done)" if v in done else "") for v in self.vendors
                )
                say(f"    {time.monotonic() - started:6.0f}s  dispatcher acks {counts}")
            return len(done) == len(desired)

        await wait_for(check, timeout=TIMEOUT, interval=0.5, what=what)
        return max(self.last_delivery(self.vendors[v]) for v in desired)

    async def settled(self, quiet: float = 5.0) -> None:
        """The normaliser has handled every message and projected, the dispatchers are idle, nothing is in
        flight or in an outbox: no counter moved for ``quiet`` seconds. Says what it waits for when that
        takes long."""
        started = time.monotonic()
        quiet_since = [started]
        shown = [started]
        last = [""]

        def idle() -> bool:
            gauges = {
                name: (metric(s, "skolsynk_consumer_inflight"), metric(s, "skolsynk_outbox_pending"))
                for name, s in self.stack.services.items()
            }
            busy = {name: g for name, g in gauges.items() if g[0] > 0 or g[1] > 0}
            state = repr([self.normaliser("source-events"), self.normaliser("projections"), self.all_acks()])
            if time.monotonic() - shown[0] > 30:
                shown[0] = time.monotonic()
                say(f"    {time.monotonic() - started:6.0f}s  settling: busy (in flight, outbox) {busy or 'none'}")
            if state != last[0] or busy:
                last[0], quiet_since[0] = state, time.monotonic()
                return False
            return time.monotonic() - quiet_since[0] >= quiet

        await wait_for(idle, timeout=TIMEOUT, interval=0.5, what="the services to settle")

    # -- the phases

    async def full_sync(self, desired: dict[str, dict[UUID, ProjectedResource]]) -> dict[str, Any]:
        changes = sum(len(d) for d in desired.values())
        messages = list(full_run(self.records, source_id=SOURCE, source_kind="egil", page_size=PAGE))
        before = self.store_work()
        started = time.monotonic()
        await self.publish(messages)
        published = time.monotonic() - started
        last = await self.until_held(desired, "the full sync", initial=True)
        elapsed = last - started
        await self.settled()
        work = difference(self.store_work(), before)
        return {
            "records": len(self.records),
            "vendor_changes": changes,
            "vendor_changes_by_vendor": {v: len(d) for v, d in desired.items()},
            "messages_published": len(messages),
            "publish_seconds": published,
            "seconds": elapsed,
            "records_per_s": len(self.records) / elapsed,
            "vendor_changes_per_s": changes / elapsed,
            "store": report(work, per=changes),
        }

    async def resync(self, full_seconds: float | None) -> dict[str, Any]:
        feeds_before = {v.vendor_id: v.feed.received for v in self.vendors.values() if v.feed is not None}
        acks_before = self.all_acks()
        messages = list(full_run(self.records, source_id=SOURCE, source_kind="egil", page_size=PAGE))
        events, projections = self.normaliser("source-events"), self.normaliser("projections")
        before = self.store_work()
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
        projected = time.monotonic() - started
        await self.settled()
        work = difference(self.store_work(), before)
        deliveries = sum(
            v.feed.received - feeds_before[v.vendor_id] for v in self.vendors.values() if v.feed is not None
        )
        return {
            "seconds_until_projected": projected,
            "share_of_full_sync": projected / full_seconds if full_seconds else None,
            "deliveries": deliveries,
            "dispatcher_acks": self.all_acks() - acks_before,
            "store": report(work, per=len(self.records)),
        }

    async def change(self, changes: Any, desired: dict[str, dict[UUID, ProjectedResource]]) -> dict[str, Any]:
        messages = list(incremental_run(changes.changed, changes.deleted, source_id=SOURCE, source_kind="egil"))
        acks_before = self.all_acks()
        before = self.store_work()
        started = time.monotonic()
        await self.publish(messages)
        last = await self.until_held(desired, "the change set")
        await self.settled()
        deliveries = self.all_acks() - acks_before
        return {
            "moved": len(changes.moved),
            "left": len(changes.left),
            "joined": len(changes.joined),
            "records_changed": len(changes.changed),
            "records_deleted": len(changes.deleted),
            "deliveries": deliveries,
            "seconds_until_last_delivery": last - started,
            "store": report(difference(self.store_work(), before), per=deliveries or None),
        }

    def changed_student(self, records: list[SourceRecord], n: int) -> tuple[SourceRecord, str]:
        """The n-th student (spread over the organiser) with a new family name, and its id at the vendors."""
        students = [r for r in records if r.kind is EntityKind.PERSON and r.data.get("enrolments")]
        student = students[(n * max(1, len(students) // 97)) % len(students)]
        changed = SourceRecord(
            kind=student.kind,
            key=student.key,
            data={**student.data, "family_name": f"{student.data['family_name']}-Bench{n}"},
        )
        return changed, str(entity_id(TENANT, SOURCE, EntityKind.PERSON, student.key))

    async def one_person(self, records: list[SourceRecord]) -> dict[str, Any]:
        """One student's change as its own incremental run: what it costs the store, all services together."""
        feed = self.vendors[LATENCY_VENDOR].feed
        assert feed is not None
        for n in range(1, 50):
            changed, vendor_id = self.changed_student(records, 1000 + n)
            if vendor_id in feed.held:
                break
        acks_before = self.all_acks()
        before = self.store_work()
        started = time.monotonic()
        await self.publish(incremental_run([changed], [], source_id=SOURCE, source_kind="egil"))
        await wait_for(
            lambda: feed.arrivals.get(vendor_id, 0) >= started, timeout=TIMEOUT, interval=0.1, what="the change"
        )
        latency = feed.arrivals[vendor_id] - started
        await self.settled()
        work = difference(self.store_work(), before)
        deliveries = self.all_acks() - acks_before
        return {
            "records_changed": 1,
            "deliveries": deliveries,
            "seconds_until_delivered": latency,
            "store": report(work),
            "documents_read": sum(w.documents_read for w in work.values()),
            "documents_written": sum(w.documents_written for w in work.values()),
            "round_trips": sum(w.round_trips for w in work.values()),
        }

    async def trickle(self, records: list[SourceRecord]) -> dict[str, Any]:
        """One changed student every 1/rate seconds, each its own incremental run; latency until the
        latency vendor's queue delivers it."""
        feed = self.vendors[LATENCY_VENDOR].feed
        assert feed is not None
        count = max(1, int(TRICKLE_SECONDS * TRICKLE_RATE))
        sent: dict[str, float] = {}
        before = self.store_work()
        started = time.monotonic()
        pings = asyncio.create_task(self.store_pings(started))
        for n in range(count):
            changed, vendor_id = self.changed_student(records, n)
            if vendor_id not in feed.held or vendor_id in sent:
                continue
            messages = list(incremental_run([changed], [], source_id=SOURCE, source_kind="egil"))
            sent[vendor_id] = time.monotonic()
            await self.publish(messages)
            await asyncio.sleep(max(0.0, 1 / TRICKLE_RATE - (time.monotonic() - sent[vendor_id])))
        await wait_for(
            lambda: all(feed.arrivals.get(k, 0) >= t for k, t in sent.items()),
            timeout=TIMEOUT,
            interval=0.2,
            what="the trickle to be delivered",
        )
        pings.cancel()
        ping_seconds, slow_pings, stalls = await pings_result(pings)
        latencies = [feed.arrivals[k] - t for k, t in sent.items()]
        slowest = sorted(((feed.arrivals[k] - t, t - started) for k, t in sent.items()), reverse=True)[:5]
        await self.settled()
        return {
            # When the slowest changes were sent (seconds into the trickle), and when the store itself
            # answered a ping late: a change slow while the store was, is the store's stall.
            "slowest_s_sent_at": [[round(latency, 2), round(at, 1)] for latency, at in slowest],
            "store_ping_p99_s": percentile(ping_seconds, 0.99) if ping_seconds else None,
            "store_ping_max_s": max(ping_seconds) if ping_seconds else None,
            "store_pings_over_half_a_second_at": slow_pings,
            "store_stalls": stalls,
            "changes": len(sent),
            "rate_per_s": TRICKLE_RATE,
            "p50_s": percentile(latencies, 0.5),
            "p90_s": percentile(latencies, 0.9),
            "p99_s": percentile(latencies, 0.99),
            "max_s": max(latencies),
            "mean_s": statistics.fmean(latencies),
            "store": report(difference(self.store_work(), before), per=len(sent)),
        }

    async def store_pings(self, started: float) -> Pings:
        """The store's own answer time, a point read every 0.1 s until cancelled (of a one-document
        collection of the bench's: a ``ping`` is answered outside the Mongo wire server's lock, so it
        misses the stalls every command sees): the times, [seconds into the phase, seconds] of every
        read slower than half a second, and the stalls the store's profiler saw (:func:`store_stalls`)."""
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(self.stack.mongo_url)
        database = client[DATABASE]
        probe = database["bench_probe"]
        await probe.replace_one({"_id": "probe"}, {"_id": "probe"}, upsert=True)
        started_at = datetime.now(UTC) - timedelta(seconds=time.monotonic() - started)
        try:  # a real MongoDB (MONGODB_URL) may not grant the profiler: then no stalls are named
            await database.command("profile", 1, slowms=PROFILE_SLOW_MS)
            profiling = True
        except OperationFailure:
            profiling = False
        times: list[float] = []
        slow: list[list[float]] = []
        try:
            while True:
                sent = time.monotonic()
                await probe.find_one({"_id": "probe"})
                took = time.monotonic() - sent
                times.append(took)
                if took > 0.5:
                    slow.append([round(sent - started, 1), round(took, 2)])
                await asyncio.sleep(0.1)
        except asyncio.CancelledError:
            if not profiling:
                return times, slow, []
            await database.command("profile", 0)
            profiled = (
                await database["system.profile"]
                .find({"ts": {"$gte": started_at.replace(tzinfo=None)}}, {"op": 1, "ns": 1, "ts": 1, "millis": 1})
                .to_list(None)
            )
            for entry in profiled:
                entry["ts"] = entry["ts"].replace(tzinfo=UTC)
            return times, slow, store_stalls(profiled, started_at=started_at)
        finally:
            await client.close()

    async def store_ceiling(self, full: Mapping[str, Any] | None) -> dict[str, Any]:
        documents = [
            {"tenant_id": TENANT, "source_id": SOURCE, "kind": r.kind.value, "key": r.key, "data": r.data}
            for r in self.records
        ]
        result = await raw_mongo_populated(
            self.stack.mongo_url, DATABASE, documents, upserts=DOCUMENTS, transactions=TRANSACTIONS
        )
        if full:
            minimum = minimum_writes_per_change(full["records"], full["vendor_changes"])
            result["minimum_writes_per_vendor_change"] = minimum
            result["vendor_changes_per_s_at_minimum_writes"] = result["bulk_upsert_docs_per_s"] / minimum
            result["measured_writes_per_vendor_change"] = full["store"]["all_services"]["documents_written_per"]
        return result

    async def scim_push(self, push_resources: list[ProjectedResource]) -> dict[str, Any]:
        """The dispatcher of a SCIM vendor handed ``push_resources`` as vendor changes (as the normaliser
        sends them, in reference order) for an organiser of their own, until its metrics count every one
        delivered; then a bare aiohttp client POSTs the same bodies with the same concurrency to the same
        server (another tenant there, so every request creates, as the dispatcher's did)."""
        assert self.vendor_server is not None
        service = self.dispatcher(PUSH_VENDOR)

        def delivered() -> float:
            return metric(
                service, "skolsynk_deliveries_total", tenant=PUSH_TENANT, vendor=PUSH_VENDOR, status="delivered"
            )

        ordered = sorted(
            push_resources,
            key=lambda r: egil_send_order(r.kind, r.id, student=is_student(r.resource)),
        )
        changes = [
            VendorChange(
                vendor_id=PUSH_VENDOR,
                entity_kind=r.kind,
                entity_id=r.id,
                operation="upsert",
                version=1,
                resource=json.loads(json.dumps(r.resource, default=str)),
                school_unit_ids=[UUID(u) for u in r.school_unit_ids],
                test_mode=False,
                reason="bench",
            )
            for r in ordered
        ]
        before = self.store_work()
        requests_before = metric(service, "skolsynk_vendor_requests_total", vendor=PUSH_VENDOR)
        started = time.monotonic()
        await self.producer.publish(
            f"{NAMESPACE}.vendor", f"{PUSH_VENDOR}.{PUSH_TENANT}", changes, tenant_id=PUSH_TENANT, window=200
        )
        published = time.monotonic() - started
        reached = [started]

        def all_delivered() -> bool:
            count = delivered()
            reached[0] = time.monotonic()
            return count >= len(changes)

        await wait_for(all_delivered, timeout=TIMEOUT, interval=0.2, what="the dispatcher's pushes")
        elapsed = reached[0] - started
        requests = metric(service, "skolsynk_vendor_requests_total", vendor=PUSH_VENDOR) - requests_before
        await self.settled(quiet=2.0)
        work = difference(self.store_work(), before)
        dispatcher = {
            "changes": len(changes),
            "publish_seconds": published,
            "seconds": elapsed,
            "changes_per_s": len(changes) / elapsed,
            "vendor_requests": requests,
            "store": work[f"dispatcher-{PUSH_VENDOR}"].summary(per=len(changes), top=6),
        }
        bodies = egil_bodies(ordered)
        rounds = []
        for key in self.bare_keys:  # each round creates every object again, at a tenant of its own
            rounds.append(
                await bare_scim_push(
                    self.vendor_server.base_url,
                    key,
                    bodies,
                    concurrency=PUSH_CONCURRENCY,
                    context=self.pki.client_context(),
                )
            )
        bare = sorted(rounds, key=lambda r: float(r["requests_per_s"]))[len(rounds) // 2]
        return {
            "transport": "HTTPS (TLS 1.2+, private CA), API key",
            "concurrency": PUSH_CONCURRENCY,
            "dispatcher": dispatcher,
            "bare_client": bare | {"rounds_requests_per_s": [r["requests_per_s"] for r in rounds]},
            "ratio": dispatcher["changes_per_s"] / bare["requests_per_s"],
        }

    async def egil_intake(self, push_resources: list[ProjectedResource]) -> dict[str, Any]:
        """The EGIL receiver fed as the real client feeds it (one request at a time over one kept-alive
        HTTPS connection, in the EGIL send order), beside a bare loop of single-document inserts of the same
        bodies on the same store."""
        receiver = self.stack.services["egil-receiver"]
        port = receiver.port_of("web_app_started")
        bodies = egil_bodies(push_resources)[:EGIL_OBJECTS]
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(self.stack.mongo_url)
        collection = client[DATABASE][f"bench_single_inserts_{uuid.uuid4().hex[:6]}"]
        try:
            bare_rate = await single_inserts(collection, [body for _, _, body in bodies])
        finally:
            await collection.drop()
            await client.close()
        before = self.store_work()
        result = await egil_client(
            f"https://127.0.0.1:{port}", self.egil_key, bodies, context=self.pki.client_context()
        )
        after_client = self.store_work()
        await self.settled(quiet=3.0)
        receiver_work = difference(after_client, before).get("egil-receiver", StoreWork())
        return {
            "transport": "HTTPS (TLS 1.2+, private CA), one kept-alive connection, API key",
            "objects": len(bodies),
            "client": result,
            "bare_single_inserts_per_s": bare_rate,
            "ratio": result["requests_per_s"] / bare_rate,
            "receiver_store": receiver_work.summary(per=len(bodies), top=6),
            "store_until_settled": report(difference(self.store_work(), before), per=len(bodies)),
        }


class Producer:
    """One confirmed AMQP channel for everything the benchmark publishes (a connection per publish would
    add its set-up to every latency measured)."""

    def __init__(self, amqp_url: str) -> None:
        self.amqp_url = amqp_url
        self._connection: aio_pika.abc.AbstractRobustConnection | None = None
        self._channel: aio_pika.abc.AbstractChannel | None = None

    async def start(self) -> None:
        self._connection = await aio_pika.connect_robust(self.amqp_url, timeout=CONNECT_TIMEOUT)
        self._channel = await self._connection.channel(publisher_confirms=True, on_return_raises=True)

    async def close(self) -> None:
        if self._connection is not None:
            await self._connection.close()

    async def publish(
        self, exchange: str, routing_key: str, messages: Iterable[Any], *, tenant_id: str, window: int = 1
    ) -> int:
        """Publish contracts (persistent, mandatory, confirmed) as a producer does: one at a time in order
        (``window`` 1, as a connector sends a run), or ``window`` in flight, started in order (a busy
        producer: a consumer is never starved by the benchmark's own publishing)."""
        assert self._channel is not None
        target = await self._channel.get_exchange(exchange, ensure=False)
        slots = asyncio.Semaphore(window)

        async def one(message: Any) -> None:
            envelope = message.to_envelope(tenant_id=tenant_id, producer="bench")
            async with slots:
                await target.publish(
                    aio_pika.Message(
                        envelope.model_dump_json().encode(),
                        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                        message_id=str(envelope.message_id),
                        type=envelope.message_type,
                    ),
                    routing_key=routing_key,
                )

        items = list(messages)
        if window <= 1:
            for message in items:
                await one(message)
        else:
            await asyncio.gather(*(one(m) for m in items))
        return len(items)


def env_name(vendor_id: str) -> str:
    return "BENCH_KEY_" + vendor_id.upper().replace("-", "_")


# --- sample sizes, machine ---------------------------------------------------------------------------------


def sample_messages(records: list[SourceRecord], desired: Mapping[UUID, ProjectedResource]) -> tuple[bytes, bytes]:
    """Bodies of the sizes skolsynk sends: a source page and a vendor change (a student)."""
    page = SourceRecordPage(run_id=uuid.uuid4(), source_id=SOURCE, page=0, records=records[:PAGE])
    page_body = page.to_envelope(tenant_id=TENANT).model_dump_json().encode()
    person = next(r for r in desired.values() if r.kind is EntityKind.PERSON)
    change = VendorChange(
        vendor_id=LATENCY_VENDOR,
        entity_kind=person.kind,
        entity_id=person.id,
        operation="upsert",
        version=1,
        resource=json.loads(json.dumps(person.resource, default=str)),
        school_unit_ids=[uuid.UUID(u) for u in person.school_unit_ids],
        test_mode=False,
        reason="bench",
    )
    return page_body, change.to_envelope(tenant_id=TENANT).model_dump_json().encode()


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


# --- the run ---------------------------------------------------------------------------------------------


async def run(stack: Stack, records: list[SourceRecord], size: str, phases: list[str]) -> dict[str, Any]:
    pki = make_pki(stack.log_dir / "pki")
    bench = Bench(stack, records, pki)
    say("  computing what each vendor should hold (the normaliser's rules, locally) ...")
    desired = bench.desired(records)
    page_body, change_body = sample_messages(records, desired[LATENCY_VENDOR])
    entity = next(r for r in records if r.kind is EntityKind.PERSON)
    entity_doc = {"tenant_id": TENANT, "source_id": SOURCE, "kind": "person", "key": entity.key, "data": entity.data}
    results: dict[str, Any] = {
        "size": size,
        "seed": SEED,
        "page_size": PAGE,
        "phases": phases,
        "vendors": {
            v.vendor_id: {
                "delivery": "egil_scim" if v.scim else "queue",
                "school_units": len(v.subscription.school_unit_codes),
                "roles": sorted(v.subscription.roles),
                "school_years": sorted(v.subscription.school_years) if v.subscription.school_years else None,
                "selected": len(desired[v.vendor_id]),
            }
            for v in bench.vendors.values()
        },
        "message_bytes": {"source_page": len(page_body), "vendor_change": len(change_body)},
        "machine": machine(),
        "started_at": datetime.now(UTC).isoformat(),
        "timeout_seconds": {"phase": TIMEOUT, "normaliser_projection": PROJECTION_TIMEOUT},
        "mongo_ttl_sweep_seconds": TTL_SWEEP_SECONDS,
        "mongo_cache": store_cache(len(records)),
    }
    ceiling_args = {
        "page_body": page_body,
        "change_body": change_body,
        "entity_doc": entity_doc,
        "messages": MESSAGES,
        "documents": DOCUMENTS,
        "tenant_id": TENANT,
    }
    clock: dict[str, float] = {}

    path = OUT / f"bench-{size}.json"

    async def phase(name: str, title: str, work: Any) -> None:
        """Run one phase; a phase that fails is recorded with its error and the run goes on (phases that
        need the organiser in place are skipped when the full sync failed). The JSON is written after
        every phase, so a run cut short keeps what it measured."""
        if name in NEEDS_FULL and not ok(results, "full"):
            work.close()
            results[name] = {"error": "skipped: the full sync did not complete"}
            say(f"  [{name}] skipped: the full sync did not complete")
            return
        say(f"  [{name}] {title} ...")
        started = time.monotonic()
        try:
            async with asyncio.timeout(TIMEOUT):  # a phase that hangs (a stuck broker) fails, the run goes on
                results[name] = await work
        except Exception as error:  # noqa: BLE001 (a failed phase is a result too)
            results[name] = {"error": f"{type(error).__name__}: {error}"}
            say(f"  [{name}] FAILED after {time.monotonic() - started:.0f}s: {type(error).__name__}: {error}")
        clock[name] = time.monotonic() - started
        OUT.mkdir(exist_ok=True)
        path.write_text(json.dumps(results | {"phase_seconds": clock}, indent=2, default=str) + "\n")

    if "ceiling" in phases:
        title = "raw ceiling: broker, empty store, skolsynk messaging"
        await phase("ceiling", title, ceiling(stack.amqp_url, stack.mongo_url, **ceiling_args))
    launch = time.monotonic()
    await bench.start(phases)
    clock["start_services"] = time.monotonic() - launch
    try:
        if "full" in phases:
            total = sum(len(d) for d in desired.values())
            title = f"full initial sync: {len(records):,} records -> {total:,} vendor changes"
            await phase("full", title, bench.full_sync(desired))
        if "store_ceiling" in phases:
            title = "the store's ceiling while it holds the organiser"
            await phase("store_ceiling", title, bench.store_ceiling(ok(results, "full")))
        if "resync" in phases:
            full_seconds = results["full"]["seconds"] if ok(results, "full") else None
            await phase("resync", "no-change resync", bench.resync(full_seconds))
        current = records
        if "change" in phases:
            changes = change_set(records, seed=SEED, moves=0.005, leavers=0.0025, joiners=0.0025)
            after = bench.desired(changes.records)
            await phase("change", "1 % change set", bench.change(changes, after))
            current = changes.records
        if "one" in phases:
            await phase("one", "one person's change", bench.one_person(current))
        if "trickle" in phases:
            title = f"change latency: {TRICKLE_SECONDS:.0f}s of {TRICKLE_RATE:g} change/s"
            await phase("trickle", title, bench.trickle(current))
        if "scim" in phases or "egil" in phases:
            push_size = SizeSpec.for_persons(PUSH_PERSONS)
            push_records = generate(push_size, seed=SEED + 1)
            every = sorted(str(r.data["school_unit_code"]) for r in push_records if r.kind is EntityKind.SCHOOL_UNIT)
            push_subscription = VendorSubscription(
                tenant_id=PUSH_TENANT, vendor_id=PUSH_VENDOR, school_unit_codes=frozenset(every), test_mode=False
            )
            push_resources = list(
                Expectation(PUSH_TENANT, {PUSH_SOURCE: push_records}, today()).desired(push_subscription).values()
            )
            if "scim" in phases:
                title = f"SCIM push: {len(push_resources):,} changes, the dispatcher and a bare client"
                await phase("scim", title, bench.scim_push(push_resources))
            if "egil" in phases:
                title = "EGIL intake: one object at a time, and bare single inserts"
                await phase("egil", title, bench.egil_intake(push_resources))
        if "ceiling_after" in phases:  # the services are idle (not stopped: they stay part of the stack)
            title = "raw ceiling again"
            await phase("ceiling_after", title, ceiling(stack.amqp_url, stack.mongo_url, **ceiling_args))
    finally:
        results["peak_rss_mb"] = {name: peak_rss_mb(s.process.pid) for name, s in stack.services.items()}
        if bench.vendor_server is not None:
            results["peak_rss_mb"]["fake EGIL vendor server"] = peak_rss_mb(bench.vendor_server.process.pid)
        if stack.mongo is not None:
            results["peak_rss_mb"]["secantusd (Mongo wire server)"] = peak_rss_mb(stack.mongo.process.pid)
        results["peak_rss_mb"]["bench (generator, expectation, consumers)"] = peak_rss_mb(os.getpid())
        await bench.close()
        results["service_exit_codes"] = await asyncio.to_thread(stack.stop_services)
        if bench.vendor_server is not None:
            bench.vendor_server.stop()
    results["ratios"] = ratios(results)
    results["phase_seconds"] = clock
    results["finished_at"] = datetime.now(UTC).isoformat()
    return results


def ok(results: Mapping[str, Any], name: str) -> Any:
    """A phase's results, or None when it did not run or failed."""
    found = results.get(name)
    return found if found and "error" not in found else None


def ratios(results: Mapping[str, Any]) -> dict[str, float]:
    found: dict[str, float] = {}
    full = ok(results, "full")
    ceilings = [c for c in (ok(results, "ceiling"), ok(results, "ceiling_after")) if c]
    if full and ceilings:
        rate = full["vendor_changes_per_s"]
        found["changes_to_amqp"] = rate / statistics.fmean(c["amqp_change_msgs_per_s"] for c in ceilings)
        found["changes_to_empty_store_bulk_upsert"] = rate / statistics.fmean(
            c["mongo"]["bulk_upsert_docs_per_s"] for c in ceilings
        )
        found["changes_to_skolsynk_messaging"] = rate / statistics.fmean(
            c["skolsynk_publish_consume_inbox_msgs_per_s"] for c in ceilings
        )
    store = ok(results, "store_ceiling")
    if full and store:
        found["changes_to_populated_store_bulk_upsert"] = full["vendor_changes_per_s"] / store["bulk_upsert_docs_per_s"]
        if "vendor_changes_per_s_at_minimum_writes" in store:
            found["changes_to_minimum_writes_ceiling"] = (
                full["vendor_changes_per_s"] / store["vendor_changes_per_s_at_minimum_writes"]
            )
    if ok(results, "scim"):
        found["scim_push_dispatcher_to_bare_client"] = results["scim"]["ratio"]
    if ok(results, "egil"):
        found["egil_intake_to_bare_single_inserts"] = results["egil"]["ratio"]
    return found


# --- the table -------------------------------------------------------------------------------------------


def table(results: Mapping[str, Any]) -> str:
    rows: list[tuple[str, str]] = []

    def row(name: str, value: str) -> None:
        rows.append((name, value))

    size = results["size"]
    for key, when in (("ceiling", "before"), ("ceiling_after", "after")):
        c = ok(results, key)
        if c:
            mongo = c["mongo"]
            row(f"raw aio-pika, source pages ({when})", f"{c['amqp_page_msgs_per_s']:,.0f} msg/s")
            row(f"raw aio-pika, vendor changes ({when})", f"{c['amqp_change_msgs_per_s']:,.0f} msg/s")
            row(f"raw Mongo, empty: insert_many ({when})", f"{mongo['insert_many_docs_per_s']:,.0f} docs/s")
            row(f"raw Mongo, empty: bulk upsert ({when})", f"{mongo['bulk_upsert_docs_per_s']:,.0f} docs/s")
            row(f"raw Mongo, empty: read ({when})", f"{mongo['read_docs_per_s']:,.0f} docs/s")
            messaging = c["skolsynk_publish_consume_inbox_msgs_per_s"]
            row(f"skolsynk publish+consume+inbox ({when})", f"{messaging:,.0f} msg/s")
    full = ok(results, "full")
    if full:
        work = full["store"]["all_services"]
        row(f"full sync {size}: records -> vendor changes", f"{full['records']:,} -> {full['vendor_changes']:,}")
        row(f"full sync {size}: end to end", f"{full['seconds']:,.1f} s")
        row(
            f"full sync {size}: throughput",
            f"{full['records_per_s']:,.1f} records/s, {full['vendor_changes_per_s']:,.1f} changes/s",
        )
        row("  store round trips per vendor change", f"{work['round_trips_per']:.2f}")
        row(
            "  documents read / written per vendor change",
            f"{work['documents_read_per']:.2f} / {work['documents_written_per']:.2f}",
        )
        waited = ", ".join(f"{k} {v:,.0f}" for k, v in list(work["seconds_by_command"].items())[:4])
        row("  seconds waited on the store (all services)", f"{work['store_seconds']:,.0f}: {waited}")
    ceiling = ok(results, "store_ceiling")
    if ceiling:
        row(
            f"store holding the organiser: bulk upsert ({ceiling['documents_held']:,} docs)",
            f"{ceiling['bulk_upsert_docs_per_s']:,.0f} docs/s",
        )
        row("  one upsert per transaction", f"{ceiling['transaction_upsert_docs_per_s']:,.0f} docs/s")
        row("  single inserts, one at a time", f"{ceiling['single_insert_docs_per_s']:,.0f} docs/s")
        if "minimum_writes_per_vendor_change" in ceiling:
            minimum, measured = (
                ceiling["minimum_writes_per_vendor_change"],
                ceiling["measured_writes_per_vendor_change"],
            )
            row("  minimum writes per vendor change", f"{minimum:.2f} (skolsynk wrote {measured:.2f})")
            row("  vendor changes/s at minimum writes", f"{ceiling['vendor_changes_per_s_at_minimum_writes']:,.0f}")
    for name, value in results.get("ratios", {}).items():
        row(f"ratio {name}", f"{value:.3f}")
    resync = ok(results, "resync")
    if resync:
        share = resync["share_of_full_sync"]
        of_full = f" ({share:.1%} of the full sync)" if share is not None else ""
        row("no-change resync", f"{resync['seconds_until_projected']:,.1f} s{of_full}")
        row("  deliveries, dispatcher acks", f"{resync['deliveries']}, {resync['dispatcher_acks']:.0f}")
        work = resync["store"]["all_services"]
        row(
            "  documents read / written per record",
            f"{work['documents_read_per']:.2f} / {work['documents_written_per']:.2f}",
        )
    change = ok(results, "change")
    if change:
        records = change["records_changed"] + change["records_deleted"]
        row("1 % change set", f"{records:,} records, {change['deliveries']:,.0f} deliveries")
        row("  the last delivered after", f"{change['seconds_until_last_delivery']:,.1f} s")
    one = ok(results, "one")
    if one:
        row(
            "one person's change: documents read / written", f"{one['documents_read']:,} / {one['documents_written']:,}"
        )
        row("  round trips, deliveries", f"{one['round_trips']:,}, {one['deliveries']:.0f}")
    trickle = ok(results, "trickle")
    if trickle:
        row(
            f"change latency ({trickle['changes']} at {trickle['rate_per_s']:g}/s)",
            f"p50 {trickle['p50_s']:.2f}, p90 {trickle['p90_s']:.2f}, p99 {trickle['p99_s']:.2f}, "
            f"max {trickle['max_s']:.2f} s",
        )
        if trickle.get("store_ping_max_s") is not None:
            row(
                "  the store's own point read: p99, max",
                f"{trickle['store_ping_p99_s']:.3f}, {trickle['store_ping_max_s']:.2f} s "
                f"({len(trickle['store_pings_over_half_a_second_at'])} over 0.5 s)",
            )
        stalls = [s for s in trickle.get("store_stalls", []) if s["commands"] > 1]
        row(
            "  store stalls (>1 command slower than 0.5 s)",
            "; ".join(
                f"{s['began_s']}-{s['ended_s']} s: {s['commands']} commands, first {s['first']}" for s in stalls[:6]
            )
            or "none",
        )
        slow = trickle["store"]["all_services"].get("commands_over_1.0s") or {}
        row("  store commands over 1 s (all services)", ", ".join(f"{k}: {v}" for k, v in slow.items()) or "none")
    scim = ok(results, "scim")
    if scim:
        d, b = scim["dispatcher"], scim["bare_client"]
        row(
            f"SCIM push, {scim['concurrency']} in flight: dispatcher",
            f"{d['changes_per_s']:,.1f} changes/s ({d['changes']:,} in {d['seconds']:,.1f} s)",
        )
        row("  dispatcher store round trips per change", f"{d['store']['round_trips_per']:.2f}")
        row("  bare aiohttp client, same bodies", f"{b['requests_per_s']:,.1f} requests/s")
    egil = ok(results, "egil")
    if egil:
        c = egil["client"]
        row(
            f"EGIL intake, one at a time ({egil['objects']:,} objects)",
            f"{c['requests_per_s']:,.1f} requests/s, "
            f"p50 {c['latency_p50_ms']:.1f} ms, p99 {c['latency_p99_ms']:.1f} ms",
        )
        row("  receiver store round trips per request", f"{egil['receiver_store']['round_trips_per']:.2f}")
        row("  bare single inserts, same store", f"{egil['bare_single_inserts_per_s']:,.1f} docs/s")
    for name in results.get("phases", []):
        if results.get(name) and "error" in results[name]:
            row(f"{name}: FAILED", str(results[name]["error"])[:200])
    for name, mb in results.get("peak_rss_mb", {}).items():
        row(f"peak RSS {name}", f"{mb:,.0f} MiB" if mb is not None else "gone")
    width = max((len(name) for name, _ in rows), default=0)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def own_vhost() -> str:
    """A RabbitMQ vhost of the run's own (``AMQP_URL`` then points at it), created with a patient
    ``rabbitmqctl``: on a broker other test runs keep busy, vhost operations can take a minute."""
    ensure_rabbitmq()
    name = f"skolsynk-bench-{uuid.uuid4().hex[:6]}"
    try:
        rabbitmqctl("add_vhost", name, timeout=VHOST_TIMEOUT)
        rabbitmqctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*", timeout=VHOST_TIMEOUT)
    except (DevStackError, subprocess.TimeoutExpired):
        with contextlib.suppress(DevStackError, subprocess.TimeoutExpired):
            rabbitmqctl("delete_vhost", name, timeout=VHOST_TIMEOUT)  # it may have been made after all
        raise
    os.environ["AMQP_URL"] = amqp_url_with_vhost(DEFAULT_AMQP_URL, name)
    return name


def main() -> int:
    configure_logging(log_format="console", level="WARNING")
    phases = phases_wanted()
    size_arg = SIZE.upper()
    size: str | SizeSpec = SizeSpec.for_persons(int(size_arg)) if size_arg.isdigit() else size_arg
    started = time.monotonic()
    records = generate(size, seed=SEED)
    say(
        f"skolsynk bench: size {size_arg}, {len(records):,} records (generated in {time.monotonic() - started:.1f}s); "
        f"phases {', '.join(phases)}"
    )
    vhost = None if os.environ.get("AMQP_URL") else own_vhost()
    try:
        stack = Stack.start(
            log_dir=OUT / "logs",
            namespace=NAMESPACE,
            database=DATABASE,
            vhost=vhost or "",
            ttl_sweep_seconds=TTL_SWEEP_SECONDS,
            store_cache=store_cache(len(records)),
        )
        try:
            results = asyncio.run(run(stack, records, size_arg, phases))
        finally:
            stack.close()
    finally:
        if vhost is not None:
            os.environ.pop("AMQP_URL", None)
            with contextlib.suppress(DevStackError, subprocess.TimeoutExpired):
                rabbitmqctl("delete_vhost", vhost, timeout=VHOST_TIMEOUT)
    results["seconds_total"] = time.monotonic() - started
    OUT.mkdir(exist_ok=True)
    path = OUT / f"bench-{size_arg}.json"
    path.write_text(json.dumps(results, indent=2, default=str) + "\n")  # complete: the phases wrote it as they went
    say(table(results))
    say(f"results: {path}   (the whole run took {time.monotonic() - started:.0f}s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
