"""Plain-text tables and a progress line for the operator command line (no dependencies)."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, TextIO


def cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, datetime):
        moment = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    return str(value)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], *, out: TextIO) -> None:
    """Columns aligned on the widest cell; ``(none)`` for an empty table."""
    if not rows:
        out.write("  (none)\n")
        return
    text = [[cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in text)) for i, h in enumerate(headers)]
    out.write("  " + "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip() + "\n")
    for row in text:
        out.write("  " + "  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() + "\n")


def age(moment: datetime | None, *, now: datetime | None = None) -> str:
    """``3d 4h``, ``5h 10m``, ``12m``, ``40s``."""
    if moment is None:
        return "-"
    moment = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    seconds = int(((now or datetime.now(UTC)) - moment).total_seconds())
    if seconds < 0:
        return "0s"
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m"
    return f"{secs}s"


class Progress:
    """``label: done/total`` on standard error: rewritten in place on a terminal, otherwise one line
    every ``every_seconds`` (so a log of a long replay shows that it moves)."""

    def __init__(
        self, label: str, total: int | None, *, stream: TextIO | None = None, every_seconds: float = 2.0
    ) -> None:
        self.label = label
        self.total = total
        self.stream = stream if stream is not None else sys.stderr
        self.every_seconds = every_seconds
        self.done = 0
        self._last = 0.0
        self._tty = bool(getattr(self.stream, "isatty", lambda: False)())

    def _text(self) -> str:
        return f"{self.label}: {self.done}/{self.total}" if self.total is not None else f"{self.label}: {self.done}"

    def advance(self, n: int = 1) -> None:
        self.done += n
        current = time.monotonic()
        if self._tty:
            if current - self._last >= 0.1:
                self.stream.write("\r" + self._text())
                self.stream.flush()
                self._last = current
        elif current - self._last >= self.every_seconds:
            self.stream.write(self._text() + "\n")
            self.stream.flush()
            self._last = current

    def finish(self) -> None:
        self.stream.write(("\r" if self._tty else "") + self._text() + "\n")
        self.stream.flush()
