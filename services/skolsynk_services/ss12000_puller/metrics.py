"""The SS 12000 puller's Prometheus metrics, on the service's registry. Labels are operations, outcomes and
error codes: never tenant-supplied values or personal data."""

from __future__ import annotations

from prometheus_client import CollectorRegistry
from prometheus_client import Counter as PromCounter


class Ss12000Metrics:
    """The puller's own metrics: its subscriptions at the sources and what it posts to their ``/log/``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.subscription_operations = PromCounter(
            "skolsynk_ss12000_subscription_operations",
            "Calls about a source's subscription, by operation (create, adopt, renew, check, delete) and outcome "
            "(ok; lost: the source no longer had it; not_offered: 404/405/501 on /subscriptions; failed).",
            ["operation", "outcome"],
            registry=registry,
        )
        self.log_entries = PromCounter(
            "skolsynk_ss12000_log_entries",
            "Entries about failed runs for the sources' /log/, by outcome (posted; not_offered: the source has no "
            "/log/, remembered; skipped: known not to have one; failed).",
            ["outcome"],
            registry=registry,
        )
