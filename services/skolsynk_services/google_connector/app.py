"""Composition root of the Google connector: one process reads every source in the sources file."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path

from pydantic import Field

from skolsynk.connectors.config import ConnectorSettings, RetrySettings
from skolsynk.connectors.service import connector_app, mount, run_connector
from skolsynk.service import ServiceApp
from skolsynk_services.google_connector.connector import GoogleConnector
from skolsynk_services.google_connector.metrics import GoogleMetrics
from skolsynk_services.google_connector.runs import INDEXES, SOURCE_KIND, SyncStateStore, utcnow
from skolsynk_services.google_connector.sources import SourceConfig, load_sources

SERVICE = "google-connector"


class GoogleConnectorSettings(ConnectorSettings):
    google_sources_file: Path = Field(
        default=Path("deploy/google-sources.yaml"),
        description="YAML list of the Google Workspace sources and their mappings.",
    )
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
    """The connector. ``sources`` replaces the sources file and ``environ`` the process environment (tests)."""
    configured = sources if sources is not None else load_sources(settings.google_sources_file)
    app = connector_app(SERVICE, settings, kind=SOURCE_KIND, indexes=INDEXES)
    connector = GoogleConnector(
        configured,
        publisher=app.publisher,
        exchange=app.topology.exchange("source"),
        state=SyncStateStore(app.db),
        metrics=GoogleMetrics(app.metrics.registry),
        environ=environ,
        request_timeout_seconds=settings.google_request_timeout_seconds,
        retry=settings.google_retry.policy(),
        members_concurrency=settings.google_members_concurrency,
        clock=clock,
    )
    mount(app, connector, kind=SOURCE_KIND, schedule=settings.google_schedule, idempotent=False)
    if settings.google_schedule:
        for source in configured:
            if source.reports.enabled:

                async def reports(source: SourceConfig = source) -> None:
                    await connector.watch_reports(source)

                app.add_background(f"reports:{source.key}", reports)
    return app


def main() -> None:
    run_connector(SERVICE, GoogleConnectorSettings, build)
