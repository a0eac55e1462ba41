"""Publishing one source run to the normaliser, the same for every pulling connector:
``SourceRunStarted``, one ``SourceRecordPage`` per batch (split to the page limit), ``SourceRunCompleted``
with the count per kind, the health and the error codes. Every message is enveloped for the tenant with the
run id as correlation id, from the connector as producer, and routed as ``{source_kind}.{tenant_id}``.

What a run reads, in which order, and when it is unhealthy is the connector's; so are its log events.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol, TypeVar

from skolsynk.contracts.envelope import MessageContract
from skolsynk.contracts.source import (
    SourceDeletion,
    SourceRecord,
    SourceRecordPage,
    SourceRunCompleted,
    SourceRunStarted,
)
from skolsynk.domain.ss12000 import EntityKind
from skolsynk.messaging import Publisher
from skolsynk.storage import Collection, Database, Document

#: ``SourceRecordPage.records`` / ``deletions`` hold at most this many each.
MAX_PAGE_ITEMS = 5000
#: ``SourceRunCompleted.errors`` holds at most this many codes.
MAX_ERRORS = 50

#: A full run is a complete snapshot (it removes by absence); an incremental one carries changes.
Mode = Literal["full", "incremental"]

T = TypeVar("T")
R = TypeVar("R")


class Source(Protocol):
    """A configured source: a tenant's source id (``key`` is ``tenant_id:source_id``)."""

    @property
    def tenant_id(self) -> str: ...

    @property
    def source_id(self) -> str: ...

    @property
    def key(self) -> str: ...


def utcnow() -> datetime:
    return datetime.now(UTC)


def millis(value: datetime) -> datetime:
    """``value`` at MongoDB's precision, so a stored time equals the run's own."""
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


def aware(value: datetime) -> datetime:
    """A time read back from MongoDB (naive, UTC) as an aware one."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


@dataclass(kw_only=True)
class RunReport:
    """What one run did (ids, counts and codes only); each connector adds its own fields."""

    run_id: uuid.UUID = field(default_factory=uuid.uuid4)
    tenant_id: str
    source_id: str
    started_at: datetime
    pages: int = 0
    counts: dict[EntityKind, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return not self.errors

    def add_error(self, code: str) -> None:
        """Record ``code`` once (at most :data:`MAX_ERRORS` codes): any error makes the run unhealthy."""
        if code not in self.errors and len(self.errors) < MAX_ERRORS:
            self.errors.append(code)

    def count(self, records: Iterable[SourceRecord]) -> None:
        for record in records:
            self.counts[record.kind] = self.counts.get(record.kind, 0) + 1


class RunPublisher:
    """The messages of one run; :attr:`pages` counts the pages sent."""

    def __init__(
        self,
        publisher: Publisher,
        exchange: str,
        source: Source,
        run_id: uuid.UUID,
        *,
        source_kind: str,
        producer: str,
        page_items: int = MAX_PAGE_ITEMS,
    ) -> None:
        self.publisher = publisher
        self.exchange = exchange
        self.source = source
        self.run_id = run_id
        self.source_kind = source_kind
        self.producer = producer
        self.page_items = page_items
        self.pages = 0

    async def send(self, message: MessageContract) -> None:
        envelope = message.to_envelope(
            tenant_id=self.source.tenant_id, correlation_id=self.run_id, producer=self.producer
        )
        await self.publisher.publish(
            envelope, exchange=self.exchange, routing_key=f"{self.source_kind}.{self.source.tenant_id}"
        )

    async def started(self, report: RunReport, *, mode: Mode) -> None:
        await self.send(
            SourceRunStarted(
                run_id=self.run_id,
                source_id=self.source.source_id,
                source_kind=self.source_kind,
                mode=mode,
                started_at=report.started_at,
            )
        )

    async def page(self, records: Sequence[SourceRecord], deletions: Sequence[SourceDeletion] = ()) -> None:
        """``records`` and ``deletions`` as pages of at most ``page_items`` each; nothing when both are empty."""
        step = self.page_items
        for start in range(0, max(len(records), len(deletions)), step):
            await self.send(
                SourceRecordPage(
                    run_id=self.run_id,
                    source_id=self.source.source_id,
                    page=self.pages,
                    records=list(records[start : start + step]),
                    deletions=list(deletions[start : start + step]),
                )
            )
            self.pages += 1

    async def completed(self, report: RunReport) -> None:
        """``SourceRunCompleted`` from ``report``, whose ``pages`` becomes the number of pages sent."""
        await self.send(
            SourceRunCompleted(
                run_id=self.run_id,
                source_id=self.source.source_id,
                pages=self.pages,
                counts=report.counts,
                healthy=report.healthy,
                errors=report.errors,
            )
        )
        report.pages = self.pages


class RunStateStore:
    """One document per tenant and source (``_id`` is the source's key) in ``collection``: what the last
    runs did and when the last healthy full run started (what the schedule looks at)."""

    def __init__(self, db: Database, collection: str) -> None:
        self.collection: Collection = db[collection]

    async def get(self, source: Source) -> Document | None:
        return await self.collection.find_one({"_id": source.key})

    @staticmethod
    def run_fields(
        source: Source, report: RunReport, *, mode: Mode, finished_at: datetime, **details: Any
    ) -> dict[str, Any]:
        """The ``$set`` of a finished run: ``last_{mode}_run`` (with ``details``), and
        ``last_full_success_at`` after a healthy full run."""
        fields: dict[str, Any] = {
            "tenant_id": source.tenant_id,
            "source_id": source.source_id,
            f"last_{mode}_run": {
                "run_id": str(report.run_id),
                "started_at": report.started_at,
                "finished_at": finished_at,
                "healthy": report.healthy,
                "pages": report.pages,
                "errors": report.errors,
                **details,
            },
            "updated_at": finished_at,
        }
        if report.healthy and mode == "full":
            fields["last_full_success_at"] = report.started_at
        return fields


async def gather_limited(items: Iterable[T], work: Callable[[T], Awaitable[R]], limit: int) -> list[R]:
    """``work`` for every item, at most ``limit`` at a time, results in order; the first failure cancels
    the rest and is raised as itself."""
    pending = list(items)
    results: dict[int, R] = {}
    semaphore = asyncio.Semaphore(limit)

    async def one(index: int, item: T) -> None:
        async with semaphore:
            results[index] = await work(item)

    try:
        async with asyncio.TaskGroup() as group:
            for index, item in enumerate(pending):
                group.create_task(one(index, item))
    except ExceptionGroup as failures:
        raise failures.exceptions[0] from None
    return [results[i] for i in range(len(pending))]
