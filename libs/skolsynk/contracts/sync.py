"""Commands about source synchronisation runs."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from skolsynk.contracts.envelope import MessageContract


class SyncRequested(MessageContract):
    """Ask a source connector to read one source of one organiser now (admin UI, CLI or schedule)."""

    message_type: ClassVar[str] = "sync.requested"
    schema_version: ClassVar[int] = 1

    source_id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$", description="The organiser's configured source.")
    mode: Literal["full", "incremental"] = Field(
        default="full", description="A full snapshot (may produce deletions) or only changes since the last run."
    )
    requested_by: str = Field(max_length=64, description="Who asked: 'schedule', 'operator', 'admin-ui'.")
