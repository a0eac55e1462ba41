"""The documents that list codes and rules name every one the code has."""

from __future__ import annotations

from pathlib import Path

import pytest

from skolsynk.domain.quality import CATALOGUE, FindingCode
from skolsynk_services.egil_receiver.access import Refusal

pytestmark = pytest.mark.unit

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_every_finding_code_is_documented_with_its_severity() -> None:
    text = (DOCS / "data-quality.md").read_text()
    for code in FindingCode:
        severity, _ = CATALOGUE[code]
        assert f"| `{code.value}` | {severity.value} |" in text, f"docs/data-quality.md lacks {code.value}"


def test_every_egil_refusal_reason_is_documented_with_what_to_do() -> None:
    receiver, metrics = (DOCS / "egil-receiver.md").read_text(), (DOCS / "metrics.md").read_text()
    for reason in Refusal:
        assert f"| `{reason.value}` |" in receiver, f"docs/egil-receiver.md lacks {reason.value}"
        assert f"`{reason.value}`" in metrics, f"docs/metrics.md lacks {reason.value}"
