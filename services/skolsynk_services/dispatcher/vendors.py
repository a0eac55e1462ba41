"""The vendors one dispatcher process serves, as the catalogue in the store says (:class:`VendorPool`), and
everything that delivers to one of them (:class:`VendorWorker`).

A dispatcher serves either one vendor (``SKOLSYNK_VENDOR_ID``: a deployment per large vendor) or every
vendor of the catalogue (``SKOLSYNK_VENDOR_ID`` unset: one deployment for the many small ones). Either way
each vendor has its own work queue, its own consumer with its own prefetch, SCIM client, rate limit and
concurrency: a vendor whose server is slow or down fills its own queue and holds its own batches, never
another vendor's (no shared buffer to starve). The pool looks at the catalogue's versions every
``SKOLSYNK_VENDORS_POLL_SECONDS``: a vendor added is served from then on (its queue declared and bound, its
profile published), a changed one is restarted with its new settings (in-flight batches drained first),
a retired one is stopped (its queue stays, for a later revival or a resend). See docs/dispatcher.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from skolsynk.catalogue import DeliveryMode, VendorCatalogueEntry
from skolsynk.logging import get_logger
from skolsynk.messaging import BatchConsumer
from skolsynk.messaging.outbox import Outbox
from skolsynk.messaging.topology import Topology, declare_topology, topology_for
from skolsynk.service import ServiceApp
from skolsynk.storage import deliveries as ledger
from skolsynk.storage.delivery_backlog import DeliveryBacklog
from skolsynk.storage.delivery_health import DeliveryHealth, retrying_seconds
from skolsynk.storage.sources import SecretBox
from skolsynk.storage.subscriptions import SubscriptionStore
from skolsynk.storage.vendor_credentials import PairCredentials, VendorCredentials
from skolsynk.storage.vendors import VendorStore
from skolsynk_services.dispatcher import drift
from skolsynk_services.dispatcher.delivery import VendorDeliverer
from skolsynk_services.dispatcher.feed import FeedCompactor
from skolsynk_services.dispatcher.metrics import DispatcherMetrics, FeedCompactionMetrics
from skolsynk_services.dispatcher.onboarding import feed_queue_name
from skolsynk_services.dispatcher.scim import EgilScimClient
from skolsynk_services.dispatcher.vendor_feed import VendorFeed

if TYPE_CHECKING:
    from skolsynk_services.dispatcher.app import DispatcherSettings

log = get_logger(__name__)
SERVICE = "dispatcher"
#: The shortest interval between two readings of the delivery health and backlog gauges.
GAUGE_SECONDS = 30.0


class VendorNotServable(RuntimeError):
    """A vendor this process cannot serve as configured (its API key's variable is not set): logged and
    tried again at the next poll; the other vendors are served."""


def vendor_topology(app: ServiceApp, vendor_id: str) -> Topology:
    """The system's exchanges with the vendor's work queue (and its DLQ and retry queues), with the queue
    arguments of the broker settings, as every process declares it."""
    spec = topology_for(app.settings.broker, vendor_ids=[vendor_id]).queue(app.queue_name(SERVICE, vendor_id))
    return Topology(app.topology.namespace, dict(app.topology.exchanges), (spec,))


class VendorWorker:
    """One vendor's delivery in this process: its ledger, SCIM client or feed queue, deliverer, batch
    consumer, and the feed compactor or drift check. :meth:`start`, then :meth:`stop`."""

    def __init__(
        self,
        app: ServiceApp,
        settings: DispatcherSettings,
        vendor: VendorCatalogueEntry,
        metrics: DispatcherMetrics,
        feed_metrics: FeedCompactionMetrics,
        health: DeliveryHealth | None = None,
        backlog: DeliveryBacklog | None = None,
    ) -> None:
        self.app = app
        self.vendor = vendor
        self.topology = vendor_topology(app, vendor.vendor_id)
        self.scim: EgilScimClient | None = None
        self.feed: VendorFeed | None = None
        self.compactor: FeedCompactor | None = None
        self.drift: drift.DriftChecker | None = None
        self._tasks: list[asyncio.Task[None]] = []
        if vendor.delivery is DeliveryMode.EGIL_SCIM:
            assert vendor.scim is not None
            env = vendor.scim.auth.api_key_env
            api_key = os.environ.get(env) if env else None
            if env and not api_key:
                raise VendorNotServable(f"the vendor's API key is expected in the environment variable {env}")
            self.scim = EgilScimClient(
                vendor.scim,
                api_key=api_key,
                retry_timeout_seconds=settings.vendor_retry_timeout_seconds,
                metrics=metrics,
                vendor_id=vendor.vendor_id,
            )
            if settings.drift_check_hours > 0:
                self.drift = drift.DriftChecker(
                    vendor.vendor_id,
                    vendor.profile.kinds,
                    app.db,
                    self.scim,
                    app.publisher,
                    control_exchange=app.topology.exchange("control"),
                    interval=timedelta(hours=settings.drift_check_hours),
                    metrics=metrics,
                )
        else:
            namespace = settings.broker.namespace
            # The vendor's feeds live in a vhost of its own (docs/decisions.md #23).
            self.feed = VendorFeed(
                settings.broker, vendor.vendor_id, app.metrics, per_organiser=vendor.feed_per_organiser
            )
            if settings.feed_compaction_seconds > 0:
                self.compactor = FeedCompactor(
                    vendor.vendor_id,
                    feed_queue_name(namespace, vendor.vendor_id),
                    retention_seconds=vendor.feed_retention_hours * 3600,
                    interval_seconds=settings.feed_compaction_seconds,
                    amqp_url=self.feed.amqp_url,
                    metrics=feed_metrics,
                    queue_of=(lambda tenant: feed_queue_name(namespace, vendor.vendor_id, tenant))
                    if vendor.feed_per_organiser
                    else None,
                )
        broker = settings.broker
        self.deliverer = VendorDeliverer(
            vendor,
            ledger.DeliveryLedger(app.db, vendor.vendor_id),
            scim=self.scim,
            publisher=app.publisher,
            feed=self.feed,
            receipts_exchange=app.topology.exchange("gdpr"),
            # waiting for references in flight must leave the batch time within the handler's timeout
            dependency_wait_seconds=min(10.0, broker.handler_timeout_seconds / 3),
            metrics=metrics,
            compactor=self.compactor,
            health=health,
            backlog=backlog,
        )
        # Deliveries have effects outside MongoDB: idempotency comes from the ledger's versions. Batches of
        # up to SKOLSYNK_PREFETCH changes, two in flight (docs/dispatcher.md); both must get through the
        # vendor's rate limit well within the handler's budget.
        batch_size = broker.prefetch
        if vendor.scim is not None:
            paced = int(vendor.scim.rate_per_second * broker.handler_timeout_seconds / 4)
            batch_size = max(1, min(batch_size, paced))
        self.consumer = BatchConsumer(
            broker=app.broker,
            publisher=app.publisher,
            topology=self.topology,
            queue=self.topology.queues[0],
            handler=self.deliverer.handle_batch,
            metrics=app.metrics,
            batch_size=batch_size,
            max_attempts=broker.max_attempts,
            handler_timeout_seconds=broker.handler_timeout_seconds,
        )

    def _background(self, name: str, work: Callable[[], Coroutine[Any, Any, None]]) -> None:
        self._tasks.append(asyncio.create_task(work(), name=f"{SERVICE}-{self.vendor.vendor_id}:{name}"))

    async def start(self, *, consume: bool = True) -> None:
        """Publish the vendor's profile for the normaliser, declare its queues (work queue bound to the
        vendor exchange; a queue vendor's feed, in its vhost: if that is missing, its deliveries wait),
        start the SCIM client, the consumer (``consume=False``: later, :meth:`VendorPool.start_consuming`)
        and the background work."""
        await SubscriptionStore(self.app.db).save_profile(self.vendor.profile)
        spec = self.topology.queues[0]
        if spec.name not in {q.name for q in self.app.topology.queues}:  # the app's topology names what it uses
            self.app.topology = self.app.topology.with_queues([spec])
        async with self.app.broker.connection.channel(publisher_confirms=False) as channel:
            await declare_topology(channel, self.topology)
        if self.feed is not None:
            await self.feed.open()
        if self.scim is not None:
            await self.scim.start()
        if consume:
            await self.consumer.start()
        if self.compactor is not None:
            self._background("feed-compaction", self.compactor.run_forever)
        if self.drift is not None:
            self._background("drift-check", self._check_drift_forever)
        log.info("vendor_served", vendor_id=self.vendor.vendor_id, delivery=self.vendor.delivery.value)

    async def idle(self) -> bool:
        """Nothing waits for the vendor in this process or the broker: nothing in flight here, the work
        queue and its retry queues empty (another replica's deliveries in flight are not seen)."""
        if self.consumer.inflight or self.deliverer.counting:
            return False
        spec = self.topology.queues[0]
        names = [spec.name, *(spec.retry_queue(step) for step in range(len(spec.retry_delays_seconds)))]
        async with self.app.broker.connection.channel(publisher_confirms=False) as channel:
            for name in names:
                queue = await channel.declare_queue(name, passive=True)
                if queue.declaration_result.message_count:
                    return False
        return True

    async def _check_drift_forever(self) -> None:
        checker = self.drift
        assert checker is not None
        while True:
            try:
                if await checker.claim_slot():
                    await checker.check()
            except Exception:
                log.exception("drift_check_failed", vendor_id=self.vendor.vendor_id)  # the next slot tries again
            await asyncio.sleep(min(checker.interval.total_seconds(), 60.0))

    async def stop(self, drain_timeout: float) -> None:
        """Stop consuming (in-flight batches finish within ``drain_timeout``, the rest is requeued), stop
        the background work, close the clients."""
        await self.consumer.stop(drain_timeout)
        try:
            await self.deliverer.close()
        except Exception:  # the store is away: the counts are levelled later
            log.warning("delivery_backlog_flush_failed", vendor_id=self.vendor.vendor_id, exc_info=True)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if self.compactor is not None:
            await self.compactor.close()
        if self.feed is not None:
            await self.feed.close()
        if self.scim is not None:
            await self.scim.close()
        log.info("vendor_no_longer_served", vendor_id=self.vendor.vendor_id)


class VendorPool:
    """The workers of the vendors this process serves (``only``: that one vendor; else all of them),
    following the catalogue in the store."""

    def __init__(
        self,
        app: ServiceApp,
        settings: DispatcherSettings,
        store: VendorStore,
        *,
        only: str | None,
        poll_seconds: float,
    ) -> None:
        self.app = app
        self.settings = settings
        self.store = store
        self.only = only
        self.poll_seconds = poll_seconds
        #: How often the health and backlog gauges are read from the store (and idle counts levelled): they
        #: read a document or two per (organiser, vendor) pair, so not every catalogue poll.
        self.gauge_seconds = max(poll_seconds, GAUGE_SECONDS)
        self.metrics = DispatcherMetrics(app.metrics.registry)
        self.health = DeliveryHealth(app.db)
        self.backlog = DeliveryBacklog(app.db)
        self.outbox = Outbox(app.db)
        key = settings.admin_secrets_key.get_secret_value() or None if settings.admin_secrets_key else None
        self.credentials = VendorCredentials(app.db, SecretBox(key))
        self.secrets_dir = settings.vendor_secrets_dir
        self.feed_metrics = FeedCompactionMetrics(app.metrics.registry)
        self.workers: dict[str, VendorWorker] = {}
        self._served: dict[str, int] = {}  # vendor id -> the catalogue version its worker runs
        self._problems: dict[str, str] = {}
        self._lock = asyncio.Lock()
        #: False: workers start without consuming until :meth:`start_consuming` (a queue fills meanwhile).
        self.consuming = True

    async def _pair_credentials(self, vendor_id: str) -> dict[str, PairCredentials]:
        """The vendor's pairs' own credentials, secret references read from the mounted Secret."""
        return await self.credentials.credentials(vendor_id, secrets_dir=self.secrets_dir)

    async def sync(self) -> dict[str, str]:
        """Start, restart and stop workers to match the catalogue; the vendors that could not be served,
        with why."""
        async with self._lock:
            versions = await self.store.versions()
            if self.only is not None:
                versions = {k: v for k, v in versions.items() if k == self.only}
            for vendor_id in [v for v in self.workers if v not in versions]:
                await self._retire(vendor_id)
            changed = [v for v, version in versions.items() if self._served.get(v) != version]
            if not changed:
                return dict(self._problems)
            catalogue = await self.store.active()
            for vendor_id in changed:
                entry = catalogue.get(vendor_id)
                if vendor_id in self.workers:
                    await self._retire(vendor_id)
                if entry is None:
                    continue
                worker = None
                try:
                    worker = VendorWorker(
                        self.app, self.settings, entry, self.metrics, self.feed_metrics, self.health, self.backlog
                    )
                    if worker.scim is not None:
                        await worker.scim.use_credentials(await self._pair_credentials(vendor_id))
                    await worker.start(consume=self.consuming)
                except Exception as error:  # one vendor's broken settings never keep the others from being served
                    problem = str(error) if isinstance(error, VendorNotServable) else type(error).__name__
                    if self._problems.get(vendor_id) != problem:
                        log.warning("vendor_not_served", vendor_id=vendor_id, problem=problem, exc_info=True)
                    if worker is not None:
                        with contextlib.suppress(Exception):
                            await worker.stop(0)
                    self._problems[vendor_id] = problem
                    self._served[vendor_id] = versions[vendor_id]
                    continue
                self._problems.pop(vendor_id, None)
                self.workers[vendor_id] = worker
                self._served[vendor_id] = versions[vendor_id]
            return dict(self._problems)

    async def start_consuming(self) -> list[BatchConsumer]:
        """Start the consumers held back while :attr:`consuming` was False; they are returned."""
        async with self._lock:
            self.consuming = True
            held = [w.consumer for w in self.workers.values() if not await w.consumer.ready()]
            for consumer in held:
                await consumer.start()
            return held

    async def _retire(self, vendor_id: str) -> None:
        worker = self.workers.pop(vendor_id, None)
        self._served.pop(vendor_id, None)
        self._problems.pop(vendor_id, None)
        if worker is not None:
            await worker.stop(self.settings.lifecycle.drain_timeout_seconds)

    async def refresh_credentials(self) -> None:
        """Each SCIM worker's per-organiser API keys and client certificates (``vendor_credentials``): one
        set or rotated in the admin is used from the next poll on, without a restart."""
        for vendor_id, worker in list(self.workers.items()):
            if worker.scim is not None:
                await worker.scim.use_credentials(await self._pair_credentials(vendor_id))

    async def refresh_health(self) -> None:
        """The delivery-health gauge of every (tenant, served vendor) pair, from the store."""
        now = datetime.now(UTC)
        for doc in await self.health.of_vendors(sorted(self.workers)):
            seconds = retrying_seconds(doc, now=now)
            self.metrics.delivery_retrying_seconds.labels(doc["tenant_id"], doc["vendor_id"]).set(seconds)

    async def refresh_backlog(self) -> int:
        """The backlog gauges of every (tenant, served vendor) pair, from the store; and, for a served vendor
        whose counts disagree while it is idle (nothing unsent in the outbox, nothing queued or in flight),
        the counts levelled (docs/dispatcher.md, "Delivery health"). Returns how many pairs were levelled."""
        now = datetime.now(UTC)
        backlogs = await self.backlog.of_vendors(sorted(self.workers))  # read before the idle check
        for b in backlogs:
            self.metrics.delivery_pending.labels(b.tenant_id, b.vendor_id).set(b.pending)
            self.metrics.delivery_oldest_pending_seconds.labels(b.tenant_id, b.vendor_id).set(
                b.oldest_pending_seconds(now=now)
            )
        uneven = sorted({b.vendor_id for b in backlogs if b.settled != b.queued})
        if not uneven or await self.outbox.pending_count():
            return 0
        levelled = 0
        for vendor_id in uneven:
            worker = self.workers.get(vendor_id)
            if worker is not None and await worker.idle():
                levelled += await self.backlog.level(vendor_id, backlogs, at=now)
        if levelled:
            log.info("delivery_backlog_levelled", pairs=levelled)
        return levelled

    async def run_forever(self) -> None:
        gauges_read = 0.0
        while True:
            await asyncio.sleep(self.poll_seconds)
            try:
                await self.sync()
                await self.refresh_credentials()
                if time.monotonic() - gauges_read >= self.gauge_seconds:
                    gauges_read = time.monotonic()
                    await self.refresh_health()
                    await self.refresh_backlog()
            except Exception:  # the store or the broker is away for a moment: the next poll tries again
                log.warning("vendor_pool_sync_failed", exc_info=True)

    async def ready(self) -> bool:
        """Readiness: every worker's consumer attached (and the one vendor served, in single-vendor mode)."""
        if self.only is not None and self.only not in self.workers:
            return False
        return not self.consuming or all([await w.consumer.ready() for w in self.workers.values()])

    async def stop(self) -> None:
        """Stop every worker at once: they drain within one budget, not one budget each."""
        async with self._lock:
            await asyncio.gather(*(self._retire(v) for v in list(self.workers)), return_exceptions=True)
