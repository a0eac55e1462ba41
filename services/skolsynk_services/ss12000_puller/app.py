"""Composition root of the SS 12000 puller: one process pulls every source in the sources file."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path

from pydantic import Field

from skolsynk.connectors.service import connector_app, mount, run_connector
from skolsynk.service import ServiceApp
from skolsynk.settings import ServiceSettings
from skolsynk_services.ss12000_puller.client import RetryPolicy
from skolsynk_services.ss12000_puller.puller import Puller
from skolsynk_services.ss12000_puller.runs import INDEXES, SOURCE_KIND, SyncStateStore
from skolsynk_services.ss12000_puller.sources import SourceConfig, load_sources, secret
from skolsynk_services.ss12000_puller.webhook import make_webhook_app

SERVICE = "ss12000-puller"


class PullerSettings(ServiceSettings):
    ss12000_sources_file: Path = Field(
        default=Path("deploy/ss12000-sources.yaml"), description="YAML list of the SS 12000 sources to pull."
    )
    ss12000_webhook_host: str = Field(default="0.0.0.0", description="Bind address of the webhook.")  # noqa: S104
    ss12000_webhook_port: int = Field(default=8082, ge=0, le=65535, description="Webhook port; 0 picks a free one.")
    ss12000_schedule: bool = Field(default=True, description="Run full and incremental pulls on their intervals.")
    ss12000_request_timeout_seconds: float = Field(default=30.0, gt=0, description="One HTTP request's budget.")
    ss12000_retry_attempts: int = Field(default=5, ge=1, le=20, description="Attempts per request (429/5xx/timeouts).")
    ss12000_retry_timeout_seconds: float = Field(default=300.0, gt=0, description="All attempts of one request.")
    ss12000_retry_wait_initial_seconds: float = Field(default=0.5, gt=0, description="First backoff.")
    ss12000_retry_wait_max_seconds: float = Field(default=30.0, gt=0, description="Longest backoff.")
    ss12000_overlap_seconds: float = Field(
        default=300.0, ge=0, description="Incremental runs re-read this long before the high-water mark."
    )


def build(
    settings: PullerSettings,
    *,
    sources: list[SourceConfig] | None = None,
    environ: Mapping[str, str] | None = None,
) -> ServiceApp:
    """The puller. ``sources`` replaces the sources file and ``environ`` the process environment (tests)."""
    configured = sources if sources is not None else load_sources(settings.ss12000_sources_file)
    app = connector_app(SERVICE, settings, kind=SOURCE_KIND, indexes=INDEXES)
    puller = Puller(
        configured,
        publisher=app.publisher,
        exchange=app.topology.exchange("source"),
        state=SyncStateStore(app.db),
        environ=environ,
        request_timeout_seconds=settings.ss12000_request_timeout_seconds,
        retry=RetryPolicy(
            attempts=settings.ss12000_retry_attempts,
            timeout_seconds=settings.ss12000_retry_timeout_seconds,
            wait_initial_seconds=settings.ss12000_retry_wait_initial_seconds,
            wait_max_seconds=settings.ss12000_retry_wait_max_seconds,
        ),
        overlap=timedelta(seconds=settings.ss12000_overlap_seconds),
    )
    mount(
        app,
        puller,
        kind=SOURCE_KIND,
        on_sync_requested=puller.sync_requested,
        schedule=settings.ss12000_schedule,
        extension="puller",
    )
    webhook_secrets: dict[str, str] = {}
    for source in configured:
        if source.webhook_secret_env is not None:
            webhook_secrets[source.key] = secret(source.webhook_secret_env, environ)
    app.add_web_app(
        make_webhook_app(puller, webhook_secrets),
        host=settings.ss12000_webhook_host,
        port=settings.ss12000_webhook_port,
        server="webhook",
    )
    return app


def main() -> None:
    run_connector(SERVICE, PullerSettings, build)
