"""A vendor dispatcher's metrics (labels: tenant and vendor ids, operations, statuses; never person data)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

#: ``status`` of ``skolsynk_deliveries_total``: the ledger's statuses, plus what never reaches the ledger.
DELIVERY_STATUSES = ("delivered", "test", "test_rejected", "rejected", "stale", "retry")


class DispatcherMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.deliveries = Counter(
            "skolsynk_deliveries",
            "Change events handled by a vendor's dispatcher, by tenant, vendor, operation (upsert, delete) and "
            "status: delivered, test (recorded in test mode), test_rejected (the vendor's profile would refuse it), "
            "rejected (the vendor refused it: DLQ), stale (an older version than delivered: dropped), "
            "retry (vendor unavailable or references missing: back to the retry ladder).",
            ["tenant", "vendor", "operation", "status"],
            registry=registry,
        )
        self.vendor_requests = Counter(
            "skolsynk_vendor_requests",
            "HTTP requests to a vendor's EGIL SCIM server, by vendor, method and status class "
            "(2xx, 4xx, 5xx, or error for timeouts and connection failures). Retries count once each.",
            ["vendor", "method", "status_class"],
            registry=registry,
        )
        self.vendor_request_seconds = Histogram(
            "skolsynk_vendor_request_seconds",
            "Duration of one HTTP request to a vendor's EGIL SCIM server (rate limiting and queueing excluded).",
            ["vendor", "method"],
            registry=registry,
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.drift = Gauge(
            "skolsynk_vendor_drift",
            "What the last drift check found at an EGIL SCIM vendor, by vendor and finding: missing (delivered "
            "but gone: a resend was requested), ghosts (deleted by skolsynk but still there: deleted again), "
            "unmanaged (ids skolsynk never sent: reported only).",
            ["vendor", "finding"],
            registry=registry,
        )
        self.delivery_retrying_seconds = Gauge(
            "skolsynk_delivery_retrying_seconds",
            "How long an organiser's deliveries to a vendor have been retrying (the vendor unreachable, 5xx, 429, "
            "TLS or pin failures), by tenant and vendor; 0 while they go through. From the store, so every "
            "replica reports the same: take the max.",
            ["tenant", "vendor"],
            registry=registry,
        )
        self.delivery_pending = Gauge(
            "skolsynk_delivery_pending_changes",
            "Changes queued for a vendor and not yet done with (delivered, recorded in test mode, refused or "
            "superseded), by tenant and vendor. From the store, so every replica reports the same: take the max.",
            ["tenant", "vendor"],
            registry=registry,
        )
        self.delivery_oldest_pending_seconds = Gauge(
            "skolsynk_delivery_oldest_pending_seconds",
            "How long the oldest change pending for a vendor has waited, by tenant and vendor; 0 with nothing "
            "pending. From the store: take the max.",
            ["tenant", "vendor"],
            registry=registry,
        )
        self.drift_checks = Counter(
            "skolsynk_vendor_drift_checks",
            "Drift checks run, by vendor and outcome (clean, repaired).",
            ["vendor", "outcome"],
            registry=registry,
        )


class FeedCompactionMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.passes = Counter(
            "skolsynk_feed_compactions",
            "Compaction passes over a queue vendor's unread feed, by vendor and outcome: compacted, or skipped "
            "(no_messages, consumed: the vendor is reading).",
            ["vendor", "outcome"],
            registry=registry,
        )
        self.dropped = Counter(
            "skolsynk_feed_compacted_messages",
            "Upserts taken out of a queue vendor's unread feed because a later delete of the same entity followed.",
            ["vendor"],
            registry=registry,
        )
