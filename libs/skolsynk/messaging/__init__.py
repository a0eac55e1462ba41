"""Messaging on RabbitMQ with aio-pika: topology, publisher, consumer, inbox and outbox."""

from skolsynk.messaging.broker import Broker
from skolsynk.messaging.consumer import (
    BatchConsumer,
    BatchHandler,
    Consumer,
    Deferred,
    Handler,
    MessageContext,
    PermanentError,
    TransientError,
)
from skolsynk.messaging.inbox import AlreadyProcessed, Inbox
from skolsynk.messaging.outbox import Outbox, OutboxEntry, OutboxRelay
from skolsynk.messaging.publisher import OutgoingMessage, Publisher, UnroutableMessage
from skolsynk.messaging.topology import (
    Binding,
    QueueSpec,
    Topology,
    declare_topology,
    declare_work_queue,
    queue_name,
    skolsynk_topology,
    sync_request_routing_key,
    topology_for,
)

__all__ = [
    "AlreadyProcessed",
    "BatchConsumer",
    "BatchHandler",
    "Binding",
    "Broker",
    "Consumer",
    "Deferred",
    "Handler",
    "Inbox",
    "MessageContext",
    "Outbox",
    "OutboxEntry",
    "OutboxRelay",
    "OutgoingMessage",
    "PermanentError",
    "Publisher",
    "QueueSpec",
    "Topology",
    "TransientError",
    "UnroutableMessage",
    "declare_topology",
    "declare_work_queue",
    "queue_name",
    "skolsynk_topology",
    "sync_request_routing_key",
    "topology_for",
]
