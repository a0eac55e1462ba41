"""Deletions, their receipts and erasure requests (exchange ``gdpr``, routing key = message type).

* ``gdpr.deletion.requested`` (normaliser): a person's delete was sent towards a vendor, and why;
* ``gdpr.deletion.receipt`` (dispatcher): the vendor confirmed it (SCIM 2xx or 404, or the vendor's
  queue accepted it), or a later change superseded it;
* ``gdpr.erasure.requested`` / ``gdpr.erasure.withdrawn`` (admin API, operator CLI): erase or object
  for one vendor or all, even while the person is still in the source; the person stays suppressed
  from delivery until the request is withdrawn.

Only pseudonymous ids cross this exchange: never names, e-mail addresses or civic numbers.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import ClassVar, Literal
from uuid import UUID

from pydantic import Field

from skolsynk.contracts.envelope import MessageContract
from skolsynk.domain.ss12000 import EntityKind

VENDOR_ID = r"^[a-z0-9][a-z0-9-]{0,62}$"


class DeletionReason(StrEnum):
    """Why a person is deleted at a vendor."""

    LEFT_SOURCE = "left_source"  # no longer in the organiser's source
    LEFT_SELECTION = "left_selection"  # still in the source, no longer in this vendor's selection
    SUBSCRIPTION_ENDED = "subscription_ended"  # the organiser ended the vendor's subscription
    ERASURE_REQUEST = "erasure_request"  # an erasure request (article 17)
    OBJECTION = "objection"  # an objection to the processing (article 21)


class DeletionRequested(MessageContract):
    """The normaliser sent a person's delete towards a vendor (live subscriptions only)."""

    message_type: ClassVar[str] = "gdpr.deletion.requested"
    schema_version: ClassVar[int] = 1

    vendor_id: str = Field(pattern=VENDOR_ID)
    person_id: UUID = Field(description="The person's canonical id in skolsynk (pseudonymous).")
    vendor_entity_id: UUID = Field(
        description="The id the vendor knows the person by (a per-vendor pseudonym or the canonical id)."
    )
    version: int = Field(ge=1, description="The version of the delete change event.")
    reason: DeletionReason
    requested_at: datetime
    removed_at: datetime | None = Field(
        default=None,
        description="When the person first left the selection (earlier than requested_at after a grace period).",
    )


class DeletionReceipt(MessageContract):
    """A vendor's dispatcher reports the outcome of a person's delete."""

    message_type: ClassVar[str] = "gdpr.deletion.receipt"
    schema_version: ClassVar[int] = 1

    vendor_id: str = Field(pattern=VENDOR_ID)
    entity_kind: EntityKind
    vendor_entity_id: UUID
    version: int = Field(ge=1)
    outcome: Literal["deleted", "already_absent", "queued", "superseded"] = Field(
        description=(
            "deleted: the vendor answered 2xx; already_absent: the vendor answered 404 (nothing to delete); "
            "queued: the vendor's own queue accepted the delete (broker confirm); superseded: a newer change "
            "(the person came back) replaced the delete before it was delivered."
        )
    )
    delivered_at: datetime
    vendor_status: int | None = Field(default=None, ge=100, le=599, description="The vendor's HTTP status, if any.")


class ErasureRequested(MessageContract):
    """Erase (or stop processing) a person's data at one vendor or all of them, and keep the person
    suppressed from delivery until the request is withdrawn."""

    message_type: ClassVar[str] = "gdpr.erasure.requested"
    schema_version: ClassVar[int] = 1

    request_id: UUID
    person_id: UUID = Field(description="The person's canonical id (looked up in the admin UI).")
    vendor_ids: list[str] | None = Field(default=None, description="None: every vendor, now and in the future.")
    kind: Literal["erasure", "objection"] = "erasure"
    requested_by: str = Field(max_length=64, description="An admin's user id or 'operator' (no personal data).")
    reference: str | None = Field(default=None, max_length=64, description="The organiser's case number.")


class ErasureWithdrawn(MessageContract):
    """Lift an erasure request: the person is delivered again if still selected."""

    message_type: ClassVar[str] = "gdpr.erasure.withdrawn"
    schema_version: ClassVar[int] = 1

    request_id: UUID
    withdrawn_by: str = Field(max_length=64)
