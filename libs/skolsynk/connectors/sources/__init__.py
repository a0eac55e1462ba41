"""What a source of each kind is, and how the source registry holds it.

A source lives in the registry (:mod:`skolsynk.storage.sources`) as plain ``settings`` (the kind's
:class:`~pydantic.BaseModel` without its ids and secrets), sealed ``secrets`` (values) and ``secret_refs``
(names of environment variables that hold a value, e.g. from a Kubernetes secret). A :class:`SourceKind`
says which model a kind has and where each of its secrets goes in it, so that

- the admin checks what an organiser saves (:meth:`SourceKind.problems`) before it is stored,
- a connector builds the model it runs from a registry document (:meth:`SourceKind.from_registry`),
- a sources file becomes registry entries (:meth:`SourceKind.to_registry`, ``skolsynk sources import``).

The models are in this package, one module per kind: ``ss12000``, ``microsoft``, ``google``, ``egil``.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError

from skolsynk.connectors.sources import egil, google, microsoft, ss12000

#: What a secret stands in for while the settings are checked (its value is never needed for that).
PLACEHOLDER = "placeholder"
#: A secret's name as the kinds spell them: an unknown name of this shape is named in the problem (a typo the
#: organiser can see), any other by its position only (an answer never repeats what was sent).
SECRET_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


def _always(settings: Mapping[str, Any]) -> bool:
    return True


@dataclass(frozen=True)
class SecretSlot:
    """One secret of a kind: its name in the registry, where its value goes in the model and where a
    reference to it (an environment variable's name) goes instead; ``required`` says, from the settings,
    whether the source needs it."""

    name: str
    value: tuple[str, ...]
    reference: tuple[str, ...]
    required: Callable[[Mapping[str, Any]], bool] = _always
    #: What the secret is, for the admin's forms.
    description: str = ""


@dataclass(frozen=True)
class SettingsProblem:
    """A problem with what was saved: ``field`` is ``settings.<path>`` or ``secrets.<name>``."""

    field: str
    message: str


def _no_file(raw: object) -> list[Any]:
    raise ValueError("this kind of source has no sources file")


@dataclass(frozen=True)
class SourceKind:
    name: str
    model: type[BaseModel]
    secrets: tuple[SecretSlot, ...] = field(default=())
    #: A parsed sources file's entries (``ConfigurationError`` naming what is wrong).
    parse: Callable[[object], list[Any]] = _no_file

    # -- the registry's document -> the model a connector runs ------------------------------------

    def from_registry(self, doc: Mapping[str, Any], secrets: Mapping[str, str]) -> Any:
        """The kind's model of a registry document, with its opened ``secrets`` (and its references)
        placed. :class:`~pydantic.ValidationError` when the stored settings no longer fit the model."""
        return self.model.model_validate(
            self._assemble(
                str(doc["tenant_id"]),
                str(doc["source_id"]),
                doc.get("settings") or {},
                secrets,
                doc.get("secret_refs") or {},
            )
        )

    def _assemble(
        self,
        tenant_id: str,
        source_id: str,
        settings: Mapping[str, Any],
        secrets: Mapping[str, str],
        refs: Mapping[str, str],
    ) -> dict[str, Any]:
        data: dict[str, Any] = copy.deepcopy(dict(settings))
        data["tenant_id"] = tenant_id
        data["source_id"] = source_id
        for slot in self.secrets:
            if slot.name in refs:
                _put(data, slot.reference, refs[slot.name])
            elif slot.name in secrets:
                _put(data, slot.value, secrets[slot.name])
        return data

    # -- what the admin checks before saving --------------------------------------------------------

    def problems(
        self, settings: Mapping[str, Any], *, secret_names: set[str], secret_refs: Mapping[str, str]
    ) -> list[SettingsProblem]:
        """Everything wrong with a source's settings, secrets and references, each naming its field
        (never a value): what a connector would refuse to run."""
        found: list[SettingsProblem] = []
        clean: dict[str, Any] = copy.deepcopy(dict(settings))
        placeholders = dict.fromkeys(secret_names, PLACEHOLDER)
        for slot in self.secrets:
            for path in (slot.value, slot.reference):
                if _pop(clean, path) is not None:
                    found.append(
                        SettingsProblem(
                            "settings." + ".".join(path), f"a secret: give it as secrets.{slot.name} or secret_refs"
                        )
                    )
            if slot.required(settings) and slot.name not in secret_names and slot.name not in secret_refs:
                found.append(SettingsProblem(f"secrets.{slot.name}", "required"))
                placeholders[slot.name] = PLACEHOLDER  # so the settings are checked as if it were there
        unknown = sorted((set(secret_names) | set(secret_refs)) - {slot.name for slot in self.secrets})
        found += [
            SettingsProblem(f"secrets.{name}", "not a secret of this kind of source")
            if SECRET_NAME.match(name)
            else SettingsProblem("secrets", f"secret name {n} (in alphabetical order) is not a secret of this kind")
            for n, name in enumerate(unknown, start=1)
        ]
        try:
            self.model.model_validate(self._assemble("tenant", "source", _prune(clean), placeholders, secret_refs))
        except ValidationError as error:
            found += [self._problem(problem) for problem in error.errors()]
        return list(dict.fromkeys(found))

    def _problem(self, problem: Mapping[str, Any]) -> SettingsProblem:
        location = tuple(str(part) for part in problem.get("loc", ()))
        message = str(problem.get("msg", "invalid")).removeprefix("Value error, ")
        for slot in self.secrets:
            if location[: len(slot.reference)] == slot.reference:
                return SettingsProblem(f"secret_refs.{slot.name}", "not an environment variable name")
            if location[: len(slot.value)] == slot.value:
                return SettingsProblem(f"secrets.{slot.name}", message)
        return SettingsProblem(".".join(("settings", *location)), message)

    def settings_schema(self) -> dict[str, Any]:
        """The JSON Schema of the kind's ``settings`` (what the admin API takes): the model's, without the
        ids and the secrets (they go in ``secrets`` or ``secret_refs``); self-contained (its own ``$defs``)."""
        schema = self.model.model_json_schema()
        definitions = schema.get("$defs", {})
        for name in ("tenant_id", "source_id"):
            _drop(schema, (name,), definitions)
        for slot in self.secrets:
            _drop(schema, slot.value, definitions)
            _drop(schema, slot.reference, definitions)
        schema["title"] = f"{self.name} source settings"
        # Its own resource, so that its "#/$defs/..." references resolve inside it wherever it is embedded.
        schema["$id"] = f"https://skolsynk.org/contracts/source-settings.{self.name}.schema.json"
        return schema

    # -- a sources file entry -> registry settings and references -----------------------------------

    def to_registry(self, config: BaseModel) -> tuple[dict[str, Any], dict[str, str]]:
        """``(settings, secret_refs)`` of a source read from a sources file: what the file set, without
        ids and secrets. ``ValueError`` when the entry holds a secret's value (files name variables only)."""
        settings = config.model_dump(mode="json", exclude_unset=True, exclude={"tenant_id", "source_id"})
        refs: dict[str, str] = {}
        for slot in self.secrets:
            if _get(settings, slot.value) is not None:
                raise ValueError(f"{'.'.join(slot.value)}: a sources file names the variable, never the secret")
            reference = _pop(settings, slot.reference)
            if reference is not None:
                refs[slot.name] = str(reference)
        return _prune(settings), refs


def _drop(schema: dict[str, Any], path: tuple[str, ...], definitions: dict[str, Any]) -> None:
    """Remove the property at ``path`` from a JSON Schema, following ``$ref`` into ``definitions``."""
    node = schema
    for part in path[:-1]:
        target = node.get("properties", {}).get(part, {})
        ref = target.get("$ref") or next((a.get("$ref") for a in target.get("anyOf", []) if "$ref" in a), None)
        if ref is None:
            return
        node = definitions[ref.rsplit("/", 1)[-1]]
    node.get("properties", {}).pop(path[-1], None)
    if path[-1] in node.get("required", []):
        node["required"] = [name for name in node["required"] if name != path[-1]]


def _get(data: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    current: Any = data
    for part in path:
        if not isinstance(current, Mapping):
            return None
        current = current.get(part)
    return current


def _put(data: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    current = data
    for part in path[:-1]:
        nested = current.get(part)
        if not isinstance(nested, dict):
            nested = {}
            current[part] = nested
        current = nested
    current[path[-1]] = value


def _pop(data: dict[str, Any], path: tuple[str, ...]) -> Any:
    parent = _get(data, path[:-1]) if len(path) > 1 else data
    return parent.pop(path[-1], None) if isinstance(parent, dict) else None


def _prune(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` without the mappings a secret's removal left empty."""
    return {key: _prune(value) if isinstance(value, dict) else value for key, value in data.items() if value != {}}


def _oauth2(settings: Mapping[str, Any]) -> bool:
    return bool(_get(settings, ("auth", "kind")) == "oauth2")


def _api_key(settings: Mapping[str, Any]) -> bool:
    return bool(_get(settings, ("auth", "kind")) == "api_key")


def _no_key_file(settings: Mapping[str, Any]) -> bool:
    return _get(settings, ("service_account", "key_file")) is None


SS12000 = SourceKind(
    "ss12000",
    ss12000.SourceConfig,
    parse=ss12000.parse_sources,
    secrets=(
        SecretSlot(
            "client_secret",
            ("auth", "client_secret"),
            ("auth", "client_secret_env"),
            _oauth2,
            "OAuth2-klientens hemlighet (client secret)",
        ),
        SecretSlot("api_key", ("auth", "api_key"), ("auth", "api_key_env"), _api_key, "API-nyckel"),
        SecretSlot(
            "webhook_secret",
            ("webhook_secret",),
            ("webhook_secret_env",),
            lambda settings: False,
            "Delad hemlighet för webhook-notiser (valfri)",
        ),
    ),
)
MICROSOFT = SourceKind(
    "microsoft",
    microsoft.SourceConfig,
    parse=microsoft.parse_sources,
    secrets=(
        SecretSlot(
            "client_secret",
            ("client_secret",),
            ("client_secret_env",),
            lambda settings: settings.get("client_id") is not None,
            "Appregistreringens klienthemlighet (bara med en egen appregistrering)",
        ),
    ),
)
GOOGLE = SourceKind(
    "google",
    google.SourceConfig,
    parse=google.parse_sources,
    secrets=(
        SecretSlot(
            "service_account_key",
            ("service_account", "key"),
            ("service_account", "key_env"),
            _no_key_file,
            "Tjänstekontots nyckel (JSON)",
        ),
    ),
)
EGIL = SourceKind("egil", egil.SourceConfig, parse=egil.parse_sources)

#: Every kind of source, by its name in the registry.
SOURCE_KINDS: dict[str, SourceKind] = {kind.name: kind for kind in (GOOGLE, MICROSOFT, EGIL, SS12000)}
