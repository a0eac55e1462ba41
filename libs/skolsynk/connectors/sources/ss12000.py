"""An SS 12000:2020 API source: which API to pull for which tenant and how to authenticate.

A source comes from the source registry (:mod:`skolsynk.connectors.sources`), where its secrets are sealed
(``client_secret``, ``api_key``, ``webhook_secret``: the values) or references (``*_env``: the names of the
environment variables that hold them); a sources file (``skolsynk sources import``) names variables only."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, TypeAdapter, model_validator

from skolsynk.connectors.config import ENV_NAME, TENANT_ID, load_yaml, parse_entries, secret_value
from skolsynk.connectors.config import ConfigurationError as ConfigurationError
from skolsynk.connectors.config import secret as secret
from skolsynk.contracts.source import SOURCE_ID


class AuthConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["oauth2", "api_key", "none"]
    token_url: str | None = Field(default=None, description="OAuth2 token endpoint (client credentials).")
    client_id: str | None = None
    client_secret: SecretStr | None = Field(default=None, description="The client secret (from the registry).")
    client_secret_env: str | None = Field(default=None, pattern=ENV_NAME, description="Or the variable holding it.")
    scope: str | None = None
    api_key: SecretStr | None = Field(default=None, description="The API key (from the registry).")
    api_key_env: str | None = Field(default=None, pattern=ENV_NAME, description="Or the variable holding it.")
    api_key_header: str = "X-API-Key"

    @model_validator(mode="after")
    def _complete(self) -> AuthConfig:
        if self.kind == "oauth2" and not (self.token_url and self.client_id):
            raise ValueError("oauth2 needs token_url and client_id")
        if self.kind == "oauth2" and self.client_secret is None and self.client_secret_env is None:
            raise ValueError("oauth2 needs a client secret (stored, or client_secret_env)")
        if self.kind == "api_key" and self.api_key is None and self.api_key_env is None:
            raise ValueError("api_key needs an API key (stored, or api_key_env)")
        return self

    def client_secret_value(self, environ: Mapping[str, str] | None = None) -> str:
        return secret_value(self.client_secret, self.client_secret_env, environ)

    def api_key_value(self, environ: Mapping[str, str] | None = None) -> str:
        return secret_value(self.api_key, self.api_key_env, environ)


class SourceConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    tenant_id: str = Field(pattern=TENANT_ID)
    source_id: str = Field(pattern=SOURCE_ID)
    base_url: str = Field(pattern=r"^https?://", description="The API root, e.g. https://host/ss12000v2-api/v2.0")
    auth: AuthConfig
    page_size: int = Field(default=1000, ge=1, le=5000)
    full_interval_seconds: float = Field(default=86400.0, ge=1)
    incremental_interval_seconds: float = Field(default=900.0, ge=1)
    webhook_secret: SecretStr | None = Field(default=None, description="Shared secret of the webhook.")
    webhook_secret_env: str | None = Field(
        default=None, pattern=ENV_NAME, description="Or the variable holding it; neither = webhook disabled."
    )
    webhook_url: str | None = Field(
        default=None,
        pattern=r"^https?://",
        max_length=2000,
        description=(
            "The public address at which the source reaches this source's webhook: registered with the source's "
            "/subscriptions (kept, renewed, removed by the puller); none = no subscription. Needs the webhook secret."
        ),
    )

    @model_validator(mode="after")
    def _subscription_needs_secret(self) -> SourceConfig:
        if self.webhook_url is not None and self.webhook_secret is None and self.webhook_secret_env is None:
            raise ValueError("webhook_url needs the webhook secret (webhook_secret or webhook_secret_env)")
        return self

    @property
    def key(self) -> str:
        return f"{self.tenant_id}:{self.source_id}"

    def webhook_secret_value(self, environ: Mapping[str, str] | None = None) -> str | None:
        """The webhook's shared secret; None when the source has no webhook."""
        if self.webhook_secret is None and self.webhook_secret_env is None:
            return None
        return secret_value(self.webhook_secret, self.webhook_secret_env, environ)


_SOURCES = TypeAdapter(list[SourceConfig])


def parse_sources(raw: object) -> list[SourceConfig]:
    """Validate a parsed sources document (a list, or ``{"sources": [...]}``); tenant+source unique."""
    return parse_entries(raw, _SOURCES, key="sources")


def load_sources(path: Path) -> list[SourceConfig]:
    return parse_sources(load_yaml(path, noun="sources file"))
