"""The shutdown budget fits the time the platform gives a stopping process.

On SIGTERM a service spends ``readiness_grace + drain + close`` seconds shutting down
(:mod:`skolsynk.lifecycle`) and wants ``SHUTDOWN_MARGIN_SECONDS`` more for exit and log flushing.
Kubernetes sends SIGKILL after ``terminationGracePeriodSeconds`` (default 30), Docker Compose after
``stop_grace_period`` (default 10s). This test reads the real manifests and resolves the budget
the way the container would see it:

* Kubernetes: the base and every overlay, rendered as Kustomize would (``tools/k8s.py``), so an
  overlay's patch of the budget or of ``terminationGracePeriodSeconds`` is seen. ``envFrom``
  ConfigMaps (in order, with their ``prefix``), then ``env`` entries (``value`` or
  ``valueFrom.configMapKeyRef``), which win; anything not set falls back to the
  :class:`~skolsynk.settings.LifecycleSettings` defaults. The values are parsed by
  ``LifecycleSettings`` itself.
* Compose: each skolsynk service's ``environment`` (anchors and ``<<`` merges resolved by PyYAML).
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from skolsynk.lifecycle import SHUTDOWN_MARGIN_SECONDS
from skolsynk.settings import LifecycleSettings

pytestmark = pytest.mark.unit

REPO_ROOT = Path(__file__).resolve().parents[2]
K8S_DIR = REPO_ROOT / "deploy" / "k8s"
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"

BUDGET_VARIABLES = (
    "SKOLSYNK_READINESS_GRACE_SECONDS",
    "SKOLSYNK_DRAIN_TIMEOUT_SECONDS",
    "SKOLSYNK_CLOSE_TIMEOUT_SECONDS",
)
K8S_DEFAULT_TERMINATION_GRACE_SECONDS = 30
COMPOSE_DEFAULT_STOP_GRACE_SECONDS = 10.0
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet")


class UnverifiableBudget(Exception):
    """A budget variable comes from somewhere this test cannot see (a Secret, the downward API...)."""


def lifecycle_from(env: Mapping[str, str], monkeypatch: pytest.MonkeyPatch) -> LifecycleSettings:
    """Build LifecycleSettings exactly as a service would, from ``env`` only."""
    with monkeypatch.context() as mp:
        for name in BUDGET_VARIABLES:
            mp.delenv(name, raising=False)
        for name in BUDGET_VARIABLES:
            if name in env:
                mp.setenv(name, env[name])
        return LifecycleSettings()


# ---------------------------------------------------------------------------
# Kubernetes
# ---------------------------------------------------------------------------


def _load_renderer() -> Any:
    spec = importlib.util.spec_from_file_location("skolsynk_k8s_tool", REPO_ROOT / "tools" / "k8s.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


K8S_TOOL = _load_renderer()
#: The base and every overlay: what is applied to a cluster is what they render, patches included.
KUSTOMIZATIONS = [K8S_DIR / "base", *K8S_TOOL.overlays()]


def load_k8s_documents(kustomization: Path) -> list[dict[str, Any]]:
    """The rendered manifests of one kustomization (tools/k8s.py, the offline Kustomize renderer)."""
    where = str(kustomization.relative_to(REPO_ROOT))
    return [{**document, "__file__": where} for document in K8S_TOOL.render(kustomization)]


def configmaps_by_name(documents: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, str]]:
    return {
        doc["metadata"]["name"]: {str(k): str(v) for k, v in (doc.get("data") or {}).items()}
        for doc in documents
        if doc.get("kind") == "ConfigMap"
    }


def container_environment(container: Mapping[str, Any], configmaps: Mapping[str, Mapping[str, str]]) -> dict[str, str]:
    """The budget-relevant environment of one container, as the kubelet would assemble it."""
    env: dict[str, str] = {}
    name = container.get("name", "?")
    for source in container.get("envFrom") or []:
        prefix = source.get("prefix", "")
        if "configMapRef" in source:
            ref = source["configMapRef"]
            data = configmaps.get(ref["name"])
            if data is None:
                if ref.get("optional"):
                    continue
                raise UnverifiableBudget(f"container {name}: envFrom ConfigMap {ref['name']!r} is not in deploy/k8s")
            env.update({prefix + key: value for key, value in data.items()})
        elif "secretRef" in source:
            raise UnverifiableBudget(
                f"container {name}: envFrom secretRef may set the shutdown budget; this test cannot see Secrets"
            )
    for entry in container.get("env") or []:
        var = entry["name"]
        if "value" in entry:
            env[var] = str(entry["value"])
        elif "valueFrom" in entry:
            ref = entry["valueFrom"].get("configMapKeyRef")
            if ref is not None:
                data = configmaps.get(ref["name"])
                if data is not None and ref["key"] in data:
                    env[var] = data[ref["key"]]
                    continue
                if not ref.get("optional"):
                    raise UnverifiableBudget(f"container {name}: {var} refers to missing ConfigMap key {ref}")
            elif var in BUDGET_VARIABLES:
                raise UnverifiableBudget(f"container {name}: {var} comes from {entry['valueFrom']}")
        else:
            env[var] = ""
    return env


@dataclass(frozen=True)
class WorkloadBudget:
    workload: str
    container: str
    termination_grace_seconds: float
    budget_seconds: float

    @property
    def fits(self) -> bool:
        return self.budget_seconds + SHUTDOWN_MARGIN_SECONDS <= self.termination_grace_seconds

    def describe(self) -> str:
        return (
            f"{self.workload}/{self.container}: budget {self.budget_seconds:g} s + margin "
            f"{SHUTDOWN_MARGIN_SECONDS:g} s > terminationGracePeriodSeconds {self.termination_grace_seconds:g}"
        )


def k8s_budgets(documents: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch) -> list[WorkloadBudget]:
    configmaps = configmaps_by_name(documents)
    budgets = []
    for doc in documents:
        if doc.get("kind") not in WORKLOAD_KINDS:
            continue
        pod = doc["spec"]["template"]["spec"]
        grace = pod.get("terminationGracePeriodSeconds", K8S_DEFAULT_TERMINATION_GRACE_SECONDS)
        for container in pod["containers"]:
            settings = lifecycle_from(container_environment(container, configmaps), monkeypatch)
            budgets.append(
                WorkloadBudget(
                    workload=f"{doc['kind']} {doc['metadata']['name']} ({doc['__file__']})",
                    container=container["name"],
                    termination_grace_seconds=float(grace),
                    budget_seconds=settings.shutdown_budget_seconds,
                )
            )
    return budgets


def test_there_is_a_base_and_there_are_overlays() -> None:
    assert len(KUSTOMIZATIONS) >= 3, "expected deploy/k8s/base and overlays (dev, prod)"


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS, ids=lambda p: str(p.relative_to(K8S_DIR)))
def test_every_deployment_fits_its_shutdown_budget(kustomization: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    documents = load_k8s_documents(kustomization)
    deployments = [d for d in documents if d.get("kind") == "Deployment"]
    assert deployments, f"no Deployment found in {kustomization}: the budget check would pass vacuously"
    budgets = k8s_budgets(documents, monkeypatch)
    assert {b.workload.split(" (")[0] for b in budgets} >= {f"Deployment {d['metadata']['name']}" for d in deployments}
    too_long = [b.describe() for b in budgets if not b.fits]
    assert not too_long, "\n".join(too_long)


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS, ids=lambda p: str(p.relative_to(K8S_DIR)))
def test_every_deployment_takes_its_budget_from_a_configmap_that_exists(kustomization: Path) -> None:
    """The manifests set the budget through the shared ConfigMap; a typo in its name would silently
    fall back to the defaults (and the check above would still pass), so check the wiring too."""
    documents = load_k8s_documents(kustomization)
    configmaps = configmaps_by_name(documents)
    for doc in documents:
        if doc.get("kind") != "Deployment":
            continue
        for container in doc["spec"]["template"]["spec"]["containers"]:
            env = container_environment(container, configmaps)
            missing = [v for v in BUDGET_VARIABLES if v not in env]
            assert not missing, f"{doc['metadata']['name']}/{container['name']} does not set {missing}"


# The checker itself must be able to fail: synthetic manifests.


def _configmap(name: str = "cfg", **data: str) -> dict[str, Any]:
    return {"kind": "ConfigMap", "metadata": {"name": name}, "data": data}


def _deployment(container: dict[str, Any], grace: int | None = 40) -> dict[str, Any]:
    pod: dict[str, Any] = {"containers": [{"name": "app", **container}]}
    if grace is not None:
        pod["terminationGracePeriodSeconds"] = grace
    return {
        "kind": "Deployment",
        "metadata": {"name": "svc"},
        "spec": {"template": {"spec": pod}},
        "__file__": "synthetic.yaml",
    }


_FROM_CFG = {"envFrom": [{"configMapRef": {"name": "cfg"}}]}
_BUDGET_27 = {
    "SKOLSYNK_READINESS_GRACE_SECONDS": "2",
    "SKOLSYNK_DRAIN_TIMEOUT_SECONDS": "20",
    "SKOLSYNK_CLOSE_TIMEOUT_SECONDS": "5",
}


@pytest.mark.parametrize(
    ("documents", "budget", "fits"),
    [
        pytest.param([_configmap(**_BUDGET_27), _deployment(_FROM_CFG)], 27.0, True, id="configmap-fits"),
        pytest.param(
            [_configmap(**{**_BUDGET_27, "SKOLSYNK_DRAIN_TIMEOUT_SECONDS": "34"}), _deployment(_FROM_CFG)],
            41.0,
            False,
            id="configmap-drain-too-long",
        ),
        pytest.param([_configmap(**_BUDGET_27), _deployment(_FROM_CFG, grace=31)], 27.0, False, id="grace-too-short"),
        pytest.param([_deployment({}, grace=None)], 27.0, False, id="defaults-vs-k8s-default-30"),
        pytest.param([_deployment({}, grace=32)], 27.0, True, id="defaults-exactly-fit"),
        pytest.param(
            [
                _configmap(**_BUDGET_27),
                _deployment(
                    {**_FROM_CFG, "env": [{"name": "SKOLSYNK_DRAIN_TIMEOUT_SECONDS", "value": "60"}]},
                ),
            ],
            67.0,
            False,
            id="env-overrides-configmap",
        ),
        pytest.param(
            [
                _configmap(name="other", drain="3"),
                _deployment(
                    {
                        "env": [
                            {
                                "name": "SKOLSYNK_DRAIN_TIMEOUT_SECONDS",
                                "valueFrom": {"configMapKeyRef": {"name": "other", "key": "drain"}},
                            }
                        ]
                    }
                ),
            ],
            10.0,
            True,
            id="configmap-key-ref",
        ),
        pytest.param(
            [
                _configmap(DRAIN_TIMEOUT_SECONDS="100"),
                _deployment({"envFrom": [{"prefix": "SKOLSYNK_", "configMapRef": {"name": "cfg"}}]}),
            ],
            107.0,
            False,
            id="envfrom-prefix",
        ),
        pytest.param(
            [
                _configmap(name="a", SKOLSYNK_CLOSE_TIMEOUT_SECONDS="50"),
                _configmap(name="b", SKOLSYNK_CLOSE_TIMEOUT_SECONDS="1"),
                _deployment({"envFrom": [{"configMapRef": {"name": "a"}}, {"configMapRef": {"name": "b"}}]}),
            ],
            23.0,
            True,
            id="later-envfrom-wins",
        ),
    ],
)
def test_budget_resolution_on_synthetic_manifests(
    documents: list[dict[str, Any]], budget: float, fits: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    (result,) = k8s_budgets(documents, monkeypatch)
    assert result.budget_seconds == pytest.approx(budget)
    assert result.fits is fits


@pytest.mark.parametrize(
    "container",
    [
        pytest.param({"envFrom": [{"configMapRef": {"name": "missing"}}]}, id="missing-configmap"),
        pytest.param({"envFrom": [{"secretRef": {"name": "s"}}]}, id="envfrom-secret"),
        pytest.param(
            {
                "env": [
                    {
                        "name": "SKOLSYNK_DRAIN_TIMEOUT_SECONDS",
                        "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}},
                    }
                ]
            },
            id="budget-from-secret",
        ),
    ],
)
def test_budget_from_an_invisible_source_is_an_error(
    container: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(UnverifiableBudget):
        k8s_budgets([_deployment(container)], monkeypatch)


# ---------------------------------------------------------------------------
# Docker Compose
# ---------------------------------------------------------------------------

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(h|ms|us|m|s)")
_DURATION_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, "us": 0.000001}
_INTERPOLATION = re.compile(r"^\$\{(?P<name>\w+)(?::?-(?P<default>[^}]*))?\}$")


def compose_duration_seconds(value: str | float) -> float:
    """Compose durations: "40s", "1m30s", "1.5s", "500ms"; a bare number is seconds."""
    if isinstance(value, int | float):
        return float(value)
    text = value.strip()
    if re.fullmatch(r"\d+(?:\.\d+)?", text):
        return float(text)
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"not a compose duration: {value!r}")
    return sum(float(n) * _DURATION_UNITS[u] for n, u in parts)


def compose_environment(service: Mapping[str, Any]) -> dict[str, str]:
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) if "=" in item else (item, "") for item in raw)
    env: dict[str, str] = {}
    for key, value in raw.items():
        text = "" if value is None else str(value)
        match = _INTERPOLATION.match(text)
        if match is not None:
            if key in BUDGET_VARIABLES and match.group("default") is None:
                raise UnverifiableBudget(f"{key} is interpolated from the shell without a default")
            text = match.group("default") or ""
        env[str(key)] = text
    return env


def skolsynk_compose_services(compose: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Services that run our image (built from this repository)."""
    return {
        name: service
        for name, service in (compose.get("services") or {}).items()
        if "build" in service or str(service.get("image", "")).startswith("skolsynk")
    }


