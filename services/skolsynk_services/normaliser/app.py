"""Composition root of the normaliser."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from pydantic import Field

from skolsynk.contracts.vendor import ProjectionRequested
from skolsynk.logging import get_logger
from skolsynk.messaging import Topology, declare_topology, topology_for
from skolsynk.runtime import run_service
from skolsynk.service import ServiceApp
from skolsynk.settings import ServiceSettings
from skolsynk.storage import delivery_backlog, erasures, findings, history, holds, subscriptions
from skolsynk.storage.projection_status import ProjectionStatus
from skolsynk.storage.schedules import Schedules
from skolsynk_services.normaliser import state
from skolsynk_services.normaliser.handlers import CONTINUATION, NormaliserHandlers
from skolsynk_services.normaliser.metrics import NormaliserMetrics, StateGauges
from skolsynk_services.normaliser.projection import Projector
from skolsynk_services.normaliser.runs import Runs

SERVICE = "normaliser"
#: The date check's slot in ``schedules``.
DATE_CHECK_SLOT = "date-check"
log = get_logger(__name__)


class NormaliserSettings(ServiceSettings):
    date_check_interval_seconds: float = Field(
        default=3600.0,
        ge=1,
        description="How often every tenant is projected again so passing end dates become removals.",
    )
    projection_timeout_seconds: float = Field(
        default=1200.0,
        gt=0,
        le=1700,
        description="Budget of one projection handler (longer than other handlers: a slice of a large "
        "organiser's projection takes minutes; under RabbitMQ's 30-minute acknowledgement timeout).",
    )
    projection_slice_seconds: float = Field(
        default=300.0,
        gt=0,
        description="A projection of the whole organiser stops after this long (at the end of a chunk), keeps "
        "where it stopped with the tenant's lock and continues in a message of its own, so no handler outlasts "
        "its budget however large the organiser. At most half of projection_timeout_seconds is used: a chunk "
        "or a vendor's removals may take a while past it.",
    )
    projection_lease_seconds: float = Field(
        default=120.0,
        ge=4,
        description="Lease of a tenant's projection lock. The holder renews it every quarter while it projects, "
        "so a replica that dies (killed, its node lost) blocks its tenants' projections this long at most.",
    )
    state_gauges_min_interval_seconds: float = Field(
        default=15.0,
        ge=0,
        description="A tenant's state gauges (findings, runs, holds) are read from the store after its "
        "projections at most this often; a burst of projections gets one refresh at its end.",
    )

    @property
    def projection_slice(self) -> float:
        """The slice a projection gets: :attr:`projection_slice_seconds`, within half the handler's budget."""
        return min(self.projection_slice_seconds, self.projection_timeout_seconds / 2)


def utcnow() -> datetime:
    return datetime.now(UTC)


def build(settings: NormaliserSettings, *, clock: Callable[[], datetime] = utcnow) -> ServiceApp:
    """The normaliser. ``clock`` is the time the selection rules judge dates by (tests move it)."""
    app = ServiceApp.create(SERVICE, settings)
    app.add_indexes(
        [
            *state.INDEXES,
            *state.PROJECTION_INDEXES,
            *subscriptions.INDEXES,
            *findings.INDEXES,
            *holds.INDEXES,
            *erasures.INDEXES,
            *history.INDEXES,
            *delivery_backlog.INDEXES,
        ],
        retired=[*findings.RETIRED_INDEXES, *state.RETIRED_INDEXES],
    )
    declared_vendors: set[str] = set()
    metrics = NormaliserMetrics(app.metrics.registry)
    gauges = StateGauges(app.db, metrics, min_interval=settings.state_gauges_min_interval_seconds)

    async def ensure_vendor_queue(vendor_id: str) -> None:
        """A vendor's change events need its queue before the first one is published (publishes are
        mandatory): declare it, once per process, the first time a subscription names the vendor."""
        if vendor_id in declared_vendors:
            return
        vendor_topology = topology_for(settings.broker, vendor_ids=[vendor_id])
        spec = vendor_topology.queue(app.queue_name("dispatcher", vendor_id))
        async with app.broker.connection.channel(publisher_confirms=False) as channel:
            await declare_topology(channel, Topology(vendor_topology.namespace, vendor_topology.exchanges, (spec,)))
        declared_vendors.add(vendor_id)

    projector = Projector(
        app.mongo,
        app.db,
        app.outbox,
        exchange=app.topology.exchange("vendor"),
        producer=SERVICE,
        ensure_vendor_queue=ensure_vendor_queue,
        gdpr_exchange=app.topology.exchange("gdpr"),
        clock=clock,
        metrics=metrics,
    )

    async def continue_projection(tenant_id: str, correlation_id: uuid.UUID | None) -> None:
        """A projection of the whole organiser that ran out of its slice of time asks for the rest (any
        replica may take it: the checkpoint is with the tenant's lock), under the projection's correlation id."""
        await app.publisher.publish(
            ProjectionRequested(reason=CONTINUATION).to_envelope(
                tenant_id=tenant_id, correlation_id=correlation_id, producer=SERVICE
            ),
            exchange=app.topology.exchange("control"),
            routing_key=ProjectionRequested.message_type,
        )

    handlers = NormaliserHandlers(
        Runs(app.db, metrics),
        projector,
        # The holder renews its lease while it projects: a live holder is never overtaken, a dead one soon.
        state.ProjectionLock(app.db, owner=uuid.uuid4().hex, lease_seconds=settings.projection_lease_seconds),
        control_exchange=app.topology.exchange("control"),
        today=lambda: clock().date(),
        metrics=metrics,
        gauges=gauges,
        status=ProjectionStatus(app.db),
        continue_projection=continue_projection,
        slice_seconds=settings.projection_slice,
    )
    app.extensions["handlers"] = handlers

    async def backfill_references() -> None:
        """Entities stored by a version without dependency tokens get them before projections start."""
        done = await state.EntityStore(app.db).backfill_references()
        if done:
            log.info("entity_references_backfilled", entities=done)

    app.add_startup(backfill_references)
    app.extensions["state_gauges"] = gauges
    app.add_consumer(app.queue_name(SERVICE, "source-events"), handlers.source_event)
    app.add_consumer(
        app.queue_name(SERVICE, "projections"),
        handlers.projection,
        idempotent=False,
        timeout_seconds=settings.projection_timeout_seconds,
    )

    async def date_check() -> None:
        """Once per interval (one replica wins the slot), ask for a projection of every tenant."""
        schedules = Schedules(app.db)
        interval = timedelta(seconds=settings.date_check_interval_seconds)
        # The first check is one interval after the first start (runs and subscription changes project
        # on their own; the date check is for days that pass without them).
        await schedules.ensure(DATE_CHECK_SLOT, first_at=clock() + interval)
        while True:
            if await schedules.claim(DATE_CHECK_SLOT, now=clock(), interval=interval):
                for tenant_id in await subscriptions.SubscriptionStore(app.db).tenants():
                    await app.publisher.publish(
                        ProjectionRequested(reason="dates").to_envelope(tenant_id=tenant_id, producer=SERVICE),
                        exchange=app.topology.exchange("control"),
                        routing_key=ProjectionRequested.message_type,
                    )
                log.info("date_check_requested")
            await asyncio.sleep(min(settings.date_check_interval_seconds, 60.0))

    app.add_background("date-check", date_check)
    app.add_background("state-gauges", gauges.run_forever)
    return app


def main() -> None:
    run_service(SERVICE, NormaliserSettings, build)
