"""Message handlers of the GDPR service (queue ``gdpr.events``, every message in a transaction with
its inbox entry, so a redelivery has its effect once).

* ``gdpr.deletion.requested``: open a ledger entry (and purge, when its receipt came first);
* ``gdpr.deletion.receipt``: finish it; when the person has no open deletion left and is gone from
  the source and from every vendor, purge their personal data and leave a tombstone;
* ``gdpr.erasure.requested`` / ``gdpr.erasure.withdrawn``: record or lift the suppression and ask
  the normaliser to project the tenant again (which sends the deletes, or the person again).
"""

from __future__ import annotations

from datetime import UTC, datetime

from skolsynk.contracts import Envelope
from skolsynk.contracts.gdpr import DeletionReceipt, DeletionRequested, ErasureRequested, ErasureWithdrawn
from skolsynk.contracts.vendor import ProjectionRequested
from skolsynk.logging import get_logger
from skolsynk.messaging import MessageContext, PermanentError
from skolsynk.storage.erasures import ErasureLedger, ErasureRequestStore
from skolsynk_services.gdpr.metrics import GdprMetrics
from skolsynk_services.gdpr.purge import PersonalDataPurger

log = get_logger(__name__)
PRODUCER = "gdpr"


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


class GdprHandlers:
    def __init__(
        self,
        ledger: ErasureLedger,
        requests: ErasureRequestStore,
        purger: PersonalDataPurger,
        metrics: GdprMetrics,
        *,
        control_exchange: str,
    ) -> None:
        self.ledger = ledger
        self.requests = requests
        self.purger = purger
        self.metrics = metrics
        self.control_exchange = control_exchange

    async def handle(self, envelope: Envelope, context: MessageContext) -> None:
        tenant_id = envelope.tenant_id
        if tenant_id is None:
            raise PermanentError("GDPR events must name their tenant")
        if envelope.message_type == DeletionRequested.message_type:
            await self.deletion_requested(tenant_id, DeletionRequested.from_envelope(envelope), context)
        elif envelope.message_type == DeletionReceipt.message_type:
            await self.deletion_receipt(tenant_id, DeletionReceipt.from_envelope(envelope), context)
        elif envelope.message_type == ErasureRequested.message_type:
            await self.erasure_requested(tenant_id, ErasureRequested.from_envelope(envelope), context)
        elif envelope.message_type == ErasureWithdrawn.message_type:
            await self.erasure_withdrawn(tenant_id, ErasureWithdrawn.from_envelope(envelope), context)
        else:
            raise PermanentError(f"the GDPR service does not read {envelope.message_type}")

    async def deletion_requested(self, tenant_id: str, message: DeletionRequested, context: MessageContext) -> None:
        await self.ledger.requested(
            tenant_id,
            vendor_id=message.vendor_id,
            person_id=message.person_id,
            vendor_entity_id=message.vendor_entity_id,
            version=message.version,
            reason=message.reason.value,
            requested_at=message.requested_at,
            removed_at=message.removed_at,
            session=context.session,
        )
        self.metrics.requested.labels(message.vendor_id, message.reason.value).inc()
        # The receipt may have come first (they travel separately): then this request is the last event.
        outcome = await self.purger.purge_if_done(tenant_id, str(message.person_id), session=context.session)
        if outcome.purged:
            context.after_commit(self.metrics.purged.inc)
        log.info(
            "deletion_requested", vendor_id=message.vendor_id, person_id=str(message.person_id), purge=outcome.reason
        )

    async def deletion_receipt(self, tenant_id: str, message: DeletionReceipt, context: MessageContext) -> None:
        entry = await self.ledger.receipt(
            tenant_id,
            vendor_id=message.vendor_id,
            vendor_entity_id=message.vendor_entity_id,
            version=message.version,
            outcome=message.outcome,
            delivered_at=message.delivered_at,
            vendor_status=message.vendor_status,
            session=context.session,
        )
        if entry is None:
            log.info("deletion_receipt_repeated", vendor_id=message.vendor_id)
            return
        # Counted once committed: the purge check below may make the transaction conflict and run again.
        context.after_commit(lambda: self.metrics.completed.labels(message.vendor_id, message.outcome).inc())
        if entry.get("removed_at") is not None:
            elapsed = (_aware(message.delivered_at) - _aware(entry["removed_at"])).total_seconds()
            context.after_commit(
                lambda: self.metrics.removal_to_receipt.labels(message.vendor_id).observe(max(elapsed, 0.0))
            )
        person_id = entry.get("person_id")
        if person_id is None:
            # The receipt came before the request (they travel separately): the request completes it.
            return
        outcome = await self.purger.purge_if_done(tenant_id, person_id, session=context.session)
        if outcome.purged:
            context.after_commit(self.metrics.purged.inc)
        log.info("deletion_confirmed", vendor_id=message.vendor_id, person_id=person_id, purge=outcome.reason)

    async def erasure_requested(self, tenant_id: str, message: ErasureRequested, context: MessageContext) -> None:
        added = await self.requests.add(
            tenant_id,
            request_id=message.request_id,
            person_id=message.person_id,
            vendor_ids=message.vendor_ids,
            kind=message.kind,
            requested_by=message.requested_by,
            reference=message.reference,
            requested_at=datetime.now(UTC),
            session=context.session,
        )
        if added:
            self.metrics.erasure_requests.labels(message.kind).inc()
            await self._project(tenant_id, "erasure", context)
        log.info("erasure_requested", request_id=str(message.request_id), person_id=str(message.person_id))

    async def erasure_withdrawn(self, tenant_id: str, message: ErasureWithdrawn, context: MessageContext) -> None:
        withdrawn = await self.requests.withdraw(
            tenant_id, message.request_id, by=message.withdrawn_by, at=datetime.now(UTC), session=context.session
        )
        if withdrawn is not None:
            await self._project(tenant_id, "erasure-withdrawn", context)
        log.info("erasure_withdrawn", request_id=str(message.request_id), found=withdrawn is not None)

    async def _project(self, tenant_id: str, reason: str, context: MessageContext) -> None:
        await context.emit(
            ProjectionRequested(reason=reason).to_envelope(
                tenant_id=tenant_id, caused_by=context.envelope, producer=PRODUCER
            ),
            exchange=self.control_exchange,
            routing_key=ProjectionRequested.message_type,
        )
