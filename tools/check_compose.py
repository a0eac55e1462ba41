#!/usr/bin/env python3
"""Check docker-compose.yml and deploy/ without a Docker engine or a cluster.

Usage (from anywhere):

    .venv/bin/python tools/check_compose.py [--root DIR] [--no-docker]

What it checks:

docker-compose.yml
  - it parses (anchors, aliases and ``<<`` merges resolved; duplicate keys rejected)
    and is a mapping with a ``services`` mapping;
  - every service has ``image`` or ``build``;
  - every ``depends_on`` target is a service;
  - ``environment`` values are strings (YAML 1.1 turns unquoted 8081 / true / 22:22
    into numbers and booleans);
  - every service that runs the skolsynk image (command normaliser, dispatcher, gdpr
    or admin) gets AMQP_URL and MONGODB_URL, and a dispatcher gets SKOLSYNK_VENDOR_ID;
  - the MongoDB service runs with ``--replSet``;
  - ``ports`` entries are quoted "HOST:CONTAINER" strings;
  - every bind-mounted path inside the repository (./deploy/...) exists;
  - every named volume a service uses is declared under top-level ``volumes``;
  - deploy/prometheus/prometheus.yml scrapes :8081 of every skolsynk service;
  - if ``docker compose version`` works, ``docker compose config -q`` passes too.

deploy/
  - every *.yml / *.yaml file parses (multi-document);
  - deploy/k8s/base: every file named in kustomization.yaml exists and every manifest
    is named there; every Deployment sets terminationGracePeriodSeconds: 40, and every
    container has a liveness and a readiness probe whose port is a declared port.

Exit status 0 and "docker-compose.yml OK" when all is well; otherwise 1, with one
line per problem.
"""

from __future__ import annotations

import argparse
import re
import shlex
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

# Modules of the skolsynk image (ENTRYPOINT ["python", "-m"]): a compose service whose
# command starts with one of these runs our code.
SKOLSYNK_COMMANDS = frozenset(
    {
        "skolsynk_services.normaliser",
        "skolsynk_services.dispatcher",
        "skolsynk_services.gdpr",
        "skolsynk_services.admin",
        "skolsynk_services.egil_receiver",
        "skolsynk_services.ss12000_puller",
        "skolsynk_services.graph_connector",
        "skolsynk_services.google_connector",
    }
)
REQUIRED_ENV = ("AMQP_URL", "MONGODB_URL")
HEALTH_PORT = 8081
TERMINATION_GRACE_SECONDS = 40

# "8080:8080", "127.0.0.1:8080:8080", "8000-8010:8000-8010", "5353:53/udp".
PORT_RE = re.compile(
    r"^(?:(?P<ip>\d{1,3}(?:\.\d{1,3}){3}|\[[0-9a-fA-F:]+\]):)?"
    r"(?P<host>\d+(?:-\d+)?):(?P<container>\d+(?:-\d+)?)(?:/(?:tcp|udp|sctp))?$"
)


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that rejects a key given twice in one mapping (Compose does too).

    Keys brought in by a ``<<`` merge may be overridden; that is what merges are for.
    The check runs in flatten_mapping, before the merge rewrites the node.
    """

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._checked: set[int] = set()

    def flatten_mapping(self, node: yaml.MappingNode) -> None:
        if id(node) not in self._checked:
            self._checked.add(id(node))
            seen: set[str] = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(key_node, yaml.ScalarNode):
                    continue
                if key_node.value in seen:
                    raise yaml.constructor.ConstructorError(
                        "while constructing a mapping",
                        node.start_mark,
                        f"found duplicate key {key_node.value!r}",
                        key_node.start_mark,
                    )
                seen.add(key_node.value)
        super().flatten_mapping(node)


def load_all(path: Path) -> list[Any]:
    with path.open(encoding="utf-8") as stream:
        return list(yaml.load_all(stream, Loader=_StrictLoader))  # a SafeLoader subclass


class Report:
    def __init__(self) -> None:
        self.errors: list[str] = []

    def error(self, where: str, message: str) -> None:
        self.errors.append(f"{where}: {message}")


# ---------------------------------------------------------------------------
# docker-compose.yml
# ---------------------------------------------------------------------------


def _command_words(command: Any) -> list[str]:
    if isinstance(command, str):
        return shlex.split(command)
    if isinstance(command, list):
        return [str(word) for word in command]
    return []


def _environment(service: dict[str, Any], where: str, report: Report) -> dict[str, Any]:
    env = service.get("environment")
    if env is None:
        return {}
    if isinstance(env, dict):
        for key, value in env.items():
            if not isinstance(value, str):
                report.error(
                    where,
                    f"environment {key} must be a quoted string, got {type(value).__name__} {value!r}",
                )
        return env
    if isinstance(env, list):
        result: dict[str, Any] = {}
        for item in env:
            if not isinstance(item, str):
                report.error(where, f"environment entry {item!r} must be a 'KEY=value' string")
                continue
            key, _, value = item.partition("=")
            result[key] = value
        return result
    report.error(where, "environment must be a mapping or a list of 'KEY=value' strings")
    return {}


def _depends_on_targets(depends_on: Any) -> Iterable[str]:
    if isinstance(depends_on, dict):
        return [str(name) for name in depends_on]
    if isinstance(depends_on, list):
        return [str(name) for name in depends_on]
    return []


def _mounts(volumes: Any) -> Iterable[tuple[str, str]]:
    """Yield (type, source) for each entry of a service's volumes list."""
    if not isinstance(volumes, list):
        return
    for entry in volumes:
        if isinstance(entry, str):
            source = entry.split(":", 1)[0] if ":" in entry else ""
            if not source:
                continue  # anonymous volume, e.g. "/data"
            kind = "bind" if source.startswith((".", "/", "~")) else "volume"
            yield kind, source
        elif isinstance(entry, dict):
            kind = str(entry.get("type", "volume"))
            long_source = entry.get("source")
            if long_source:
                yield kind, str(long_source)


