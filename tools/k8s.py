#!/usr/bin/env python3
"""The Kubernetes manifests in deploy/k8s: render the Kustomize overlays offline, generate what is
derived from other files, and check it all.

    .venv/bin/python tools/k8s.py render deploy/k8s/overlays/prod   # print the rendered manifests
    .venv/bin/python tools/k8s.py generate                          # rewrite the derived files
    .venv/bin/python tools/k8s.py check                             # what `make check-deploy` runs

Derived files (``generate`` writes them, ``check`` fails when they are stale):

* ``base/dispatchers/dispatcher-<vendor>.yaml``: one per vendor in deploy/vendors (Deployment,
  PodDisruptionBudget and KEDA ScaledObject), from :func:`dispatcher_manifests`;
* ``base/prometheusrule.yaml``: the PrometheusRule with the groups of deploy/prometheus/rules/*.yml.

The renderer implements the part of Kustomize these manifests use, and nothing else (anything else is
an error, so it cannot silently diverge): ``resources`` (files and directories with a
kustomization.yaml), ``namespace``, ``images`` (newName, newTag, digest), ``replicas``, and
``patches`` holding JSON 6902 operations, targeted by kind, name and/or an equality labelSelector.
``tests/unit/test_k8s_manifests.py`` compares its output with ``kubectl kustomize`` when kubectl is
installed.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "k8s"
BASE = K8S / "base"
OVERLAYS = K8S / "overlays"
VENDORS = ROOT / "deploy" / "vendors"
RULES = ROOT / "deploy" / "prometheus" / "rules"

Manifest = dict[str, Any]

KUSTOMIZATION_FIELDS = {"apiVersion", "kind", "resources", "namespace", "images", "replicas", "patches"}
#: Kinds the namespace transformer leaves alone.
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition", "StorageClass",
                  "PriorityClass", "ClusterTriggerAuthentication"}  # fmt: skip
WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "ReplicaSet"}


class RenderError(Exception):
    pass


# ---------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------


def load_documents(path: Path) -> list[Manifest]:
    with path.open(encoding="utf-8") as handle:
        return [doc for doc in yaml.safe_load_all(handle) if doc is not None]


def render(directory: Path) -> list[Manifest]:
    """The manifests of the kustomization in ``directory``, as ``kubectl kustomize`` would build them."""
    kustomization_file = directory / "kustomization.yaml"
    if not kustomization_file.exists():
        raise RenderError(f"{directory} has no kustomization.yaml")
    (kustomization,) = load_documents(kustomization_file)
    unknown = set(kustomization) - KUSTOMIZATION_FIELDS
    if unknown:
        raise RenderError(f"{kustomization_file}: this renderer does not implement {sorted(unknown)}")
    manifests: list[Manifest] = []
    for resource in kustomization.get("resources") or []:
        path = (directory / resource).resolve()
        if path.is_dir():
            manifests += render(path)
        elif path.is_file():
            manifests += load_documents(path)
        else:
            raise RenderError(f"{kustomization_file}: resource {resource} does not exist")
    _check_unique(manifests, kustomization_file)
    for patch in kustomization.get("patches") or []:
        _apply_patch(manifests, patch, directory)
    for replica in kustomization.get("replicas") or []:
        targets = [m for m in manifests if m.get("kind") in WORKLOADS and m["metadata"]["name"] == replica["name"]]
        if not targets:
            raise RenderError(f"{kustomization_file}: replicas for {replica['name']}, which does not exist")
        for manifest in targets:
            manifest["spec"]["replicas"] = replica["count"]
    for image in kustomization.get("images") or []:
        for manifest in manifests:
            _set_image(manifest, image)
    namespace = kustomization.get("namespace")
    if namespace:
        for manifest in manifests:
            if manifest.get("kind") not in CLUSTER_SCOPED:
                manifest.setdefault("metadata", {})["namespace"] = namespace
    return manifests


def _key(manifest: Manifest) -> tuple[str, str, str]:
    return manifest.get("kind", "?"), manifest.get("metadata", {}).get("namespace", ""), manifest["metadata"]["name"]


def _check_unique(manifests: list[Manifest], where: Path) -> None:
    seen: set[tuple[str, str, str]] = set()
    for manifest in manifests:
        key = _key(manifest)
        if key in seen:
            raise RenderError(f"{where}: {key} appears twice")
        seen.add(key)


def _pod_specs(manifest: Manifest) -> list[dict[str, Any]]:
    spec = manifest.get("spec") or {}
    if manifest.get("kind") == "Pod":
        return [spec]
    template = (spec.get("template") or {}).get("spec")
    return [template] if template else []


def _set_image(manifest: Manifest, image: dict[str, Any]) -> None:
    for pod in _pod_specs(manifest):
        for container in [*(pod.get("containers") or []), *(pod.get("initContainers") or [])]:
            current = str(container.get("image", ""))
            name = current.split("@", 1)[0]
            name = name.rsplit(":", 1)[0] if ":" in name.rsplit("/", 1)[-1] else name
            if name != image["name"]:
                continue
            new = image.get("newName", name)
            if "digest" in image:
                container["image"] = f"{new}@{image['digest']}"
            elif "newTag" in image:
                container["image"] = f"{new}:{image['newTag']}"
            else:
                tag = current[len(name) :]
                container["image"] = f"{new}{tag}"


def _matches(manifest: Manifest, target: dict[str, Any]) -> bool:
    unknown = set(target) - {"kind", "name", "labelSelector", "group", "version"}
    if unknown:
        raise RenderError(f"patch target {target}: this renderer does not implement {sorted(unknown)}")
    if "kind" in target and manifest.get("kind") != target["kind"]:
        return False
    if "name" in target and manifest["metadata"]["name"] != target["name"]:
        return False
    if "labelSelector" in target:
        labels = manifest["metadata"].get("labels") or {}
        for requirement in str(target["labelSelector"]).split(","):
            key, separator, value = requirement.partition("=")
            if not separator or "!" in key:
                raise RenderError(f"labelSelector {target['labelSelector']!r}: only key=value is implemented")
            if labels.get(key.strip()) != value.strip():
                return False
    return True


def _apply_patch(manifests: list[Manifest], patch: dict[str, Any], directory: Path) -> None:
    if "path" in patch:
        operations = yaml.safe_load((directory / patch["path"]).read_text(encoding="utf-8"))
    else:
        operations = yaml.safe_load(patch["patch"])
    if not isinstance(operations, list):
        raise RenderError(f"{directory}: only JSON 6902 patches (a list of operations) are implemented")
    target = patch.get("target")
    if not target:
        raise RenderError(f"{directory}: a JSON 6902 patch needs a target")
    matched = [m for m in manifests if _matches(m, target)]
    if not matched:
        raise RenderError(f"{directory}: patch target {target} matches nothing")
    for manifest in matched:
        for operation in operations:
            _json_patch(manifest, operation)


def _pointer(path: str) -> list[str]:
    if not path.startswith("/"):
        raise RenderError(f"JSON pointer {path!r} must start with /")
    return [part.replace("~1", "/").replace("~0", "~") for part in path[1:].split("/")]


def _json_patch(document: Manifest, operation: dict[str, Any]) -> None:
    op = operation["op"]
    parts = _pointer(operation["path"])
    parent: Any = document
    for part in parts[:-1]:
        parent = parent[int(part)] if isinstance(parent, list) else parent[part]
    last = parts[-1]
    if op in ("add", "replace"):
        value = copy.deepcopy(operation["value"])
        if isinstance(parent, list):
            if last == "-":
                parent.append(value)
            elif op == "add":
                parent.insert(int(last), value)
            else:
                parent[int(last)] = value
        else:
            if op == "replace" and last not in parent:
                raise RenderError(f"replace {operation['path']}: no such field")
            parent[last] = value
    elif op == "remove":
        if isinstance(parent, list):
            del parent[int(last)]
        else:
            del parent[last]
    else:
        raise RenderError(f"JSON patch op {op!r} is not implemented")


# ---------------------------------------------------------------------------
# Derived files
# ---------------------------------------------------------------------------

HEADER = "# Generated by tools/k8s.py from {source}: edit that, then run `.venv/bin/python tools/k8s.py generate`.\n"


def vendors() -> dict[str, dict[str, Any]]:
    """The vendor catalogue as written (vendor id -> entry)."""
    entries = [yaml.safe_load(path.read_text(encoding="utf-8")) for path in VENDORS.glob("*.y*ml")]
    return {str(entry["vendor_id"]): entry for entry in sorted(entries, key=lambda e: str(e["vendor_id"]))}


def vendor_ids() -> list[str]:
    return list(vendors())


def _vendor_credentials(vendor_id: str, entry: dict[str, Any]) -> tuple[list[Any], list[Any], list[Any]]:
    """(env, volume mounts, volumes) for the credentials the catalogue names: the vendor's Secret
    ``skolsynk-vendor-<id>`` holds ``api-key`` and the certificate files under their file names."""
    auth = ((entry.get("scim") or {}).get("auth")) or {}
    secret = f"skolsynk-vendor-{vendor_id}"
    env: list[Any] = []
    if auth.get("api_key_env"):
        env.append({"name": auth["api_key_env"], "valueFrom": {"secretKeyRef": {"name": secret, "key": "api-key"}}})
    files = [str(auth[k]) for k in ("client_cert_file", "client_key_file", "ca_file") if auth.get(k)]
    if not files:
        return env, [], []
    directories = {str(Path(f).parent) for f in files}
    if len(directories) != 1:
        raise RenderError(f"vendor {vendor_id}: certificate files must share one directory, got {sorted(directories)}")
    mounts = [{"name": "vendor-credentials", "mountPath": directories.pop(), "readOnly": True}]
    items = [{"key": Path(f).name, "path": Path(f).name} for f in files]
    volumes = [{"name": "vendor-credentials", "secret": {"secretName": secret, "items": items, "defaultMode": 0o440}}]
    return env, mounts, volumes


#: The dispatcher that serves every vendor of the catalogue in the store (SKOLSYNK_VENDOR_ID unset): a vendor
#: an operator adds in the admin is delivered to by it, without a new Deployment.
SHARED_DISPATCHER = "dispatcher-shared"
#: The Secret whose keys organisers' own vendor credentials may name instead of sealed values (optional; each
#: key a file, updated in place by the kubelet, so a rotation needs no restart: docs/vendors.md).
PAIR_CREDENTIALS_SECRET = "skolsynk-pair-credentials"  # noqa: S105 (a Secret's name)
PAIR_CREDENTIALS_DIR = "/var/run/skolsynk/pair-credentials"


def dispatcher_manifests(vendor_id: str | None, entry: dict[str, Any] | None = None) -> list[Manifest]:
    """The Deployment, PodDisruptionBudget and KEDA ScaledObject of one vendor's dispatcher; for
    ``vendor_id=None`` the Deployment and budget of the shared one (every vendor; each has its own queue, so
    no single queue to scale it on: its replicas are set by hand)."""
    credentials_env, credentials_mounts, credentials_volumes = (
        _vendor_credentials(vendor_id, entry or {})
        if vendor_id is not None
        else (
            [{"name": "SKOLSYNK_VENDOR_SECRETS_DIR", "value": PAIR_CREDENTIALS_DIR}],
            [{"name": "pair-credentials", "mountPath": PAIR_CREDENTIALS_DIR, "readOnly": True}],
            [
                {
                    "name": "pair-credentials",
                    "secret": {"secretName": PAIR_CREDENTIALS_SECRET, "optional": True, "defaultMode": 0o440},
                }
            ],
        )
    )
    name = f"dispatcher-{vendor_id}" if vendor_id is not None else SHARED_DISPATCHER
    labels = {
        "app.kubernetes.io/name": name,
        "app.kubernetes.io/component": "dispatcher",
        "app.kubernetes.io/part-of": "skolsynk",
        **({"skolsynk/vendor": vendor_id} if vendor_id is not None else {}),
    }
    which = (
        [{"name": "SKOLSYNK_VENDOR_ID", "value": vendor_id}]
        if vendor_id is not None
        else [
            {
                "name": "SKOLSYNK_ADMIN_SECRETS_KEY",
                "valueFrom": {"secretKeyRef": {"name": "skolsynk-sources-key", "key": "secrets-key", "optional": True}},
            }
        ]
    )
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": 1,
            "revisionHistoryLimit": 5,
            "selector": {"matchLabels": {"app.kubernetes.io/name": name}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "terminationGracePeriodSeconds": 40,
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": 10001,
                        "runAsGroup": 10001,
                        # Mounted Secret files (vendor certificates) get this group, so the user can read them.
                        "fsGroup": 10001,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "topologySpreadConstraints": [
                        {
                            "maxSkew": 1,
                            "topologyKey": "kubernetes.io/hostname",
                            "whenUnsatisfiable": "ScheduleAnyway",
                            "labelSelector": {"matchLabels": {"app.kubernetes.io/name": name}},
                        }
                    ],
                    "containers": [
                        {
                            "name": "dispatcher",
                            "image": "skolsynk",
                            "imagePullPolicy": "IfNotPresent",
                            "args": ["skolsynk_services.dispatcher"],
                            "ports": [{"name": "health", "containerPort": 8081, "protocol": "TCP"}],
                            "envFrom": [{"configMapRef": {"name": "skolsynk-config"}}],
                            "env": [
                                {"name": "SKOLSYNK_HEALTH_PORT", "value": "8081"},
                                *which,
                                *credentials_env,
                                *_connection_env(),
                            ],
                            "livenessProbe": _probe("/livez", liveness=True),
                            "readinessProbe": _probe("/readyz", liveness=False),
                            "resources": {
                                "requests": {"cpu": "100m", "memory": "192Mi"},
                                "limits": {"cpu": "500m", "memory": "512Mi"},
                            },
                            "securityContext": _container_security(),
                            "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}, *credentials_mounts],  # noqa: S108
                        }
                    ],
                    "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}, *credentials_volumes],
                },
            },
        },
    }
    budget = {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": name, "labels": labels},
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"app.kubernetes.io/name": name}}},
    }
    scaled = {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "scaleTargetRef": {"name": name},
            # Never to zero: a work queue without a consumer is an alert, and readiness needs a pod.
            "minReplicaCount": 1,
            # The vendor's rate limit (catalogue rate_per_second) applies per replica.
            "maxReplicaCount": 3,
            "pollingInterval": 30,
            "cooldownPeriod": 300,
            "fallback": {"failureThreshold": 3, "replicas": 1},
            "triggers": [
                {
                    "type": "rabbitmq",
                    "metadata": {
                        "protocol": "amqp",
                        "mode": "QueueLength",
                        "value": "200",
                        "queueName": f"skolsynk.dispatcher.{vendor_id}",
                    },
                    "authenticationRef": {"name": "skolsynk-rabbitmq"},
                }
            ],
        },
    }
    return [deployment, budget] if vendor_id is None else [deployment, budget, scaled]


def _connection_env() -> list[dict[str, Any]]:
    return [
        {"name": "AMQP_URL", "valueFrom": {"secretKeyRef": {"name": "skolsynk-connections", "key": "amqp-url"}}},
        {"name": "MONGODB_URL", "valueFrom": {"secretKeyRef": {"name": "skolsynk-connections", "key": "mongodb-url"}}},
    ]


def _probe(path: str, *, liveness: bool) -> dict[str, Any]:
    probe: dict[str, Any] = {"httpGet": {"path": path, "port": "health"}}
    if liveness:
        probe |= {"initialDelaySeconds": 10, "periodSeconds": 10, "timeoutSeconds": 3, "failureThreshold": 3}
    else:
        probe |= {"periodSeconds": 5, "timeoutSeconds": 3, "failureThreshold": 2}
    return probe


def _container_security() -> dict[str, Any]:
    return {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}}


def prometheus_rule() -> Manifest:
    groups: list[Any] = []
    for path in sorted(RULES.glob("*.yml")):
        groups += yaml.safe_load(path.read_text(encoding="utf-8"))["groups"]
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": "skolsynk",
            "labels": {"app.kubernetes.io/part-of": "skolsynk", "app.kubernetes.io/component": "monitoring"},
        },
        "spec": {"groups": groups},
    }


class _Dumper(yaml.SafeDumper):
    """Writes shared objects out in full: no ``&id001`` anchors in manifests people read."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def dump(documents: Iterable[Manifest], *, header: str = "") -> str:
    return header + "---\n".join(
        yaml.dump(doc, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=120) for doc in documents
    )


