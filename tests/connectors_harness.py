"""What the connected tests of the pulling connectors share (``tests/connected/test_google_connector.py``,
``test_graph_connector.py``, ``test_ss12000_puller.py``): a :class:`ConnectorTestbed` that starts the fake
API, the connector's app (and a normaliser where a test wants one) and stops them all afterwards, the runs
the connector publishes collected from the normaliser's queue, and a :class:`ConnectorHarness` per connector
app that runs its source and waits for the run to arrive; a :class:`VendorFeed` runs the real normaliser
with one vendor's subscription and collects what reaches that vendor's dispatcher queue.

Every connector has the same shape (``docs/architecture.md``), so the harness speaks it: the connector is
``app.extensions["connector"]``, ``run(source, ...)`` runs its source, its settings are
``{prefix}_schedule``, ``{prefix}_request_timeout_seconds`` and ``{prefix}_retry``, its ``SyncRequested``
queue is ``{kind}.sync-requests``."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from aio_pika.abc import AbstractIncomingMessage

from skolsynk.connectors.runs import Source
from skolsynk.connectors.scheduling import SourceConnector
from skolsynk.contracts import Envelope, SyncRequested
from skolsynk.contracts.source import SourceRecordPage, SourceRunCompleted
from skolsynk.contracts.vendor import VendorChange
from skolsynk.domain.ss12000 import ENTITY_MODELS
from skolsynk.domain.subscription import VendorSubscription
from skolsynk.messaging import MessageContext, sync_request_routing_key
from skolsynk.service import ServiceApp
from skolsynk.settings import ServiceSettings
from skolsynk.storage.subscriptions import SubscriptionStore
from skolsynk_services.normaliser.app import NormaliserSettings
from skolsynk_services.normaliser.app import build as build_normaliser
from skolsynk_testkit.fakes._server import FakeHttpServer
from tests.helpers import Collected, delete_topology, drain_queue, wait_for

FakeT = TypeVar("FakeT", bound=FakeHttpServer[Any])
SourceT = TypeVar("SourceT", bound=Source)
ConnectorT = TypeVar("ConnectorT", bound=SourceConnector[Any, Any, Any, Any])
SettingsT = TypeVar("SettingsT", bound=ServiceSettings)

#: Retries for tests: a few attempts, backoffs of milliseconds.
FAST_RETRY: Mapping[str, Any] = {"attempts": 3, "wait_initial_seconds": 0.01, "wait_max_seconds": 0.05}


def connector_settings(
    settings_type: type[SettingsT],
    settings: ServiceSettings,
    *,
    prefix: str,
    schedule: bool = False,
    retry: Mapping[str, Any] = FAST_RETRY,
    **overrides: Any,
) -> SettingsT:
    """A connector's settings on the test's ``settings``: no schedule unless asked, a short request budget,
    fast retries (``{prefix}_retry``), then ``overrides`` (full setting names)."""
    return settings_type.model_validate(
        {
            **settings.model_dump(),
            f"{prefix}_schedule": schedule,
            f"{prefix}_request_timeout_seconds": 5,
            f"{prefix}_retry": dict(retry),
            **overrides,
        }
    )


def validate_records(pages: Iterable[SourceRecordPage]) -> None:
    """Every record published is valid as its canonical entity."""
    for page in pages:
        for record in page.records:
            ENTITY_MODELS[record.kind].model_validate({**record.data, "key": record.key, "kind": record.kind.value})


class ConnectorTestbed:
    """The fakes and apps one test starts, closed and stopped afterwards (apps first, newest first), and the
    source runs collected from the normaliser's queue (:meth:`collect`)."""

    def __init__(self, settings: ServiceSettings, make_app: Callable[[str], ServiceApp]) -> None:
        self.settings = settings
        self.make_app = make_app
        self.collected = Collected()
        self._collector: ServiceApp | None = None
        self.fakes: list[FakeHttpServer[Any]] = []
        self.apps: list[ServiceApp] = []

    @property
    def amqp_url(self) -> str:
        return self.settings.broker.amqp_url.get_secret_value()

    async def collect(self) -> Collected:
        """Take the runs off the normaliser's queue into :attr:`collected` (started once; not in a test where
        a real normaliser consumes them)."""
        if self._collector is None:
            self._collector = await self.collected.start_collector(self.make_app("collector"))
        return self.collected

    async def start_fake(self, fake: FakeT) -> FakeT:
        """Start ``fake`` (stopped at the end)."""
        await fake.start()
        self.fakes.append(fake)
        return fake

    async def start_app(self, app: ServiceApp) -> ServiceApp:
        """Start ``app``; it is closed at the end even when it fails to start."""
        self.apps.append(app)
        await app.start()
        return app

    def normaliser(self, **overrides: Any) -> ServiceApp:
        """The real normaliser on the test's settings (``overrides``: its own settings), to start with
        :meth:`start_app`."""
        return build_normaliser(NormaliserSettings.model_validate({**self.settings.model_dump(), **overrides}))

    async def close(self) -> None:
        for app in reversed(self.apps):
            await app.drain(1.0)
            await app.close()
            await delete_topology(self.amqp_url, app.topology)
        for fake in self.fakes:
            await fake.stop()


