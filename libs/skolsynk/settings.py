"""Configuration objects.

Every setting comes from the environment (or a ``.env`` file for local runs), is validated when the
object is built, and is passed explicitly into the code that needs it. Nothing here is read at import
time: a service builds its settings in ``main()``.

Connection URLs keep their conventional names (``AMQP_URL``, ``MONGODB_URL``) so the same value works
for every service; everything else is prefixed ``SKOLSYNK_``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
DEFAULT_MONGODB_URL = "mongodb://127.0.0.1:27017/?directConnection=true"


class BrokerSettings(BaseSettings):
    """How to reach RabbitMQ and how consumers behave on it."""

    model_config = SettingsConfigDict(
        env_prefix="SKOLSYNK_", extra="ignore", populate_by_name=True, hide_input_in_errors=True
    )

    amqp_url: SecretStr = Field(
        default=SecretStr(DEFAULT_AMQP_URL),
        validation_alias=AliasChoices("AMQP_URL", "SKOLSYNK_AMQP_URL"),
        description="RabbitMQ connection URL, including the vhost.",
    )
    namespace: str = Field(
        default="skolsynk",
        pattern=r"^[a-z][a-z0-9-]{0,40}$",
        description="Prefix of every exchange and queue name; lets several installations share a vhost.",
    )
    heartbeat_seconds: int = Field(default=10, ge=2, le=60, description="AMQP heartbeat.")
    prefetch: int = Field(
        default=50, ge=1, le=1000, description="Unacked deliveries per consumer = maximum handler concurrency."
    )
    delivery_limit: int = Field(
        default=20,
        ge=2,
        le=100,
        description="x-delivery-limit of quorum work queues: redeliveries (crashes) before the broker dead-letters.",
    )
    max_attempts: int = Field(
        default=5, ge=1, le=50, description="Handler attempts (first try plus delayed retries) before the DLQ."
    )
    retry_delays_seconds: tuple[float, ...] = Field(
        default=(1.0, 10.0, 60.0, 300.0),
        description="Delay ladder for retries; attempt n waits delays[min(n-1, len-1)].",
    )
    handler_timeout_seconds: float = Field(
        default=60.0, gt=0, description="A single handler call is cancelled (and retried) after this."
    )
    publish_timeout_seconds: float = Field(
        default=30.0, gt=0, description="How long a publish keeps retrying across reconnects before failing."
    )
    dlq_retention_days: float = Field(
        default=14.0,
        ge=0,
        le=365,
        description="Dead letters (which may carry personal data) are dropped after this many days; 0 keeps them "
        "until an operator replays or purges them. Part of every DLQ's arguments: all services must agree.",
    )

    @field_validator("retry_delays_seconds")
    @classmethod
    def _delays_positive(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if not value or any(d <= 0 for d in value):
            raise ValueError("retry delays must be a non-empty list of positive seconds")
        return value


class StoreSettings(BaseSettings):
    """How to reach MongoDB (a replica set in production: transactions and the outbox need one)."""

    model_config = SettingsConfigDict(
        env_prefix="SKOLSYNK_", extra="ignore", populate_by_name=True, hide_input_in_errors=True
    )

    mongodb_url: SecretStr = Field(
        default=SecretStr(DEFAULT_MONGODB_URL),
        validation_alias=AliasChoices("MONGODB_URL", "SKOLSYNK_MONGODB_URL"),
        description="MongoDB connection string.",
    )
    mongodb_database: str = Field(
        default="skolsynk",
        validation_alias=AliasChoices("MONGODB_DATABASE", "SKOLSYNK_MONGODB_DATABASE"),
        pattern=r"^[A-Za-z0-9_-]{1,63}$",
    )
    server_selection_timeout_ms: int = Field(default=10_000, ge=100)
    inbox_ttl_seconds: int = Field(
        default=7 * 24 * 3600,
        ge=60,
        description="How long processed message ids are remembered (must exceed the longest redelivery window).",
    )
    outbox_retention_seconds: int = Field(
        default=24 * 3600, ge=60, description="Sent outbox entries are removed (TTL index) after this."
    )


class ObservabilitySettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="SKOLSYNK_", extra="ignore", populate_by_name=True, hide_input_in_errors=True
    )

    health_host: str = Field(default="0.0.0.0", description="Bind address of /livez, /readyz, /metrics.")  # noqa: S104
    health_port: int = Field(default=8081, ge=0, le=65535, description="0 picks a free port (tests).")
    log_format: Literal["json", "console"] = "json"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value


class LifecycleSettings(BaseSettings):
    """The shutdown budget. Keep ``drain + close + readiness_grace`` under Kubernetes'
    ``terminationGracePeriodSeconds`` (a test checks the manifests in ``deploy/k8s``)."""

    model_config = SettingsConfigDict(
        env_prefix="SKOLSYNK_", extra="ignore", populate_by_name=True, hide_input_in_errors=True
    )

    readiness_grace_seconds: float = Field(
        default=2.0,
        ge=0,
        le=30,
        description="After SIGTERM /readyz answers 503 this long before consumers stop, so load balancers notice.",
    )
    drain_timeout_seconds: float = Field(
        default=20.0, gt=0, le=300, description="In-flight work may finish within this; the rest is requeued."
    )
    close_timeout_seconds: float = Field(
        default=5.0, gt=0, le=60, description="Closing connections and servers may take this long."
    )

    @property
    def shutdown_budget_seconds(self) -> float:
        return self.readiness_grace_seconds + self.drain_timeout_seconds + self.close_timeout_seconds


class HttpLimitSettings(BaseSettings):
    """Limits of every HTTP server of a service (not of the health port, which only Kubernetes and
    Prometheus reach); applied by :mod:`skolsynk.http_limits`."""

    model_config = SettingsConfigDict(
        env_prefix="SKOLSYNK_HTTP_", extra="ignore", populate_by_name=True, hide_input_in_errors=True
    )

    header_timeout_seconds: float = Field(
        default=75.0,
        gt=0,
        le=3600,
        description="A connection that sends no whole request head this long (from its start, or since its last "
        "answer) is closed; keep it above the ingress's upstream keep-alive (nginx: 60 s).",
    )
    body_timeout_seconds: float = Field(
        default=30.0, gt=0, le=600, description="A request body not fully arrived this long is answered 408."
    )
    max_body_bytes: int = Field(
        default=1_048_576,
        ge=1024,
        le=64 * 1_048_576,
        description="Largest request body (bytes) unless a route sets its own; larger gets 413.",
    )
    max_connections: int = Field(
        default=1000, ge=1, le=100_000, description="Open connections per HTTP server at most; more are closed."
    )


class ServiceSettings(BaseSettings):
    """What every service needs. Services subclass it to add their own fields."""

    model_config = SettingsConfigDict(
        env_prefix="SKOLSYNK_", extra="ignore", populate_by_name=True, hide_input_in_errors=True
    )

    broker: BrokerSettings = Field(default_factory=BrokerSettings)
    store: StoreSettings = Field(default_factory=StoreSettings)
    observability: ObservabilitySettings = Field(default_factory=ObservabilitySettings)
    lifecycle: LifecycleSettings = Field(default_factory=LifecycleSettings)
    http: HttpLimitSettings = Field(default_factory=HttpLimitSettings)


class CatalogueSettings(ServiceSettings):
    """A service that follows the vendor catalogue in the store (the admin, the dispatchers)."""

    vendor_catalogue_dir: Path | None = Field(
        default=Path("deploy/vendors"),
        description="Catalogue files (one YAML file per vendor) added to the store at start when it does not "
        "have them yet; never overwriting or reviving one (edit vendors in the admin or with skolsynk vendors import).",
    )
    vendors_poll_seconds: float = Field(
        default=10.0, gt=0, le=300, description="How often the catalogue in the store is looked at for changes."
    )
