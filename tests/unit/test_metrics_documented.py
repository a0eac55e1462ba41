"""docs/metrics.md names every metric the services register (and nothing they do not), and the Grafana
dashboards and Prometheus alert rules query only metrics that exist."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import json
import re
import shutil
import subprocess
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from skolsynk.observability import Metrics

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "metrics.md"
DASHBOARDS = ROOT / "deploy" / "grafana" / "dashboards"
RULES = ROOT / "deploy" / "prometheus" / "rules"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "tests"

#: Metric classes outside services/skolsynk_services/*/metrics.py (instantiated with a fresh registry).
EXPLICIT = [
    "skolsynk_services.gdpr.metrics:GdprMetrics",
    "skolsynk_services.normaliser.metrics:NormaliserMetrics",
    "skolsynk_services.dispatcher.metrics:DispatcherMetrics",
]

#: Series that come from Prometheus itself.
PROMETHEUS_SERIES = {"up"}


def metric_classes() -> list[type]:
    """The explicit classes plus every class of a ``services/<name>/metrics.py`` whose constructor takes a
    ``registry`` (a connector that adds metrics there is checked without editing this test)."""
    found: dict[str, type] = {}
    for spec in EXPLICIT:
        module_name, _, name = spec.partition(":")
        found[spec] = getattr(importlib.import_module(module_name), name)
    for path in sorted((ROOT / "services" / "skolsynk_services").glob("*/metrics.py")):
        module = importlib.import_module(f"skolsynk_services.{path.parent.name}.metrics")
        for name, value in vars(module).items():
            if (
                inspect.isclass(value)
                and value.__module__ == module.__name__
                and "registry" in inspect.signature(value).parameters
            ):
                found[f"{module.__name__}:{name}"] = value
    return list(found.values())


def registry_with_everything() -> CollectorRegistry:
    registry = CollectorRegistry()
    Metrics(registry)
    for cls in metric_classes():
        cls(registry)
    return registry


def exposed_names(registry: CollectorRegistry) -> dict[str, str]:
    """Name as queried (counters with ``_total``) -> type."""
    names: dict[str, str] = {}
    for family in registry.collect():
        name = f"{family.name}_total" if family.type == "counter" else family.name
        names[name] = family.type
    return names


def series_names(registry: CollectorRegistry) -> set[str]:
    """Every series name a query may use (``_bucket``, ``_sum``, ``_count`` of histograms included)."""
    names = set(PROMETHEUS_SERIES)
    for name, kind in exposed_names(registry).items():
        names.add(name)
        if kind == "histogram":
            names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
    return names


def documented_names(text: str) -> tuple[set[str], set[str]]:
    """(exact names, wildcard prefixes) written in backquotes in the document."""
    exact = set(re.findall(r"`([a-z_:][a-z0-9_:]*)`", text))
    prefixes = set(re.findall(r"`([a-z_:][a-z0-9_:]*)\*`", text))
    return exact, prefixes


def test_the_metrics_document_names_every_registered_metric() -> None:
    text = DOC.read_text(encoding="utf-8")
    exact, prefixes = documented_names(text)
    names = exposed_names(registry_with_everything())
    assert len([n for n in names if n.startswith("skolsynk_")]) > 40, "the metric classes were not found"
    # Wildcards (`process_*`) stand for the client library's standard collectors only: every skolsynk
    # metric is described on its own row.
    standard = {p for p in prefixes if not p.startswith("skolsynk_")}
    missing = sorted(n for n in names if n not in exact and not any(n.startswith(p) for p in standard))
    assert missing == [], f"describe these in docs/metrics.md: {missing}"


def test_the_metrics_document_names_no_metric_that_does_not_exist() -> None:
    exact, _ = documented_names(DOC.read_text(encoding="utf-8"))
    known = series_names(registry_with_everything())
    stale = sorted(n for n in exact if n.startswith("skolsynk_") and n not in known)
    assert stale == [], f"docs/metrics.md names metrics nobody registers: {stale}"


def test_no_metric_has_a_label_that_could_carry_person_data() -> None:
    forbidden = {"person", "person_id", "user", "email", "name", "civic_no", "path", "url", "entity_id", "message_id"}
    for family in registry_with_everything().collect():
        collector_labels: set[str] = set()
        for sample in family.samples:
            collector_labels |= set(sample.labels)
        assert not (collector_labels & forbidden), f"{family.name} has labels {collector_labels & forbidden}"


# ---------------------------------------------------------------------------
# PromQL: which metrics an expression uses
# ---------------------------------------------------------------------------

_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless", "offset",
             "inf", "nan"}  # fmt: skip


def metrics_in(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (functions, keywords, labels and literals removed)."""
    text = re.sub(r'"(?:\\.|[^"\\])*"', '""', expr)  # strings: label values, regexes, Grafana variables
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"(?<![\w.$])([a-zA-Z_:][a-zA-Z0-9_:]*)", text):
        name = match.group(1)
        following = text[match.end() :].lstrip()
        if name.lower() in _KEYWORDS or following.startswith("("):
            continue  # a keyword, or a function / aggregation
        names.add(name)
    return names


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ('sum by (queue) (rate(skolsynk_x_total{queue=~"a.b", x="y"}[5m]))', {"skolsynk_x_total"}),
        ("histogram_quantile(0.95, sum by (le) (rate(a_bucket[$__rate_interval])))", {"a_bucket"}),
        ('time() - max by (t) (b{t=~"$tenant"}) > 2 * 3600', {"b"}),
        ("count(up == 0) or vector(0)", {"up"}),
        ("x / on (a) group_left (b) y offset 5m", {"x", "y"}),
    ],
)  # fmt: skip
def test_metric_extraction(expr: str, names: set[str]) -> None:
    assert metrics_in(expr) == names