def _prometheus_targets(path: Path, report: Report) -> set[str] | None:
    try:
        docs = load_all(path)
    except (OSError, yaml.YAMLError):
        return None  # reported by check_deploy_yaml
    targets: set[str] = set()
    for doc in docs:
        if not isinstance(doc, dict):
            continue
        for job in doc.get("scrape_configs") or []:
            for static in (job or {}).get("static_configs") or []:
                targets.update(str(t) for t in (static or {}).get("targets") or [])
    if not targets:
        report.error(str(path), "no static scrape targets found")
    return targets


def check_compose(root: Path, compose_file: Path, report: Report) -> None:
    where = compose_file.name
    try:
        docs = load_all(compose_file)
    except OSError as exc:
        report.error(where, f"cannot read: {exc}")
        return
    except yaml.YAMLError as exc:
        report.error(where, f"invalid YAML: {exc}")
        return
    if len(docs) != 1:
        report.error(where, f"expected one YAML document, found {len(docs)}")
        return
    doc = docs[0]
    if not isinstance(doc, dict):
        report.error(where, "top level must be a mapping")
        return
    services = doc.get("services")
    if not isinstance(services, dict) or not services:
        report.error(where, "top-level 'services' must be a non-empty mapping")
        return

    declared_volumes = doc.get("volumes") or {}
    if not isinstance(declared_volumes, dict):
        report.error(where, "top-level 'volumes' must be a mapping")
        declared_volumes = {}

    ours: list[str] = []
    mongo_services: list[str] = []
    for name, service in services.items():
        at = f"{where}: services.{name}"
        if not isinstance(service, dict):
            report.error(at, "must be a mapping")
            continue

        if not service.get("image") and not service.get("build"):
            report.error(at, "needs 'image' or 'build'")

        for target in _depends_on_targets(service.get("depends_on")):
            if target not in services:
                report.error(at, f"depends_on '{target}', which is not a service")

        env = _environment(service, at, report)

        words = _command_words(service.get("command"))
        if words and words[0] in SKOLSYNK_COMMANDS:
            ours.append(name)
            for key in REQUIRED_ENV:
                if not env.get(key):
                    report.error(at, f"runs the skolsynk image but has no {key}")
            if words[0] == "dispatcher" and not env.get("SKOLSYNK_VENDOR_ID"):
                report.error(at, "a dispatcher needs SKOLSYNK_VENDOR_ID")

        image = str(service.get("image", ""))
        if name == "mongodb" or re.match(r"^(?:docker\.io/)?(?:library/)?mongo(?::|@|$)", image):
            mongo_services.append(name)
            if "--replSet" not in words:
                report.error(at, "MongoDB must run with --replSet (the services need a replica set)")

        ports = service.get("ports") or []
        if not isinstance(ports, list):
            report.error(at, "ports must be a list")
            ports = []
        for port in ports:
            if isinstance(port, dict):
                continue  # long syntax: typed fields, nothing to misparse
            if not isinstance(port, str):
                # YAML 1.1 reads an unquoted 22:22 as the base-60 number 1342.
                report.error(
                    at,
                    f'port {port!r} must be a quoted "HOST:CONTAINER" string (got {type(port).__name__};'
                    " unquoted N:M with M < 60 is a base-60 number in YAML 1.1)",
                )
            elif not PORT_RE.match(port):
                report.error(at, f'port {port!r} is not of the form "HOST:CONTAINER"')

        for kind, source in _mounts(service.get("volumes")):
            if kind == "bind":
                if source.startswith("."):
                    path = (root / source).resolve()
                    if not path.exists():
                        report.error(at, f"bind mount source {source} does not exist")
            elif kind == "volume" and source not in declared_volumes:
                report.error(at, f"volume '{source}' is not declared under top-level 'volumes'")

    if not ours:
        report.error(where, "no service runs the skolsynk image (command normaliser/dispatcher/gdpr/admin)")
    if not mongo_services:
        report.error(where, "no MongoDB service found")

    prometheus = root / "deploy" / "prometheus" / "prometheus.yml"
    if prometheus.exists():
        targets = _prometheus_targets(prometheus, report)
        if targets is not None:
            for name in ours:
                if f"{name}:{HEALTH_PORT}" not in targets:
                    report.error(str(prometheus.relative_to(root)), f"no scrape target {name}:{HEALTH_PORT}")


