"""The sync-history chart: records per source run as bars, drawn as inline SVG (no JavaScript)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from skolsynk_services.admin.ui.catalogue import plural, text
from skolsynk_services.admin.ui.formatting import decimal, when


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    fill: str
    title: str


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    left: int
    bottom: float
    top_value: int
    bars: list[Bar]
    first: str
    last: str
    summary: str
    legend: list[tuple[str, str]] = field(default_factory=list)


CHART_COLOURS = {"complete": "#2e7d32", "incomplete": "#c62828", "running": "#757575"}


def runs_chart(
    runs: Sequence[Mapping[str, Any]], *, width: int = 720, height: int = 200, limit: int = 30
) -> Chart | None:
    """Records per run, oldest on the left, as bars (green: complete, red: incomplete, grey: running)."""
    rows = list(reversed(runs[:limit]))
    if not rows:
        return None
    values = [sum(int(v) for v in (r.get("counts") or {}).values()) for r in rows]
    top = max(values) or 1
    left, right, top_margin, bottom_margin = 56, 8, 12, 28
    plot_height = height - top_margin - bottom_margin
    slot = (width - left - right) / len(rows)
    bars = []
    for index, (run, value) in enumerate(zip(rows, values, strict=True)):
        if run.get("status") != "finalised":
            state = "running"
        elif run.get("complete") is False or run.get("healthy") is False:
            state = "incomplete"
        else:
            state = "complete"
        bar_height = max(plot_height * value / top, 1.0)
        duration = run.get("duration_seconds")
        words = {
            "when": when(run.get("started_at")),
            "records": plural("records", value),
            "state": text(f"chart.{state}"),
        }
        bars.append(
            Bar(
                x=round(left + index * slot + slot * 0.15, 2),
                y=round(top_margin + plot_height - bar_height, 2),
                width=round(max(slot * 0.7, 1.0), 2),
                height=round(bar_height, 2),
                fill=CHART_COLOURS[state],
                title=text("chart.bar", **words)
                if duration is None
                else text("chart.bar_seconds", seconds=decimal(float(duration)), **words),
            )
        )
    incomplete = sum(1 for b in bars if b.fill == CHART_COLOURS["incomplete"])
    summary = text(
        "chart.summary",
        runs=plural("chart_runs", len(rows)),
        first=when(rows[0].get("started_at")),
        last=when(rows[-1].get("started_at")),
        most=plural("records", top),
        incomplete=plural("chart_incomplete", incomplete),
    )
    return Chart(
        width=width,
        height=height,
        left=left,
        bottom=top_margin + plot_height,
        top_value=top,
        bars=bars,
        first=when(rows[0].get("started_at")),
        last=when(rows[-1].get("started_at")),
        summary=summary,
        legend=[(CHART_COLOURS[state], text(f"chart.{state}")) for state in ("complete", "incomplete", "running")],
    )
