"""A dispatcher gathers the counts of changes it is done with and writes them at most every few seconds
(services/skolsynk_services/dispatcher/delivery.py): one write per organiser, not one per batch."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import uuid4

from skolsynk.catalogue import VendorCatalogueEntry
from skolsynk.contracts.vendor import VendorChange
from skolsynk.domain.ss12000 import EntityKind
from skolsynk_services.dispatcher.delivery import Delivery, VendorDeliverer


class Backlog:
    """Records what the deliverer writes."""

    def __init__(self) -> None:
        self.writes: list[dict[str, int]] = []

    async def settled(self, vendor_id: str, counts: dict[str, int], *, at: datetime) -> None:
        self.writes.append(dict(counts))


def delivery(tenant_id: str, status: str, *, replay: bool = False) -> Delivery:
    change = VendorChange(
        vendor_id="ne",
        entity_kind=EntityKind.PERSON,
        entity_id=uuid4(),
        operation="delete",
        version=2,
        test_mode=False,
        reason="incremental",
    )
    envelope = change.to_envelope(tenant_id=tenant_id)
    return Delivery(0, envelope, change, tenant_id, status=status, replay=replay)


async def test_counts_of_many_batches_go_in_one_write_per_organiser() -> None:
    backlog = Backlog()
    vendor = VendorCatalogueEntry.model_validate(
        {"vendor_id": "ne", "display_name": "NE", "delivery": "queue", "profile": {}}
    )
    deliverer = VendorDeliverer(vendor, ledger=Any, publisher=object(), feed=object(), backlog=backlog)  # type: ignore[arg-type]
    for _ in range(3):  # three batches
        await deliverer._count_settled(
            [
                delivery("kommun-a", "delivered"),
                delivery("kommun-a", "stale"),
                delivery("kommun-a", "stale", replay=True),  # a copy of a change already counted
                delivery("kommun-b", "retry"),  # still on the retry ladder
                delivery("kommun-b", "rejected"),
            ]
        )
    assert backlog.writes == []  # gathered
    assert deliverer.counting
    await deliverer.close()  # at stop (or after SETTLED_FLUSH_SECONDS): one write
    assert backlog.writes == [{"kommun-a": 6, "kommun-b": 3}]
    assert not deliverer.counting