def derived_files() -> dict[Path, str]:
    files = {
        BASE / "dispatchers" / f"dispatcher-{vendor}.yaml": dump(
            dispatcher_manifests(vendor, entry), header=HEADER.format(source=f"deploy/vendors ({vendor})")
        )
        for vendor, entry in vendors().items()
    }
    files[BASE / "dispatchers" / f"{SHARED_DISPATCHER}.yaml"] = dump(
        dispatcher_manifests(None), header=HEADER.format(source="tools/k8s.py (the shared dispatcher)")
    )
    names = [f"dispatcher-{vendor}.yaml" for vendor in vendor_ids()] + [f"{SHARED_DISPATCHER}.yaml"]
    files[BASE / "dispatchers" / "kustomization.yaml"] = dump(
        [{"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization", "resources": names}],
        header=HEADER.format(source="deploy/vendors")
        + "# One dispatcher per vendor of the catalogue files, and one for every vendor in the store.\n",
    )
    files[BASE / "prometheusrule.yaml"] = dump(
        [prometheus_rule()], header=HEADER.format(source="deploy/prometheus/rules/*.yml")
    )
    return files


# ---------------------------------------------------------------------------
# Checks
# ---------------------------------------------------------------------------


def overlays() -> list[Path]:
    return sorted(p.parent for p in OVERLAYS.glob("*/kustomization.yaml"))


