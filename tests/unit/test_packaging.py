"""The product's wheel: the shared libraries and the services, without the test kit.

Built for real (setuptools from the dev lock, no network) from a copy of the sources, so two runs on one
machine never share a build directory."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel_names(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, source / name)
    for name in ("libs", "services", "testing"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--wheel-dir",
            str(out),
            str(source),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = out.glob("skolsynk-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        return archive.namelist()


def test_the_wheel_holds_the_libraries_and_every_service(wheel_names: list[str]) -> None:
    services = {p.parent.name for p in (ROOT / "services" / "skolsynk_services").glob("*/__main__.py")}
    assert len(services) >= 8
    for service in services:
        assert f"skolsynk_services/{service}/__main__.py" in wheel_names
    assert "skolsynk/cli/__main__.py" in wheel_names
    assert "skolsynk_services/admin/templates/base.html" in wheel_names, "the admin's templates ship"


def test_the_wheel_holds_no_test_kit(wheel_names: list[str]) -> None:
    top_level = {name.split("/", 1)[0] for name in wheel_names if not name.startswith("skolsynk-")}
    assert top_level == {"skolsynk", "skolsynk_services"}
    assert not [name for name in wheel_names if "fake" in name or "synthetic" in name or "devstack" in name]
