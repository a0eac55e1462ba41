"""The EGIL receiver's metrics (the label: a closed set of reasons; never a pin, key, address or chosen value)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter

from skolsynk_services.egil_receiver.access import Refusal


class EgilReceiverMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.refusals = Counter(
            "skolsynk_egil_refusals",
            "EGIL clients refused, by reason (each also logged as egil_client_refused).",
            ["reason"],
            registry=registry,
        )
        for reason in Refusal:  # every reason shows, at 0, from the start
            self.refusals.labels(reason=reason.value)
