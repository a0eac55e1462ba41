"""The fuzz tests' tally at the end of the session: inputs tried and responses >= 500 per fuzzed server
(``tests/fuzzing.py``); ``SKOLSYNK_FUZZ_REPORT`` also writes it as JSON."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.fuzzing import TALLY


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not TALLY.targets:
        return
    terminalreporter.write_sep("-", "fuzz")
    for line in TALLY.lines():
        terminalreporter.write_line(line)
    if report := os.environ.get("SKOLSYNK_FUZZ_REPORT"):
        TALLY.write(Path(report))
