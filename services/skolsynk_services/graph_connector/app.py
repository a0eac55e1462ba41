"""Composition root of the Microsoft Graph (School Data Sync) connector: one process reads every source
(Microsoft 365 tenant) in the sources file, on a schedule and on ``SyncRequested``."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from pydantic import Field

from skolsynk.connectors.config import ConnectorSettings, RetrySettings
from skolsynk.connectors.service import connector_app, mount, run_connector
from skolsynk.service import ServiceApp
from skolsynk_services.graph_connector.connector import GraphConnector
from skolsynk_services.graph_connector.metrics import GraphMetrics
from skolsynk_services.graph_connector.runs import INDEXES, SOURCE_KIND, SyncStateStore
from skolsynk_services.graph_connector.sources import SourceConfig, load_sources

SERVICE = "graph-connector"


class GraphConnectorSettings(ConnectorSettings):
    graph_tenants_file: Path = Field(
        default=Path("deploy/microsoft-sources.yaml"), description="YAML list of the Microsoft 365 tenants to read."
    )
    graph_schedule: bool = Field(default=True, description="Run delta and full reconciliation runs on their intervals.")
    graph_request_timeout_seconds: float = Field(default=30.0, gt=0, description="One HTTP request's budget.")
    graph_retry: RetrySettings = Field(
        default=RetrySettings(
            attempts=5,
            timeout_seconds=300.0,
            wait_initial_seconds=0.5,
            wait_max_seconds=30.0,
            max_retry_after_seconds=120.0,
        ),
        description="How one request is retried on 429/503/504, other 5xx, timeouts (Retry-After honoured).",
    )


def build(
    settings: GraphConnectorSettings,
    *,
    sources: list[SourceConfig] | None = None,
    environ: Mapping[str, str] | None = None,
) -> ServiceApp:
    """The connector. ``sources`` replaces the sources file and ``environ`` the process environment (tests)."""
    configured = sources if sources is not None else load_sources(settings.graph_tenants_file)
    app = connector_app(SERVICE, settings, kind=SOURCE_KIND, indexes=INDEXES)
    connector = GraphConnector(
        configured,
        publisher=app.publisher,
        exchange=app.topology.exchange("source"),
        state=SyncStateStore(app.db),
        metrics=GraphMetrics(app.metrics.registry),
        environ=environ,
        request_timeout_seconds=settings.graph_request_timeout_seconds,
        retry=settings.graph_retry.policy(),
    )
    mount(app, connector, kind=SOURCE_KIND, schedule=settings.graph_schedule)
    return app


def main() -> None:
    run_connector(SERVICE, GraphConnectorSettings, build)
