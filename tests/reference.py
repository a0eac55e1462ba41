"""Where the tests' data lives.

* ``tests/fixtures``: committed test data (the EGIL client's captured requests, federation metadata, the
  SS 12000 2.1 examples); always there.
* The reference directory: files the project must not commit (the SS 12000 OpenAPI, SIS's copyright).
  ``SKOLSYNK_REFERENCE_DIR`` names it (a relative path counts from the repository root); the default is
  ``../shared/ref`` next to the repository. A test that needs a missing reference file skips, or fails
  when ``CI`` is set, so a missing file never turns CI green by skipping.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NoReturn

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
FIXTURES = REPO_ROOT / "tests" / "fixtures"

#: One folder per capture step, each with the ``requests.jsonl`` of that step.
EGIL_CAPTURES = FIXTURES / "egil"
EGIL_METADATA = EGIL_CAPTURES / "metadata.json"
SS12000_EXAMPLES = FIXTURES / "ss12000" / "examples-2.1.json"

#: The SS 12000:2020 OpenAPI 2.1.0, relative to the reference directory.
SS12000_OPENAPI = "ss12000/openapi_ss12000_version2_1_0.yaml"


def egil_capture(step: str) -> Path:
    """The ``requests.jsonl`` of one capture step (``01-initial-sync`` ...)."""
    return EGIL_CAPTURES / step / "requests.jsonl"


def reference_dir() -> Path:
    configured = os.environ.get("SKOLSYNK_REFERENCE_DIR")
    path = Path(configured) if configured else Path("..") / "shared" / "ref"
    return path if path.is_absolute() else (REPO_ROOT / path).resolve()


def reference_missing(reason: str) -> NoReturn:
    """Skip on a developer's machine; fail where ``CI`` is set."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set: reference files must be present)")
    pytest.skip(reason)


def reference_file(relative: str) -> Path:
    """A file of the reference directory, or skip (fail under ``CI``) when it is not there."""
    path = reference_dir() / relative
    if not path.is_file():
        reference_missing(f"reference file not available: {path} (set SKOLSYNK_REFERENCE_DIR)")
    return path
