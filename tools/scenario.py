"""What `make demo` and `make bench` share: the embedded stack (a RabbitMQ vhost, the Mongo wire server,
every service as its own process), a synthetic organiser fed to sources, what each vendor should hold
(computed with the normaliser's own validation, reconcile and selection rules), and reading what the
vendors do hold (the delivery ledger, a vendor's own queue, peak memory per process).

Not a library: the two tools import it from this folder.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit
from uuid import UUID

import aio_pika
from pymongo import AsyncMongoClient

from skolsynk.contracts.source import SourceRecord
from skolsynk.domain.ids import content_hash, entity_id
from skolsynk.domain.quality import Finding
from skolsynk.domain.reconcile import missing_marking_summary, reconcile
from skolsynk.domain.selection import ProjectedResource, StoredEntity, TenantState, project
from skolsynk.domain.ss12000 import EntityKind, Person
from skolsynk.domain.subscription import MissingMarkingPolicy, VendorProfile, VendorSubscription
from skolsynk.messaging.vhosts import amqp_url_with_vhost, amqp_user
from skolsynk.settings import DEFAULT_AMQP_URL
from skolsynk.storage.deliveries import DeliveryLedger
from skolsynk_services.dispatcher.onboarding import onboard_vendor, vendor_user_name, vendor_vhost
from skolsynk_services.normaliser.validation import RecordValidator
from skolsynk_testkit.devstack import (
    DevStackError,
    MongoWireServer,
    ServiceProcess,
    claim_vhost,
    delete_vhost,
    ensure_rabbitmq,
    rabbitmqctl,
    start_mongo_wire_server,
    start_service,
)

ROOT = Path(__file__).resolve().parent.parent


# --- the stack ---------------------------------------------------------------------------------------


@dataclass
class Stack:
    """RabbitMQ (a vhost of its own, unless ``AMQP_URL`` is set), the Mongo wire server (unless
    ``MONGODB_URL`` is set) and the services started on them."""

    amqp_url: str
    mongo_url: str
    database: str
    namespace: str
    log_dir: Path
    vhost: str | None = None
    mongo: MongoWireServer | None = None
    env: dict[str, str] = field(default_factory=dict)
    services: dict[str, ServiceProcess] = field(default_factory=dict)
    #: The queue vendors onboarded (:meth:`onboard_queue_vendor`): their users and vhosts go at :meth:`close`.
    queue_vendors: list[str] = field(default_factory=list)

    @classmethod
    def start(
        cls,
        *,
        log_dir: Path,
        namespace: str,
        database: str,
        vhost: str,
        ttl_sweep_seconds: float | None = None,
        store_cache: str | None = None,
    ) -> Stack:
        log_dir.mkdir(parents=True, exist_ok=True)
        amqp_url = os.environ.get("AMQP_URL", "")
        own_vhost: str | None = None
        if not amqp_url:
            ensure_rabbitmq()
            # ``vhost``, or ``vhost-2``... while another run uses it; a run's own leftover is replaced.
            own_vhost = claim_vhost(vhost)
            if own_vhost != vhost:  # a second run beside the first: its vendors' vhosts get other names too
                namespace += own_vhost.removeprefix(vhost).replace("-", "")
            amqp_url = amqp_url_with_vhost(DEFAULT_AMQP_URL, own_vhost)
        mongo: MongoWireServer | None = None
        mongo_url = os.environ.get("MONGODB_URL", "")
        if not mongo_url:
            mongo = start_mongo_wire_server(
                log_path=log_dir / "secantusd.log", ttl_sweep_seconds=ttl_sweep_seconds, cache_size=store_cache
            )
            mongo_url = mongo.url
        env = {
            "AMQP_URL": amqp_url,
            "MONGODB_URL": mongo_url,
            "MONGODB_DATABASE": database,
            "SKOLSYNK_NAMESPACE": namespace,
            "SKOLSYNK_READINESS_GRACE_SECONDS": "1",
        }
        return cls(amqp_url, mongo_url, database, namespace, log_dir, own_vhost, mongo, env)

    def start_service(self, name: str, module: str, **extra: str) -> ServiceProcess:
        service = start_service(name, module, env={**self.env, **extra}, log_dir=self.log_dir)
        self.services[name] = service
        return service

    def stop_services(self, timeout: float = 60.0) -> dict[str, int]:
        """SIGTERM to every service (drain, then close); their exit codes."""
        return {name: service.terminate(timeout=timeout) for name, service in self.services.items()}

    async def onboard_queue_vendor(self, vendor_id: str) -> str:
        """As an operator onboards a queue vendor (docs/vendors.md), before its dispatcher starts: the vendor's
        own vhost, where the dispatcher puts its feed, and its own user, which may read that feed and nothing
        else. Returns the URL the vendor reads its feed with (its user, its vhost)."""
        password = secrets.token_urlsafe(24)
        await onboard_vendor(self.namespace, vendor_id, password, dispatcher_user=amqp_user(self.amqp_url))
        self.queue_vendors.append(vendor_id)
        parts = urlsplit(amqp_url_with_vhost(self.amqp_url, vendor_vhost(self.namespace, vendor_id)))
        host = f"{parts.hostname}:{parts.port}" if parts.port else str(parts.hostname)
        credentials = f"{quote(vendor_user_name(self.namespace, vendor_id), safe='')}:{quote(password, safe='')}"
        return urlunsplit((parts.scheme, f"{credentials}@{host}", parts.path, parts.query, parts.fragment))

    def close(self) -> None:
        for service in self.services.values():
            service.terminate(timeout=10)
        if self.mongo is not None:
            self.mongo.stop()
        for vendor_id in self.queue_vendors:  # offboarded, with the feeds
            with contextlib.suppress(DevStackError):
                rabbitmqctl("delete_user", vendor_user_name(self.namespace, vendor_id))
            with contextlib.suppress(DevStackError):
                rabbitmqctl("delete_vhost", vendor_vhost(self.namespace, vendor_id))
        if self.vhost is not None:
            with contextlib.suppress(DevStackError):
                delete_vhost(self.vhost)


def metric(service: ServiceProcess, name: str, **labels: str) -> float:
    """A sample of ``service``'s /metrics (0 when absent): ``name`` with exactly these labels among its own."""
    try:
        _, body = service.get("/metrics")
    except OSError:
        return 0.0
    wanted = [f'{k}="{v}"' for k, v in labels.items()]
    total = 0.0
    for line in body.decode().splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            head, _, value = line.rpartition(" ")
            if all(w in head for w in wanted):
                total += float(value)
    return total


