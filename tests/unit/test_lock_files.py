"""The pinned dependencies carry their hashes (issue 19): pip installs them in hash-checking mode, so a
package replaced on the index (or a mirror) after it was locked is refused instead of installed."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", ["requirements.lock", "requirements-dev.lock"])
def test_every_pinned_requirement_has_a_hash(name: str) -> None:
    text = (ROOT / name).read_text(encoding="utf-8")
    # A requirement starts a line ("name==version \"), its hashes follow on continuation lines.
    entries = re.split(r"\n(?=[A-Za-z0-9])", text)
    pinned = [e for e in entries if re.match(r"^[A-Za-z0-9][A-Za-z0-9._-]*(\[[^\]]*\])?==", e)]
    assert len(pinned) > 20, f"{name}: too few requirements found to be a lock file"
    unhashed = [e.split()[0] for e in pinned if "--hash=sha256:" not in e]
    assert unhashed == [], f"{name}: re-lock with `make lock` (uv pip compile --generate-hashes)"
    assert "--generate-hashes" in text.splitlines()[1]  # the command that made it, as make lock runs it
