"""Delivering one vendor's change events: drop stale ones, record test-mode ones, push the rest by
EGIL SCIM or forward them to the vendor's own queue, and keep the ledger."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from dispatcher.metrics import DispatcherMetrics
from dispatcher.scim import EgilScimClient, VendorRejected
from skolsynk.catalogue import DeliveryMode, VendorCatalogueEntry
from skolsynk.contracts import Envelope
from skolsynk.contracts.gdpr import DeletionReceipt
from skolsynk.contracts.vendor import VendorChange
from skolsynk.domain.egil import EgilMappingError, EgilResourceType, to_egil
from skolsynk.domain.ids import content_hash
from skolsynk.domain.ss12000 import EntityKind
from skolsynk.logging import get_logger
from skolsynk.messaging import MessageContext, PermanentError, Publisher
from skolsynk.storage.deliveries import DeliveryLedger, Status

log = get_logger(__name__)

#: Which resource fields refer to which kind of entity (a vendor needs them before the referrer).
REFERENCES: dict[str, EntityKind] = {
    "organisation_id": EntityKind.ORGANISATION,
    "school_unit_group_id": EntityKind.SCHOOL_UNIT_GROUP,
    "school_unit_id": EntityKind.SCHOOL_UNIT,
    "school_unit_ids": EntityKind.SCHOOL_UNIT,
    "person_id": EntityKind.PERSON,
    "member_ids": EntityKind.PERSON,
    "group_ids": EntityKind.GROUP,
    "teacher_duty_ids": EntityKind.DUTY,
}


#: How often a delivery waiting for its references looks at the ledger again.
DEPENDENCY_POLL_SECONDS = 0.1


#: Reference lists a missing (refused) entity can be left out of.
LIST_REFERENCES = frozenset({"member_ids", "group_ids", "teacher_duty_ids"})


#: The dispatcher's delivery outcomes as deletion receipts.
RECEIPT_OUTCOMES: dict[str, Any] = {
    "deleted": "deleted",
    "absent": "already_absent",
    "already_absent": "already_absent",
    "queued": "queued",
    "superseded": "superseded",
}


class DependencyNotReady(Exception):
    """A referenced entity has not reached the vendor yet: retry later (counted, then the DLQ)."""


def references(resource: dict[str, Any], kinds: Iterable[EntityKind]) -> set[str]:
    """Ids this resource refers to, of the kinds the vendor receives."""
    wanted = set(kinds)
    found: set[str] = set()
    for field, kind in REFERENCES.items():
        if kind not in wanted or resource.get(field) is None:
            continue
        value = resource[field]
        found.update(value if isinstance(value, list) else [value])
    if EntityKind.SCHOOL_UNIT in wanted:
        found.update(e["school_unit_id"] for e in resource.get("enrolments", []) if e.get("school_unit_id"))
    found.discard(str(resource.get("id")))
    return found


class VendorDeliverer:
    def __init__(
        self,
        vendor: VendorCatalogueEntry,
        ledger: DeliveryLedger,
        *,
        scim: EgilScimClient | None = None,
        publisher: Publisher | None = None,
        feed_queue: str | None = None,
        receipts_exchange: str | None = None,
        dependency_wait_seconds: float = 10.0,
        metrics: DispatcherMetrics | None = None,
    ) -> None:
        self.metrics = metrics
        if receipts_exchange is not None and publisher is None:
            raise ValueError("deletion receipts need a publisher")
        self.receipts_exchange = receipts_exchange
        self.dependency_wait_seconds = dependency_wait_seconds
        if vendor.delivery is DeliveryMode.EGIL_SCIM and scim is None:
            raise ValueError("an EGIL SCIM vendor needs a SCIM client")
        if vendor.delivery is DeliveryMode.QUEUE and (publisher is None or feed_queue is None):
            raise ValueError("a queue vendor needs a publisher and its feed queue")
        self.vendor = vendor
        self.ledger = ledger
        self.scim = scim
        self.publisher = publisher
        self.feed_queue = feed_queue

    async def handle(self, envelope: Envelope, context: MessageContext) -> None:
        change = VendorChange.from_envelope(envelope)
        tenant_id = envelope.tenant_id
        if tenant_id is None:
            raise PermanentError("a vendor change must name its tenant")
        if change.vendor_id != self.vendor.vendor_id:
            raise PermanentError(f"a change for {change.vendor_id} reached the dispatcher of {self.vendor.vendor_id}")
        status = "retry"
        try:
            status = await self._deliver(envelope, tenant_id, change)
        except PermanentError:
            status = "rejected"
            raise
        finally:
            if self.metrics is not None:
                self.metrics.deliveries.labels(tenant_id, self.vendor.vendor_id, change.operation, status).inc()

    async def _deliver(self, envelope: Envelope, tenant_id: str, change: VendorChange) -> str:
        """Deliver (or record, or drop) one change; returns its status for the metrics."""
        current = await self.ledger.get(tenant_id, change.entity_id)
        if current is not None and current["status"] != "rejected" and current["version"] >= change.version:
            log.info("stale_change_dropped", version=change.version, delivered_version=current["version"])
            if change.operation == "delete" and not change.test_mode and not current["test"]:
                # Asked again (the GDPR service retries overdue deletions): answer with the receipt.
                repeated = current["operation"] == "delete" and current["version"] == change.version
                await self._receipt(
                    tenant_id, change, (current.get("reason") or "deleted") if repeated else "superseded"
                )
            return "stale"
        resource = change.resource or {}
        record = {
            "kind": change.entity_kind.value,
            "operation": change.operation,
            "version": change.version,
            "resource_hash": content_hash(resource) if change.resource is not None else None,
            "school_unit_ids": [str(u) for u in change.school_unit_ids],
            "roles": resource.get("roles", []),
        }
        if change.test_mode:
            return await self._record_test(tenant_id, change, record)
        if self.vendor.delivery is DeliveryMode.QUEUE:
            await self._forward(envelope)
            outcome = "queued"
            log.info("delivered", kind=change.entity_kind.value, operation=change.operation, outcome=outcome)
        else:
            outcome = await self._push(tenant_id, change, current, record)
        if change.operation == "delete":
            # The receipt goes out before the ledger entry: a crash in between redelivers the change,
            # which deletes again (404, already absent) and repeats the receipt; the GDPR ledger keeps one.
            await self._receipt(tenant_id, change, outcome)
            record["reason"] = outcome
        await self.ledger.record(tenant_id, change.entity_id, status="delivered", test=False, **record)
        return "delivered"

    async def _receipt(self, tenant_id: str, change: VendorChange, outcome: str) -> None:
        """Tell the GDPR service a person's delete reached the vendor (or was superseded)."""
        if self.receipts_exchange is None or change.entity_kind is not EntityKind.PERSON:
            return
        assert self.publisher is not None
        receipt = DeletionReceipt(
            vendor_id=self.vendor.vendor_id,
            entity_kind=change.entity_kind,
            vendor_entity_id=change.entity_id,
            version=change.version,
            outcome=RECEIPT_OUTCOMES.get(outcome, "deleted"),
            delivered_at=datetime.now(UTC),
            vendor_status=404 if outcome == "absent" else None,
        )
        await self.publisher.publish(
            receipt.to_envelope(tenant_id=tenant_id, producer=f"dispatcher-{self.vendor.vendor_id}"),
            exchange=self.receipts_exchange,
            routing_key=DeletionReceipt.message_type,
        )

    async def _record_test(self, tenant_id: str, change: VendorChange, record: dict[str, Any]) -> Status:
        """Test mode: record what would be sent, and whether the vendor's profile would reject it."""
        status: Status = "test"
        reason: str | None = None
        if self.vendor.delivery is DeliveryMode.EGIL_SCIM and change.operation == "upsert":
            try:
                to_egil(change.resource or {})
            except EgilMappingError as error:
                status, reason = "test_rejected", str(error)
        await self.ledger.record(tenant_id, change.entity_id, status=status, test=True, reason=reason, **record)
        log.info("recorded_in_test_mode", kind=change.entity_kind.value, operation=change.operation, status=status)
        return status

    async def _missing_references(self, tenant_id: str, needed: set[str]) -> set[str]:
        """Referenced entities not at the vendor yet. They are usually being delivered right now
        (changes arrive in reference order but are handled concurrently): wait a little for them
        before giving the message back to the retry ladder."""
        deadline = asyncio.get_running_loop().time() + self.dependency_wait_seconds
        while True:
            missing = needed - await self.ledger.present_live(tenant_id, needed)
            if not missing or asyncio.get_running_loop().time() >= deadline:
                return missing
            await asyncio.sleep(DEPENDENCY_POLL_SECONDS)

    async def _forward(self, envelope: Envelope) -> None:
        assert self.publisher is not None
        assert self.feed_queue is not None
        await self.publisher.publish(envelope, exchange="", routing_key=self.feed_queue)

    async def _push(
        self, tenant_id: str, change: VendorChange, current: dict[str, Any] | None, record: dict[str, Any]
    ) -> str:
        assert self.scim is not None
        try:
            if change.operation == "delete":
                outcome = await self.scim.delete(EgilResourceType.for_kind(change.entity_kind), str(change.entity_id))
            else:
                resource = change.resource or {}
                missing = await self._missing_references(tenant_id, references(resource, self.vendor.profile.kinds))
                if missing:
                    # A referenced entity the vendor refused for good will not come: leave it out of
                    # member, group and teacher lists rather than holding back everyone else.
                    refused = await self.ledger.rejected(tenant_id, missing)
                    resource = {
                        k: [i for i in v if i not in refused] if k in LIST_REFERENCES and isinstance(v, list) else v
                        for k, v in resource.items()
                    }
                    missing = references(resource, self.vendor.profile.kinds) & (missing - refused)
                if missing:
                    raise DependencyNotReady(
                        f"{change.entity_kind.value}: {len(missing)} referenced entities are not at the vendor yet"
                    )
                egil_type, body = to_egil(resource)
                exists = (
                    current is not None
                    and current["status"] == "delivered"
                    and current["operation"] == "upsert"
                    and not current["test"]
                )
                outcome = await self.scim.upsert(egil_type, str(change.entity_id), body, exists=exists)
        except (VendorRejected, EgilMappingError) as error:
            await self.ledger.record(
                tenant_id, change.entity_id, status="rejected", test=False, reason=str(error)[:300], **record
            )
            if isinstance(error, EgilMappingError):
                raise PermanentError(str(error)) from error
            raise
        log.info("delivered", kind=change.entity_kind.value, operation=change.operation, outcome=outcome)
        return outcome
