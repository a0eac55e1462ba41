"""The one container image: multi-stage, non-root, every service's module inside, and every file it
copies inside the build context (.dockerignore), checked without a Docker engine."""

from __future__ import annotations

import fnmatch
import re
import shlex
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "Dockerfile").read_text(encoding="utf-8")


def ignore_patterns() -> list[tuple[bool, str]]:
    """(exclude?, pattern) in order, as Docker reads .dockerignore."""
    patterns = []
    for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        patterns.append((not negated, line.lstrip("!").strip("/")))
    return patterns


def excluded(path: str) -> bool:
    """Docker's rule: the last pattern that matches the path (or one of its parent directories) wins."""
    parts = path.strip("/").split("/")
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    result = False
    for exclude, pattern in ignore_patterns():
        if any(fnmatch.fnmatchcase(candidate, pattern) for candidate in candidates):
            result = exclude
    return result


def copied_sources() -> list[str]:
    sources = []
    for line in DOCKERFILE.splitlines():
        words = shlex.split(line) if line.startswith("COPY ") else []
        if words and not any(w.startswith("--from=") for w in words):
            sources += [w for w in words[1:-1] if not w.startswith("--")]
    return sources


def test_the_exclusion_rules_are_docker_s() -> None:
    assert excluded("tests/unit/test_x.py")
    assert excluded("deploy/k8s/base/kustomization.yaml")
    assert not excluded("deploy/vendors/ne.yaml")
    assert not excluded("libs/skolsynk/cli/__init__.py")


def test_everything_the_dockerfile_copies_is_in_the_build_context() -> None:
    sources = copied_sources()
    assert {"requirements.lock", "libs", "services", "deploy/vendors"} <= set(sources)
    for source in sources:
        assert (ROOT / source).exists(), f"COPY {source}: no such file"
        assert not excluded(source), f"COPY {source}: .dockerignore leaves it out of the build context"


def test_multi_stage_slim_non_root_one_entrypoint() -> None:
    stages = re.findall(r"^FROM (\S+) AS ([\w-]+)$", DOCKERFILE, flags=re.MULTILINE)
    assert [name for _, name in stages] == ["builder", "demo-builder", "base", "demo", "runtime"]
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.\d+-slim$", DOCKERFILE, flags=re.MULTILINE)
    user = re.findall(r"^USER (\S+)$", DOCKERFILE, flags=re.MULTILINE)
    assert user == ["${APP_UID}:${APP_GID}"]
    assert re.search(r"^ARG APP_UID=10001$", DOCKERFILE, flags=re.MULTILINE), "the manifests run as uid 10001"
    assert 'ENTRYPOINT ["python", "-m"]' in DOCKERFILE
    for final in ("base", "demo", "runtime"):
        stage = stage_text(final)
        assert "pip install" not in stage, f"the {final} stage gets the built venv, it installs nothing"
    assert "--no-deps" in DOCKERFILE, "the project is installed on top of the lock, never with unpinned ranges"


def stage_text(name: str) -> str:
    """The lines of one stage of the Dockerfile, from its FROM to the next FROM."""
    stage = re.search(rf"^FROM \S+ AS {re.escape(name)}$(.*?)(?=^FROM |\Z)", DOCKERFILE, flags=re.M | re.S)
    assert stage, f"no stage {name}"
    return stage.group(1)


def test_the_production_image_holds_no_test_kit() -> None:
    """The default target (the last stage) is the production image: its venv comes from the builder,
    which never sees testing/; only the demo target adds the test kit (fakes, synthetic organisers)."""
    assert DOCKERFILE.rstrip().rsplit("\nFROM ", 1)[1].startswith("base AS runtime")
    assert "COPY --from=builder /opt/venv /opt/venv" in stage_text("runtime")
    assert "testing" not in stage_text("builder")
    assert "testing" not in stage_text("base") + stage_text("runtime")
    assert "COPY --from=demo-builder /opt/venv /opt/venv" in stage_text("demo")
    assert "COPY testing ./testing" in stage_text("demo-builder")


def test_every_service_is_a_module_the_image_can_run() -> None:
    modules = {p.parent.name for p in (ROOT / "services" / "skolsynk_services").glob("*/__main__.py")}
    assert {"normaliser", "dispatcher", "gdpr", "admin", "egil_receiver", "ss12000_puller"} <= modules
    assert "services" in copied_sources()
    assert (ROOT / "libs" / "skolsynk" / "cli" / "__main__.py").exists(), "python -m skolsynk.cli"
