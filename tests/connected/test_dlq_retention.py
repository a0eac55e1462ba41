"""Dead letters may carry personal data: every DLQ drops them after SKOLSYNK_DLQ_RETENTION_DAYS."""

from __future__ import annotations

import aio_pika
import pytest

from skolsynk.messaging import declare_topology, topology_for
from skolsynk.settings import ServiceSettings
from tests.helpers import delete_topology, queue_depth, wait_for

pytestmark = [pytest.mark.connected, pytest.mark.timeout(60)]


async def test_dead_letters_expire_after_the_retention(settings: ServiceSettings):
    broker = settings.broker.model_copy(update={"dlq_retention_days": 3 / 86400})  # three seconds
    topology = topology_for(broker)
    url = broker.amqp_url.get_secret_value()
    dlq = topology.queues[0].dead_letter_queue
    connection = await aio_pika.connect(url)
    try:
        async with connection:
            channel = await connection.channel()
            await declare_topology(channel, topology)
            await channel.default_exchange.publish(aio_pika.Message(b"a dead letter"), routing_key=dlq)
        assert all(spec.dead_letter_ttl_ms == 3000 for spec in topology.queues)
        assert await queue_depth(url, dlq) == 1, "the dead letter did not arrive"

        async def expired() -> bool:
            return await queue_depth(url, dlq) == 0

        await wait_for(expired, timeout=20, interval=0.2, what="the dead letter to expire")
    finally:
        await delete_topology(url, topology)


def test_zero_keeps_dead_letters_until_handled(settings: ServiceSettings):
    topology = topology_for(settings.broker.model_copy(update={"dlq_retention_days": 0}))
    assert all(spec.dead_letter_ttl_ms is None for spec in topology.queues)
    default = topology_for(settings.broker.model_copy(update={"dlq_retention_days": 14}))
    assert {spec.dead_letter_ttl_ms for spec in default.queues} == {14 * 24 * 3600 * 1000}