def docker_compose_config(root: Path, compose_file: Path, report: Report) -> str:
    """Run `docker compose config -q` when a compose plugin is there; return a status line."""
    try:
        version = subprocess.run(
            ["docker", "compose", "version"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return "docker compose: not available, skipped `docker compose config`"
    if version.returncode != 0:
        return "docker compose: not available, skipped `docker compose config`"
    result = subprocess.run(
        ["docker", "compose", "-f", str(compose_file), "config", "-q"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip()
        report.error(compose_file.name, f"`docker compose config -q` failed: {detail}")
    return f"docker compose: `config -q` run ({version.stdout.strip()})"


# ---------------------------------------------------------------------------
# deploy/
# ---------------------------------------------------------------------------


def check_deploy_yaml(root: Path, report: Report) -> int:
    deploy = root / "deploy"
    count = 0
    for path in sorted([*deploy.rglob("*.yaml"), *deploy.rglob("*.yml")]):
        count += 1
        try:
            load_all(path)
        except yaml.YAMLError as exc:
            report.error(str(path.relative_to(root)), f"invalid YAML: {exc}")
    return count


def _check_deployment(doc: dict[str, Any], where: str, report: Report) -> None:
    name = (doc.get("metadata") or {}).get("name", "?")
    at = f"{where}: Deployment {name}"
    pod = ((doc.get("spec") or {}).get("template") or {}).get("spec") or {}
    grace = pod.get("terminationGracePeriodSeconds")
    if grace is None:
        report.error(at, "spec.template.spec.terminationGracePeriodSeconds is missing")
    elif grace != TERMINATION_GRACE_SECONDS:
        report.error(at, f"terminationGracePeriodSeconds is {grace!r}, expected {TERMINATION_GRACE_SECONDS}")
    containers = pod.get("containers") or []
    if not containers:
        report.error(at, "has no containers")
    for container in containers:
        cname = container.get("name", "?")
        ports = container.get("ports") or []
        port_names = {p.get("name") for p in ports if isinstance(p, dict)}
        port_numbers = {p.get("containerPort") for p in ports if isinstance(p, dict)}
        for probe_key in ("livenessProbe", "readinessProbe"):
            probe = container.get(probe_key)
            if not isinstance(probe, dict):
                report.error(at, f"container {cname} has no {probe_key}")
                continue
            http = probe.get("httpGet")
            if isinstance(http, dict):
                port = http.get("port")
                if port not in port_names and port not in port_numbers:
                    report.error(at, f"container {cname} {probe_key} uses port {port!r}, not a declared port")


def check_k8s_base(root: Path, report: Report) -> int:
    base = root / "deploy" / "k8s" / "base"
    rel = str(base.relative_to(root))
    if not base.is_dir():
        report.error(rel, "missing")
        return 0

    kustomization = base / "kustomization.yaml"
    listed: set[str] = set()
    try:
        kdocs = load_all(kustomization)
    except OSError:
        report.error(rel, "kustomization.yaml is missing")
        kdocs = []
    except yaml.YAMLError:
        kdocs = []  # reported by check_deploy_yaml
    for kdoc in kdocs:
        if isinstance(kdoc, dict):
            listed.update(str(r) for r in kdoc.get("resources") or [])
    for resource in sorted(listed):
        if not (base / resource).exists():
            report.error(f"{rel}/kustomization.yaml", f"resource {resource} does not exist")

    deployments = 0
    for path in sorted(base.glob("*.y*ml")):
        if path.name == "kustomization.yaml":
            continue
        where = f"{rel}/{path.name}"
        if kdocs and path.name not in listed:
            report.error(where, "not listed in kustomization.yaml resources")
        try:
            docs = load_all(path)
        except yaml.YAMLError:
            continue  # reported by check_deploy_yaml
        for doc in docs:
            if isinstance(doc, dict) and doc.get("kind") == "Deployment":
                deployments += 1
                _check_deployment(doc, where, report)
    if deployments == 0:
        report.error(rel, "no Deployment found")
    return deployments


# ---------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parent.parent, help="repository root")
    parser.add_argument("--file", default="docker-compose.yml", help="compose file, relative to --root")
    parser.add_argument("--no-docker", action="store_true", help="never run `docker compose config`")
    args = parser.parse_args(argv)

    root: Path = args.root.resolve()
    compose_file = root / args.file
    report = Report()

    check_compose(root, compose_file, report)
    yaml_files = check_deploy_yaml(root, report)
    deployments = check_k8s_base(root, report)
    docker_status = "docker compose: skipped (--no-docker)"
    if not args.no_docker and not report.errors:
        docker_status = docker_compose_config(root, compose_file, report)

    if report.errors:
        for line in report.errors:
            print(f"ERROR {line}", file=sys.stderr)
        print(f"{len(report.errors)} problem(s) found", file=sys.stderr)
        return 1
    print(f"deploy/: {yaml_files} YAML files parse; {deployments} Deployments in deploy/k8s/base checked")
    print(docker_status)
    print(f"{compose_file.name} OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
