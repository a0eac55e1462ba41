"""Source runs: pages in, completeness judged, absent entities removed only after a complete and
healthy full snapshot."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from normaliser.metrics import NormaliserMetrics
from normaliser.state import EntityStore, RunStore, now
from normaliser.validation import RecordValidator
from skolsynk.contracts.source import SourceRecordPage, SourceRunCompleted, SourceRunStarted
from skolsynk.domain.ids import content_hash, entity_id
from skolsynk.domain.quality import Finding, FindingCode
from skolsynk.logging import get_logger
from skolsynk.messaging import TransientError
from skolsynk.storage import Database, Session
from skolsynk.storage.findings import FindingStore

log = get_logger(__name__)

#: A finalising run whose finaliser died is taken over after this.
STALE_FINALISE = timedelta(minutes=10)
#: A run waits for earlier runs of its source started within this window (older ones were abandoned).
EARLIER_RUNS_WAITED_FOR = timedelta(hours=1)


@dataclass(frozen=True)
class PageResult:
    received: int
    valid: int
    withheld: int
    deletions: int
    run_ready: bool


@dataclass(frozen=True)
class RunOutcome:
    complete: bool
    reasons: tuple[str, ...]
    removed: int


class Runs:
    def __init__(self, db: Database, metrics: NormaliserMetrics | None = None) -> None:
        self.entities = EntityStore(db)
        self.runs = RunStore(db)
        self.findings = FindingStore(db)
        self.metrics = metrics

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

    async def ingest(self, tenant_id: str, page: SourceRecordPage, *, session: Session) -> PageResult:
        validator = RecordValidator(tenant_id, page.source_id, page.run_id)
        documents: dict[str, dict[str, Any]] = {}
        findings: list[Finding] = []
        seen: list[str] = []
        counts: dict[str, int] = {}
        withheld = 0
        for record in page.records:
            record_id = str(entity_id(tenant_id, page.source_id, record.kind, record.key))
            seen.append(record_id)
            counts[record.kind.value] = counts.get(record.kind.value, 0) + 1
            entity, record_findings = validator.validate(record)
            findings += record_findings
            if entity is None:
                withheld += 1  # its last good version (if any) stays, and it counts as seen
                continue
            data = entity.model_dump(mode="json")
            documents[record_id] = {
                "_id": record_id,
                "tenant_id": tenant_id,
                "source_id": page.source_id,
                "kind": record.kind.value,
                "key": record.key,
                "data": data,
                "hash": content_hash(data),
                "updated_at": now(),
            }
        deletions = [str(entity_id(tenant_id, page.source_id, d.kind, d.key)) for d in page.deletions]
        await self.findings.add(findings, session=session)
        # Pages are staged and applied in page order when the run is finalised: pages of one run
        # (and runs of one source) may be handled in any order, and an entity created on one page
        # and deleted on a later one (or the reverse) must end as the source left it.
        doc = await self.runs.page_received(
            page.run_id,
            page.page,
            tenant_id=tenant_id,
            source_id=page.source_id,
            seen=seen,
            counts=counts,
            documents=list(documents.values()),
            deletions=deletions,
            session=session,
        )
        ready = await self._ready_if_complete(doc, session=session)
        return PageResult(len(page.records), len(documents), withheld, len(deletions), ready)

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

    async def _ready_if_complete(self, doc: dict[str, Any], *, session: Session) -> bool:
        """All pages and the completion are in (in any order): the run may be finalised."""
        completion = doc.get("completion")
        if completion is None or doc.get("mode") is None:
            return False
        if set(doc.get("pages_received", [])) != set(range(completion["pages"])):
            return False
        return await self.runs.mark_ready(UUID(doc["_id"]), session=session)

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
        pages = sorted(await self.runs.page_documents(run_id), key=lambda p: int(p["_id"].rsplit(":", 1)[1]))
        received: dict[str, int] = {}
        seen: set[str] = set()
        applied = deleted = 0
        for page in pages:
            seen.update(page["seen"])
            for kind, count in page["counts"].items():
                received[kind] = received.get(kind, 0) + count
            documents = page.get("documents") or []
            stored = await self.entities.hashes([UUID(d["_id"]) for d in documents])
            changed = [d for d in documents if stored.get(d["_id"]) != d["hash"]]
            await self.entities.write(changed)
            applied += len(changed)
            deleted += await self.entities.delete(page.get("deletions") or [])
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
            carried = seen | {d for page in pages for d in page.get("deletions") or []}
            await self.findings.keep_only_run(tenant_id, source_id, run_id, only_entities=carried)
        await self.runs.forget_page_contents(run_id)
        outcome = RunOutcome(complete=complete, reasons=tuple(reasons), removed=removed)
        await self.runs.finalised(run_id, {"complete": complete, "reasons": reasons, "removed": removed})
        log.info("run_finalised", run_id=str(run_id), complete=complete, removed=removed, mode=doc["mode"])
        self._count(doc, complete=complete, applied=applied, removed=removed + deleted)
        return outcome

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
