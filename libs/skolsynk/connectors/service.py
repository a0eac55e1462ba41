"""Wiring a pulling connector into its service, the same for every one: the app on the topology with the
connector's kind, its ``SyncRequested`` queue consumed by the connector's ``handle_sync_requested``, start
and close with the app, its sources followed in the source registry, and ``main`` stopping with a one-line
message on a configuration error."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from skolsynk.connectors.config import ConfigurationError, ConnectorSettings
from skolsynk.connectors.registry import RegistryFollower
from skolsynk.connectors.scheduling import Checking, SourceConnector
from skolsynk.connectors.sources import SourceKind
from skolsynk.runtime import run_service
from skolsynk.service import ServiceApp
from skolsynk.settings import ServiceSettings
from skolsynk.storage import IndexSpec
from skolsynk.storage.sources import INDEXES as SOURCE_INDEXES
from skolsynk.storage.sources import SecretBox, SourceStore

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
    registry: RegistryFollower | None,
    idempotent: bool = True,
) -> None:
    """``connector`` in ``app``: as ``app.extensions["connector"]``, consuming its kind's ``SyncRequested``
    queue with its :meth:`~skolsynk.connectors.scheduling.SourceConnector.handle_sync_requested`, started
    and closed with the app. With ``registry`` (``app.extensions["registry"]``), the sources are read from
    the source registry before the app is ready and followed from then on; without it, the connector serves
    the sources it was built with (tests)."""
    app.extensions["connector"] = connector
    app.add_consumer(app.queue_name(kind, "sync-requests"), connector.handle_sync_requested, idempotent=idempotent)
    app.add_startup(connector.start)
    app.add_shutdown(connector.close)
    if registry is not None:
        app.extensions["registry"] = registry
        connector.refresh = registry.refresh
        connector.checking = Checking(registry.kind, registry.store.box)
        app.add_startup(registry.load)
        app.add_background("follow-sources", registry.follow)


def follow_registry(
    app: ServiceApp,
    settings: ConnectorSettings,
    kind: SourceKind,
    connector: SourceConnector[Any, Any, Any, Any],
) -> RegistryFollower:
    """The follower of ``kind``'s sources in the registry (``admin_sources``), with the installation's
    secrets key to open sealed credentials."""
    key = settings.admin_secrets_key.get_secret_value() or None if settings.admin_secrets_key else None
    app.add_indexes(SOURCE_INDEXES)
    return RegistryFollower(
        SourceStore(app.db, SecretBox(key)), kind, connector, poll_seconds=settings.sources_poll_seconds
    )


def run_connector(service: str, settings_type: type[SettingsT], build: Callable[[SettingsT], ServiceApp]) -> None:
    """:func:`~skolsynk.runtime.run_service`; a :class:`ConfigurationError` stops it with ``{service}: {message}``."""
    try:
        run_service(service, settings_type, build)
    except ConfigurationError as error:
        raise SystemExit(f"{service}: {error}") from None