def peak_rss_mb(pid: int) -> float | None:
    """The process's peak resident set (VmHWM), in MiB; None when it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


# --- what each vendor should hold -----------------------------------------------------------------------


class Expectation:
    """An organiser's sources as the normaliser would store them, and each vendor's selection of it:
    the same validation (``normaliser.validation``), reconcile and selection code as the services, with
    the organiser's ``missing_marking`` setting (``protected`` unless the organiser said otherwise)."""

    def __init__(
        self,
        tenant_id: str,
        sources: Mapping[str, Iterable[SourceRecord]],
        today: date,
        *,
        missing_marking: MissingMarkingPolicy = MissingMarkingPolicy.PROTECTED,
    ) -> None:
        self.tenant_id = tenant_id
        self.today = today
        self.missing_marking = missing_marking
        entities: list[StoredEntity] = []
        self.ingest_findings: list[Finding] = []
        run = uuid.uuid4()
        for source_id, records in sources.items():
            validator = RecordValidator(tenant_id, source_id, run)
            for record in records:
                entity, found = validator.validate(record)
                self.ingest_findings += found
                if entity is not None:
                    entities.append(
                        StoredEntity(entity_id(tenant_id, source_id, record.kind, record.key), source_id, entity)
                    )
        self.state: TenantState
        self.state, self.reconcile_findings = reconcile(tenant_id, entities, today, missing_marking=missing_marking)

    @property
    def unmarked(self) -> dict[str, tuple[int, int]]:
        """Per source: persons whose securityMarking the source did not give, persons (those not withheld)."""
        counts: dict[str, tuple[int, int]] = {}
        for stored in self.state.entities:
            if isinstance(stored.entity, Person):
                missing, persons = counts.get(stored.source_id, (0, 0))
                counts[stored.source_id] = (missing + (not stored.entity.marking_known), persons + 1)
        return counts

    @property
    def findings(self) -> list[Finding]:
        """Every finding the normaliser makes: ingest, reconcile, and the summaries of a whole projection."""
        summaries = missing_marking_summary(self.tenant_id, self.unmarked, self.missing_marking)
        return self.ingest_findings + self.reconcile_findings + summaries

    def desired(
        self, subscription: VendorSubscription, profile: VendorProfile | None = None, *, excluded: Iterable[str] = ()
    ) -> dict[UUID, ProjectedResource]:
        """What the vendor should hold (erasure requests exclude persons, as the normaliser does)."""
        selecting = subscription.model_copy(update={"exclude_persons": subscription.exclude_persons | set(excluded)})
        projected = project(
            self.state, selecting, profile or VendorProfile(vendor_id=subscription.vendor_id), self.today
        )
        withheld = {str(i) for i in self.state.withheld}
        return {k: v for k, v in projected.items() if str(v.source_entity_id or k) not in withheld}


