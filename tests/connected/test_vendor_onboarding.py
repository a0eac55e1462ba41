"""A queue-mode vendor on the real RabbitMQ: it reads its own feed queue and can do nothing else."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from urllib.parse import quote, urlsplit, urlunsplit

import aio_pika
import aiormq.exceptions
import pytest
from aio_pika.abc import AbstractChannel, AbstractConnection

from skolsynk_services.dispatcher.onboarding import (
    declare_feed_queue,
    feed_queue_name,
    offboard_vendor,
    onboard_vendor,
    vendor_user_name,
)
from tests.helpers import wait_for

pytestmark = pytest.mark.connected

VENDOR_A = "vendor-a"
VENDOR_B = "vendor-b"


def url_for_user(amqp_url: str, user: str, password: str) -> str:
    """The fixture's URL (same host and vhost) with another user's credentials."""
    parts = urlsplit(amqp_url)
    host = parts.hostname or "127.0.0.1"
    netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


async def refused(connection: AbstractConnection, action: Callable[[AbstractChannel], Awaitable[object]]) -> None:
    """``action`` on a fresh channel fails with ACCESS_REFUSED (which closes that channel)."""
    channel = await connection.channel()
    with pytest.raises(aiormq.exceptions.ChannelAccessRefused):
        await action(channel)


@pytest.fixture
async def onboarded(rabbitmq_vhost: str | None, amqp_url: str, namespace: str) -> AsyncIterator[dict[str, str]]:
    """Both vendors' feed queues (declared as guest) and users; removed afterwards."""
    if rabbitmq_vhost is None:
        pytest.skip("needs rabbitmqctl to create users")
    passwords = {vendor: secrets.token_urlsafe(24) for vendor in (VENDOR_A, VENDOR_B)}
    admin = await aio_pika.connect(amqp_url)
    try:
        channel = await admin.channel()
        for vendor in passwords:
            await declare_feed_queue(channel, namespace, vendor)
        await asyncio.gather(
            *(
                onboard_vendor(namespace, vendor, password, vhost=rabbitmq_vhost)
                for vendor, password in passwords.items()
            )
        )
        yield passwords
    finally:
        await asyncio.gather(*(offboard_vendor(namespace, vendor) for vendor in passwords))
        channel = await admin.channel()
        for vendor in passwords:
            await channel.queue_delete(feed_queue_name(namespace, vendor))
        await admin.close()


async def test_a_vendor_reads_its_own_feed_and_nothing_else(
    onboarded: dict[str, str], amqp_url: str, namespace: str
) -> None:
    feed_a = feed_queue_name(namespace, VENDOR_A)
    feed_b = feed_queue_name(namespace, VENDOR_B)
    admin = await aio_pika.connect(amqp_url)
    async with admin:
        channel = await admin.channel()
        for feed in (feed_a, feed_b):
            await channel.default_exchange.publish(
                aio_pika.Message(b'{"for": "%s"}' % feed.encode(), message_id=feed), routing_key=feed
            )

    vendor_url = url_for_user(amqp_url, vendor_user_name(namespace, VENDOR_A), onboarded[VENDOR_A])
    vendor = await aio_pika.connect(vendor_url)
    async with vendor:
        # Its own feed: a passive declare (no configure permission needed), consume, ack.
        channel = await vendor.channel()
        await channel.set_qos(prefetch_count=10)
        queue = await channel.declare_queue(feed_a, passive=True)
        received: list[aio_pika.abc.AbstractIncomingMessage] = []

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            await message.ack()
            received.append(message)

        await queue.consume(on_message)
        await wait_for(lambda: len(received) == 1, timeout=5, what="vendor A's message")
        assert received[0].message_id == feed_a

        # Another vendor's feed: neither consume nor get.
        async def consume_b(ch: AbstractChannel) -> object:
            return await (await ch.get_queue(feed_b, ensure=False)).consume(on_message)

        async def get_b(ch: AbstractChannel) -> object:
            return await (await ch.get_queue(feed_b, ensure=False)).get(fail=False)

        await refused(vendor, consume_b)
        await refused(vendor, get_b)

        # Publishing: not to the default exchange (not even into its own feed), not to any exchange.
        async def publish_to(ch: AbstractChannel, exchange: str) -> object:
            target = ch.default_exchange if exchange == "" else await ch.get_exchange(exchange, ensure=False)
            return await target.publish(aio_pika.Message(b"x"), routing_key=feed_a)

        for exchange in ("", "amq.topic", "amq.direct", "amq.fanout"):
            await refused(vendor, partial(publish_to, exchange=exchange))

        # Declaring: no new queue (named or server-named), no exchange, not even its own feed again.
        await refused(vendor, lambda ch: ch.declare_queue(f"{feed_a}-extra"))
        await refused(vendor, lambda ch: ch.declare_queue(exclusive=True))
        await refused(vendor, lambda ch: ch.declare_exchange(f"{namespace}.mine", aio_pika.ExchangeType.FANOUT))
        await refused(vendor, lambda ch: ch.declare_queue(feed_a, durable=True, arguments={"x-queue-type": "quorum"}))

    # Vendor B's message is still there for vendor B.
    vendor_b = await aio_pika.connect(
        url_for_user(amqp_url, vendor_user_name(namespace, VENDOR_B), onboarded[VENDOR_B])
    )
    async with vendor_b:
        channel = await vendor_b.channel()
        queue = await channel.declare_queue(feed_b, passive=True)
        message = await queue.get(timeout=5)
        assert message.message_id == feed_b
        await message.ack()

    await offboard_vendor(namespace, VENDOR_A)
    with pytest.raises(aiormq.exceptions.AMQPConnectionError):
        await aio_pika.connect(vendor_url)


async def test_onboarding_again_rotates_the_password(
    onboarded: dict[str, str], amqp_url: str, namespace: str, rabbitmq_vhost: str
) -> None:
    user = vendor_user_name(namespace, VENDOR_A)
    new_password = secrets.token_urlsafe(24)
    await onboard_vendor(namespace, VENDOR_A, new_password, vhost=rabbitmq_vhost)
    with pytest.raises(aiormq.exceptions.AMQPConnectionError):
        await aio_pika.connect(url_for_user(amqp_url, user, onboarded[VENDOR_A]))
    connection = await aio_pika.connect(url_for_user(amqp_url, user, new_password))
    async with connection:
        channel = await connection.channel()
        await channel.declare_queue(feed_queue_name(namespace, VENDOR_A), passive=True)
