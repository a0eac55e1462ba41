"""Composition root of the Microsoft Graph (School Data Sync) connector: one process reads every Microsoft
source (an organiser's Microsoft 365 tenant) of the source registry, on a schedule and on ``SyncRequested``."""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import Field, SecretStr

from skolsynk.connectors.config import ConnectorSettings, RetrySettings
from skolsynk.connectors.service import connector_app, follow_registry, mount, run_connector
from skolsynk.connectors.sources import MICROSOFT
from skolsynk.connectors.sources.microsoft import SourceConfig
from skolsynk.service import ServiceApp
from skolsynk_services.graph_connector.connector import GraphConnector, InstallationApp
from skolsynk_services.graph_connector.metrics import GraphMetrics
from skolsynk_services.graph_connector.runs import INDEXES, SOURCE_KIND, SyncStateStore

SERVICE = "graph-connector"


class GraphConnectorSettings(ConnectorSettings):
    graph_app_client_id: str | None = Field(
        default=None,
        pattern=r"^[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$",
        description="skolsynk's multi-tenant app registration: what sources without a client id of their own "
        "read with (the organiser's admin consented to it).",
    )
    graph_app_client_secret: SecretStr | None = Field(default=None, description="That app's client secret.")
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
    """The connector, following the source registry; ``sources`` replaces the registry and ``environ`` the
    process environment (tests)."""
    app = connector_app(SERVICE, settings, kind=SOURCE_KIND, indexes=INDEXES)
    connector = GraphConnector(
        sources or [],
        publisher=app.publisher,
        exchange=app.topology.exchange("source"),
        state=SyncStateStore(app.db),
        metrics=GraphMetrics(app.metrics.registry),
        scheduling=settings.graph_schedule,
        app=InstallationApp.of(settings.graph_app_client_id, settings.graph_app_client_secret),
        environ=environ,
        request_timeout_seconds=settings.graph_request_timeout_seconds,
        retry=settings.graph_retry.policy(),
    )
    registry = None if sources is not None else follow_registry(app, settings, MICROSOFT, connector)
    mount(app, connector, kind=SOURCE_KIND, registry=registry)
    return app


def main() -> None:
    run_connector(SERVICE, GraphConnectorSettings, build)