@dataclass
class VendorFeed:
    """The real normaliser, one vendor subscribed to some school units, and the changes that reach the
    vendor's dispatcher queue (a collector consumes it in place of the dispatcher)."""

    normaliser: ServiceApp
    received: list[VendorChange] = field(default_factory=list)
    received_total: int = 0

    def published(self) -> float:
        value = self.normaliser.metrics.registry.get_sample_value(
            "skolsynk_messages_published_total",
            {"exchange": self.normaliser.topology.exchange("vendor"), "outcome": "confirmed"},
        )
        return value or 0.0

    async def settled(self, run_id: uuid.UUID) -> dict[str, Any]:
        """Wait until the run is finalised, projected, and everything published reached the queue; the
        run's outcome."""
        runs = self.normaliser.db["runs"]

        async def settled() -> bool:
            run = await runs.find_one({"_id": str(run_id)})
            return (
                run is not None
                and run.get("status") == "finalised"
                and await self.normaliser.db["projection_locks"].count_documents({}) == 0
                and await self.normaliser.outbox.pending_count() == 0  # type: ignore[attr-defined]
                and self.received_total >= self.published()
            )

        await wait_for(settled, timeout=60, interval=0.1, what="the normaliser to settle")
        run = await runs.find_one({"_id": str(run_id)})
        assert run is not None
        outcome: dict[str, Any] = run["outcome"]
        return outcome

    def take(self) -> set[tuple[str, str, uuid.UUID]]:
        """(entity kind, operation, entity id) of what arrived since the last take."""
        events, self.received = self.received, []
        return {(e.entity_kind.value, e.operation, e.entity_id) for e in events}


async def start_vendor_feed(
    testbed: ConnectorTestbed, *, tenant_id: str, school_unit_codes: Iterable[str], vendor_id: str = "binogi"
) -> VendorFeed:
    """Start the normaliser (no date checks) with ``vendor_id`` subscribed to ``school_unit_codes``."""
    normaliser = testbed.normaliser(date_check_interval_seconds=86400)
    vendors = ServiceApp.create("vendor-collector", testbed.settings, vendor_ids=(vendor_id,))
    feed = VendorFeed(normaliser)

    async def collect(envelope: Envelope, context: MessageContext) -> None:
        feed.received.append(VendorChange.from_envelope(envelope))
        feed.received_total += 1

    vendors.add_consumer(vendors.queue_name("dispatcher", vendor_id), collect, idempotent=False)
    await SubscriptionStore(normaliser.db).save(
        VendorSubscription(tenant_id=tenant_id, vendor_id=vendor_id, school_unit_codes=frozenset(school_unit_codes))
    )
    await testbed.start_app(vendors)
    await testbed.start_app(normaliser)
    return feed


