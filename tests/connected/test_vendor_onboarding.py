"""A queue-mode vendor on the real RabbitMQ: it reads its own feed queue, in a vhost of its own, and can do
nothing else, nor learn anything about other vendors' feeds (issue 19, docs/decisions.md #23)."""

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

from skolsynk.messaging.vhosts import amqp_url_with_vhost
from skolsynk_services.dispatcher.onboarding import (
    declare_feed_queue,
    feed_queue_name,
    offboard_vendor,
    onboard_vendor,
    vendor_user_name,
    vendor_vhost,
)
from tests.helpers import wait_for

pytestmark = pytest.mark.connected

VENDOR_A = "vendor-a"
VENDOR_B = "vendor-b"
DISPATCHER_USER = "guest"  # the user of the tests' AMQP URL


def url_for_user(amqp_url: str, user: str, password: str, vhost: str) -> str:
    """The fixture's URL (same host) with another user's credentials, pointing at ``vhost``."""
    parts = urlsplit(amqp_url_with_vhost(amqp_url, vhost))
    host = parts.hostname or "127.0.0.1"
    netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def vendor_url(amqp_url: str, namespace: str, vendor: str, password: str, vhost: str | None = None) -> str:
    """The vendor's own credentials, in its own vhost (or ``vhost``)."""
    user = vendor_user_name(namespace, vendor)
    return url_for_user(amqp_url, user, password, vhost or vendor_vhost(namespace, vendor))


async def refused(connection: AbstractConnection, action: Callable[[AbstractChannel], Awaitable[object]]) -> None:
    """``action`` on a fresh channel fails with ACCESS_REFUSED (which closes that channel)."""
    channel = await connection.channel()
    with pytest.raises(aiormq.exceptions.ChannelAccessRefused):
        await action(channel)


@pytest.fixture
async def onboarded(rabbitmq_vhost: str | None, amqp_url: str, namespace: str) -> AsyncIterator[dict[str, str]]:
    """Both vendors onboarded (each its vhost and user) and their feed queues declared there by the
    dispatcher's user; users and vhosts removed afterwards."""
    if rabbitmq_vhost is None:
        pytest.skip("needs rabbitmqctl to create users and vhosts")
    passwords = {vendor: secrets.token_urlsafe(24) for vendor in (VENDOR_A, VENDOR_B)}
    try:
        await asyncio.gather(
            *(
                onboard_vendor(namespace, vendor, password, dispatcher_user=DISPATCHER_USER)
                for vendor, password in passwords.items()
            )
        )
        for vendor in passwords:
            dispatcher = await aio_pika.connect(amqp_url_with_vhost(amqp_url, vendor_vhost(namespace, vendor)))
            async with dispatcher:
                await declare_feed_queue(await dispatcher.channel(), namespace, vendor)
        yield passwords
    finally:
        await asyncio.gather(*(offboard_vendor(namespace, vendor, delete_feeds=True) for vendor in passwords))


async def publish_into_feed(amqp_url: str, namespace: str, vendor: str, count: int = 1) -> str:
    """``count`` messages into the vendor's feed, as the dispatcher (in the vendor's vhost); the feed's name."""
    feed = feed_queue_name(namespace, vendor)
    dispatcher = await aio_pika.connect(amqp_url_with_vhost(amqp_url, vendor_vhost(namespace, vendor)))
    async with dispatcher:
        channel = await dispatcher.channel()
        for n in range(count):
            await channel.default_exchange.publish(
                aio_pika.Message(b'{"for": "%s"}' % feed.encode(), message_id=f"{feed}-{n}"), routing_key=feed
            )
    return feed


async def test_a_vendor_reads_its_own_feed_and_nothing_else(
    onboarded: dict[str, str], amqp_url: str, namespace: str
) -> None:
    feed_a = await publish_into_feed(amqp_url, namespace, VENDOR_A)
    feed_b = await publish_into_feed(amqp_url, namespace, VENDOR_B)

    url_a = vendor_url(amqp_url, namespace, VENDOR_A, onboarded[VENDOR_A])
    vendor = await aio_pika.connect(url_a)
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
        assert received[0].message_id == f"{feed_a}-0"

        # Another vendor's feed (not in this vhost at all): neither consume nor get, refused by name.
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
    vendor_b = await aio_pika.connect(vendor_url(amqp_url, namespace, VENDOR_B, onboarded[VENDOR_B]))
    async with vendor_b:
        channel = await vendor_b.channel()
        queue = await channel.declare_queue(feed_b, passive=True)
        message = await queue.get(timeout=5)
        assert message.message_id == f"{feed_b}-0"
        await message.ack()

    await offboard_vendor(namespace, VENDOR_A)
    with pytest.raises(aiormq.exceptions.AMQPConnectionError):
        await aio_pika.connect(url_a)


