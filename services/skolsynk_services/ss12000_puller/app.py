"""Composition root of the SS 12000 puller (the SS 12000 connector): one process pulls every SS 12000 source
of the source registry, on a schedule, on ``SyncRequested`` and on webhook notices."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta

from pydantic import Field

from skolsynk.connectors.config import ConnectorSettings, RetrySettings
from skolsynk.connectors.service import connector_app, follow_registry, mount, run_connector
from skolsynk.connectors.sources import SS12000
from skolsynk.connectors.sources.ss12000 import SourceConfig
from skolsynk.service import ServiceApp
from skolsynk.storage.subscriptions import SubscriptionStore as VendorSubscriptionStore
from skolsynk_services.ss12000_puller.connector import Ss12000Connector
from skolsynk_services.ss12000_puller.metrics import Ss12000Metrics
from skolsynk_services.ss12000_puller.runs import INDEXES, SOURCE_KIND, RunBounds, SyncStateStore
from skolsynk_services.ss12000_puller.source_log import SourceLog
from skolsynk_services.ss12000_puller.subscriptions import SubscriptionKeeper, SubscriptionStore
from skolsynk_services.ss12000_puller.webhook import make_webhook_app

SERVICE = "ss12000-puller"


class Ss12000ConnectorSettings(ConnectorSettings):
    ss12000_webhook_host: str = Field(default="0.0.0.0", description="Bind address of the webhook.")  # noqa: S104
    ss12000_webhook_port: int = Field(default=8082, ge=0, le=65535, description="Webhook port; 0 picks a free one.")
    ss12000_schedule: bool = Field(default=True, description="Run full and incremental pulls on their intervals.")
    ss12000_request_timeout_seconds: float = Field(default=30.0, gt=0, description="One HTTP request's budget.")
    ss12000_retry: RetrySettings = Field(
        default=RetrySettings(attempts=5, timeout_seconds=300.0, wait_initial_seconds=0.5, wait_max_seconds=30.0),
        description="How one request is retried on 429/5xx/408/timeouts (Retry-After honoured).",
    )
    ss12000_overlap_seconds: float = Field(
        default=300.0, ge=0, description="Incremental runs re-read this long before the high-water mark."
    )
    ss12000_max_pages_per_listing: int = Field(
        default=100_000,
        ge=1,
        description="A listing (persons, groups, ...) with more pages than this fails the run (page_cap_reached).",
    )
    ss12000_run_deadline_seconds: float = Field(
        default=6 * 3600.0, gt=0, description="A run still reading after this long fails (run_deadline_exceeded)."
    )
    ss12000_subscription_renew_before_seconds: float = Field(
        default=7 * 86400.0,
        gt=0,
        description="A source's subscription is renewed this long before it expires (halfway, if it lasts less).",
    )
    ss12000_subscription_check_seconds: float = Field(
        default=3600.0, gt=0, description="How often a subscription is looked at between renewals (GET)."
    )
    ss12000_capability_recheck_seconds: float = Field(
        default=86400.0,
        gt=0,
        description="A source that answered /subscriptions or /log/ with 404, 405 or 501 is asked again after this.",
    )


def build(
    settings: Ss12000ConnectorSettings,
    *,
    sources: list[SourceConfig] | None = None,
    environ: Mapping[str, str] | None = None,
) -> ServiceApp:
    """The connector, following the source registry; ``sources`` replaces the registry and ``environ`` the
    process environment (tests)."""
    app = connector_app(SERVICE, settings, kind=SOURCE_KIND, indexes=INDEXES)
    connector = Ss12000Connector(
        sources or [],
        publisher=app.publisher,
        exchange=app.topology.exchange("source"),
        state=SyncStateStore(app.db),
        scheduling=settings.ss12000_schedule,
        environ=environ,
        request_timeout_seconds=settings.ss12000_request_timeout_seconds,
        retry=settings.ss12000_retry.policy(),
        overlap=timedelta(seconds=settings.ss12000_overlap_seconds),
        bounds=RunBounds(
            max_pages=settings.ss12000_max_pages_per_listing, deadline_seconds=settings.ss12000_run_deadline_seconds
        ),
    )
    metrics = Ss12000Metrics(app.metrics.registry)
    store = SubscriptionStore(app.db)
    connector.subscriptions = SubscriptionKeeper(
        connector,
        store,
        metrics,
        renew_before_seconds=settings.ss12000_subscription_renew_before_seconds,
        check_seconds=settings.ss12000_subscription_check_seconds,
        recheck_seconds=settings.ss12000_capability_recheck_seconds,
        serving=app.started.wait,
    )
    connector.source_log = SourceLog(store, metrics, recheck_seconds=settings.ss12000_capability_recheck_seconds)
    connector.placements_wanted = VendorSubscriptionStore(app.db).wants_placements
    registry = None if sources is not None else follow_registry(app, settings, SS12000, connector)
    mount(app, connector, kind=SOURCE_KIND, registry=registry)
    app.add_web_app(
        make_webhook_app(connector),
        host=settings.ss12000_webhook_host,
        port=settings.ss12000_webhook_port,
        server="webhook",
    )
    return app


def main() -> None:
    run_connector(SERVICE, Ss12000ConnectorSettings, build)