@asynccontextmanager
async def connector_testbed(
    settings: ServiceSettings, make_app: Callable[[str], ServiceApp]
) -> AsyncIterator[ConnectorTestbed]:
    """A :class:`ConnectorTestbed`, closed on the way out (for a test module's harness fixture)."""
    testbed = ConnectorTestbed(settings, make_app)
    try:
        yield testbed
    finally:
        await testbed.close()


@dataclass(kw_only=True)
class ConnectorHarness(Generic[FakeT, SourceT, ConnectorT]):
    """One connector app reading one ``source`` from ``fake``: run it, wait for its runs, read its state."""

    testbed: ConnectorTestbed
    fake: FakeT
    app: ServiceApp
    source: SourceT
    #: The connector's class (``app.extensions["connector"]`` is one).
    connector_type: type[ConnectorT]
    #: Its source kind (``google``, ``microsoft``, ``ss12000``): the routing of its sync requests.
    kind: str
    #: The collection of its state store (one document per source).
    state_collection: str
    #: What :meth:`run` passes to ``connector.run`` unless told otherwise.
    run_options: dict[str, Any] = field(default_factory=dict)

    @property
    def collected(self) -> Collected:
        return self.testbed.collected

    @property
    def connector(self) -> ConnectorT:
        connector = self.app.extensions["connector"]
        assert isinstance(connector, self.connector_type)
        return connector

    async def run(self, mode: str | None = None, **options: Any) -> tuple[Any, SourceRunCompleted]:
        """One run of the source now (``mode``, or :attr:`run_options`); its report and completion, once every
        message of the run has arrived."""
        options = {**self.run_options, **options}
        if mode is not None:
            options["mode"] = mode
        report = await self.connector.run(self.source, **options)
        return report, await self.arrived(report.run_id)

    async def arrived(self, run_id: uuid.UUID, *, what: str = "") -> SourceRunCompleted:
        """Wait until the run's start, pages and completion have arrived; its completion."""
        await wait_for(lambda: self.collected.complete(run_id), what=what or f"run {run_id}")
        completed = self.collected.completed(run_id)
        assert completed is not None
        return completed

    async def nth_run(self, number: int, *, what: str) -> uuid.UUID:
        """The id of the ``number``-th run (1 for the first) collected, once it has arrived completely."""
        await wait_for(lambda: len(self.collected.runs()) >= number, what=what)
        run_id = self.collected.runs()[number - 1]
        await self.arrived(run_id, what=f"{what} to complete")
        return run_id

    async def state(self) -> dict[str, Any]:
        """The source's document in the state store (empty when there is none)."""
        return await self.app.db[self.state_collection].find_one({"_id": self.source.key}) or {}

    async def request_sync(
        self, source_id: str, *, tenant_id: str, mode: str = "full", requested_by: str = "operator"
    ) -> None:
        """Publish a ``SyncRequested`` to the connector's kind, as the admin API and the CLI do."""
        request = SyncRequested(source_id=source_id, mode=mode, requested_by=requested_by)  # type: ignore[arg-type]
        await self.app.publisher.publish(
            request.to_envelope(tenant_id=tenant_id, producer="test"),
            exchange=self.app.topology.exchange("control"),
            routing_key=sync_request_routing_key(self.kind),
        )

    async def dead_lettered_requests(self) -> list[AbstractIncomingMessage]:
        """Wait for sync requests in the dead-letter queue of the connector's queue; take them out."""
        dlq = self.app.topology.queue(self.app.queue_name(self.kind, "sync-requests")).dead_letter_queue
        dead: list[AbstractIncomingMessage] = []

        async def arrived() -> bool:
            dead.extend(await drain_queue(self.testbed.amqp_url, dlq))
            return bool(dead)

        await wait_for(arrived, what="a refused sync request in the DLQ")
        return dead
