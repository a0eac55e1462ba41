"""The documents that list codes and rules name every one the code has."""

from __future__ import annotations

from pathlib import Path

import pytest

from skolsynk.domain.quality import CATALOGUE, FindingCode

pytestmark = pytest.mark.unit

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_every_finding_code_is_documented_with_its_severity() -> None:
    text = (DOCS / "data-quality.md").read_text()
    for code in FindingCode:
        severity, _ = CATALOGUE[code]
        assert f"| `{code.value}` | {severity.value} |" in text, f"docs/data-quality.md lacks {code.value}"
