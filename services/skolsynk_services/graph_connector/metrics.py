"""The connector's Prometheus metrics, on the service's registry. Labels are modes, kinds, resources,
reasons and status codes: never tenant-supplied values or personal data."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram

if TYPE_CHECKING:
    from skolsynk_services.graph_connector.runs import RunReport


class GraphMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.runs = Counter(
            "skolsynk_graph_runs",
            "Runs published, by mode and outcome (healthy, unhealthy).",
            ["mode", "outcome"],
            registry=registry,
        )
        self.run_seconds = Histogram(
            "skolsynk_graph_run_seconds",
            "Duration of a run (read, map, publish), by mode.",
            ["mode"],
            registry=registry,
            buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800),
        )
        self.records = Counter("skolsynk_graph_records", "Records published, by kind.", ["kind"], registry=registry)
        self.deletions = Counter("skolsynk_graph_deletions", "Deletions published.", registry=registry)
        self.removed = Counter(
            "skolsynk_graph_removed",
            "@removed delta entries, by resource and reason (changed, deleted, gone).",
            ["resource", "reason"],
            registry=registry,
        )
        self.failed_runs = Counter(
            "skolsynk_graph_failed_runs",
            "Unhealthy runs by error reason (the part after the colon of an error code).",
            ["code"],
            registry=registry,
        )
        self.throttled = Counter(
            "skolsynk_graph_throttled_requests",
            "Graph or token answers asking to slow down (429, 503, 504), by status.",
            ["status"],
            registry=registry,
        )
        self.resyncs = Counter(
            "skolsynk_graph_resyncs",
            "Incremental runs turned into full runs, by reason (no_delta_links, expired).",
            ["reason"],
            registry=registry,
        )

    def throttle(self, status: int) -> None:
        self.throttled.labels(str(status)).inc()

    def observe(self, report: RunReport, seconds: float) -> None:
        self.runs.labels(report.mode, "healthy" if report.healthy else "unhealthy").inc()
        self.run_seconds.labels(report.mode).observe(seconds)
        for kind, count in report.counts.items():
            self.records.labels(kind.value).inc(count)
        self.deletions.inc(report.deletions)
        for key, count in report.removed.items():
            resource, _, reason = key.partition(":")
            self.removed.labels(resource, reason).inc(count)
        for code in report.errors:
            self.failed_runs.labels(code.rsplit(":", 1)[-1]).inc()
