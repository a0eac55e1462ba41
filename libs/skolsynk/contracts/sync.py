"""Commands about source synchronisation runs."""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar, Literal

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


class SourceCheckRequested(MessageContract):
    """Ask the connector of a kind to try a source's settings now (the admin's "Testa anslutningen"), saved or
    not yet: a token, the first page of persons and of school units. The answer,
    :class:`SourceCheckCompleted`, goes to the queue ``reply_to`` with the request's message id as its
    correlation id; after ``deadline_at`` nobody waits for it and the request is dropped."""

    message_type: ClassVar[str] = "source.check.requested"
    schema_version: ClassVar[int] = 1

    source_id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$", description="The source's id (saved or not).")
    settings: dict[str, Any] = Field(description="The kind's settings, as the source registry holds them.")
    sealed_secrets: str | None = Field(
        default=None,
        description="The secrets, sealed with the installation's key (never in clear on the broker).",
    )
    secret_refs: dict[str, str] = Field(default_factory=dict, description="Secret name -> environment variable.")
    reply_to: str = Field(min_length=1, max_length=255, description="The queue the answer goes to.")
    deadline_at: datetime = Field(description="After this, the answer is not awaited any more.")


class SourceCheckCompleted(MessageContract):
    """How a source check went: the counts read, or why it failed (a safe code, and a detail without values)."""

    message_type: ClassVar[str] = "source.check.completed"
    schema_version: ClassVar[int] = 1

    source_id: str
    ok: bool
    error_code: str | None = Field(default=None, description="e.g. token_401, http_503, configuration, timeout.")
    detail: str | None = Field(default=None, max_length=500, description="What was wrong, without any value.")
    counts: dict[str, int] = Field(
        default_factory=dict, description="Read on the first page: persons, school_units (and more per kind)."
    )
    complete: bool = Field(default=False, description="The counts are the whole source, not only a first page.")
    elapsed_seconds: float = Field(ge=0)
