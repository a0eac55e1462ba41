"""What source connectors send the normaliser (exchange ``source``, routing key
``{source_kind}.{tenant}``), in runs:

1. ``source.run.started``: a run begins (``full`` snapshot or ``incremental`` changes);
2. ``source.records`` pages: records of any kind, and (incremental runs) deletions;
3. ``source.run.completed``: how many pages were sent, the source-side count per kind, and whether the
   read was healthy.

Records are canonical-shaped (``data`` follows the matching model of :mod:`skolsynk.domain.ss12000`,
exported as JSON Schema next to this contract) but are validated one by one by the normaliser: a bad
record becomes a data-quality finding, never a rejected page. Only a complete and healthy full
snapshot (every page received, counts matching, no read errors) may remove what it did not contain.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from skolsynk.contracts.envelope import MessageContract
from skolsynk.domain.ss12000 import EntityKind

SOURCE_ID = r"^[a-z0-9][a-z0-9-]{0,62}$"


class SourceRecord(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: EntityKind
    key: str = Field(min_length=1, max_length=200, description="The source's own id of the entity.")
    data: dict[str, Any] = Field(description="The entity's fields (see the entity schemas); 'key' may be omitted.")


class SourceDeletion(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: EntityKind
    key: str = Field(min_length=1, max_length=200)


class SourceRunStarted(MessageContract):
    message_type: ClassVar[str] = "source.run.started"
    schema_version: ClassVar[int] = 1

    run_id: UUID
    source_id: str = Field(pattern=SOURCE_ID)
    source_kind: str = Field(pattern=r"^[a-z0-9-]{1,40}$", description="egil, ss12000, google, microsoft ...")
    mode: Literal["full", "incremental"]
    started_at: datetime


class SourceRecordPage(MessageContract):
    message_type: ClassVar[str] = "source.records"
    schema_version: ClassVar[int] = 1

    run_id: UUID
    source_id: str = Field(pattern=SOURCE_ID)
    page: int = Field(ge=0, description="0-based page number within the run.")
    records: list[SourceRecord] = Field(default_factory=list, max_length=5000)
    deletions: list[SourceDeletion] = Field(
        default_factory=list, max_length=5000, description="Incremental runs only: removed at the source."
    )


class SourceRunCompleted(MessageContract):
    message_type: ClassVar[str] = "source.run.completed"
    schema_version: ClassVar[int] = 1

    run_id: UUID
    source_id: str = Field(pattern=SOURCE_ID)
    pages: int = Field(ge=0, description="How many pages the run sent.")
    counts: dict[EntityKind, int] = Field(
        default_factory=dict, description="Source-side number of records per kind (full runs)."
    )
    healthy: bool = Field(description="False when any read failed: such a run never removes anything.")
    errors: list[str] = Field(default_factory=list, max_length=50, description="Error codes, no personal data.")
