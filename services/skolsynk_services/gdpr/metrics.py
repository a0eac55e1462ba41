"""The GDPR service's metrics (labels: tenant and vendor ids, reasons and outcomes; never person ids)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class GdprMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.requested = Counter(
            "skolsynk_gdpr_deletions_requested", "Person deletions sent towards vendors.", ["vendor", "reason"],
            registry=registry,
        )  # fmt: skip
        self.completed = Counter(
            "skolsynk_gdpr_deletions_completed", "Deletion receipts by vendor and outcome.", ["vendor", "outcome"],
            registry=registry,
        )  # fmt: skip
        self.pending = Gauge(
            "skolsynk_gdpr_deletions_pending", "Deletions waiting for a receipt (not overdue).", ["tenant", "vendor"],
            registry=registry,
        )  # fmt: skip
        self.overdue = Gauge(
            "skolsynk_gdpr_deletions_overdue", "Deletions past their deadline without a receipt.", ["tenant", "vendor"],
            registry=registry,
        )  # fmt: skip
        self.retries = Counter(
            "skolsynk_gdpr_deletion_retries", "Overdue deletions sent to the vendor again.", ["vendor", "outcome"],
            registry=registry,
        )  # fmt: skip
        self.removal_to_receipt = Histogram(
            "skolsynk_gdpr_removal_to_receipt_seconds",
            "Time from a person leaving a vendor's selection to the vendor's receipt.",
            ["vendor"],
            registry=registry,
            buckets=(1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 24 * 3600, 3 * 24 * 3600, 7 * 24 * 3600),
        )
        self.purged = Counter(
            "skolsynk_gdpr_persons_purged", "Persons whose personal data was purged (tombstone left).",
            registry=registry,
        )  # fmt: skip
        self.purges_overdue = Gauge(
            "skolsynk_gdpr_purges_overdue",
            "Persons whose last deletion receipt is older than the deletion deadline and whose personal data is "
            "still not purged (blocked: still in the source or at a live vendor).",
            ["tenant"],
            registry=registry,
        )
        self.erasure_requests = Counter(
            "skolsynk_gdpr_erasure_requests", "Erasure and objection requests received.", ["kind"], registry=registry
        )