def test_every_compose_service_stops_within_its_grace_period(monkeypatch: pytest.MonkeyPatch) -> None:
    compose = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    services = skolsynk_compose_services(compose)
    assert services, "no skolsynk service in docker-compose.yml: the budget check would pass vacuously"
    assert {"normaliser", "gdpr", "admin"} <= set(services)
    problems = []
    for name, service in services.items():
        assert "env_file" not in service, f"{name}: env_file may set the budget; extend this test to read it"
        budget = lifecycle_from(compose_environment(service), monkeypatch).shutdown_budget_seconds
        grace = compose_duration_seconds(service.get("stop_grace_period", COMPOSE_DEFAULT_STOP_GRACE_SECONDS))
        if budget + SHUTDOWN_MARGIN_SECONDS > grace:
            problems.append(f"{name}: budget {budget:g} s + margin {SHUTDOWN_MARGIN_SECONDS:g} s > {grace:g} s")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("40s", 40.0), ("1m30s", 90.0), ("2m", 120.0), ("1.5s", 1.5), ("500ms", 0.5), ("1h", 3600.0), (40, 40.0)],
)
def test_compose_duration_parsing(value: str | int, seconds: float) -> None:
    assert compose_duration_seconds(value) == pytest.approx(seconds)


@pytest.mark.parametrize("value", ["forty", "40 s", "s", "40x"])
def test_compose_duration_rejects_garbage(value: str) -> None:
    with pytest.raises(ValueError, match="compose duration"):
        compose_duration_seconds(value)


@pytest.mark.parametrize(
    ("environment", "budget"),
    [
        ({}, 27.0),
        ({"SKOLSYNK_DRAIN_TIMEOUT_SECONDS": "50"}, 57.0),
        (["SKOLSYNK_CLOSE_TIMEOUT_SECONDS=1", "OTHER=x"], 23.0),
        ({"SKOLSYNK_READINESS_GRACE_SECONDS": "${GRACE:-10}"}, 35.0),
    ],
)
def test_compose_environment_resolution(
    environment: dict[str, str] | list[str], budget: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = compose_environment({"environment": environment})
    assert lifecycle_from(env, monkeypatch).shutdown_budget_seconds == pytest.approx(budget)
