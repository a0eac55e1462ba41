"""Composition root of the normaliser."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

from pydantic import Field
from pymongo import ReturnDocument

from normaliser import state
from normaliser.handlers import NormaliserHandlers
from normaliser.projection import Projector
from normaliser.runs import Runs
from skolsynk.contracts.vendor import ProjectionRequested
from skolsynk.logging import get_logger
from skolsynk.runtime import run_service
from skolsynk.service import ServiceApp
from skolsynk.settings import ServiceSettings
from skolsynk.storage import subscriptions

SERVICE = "normaliser"
log = get_logger(__name__)


class NormaliserSettings(ServiceSettings):
    date_check_interval_seconds: float = Field(
        default=3600.0,
        ge=1,
        description="How often every tenant is projected again so passing end dates become removals.",
    )


def today() -> datetime:
    return datetime.now(UTC)


def build(settings: NormaliserSettings) -> ServiceApp:
    app = ServiceApp.create(SERVICE, settings)
    app.add_indexes([*state.INDEXES, *subscriptions.INDEXES])
    runs = Runs(app.db)
    projector = Projector(app.mongo, app.db, app.outbox, exchange=app.topology.exchange("vendor"), producer=SERVICE)
    handlers = NormaliserHandlers(
        runs,
        projector,
        state.ProjectionLock(app.db, owner=uuid.uuid4().hex),
        control_exchange=app.topology.exchange("control"),
        today=lambda: today().date(),
    )
    app.add_consumer(app.queue_name(SERVICE, "source-events"), handlers.source_event)
    app.add_consumer(app.queue_name(SERVICE, "projections"), handlers.projection, idempotent=False)

    async def date_check() -> None:
        """Once per interval (one replica wins the slot), ask for a projection of every tenant."""
        schedule = app.db["schedules"]
        interval = timedelta(seconds=settings.date_check_interval_seconds)
        while True:
            current = today()
            slot = await schedule.find_one_and_update(
                {"_id": "date-check", "next_at": {"$lte": current}},
                {"$set": {"next_at": current + interval}},
                return_document=ReturnDocument.AFTER,
            )
            if slot is None and await schedule.count_documents({"_id": "date-check"}) == 0:
                await schedule.update_one({"_id": "date-check"}, {"$setOnInsert": {"next_at": current}}, upsert=True)
                continue
            if slot is not None:
                store = subscriptions.SubscriptionStore(app.db)
                for tenant_id in await store.tenants():
                    await app.publisher.publish(
                        ProjectionRequested(reason="dates").to_envelope(tenant_id=tenant_id, producer=SERVICE),
                        exchange=app.topology.exchange("control"),
                        routing_key=ProjectionRequested.message_type,
                    )
                log.info("date_check_requested")
            await asyncio.sleep(min(settings.date_check_interval_seconds, 60.0))

    app.add_background("date-check", date_check)
    return app


def main() -> None:
    run_service(SERVICE, NormaliserSettings, build)
