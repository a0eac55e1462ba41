"""Composition root of a vendor dispatcher. One deployment per vendor (``SKOLSYNK_VENDOR_ID``), its
delivery mode, endpoint, authentication and capability profile read from the vendor catalogue."""

from __future__ import annotations

import asyncio
import os
from datetime import timedelta
from pathlib import Path

from pydantic import Field

from skolsynk.catalogue import DeliveryMode, VendorCatalogueEntry, load_catalogue
from skolsynk.logging import get_logger
from skolsynk.messaging import BatchConsumer
from skolsynk.runtime import run_service
from skolsynk.service import ServiceApp
from skolsynk.settings import ServiceSettings
from skolsynk.storage import deliveries as ledger
from skolsynk.storage.subscriptions import SubscriptionStore
from skolsynk_services.dispatcher import drift
from skolsynk_services.dispatcher.delivery import VendorDeliverer
from skolsynk_services.dispatcher.feed import FeedCompactor
from skolsynk_services.dispatcher.metrics import DispatcherMetrics, FeedCompactionMetrics
from skolsynk_services.dispatcher.onboarding import declare_feed_queue, feed_queue_name
from skolsynk_services.dispatcher.scim import EgilScimClient

SERVICE = "dispatcher"
log = get_logger(__name__)


class DispatcherSettings(ServiceSettings):
    vendor_id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$", description="The vendor this dispatcher serves.")
    vendor_catalogue_dir: Path = Field(
        default=Path("deploy/vendors"), description="Folder of the vendor catalogue (one YAML file per vendor)."
    )
    vendor_retry_timeout_seconds: float = Field(
        default=20.0, gt=0, description="How long one delivery retries an unavailable vendor before requeueing."
    )
    feed_compaction_seconds: float = Field(
        default=60.0,
        ge=0,
        description="A queue vendor's unread feed is compacted this long after a delete (upserts the delete "
        "supersedes are taken out, docs/gdpr.md); 0: never.",
    )
    drift_check_hours: float = Field(
        default=24.0,
        ge=0,
        description="How often an EGIL SCIM vendor's holdings are compared with the ledger (and repaired); 0: never.",
    )


class ConfigurationError(RuntimeError):
    pass


def build(settings: DispatcherSettings) -> ServiceApp:
    catalogue = load_catalogue(settings.vendor_catalogue_dir)
    vendor = catalogue.get(settings.vendor_id)
    if vendor is None:
        raise ConfigurationError(
            f"vendor {settings.vendor_id!r} is not in the catalogue at {settings.vendor_catalogue_dir}"
        )
    app = ServiceApp.create(f"{SERVICE}-{vendor.vendor_id}", settings, vendor_ids=[vendor.vendor_id])
    app.add_indexes(ledger.INDEXES)
    delivery_ledger = ledger.DeliveryLedger(app.db, vendor.vendor_id)
    metrics = DispatcherMetrics(app.metrics.registry)
    scim: EgilScimClient | None = None
    feed_queue: str | None = None
    compactor: FeedCompactor | None = None
    if vendor.delivery is DeliveryMode.EGIL_SCIM:
        assert vendor.scim is not None
        env = vendor.scim.auth.api_key_env
        api_key = os.environ.get(env) if env else None
        if env and not api_key:
            raise ConfigurationError(f"the vendor's API key is expected in the environment variable {env}")
        scim = EgilScimClient(
            vendor.scim,
            api_key=api_key,
            retry_timeout_seconds=settings.vendor_retry_timeout_seconds,
            metrics=metrics,
            vendor_id=vendor.vendor_id,
        )
    else:
        feed_queue = feed_queue_name(settings.broker.namespace, vendor.vendor_id)
        if settings.feed_compaction_seconds > 0:
            compactor = FeedCompactor(
                vendor.vendor_id,
                feed_queue,
                retention_seconds=vendor.feed_retention_hours * 3600,
                interval_seconds=settings.feed_compaction_seconds,
                amqp_url=settings.broker.amqp_url.get_secret_value(),
                metrics=FeedCompactionMetrics(app.metrics.registry),
            )
            app.extensions["feed_compactor"] = compactor
    deliverer = VendorDeliverer(
        vendor,
        delivery_ledger,
        scim=scim,
        publisher=app.publisher,
        feed_queue=feed_queue,
        receipts_exchange=app.topology.exchange("gdpr"),
        # waiting for references in flight must leave the batch time within the handler's timeout
        dependency_wait_seconds=min(10.0, settings.broker.handler_timeout_seconds / 3),
        metrics=metrics,
        compactor=compactor,
    )
    app.extensions["deliverer"] = deliverer
    # Deliveries have effects outside MongoDB: idempotency comes from the ledger's versions. Batches of
    # up to SKOLSYNK_PREFETCH changes, two in flight (docs/dispatcher.md); both must get through the
    # vendor's rate limit well within the handler's budget.
    broker = settings.broker
    batch_size = broker.prefetch
    if vendor.scim is not None:
        paced = int(vendor.scim.rate_per_second * broker.handler_timeout_seconds / 4)
        batch_size = max(1, min(batch_size, paced))
    consumer = BatchConsumer(
        broker=app.broker,
        publisher=app.publisher,
        topology=app.topology,
        queue=app.topology.queue(app.queue_name(SERVICE, vendor.vendor_id)),
        handler=deliverer.handle_batch,
        metrics=app.metrics,
        batch_size=batch_size,
        max_attempts=broker.max_attempts,
        handler_timeout_seconds=broker.handler_timeout_seconds,
    )
    app.consumers.append(consumer)  # ServiceApp starts, checks and drains it like its own consumers

    async def prepare() -> None:
        """Publish the vendor's profile for the normaliser, start the SCIM client or declare the
        vendor's feed queue. Runs once at start; it ends, it does not loop."""
        await SubscriptionStore(app.db).save_profile(vendor.profile)
        if scim is not None:
            await scim.start()
        if feed_queue is not None:
            async with app.broker.connection.channel(publisher_confirms=False) as channel:
                await declare_feed_queue(channel, settings.broker.namespace, vendor.vendor_id)

    app.add_startup(prepare)
    if compactor is not None:
        app.add_background("feed-compaction", compactor.run_forever)
        app.add_shutdown(compactor.close)
    if scim is not None:
        app.add_shutdown(scim.close)
        if settings.drift_check_hours > 0:
            add_drift_check(app, vendor, scim, metrics, interval=timedelta(hours=settings.drift_check_hours))
    return app


def add_drift_check(
    app: ServiceApp,
    vendor: VendorCatalogueEntry,
    scim: EgilScimClient,
    metrics: DispatcherMetrics,
    *,
    interval: timedelta,
) -> None:
    app.add_indexes(drift.INDEXES)
    checker = drift.DriftChecker(
        vendor.vendor_id,
        vendor.profile.kinds,
        app.db,
        scim,
        app.publisher,
        control_exchange=app.topology.exchange("control"),
        interval=interval,
        metrics=metrics,
    )
    app.extensions["drift"] = checker

    async def check_forever() -> None:
        while True:
            try:
                if await checker.claim_slot():
                    await checker.check()
            except Exception:
                log.exception("drift_check_failed", vendor_id=vendor.vendor_id)  # the next slot tries again
            await asyncio.sleep(min(interval.total_seconds(), 60.0))

    app.add_background("drift-check", check_forever)


def main() -> None:
    run_service(SERVICE, DispatcherSettings, build)
