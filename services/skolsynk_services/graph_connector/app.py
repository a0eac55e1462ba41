"""Composition root of the Microsoft Graph (School Data Sync) connector: one process reads every tenant
in the tenants file, on a schedule and on ``SyncRequested``."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from pydantic import Field

from skolsynk.connectors.service import connector_app, mount, run_connector
from skolsynk.service import ServiceApp
from skolsynk.settings import ServiceSettings
from skolsynk_services.graph_connector.client import RetryPolicy
from skolsynk_services.graph_connector.connector import Connector
from skolsynk_services.graph_connector.metrics import GraphMetrics
from skolsynk_services.graph_connector.runs import SOURCE_KIND
from skolsynk_services.graph_connector.state import INDEXES, GraphStateStore
from skolsynk_services.graph_connector.tenants import TenantConfig, load_tenants

SERVICE = "graph-connector"


class GraphConnectorSettings(ServiceSettings):
    graph_tenants_file: Path = Field(
        default=Path("deploy/microsoft-sources.yaml"), description="YAML list of the Microsoft 365 tenants to read."
    )
    graph_schedule: bool = Field(default=True, description="Run delta and full reconciliation runs on their intervals.")
    graph_request_timeout_seconds: float = Field(default=30.0, gt=0, description="One HTTP request's budget.")
    graph_retry_attempts: int = Field(
        default=5, ge=1, le=20, description="Attempts per request (429/503/504, other 5xx, timeouts)."
    )
    graph_retry_timeout_seconds: float = Field(default=300.0, gt=0, description="All attempts of one request.")
    graph_retry_wait_initial_seconds: float = Field(
        default=0.5, gt=0, description="First backoff when no Retry-After is given."
    )
    graph_retry_wait_max_seconds: float = Field(default=30.0, gt=0, description="Longest backoff.")
    graph_max_retry_after_seconds: float = Field(
        default=120.0, gt=0, description="A longer Retry-After is cut to this."
    )


def build(
    settings: GraphConnectorSettings,
    *,
    tenants: list[TenantConfig] | None = None,
    environ: Mapping[str, str] | None = None,
) -> ServiceApp:
    """The connector. ``tenants`` replaces the tenants file and ``environ`` the process environment (tests)."""
    configured = tenants if tenants is not None else load_tenants(settings.graph_tenants_file)
    app = connector_app(SERVICE, settings, kind=SOURCE_KIND, indexes=INDEXES)
    connector = Connector(
        configured,
        publisher=app.publisher,
        exchange=app.topology.exchange("source"),
        state=GraphStateStore(app.db),
        metrics=GraphMetrics(app.metrics.registry),
        environ=environ,
        request_timeout_seconds=settings.graph_request_timeout_seconds,
        retry=RetryPolicy(
            attempts=settings.graph_retry_attempts,
            timeout_seconds=settings.graph_retry_timeout_seconds,
            wait_initial_seconds=settings.graph_retry_wait_initial_seconds,
            wait_max_seconds=settings.graph_retry_wait_max_seconds,
            max_retry_after_seconds=settings.graph_max_retry_after_seconds,
        ),
    )
    mount(
        app,
        connector,
        kind=SOURCE_KIND,
        on_sync_requested=connector.handle_sync_requested,
        schedule=settings.graph_schedule,
    )
    return app


def main() -> None:
    run_connector(SERVICE, GraphConnectorSettings, build)
