"""Source runs: pages in, completeness judged, absent entities removed only after a complete and
healthy full snapshot.

Ingest. Each message of a run (its start, each page, its completion) is handled in its own
transaction, in any order and concurrently. A page writes only its own ``run_pages`` document: pages
of one run never contend. A page stages only the records whose content hash differs from the stored
entity's (read for the whole page in one query), plus its deletions, and records every record id as
seen (16 bytes each) for the absence check. When another run of the source is unfinished, a page
stages everything: that run may still change what is stored before this one is applied.

Readiness. The run is ready when its start, its completion and all its pages are in; the one message
that sees this moves the run from ``running`` to ``ready`` with a conditional update and requests the
projection, so exactly once. Transactions see a snapshot, so two messages committing at the same time
could each miss the other; to rule that out, a message that sees the start and the completion but
not every page writes to the documents of missing pages (``RunStore.expect_pages``): the start and
the completion to all of them, a page to one. A missing page that is in flight writes the same
document, so the two cannot both commit and the retried one sees the other. Hence the message that
commits last sees everything and makes the run ready; pages arriving before the completion (the usual
case) write nothing shared at all. The start and the completion both write the run document, so they
too see each other.

Finalise. Pages are applied in page order, each with one read of the stored hashes and bulk writes. A
record staged as unchanged on a page is restored to its stored content if an earlier page of the run
changed or deleted it (an entity deleted and re-added within a run ends as the source left it).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from skolsynk.contracts.source import SourceRecordPage, SourceRunCompleted, SourceRunStarted
from skolsynk.domain.ids import content_hash, entity_id
from skolsynk.domain.quality import Finding, FindingCode
from skolsynk.logging import get_logger
from skolsynk.messaging import TransientError
from skolsynk.storage import Database, Document, Session
from skolsynk.storage.findings import FindingStore
from skolsynk_services.normaliser.metrics import NormaliserMetrics
from skolsynk_services.normaliser.state import EntityStore, RunStore, now, unpack_ids
from skolsynk_services.normaliser.validation import RecordValidator

log = get_logger(__name__)

#: A finalising run whose finaliser died is taken over after this.
STALE_FINALISE = timedelta(minutes=10)
#: Validated pages kept for a retried transaction of the same page (see ``Runs._validated``).
VALIDATED_PAGES_KEPT = 64
#: The fields of a staged entity document (what ingest builds and finalise writes).
STAGED_FIELDS = ("_id", "tenant_id", "source_id", "kind", "key", "data", "hash", "updated_at")
#: A run waits for earlier runs of its source started within this window (older ones were abandoned).
EARLIER_RUNS_WAITED_FOR = timedelta(hours=1)


@dataclass(frozen=True)
class PageResult:
    received: int
    valid: int
    withheld: int
    deletions: int
    run_ready: bool
    #: Records written to the page's staging document (valid records whose content changed).
    staged: int = 0


@dataclass
class ValidatedPage:
    """A page's records as ingest stages them (before unchanged ones are left out)."""

    documents: dict[str, Document] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    seen: list[str] = field(default_factory=list)
    withheld: set[str] = field(default_factory=set)
    withheld_records: int = 0
    counts: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class RunOutcome:
    complete: bool
    reasons: tuple[str, ...]
    removed: int
    #: Entities written (new or changed content), deleted by the run's deletions, or removed as absent:
    #: what an incremental projection must look at.
    touched_entity_ids: frozenset[str] = frozenset()


