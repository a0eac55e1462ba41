"""A queue vendor's feed in the vendor's own vhost, as the dispatcher reaches it (docs/decisions.md #23).

The dispatcher opens one robust connection per queue vendor it serves, to the vendor's vhost
(:func:`skolsynk.messaging.vhosts.vendor_vhost_name`: its own ``SKOLSYNK_AMQP_URL`` with the vhost
replaced, the same user), declares the vendor's feeds there and publishes into them with confirms. The
vhost is created by onboarding (:mod:`skolsynk_services.dispatcher.onboarding`), not by the dispatcher
(creating a vhost takes administrator rights the dispatcher does not have). Until it exists, or while
the dispatcher's user may not use it, the vendor's deliveries wait on the retry ladder (never dead-lettered,
nothing lost) and its delivery state says ``feed_vhost_missing``; the connection is tried again at most
every :data:`RECONNECT_SECONDS`. Once connected, the connection reconnects on its own and declares the
feeds again after every reconnect.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from pydantic import SecretStr

from skolsynk.contracts import Envelope
from skolsynk.logging import get_logger
from skolsynk.messaging import Broker, Publisher, Topology, UnroutableMessage
from skolsynk.messaging.vhosts import amqp_url_with_vhost, vendor_vhost_name
from skolsynk.observability import Metrics
from skolsynk.settings import BrokerSettings
from skolsynk_services.dispatcher.onboarding import declare_feed_queue, feed_queue_name
from skolsynk_services.dispatcher.scim import VendorUnavailable

log = get_logger(__name__)

#: The delivery-state code while the vendor's vhost cannot be used (missing, or no permissions there).
FEED_VHOST_MISSING = "feed_vhost_missing"
#: The delivery-state code when the vendor's vhost is there but a publish into the feed failed.
FEED_UNAVAILABLE = "feed_unavailable"
#: Shortest interval between two attempts to connect to a vhost that refused the connection.
RECONNECT_SECONDS = 5.0


class _FeedBroker(Broker):
    """The connection to the vendor's vhost: what it declares (at connect and after every reconnect) is the
    vendor's feeds this process has used, not the system's topology."""

    def __init__(self, feed: VendorFeed, settings: BrokerSettings, metrics: Metrics, *, name: str) -> None:
        super().__init__(settings, Topology(settings.namespace), metrics, name=name)
        self._feed = feed

    async def declare(self) -> None:
        async with self.connection.channel(publisher_confirms=False) as channel:
            for tenant_id in sorted(self._feed.declared, key=lambda t: t or ""):
                await declare_feed_queue(channel, self._feed.namespace, self._feed.vendor_id, tenant_id)


class VendorFeed:
    """One queue vendor's feeds (its one feed, or with ``per_organiser`` one per organiser) in its vhost."""

    def __init__(
        self, settings: BrokerSettings, vendor_id: str, metrics: Metrics, *, per_organiser: bool = False
    ) -> None:
        self.namespace = settings.namespace
        self.vendor_id = vendor_id
        self.per_organiser = per_organiser
        self.vhost = vendor_vhost_name(self.namespace, vendor_id)
        #: The dispatcher's own URL, pointing at the vendor's vhost (for the feed compactor's connection too).
        self.amqp_url = amqp_url_with_vhost(settings.amqp_url.get_secret_value(), self.vhost)
        #: The feeds declared on the current connection: None for the vendor's one feed, else the organisers.
        self.declared: set[str | None] = set()
        self._broker = _FeedBroker(
            self,
            settings.model_copy(update={"amqp_url": SecretStr(self.amqp_url)}),
            metrics,
            name=f"dispatcher-{vendor_id}-feed",
        )
        self.publisher = Publisher(self._broker, metrics, timeout_seconds=settings.publish_timeout_seconds)
        self._connected = False
        #: One connection attempt at a time: the forwards of a batch run concurrently.
        self._opening = asyncio.Lock()
        self._last_attempt = -RECONNECT_SECONDS
        self._refused_logged = False

    def queue_name(self, tenant_id: str) -> str:
        """The feed an organiser's changes go to."""
        return feed_queue_name(self.namespace, self.vendor_id, tenant_id if self.per_organiser else None)

    @property
    def connected(self) -> bool:
        return self._connected and self._broker.is_connected()

    async def open(self) -> bool:
        """Connect to the vendor's vhost and declare its feed (a vendor with one feed per organiser: those
        are declared when first used). False, logged, when the vhost refuses the connection: the next
        :meth:`publish` tries again."""
        if self._connected:
            return True
        self._last_attempt = time.monotonic()
        if not self.per_organiser:
            self.declared.add(None)
        try:
            await self._broker.connect(timeout=10.0)
            await self.publisher.start()
        except Exception as error:  # noqa: BLE001 - missing vhost, no permissions there, broker away
            if self._broker.is_connected():  # connected, but the feed could not be declared
                await self._broker.close()
            if not self._refused_logged:  # once per outage, not once per batch
                self._refused_logged = True
                log.warning(
                    "vendor_feed_vhost_unavailable",
                    vendor_id=self.vendor_id,
                    vhost=self.vhost,
                    error_type=type(error).__name__,
                    hint="onboard the vendor (python -m skolsynk_services.dispatcher.onboarding onboard)",
                )
            return False
        self._connected = True
        if self._refused_logged:
            log.info("vendor_feed_vhost_available", vendor_id=self.vendor_id, vhost=self.vhost)
        self._refused_logged = False
        return True

    async def publish(self, tenant_id: str, envelope: Envelope, *, headers: dict[str, Any], expiration: float) -> str:
        """Publish into the organiser's feed (declared first if this connection has not yet) and wait for the
        broker's confirm; returns the feed's name. Raises :class:`VendorUnavailable` (``feed_vhost_missing``,
        ``feed_unavailable``): the change goes back to the retry ladder."""
        if not self._connected:
            async with self._opening:  # the first of a batch tries; the others take its answer
                waited = time.monotonic() - self._last_attempt
                if not self._connected and (waited < RECONNECT_SECONDS or not await self.open()):
                    raise VendorUnavailable(
                        f"the vendor's vhost {self.vhost} is missing or refuses the dispatcher",
                        code=FEED_VHOST_MISSING,
                    )
        key = tenant_id if self.per_organiser else None
        queue = self.queue_name(tenant_id)
        try:
            if key not in self.declared:
                async with self._broker.connection.channel(publisher_confirms=False) as channel:
                    await declare_feed_queue(channel, self.namespace, self.vendor_id, key)
                self.declared.add(key)
            await self.publisher.publish(
                envelope, exchange="", routing_key=queue, headers=headers, expiration=expiration
            )
        except UnroutableMessage as error:
            # The feed is gone (the vhost deleted and made again): declared again with the next publish.
            self.declared.discard(key)
            raise VendorUnavailable(f"the vendor's feed in {self.vhost} is missing", code=FEED_UNAVAILABLE) from error
        except VendorUnavailable:
            raise
        except Exception as error:
            raise VendorUnavailable(
                f"publishing into the vendor's feed in {self.vhost} failed ({type(error).__name__})",
                code=FEED_UNAVAILABLE,
            ) from error
        return queue

    async def close(self) -> None:
        """At stop: the publisher's channel, then the connection."""
        self._connected = False
        try:
            await self.publisher.close()
        finally:
            await self._broker.close()
