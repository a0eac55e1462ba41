"""Settings come from the environment when the object is built, and are validated then."""

from __future__ import annotations

import os
from typing import Any

import pytest
from pydantic import SecretStr, ValidationError
from pydantic_settings import BaseSettings

from skolsynk.connectors.config import ConnectorSettings, RetrySettings
from skolsynk.connectors.http import RetryPolicy
from skolsynk.settings import (
    DEFAULT_AMQP_URL,
    DEFAULT_MONGODB_URL,
    BrokerSettings,
    LifecycleSettings,
    ObservabilitySettings,
    ServiceSettings,
    StoreSettings,
)

pytestmark = pytest.mark.unit

UNPREFIXED = ("AMQP_URL", "MONGODB_URL", "MONGODB_DATABASE")


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The developer's or CI's environment must not leak into these tests."""
    for name in list(os.environ):
        if name.startswith("SKOLSYNK_") or name in UNPREFIXED:
            monkeypatch.delenv(name)


def _error_locations(error: ValidationError) -> set[str]:
    return {str(part) for e in error.errors() for part in e["loc"]}


# ---------------------------------------------------------------------------
# Defaults
# ---------------------------------------------------------------------------


def test_broker_defaults() -> None:
    s = BrokerSettings()
    assert s.amqp_url.get_secret_value() == DEFAULT_AMQP_URL
    assert s.namespace == "skolsynk"
    assert s.heartbeat_seconds == 10
    assert s.prefetch == 50
    assert s.delivery_limit == 20
    assert s.max_attempts == 5
    assert s.retry_delays_seconds == (1.0, 10.0, 60.0, 300.0)
    assert s.handler_timeout_seconds == 60.0
    assert s.publish_timeout_seconds == 30.0


def test_store_defaults() -> None:
    s = StoreSettings()
    assert s.mongodb_url.get_secret_value() == DEFAULT_MONGODB_URL
    assert s.mongodb_database == "skolsynk"
    assert s.server_selection_timeout_ms == 10_000
    assert s.inbox_ttl_seconds == 7 * 24 * 3600
    assert s.outbox_retention_seconds == 24 * 3600


def test_observability_and_lifecycle_defaults() -> None:
    o = ObservabilitySettings()
    assert (o.health_host, o.health_port, o.log_format, o.log_level) == ("0.0.0.0", 8081, "json", "INFO")
    lc = LifecycleSettings()
    assert (lc.readiness_grace_seconds, lc.drain_timeout_seconds, lc.close_timeout_seconds) == (2.0, 20.0, 5.0)
    assert lc.shutdown_budget_seconds == 27.0


# ---------------------------------------------------------------------------
# Environment
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings_cls", "env", "field", "expected"),
    [
        (BrokerSettings, {"SKOLSYNK_NAMESPACE": "skolsynk-test"}, "namespace", "skolsynk-test"),
        (BrokerSettings, {"SKOLSYNK_PREFETCH": "7"}, "prefetch", 7),
        (BrokerSettings, {"SKOLSYNK_HEARTBEAT_SECONDS": "30"}, "heartbeat_seconds", 30),
        (BrokerSettings, {"SKOLSYNK_DELIVERY_LIMIT": "4"}, "delivery_limit", 4),
        (BrokerSettings, {"SKOLSYNK_MAX_ATTEMPTS": "3"}, "max_attempts", 3),
        (BrokerSettings, {"SKOLSYNK_RETRY_DELAYS_SECONDS": "[0.5, 2]"}, "retry_delays_seconds", (0.5, 2.0)),
        (BrokerSettings, {"SKOLSYNK_HANDLER_TIMEOUT_SECONDS": "1.5"}, "handler_timeout_seconds", 1.5),
        (BrokerSettings, {"SKOLSYNK_PUBLISH_TIMEOUT_SECONDS": "3"}, "publish_timeout_seconds", 3.0),
        (StoreSettings, {"MONGODB_DATABASE": "skolsynk_test"}, "mongodb_database", "skolsynk_test"),
        (StoreSettings, {"SKOLSYNK_MONGODB_DATABASE": "other"}, "mongodb_database", "other"),
        (StoreSettings, {"SKOLSYNK_INBOX_TTL_SECONDS": "3600"}, "inbox_ttl_seconds", 3600),
        (ObservabilitySettings, {"SKOLSYNK_HEALTH_PORT": "0"}, "health_port", 0),
        (ObservabilitySettings, {"SKOLSYNK_HEALTH_HOST": "127.0.0.1"}, "health_host", "127.0.0.1"),
        (ObservabilitySettings, {"SKOLSYNK_LOG_FORMAT": "console"}, "log_format", "console"),
        (ObservabilitySettings, {"SKOLSYNK_LOG_LEVEL": "DEBUG"}, "log_level", "DEBUG"),
        (LifecycleSettings, {"SKOLSYNK_READINESS_GRACE_SECONDS": "0"}, "readiness_grace_seconds", 0.0),
        (LifecycleSettings, {"SKOLSYNK_DRAIN_TIMEOUT_SECONDS": "45"}, "drain_timeout_seconds", 45.0),
        (LifecycleSettings, {"SKOLSYNK_CLOSE_TIMEOUT_SECONDS": "2.5"}, "close_timeout_seconds", 2.5),
    ],
)
def test_environment_variables_are_read(
    monkeypatch: pytest.MonkeyPatch,
    settings_cls: type[BaseSettings],
    env: dict[str, str],
    field: str,
    expected: Any,
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert getattr(settings_cls(), field) == expected


@pytest.mark.parametrize("variable", ["AMQP_URL", "SKOLSYNK_AMQP_URL"])
def test_amqp_url_is_read_by_its_conventional_name(monkeypatch: pytest.MonkeyPatch, variable: str) -> None:
    monkeypatch.setenv(variable, "amqp://svc:pw@rabbit.internal:5672/skolsynk")
    assert BrokerSettings().amqp_url.get_secret_value() == "amqp://svc:pw@rabbit.internal:5672/skolsynk"


@pytest.mark.parametrize("variable", ["MONGODB_URL", "SKOLSYNK_MONGODB_URL"])
def test_mongodb_url_is_read_by_its_conventional_name(monkeypatch: pytest.MonkeyPatch, variable: str) -> None:
    monkeypatch.setenv(variable, "mongodb://svc:pw@m1,m2,m3/?replicaSet=rs0")
    assert StoreSettings().mongodb_url.get_secret_value() == "mongodb://svc:pw@m1,m2,m3/?replicaSet=rs0"


def test_environment_is_read_when_built_not_at_import(monkeypatch: pytest.MonkeyPatch) -> None:
    before = BrokerSettings()
    monkeypatch.setenv("SKOLSYNK_NAMESPACE", "later")
    assert before.namespace == "skolsynk"
    assert BrokerSettings().namespace == "later"


def test_service_settings_build_every_group_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AMQP_URL", "amqp://a:b@rabbit/")
    monkeypatch.setenv("MONGODB_URL", "mongodb://mongo/?replicaSet=rs0")
    monkeypatch.setenv("MONGODB_DATABASE", "tenantdb")
    monkeypatch.setenv("SKOLSYNK_NAMESPACE", "staging")
    monkeypatch.setenv("SKOLSYNK_LOG_FORMAT", "console")
    monkeypatch.setenv("SKOLSYNK_DRAIN_TIMEOUT_SECONDS", "10")
    s = ServiceSettings()
    assert s.broker.amqp_url.get_secret_value() == "amqp://a:b@rabbit/"
    assert s.broker.namespace == "staging"
    assert s.store.mongodb_url.get_secret_value() == "mongodb://mongo/?replicaSet=rs0"
    assert s.store.mongodb_database == "tenantdb"
    assert s.observability.log_format == "console"
    assert s.lifecycle.drain_timeout_seconds == 10.0
    assert s.lifecycle.shutdown_budget_seconds == 17.0


def test_unknown_prefixed_variables_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SKOLSYNK_SOMETHING_ELSE", "x")
    assert BrokerSettings().namespace == "skolsynk"


def test_fields_can_be_passed_by_name() -> None:
    s = BrokerSettings(namespace="explicit", prefetch=3)
    assert (s.namespace, s.prefetch) == ("explicit", 3)


# ---------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings_cls", "variable", "value", "field"),
    [
        (BrokerSettings, "SKOLSYNK_NAMESPACE", "Skolsynk", "namespace"),
        (BrokerSettings, "SKOLSYNK_NAMESPACE", "1skolsynk", "namespace"),
        (BrokerSettings, "SKOLSYNK_NAMESPACE", "skol.synk", "namespace"),
        (BrokerSettings, "SKOLSYNK_NAMESPACE", "", "namespace"),
        (BrokerSettings, "SKOLSYNK_NAMESPACE", "a" * 42, "namespace"),
        (BrokerSettings, "SKOLSYNK_PREFETCH", "0", "prefetch"),
        (BrokerSettings, "SKOLSYNK_PREFETCH", "1001", "prefetch"),
        (BrokerSettings, "SKOLSYNK_PREFETCH", "many", "prefetch"),
        (BrokerSettings, "SKOLSYNK_HEARTBEAT_SECONDS", "1", "heartbeat_seconds"),
        (BrokerSettings, "SKOLSYNK_DELIVERY_LIMIT", "1", "delivery_limit"),
        (BrokerSettings, "SKOLSYNK_MAX_ATTEMPTS", "0", "max_attempts"),
        (BrokerSettings, "SKOLSYNK_RETRY_DELAYS_SECONDS", "[]", "retry_delays_seconds"),
        (BrokerSettings, "SKOLSYNK_RETRY_DELAYS_SECONDS", "[1, -5]", "retry_delays_seconds"),
        (BrokerSettings, "SKOLSYNK_RETRY_DELAYS_SECONDS", "[0]", "retry_delays_seconds"),
        (BrokerSettings, "SKOLSYNK_HANDLER_TIMEOUT_SECONDS", "0", "handler_timeout_seconds"),
        (BrokerSettings, "SKOLSYNK_PUBLISH_TIMEOUT_SECONDS", "-1", "publish_timeout_seconds"),
        (StoreSettings, "MONGODB_DATABASE", "my db", "MONGODB_DATABASE"),
        (StoreSettings, "MONGODB_DATABASE", "a/b", "MONGODB_DATABASE"),
        (StoreSettings, "SKOLSYNK_INBOX_TTL_SECONDS", "59", "inbox_ttl_seconds"),
        (StoreSettings, "SKOLSYNK_SERVER_SELECTION_TIMEOUT_MS", "99", "server_selection_timeout_ms"),
        (ObservabilitySettings, "SKOLSYNK_LOG_FORMAT", "xml", "log_format"),
        (ObservabilitySettings, "SKOLSYNK_LOG_LEVEL", "TRACE", "log_level"),
        (ObservabilitySettings, "SKOLSYNK_HEALTH_PORT", "65536", "health_port"),
        (LifecycleSettings, "SKOLSYNK_READINESS_GRACE_SECONDS", "-1", "readiness_grace_seconds"),
        (LifecycleSettings, "SKOLSYNK_READINESS_GRACE_SECONDS", "31", "readiness_grace_seconds"),
        (LifecycleSettings, "SKOLSYNK_DRAIN_TIMEOUT_SECONDS", "0", "drain_timeout_seconds"),
        (LifecycleSettings, "SKOLSYNK_DRAIN_TIMEOUT_SECONDS", "301", "drain_timeout_seconds"),
        (LifecycleSettings, "SKOLSYNK_CLOSE_TIMEOUT_SECONDS", "0", "close_timeout_seconds"),
        (LifecycleSettings, "SKOLSYNK_CLOSE_TIMEOUT_SECONDS", "61", "close_timeout_seconds"),
    ],
)
def test_invalid_environment_values_are_rejected_naming_the_field(
    monkeypatch: pytest.MonkeyPatch, settings_cls: type[BaseSettings], variable: str, value: str, field: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValidationError) as caught:
        settings_cls()
    assert field in _error_locations(caught.value)
    assert field in str(caught.value)


@pytest.mark.parametrize(
    ("settings_cls", "kwargs", "field"),
    [
        (BrokerSettings, {"namespace": "UPPER"}, "namespace"),
        (BrokerSettings, {"prefetch": 0}, "prefetch"),
        (BrokerSettings, {"retry_delays_seconds": ()}, "retry_delays_seconds"),
        (BrokerSettings, {"retry_delays_seconds": (1.0, -1.0)}, "retry_delays_seconds"),
        (ObservabilitySettings, {"log_format": "xml"}, "log_format"),
    ],
)
def test_invalid_arguments_are_rejected_naming_the_field(
    settings_cls: type[BaseSettings], kwargs: dict[str, Any], field: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        settings_cls(**kwargs)
    assert field in _error_locations(caught.value)


def test_one_invalid_group_fails_the_service_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SKOLSYNK_PREFETCH", "0")
    with pytest.raises(ValidationError, match="prefetch"):
        ServiceSettings()


# ---------------------------------------------------------------------------
# Secrets
# ---------------------------------------------------------------------------


def test_connection_urls_are_secrets_and_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AMQP_URL", "amqp://svc:Hunter2-amqp@rabbit/")
    monkeypatch.setenv("MONGODB_URL", "mongodb://svc:Hunter2-mongo@mongo/")
    s = ServiceSettings()
    assert isinstance(s.broker.amqp_url, SecretStr)
    assert isinstance(s.store.mongodb_url, SecretStr)
    for text in (repr(s), str(s), repr(s.broker), str(s.store), s.model_dump_json(), str(s.model_dump())):
        assert "Hunter2" not in text
    assert s.broker.amqp_url.get_secret_value() == "amqp://svc:Hunter2-amqp@rabbit/"
    assert s.store.mongodb_url.get_secret_value() == "mongodb://svc:Hunter2-mongo@mongo/"


# ---------------------------------------------------------------------------
# The shutdown budget
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("grace", "drain", "close", "budget"),
    [(2, 20, 5, 27), (0, 1, 1, 2), (30, 300, 60, 390), (0.5, 2.25, 0.25, 3.0)],
)
def test_shutdown_budget_is_the_sum_of_the_three_phases(
    grace: float, drain: float, close: float, budget: float
) -> None:
    s = LifecycleSettings(readiness_grace_seconds=grace, drain_timeout_seconds=drain, close_timeout_seconds=close)
    assert s.shutdown_budget_seconds == pytest.approx(budget)


# ---------------------------------------------------------------------------
# The pulling connectors: one nested retry model, each connector's defaults
# ---------------------------------------------------------------------------


def _connector_settings() -> dict[str, type[ConnectorSettings]]:
    from skolsynk_services.google_connector.app import GoogleConnectorSettings
    from skolsynk_services.graph_connector.app import GraphConnectorSettings
    from skolsynk_services.ss12000_puller.app import Ss12000ConnectorSettings

    return {"google": GoogleConnectorSettings, "graph": GraphConnectorSettings, "ss12000": Ss12000ConnectorSettings}


def test_each_connector_keeps_its_retry_defaults() -> None:
    policies = {
        prefix: getattr(settings_type(), f"{prefix}_retry").policy()
        for prefix, settings_type in _connector_settings().items()
    }
    assert policies == {
        "google": RetryPolicy(attempts=8, timeout_seconds=600, wait_initial_seconds=1, wait_max_seconds=64),
        "graph": RetryPolicy(attempts=5, timeout_seconds=300, wait_initial_seconds=0.5, wait_max_seconds=30),
        "ss12000": RetryPolicy(attempts=5, timeout_seconds=300, wait_initial_seconds=0.5, wait_max_seconds=30),
    }
    assert all(policy.max_retry_after_seconds == 120 for policy in policies.values())


@pytest.mark.parametrize("prefix", ["google", "graph", "ss12000"])
def test_one_retry_field_from_the_environment_keeps_the_other_defaults(
    monkeypatch: pytest.MonkeyPatch, prefix: str
) -> None:
    settings_type = _connector_settings()[prefix]
    default = getattr(settings_type(), f"{prefix}_retry")
    monkeypatch.setenv(f"SKOLSYNK_{prefix.upper()}_RETRY__WAIT_MAX_SECONDS", "2.5")
    monkeypatch.setenv(f"SKOLSYNK_{prefix.upper()}_RETRY__MAX_RETRY_AFTER_SECONDS", "7")
    retry = getattr(settings_type(), f"{prefix}_retry")
    assert retry == default.model_copy(update={"wait_max_seconds": 2.5, "max_retry_after_seconds": 7.0})
    # Partial overrides by name work the same (the tests build settings so).
    given = settings_type.model_validate({f"{prefix}_retry": {"attempts": 2}})
    assert getattr(given, f"{prefix}_retry").attempts == 2
    assert getattr(given, f"{prefix}_retry").timeout_seconds == default.timeout_seconds


def test_a_bad_retry_value_is_rejected_naming_the_field(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SKOLSYNK_GRAPH_RETRY__ATTEMPTS", "0")
    with pytest.raises(ValidationError) as raised:
        _connector_settings()["graph"]()
    assert {"graph_retry", "attempts"} <= _error_locations(raised.value)


def test_retry_settings_refuse_unknown_fields() -> None:
    with pytest.raises(ValidationError):
        RetrySettings.model_validate({"attempts": 3, "retries": 4})
