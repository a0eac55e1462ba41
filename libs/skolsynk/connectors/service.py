"""Wiring a pulling connector into its service, the same for every one: the app on the topology with the
connector's kind, its ``SyncRequested`` queue consumed by the connector's ``handle_sync_requested``, start
and close with the app, a schedule per source, and ``main`` stopping with a one-line message on a
configuration error."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from skolsynk.connectors.config import ConfigurationError
from skolsynk.connectors.scheduling import SourceConnector
from skolsynk.runtime import run_service
from skolsynk.service import ServiceApp
from skolsynk.settings import ServiceSettings
from skolsynk.storage import IndexSpec

SettingsT = TypeVar("SettingsT", bound=ServiceSettings)


def connector_app(service: str, settings: ServiceSettings, *, kind: str, indexes: Iterable[IndexSpec]) -> ServiceApp:
    """The service's app, on the topology with the connector's ``kind`` (its sync-request queue)."""
    app = ServiceApp.create(service, settings, connector_kinds=[kind])
    app.add_indexes(indexes)
    return app


def mount(
    app: ServiceApp,
    connector: SourceConnector[Any, Any, Any, Any],
    *,
    kind: str,
    schedule: bool,
    idempotent: bool = True,
) -> None:
    """``connector`` in ``app``: as ``app.extensions["connector"]``, consuming its kind's ``SyncRequested``
    queue with its :meth:`~skolsynk.connectors.scheduling.SourceConnector.handle_sync_requested`, started
    and closed with the app, and (``schedule``) each source's
    :meth:`~skolsynk.connectors.scheduling.SourceConnector.schedule` as a background task."""
    app.extensions["connector"] = connector
    app.add_consumer(app.queue_name(kind, "sync-requests"), connector.handle_sync_requested, idempotent=idempotent)
    app.add_startup(connector.start)
    app.add_shutdown(connector.close)
    if schedule:
        for source in connector.sources.values():

            async def scheduled(source: Any = source) -> None:
                await connector.schedule(source)

            app.add_background(f"schedule:{source.key}", scheduled)


def run_connector(service: str, settings_type: type[SettingsT], build: Callable[[SettingsT], ServiceApp]) -> None:
    """:func:`~skolsynk.runtime.run_service`; a :class:`ConfigurationError` stops it with ``{service}: {message}``."""
    try:
        run_service(service, settings_type, build)
    except ConfigurationError as error:
        raise SystemExit(f"{service}: {error}") from None
