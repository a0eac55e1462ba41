"""What a vendor's dispatcher (or the vendor itself, on its own queue) receives: one change to one
entity of its selection (exchange ``vendor``, routing key ``{vendor}.{tenant}``).

``version`` grows by one with every change to the same (tenant, vendor, entity): a consumer drops a
change whose version is not greater than the last one it applied, so redeliveries and reordering
never roll an entity back. Upserts carry the full minimised resource; deletes carry none.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal
from uuid import UUID

from pydantic import Field

from skolsynk.contracts.envelope import MessageContract
from skolsynk.domain.ss12000 import EntityKind


class VendorChange(MessageContract):
    message_type: ClassVar[str] = "vendor.change"
    schema_version: ClassVar[int] = 1

    vendor_id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")
    entity_kind: EntityKind
    entity_id: UUID
    operation: Literal["upsert", "delete"]
    version: int = Field(ge=1)
    resource: dict[str, Any] | None = Field(default=None, description="The minimised resource (upserts).")
    school_unit_ids: list[UUID] = Field(default_factory=list)
    test_mode: bool = Field(description="Record what would be sent; deliver nothing.")
    reason: str = Field(max_length=64, description="Why: 'snapshot', 'incremental', 'dates', 'subscription' ...")


class ProjectionRequested(MessageContract):
    """Recompute what every vendor of a tenant should hold and send the differences (after a run, a
    subscription change, a hold decision, or the daily date check)."""

    message_type: ClassVar[str] = "tenant.projection.requested"
    schema_version: ClassVar[int] = 1

    reason: str = Field(max_length=64)
    run_id: UUID | None = Field(default=None, description="The source run that finished, if any.")
    resend_vendor_id: str | None = Field(
        default=None,
        pattern=r"^[a-z0-9][a-z0-9-]{0,62}$",
        description="Send this vendor its whole current selection again, changed or not (a full resend).",
    )
