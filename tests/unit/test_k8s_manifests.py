"""The Kubernetes manifests (deploy/k8s): the base and every overlay render offline, match what
``kubectl kustomize`` builds, validate against the schemas, and agree with the code (services, vendors,
queues, settings)."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
from pathlib import Path
from types import ModuleType
from typing import Any

import jsonschema
import pytest
import yaml

from skolsynk.messaging import queue_name
from tests.unit.test_configuration_documented import env_names, service_settings_types

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
SCHEMAS = K8S / "schemas"


def load_tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("skolsynk_k8s_tool", ROOT / "tools" / "k8s.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


k8s = load_tool()
KUSTOMIZATIONS = [K8S / "base", *k8s.overlays()]
IDS = [str(p.relative_to(K8S)) for p in KUSTOMIZATIONS]

#: Deployment -> the module its container runs (services/<module>).
SERVICES = {
    "normaliser": "normaliser",
    "gdpr": "gdpr",
    "admin": "admin",
    "egil-receiver": "egil_receiver",
    "ss12000-puller": "ss12000_puller",
    "google-connector": "google_connector",
    "graph-connector": "graph_connector",
}


@pytest.fixture(scope="module", params=KUSTOMIZATIONS, ids=IDS)
def rendered(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    manifests: list[dict[str, Any]] = k8s.render(request.param)
    return manifests


def by_kind(manifests: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {m["metadata"]["name"]: m for m in manifests if m["kind"] == kind}


def test_there_are_dev_and_prod_overlays() -> None:
    assert {p.name for p in k8s.overlays()} >= {"dev", "prod"}


def test_the_derived_files_are_current() -> None:
    stale = [str(p.relative_to(ROOT)) for p, text in k8s.derived_files().items()
             if not p.exists() or p.read_text(encoding="utf-8") != text]  # fmt: skip
    assert stale == [], f"run .venv/bin/python tools/k8s.py generate: {stale}"


def test_cross_references_resolve(rendered: list[dict[str, Any]]) -> None:
    assert k8s.check_rendered(rendered, "rendered") == []


def test_every_service_and_every_vendor_has_its_deployment(rendered: list[dict[str, Any]]) -> None:
    deployments = by_kind(rendered, "Deployment")
    expected = set(SERVICES) | {f"dispatcher-{v}" for v in k8s.vendor_ids()} | {k8s.SHARED_DISPATCHER}
    assert set(deployments) == expected
    # The shared dispatcher serves every vendor of the catalogue in the store (issue 18).
    (shared,) = deployments[k8s.SHARED_DISPATCHER]["spec"]["template"]["spec"]["containers"]
    assert shared["args"] == ["skolsynk_services.dispatcher"]
    assert "SKOLSYNK_VENDOR_ID" not in {e["name"] for e in shared["env"]}
    for name, module in SERVICES.items():
        (container,) = deployments[name]["spec"]["template"]["spec"]["containers"]
        assert container["args"] == [f"skolsynk_services.{module}"]
        assert (ROOT / "services" / "skolsynk_services" / module / "__main__.py").exists(), (
            f"{name} runs a module that does not exist"
        )
    for vendor in k8s.vendor_ids():
        (container,) = deployments[f"dispatcher-{vendor}"]["spec"]["template"]["spec"]["containers"]
        assert container["args"] == ["skolsynk_services.dispatcher"]
        assert {"name": "SKOLSYNK_VENDOR_ID", "value": vendor} in container["env"]


def test_keda_scales_the_normaliser_and_every_dispatcher_on_their_work_queues(rendered: list[dict[str, Any]]) -> None:
    namespace = by_kind(rendered, "ConfigMap")["skolsynk-config"]["data"]["SKOLSYNK_NAMESPACE"]
    scaled = by_kind(rendered, "ScaledObject")
    assert set(scaled) == {"normaliser"} | {f"dispatcher-{v}" for v in k8s.vendor_ids()}
    queues = {t["metadata"]["queueName"] for t in scaled["normaliser"]["spec"]["triggers"]}
    assert queues == {
        queue_name(namespace, "normaliser", "source-events"),
        queue_name(namespace, "normaliser", "projections"),
    }
    for vendor in k8s.vendor_ids():
        (trigger,) = scaled[f"dispatcher-{vendor}"]["spec"]["triggers"]
        assert trigger["type"] == "rabbitmq"
        assert trigger["metadata"]["queueName"] == queue_name(namespace, "dispatcher", vendor)
    for item in scaled.values():
        assert item["spec"]["minReplicaCount"] >= 1, "never scale a consumer to zero"
    (auth,) = by_kind(rendered, "TriggerAuthentication").values()
    assert auth["spec"]["secretTargetRef"] == [{"parameter": "host", "name": "skolsynk-connections", "key": "amqp-url"}]


def test_no_secret_values_only_references(rendered: list[dict[str, Any]]) -> None:
    assert by_kind(rendered, "Secret") == {}
    text = json.dumps(rendered)
    assert "amqp://" not in text
    assert "mongodb://" not in text
    for deployment in by_kind(rendered, "Deployment").values():
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            env = {e["name"]: e for e in container["env"]}
            for name in ("AMQP_URL", "MONGODB_URL"):
                assert "secretKeyRef" in env[name]["valueFrom"], f"{deployment['metadata']['name']}: {name}"
            assert not any("secretRef" in source for source in container.get("envFrom", []))


def test_every_skolsynk_variable_a_manifest_sets_is_a_real_setting(rendered: list[dict[str, Any]]) -> None:
    """A misspelt variable is silently ignored by the service: every SKOLSYNK_ name must be a field of a
    service's settings (vendor API keys, named by the catalogue, excepted)."""
    settings = {name for t in service_settings_types() for name in env_names(t)}
    vendor_keys = {
        str(((entry.get("scim") or {}).get("auth") or {}).get("api_key_env")) for entry in k8s.vendors().values()
    }
    names: set[str] = set()
    for configmap in by_kind(rendered, "ConfigMap").values():
        names |= {k for k in configmap.get("data", {}) if k.startswith("SKOLSYNK_")}
    for deployment in by_kind(rendered, "Deployment").values():
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            names |= {e["name"] for e in container["env"] if e["name"].startswith("SKOLSYNK_")}
    assert sorted(names - vendor_keys - settings) == []


