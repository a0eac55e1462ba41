"""Exchanges and queues: the only place where skolsynk's broker topology is declared.

Naming (``ns`` is ``SKOLSYNK_NAMESPACE``, default ``skolsynk``):

========================================  ==========================================================
``{ns}.source``        topic exchange     raw source events; routing key ``{source_kind}.{tenant}``
``{ns}.vendor``        topic exchange     per-vendor change events; routing key ``{vendor}.{tenant}``
``{ns}.control``       topic exchange     commands (``sync.requested`` ...); routing key = message type
``{ns}.gdpr``          topic exchange     deletion receipts and erasure events
``{ns}.dead-letter``   direct exchange    dead letters; routing key = the work queue's name
``{ns}.{service}.{purpose}``  queue       a work queue (quorum, durable)
``<work queue>.dlq``   queue              its dead-letter queue (quorum)
``<work queue>.retry.{n}``  queue         delayed-retry step n: message TTL, then back to the work queue
========================================  ==========================================================

Every work queue is a durable quorum queue with an explicit ``x-delivery-limit`` (so RabbitMQ 3.x and
4.x agree: unlimited on 3.x otherwise), at-least-once dead-lettering into its DLQ and a ladder of
retry queues (TTL + dead-letter back to the work queue via the default exchange). Changing a queue's
arguments later makes the declare fail with PRECONDITION_FAILED: change them with a new queue name
or a broker policy, never in place.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractQueue

from skolsynk.settings import BrokerSettings

ExchangeKind = Literal["topic", "direct", "fanout"]


@dataclass(frozen=True)
class Binding:
    exchange: str
    routing_key: str


@dataclass(frozen=True)
class QueueSpec:
    """A work queue with its DLQ and retry ladder."""

    name: str
    bindings: tuple[Binding, ...] = ()
    delivery_limit: int = 20
    retry_delays_seconds: tuple[float, ...] = (1.0, 10.0, 60.0, 300.0)
    single_active_consumer: bool = False
    #: Dead letters expire after this many milliseconds (None: kept until handled).
    dead_letter_ttl_ms: int | None = None

    @property
    def dead_letter_queue(self) -> str:
        return f"{self.name}.dlq"

    def retry_queue(self, step: int) -> str:
        return f"{self.name}.retry.{step}"

    def retry_step_for_attempt(self, attempt: int) -> int:
        """Which retry queue a message goes to after its ``attempt``-th failure (1-based)."""
        return min(max(attempt, 1), len(self.retry_delays_seconds)) - 1


@dataclass(frozen=True)
class Topology:
    namespace: str
    exchanges: dict[str, ExchangeKind] = field(default_factory=dict)
    queues: tuple[QueueSpec, ...] = ()

    @property
    def dead_letter_exchange(self) -> str:
        return f"{self.namespace}.dead-letter"

    def exchange(self, purpose: str) -> str:
        name = f"{self.namespace}.{purpose}"
        if name not in self.exchanges:
            raise KeyError(f"exchange {name!r} is not part of the topology")
        return name

    def queue(self, name: str) -> QueueSpec:
        for spec in self.queues:
            if spec.name == name:
                return spec
        raise KeyError(f"queue {name!r} is not part of the topology")

    def with_queues(self, extra: Iterable[QueueSpec]) -> Topology:
        return Topology(self.namespace, dict(self.exchanges), (*self.queues, *extra))


#: Exchanges of skolsynk, by purpose.
EXCHANGE_PURPOSES: dict[str, ExchangeKind] = {
    "source": "topic",
    "vendor": "topic",
    "control": "topic",
    "gdpr": "topic",
}


def queue_name(namespace: str, service: str, purpose: str) -> str:
    return f"{namespace}.{service}.{purpose}"


def sync_request_routing_key(source_kind: str) -> str:
    """Routing key of a ``SyncRequested`` for one kind of connector (``sync.requested.google`` ...)."""
    return f"sync.requested.{source_kind}"


def skolsynk_topology(
    namespace: str,
    *,
    delivery_limit: int = 20,
    retry_delays_seconds: tuple[float, ...] = (1.0, 10.0, 60.0, 300.0),
    vendor_ids: Iterable[str] = (),
    connector_kinds: Iterable[str] = (),
    dead_letter_ttl_ms: int | None = None,
) -> Topology:
    """The whole system's topology. Services declare all of it (idempotent), so start order does not
    matter and no publish is unroutable because a consumer has not started yet. Per-vendor queues
    (``vendor_ids``) and per-connector sync-request queues (``connector_kinds``) are declared by the
    services that consume them (and by those that must not lose what they publish to them)."""
    exchanges: dict[str, ExchangeKind] = {f"{namespace}.{p}": kind for p, kind in EXCHANGE_PURPOSES.items()}
    exchanges[f"{namespace}.dead-letter"] = "direct"

    def work_queue(service: str, purpose: str, *bindings: tuple[str, str]) -> QueueSpec:
        return QueueSpec(
            name=queue_name(namespace, service, purpose),
            bindings=tuple(Binding(f"{namespace}.{ex}", key) for ex, key in bindings),
            delivery_limit=delivery_limit,
            retry_delays_seconds=retry_delays_seconds,
            dead_letter_ttl_ms=dead_letter_ttl_ms,
        )

    queues = [
        work_queue("normaliser", "source-events", ("source", "#")),
        work_queue("normaliser", "projections", ("control", "tenant.projection.requested")),
        work_queue("connectors", "sync-requests", ("control", "sync.requested")),
        work_queue("gdpr", "events", ("gdpr", "#")),
    ]
    queues += [
        work_queue(kind, "sync-requests", ("control", sync_request_routing_key(kind)))
        for kind in sorted(set(connector_kinds))
    ]
    queues += [
        work_queue("dispatcher", vendor_id, ("vendor", f"{vendor_id}.*")) for vendor_id in sorted(set(vendor_ids))
    ]
    return Topology(namespace=namespace, exchanges=exchanges, queues=tuple(queues))


def topology_for(
    broker: BrokerSettings, *, vendor_ids: Iterable[str] = (), connector_kinds: Iterable[str] = ()
) -> Topology:
    """The system topology with the queue arguments of ``broker`` settings: every process that declares
    queues must build it this way, since RabbitMQ refuses a queue redeclared with other arguments."""
    ttl = round(broker.dlq_retention_days * 24 * 3600 * 1000)
    return skolsynk_topology(
        broker.namespace,
        delivery_limit=broker.delivery_limit,
        retry_delays_seconds=broker.retry_delays_seconds,
        vendor_ids=vendor_ids,
        connector_kinds=connector_kinds,
        dead_letter_ttl_ms=ttl or None,
    )


def _quorum_arguments(**extra: Any) -> dict[str, Any]:
    return {"x-queue-type": "quorum", **extra}


async def declare_topology(channel: AbstractChannel, topology: Topology) -> dict[str, AbstractQueue]:
    """Declare every exchange, queue, DLQ, retry queue and binding. Idempotent; returns the work
    queues by name."""
    exchanges: dict[str, AbstractExchange] = {}
    for name, kind in topology.exchanges.items():
        exchanges[name] = await channel.declare_exchange(name, aio_pika.ExchangeType(kind), durable=True)
    dead_letter = exchanges[topology.dead_letter_exchange]

    work_queues: dict[str, AbstractQueue] = {}
    for spec in topology.queues:
        dlq_arguments = (
            _quorum_arguments(**{"x-message-ttl": spec.dead_letter_ttl_ms})
            if spec.dead_letter_ttl_ms
            else _quorum_arguments()
        )
        dlq = await channel.declare_queue(spec.dead_letter_queue, durable=True, arguments=dlq_arguments)
        await dlq.bind(dead_letter, routing_key=spec.name)
        for step, delay in enumerate(spec.retry_delays_seconds):
            # Expired messages go back to the work queue through the default exchange.
            await channel.declare_queue(
                spec.retry_queue(step),
                durable=True,
                arguments=_quorum_arguments(
                    **{
                        "x-message-ttl": int(delay * 1000),
                        "x-dead-letter-exchange": "",
                        "x-dead-letter-routing-key": spec.name,
                        "x-dead-letter-strategy": "at-least-once",
                        "x-overflow": "reject-publish",
                    }
                ),
            )
        queue = await declare_work_queue(channel, topology, spec)
        for binding in spec.bindings:
            await queue.bind(exchanges[binding.exchange], routing_key=binding.routing_key)
        work_queues[spec.name] = queue
    return work_queues


def work_queue_arguments(topology: Topology, spec: QueueSpec) -> dict[str, Any]:
    arguments = _quorum_arguments(
        **{
            "x-delivery-limit": spec.delivery_limit,
            "x-dead-letter-exchange": topology.dead_letter_exchange,
            "x-dead-letter-routing-key": spec.name,
            "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish",
        }
    )
    if spec.single_active_consumer:
        arguments["x-single-active-consumer"] = True
    return arguments


async def declare_work_queue(channel: AbstractChannel, topology: Topology, spec: QueueSpec) -> AbstractQueue:
    """Declare (idempotently) one work queue with its full arguments. Consumers declare through this
    on their own channel, so a robust channel re-declares the same queue after a reconnect."""
    return await channel.declare_queue(spec.name, durable=True, arguments=work_queue_arguments(topology, spec))