class Runs:
    def __init__(self, db: Database, metrics: NormaliserMetrics | None = None) -> None:
        self.entities = EntityStore(db)
        self.runs = RunStore(db)
        self.findings = FindingStore(db)
        self.metrics = metrics
        self._recently_validated: OrderedDict[tuple[str, str, int, int], ValidatedPage] = OrderedDict()

    async def start(self, tenant_id: str, message: SourceRunStarted, *, session: Session) -> bool:
        doc = await self.runs.started(
            message.run_id,
            {
                "tenant_id": tenant_id,
                "source_id": message.source_id,
                "source_kind": message.source_kind,
                "mode": message.mode,
                "started_at": message.started_at,
            },
            session=session,
        )
        return await self._ready_if_complete(doc, session=session)

    def _validated(self, tenant_id: str, page: SourceRecordPage) -> ValidatedPage:
        """The page's records validated, once per page: a transaction that is retried (a write
        conflict) runs the handler again, and validation is most of a page's cost. Pages are immutable
        (a run's page number names one content), so the result of the first attempt is reused."""
        key = (tenant_id, str(page.run_id), page.page, len(page.records))
        cached = self._recently_validated.get(key)
        if cached is not None:
            self._recently_validated.move_to_end(key)
            return cached
        validator = RecordValidator(tenant_id, page.source_id, page.run_id)
        result = ValidatedPage()
        for record in page.records:
            record_id = str(entity_id(tenant_id, page.source_id, record.kind, record.key))
            result.seen.append(record_id)
            result.counts[record.kind.value] = result.counts.get(record.kind.value, 0) + 1
            entity, record_findings = validator.validate(record)
            result.findings += record_findings
            if entity is None:
                result.withheld.add(record_id)  # its last good version (if any) stays, and it counts as seen
                result.withheld_records += 1
                result.documents.pop(record_id, None)
                continue
            result.withheld.discard(record_id)
            data = entity.model_dump(mode="json")
            result.documents[record_id] = {
                "_id": record_id,
                "tenant_id": tenant_id,
                "source_id": page.source_id,
                "kind": record.kind.value,
                "key": record.key,
                "data": data,
                "hash": content_hash(data),
                "updated_at": now(),
            }
        self._recently_validated[key] = result
        while len(self._recently_validated) > VALIDATED_PAGES_KEPT:
            self._recently_validated.popitem(last=False)
        return result

    async def ingest(self, tenant_id: str, page: SourceRecordPage, *, session: Session) -> PageResult:
        validated = self._validated(tenant_id, page)
        documents, findings = dict(validated.documents), validated.findings
        seen, withheld, counts = validated.seen, validated.withheld, validated.counts
        valid = len(documents)
        deletions = [str(entity_id(tenant_id, page.source_id, d.kind, d.key)) for d in page.deletions]
        await self.findings.add(findings, session=session)
        if documents and not await self.runs.others_unfinished(
            tenant_id, page.source_id, page.run_id, newer_than=now() - EARLIER_RUNS_WAITED_FOR, session=session
        ):
            # Unchanged records are not staged: one read of the page's stored hashes decides.
            stored = await self.entities.hashes([UUID(i) for i in documents], session=session)
            documents = {i: d for i, d in documents.items() if stored.get(i) != d["hash"]}
        # Pages are staged and applied in page order when the run is finalised: pages of one run
        # (and runs of one source) may be handled in any order, and an entity created on one page
        # and deleted on a later one (or the reverse) must end as the source left it.
        await self.runs.page_received(
            page.run_id,
            page.page,
            seen=seen,
            withheld=sorted(withheld),
            counts=counts,
            documents=list(documents.values()),
            deletions=deletions,
            session=session,
        )
        doc = await self.runs.get(page.run_id, session=session)
        ready = doc is not None and await self._ready_if_complete(doc, arrived_page=page.page, session=session)
        return PageResult(
            len(page.records), valid, validated.withheld_records, len(deletions), ready, staged=len(documents)
        )

    async def complete(self, tenant_id: str, message: SourceRunCompleted, *, session: Session) -> bool:
        doc = await self.runs.completed(
            message.run_id,
            {
                "pages": message.pages,
                "counts": {k.value: v for k, v in message.counts.items()},
                "healthy": message.healthy,
                "errors": message.errors,
                "tenant_id": tenant_id,
            },
            session=session,
        )
        return await self._ready_if_complete(doc, session=session)

    async def _ready_if_complete(
        self, doc: dict[str, Any], *, session: Session, arrived_page: int | None = None
    ) -> bool:
        """All pages, the start and the completion are in (in any order): the run may be finalised.
        True for the one caller that made the run ready (see the module's docstring for why exactly
        one does, whatever order the messages commit in)."""
        completion = doc.get("completion")
        if completion is None or doc.get("mode") is None:
            return False  # the start or the completion is still to come, and will look again
        run_id = UUID(doc["_id"])
        expected = int(completion["pages"])
        missing = set(range(expected)) - await self.runs.received_pages(run_id, session=session)
        if missing:
            if arrived_page is None:
                await self.runs.expect_pages(run_id, missing, session=session)
            else:  # one is enough: the next missing page after this one
                after = [p for p in sorted(missing) if p > arrived_page]
                await self.runs.expect_pages(run_id, [after[0] if after else min(missing)], session=session)
            return False
        return await self.runs.mark_ready(run_id, session=session)

    async def finalise(self, run_id: UUID) -> RunOutcome | None:
        """Judge the run and, for a complete and healthy full snapshot, remove what it did not contain.
        Returns None when the run is not ready or someone else finalises it."""
        doc = await self.runs.claim_for_finalising(run_id, stale_after=STALE_FINALISE)
        if doc is None:
            return None
        tenant_id, source_id = doc["tenant_id"], doc["source_id"]
        if await self.runs.earlier_unfinished(doc, newer_than=now() - EARLIER_RUNS_WAITED_FOR):
            await self.runs.unclaim(run_id)
            raise TransientError("an earlier run of this source is not finalised yet")
        completion = doc["completion"]
        # Every page's outline (ids and counts) first, then its records one page at a time: memory holds
        # the run's ids, never all of its records (a full run is the whole organiser).
        pages = sorted(await self.runs.page_outlines(run_id), key=_page_number)
        restores = await self._restores(pages)
        received: dict[str, int] = {}
        seen: set[str] = set()
        deleted_ids: set[str] = set()
        touched: set[str] = set()
        applied = deleted = 0
        for page, restore in zip(pages, restores, strict=True):
            page_seen = unpack_ids(page.get("seen"))
            seen.update(page_seen)
            for kind, count in page["counts"].items():
                received[kind] = received.get(kind, 0) + count
            staged = await self.runs.staged_documents(page["_id"]) if page.get("documents") else []
            documents = [*restore, *staged]
            deletions = page.get("deletions") or []
            deleted_ids.update(deletions)
            # One read per page: the stored hashes of what it writes and whether what it deletes exists.
            ids = {*(d["_id"] for d in documents), *deletions}
            stored = await self.entities.hashes([UUID(i) for i in ids]) if ids else {}
            changed = list({d["_id"]: d for d in documents if stored.get(d["_id"]) != d["hash"]}.values())
            await self.entities.write(changed)
            applied += len(changed)
            touched.update(d["_id"] for d in changed)
            existing = [i for i in deletions if i in stored or i in {d["_id"] for d in changed}]
            deleted += await self.entities.delete(deletions)
            touched.update(existing)
        reasons = []
        if not completion["healthy"]:
            reasons.append("the source reported read errors")
        if len(pages) != completion["pages"]:
            reasons.append(f"{len(pages)} of {completion['pages']} pages received")
        for kind, expected in sorted(completion["counts"].items()):
            if received.get(kind, 0) != expected:
                reasons.append(f"{kind}: {received.get(kind, 0)} records received, the source counted {expected}")
        complete = not reasons
        removed = 0
        if doc["mode"] == "full" and complete:
            absent = await self.entities.ids_of_source(tenant_id, source_id) - seen
            removed = await self.entities.delete(absent)
            touched.update(absent)
        elif doc["mode"] == "full":
            await self.findings.add(
                [
                    Finding.of(
                        FindingCode.RUN_INCOMPLETE,
                        tenant_id=tenant_id,
                        source_id=source_id,
                        run_id=run_id,
                        origin="run",
                        detail="; ".join(reasons)[:300],
                    )
                ]
            )
        if doc["mode"] == "full":
            await self.findings.keep_only_run(tenant_id, source_id, run_id)
        else:
            carried = seen | deleted_ids
            await self.findings.keep_only_run(tenant_id, source_id, run_id, only_entities=carried)
        await self.runs.forget_page_contents(run_id)
        outcome = RunOutcome(
            complete=complete, reasons=tuple(reasons), removed=removed, touched_entity_ids=frozenset(touched)
        )
        await self.runs.finalised(run_id, {"complete": complete, "reasons": reasons, "removed": removed})
        log.info(
            "run_finalised",
            run_id=str(run_id),
            complete=complete,
            removed=removed,
            mode=doc["mode"],
            touched=len(touched),
        )
        self._count(doc, complete=complete, applied=applied, removed=removed + deleted)
        return outcome

    async def _restores(self, pages: list[Document]) -> list[list[Document]]:
        """Per page (its outline: staged records by id only), the stored entities to write back when it
        is applied: records it carried unchanged (so not staged) that an earlier page of the run changed
        or deleted. Read once, before any page is applied, when the store still holds what those pages
        saw at ingest."""
        wanted: list[set[str]] = []
        earlier: set[str] = set()
        for page in pages:
            staged = {d["_id"] for d in page.get("documents") or []}
            deletions = set(page.get("deletions") or [])
            unchanged = set(unpack_ids(page.get("seen"))) - staged - deletions - set(page.get("withheld") or [])
            wanted.append(unchanged & earlier)
            earlier |= staged | deletions
        ids = set().union(*wanted) if wanted else set()
        if not ids:
            return [[] for _ in pages]
        stored = {
            doc["_id"]: {key: doc[key] for key in STAGED_FIELDS if key in doc}
            for doc in await self.entities.by_ids(ids)
        }
        return [[stored[i] for i in sorted(page_ids) if i in stored] for page_ids in wanted]

    def _count(self, doc: dict[str, Any], *, complete: bool, applied: int, removed: int) -> None:
        if self.metrics is None:
            return
        tenant_id, source_id = doc["tenant_id"], doc["source_id"]
        kind, mode = str(doc.get("source_kind") or "unknown"), str(doc["mode"])
        self.metrics.runs_finalised.labels(tenant_id, source_id, kind, mode, str(complete).lower()).inc()
        self.metrics.records_applied.labels(tenant_id, source_id).inc(applied)
        self.metrics.records_removed.labels(tenant_id, source_id).inc(removed)
        started = doc.get("started_at")
        if isinstance(started, datetime):
            started = started if started.tzinfo is not None else started.replace(tzinfo=UTC)
            self.metrics.run_duration.labels(kind, mode).observe(max((now() - started).total_seconds(), 0.0))


def _page_number(page: Document) -> int:
    return int(page["page"]) if "page" in page else int(page["_id"].rsplit(":", 1)[1])
