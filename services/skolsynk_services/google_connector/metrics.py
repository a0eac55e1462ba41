"""The Google connector's Prometheus metrics, on the service's registry. Labels are outcomes, kinds,
triggers, reasons and error codes: never tenant-supplied values or personal data."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client import Counter as PromCounter

if TYPE_CHECKING:
    from skolsynk_services.google_connector.runs import RunReport


class GoogleMetrics:
    """The connector's own metrics (labels: outcomes, kinds, error codes; never tenant data)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.runs = PromCounter(
            "skolsynk_google_runs", "Full runs by outcome (healthy, unhealthy).", ["outcome"], registry=registry
        )
        self.run_seconds = Histogram(
            "skolsynk_google_run_seconds",
            "Duration of full runs.",
            registry=registry,
            buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600),
        )
        self.records = PromCounter(
            "skolsynk_google_records", "Records published, by kind.", ["kind"], registry=registry
        )
        self.run_errors = PromCounter(
            "skolsynk_google_run_errors", "Error codes of unhealthy runs.", ["code"], registry=registry
        )
        self.throttled = PromCounter(
            "skolsynk_google_throttled_requests",
            "Requests Google throttled (and that were retried), by reason.",
            ["reason"],
            registry=registry,
        )
        self.users = PromCounter(
            "skolsynk_google_users",
            "Users read, by outcome (placed, unplaced: no school unit or role, leaver: left out).",
            ["outcome"],
            registry=registry,
        )
        self.triggered_runs = PromCounter(
            "skolsynk_google_triggered_runs",
            "Runs asked for outside the schedule, by trigger (request, reports, watch).",
            ["trigger"],
            registry=registry,
        )

        self.watch_notifications = PromCounter(
            "skolsynk_google_watch_notifications",
            "Directory push notifications received, by resource state (sync, add, delete, update, undelete) and "
            "outcome (triggered, merged into a waiting run, sync, ignored: source not served, refused).",
            ["state", "outcome"],
            registry=registry,
        )
        self.watch_operations = PromCounter(
            "skolsynk_google_watch_channel_operations",
            "Notification channels opened (users.watch) and stopped (channels.stop), by outcome.",
            ["operation", "outcome"],
            registry=registry,
        )

    def throttle(self, reason: str) -> None:
        self.throttled.labels(reason).inc()

    def observe(self, report: RunReport) -> None:
        """A finished run."""
        self.runs.labels("healthy" if report.healthy else "unhealthy").inc()
        self.run_seconds.observe(report.seconds)
        for kind, count in report.counts.items():
            self.records.labels(kind.value).inc(count)
        for code in report.errors:
            self.run_errors.labels(code).inc()
        placed = Counter(
            {
                "placed": report.stats.users - report.stats.unplaced,
                "unplaced": report.stats.unplaced,
                "leaver": report.leavers,
            }
        )
        for outcome, count in placed.items():
            self.users.labels(outcome).inc(count)