async def not_found(connection: AbstractConnection, queue: str) -> tuple[int, str]:
    """A passive declare of ``queue`` fails with NOT_FOUND: its reply code and text, the queue's name
    taken out (what is left must not tell one missing queue from another)."""
    channel = await connection.channel()
    with pytest.raises(aiormq.exceptions.ChannelNotFoundEntity) as refusal:
        await channel.declare_queue(queue, passive=True)
    code, text = refusal.value.args[:2] if len(refusal.value.args) >= 2 else (404, str(refusal.value))
    return int(code), str(text).replace(queue, "<queue>")


async def test_a_vendor_learns_nothing_about_other_vendors_queues(
    onboarded: dict[str, str], amqp_url: str, namespace: str, rabbitmq_vhost: str
) -> None:
    """Issue 19: a vendor's user could passive-declare any queue of the vhost it shared with the others and
    so learn whether another vendor is there and how many changes wait in its feed. In its own vhost,
    another vendor's feed (with messages waiting) answers exactly as a vendor that does not exist; skolsynk's
    own queues are not there either; and the system's vhost and the other vendor's refuse its user."""
    await publish_into_feed(amqp_url, namespace, VENDOR_B, count=3)
    feed_b = feed_queue_name(namespace, VENDOR_B)
    vendor = await aio_pika.connect(vendor_url(amqp_url, namespace, VENDOR_A, onboarded[VENDOR_A]))
    async with vendor:
        own = await (await vendor.channel()).declare_queue(feed_queue_name(namespace, VENDOR_A), passive=True)
        assert own.declaration_result.message_count == 0  # its own feed: found
        existing = await not_found(vendor, feed_b)
        nobody = await not_found(vendor, feed_queue_name(namespace, "no-such-vendor"))
        assert existing == nobody
        assert existing[0] == 404
        for queue in (f"{namespace}.dispatcher.{VENDOR_B}", f"{namespace}.normaliser.source-events"):
            assert await not_found(vendor, queue) == nobody

    # Its user may not even connect to the system's vhost, nor to the other vendor's.
    password = onboarded[VENDOR_A]
    for vhost in (rabbitmq_vhost, vendor_vhost(namespace, VENDOR_B)):
        with pytest.raises(aiormq.exceptions.AMQPError):
            await aio_pika.connect(vendor_url(amqp_url, namespace, VENDOR_A, password, vhost=vhost))

    # Vendor B's changes are all still there for vendor B.
    vendor_b = await aio_pika.connect(vendor_url(amqp_url, namespace, VENDOR_B, onboarded[VENDOR_B]))
    async with vendor_b:
        queue = await (await vendor_b.channel()).declare_queue(feed_b, passive=True)
        assert queue.declaration_result.message_count == 3


async def test_the_dispatcher_may_only_touch_the_vendors_feeds_in_its_vhost(
    onboarded: dict[str, str], amqp_url: str, namespace: str
) -> None:
    """The dispatcher's user in a vendor's vhost declares, publishes to and reads the vendor's feeds (one per
    organiser too) and nothing else."""
    dispatcher = await aio_pika.connect(amqp_url_with_vhost(amqp_url, vendor_vhost(namespace, VENDOR_A)))
    async with dispatcher:
        channel = await dispatcher.channel()
        organiser_feed = await declare_feed_queue(channel, namespace, VENDOR_A, "kommun-a")
        await channel.default_exchange.publish(aio_pika.Message(b"x", message_id="m"), routing_key=organiser_feed.name)
        taken = await organiser_feed.get(timeout=5)  # compaction takes messages out
        assert taken.message_id == "m"
        await taken.ack()
        await refused(dispatcher, lambda ch: ch.declare_queue(f"{namespace}.elsewhere", durable=True))
        await refused(dispatcher, lambda ch: ch.declare_exchange(f"{namespace}.x", aio_pika.ExchangeType.FANOUT))

        async def publish_to_topic(ch: AbstractChannel) -> object:
            exchange = await ch.get_exchange("amq.topic", ensure=False)
            return await exchange.publish(aio_pika.Message(b"x"), routing_key="anything")

        await refused(dispatcher, publish_to_topic)


async def test_onboarding_again_rotates_the_password(onboarded: dict[str, str], amqp_url: str, namespace: str) -> None:
    new_password = secrets.token_urlsafe(24)
    await onboard_vendor(namespace, VENDOR_A, new_password, dispatcher_user=DISPATCHER_USER)
    with pytest.raises(aiormq.exceptions.AMQPConnectionError):
        await aio_pika.connect(vendor_url(amqp_url, namespace, VENDOR_A, onboarded[VENDOR_A]))
    connection = await aio_pika.connect(vendor_url(amqp_url, namespace, VENDOR_A, new_password))
    async with connection:
        channel = await connection.channel()
        await channel.declare_queue(feed_queue_name(namespace, VENDOR_A), passive=True)