def test_the_pulling_connectors_follow_the_registry_and_open_sealed_secrets_with_the_admin_s_key(
    rendered: list[dict[str, Any]],
) -> None:
    deployments = by_kind(rendered, "Deployment")
    for name in ("admin", "ss12000-puller", "google-connector", "graph-connector"):
        (container,) = deployments[name]["spec"]["template"]["spec"]["containers"]
        env = {e["name"]: e for e in container["env"]}
        assert env["SKOLSYNK_ADMIN_SECRETS_KEY"]["valueFrom"]["secretKeyRef"] == {
            "name": "skolsynk-sources-key",
            "key": "secrets-key",
            "optional": True,
        }, name
        assert not [n for n in env if n.endswith(("_SOURCES_FILE", "_TENANTS_FILE"))], name
        assert "sources" not in {m["name"] for m in container.get("volumeMounts", [])}, name
    (receiver,) = deployments["egil-receiver"]["spec"]["template"]["spec"]["containers"]
    assert "SKOLSYNK_EGIL_CLIENTS_FILE" not in {e["name"] for e in receiver["env"]}  # its clients: the registry
    assert "skolsynk-sources" not in by_kind(rendered, "ConfigMap")


def test_pods_are_locked_down(rendered: list[dict[str, Any]]) -> None:
    for name, deployment in by_kind(rendered, "Deployment").items():
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["automountServiceAccountToken"] is False, name
        for container in pod["containers"]:
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True, name
            assert security["allowPrivilegeEscalation"] is False, name
            assert security["capabilities"]["drop"] == ["ALL"], name
            assert container["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "health"}, name
            assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}, name
            assert {"name": "health", "containerPort": 8081, "protocol": "TCP"} in container["ports"], name
            assert {"name": "SKOLSYNK_HEALTH_PORT", "value": "8081"} in container["env"], name


def test_network_policies_deny_by_default(rendered: list[dict[str, Any]]) -> None:
    policies = by_kind(rendered, "NetworkPolicy")
    deny = policies["skolsynk-default-deny"]["spec"]
    assert deny["policyTypes"] == ["Ingress", "Egress"]
    assert "ingress" not in deny
    assert "egress" not in deny


