"""A connector's configuration: its service settings, and the parts of a source every kind shares.

- :class:`ConnectorSettings`: the base of every pulling connector's settings, which nest models
  (``SKOLSYNK_{CONNECTOR}_RETRY__ATTEMPTS``); :class:`RetrySettings` is how one HTTP request is retried.
- A source's secret: its value (sealed in the source registry) or the environment variable that holds it
  (:func:`secret_value`).
- Sources files (what ``skolsynk sources import`` reads): YAML, a list of entries (or a mapping with the list
  under one key), each validated by the kind's model (its ``SourceConfig``), each tenant and source once.
  Secrets are never in a file, only the names of the environment variables that hold them.

Every problem is a :class:`ConfigurationError` whose message names the file, the entry or the variable,
never a value that could be a secret.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Protocol, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, TypeAdapter, ValidationError
from pydantic_settings import SettingsConfigDict

from skolsynk.connectors.http import RetryPolicy
from skolsynk.settings import ServiceSettings

#: skolsynk's organiser (tenant) id.
TENANT_ID = r"^[a-z0-9][a-z0-9-]{0,62}$"
#: The name of an environment variable.
ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"


class RetrySettings(BaseModel):
    """How a connector retries one HTTP request (stamina: exponential backoff with jitter, or the server's
    ``Retry-After``). Every connector nests it in its settings as ``{connector}_retry`` with its API's
    defaults; each field is the variable ``SKOLSYNK_{CONNECTOR}_RETRY__{FIELD}``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    attempts: int = Field(default=5, ge=1, le=30, description="Attempts per request (throttling, 5xx, timeouts).")
    timeout_seconds: float = Field(default=300.0, gt=0, description="All attempts of one request together.")
    wait_initial_seconds: float = Field(default=0.5, gt=0, description="First backoff.")
    wait_max_seconds: float = Field(default=30.0, gt=0, description="Longest backoff.")
    max_retry_after_seconds: float = Field(default=120.0, gt=0, description="A longer Retry-After is cut to this.")

    def policy(self) -> RetryPolicy:
        """The policy a :class:`~skolsynk.connectors.http.JsonApiClient` follows."""
        return RetryPolicy(
            attempts=self.attempts,
            timeout_seconds=self.timeout_seconds,
            wait_initial_seconds=self.wait_initial_seconds,
            wait_max_seconds=self.wait_max_seconds,
            max_retry_after_seconds=self.max_retry_after_seconds,
        )


class ConnectorSettings(ServiceSettings):
    """The base of a pulling connector's settings: nested models are read from ``{FIELD}__{SUBFIELD}``
    variables, and a variable overrides one field of a nested default (the rest keep the connector's
    defaults)."""

    model_config = SettingsConfigDict(
        env_prefix="SKOLSYNK_",
        extra="ignore",
        populate_by_name=True,
        env_nested_delimiter="__",
        nested_model_default_partial_update=True,
        hide_input_in_errors=True,
    )

    admin_secrets_key: SecretStr | None = Field(
        default=None,
        description="The installation's Fernet key that opens the source credentials the admin sealed "
        "(the admin's SKOLSYNK_ADMIN_SECRETS_KEY); without it only secret references can be served.",
    )
    sources_poll_seconds: float = Field(
        default=30.0, gt=0, le=60, description="How often the connector looks for added, changed or removed sources."
    )


class ConfigurationError(RuntimeError):
    """The sources file, or an environment variable, key or file it names, is missing or invalid."""


class _Keyed(Protocol):
    @property
    def key(self) -> str: ...


EntryT = TypeVar("EntryT", bound=_Keyed)


def environment(environ: Mapping[str, str] | None = None) -> Mapping[str, str]:
    """``environ``, or the process environment when it is ``None``."""
    return os.environ if environ is None else environ


def secret(name: str | None, environ: Mapping[str, str] | None = None) -> str:
    """The value of the environment variable ``name`` (required: unset or empty is an error)."""
    env = environment(environ)
    if not name or not env.get(name):
        raise ConfigurationError(f"the environment variable {name} is not set")
    return env[name]


def secret_value(value: SecretStr | None, name: str | None, environ: Mapping[str, str] | None = None) -> str:
    """A secret given as its value (sealed in the source registry) or else as the environment variable ``name``."""
    if value is not None:
        return value.get_secret_value()
    return secret(name, environ)


def load_yaml(path: Path, *, noun: str = "sources file", not_yaml: str = "is not valid YAML") -> object:
    """The parsed file. Unreadable: ``cannot read the {noun} {path}: {reason}``; a syntax error:
    ``the {noun} {path} {not_yaml} (line N)``, without the offending text."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigurationError(f"cannot read the {noun} {path}: {error.strerror}") from error
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise ConfigurationError(f"the {noun} {path} {not_yaml}{where}") from None


def parse_entries(
    raw: object,
    adapter: TypeAdapter[list[EntryT]],
    *,
    key: str,
    describe: Callable[[ValidationError, object], str] | None = None,
    not_a_list: str | None = None,
) -> list[EntryT]:
    """Validate a parsed document: a list of entries, or a mapping with the list under ``key``; nothing is
    an empty list. ``describe`` words a validation error as a :class:`ConfigurationError` (without it, the
    :class:`ValidationError` itself is raised); ``not_a_list``, when given, is the error for a document that
    is no list. Each ``key`` (tenant and source) may appear once: ``{key} listed twice: ...``."""
    if isinstance(raw, Mapping):
        raw = raw.get(key, [])
    if raw is None:
        raw = []
    if not_a_list is not None and not isinstance(raw, list):
        raise ConfigurationError(not_a_list)
    try:
        entries = adapter.validate_python(raw or [])
    except ValidationError as error:
        if describe is None:
            raise
        raise ConfigurationError(describe(error, raw)) from None
    keys = [entry.key for entry in entries]
    duplicates = sorted({k for k in keys if keys.count(k) > 1})
    if duplicates:
        raise ConfigurationError(f"{key} listed twice: {', '.join(duplicates)}")
    return entries
