"""What a source of each kind is in the source registry: the admin's check before saving, the model a
connector builds from a registry document (sealed secrets and references placed), and a sources file's
entries as registry settings."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from skolsynk.connectors.sources import GOOGLE, MICROSOFT, SOURCE_KINDS, SS12000, SettingsProblem
from skolsynk.connectors.sources import google as google_sources

ROOT = Path(__file__).resolve().parents[2]
CLIENT = "7c2e4a10-0d3b-4b6f-8e21-9a4c5b6d7e02"
SS12000_SETTINGS = {
    "base_url": "https://api.example/ss12000v2-api/v2.0",
    "auth": {"kind": "oauth2", "token_url": "https://idp.example/token", "client_id": "skolsynk"},
}


def doc(kind: str, settings: dict[str, Any], refs: dict[str, str] | None = None) -> dict[str, Any]:
    return {"tenant_id": "kommun-a", "source_id": "api", "kind": kind, "settings": settings, "secret_refs": refs or {}}


def test_every_kind_of_the_admin_has_a_model() -> None:
    assert sorted(SOURCE_KINDS) == ["egil", "google", "microsoft", "ss12000"]


def test_a_sealed_secret_becomes_the_value_and_a_reference_the_variable() -> None:
    sealed = SS12000.from_registry(doc("ss12000", SS12000_SETTINGS), {"client_secret": "s3cret"})
    assert sealed.key == "kommun-a:api"
    assert sealed.auth.client_secret_value({}) == "s3cret"
    referenced = SS12000.from_registry(doc("ss12000", SS12000_SETTINGS, {"client_secret": "SS_SECRET"}), {})
    assert referenced.auth.client_secret_env == "SS_SECRET"
    assert referenced.auth.client_secret_value({"SS_SECRET": "from-env"}) == "from-env"
    assert "s3cret" not in repr(sealed)  # SecretStr: never printed
    microsoft = MICROSOFT.from_registry(
        doc("microsoft", {"azure_tenant_id": "kommun.onmicrosoft.com", "client_id": CLIENT}), {"client_secret": "x"}
    )
    assert microsoft.client_secret_value({}) == "x"


def test_a_sealed_service_account_key_is_read_like_a_key_file() -> None:
    example = google_sources.load_sources(ROOT / "deploy" / "google-sources.example.yaml")[0]
    settings, refs = GOOGLE.to_registry(example)
    assert refs == {"service_account_key": "GOOGLE_DEMO_KOMMUN_SERVICE_ACCOUNT_KEY"}
    assert "service_account" not in settings  # only the reference was in it
    key = {"client_email": "sa@p.iam.gserviceaccount.com", "private_key": "-----BEGIN PRIVATE KEY-----"}
    source = GOOGLE.from_registry(doc("google", settings), {"service_account_key": json.dumps(key)})
    assert google_sources.service_account_key(source) == key
    assert source.mapping == example.mapping


def test_the_admin_check_names_every_problem_by_field_never_by_value() -> None:
    assert SS12000.problems(SS12000_SETTINGS, secret_names={"client_secret"}, secret_refs={}) == []
    assert SS12000.problems(SS12000_SETTINGS, secret_names=set(), secret_refs={"client_secret": "SS_SECRET"}) == []
    assert SS12000.problems(SS12000_SETTINGS, secret_names=set(), secret_refs={}) == [
        SettingsProblem("secrets.client_secret", "required")
    ]
    api_key = {"base_url": "https://api.example", "auth": {"kind": "api_key"}}
    assert SS12000.problems(api_key, secret_names=set(), secret_refs={}) == [
        SettingsProblem("secrets.api_key", "required")
    ]
    bad = {"base_url": "ftp://nope", "auth": {"kind": "oauth2", "client_id": "c"}, "page_size": 0}
    fields = [p.field for p in SS12000.problems(bad, secret_names={"client_secret"}, secret_refs={})]
    assert sorted(fields) == ["settings.auth", "settings.base_url", "settings.page_size"]  # auth: no token_url
    assert SS12000.problems({"base_url": "https://a"}, secret_names=set(), secret_refs={})[0].field == "settings.auth"
    refs = {"client_secret": "not a variable"}
    assert SS12000.problems(SS12000_SETTINGS, secret_names=set(), secret_refs=refs) == [
        SettingsProblem("secret_refs.client_secret", "not an environment variable name")
    ]


def test_secrets_are_refused_in_settings_and_unknown_secrets_named() -> None:
    leaked = {**SS12000_SETTINGS, "auth": {**SS12000_SETTINGS["auth"], "client_secret": "plain"}}
    problems = SS12000.problems(leaked, secret_names={"client_secret"}, secret_refs={})
    assert problems == [
        SettingsProblem("settings.auth.client_secret", "a secret: give it as secrets.client_secret or secret_refs")
    ]
    assert "plain" not in str(problems)
    assert MICROSOFT.problems(
        {"azure_tenant_id": "kommun.onmicrosoft.com", "client_id": CLIENT},
        secret_names={"client_secret", "password"},
        secret_refs={},
    ) == [SettingsProblem("secrets.password", "not a secret of this kind of source")]
    # A name not spelled like a secret's is counted, never repeated (the admin fuzz, issue 19).
    assert MICROSOFT.problems(
        {"azure_tenant_id": "kommun.onmicrosoft.com", "client_id": CLIENT},
        secret_names={"client_secret", "Karin Sundberg"},
        secret_refs={"$where": "X"},
    ) == [
        SettingsProblem("secrets", f"secret name {n} (in alphabetical order) is not a secret of this kind")
        for n in (1, 2)
    ]
    assert SOURCE_KINDS["egil"].problems({}, secret_names=set(), secret_refs={}) == []
    assert SOURCE_KINDS["egil"].problems({"url": "x"}, secret_names=set(), secret_refs={})[0].field == "settings.url"


def test_a_google_source_with_a_key_file_needs_no_key_secret() -> None:
    example = google_sources.load_sources(ROOT / "deploy" / "google-sources.example.yaml")[0]
    settings, _ = GOOGLE.to_registry(example)
    with_file = {**settings, "service_account": {"key_file": "/var/run/secrets/google/key.json"}}
    assert GOOGLE.problems(with_file, secret_names=set(), secret_refs={}) == []
    assert GOOGLE.problems(settings, secret_names=set(), secret_refs={}) == [
        SettingsProblem("secrets.service_account_key", "required")
    ]
    no_mapping = {k: v for k, v in settings.items() if k != "mapping"}
    problems = GOOGLE.problems(no_mapping, secret_names={"service_account_key"}, secret_refs={})
    assert problems == [SettingsProblem("settings.mapping", "Field required")]


def test_a_sources_file_becomes_registry_settings_without_ids_or_defaults() -> None:
    entry = SS12000.parse(
        [{"tenant_id": "kommun-a", "source_id": "api", **SS12000_SETTINGS,
          "auth": {**SS12000_SETTINGS["auth"], "client_secret_env": "SS_SECRET"}, "webhook_secret_env": "SS_HOOK"}]
    )[0]  # fmt: skip
    settings, refs = SS12000.to_registry(entry)
    assert settings == SS12000_SETTINGS
    assert refs == {"client_secret": "SS_SECRET", "webhook_secret": "SS_HOOK"}
    rebuilt = SS12000.from_registry(doc("ss12000", settings, refs), {})
    assert rebuilt == entry  # the round trip is exact
    with_value = SS12000.parse(
        [{"tenant_id": "kommun-a", "source_id": "api", **SS12000_SETTINGS,
          "auth": {**SS12000_SETTINGS["auth"], "client_secret": "plain"}}]
    )[0]  # fmt: skip
    with pytest.raises(ValueError, match="names the variable, never the secret") as raised:
        SS12000.to_registry(with_value)
    assert "plain" not in str(raised.value)


def test_stored_settings_that_no_longer_fit_are_a_validation_error() -> None:
    with pytest.raises(ValidationError):
        MICROSOFT.from_registry(doc("microsoft", {"azure_tenant_id": "x"}), {"client_secret": "s"})


def test_the_settings_schema_has_neither_ids_nor_secrets() -> None:
    schema = SS12000.settings_schema()
    assert "tenant_id" not in schema["properties"]
    assert {"webhook_secret", "webhook_secret_env"}.isdisjoint(schema["properties"])
    auth = schema["$defs"]["AuthConfig"]["properties"]
    assert {"client_secret", "client_secret_env", "api_key", "api_key_env"}.isdisjoint(auth)
    assert {"token_url", "client_id", "scope"} <= set(auth)
    google = GOOGLE.settings_schema()
    assert "mapping" in google["required"]
    assert "key" not in google["$defs"]["ServiceAccountConfig"]["properties"]
    assert "client_secret" not in MICROSOFT.settings_schema()["properties"]


@pytest.mark.parametrize(
    ("kind", "example"),
    [
        ("ss12000", "ss12000-sources.example.yaml"),
        ("microsoft", "microsoft-sources.example.yaml"),
        ("google", "google-sources.example.yaml"),
        ("egil", "egil-clients.example.yaml"),
    ],
)
def test_every_example_file_is_an_import_of_its_kind(kind: str, example: str) -> None:
    """What `skolsynk sources import KIND FILE` reads: each example parses and becomes registry settings that
    the admin's check accepts (with its references)."""
    source_kind = SOURCE_KINDS[kind]
    entries = source_kind.parse(yaml.safe_load((ROOT / "deploy" / example).read_text(encoding="utf-8")))
    assert entries
    for entry in entries:
        settings, refs = source_kind.to_registry(entry)
        assert source_kind.problems(settings, secret_names=set(), secret_refs=refs) == [], entry.key
