"""Composition root of the Google connector: one process reads every Google Workspace source of the source
registry."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime

from pydantic import Field

from skolsynk.connectors.config import ConnectorSettings, RetrySettings
from skolsynk.connectors.service import connector_app, follow_registry, mount, run_connector
from skolsynk.connectors.sources import GOOGLE
from skolsynk.connectors.sources.google import SourceConfig
from skolsynk.service import ServiceApp
from skolsynk_services.google_connector.connector import GoogleConnector
from skolsynk_services.google_connector.metrics import GoogleMetrics
from skolsynk_services.google_connector.runs import INDEXES, SOURCE_KIND, SyncStateStore, utcnow

SERVICE = "google-connector"


class GoogleConnectorSettings(ConnectorSettings):
    google_schedule: bool = Field(
        default=True, description="Run full snapshots on their interval and poll the Reports API where enabled."
    )
    google_request_timeout_seconds: float = Field(default=30.0, gt=0, description="One HTTP request's budget.")
    google_retry: RetrySettings = Field(
        default=RetrySettings(attempts=8, timeout_seconds=600.0, wait_initial_seconds=1.0, wait_max_seconds=64.0),
        description="How one request is retried on throttling, 5xx, timeouts (Google sends no Retry-After).",
    )
    google_members_concurrency: int = Field(
        default=4, ge=1, le=32, description="members.list requests in flight at once per run."
    )


def build(
    settings: GoogleConnectorSettings,
    *,
    sources: list[SourceConfig] | None = None,
    environ: Mapping[str, str] | None = None,
    clock: Callable[[], datetime] = utcnow,
) -> ServiceApp:
    """The connector, following the source registry; ``sources`` replaces the registry and ``environ`` the
    process environment (tests)."""
    app = connector_app(SERVICE, settings, kind=SOURCE_KIND, indexes=INDEXES)
    connector = GoogleConnector(
        sources or [],
        publisher=app.publisher,
        exchange=app.topology.exchange("source"),
        state=SyncStateStore(app.db),
        metrics=GoogleMetrics(app.metrics.registry),
        environ=environ,
        request_timeout_seconds=settings.google_request_timeout_seconds,
        retry=settings.google_retry.policy(),
        members_concurrency=settings.google_members_concurrency,
        scheduling=settings.google_schedule,
        clock=clock,
    )
    registry = None if sources is not None else follow_registry(app, settings, GOOGLE, connector)
    mount(app, connector, kind=SOURCE_KIND, registry=registry, idempotent=False)
    return app


def main() -> None:
    run_connector(SERVICE, GoogleConnectorSettings, build)