def unknown_metrics(expr: str, known: set[str]) -> set[str]:
    return {n for n in metrics_in(expr) if n not in known and not n.startswith("rabbitmq_")}


# ---------------------------------------------------------------------------
# Dashboards
# ---------------------------------------------------------------------------


def dashboards() -> dict[str, Any]:
    return {p.name: json.loads(p.read_text(encoding="utf-8")) for p in sorted(DASHBOARDS.glob("*.json"))}


def panels_of(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    for panel in dashboard.get("panels", []):
        found.append(panel)
        found += panel.get("panels", [])
    return found


def dashboard_queries(dashboard: dict[str, Any]) -> list[str]:
    queries = [t["expr"] for p in panels_of(dashboard) for t in p.get("targets", []) if t.get("expr")]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            definition = variable["definition"]
            match = re.fullmatch(r"label_values\((.+),\s*\w+\)", definition)
            assert match, f"unexpected variable query {definition}"
            queries.append(match.group(1))
    return queries


def load_dashboards_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("skolsynk_dashboards", ROOT / "tools" / "dashboards.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_four_dashboards_exist_with_unique_uids() -> None:
    loaded = dashboards()
    uids = {d["uid"] for d in loaded.values()}
    assert uids == {"skolsynk-overview", "skolsynk-vendors", "skolsynk-sources", "skolsynk-gdpr"}
    for name, dashboard in loaded.items():
        assert dashboard["title"].startswith("skolsynk / "), name
        assert dashboard["templating"]["list"][0]["name"] == "datasource", name
        ids = [p["id"] for p in panels_of(dashboard)]
        assert len(ids) == len(set(ids)), f"{name}: duplicate panel ids"
        for panel in panels_of(dashboard):
            if panel["type"] != "row":
                assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, (name, panel["title"])


def test_the_dashboards_are_what_the_generator_makes() -> None:
    module = load_dashboards_module()
    for name, build in module.DASHBOARDS.items():
        assert (DASHBOARDS / name).read_text(encoding="utf-8") == module.render(build), (
            f"{name} is stale: run .venv/bin/python tools/dashboards.py"
        )


def test_every_dashboard_query_uses_only_metrics_that_exist() -> None:
    known = series_names(registry_with_everything())
    problems = []
    for name, dashboard in dashboards().items():
        for expr in dashboard_queries(dashboard):
            unknown = unknown_metrics(expr, known)
            if unknown:
                problems.append(f"{name}: {sorted(unknown)} in {expr}")
    assert problems == [], "\n".join(problems)


def test_every_dashboard_query_parses(tmp_path: Path) -> None:
    """promtool parses each query (Grafana's variables replaced) as a recording rule."""
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian package `prometheus`; .ci/run installs it)")
    substitutions = {"$__rate_interval": "5m", "$__range": "6h", "$__interval": "1m"}
    rules = []
    for name, dashboard in dashboards().items():
        for n, expr in enumerate(dashboard_queries(dashboard)):
            for variable, value in substitutions.items():
                expr = expr.replace(variable, value)
            expr = re.sub(r"\$\{?\w+\}?", ".*", expr)
            rules.append({"record": f"dashboard:{Path(name).stem.replace('-', '_')}:{n}", "expr": expr})
    path = tmp_path / "dashboards.rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}), encoding="utf-8")
    result = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_grafana_provisioning_matches_the_dashboards_and_compose() -> None:
    provider = yaml.safe_load((ROOT / "deploy/grafana/provisioning/dashboards/skolsynk.yaml").read_text())
    datasource = yaml.safe_load((ROOT / "deploy/grafana/provisioning/datasources/prometheus.yaml").read_text())
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    path = provider["providers"][0]["options"]["path"]
    assert f"./deploy/grafana/dashboards:{path}:ro" in compose["services"]["grafana"]["volumes"]
    assert datasource["datasources"][0]["uid"] == "prometheus"
    for dashboard in dashboards().values():
        assert dashboard["templating"]["list"][0]["current"]["value"] == "prometheus"


# ---------------------------------------------------------------------------
# Alert rules
# ---------------------------------------------------------------------------


def alert_rules() -> list[dict[str, Any]]:
    rules = []
    for path in sorted(RULES.glob("*.yml")):
        for group in yaml.safe_load(path.read_text(encoding="utf-8"))["groups"]:
            rules += group["rules"]
    return rules


def test_every_alert_uses_only_metrics_that_exist() -> None:
    known = series_names(registry_with_everything())
    problems = [f"{r['alert']}: {sorted(unknown_metrics(r['expr'], known))}" for r in alert_rules()
                if unknown_metrics(r["expr"], known)]  # fmt: skip
    assert problems == [], "\n".join(problems)


def test_every_alert_is_documented_tested_and_has_a_severity() -> None:
    doc = DOC.read_text(encoding="utf-8")
    tests = "\n".join(p.read_text(encoding="utf-8") for p in RULE_TESTS.glob("*.yml"))
    required = {
        "WorkQueueWithoutConsumers",
        "DeadLetterQueueGrowing",
        "DeletionDeadlineBreached",
        "SourceRunIncomplete",
        "SourceRunStalled",
        "HoldPending",
        "VendorErrorRate",
        "ServiceDown",
    }
    names = {r["alert"] for r in alert_rules()}
    assert {f"Skolsynk{n}" for n in required} <= names
    for rule in alert_rules():
        assert rule["labels"]["severity"] in {"critical", "warning"}, rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        assert f"| {rule['alert']} |" in doc, f"{rule['alert']} is not in docs/metrics.md's alert table"
        assert f"alertname: {rule['alert']}" in tests, f"{rule['alert']} has no promtool unit test"
