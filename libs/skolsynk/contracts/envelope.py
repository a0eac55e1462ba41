"""The message envelope: what every message on skolsynk's exchanges looks like on the wire.

The AMQP body is the envelope as JSON. The ids are repeated in AMQP properties (``message_id``,
``correlation_id``, ``type``, ``timestamp``) and headers (``x-tenant-id``, ``x-schema-version``) so that
operators and vendors can route and inspect without parsing bodies.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar, Self
from uuid import UUID, uuid4

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

ENVELOPE_VERSION = 1


def utcnow() -> datetime:
    return datetime.now(UTC)


class Envelope(BaseModel):
    """Version 1 of the envelope around every skolsynk message."""

    model_config = ConfigDict(frozen=True, extra="forbid", title="Envelope")

    envelope_version: int = Field(default=ENVELOPE_VERSION, ge=1, le=ENVELOPE_VERSION)
    message_id: UUID = Field(default_factory=uuid4, description="Unique per message; the idempotency key.")
    message_type: str = Field(
        pattern=r"^[a-z][a-z0-9]*(?:[.-][a-z0-9]+)*$",
        description="Contract name, e.g. 'sync.requested'.",
    )
    schema_version: int = Field(ge=1, description="Version of the payload contract.")
    tenant_id: str | None = Field(
        default=None, pattern=r"^[a-z0-9][a-z0-9-]{0,62}$", description="The organiser (huvudman)."
    )
    correlation_id: UUID | None = Field(
        default=None, description="Shared by every message of one flow, e.g. one sync run."
    )
    causation_id: UUID | None = Field(default=None, description="The message_id of the message that caused this one.")
    produced_at: AwareDatetime = Field(default_factory=utcnow)
    producer: str | None = Field(default=None, max_length=64, description="Service that produced the message.")
    payload: dict[str, Any] = Field(description="The contract's fields; see message_type and schema_version.")


class MessageContract(BaseModel):
    """Base of every payload contract. Subclasses set ``message_type`` and ``schema_version``.

    A breaking change is a new ``schema_version`` (a new class), published side by side with the old
    one until every consumer reads the new one."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    message_type: ClassVar[str]
    schema_version: ClassVar[int]

    def to_envelope(
        self,
        *,
        tenant_id: str | None = None,
        correlation_id: UUID | None = None,
        caused_by: Envelope | None = None,
        producer: str | None = None,
        message_id: UUID | None = None,
    ) -> Envelope:
        if caused_by is not None:
            tenant_id = tenant_id or caused_by.tenant_id
            correlation_id = correlation_id or caused_by.correlation_id or caused_by.message_id
        return Envelope(
            message_id=message_id or uuid4(),
            message_type=self.message_type,
            schema_version=self.schema_version,
            tenant_id=tenant_id,
            correlation_id=correlation_id,
            causation_id=caused_by.message_id if caused_by is not None else None,
            producer=producer,
            payload=self.model_dump(mode="json"),
        )

    @classmethod
    def from_envelope(cls, envelope: Envelope) -> Self:
        """Validate the payload; raises :class:`ContractMismatch` for another type or version."""
        if envelope.message_type != cls.message_type or envelope.schema_version != cls.schema_version:
            raise ContractMismatch(
                f"expected {cls.message_type} v{cls.schema_version}, "
                f"got {envelope.message_type} v{envelope.schema_version}"
            )
        return cls.model_validate(envelope.payload)


class ContractMismatch(ValueError):
    """A message of another type or schema version than the handler reads."""
