"""A Microsoft 365 source (School Data Sync via Graph Education), one :class:`SourceConfig` per organiser's
tenant: for which organiser, how to authenticate and how to map. It comes from the source registry
(:mod:`skolsynk.connectors.sources`), where the client secret is sealed (``client_secret``) or a reference
(``client_secret_env``, the environment variable that holds it); a tenants file (``skolsynk sources import``)
names the variable only.

Validation errors name the entry and the field (``entry 2 (kommun-a/m365): azure_tenant_id: ...``),
never a value that could be a secret.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from skolsynk.connectors.config import ENV_NAME, TENANT_ID, load_yaml, parse_entries, secret_value
from skolsynk.connectors.config import ConfigurationError as ConfigurationError
from skolsynk.connectors.config import secret as secret
from skolsynk.contracts.source import SOURCE_ID
from skolsynk.domain.ss12000 import DutyRole, GroupType, SchoolType

#: An Entra directory id: a GUID, or a verified domain (``kommun.onmicrosoft.com``).
AZURE_TENANT = re.compile(r"^(?:[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}|[A-Za-z0-9.-]+\.[A-Za-z]{2,})$")
GUID = re.compile(r"^[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")
DEFAULT_AUTHORITY = "https://login.microsoftonline.com"
DEFAULT_GRAPH_BASE_URL = "https://graph.microsoft.com/v1.0"
GRAPH_SCOPE = "https://graph.microsoft.com/.default"


class SourceConfig(BaseModel):
    """One source: an organiser's Microsoft 365 tenant."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    tenant_id: str = Field(pattern=TENANT_ID, description="skolsynk's organiser (tenant) id.")
    source_id: str = Field(default="microsoft", pattern=SOURCE_ID, description="This source within the organiser.")
    azure_tenant_id: str = Field(description="The Entra ID directory: a GUID or a verified domain.")
    client_id: str | None = Field(
        default=None,
        description="The organiser's own app registration (a GUID); none: skolsynk's multi-tenant app, which "
        "the organiser's admin consented to (the connector's SKOLSYNK_GRAPH_APP_CLIENT_ID and secret).",
    )
    client_secret: SecretStr | None = Field(default=None, description="The client secret (from the registry).")
    client_secret_env: str | None = Field(
        default=None, pattern=ENV_NAME, description="Or the environment variable holding it."
    )
    authority: str = Field(
        default=DEFAULT_AUTHORITY, pattern=r"^https?://", description="Entra authority (token host)."
    )
    token_url: str | None = Field(
        default=None, pattern=r"^https?://", description="Token endpoint; default {authority}/{azure_tenant_id}/..."
    )
    graph_base_url: str = Field(default=DEFAULT_GRAPH_BASE_URL, pattern=r"^https?://", description="Graph v1.0 root.")
    scope: str = Field(default=GRAPH_SCOPE, description="Client-credentials scope (must end in /.default).")
    schools: list[str] | None = Field(
        default=None,
        min_length=1,
        description="Only these schools (Graph id, externalId or schoolNumber); none: every school.",
    )
    full_interval_seconds: float = Field(default=86400.0, ge=60, description="Full reconciliation interval.")
    delta_interval_seconds: float = Field(default=900.0, ge=10, description="Delta (incremental) interval.")
    page_size: int = Field(default=999, ge=1, le=999, description="$top on listings (delta rounds: Graph chooses).")
    concurrency: int = Field(default=4, ge=1, le=16, description="Parallel per-object requests (members ...).")
    school_types: list[SchoolType] = Field(
        default_factory=lambda: [SchoolType.GR], min_length=1, description="School types of every school."
    )
    school_unit_types: dict[str, list[SchoolType]] = Field(
        default_factory=dict, description="School types per school-unit code, overriding school_types."
    )
    municipality_code: str | None = Field(default=None, pattern=r"^[0-9]{4}$")
    organisation_name: str | None = Field(
        default=None, min_length=1, max_length=200, description="Publish one Organisation (huvudman) of this name."
    )
    teacher_role: DutyRole = Field(default=DutyRole.LARARE, description="Duty role of a teacher at a school.")
    class_group_type: GroupType = Field(default=GroupType.UNDERVISNING, description="Group type of a class.")
    klass_pattern: str | None = Field(
        default=None, description="Classes whose displayName matches this regex (in full) are of type Klass."
    )

    @field_validator("azure_tenant_id")
    @classmethod
    def _azure_tenant(cls, value: str) -> str:
        if not AZURE_TENANT.match(value):
            raise ValueError("must be the directory's GUID or a verified domain such as kommun.onmicrosoft.com")
        return value

    @field_validator("client_id")
    @classmethod
    def _client_id(cls, value: str | None) -> str | None:
        if value is not None and not GUID.match(value):
            raise ValueError("must be the app registration's application (client) id, a GUID")
        return value

    @field_validator("scope")
    @classmethod
    def _scope(cls, value: str) -> str:
        if not value.endswith("/.default"):
            raise ValueError("client credentials need a scope ending in /.default")
        return value

    @field_validator("klass_pattern")
    @classmethod
    def _pattern(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as error:
                raise ValueError(f"not a regular expression: {error.msg}") from None
        return value

    @field_validator("school_unit_types")
    @classmethod
    def _codes(cls, value: dict[str, list[SchoolType]]) -> dict[str, list[SchoolType]]:
        for code, types in value.items():
            if not re.fullmatch(r"[0-9]{8}", code):
                raise ValueError(f"{code!r} is not an 8-digit school-unit code")
            if not types:
                raise ValueError(f"{code}: at least one school type")
        return value

    @model_validator(mode="after")
    def _secret(self) -> SourceConfig:
        given = (self.client_secret is not None) + (self.client_secret_env is not None)
        if self.client_id is not None and given != 1:
            raise ValueError("give the client secret (stored, or client_secret_env) once")
        if self.client_id is None and given:
            raise ValueError("a client secret belongs to the source's own client_id")
        return self

    @property
    def uses_installation_app(self) -> bool:
        """The source reads with skolsynk's multi-tenant app (admin consent), not an app of its own."""
        return self.client_id is None

    def client_secret_value(self, environ: Mapping[str, str] | None = None) -> str:
        return secret_value(self.client_secret, self.client_secret_env, environ)

    @model_validator(mode="after")
    def _intervals(self) -> SourceConfig:
        if self.delta_interval_seconds > self.full_interval_seconds:
            raise ValueError("delta_interval_seconds must not exceed full_interval_seconds")
        return self

    @property
    def key(self) -> str:
        return f"{self.tenant_id}:{self.source_id}"

    @property
    def resolved_token_url(self) -> str:
        return self.token_url or f"{self.authority.rstrip('/')}/{self.azure_tenant_id}/oauth2/v2.0/token"

    def types_of(self, school_unit_code: str | None) -> list[SchoolType]:
        if school_unit_code is not None and school_unit_code in self.school_unit_types:
            return list(self.school_unit_types[school_unit_code])
        return list(self.school_types)


_SOURCES = TypeAdapter(list[SourceConfig])


def _describe(error: ValidationError, raw: object) -> str:
    entries = raw if isinstance(raw, list) else []
    lines = []
    for problem in error.errors()[:10]:
        location = list(problem.get("loc", ()))
        where = "the tenants list"
        first = location[0] if location else None
        if isinstance(first, int):
            index = first
            location.pop(0)
            entry = entries[index] if index < len(entries) else None
            label = ""
            if isinstance(entry, Mapping):
                label = f" ({entry.get('tenant_id', '?')}/{entry.get('source_id', 'microsoft')})"
            where = f"entry {index + 1}{label}"
        field = ".".join(str(part) for part in location) or "(entry)"
        message = str(problem.get("msg", "invalid")).removeprefix("Value error, ")
        lines.append(f"{where}: {field}: {message}")
    return "; ".join(lines)


def parse_sources(raw: object) -> list[SourceConfig]:
    """Validate a parsed tenants document (a list, or ``{"tenants": [...]}``); tenant+source unique."""
    return parse_entries(
        raw,
        _SOURCES,
        key="tenants",
        describe=_describe,
        not_a_list="the tenants file must be a list of tenants (or a mapping with 'tenants')",
    )


def load_sources(path: Path) -> list[SourceConfig]:
    return parse_sources(load_yaml(path, noun="tenants file"))