def test_the_prometheus_rule_carries_the_alert_rules_file(rendered: list[dict[str, Any]]) -> None:
    (rule,) = by_kind(rendered, "PrometheusRule").values()
    groups = [
        g
        for p in sorted((ROOT / "deploy/prometheus/rules").glob("*.yml"))
        for g in yaml.safe_load(p.read_text())["groups"]
    ]
    assert rule["spec"]["groups"] == groups


def test_custom_resources_match_their_schemas(rendered: list[dict[str, Any]]) -> None:
    schemas = {
        "ScaledObject": "scaledobject.json",
        "TriggerAuthentication": "triggerauthentication.json",
        "ServiceMonitor": "servicemonitor.json",
        "PrometheusRule": "prometheusrule.json",
    }
    custom = [m for m in rendered if m["kind"] in schemas]
    assert {m["kind"] for m in custom} == set(schemas)
    for manifest in custom:
        schema = json.loads((SCHEMAS / schemas[manifest["kind"]]).read_text(encoding="utf-8"))
        jsonschema.validate(manifest, schema)


@pytest.mark.parametrize(
    ("kind", "mutate"),
    [
        ("ScaledObject", lambda m: m["spec"].update(minReplicaCont=1)),
        ("ScaledObject", lambda m: m["spec"]["triggers"][0]["metadata"].update(mode="Length")),
        ("ServiceMonitor", lambda m: m["spec"]["endpoints"][0].update(interval="30 seconds")),
        ("TriggerAuthentication", lambda m: m["spec"]["secretTargetRef"][0].pop("key")),
    ],
)
def test_the_schemas_refuse_a_mistake(kind: str, mutate: Any) -> None:
    schemas = {"ScaledObject": "scaledobject.json", "ServiceMonitor": "servicemonitor.json",
               "TriggerAuthentication": "triggerauthentication.json"}  # fmt: skip
    manifest = next(m for m in k8s.render(K8S / "base") if m["kind"] == kind)
    mutate(manifest)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(manifest, json.loads((SCHEMAS / schemas[kind]).read_text(encoding="utf-8")))


def test_builtin_kinds_match_the_kubernetes_schemas(rendered: list[dict[str, Any]]) -> None:
    """Strict validation against Kubernetes 1.30's OpenAPI schemas, which kubernetes-validate ships
    (offline). The custom resources are checked above against deploy/k8s/schemas."""
    kubernetes_validate = pytest.importorskip(
        "kubernetes_validate", reason="kubernetes-validate is not installed (pip install kubernetes-validate)"
    )
    builtin = [m for m in rendered if not re.match(r"^[a-z0-9-]+\.[a-z0-9.-]+/", m["apiVersion"]) or
               m["apiVersion"].startswith(("networking.k8s.io/", "policy/"))]  # fmt: skip
    assert builtin
    for manifest in builtin:
        kubernetes_validate.validate(manifest, "1.30.0", strict=True)


def test_the_renderer_builds_what_kubectl_kustomize_builds() -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: the offline renderer is compared with it where it is")
    for directory in KUSTOMIZATIONS:
        built = subprocess.run([kubectl, "kustomize", str(directory)], capture_output=True, text=True, check=False)
        assert built.returncode == 0, built.stderr
        theirs = [d for d in yaml.safe_load_all(built.stdout) if d]
        mine = k8s.render(directory)

        def key(m: dict[str, Any]) -> tuple[str, str, str]:
            return m["kind"], m["metadata"].get("namespace", ""), m["metadata"]["name"]

        assert sorted(map(key, mine)) == sorted(map(key, theirs)), directory
        expected = {key(m): m for m in theirs}
        for manifest in mine:
            assert manifest == expected[key(manifest)], f"{directory}: {key(manifest)} differs"


def test_the_renderer_refuses_what_it_does_not_implement(tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text("resources: []\ncommonLabels: {a: b}\n")
    with pytest.raises(k8s.RenderError, match="commonLabels"):
        k8s.render(tmp_path)
    (tmp_path / "kustomization.yaml").write_text(
        "resources: [cm.yaml]\npatches:\n  - target: {kind: ConfigMap}\n    patch: 'data: {a: b}'\n"
    )
    (tmp_path / "cm.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\ndata: {}\n")
    with pytest.raises(k8s.RenderError, match="JSON 6902"):
        k8s.render(tmp_path)