def resource_hash(resource: ProjectedResource) -> str:
    """The hash the dispatcher records for this resource (after its trip through JSON)."""
    return content_hash(json.loads(json.dumps(resource.resource, default=str)))


@dataclass
class Holding:
    """A vendor's delivery ledger compared with what it should hold."""

    entries: list[dict[str, Any]]
    missing: int
    outdated: int
    extra: int

    @property
    def exact(self) -> bool:
        return self.missing == 0 and self.outdated == 0 and self.extra == 0


async def holding(
    client: AsyncMongoClient[dict[str, Any]],
    database: str,
    tenant_id: str,
    vendor_id: str,
    desired: Mapping[UUID, ProjectedResource],
    *,
    test_mode: bool,
) -> Holding:
    """What the dispatcher's ledger says the vendor holds (or, in test mode, would hold) against ``desired``."""
    entries = await DeliveryLedger(client[database], vendor_id).entries(tenant_id)
    ok = {"test", "test_rejected"} if test_mode else {"delivered"}
    held = {
        e["entity_id"]: e["hash"]
        for e in entries
        if e["operation"] == "upsert" and e["status"] in ok and e["test"] == test_mode
    }
    wanted = {str(k): resource_hash(v) for k, v in desired.items()}
    missing = sum(1 for k in wanted if k not in held)
    outdated = sum(1 for k, h in wanted.items() if k in held and held[k] != h)
    extra = sum(1 for k in held if k not in wanted)
    return Holding(entries, missing, outdated, extra)


def count_by_kind(resources: Iterable[ProjectedResource]) -> Counter[str]:
    """Persons by role (student, teacher, other_staff), the other kinds by kind."""
    counts: Counter[str] = Counter()
    for resource in resources:
        if resource.kind is EntityKind.PERSON:
            counts[resource.roles[0] if resource.roles else "person"] += 1
            counts["person"] += 1
        else:
            counts[resource.kind.value] += 1
    return counts


# --- a vendor's own queue ----------------------------------------------------------------------------


class FeedConsumer:
    """Reads a queue-mode vendor's feed (``{ns}.vendor-feed.{vendor}``) as the vendor would: counts the
    changes and keeps the set of entities the vendor holds, and when each arrived."""

    def __init__(self, amqp_url: str, queue: str) -> None:
        self.amqp_url = amqp_url
        self.queue = queue
        self.received = 0
        self.operations: Counter[tuple[str, str]] = Counter()
        self.held: dict[str, str] = {}  # entity id -> kind
        self.hashes: dict[str, str] = {}  # entity id -> hash of the resource it holds
        self.last_at = 0.0
        self.arrivals: dict[str, float] = {}  # entity id -> monotonic time of its last change
        self._connection: aio_pika.abc.AbstractRobustConnection | None = None

    async def start(self) -> None:
        self._connection = await aio_pika.connect_robust(self.amqp_url)
        channel = await self._connection.channel()
        await channel.set_qos(prefetch_count=200)
        queue = await channel.get_queue(self.queue, ensure=True)
        await queue.consume(self._on_message)

    async def _on_message(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        async with message.process():
            payload = json.loads(message.body)["payload"]
            entity, operation, kind = str(payload["entity_id"]), payload["operation"], payload["entity_kind"]
            self.received += 1
            self.operations[(kind, operation)] += 1
            if operation == "delete":
                self.held.pop(entity, None)
                self.hashes.pop(entity, None)
            else:
                self.held[entity] = kind
                self.hashes[entity] = content_hash(payload.get("resource"))
            self.last_at = time.monotonic()
            self.arrivals[entity] = self.last_at

    async def close(self) -> None:
        if self._connection is not None:
            await self._connection.close()


def exactly(feed: FeedConsumer, desired: Mapping[UUID, ProjectedResource]) -> bool:
    """The queue vendor holds exactly ``desired`` (same entities, same content)."""
    return len(feed.hashes) == len(desired) and all(
        feed.hashes.get(str(k)) == resource_hash(v) for k, v in desired.items()
    )


async def wait_for(predicate: Any, *, timeout: float, interval: float = 1.0, what: str) -> None:
    """Poll an async or plain predicate until it holds."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise DevStackError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(interval)
