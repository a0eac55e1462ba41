"""Message handlers of the normaliser.

``source-events`` (idempotent: each page is applied in one transaction with its inbox entry):
run started, record pages, run completed. When a run has everything, a projection is requested
through the outbox.

``projections`` (not wrapped in a transaction: it commits its own batches and is idempotent by
construction, since it sends only differences): finalise the run if there is one, then recompute
and send what every vendor of the tenant should hold.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from datetime import date, datetime
from typing import Any
from uuid import UUID

from skolsynk.contracts import Envelope
from skolsynk.contracts.source import SourceRecordPage, SourceRunCompleted, SourceRunStarted
from skolsynk.contracts.vendor import ProjectionRequested, ProjectionRequestedV2
from skolsynk.logging import get_logger
from skolsynk.messaging import MessageContext, PermanentError, TransientError
from skolsynk.storage.holds import HoldCause
from skolsynk.storage.projection_status import ProjectionStatus
from skolsynk_services.normaliser.metrics import NormaliserMetrics, StateGauges
from skolsynk_services.normaliser.projection import ProjectionReport, Projector
from skolsynk_services.normaliser.runs import Runs
from skolsynk_services.normaliser.state import ProjectionLock, now

log = get_logger(__name__)

#: Projection reasons that look only at what changed since the last projection.
INCREMENTAL_REASONS = frozenset({"snapshot"})
#: The reason of the request a projection of the whole organiser publishes when it runs out of its slice of
#: time: it asks for nothing of its own; whoever takes the tenant's lock next resumes the projection.
CONTINUATION = "continuation"


class NormaliserHandlers:
    def __init__(
        self,
        runs: Runs,
        projector: Projector,
        lock: ProjectionLock,
        *,
        control_exchange: str,
        today: Callable[[], date],
        metrics: NormaliserMetrics | None = None,
        gauges: StateGauges | None = None,
        status: ProjectionStatus | None = None,
        continue_projection: Callable[[str, UUID | None], Awaitable[None]] | None = None,
        slice_seconds: float | None = None,
    ) -> None:
        #: A projection of the whole organiser stops after this long (at the end of a chunk), hands the
        #: tenant's lock over with its checkpoint and asks for its continuation (``continue_projection``,
        #: published as its own message): no handler runs past the broker's acknowledgement timeout,
        #: however large the organiser. None: never stops (tests that project in one go).
        self.slice_seconds = slice_seconds if continue_projection is not None else None
        self.continue_projection = continue_projection
        #: Whether the tenant's projection is running and which of the admin's requests it has answered
        #: (what the test report's "Beräknas..." and "Klar" are read from).
        self.status = status
        self.metrics = metrics
        self.gauges = gauges
        self.runs = runs
        self.projector = projector
        self.lock = lock
        self.control_exchange = control_exchange
        self.today = today

    async def source_event(self, envelope: Envelope, context: MessageContext) -> None:
        tenant_id = envelope.tenant_id
        if tenant_id is None:
            raise PermanentError("source events must name their tenant")
        assert context.session is not None
        session = context.session
        if envelope.message_type == SourceRunStarted.message_type:
            started = SourceRunStarted.from_envelope(envelope)
            ready = await self.runs.start(tenant_id, started, session=session)
            run_id = started.run_id
        elif envelope.message_type == SourceRecordPage.message_type:
            page = SourceRecordPage.from_envelope(envelope)
            result = await self.runs.ingest(tenant_id, page, session=session)
            log.info(
                "page_ingested",
                run_id=str(page.run_id),
                page=page.page,
                received=result.received,
                valid=result.valid,
                withheld=result.withheld,
                deletions=result.deletions,
                staged=result.staged,
            )
            ready, run_id = result.run_ready, page.run_id
        elif envelope.message_type == SourceRunCompleted.message_type:
            completed = SourceRunCompleted.from_envelope(envelope)
            ready = await self.runs.complete(tenant_id, completed, session=session)
            run_id = completed.run_id
        else:
            raise PermanentError(f"the normaliser does not read {envelope.message_type}")
        if ready:
            await context.emit(
                ProjectionRequested(reason="snapshot", run_id=run_id).to_envelope(
                    tenant_id=tenant_id, correlation_id=run_id, producer="normaliser"
                ),
                exchange=self.control_exchange,
                routing_key=ProjectionRequested.message_type,
            )

    async def projection(self, envelope: Envelope, context: MessageContext) -> None:
        # Version 1 (every producer but the admin service) and version 2 (with the admin's change).
        if envelope.schema_version == ProjectionRequestedV2.schema_version:
            request: ProjectionRequested = ProjectionRequestedV2.from_envelope(envelope)
        else:
            request = ProjectionRequested.from_envelope(envelope)
        tenant_id = envelope.tenant_id
        if tenant_id is None:
            raise PermanentError("projection requests must name their tenant")
        await self.project(
            tenant_id,
            reason=request.reason,
            correlation_id=request.run_id,
            resend_vendor_id=request.resend_vendor_id,
            cause=request_cause(request),
        )

    async def finalise_ready_runs(self, tenant_id: str) -> list[HoldCause]:
        """Finalise the tenant's runs that have every message; returns them as the causes of the
        projection that follows (the source's data changed)."""
        finalised: list[HoldCause] = []
        for run_id in await self.runs.runs.ready(tenant_id):
            try:
                outcome = await self.runs.finalise(run_id)
            except TransientError:
                log.info("run_waits_for_an_earlier_run", run_id=str(run_id))
                continue
            run = await self.runs.runs.get(run_id) if outcome is not None else None
            if run is not None:
                finalised.append(source_cause(run))
        return finalised

    async def project(
        self,
        tenant_id: str,
        *,
        reason: str,
        correlation_id: UUID | None = None,
        resend_vendor_id: str | None = None,
        cause: HoldCause | None = None,
    ) -> None:
        """Project the tenant (or leave the request with the replica that is projecting it). ``cause`` is
        why (:func:`request_cause`), for the holds the projection makes; the runs it finalises are too.
        A projection of the whole organiser that a previous holder handed over unfinished is resumed first."""
        resend = frozenset({resend_vendor_id} if resend_vendor_id else ())
        # After a source run only what it changed is projected; anything else (a subscription or
        # profile change, a hold decision, an erasure, the date check, a resend) needs the whole organiser.
        whole = reason not in INCREMENTAL_REASONS
        causes: list[HoldCause] = [cause] if cause is not None else []
        own = reason != CONTINUATION  # a continuation asks for nothing of its own
        taken = await self.lock.acquire(
            tenant_id, resend=resend, whole=whole, cause=dict(cause) if cause else None, mark=own
        )
        if taken is None:
            log.info("projection_coalesced", tenant_id=tenant_id)
            return
        checkpoint = taken.checkpoint
        try:
            async with self.lock.kept(tenant_id):
                while True:
                    if checkpoint is not None:
                        report = await self._resume(tenant_id, checkpoint)
                        if report.checkpoint is not None:
                            await self._hand_over(
                                tenant_id,
                                {**checkpoint, "projection": report.checkpoint},
                                own=(resend, whole, cause) if own else None,
                            )
                            return
                        if self.metrics is not None and checkpoint.get("started_at"):  # every slice together
                            seconds = time.time() - float(checkpoint["started_at"])
                            self.metrics.projection_seconds.labels(str(checkpoint["reason"])).observe(seconds)
                        answered, checkpoint = checkpoint.get("answers"), None
                        if self.status is not None:
                            await self.status.finished(tenant_id, answered=answered, at=now())
                    if own:
                        answers = await self.status.started(tenant_id, at=now()) if self.status is not None else 0
                        # Under the tenant's lock: finalise every run that has all its messages (in the
                        # order they started), then project once for all of them.
                        causes = [*await self.finalise_ready_runs(tenant_id), *causes]
                        started = time.monotonic()
                        report = await self.projector.project_tenant(
                            tenant_id,
                            today=self.today(),
                            reason=reason,
                            correlation_id=correlation_id,
                            resend_vendor_ids=resend,
                            whole=whole,
                            causes=tuple(causes),
                            deadline=started + self.slice_seconds if self.slice_seconds is not None else None,
                        )
                        if report.checkpoint is not None:
                            await self._hand_over(
                                tenant_id,
                                {
                                    "reason": reason,
                                    "correlation_id": str(correlation_id) if correlation_id else None,
                                    "resend": sorted(resend),
                                    "causes": [dict(c) for c in causes],
                                    "answers": answers,
                                    "started_at": time.time() - (time.monotonic() - started),
                                    "projection": report.checkpoint,
                                },
                                own=None,
                            )
                            return
                        if self.metrics is not None:
                            self.metrics.projection_seconds.labels(reason).observe(time.monotonic() - started)
                        if self.status is not None:
                            await self.status.finished(tenant_id, answered=answers if whole else None, at=now())
                    await self._refresh_gauges(tenant_id)
                    # Requests that arrived meanwhile (with any resends, or a need for the whole
                    # organiser, they asked for, and their causes) run once more.
                    again, resend, whole, left = await self.lock.release_with_causes(tenant_id)
                    causes = [HoldCause(**c) for c in left]  # type: ignore[typeddict-item]
                    if not again:
                        break
                    own, cause = True, None
                    if reason == CONTINUATION:
                        reason = "requested"
        except BaseException:
            await self.lock.give_up(tenant_id, checkpoint=checkpoint)
            if self.status is not None:
                await self.status.failed(tenant_id)
            raise

    async def _resume(self, tenant_id: str, checkpoint: dict[str, Any]) -> ProjectionReport:
        """Carry on with the projection of the whole organiser ``checkpoint`` says, for one more slice."""
        log.info("whole_projection_resumed", tenant_id=tenant_id, chunks=checkpoint["projection"].get("chunks"))
        correlation = checkpoint.get("correlation_id")
        return await self.projector.project_tenant(
            tenant_id,
            today=self.today(),
            reason=str(checkpoint["reason"]),
            correlation_id=UUID(correlation) if correlation else None,
            resend_vendor_ids=frozenset(checkpoint.get("resend") or ()),
            causes=tuple(HoldCause(**c) for c in checkpoint.get("causes") or ()),  # type: ignore[typeddict-item]
            deadline=time.monotonic() + self.slice_seconds if self.slice_seconds is not None else None,
            resume=checkpoint["projection"],
        )

    async def _hand_over(
        self,
        tenant_id: str,
        checkpoint: dict[str, Any],
        *,
        own: tuple[frozenset[str], bool, HoldCause | None] | None,
    ) -> None:
        """Leave the tenant locked with the unfinished projection's checkpoint (and ``own``, this request's
        resends, whole and cause, when it is still to be projected) and ask for the rest."""
        assert self.continue_projection is not None
        resend, whole, cause = own or (frozenset(), False, None)
        handed = await self.lock.hand_over(
            tenant_id, checkpoint, resend=resend, whole=whole, cause=dict(cause) if cause else None, unserved=bool(own)
        )
        if not handed:
            raise TransientError("the tenant's projection lock was lost while projecting")
        correlation = checkpoint.get("correlation_id")
        await self.continue_projection(tenant_id, UUID(correlation) if correlation else None)
        log.info("whole_projection_handed_over", tenant_id=tenant_id, chunks=checkpoint["projection"].get("chunks"))

    async def _refresh_gauges(self, tenant_id: str) -> None:
        """The tenant's findings, and the runs and holds, as the projection left them (metrics only:
        a failure is logged, never fails the projection)."""
        if self.gauges is None:
            return
        try:
            await self.gauges.after_projection(tenant_id)
        except Exception:
            log.warning("state_gauges_refresh_failed", exc_info=True)


def request_cause(request: ProjectionRequested) -> HoldCause | None:
    """Why a projection was requested, as a hold records it: an admin's change (who, what, when), the
    date check (end dates in the source's data), or another reason. None after a source run: the runs
    the projection finalises are its causes (:meth:`NormaliserHandlers.finalise_ready_runs`)."""
    requester = request.requested_by if isinstance(request, ProjectionRequestedV2) else None
    if requester is not None:
        cause = HoldCause(kind="change", reason=request.reason, actor=requester.actor, action=requester.action)
        cause["at"] = requester.at
        if requester.target is not None:
            cause["target"] = requester.target
        return cause
    if request.reason in INCREMENTAL_REASONS:
        return None
    if request.reason == "dates":
        return HoldCause(kind="dates", reason=request.reason)
    return HoldCause(kind="other", reason=request.reason)


def source_cause(run: dict[str, object]) -> HoldCause:
    """A finalised source run as a hold's cause: which source, which run, when it finished."""
    cause = HoldCause(kind="source", source_id=str(run.get("source_id")), run_id=str(run["_id"]))
    if run.get("mode"):
        cause["mode"] = str(run["mode"])
    finished = run.get("finalised_at") or run.get("started_at")
    if isinstance(finished, datetime):
        cause["at"] = finished
    return cause