def check_rendered(manifests: list[Manifest], where: str) -> list[str]:
    """Cross-references the API server would not catch: what points at what must exist."""
    problems: list[str] = []
    by_kind: dict[str, dict[str, Manifest]] = {}
    for manifest in manifests:
        by_kind.setdefault(manifest["kind"], {})[manifest["metadata"]["name"]] = manifest
    deployments = by_kind.get("Deployment", {})
    configmaps = by_kind.get("ConfigMap", {})
    for name, deployment in deployments.items():
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        if deployment["spec"]["selector"]["matchLabels"].items() - labels.items():
            problems.append(f"{where}: Deployment {name}: selector does not match its pod labels")
        pod = deployment["spec"]["template"]["spec"]
        for container in pod["containers"]:
            for probe in ("livenessProbe", "readinessProbe"):
                if probe not in container:
                    problems.append(f"{where}: Deployment {name}: no {probe}")
            if "resources" not in container or "limits" not in container["resources"]:
                problems.append(f"{where}: Deployment {name}: no resource requests and limits")
            for source in container.get("envFrom") or []:
                ref = (source.get("configMapRef") or {}).get("name")
                if ref and ref not in configmaps:
                    problems.append(f"{where}: Deployment {name}: envFrom ConfigMap {ref} does not exist")
        for volume in pod.get("volumes") or []:
            ref = (volume.get("configMap") or {}).get("name")
            if ref and ref not in configmaps:
                problems.append(f"{where}: Deployment {name}: volume ConfigMap {ref} does not exist")
        if not any(
            pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
            for pdb in by_kind.get("PodDisruptionBudget", {}).values()
        ):
            problems.append(f"{where}: Deployment {name} has no PodDisruptionBudget")
    for name, scaled in by_kind.get("ScaledObject", {}).items():
        target = scaled["spec"]["scaleTargetRef"]["name"]
        if target not in deployments:
            problems.append(f"{where}: ScaledObject {name} scales {target}, which does not exist")
        for trigger in scaled["spec"]["triggers"]:
            auth = trigger.get("authenticationRef", {}).get("name")
            if auth not in by_kind.get("TriggerAuthentication", {}):
                problems.append(f"{where}: ScaledObject {name}: TriggerAuthentication {auth} does not exist")
    for name, service in by_kind.get("Service", {}).items():
        selector = service["spec"].get("selector") or {}
        if not any(
            selector.items() <= d["spec"]["template"]["metadata"]["labels"].items() for d in deployments.values()
        ):
            problems.append(f"{where}: Service {name} selects no pod")
    for name, monitor in by_kind.get("ServiceMonitor", {}).items():
        wanted = monitor["spec"]["selector"].get("matchLabels", {})
        ports = {e["port"] for e in monitor["spec"]["endpoints"]}
        if monitor["spec"].get("namespaceSelector", {}).get("any"):
            continue  # selects outside this installation (the broker)
        services = [s for s in by_kind.get("Service", {}).values() if wanted.items() <= s["metadata"]["labels"].items()]
        if not services:
            problems.append(f"{where}: ServiceMonitor {name} selects no Service")
        for service in services:
            if not ports <= {p["name"] for p in service["spec"]["ports"]}:
                problems.append(f"{where}: ServiceMonitor {name}: Service {service['metadata']['name']} lacks {ports}")
    return problems


