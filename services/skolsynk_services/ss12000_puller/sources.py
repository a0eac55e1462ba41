"""The sources file: which SS 12000 APIs to pull, for which tenant, how to authenticate. Secrets are
never in the file, only the names of the environment variables that hold them."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, model_validator

from skolsynk.connectors.config import ENV_NAME, TENANT_ID, load_yaml, parse_entries
from skolsynk.connectors.config import ConfigurationError as ConfigurationError
from skolsynk.connectors.config import secret as secret
from skolsynk.contracts.source import SOURCE_ID


class AuthConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["oauth2", "api_key", "none"]
    token_url: str | None = Field(default=None, description="OAuth2 token endpoint (client credentials).")
    client_id: str | None = None
    client_secret_env: str | None = Field(default=None, pattern=ENV_NAME)
    scope: str | None = None
    api_key_env: str | None = Field(default=None, pattern=ENV_NAME)
    api_key_header: str = "X-API-Key"

    @model_validator(mode="after")
    def _complete(self) -> AuthConfig:
        if self.kind == "oauth2" and not (self.token_url and self.client_id and self.client_secret_env):
            raise ValueError("oauth2 needs token_url, client_id and client_secret_env")
        if self.kind == "api_key" and not self.api_key_env:
            raise ValueError("api_key needs api_key_env")
        return self


class SourceConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    tenant_id: str = Field(pattern=TENANT_ID)
    source_id: str = Field(pattern=SOURCE_ID)
    base_url: str = Field(pattern=r"^https?://", description="The API root, e.g. https://host/ss12000v2-api/v2.0")
    auth: AuthConfig
    page_size: int = Field(default=1000, ge=1, le=5000)
    full_interval_seconds: float = Field(default=86400.0, ge=1)
    incremental_interval_seconds: float = Field(default=900.0, ge=1)
    webhook_secret_env: str | None = Field(
        default=None, pattern=ENV_NAME, description="Shared secret of the webhook; no variable = webhook disabled."
    )

    @property
    def key(self) -> str:
        return f"{self.tenant_id}:{self.source_id}"


_SOURCES = TypeAdapter(list[SourceConfig])


def parse_sources(raw: object) -> list[SourceConfig]:
    """Validate a parsed sources document (a list, or ``{"sources": [...]}``); tenant+source unique."""
    return parse_entries(raw, _SOURCES, key="sources")


def load_sources(path: Path) -> list[SourceConfig]:
    return parse_sources(load_yaml(path, noun="sources file"))
