"""One run of a Google Workspace source (:func:`run_once`): a full snapshot, published as one source run to
the normaliser; its :class:`RunReport` and the :class:`SyncStateStore` (collection ``google_sync_state``).

Order of reading: ``orgunits.list`` (type=all) for the school units, ``groups.list`` and ``members.list``
of the groups the mapping needs (class and teaching groups, role groups), then ``users.list`` page by page
(one ``SourceRecordPage`` per Google page), then the groups and activities. Published as
``SourceRunStarted(mode="full")``, the pages, ``SourceRunCompleted`` with the count per kind.

Google has no user delta: only complete snapshots remove anything (the normaliser removes what a complete
and healthy full run did not contain). So a run stops at its first read that fails for good (a permanent
403, an auth error, throttling or 5xx beyond the retries) and completes with ``healthy=False`` and the error
code: what it already sent is applied, nothing is removed. Leavers (suspended, archived users, as
configured) are left out of the snapshot, and so removed by it.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from skolsynk.connectors.runs import RunPublisher, RunStateStore, gather_limited, millis
from skolsynk.connectors.runs import RunReport as BaseRunReport
from skolsynk.connectors.runs import utcnow as utcnow
from skolsynk.connectors.sources.google import SourceConfig
from skolsynk.contracts.source import SourceRecord
from skolsynk.logging import get_logger
from skolsynk.messaging import Publisher
from skolsynk.storage import Database, IndexSpec
from skolsynk.storage.connector_state import GOOGLE_SYNC_STATE
from skolsynk_services.google_connector.auth import GoogleReadError
from skolsynk_services.google_connector.client import GoogleClient
from skolsynk_services.google_connector.mapping import (
    DirectoryMapping,
    MappingStats,
    UnmappableUser,
    in_scope,
    users_queries,
)
from skolsynk_services.google_connector.metrics import GoogleMetrics

log = get_logger(__name__)

SOURCE_KIND = "google"
PRODUCER = "google-connector"
STATE_COLLECTION = GOOGLE_SYNC_STATE
MAX_PAGE_ITEMS = 2000  # well under SourceRecordPage's 5000
INDEXES = [IndexSpec(STATE_COLLECTION, (("tenant_id", 1), ("source_id", 1)), "tenant_source", unique=True)]


@dataclass(kw_only=True)
class RunReport(BaseRunReport):
    """What one run did (ids, counts and codes only)."""

    reason: str
    leavers: int = 0
    index_lag: int = 0  # users the search missed and a direct read found (searched scopes)
    requests: int = 0
    seconds: float = 0.0
    stats: MappingStats = field(default_factory=MappingStats)


class SyncStateStore(RunStateStore):
    """Per tenant and source: the last full run, the last healthy one, the Reports API cursor."""

    def __init__(self, db: Database) -> None:
        super().__init__(db, STATE_COLLECTION)

    async def record_run(
        self, source: SourceConfig, report: RunReport, *, finished_at: datetime, present: set[str] | None = None
    ) -> None:
        """The run's outcome, in one write. A healthy run also replaces the user ids kept for the next run's
        direct reads (``present``: a searched scope's users, about 30 bytes each; None: none kept)."""
        counts = {k.value: v for k, v in report.counts.items()}
        fields = self.run_fields(
            source, report, mode="full", finished_at=finished_at, reason=report.reason, counts=counts
        )
        update: dict[str, Any] = {"$set": fields}
        if report.healthy and present is not None:
            fields["users_present"] = sorted(present)
        elif report.healthy:
            update["$unset"] = {"users_present": ""}
        await self.collection.update_one({"_id": source.key}, update, upsert=True)

    async def present_users(self, source: SourceConfig) -> frozenset[str]:
        """The Google user ids in the last healthy snapshot of a searched scope (none for the whole domain)."""
        doc = await self.collection.find_one({"_id": source.key}, {"users_present": 1})
        return frozenset((doc or {}).get("users_present") or ())

    async def set_reports_cursor(self, source: SourceConfig, cursor: datetime, seen: list[str]) -> None:
        await self.collection.update_one(
            {"_id": source.key},
            {
                "$set": {
                    "tenant_id": source.tenant_id,
                    "source_id": source.source_id,
                    "reports_cursor": cursor,
                    "reports_seen": seen,
                }
            },
            upsert=True,
        )


class SnapshotReader:
    """Reads one full snapshot as batches of records (one batch per published page). :attr:`endpoint` is
    what was being read when a :class:`GoogleReadError` escapes."""

    def __init__(
        self,
        source: SourceConfig,
        client: GoogleClient,
        *,
        members_concurrency: int = 4,
        previous: frozenset[str] = frozenset(),
    ) -> None:
        self.source = source
        self.client = client
        self.members_concurrency = members_concurrency
        #: The users of the last healthy snapshot (searched scopes only): the ones a search misses are
        #: read directly before they count as gone.
        self.previous = previous
        self.endpoint = "orgunits"
        self.mapping: DirectoryMapping | None = None
        self.leavers = 0
        self.unmappable = 0
        #: The users in this snapshot (kept for the next run when the scope is searched).
        self.present: set[str] = set()
        #: Whether users were read through the search index (a scope narrower than the whole domain).
        self.searched = False
        #: Users the search did not return but a direct read found in scope: the index lagged.
        self.index_lag = 0

    def _leaver(self, user: dict[str, Any]) -> bool:
        leavers = self.source.leavers
        return bool((leavers.suspended and user.get("suspended")) or (leavers.archived and user.get("archived")))

    async def _members(self, groups: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
        ids = [str(group["id"]) for group in groups]
        found = await gather_limited(ids, self.client.members, self.members_concurrency)
        return dict(zip(ids, found, strict=True))

    def _user_records(self, mapping: DirectoryMapping, user: dict[str, Any]) -> list[SourceRecord]:
        if self._leaver(user):
            self.leavers += 1
            return []
        try:
            records = mapping.map_user(user)
        except UnmappableUser:
            self.unmappable += 1
            return []
        self.present.add(str(user.get("id", "")))
        return records

    async def _direct(self, user_ids: list[str], projection: str, schemas: list[str]) -> list[dict[str, Any]]:
        """``users.get`` of each (a few at a time); the ones Google no longer has are left out."""

        async def read(user_id: str) -> dict[str, Any] | None:
            return await self.client.user(user_id, projection=projection, custom_field_mask=schemas)

        found = await gather_limited(user_ids, read, self.members_concurrency)
        return [user for user in found if user is not None]

    async def batches(self) -> AsyncGenerator[list[SourceRecord], None]:
        config = self.source.mapping
        self.endpoint = "orgunits"
        mapping = DirectoryMapping(config, await self.client.org_units())
        self.mapping = mapping
        groups: list[dict[str, Any]] = []
        members: dict[str, list[dict[str, Any]]] = {}
        if config.groups or config.role_groups():
            self.endpoint = "groups"
            groups = [g for g in await self.client.groups() if g.get("id") and mapping.wants_members(g)]
            self.endpoint = "members"
            members = await self._members(groups)
            for group in groups:
                if mapping.is_role_group(group):
                    mapping.add_role_group_members(group, members.get(str(group["id"]), []))
            found = {str(g.get(k, "")).casefold() for g in groups for k in ("id", "email")}
            missing = [name for name in config.role_groups() if name.casefold() not in found]
            if missing:  # nobody gets the role from such a rule
                mapping.stats.problems["role_group_missing"] += len(missing)
        yield mapping.unit_records()
        self.endpoint = "users"
        schemas = config.custom_schemas()
        projection = "custom" if schemas else "basic"
        seen: set[str] = set()
        queries = users_queries(config)
        self.searched = None not in queries
        for query in queries:
            pages = self.client.users(query=query, projection=projection, custom_field_mask=schemas)
            async with contextlib.aclosing(pages):
                async for users in pages:
                    records: list[SourceRecord] = []
                    for user in users:
                        user_id = str(user.get("id", ""))
                        if user_id and user_id in seen:
                            continue
                        seen.add(user_id)
                        records += self._user_records(mapping, user)
                    yield records
        if self.searched:
            # Google's search results can lag a change by up to 36 hours: a user of the last snapshot that
            # the search did not return is read directly, and stays if they are still in scope.
            missing = sorted(self.previous - seen)
            records = []
            for user in await self._direct(missing, projection, schemas):
                if in_scope(str(user.get("orgUnitPath") or "/"), config):
                    self.index_lag += 1
                    records += self._user_records(mapping, user)
            if records:
                yield records
        yield mapping.unit_records()  # school units found through a custom field
        yield mapping.group_records(groups, members)


async def run_once(
    source: SourceConfig,
    *,
    client: GoogleClient,
    publisher: Publisher,
    exchange: str,
    state: SyncStateStore,
    metrics: GoogleMetrics | None = None,
    reason: str = "schedule",
    members_concurrency: int = 4,
    clock: Callable[[], datetime] = utcnow,
) -> RunReport:
    """Read and publish one full snapshot. Read errors end the reading and make the run unhealthy;
    publish errors propagate (the run is simply repeated later)."""
    began = time.monotonic()
    report = RunReport(
        tenant_id=source.tenant_id, source_id=source.source_id, reason=reason, started_at=millis(clock())
    )
    requests_before = client.requests
    out = RunPublisher(
        publisher,
        exchange,
        source,
        report.run_id,
        source_kind=SOURCE_KIND,
        producer=PRODUCER,
        page_items=MAX_PAGE_ITEMS,
    )
    ids = {"tenant_id": source.tenant_id, "source_id": source.source_id, "run_id": str(report.run_id)}
    log.info("google_run_started", reason=reason, **ids)
    await out.started(report, mode="full")
    previous = await state.present_users(source)
    reader = SnapshotReader(source, client, members_concurrency=members_concurrency, previous=previous)
    try:
        async with contextlib.aclosing(reader.batches()) as batches:
            async for records in batches:
                report.count(records)
                await out.page(records)
    except GoogleReadError as error:
        report.add_error(error.qualified(reader.endpoint))
        log.warning("google_read_failed", endpoint=error.step or reader.endpoint, code=error.code, **ids)
    if reader.unmappable:
        report.add_error("users:unmappable")  # users missing from the snapshot: it must not delete them
    report.leavers = reader.leavers
    report.index_lag = reader.index_lag
    if reader.mapping is not None:
        report.stats = reader.mapping.stats
    await out.completed(report)
    report.requests = client.requests - requests_before
    report.seconds = time.monotonic() - began
    await state.record_run(source, report, finished_at=clock(), present=reader.present if reader.searched else None)
    if metrics is not None:
        metrics.observe(report)
    log.info(
        "google_run_completed",
        pages=report.pages,
        counts={k.value: v for k, v in report.counts.items()},
        healthy=report.healthy,
        errors=report.errors,
        leavers=report.leavers,
        index_lag=report.index_lag,
        unplaced=report.stats.unplaced,
        problems=dict(report.stats.problems),
        per_school_unit={code: dict(roles) for code, roles in sorted(report.stats.by_school_unit.items())},
        requests=report.requests,
        seconds=round(report.seconds, 3),
        **ids,
    )
    return report