def kubernetes_validate(manifests: list[Manifest], version: str = "1.30.0") -> list[str]:
    """Schema validation of the built-in kinds with kubernetes-validate (offline: it ships the schemas),
    when it is installed. Custom resources (KEDA, Prometheus Operator) are validated by
    tests/unit/test_k8s_manifests.py against the schemas in deploy/k8s/schemas."""
    try:
        import kubernetes_validate  # type: ignore[import-not-found]
    except ImportError:
        return []
    problems = []
    for manifest in manifests:
        if "." in manifest["apiVersion"].split("/")[0] and not manifest["apiVersion"].startswith(
            ("apps/", "policy/", "networking.k8s.io/", "autoscaling/", "batch/")
        ):
            continue
        try:
            kubernetes_validate.validate(manifest, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            problems.append(f"{manifest['kind']} {manifest['metadata']['name']}: {error.message}")
    return problems


def check() -> int:
    problems: list[str] = []
    for path, text in derived_files().items():
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            problems.append(f"{path.relative_to(ROOT)} is stale: run .venv/bin/python tools/k8s.py generate")
    rendered = 0
    for directory in [BASE, *overlays()]:
        where = str(directory.relative_to(ROOT))
        try:
            manifests = render(directory)
        except (RenderError, OSError, yaml.YAMLError) as error:
            problems.append(f"{where}: {error}")
            continue
        rendered += len(manifests)
        problems += check_rendered(manifests, where)
        problems += [f"{where}: {p}" for p in kubernetes_validate(manifests)]
    for problem in problems:
        print(f"ERROR {problem}", file=sys.stderr)
    if problems:
        return 1
    print(f"deploy/k8s: base and {len(overlays())} overlays render ({rendered} manifests) and check out")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    commands = parser.add_subparsers(dest="command", required=True)
    show = commands.add_parser("render", help="print the rendered manifests of a kustomization")
    show.add_argument("directory", type=Path)
    show.add_argument("--json", action="store_true")
    commands.add_parser("generate", help="rewrite the derived files")
    commands.add_parser("check", help="derived files current, overlays render, references resolve")
    args = parser.parse_args(argv)
    if args.command == "render":
        manifests = render(args.directory.resolve())
        sys.stdout.write(json.dumps(manifests, indent=2) + "\n" if args.json else dump(manifests))
        return 0
    if args.command == "generate":
        for path, text in derived_files().items():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path.relative_to(ROOT)}")
        return 0
    return check()


if __name__ == "__main__":
    sys.exit(main())
