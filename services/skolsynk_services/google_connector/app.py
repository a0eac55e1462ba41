"""Composition root of the Google connector: one process reads every Google Workspace source of the source
registry."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime

from pydantic import Field, field_validator
from yarl import URL

from skolsynk.connectors.config import ConnectorSettings, RetrySettings
from skolsynk.connectors.service import connector_app, follow_registry, mount, run_connector
from skolsynk.connectors.sources import GOOGLE
from skolsynk.connectors.sources.google import SourceConfig
from skolsynk.service import ServiceApp
from skolsynk_services.google_connector.connector import GoogleConnector
from skolsynk_services.google_connector.metrics import GoogleMetrics
from skolsynk_services.google_connector.runs import INDEXES, SOURCE_KIND, SyncStateStore, utcnow
from skolsynk_services.google_connector.watch import INDEXES as WATCH_INDEXES
from skolsynk_services.google_connector.watch import DirectoryWatch, WatchChannelStore, make_webhook_app

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
    google_webhook_url: str | None = Field(
        default=None,
        description="The public HTTPS address of the webhook (ending in /google/notifications) where Google posts "
        "Directory push notifications; unset: no channels are opened.",
    )
    google_webhook_host: str = Field(default="0.0.0.0", description="Bind address of the webhook.")  # noqa: S104
    google_webhook_port: int = Field(default=8083, ge=0, le=65535, description="Webhook port; 0 picks a free one.")
    google_watch_ttl_seconds: int = Field(
        default=21600, ge=600, le=172800, description="Lifetime asked for a notification channel (renewed before)."
    )

    @field_validator("google_webhook_url")
    @classmethod
    def _https_webhook(cls, value: str | None) -> str | None:
        """Google delivers only to HTTPS with a valid certificate; plain HTTP is accepted for a loopback host
        (a local fake), nowhere else."""
        if value is None or not value.strip():
            return None
        url = URL(value.strip())
        loopback = url.host in ("127.0.0.1", "localhost", "::1")
        if not url.is_absolute() or not (url.scheme == "https" or (url.scheme == "http" and loopback)):
            raise ValueError("must be an https:// address (http:// only for a loopback host)")
        return str(url)


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
    if settings.google_webhook_url is not None:
        app.add_indexes(WATCH_INDEXES)
        watch = DirectoryWatch(
            connector,
            WatchChannelStore(app.db),
            address=settings.google_webhook_url,
            ttl_seconds=settings.google_watch_ttl_seconds,
            metrics=connector.metrics,
            clock=clock,
            serving=app.started.wait,
        )
        connector.watch = watch
        app.add_web_app(
            make_webhook_app(watch),
            host=settings.google_webhook_host,
            port=settings.google_webhook_port,
            server="webhook",
        )
    registry = None if sources is not None else follow_registry(app, settings, GOOGLE, connector)
    mount(app, connector, kind=SOURCE_KIND, registry=registry, idempotent=False)
    return app


def main() -> None:
    run_connector(SERVICE, GoogleConnectorSettings, build)
