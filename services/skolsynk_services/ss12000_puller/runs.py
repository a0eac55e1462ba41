"""One run of an SS 12000 source (:func:`run_once`), full or incremental: read its SS 12000 API and publish one
source run to the normaliser; its :class:`RunReport` and the :class:`SyncStateStore`.

* **full**: every collection (organisations, persons, duties, groups, syllabuses, activities, and
  placements when a subscription of the organiser asks for them), in that order;
  ``SourceRunStarted(mode="full")``, one ``SourceRecordPage`` per API page that maps to records,
  ``SourceRunCompleted`` with the record count per kind.
* **incremental**: the same collections with ``meta.modified.after`` = high-water mark minus the
  overlap, then ``/deletedEntities?after=`` the same instant; records and deletions.

A read that fails after retries, or an object that cannot be mapped, makes the run **unhealthy**
(``healthy=False`` and error codes): the normaliser then removes nothing. The high-water mark (collection
``ss12000_sync_state``, one document per tenant and source) is the time the run *started*; it is stored
only after a healthy run was completely published, so a failed run is simply read again next time.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from dataclasses import field as dc_field
from datetime import UTC, datetime, timedelta
from typing import Any

from skolsynk.adapters.ss12000_api import Ss12000MappingError
from skolsynk.connectors.runs import Mode, RunPublisher, RunStateStore, millis, utcnow
from skolsynk.connectors.runs import RunReport as BaseRunReport
from skolsynk.connectors.sources.ss12000 import SourceConfig
from skolsynk.logging import get_logger
from skolsynk.messaging import Publisher
from skolsynk.storage import Database, IndexSpec
from skolsynk.storage.connector_state import SS12000_SYNC_STATE
from skolsynk_services.ss12000_puller.client import (
    RUN_DEADLINE_EXCEEDED,
    Ss12000Client,
    Ss12000ReadError,
    format_time,
)
from skolsynk_services.ss12000_puller.mapping import deleted_types, endpoints, map_deletions, map_page

log = get_logger(__name__)

SOURCE_KIND = "ss12000"
PRODUCER = "ss12000-puller"
STATE_COLLECTION = SS12000_SYNC_STATE
DEFAULT_OVERLAP = timedelta(minutes=5)
#: Unmappable objects a report keeps (ids for the source's log).
UNMAPPABLE_KEPT = 20

INDEXES = [IndexSpec(STATE_COLLECTION, (("tenant_id", 1), ("source_id", 1)), "tenant_source", unique=True)]


@dataclass(kw_only=True)
class RunReport(BaseRunReport):
    """What one run did (ids, counts and codes only)."""

    mode: Mode
    deletions: int = 0
    since: datetime | None = None
    high_water_mark: datetime | None = None
    #: Objects that could not be mapped (the first :data:`UNMAPPABLE_KEPT`): endpoint, the object's id when it
    #: is a UUID, and ``field: problem`` (no value), for the source's ``/log/``.
    unmappable: list[tuple[str, str | None, str]] = dc_field(default_factory=list)


class SyncStateStore(RunStateStore):
    """Per tenant and source: the high-water mark and what the last runs did."""

    def __init__(self, db: Database) -> None:
        super().__init__(db, STATE_COLLECTION)

    async def high_water_mark(self, source: SourceConfig) -> datetime | None:
        doc = await self.get(source)
        value = doc.get("high_water_mark") if doc else None
        if isinstance(value, datetime) and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value if isinstance(value, datetime) else None

    async def record_run(self, source: SourceConfig, report: RunReport, *, finished_at: datetime) -> None:
        """Store the outcome; the high-water mark moves (forward only) when the run was healthy."""
        update: dict[str, Any] = {"$set": self.run_fields(source, report, mode=report.mode, finished_at=finished_at)}
        if report.healthy:
            update["$max"] = {"high_water_mark": report.started_at}
        await self.collection.update_one({"_id": source.key}, update, upsert=True)


@dataclass(frozen=True)
class RunBounds:
    """What makes a pulled run end whatever the source answers: at most ``max_pages`` pages per listing,
    and ``deadline_seconds`` for the whole run."""

    max_pages: int = 100_000
    deadline_seconds: float = 6 * 3600.0


async def run_once(
    source: SourceConfig,
    *,
    mode: Mode,
    client: Ss12000Client,
    publisher: Publisher,
    exchange: str,
    state: SyncStateStore,
    overlap: timedelta = DEFAULT_OVERLAP,
    clock: Callable[[], datetime] = utcnow,
    bounds: RunBounds | None = None,
    placements: bool = False,
) -> RunReport:
    """Run once and publish the run (``/placements`` too when ``placements``: a subscription of the
    organiser asks for them; otherwise a full run leaves them out, so the normaliser removes any read
    before). An incremental run without a high-water mark (never a healthy
    run before) is run as a full one. Read errors end up in the report (and make it unhealthy);
    publish errors propagate (the run is then simply repeated later: the mark has not moved). The run
    always ends (``bounds``): a repeated page token, too many pages of a listing or the run's deadline
    fail it, with no deletions, as any incomplete run."""
    bounds = bounds or RunBounds()
    deadline = time.monotonic() + bounds.deadline_seconds
    since: datetime | None = None
    if mode == "incremental":
        mark = await state.high_water_mark(source)
        if mark is None:
            mode = "full"
        else:
            since = mark - overlap
    report = RunReport(
        tenant_id=source.tenant_id, source_id=source.source_id, mode=mode, started_at=millis(clock()), since=since
    )
    out = RunPublisher(publisher, exchange, source, report.run_id, source_kind=SOURCE_KIND, producer=PRODUCER)
    log.info(
        "ss12000_run_started",
        tenant_id=source.tenant_id,
        source_id=source.source_id,
        run_id=str(report.run_id),
        mode=mode,
    )
    await out.started(report, mode=mode)
    filters: Mapping[str, str] = {"meta.modified.after": format_time(since)} if since is not None else {}
    limits = {"max_pages": bounds.max_pages, "deadline": deadline}
    for endpoint in endpoints(placements=placements):
        if time.monotonic() > deadline:
            report.add_error(RUN_DEADLINE_EXCEEDED)  # the listings not read yet: once, not one each
            break
        await _read_collection(source, endpoint, filters, client, out, report, limits)
    if since is not None and time.monotonic() <= deadline:
        await _read_deletions(since, client, out, report, limits, placements=placements)
    await out.completed(report)
    finished = clock()
    await state.record_run(source, report, finished_at=finished)
    report.high_water_mark = await state.high_water_mark(source)
    log.info(
        "ss12000_run_completed",
        tenant_id=source.tenant_id,
        source_id=source.source_id,
        run_id=str(report.run_id),
        mode=mode,
        pages=report.pages,
        counts={k.value: v for k, v in report.counts.items()},
        deletions=report.deletions,
        healthy=report.healthy,
        errors=report.errors,
    )
    return report


async def _read_collection(
    source: SourceConfig,
    endpoint: str,
    filters: Mapping[str, str],
    client: Ss12000Client,
    out: RunPublisher,
    report: RunReport,
    limits: Mapping[str, Any],
) -> None:
    try:
        async for data in client.pages(endpoint, filters, **limits):
            if not isinstance(data, list):
                raise Ss12000ReadError("invalid_envelope")
            mapped = map_page(endpoint, data)
            for error, object_id in zip(mapped.unmappable, mapped.unmappable_ids, strict=True):
                # The object is missing from the run: a full run without it must not delete it.
                report.add_error(f"{endpoint}:unmappable")
                if len(report.unmappable) < UNMAPPABLE_KEPT:
                    report.unmappable.append((endpoint, object_id, f"{error.field}: {error.problem}"))
                log.warning(
                    "ss12000_object_unmappable",
                    source_id=source.source_id,
                    endpoint=endpoint,
                    field=error.field,
                    problem=error.problem,
                )
            report.count(mapped.records)
            if mapped.records:
                await out.page(mapped.records, [])
    except Ss12000ReadError as error:
        report.add_error(f"{endpoint}:{error.code}")
        log.warning("ss12000_read_failed", source_id=source.source_id, endpoint=endpoint, code=error.code)


async def _read_deletions(
    since: datetime,
    client: Ss12000Client,
    out: RunPublisher,
    report: RunReport,
    limits: Mapping[str, Any],
    *,
    placements: bool,
) -> None:
    filters: dict[str, str | list[str]] = {
        "after": format_time(since),
        "entities": list(deleted_types(placements=placements)),
    }
    try:
        async for data in client.pages("deletedEntities", filters, **limits):
            try:
                deletions = map_deletions(data)
            except Ss12000MappingError:
                report.add_error("deletedEntities:unmappable")
                continue
            report.deletions += len(deletions)
            if deletions:
                await out.page([], deletions)
    except Ss12000ReadError as error:
        report.add_error(f"deletedEntities:{error.code}")
        log.warning("ss12000_read_failed", source_id=out.source.source_id, endpoint="deletedEntities", code=error.code)
