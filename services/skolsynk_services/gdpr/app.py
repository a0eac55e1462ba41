"""Composition root of the GDPR service: the erasure ledger, erasure requests, the purge after the
last receipt, the deadline sweep, and the evidence export (``python -m skolsynk_services.gdpr evidence``)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from pydantic import Field

from skolsynk.logging import get_logger
from skolsynk.runtime import run_service
from skolsynk.service import ServiceApp
from skolsynk.settings import ServiceSettings
from skolsynk.storage import erasures
from skolsynk.storage.erasures import ErasureLedger, ErasureRequestStore, TombstoneStore
from skolsynk_services.gdpr.handlers import GdprHandlers
from skolsynk_services.gdpr.metrics import GdprMetrics
from skolsynk_services.gdpr.purge import PersonalDataPurger
from skolsynk_services.gdpr.sweeper import DeadlineSweeper

SERVICE = "gdpr"
log = get_logger(__name__)


class GdprSettings(ServiceSettings):
    gdpr_deletion_deadline_hours: float = Field(
        default=24.0, gt=0, description="A deletion without a vendor receipt after this long is overdue (alerted)."
    )
    gdpr_retry_interval_minutes: float = Field(
        default=60.0, gt=0, description="Unconfirmed deletions are sent to the vendor again this often."
    )
    gdpr_sweep_interval_seconds: float = Field(
        default=60.0, gt=0, description="How often the deadline sweep runs (one replica per interval)."
    )
    gdpr_retention_days: float = Field(
        default=183.0, gt=0, description="Pseudonymous tombstones and finished ledger entries are kept this long."
    )


def utcnow() -> datetime:
    return datetime.now(UTC)


def build(settings: GdprSettings, *, clock: Callable[[], datetime] = utcnow) -> ServiceApp:
    app = ServiceApp.create(SERVICE, settings)
    app.add_indexes(erasures.INDEXES)
    retention = timedelta(days=settings.gdpr_retention_days)
    ledger = ErasureLedger(app.db, retention=retention)
    metrics = GdprMetrics(app.metrics.registry)
    purger = PersonalDataPurger(app.db, ledger, TombstoneStore(app.db, retention=retention))
    handlers = GdprHandlers(
        ledger, ErasureRequestStore(app.db), purger, metrics, control_exchange=app.topology.exchange("control")
    )
    app.extensions["handlers"] = handlers
    app.add_consumer(app.queue_name(SERVICE, "events"), handlers.handle)
    sweeper = DeadlineSweeper(
        app.db,
        ledger,
        app.publisher,
        metrics,
        mongo=app.mongo,
        purger=purger,
        vendor_exchange=app.topology.exchange("vendor"),
        deadline=timedelta(hours=settings.gdpr_deletion_deadline_hours),
        retry_after=timedelta(minutes=settings.gdpr_retry_interval_minutes),
        interval=timedelta(seconds=settings.gdpr_sweep_interval_seconds),
        clock=clock,
    )
    app.extensions["sweeper"] = sweeper

    async def sweep_forever() -> None:
        while True:
            try:
                if await sweeper.claim_slot():
                    await sweeper.sweep()
                else:
                    await sweeper.refresh_gauges()
            except Exception:
                log.exception("gdpr_sweep_failed")  # the next interval tries again
            await asyncio.sleep(min(settings.gdpr_sweep_interval_seconds, 60.0))

    app.add_background("deadline-sweep", sweep_forever)
    return app


def main() -> None:
    run_service(SERVICE, GdprSettings, build)
