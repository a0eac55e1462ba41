"""The deadline sweep: once per interval (one replica wins the slot), pending deletions past their
deadline become overdue (an alert: metric and admin view), open deletions not confirmed within the
retry interval are sent to the vendor again, the purge is tried again for every person with a finished
deletion whose data is not purged yet (whatever order their events came in), and the pending, overdue
and overdue-purge gauges are refreshed.

A retry re-publishes the delete change event with its original version: the dispatcher deletes (or,
if it already did, answers with the receipt again; if the person came back meanwhile, "superseded").
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from skolsynk.contracts.vendor import VendorChange
from skolsynk.domain.ss12000 import EntityKind
from skolsynk.logging import get_logger
from skolsynk.messaging import Publisher, UnroutableMessage
from skolsynk.storage import Database, MongoClient
from skolsynk.storage.erasures import ErasureLedger
from skolsynk.storage.schedules import Schedules
from skolsynk_services.gdpr.metrics import GdprMetrics
from skolsynk_services.gdpr.purge import PersonalDataPurger, PurgeOutcome

log = get_logger(__name__)

#: The sweep's slot in ``schedules``.
SLOT = "gdpr-sweep"


def utcnow() -> datetime:
    return datetime.now(UTC)


class DeadlineSweeper:
    def __init__(
        self,
        db: Database,
        ledger: ErasureLedger,
        publisher: Publisher,
        metrics: GdprMetrics,
        *,
        mongo: MongoClient,
        purger: PersonalDataPurger,
        vendor_exchange: str,
        deadline: timedelta,
        retry_after: timedelta,
        interval: timedelta,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.schedules = Schedules(db)
        self.mongo = mongo
        self.purger = purger
        self.ledger = ledger
        self.publisher = publisher
        self.metrics = metrics
        self.vendor_exchange = vendor_exchange
        self.deadline = deadline
        self.retry_after = retry_after
        self.interval = interval
        self.clock = clock

    async def claim_slot(self) -> bool:
        """One replica per interval does the sweep."""
        current = self.clock()
        await self.schedules.ensure(SLOT, first_at=current)
        return await self.schedules.claim(SLOT, now=current, interval=self.interval)

    async def sweep(self) -> dict[str, int]:
        current = self.clock()
        overdue = await self.ledger.mark_overdue(self.deadline, now=current)
        if overdue:
            log.warning("deletions_overdue", newly_overdue=overdue)
        retried = 0
        for entry in await self.ledger.due_for_retry(self.retry_after, now=current):
            if await self._resend(entry):
                retried += 1
            await self.ledger.retried(entry["_id"], now=current)
        purged = await self.purge_what_is_done(current)
        await self.refresh_gauges()
        return {"overdue": overdue, "retried": retried, "purged": purged}

    async def purge_what_is_done(self, current: datetime) -> int:
        """Try the purge again for every person with a finished deletion and no purge yet; count persons
        still waiting longer than the deadline after their last receipt (the overdue-purge gauge)."""
        purged = 0
        overdue: dict[str, int] = {}
        for tenant_id, person_id, finished_at in await self.ledger.awaiting_purge():

            async def attempt(session: Any, tenant_id: str = tenant_id, person_id: str = person_id) -> PurgeOutcome:
                return await self.purger.purge_if_done(tenant_id, person_id, session=session)

            async with self.mongo.start_session() as session:
                outcome = await session.with_transaction(attempt)
            if outcome.purged:
                purged += 1
                self.metrics.purged.inc()
            elif finished_at + self.deadline < current:
                overdue[tenant_id] = overdue.get(tenant_id, 0) + 1
                log.warning("purge_overdue", tenant_id=tenant_id, person_id=person_id, blocked_by=outcome.reason)
        self.metrics.purges_overdue.clear()
        for tenant_id, count in overdue.items():
            self.metrics.purges_overdue.labels(tenant_id).set(count)
        if purged:
            log.info("purges_caught_up", persons=purged)
        return purged

    async def _resend(self, entry: dict[str, object]) -> bool:
        tenant_id, vendor_id = str(entry["tenant_id"]), str(entry["vendor_id"])
        version = entry["version"]
        assert isinstance(version, int)
        change = VendorChange(
            vendor_id=vendor_id,
            entity_kind=EntityKind.PERSON,
            entity_id=UUID(str(entry["vendor_entity_id"])),
            operation="delete",
            version=version,
            test_mode=False,
            reason="gdpr-retry",
        )
        try:
            await self.publisher.publish(
                change.to_envelope(tenant_id=tenant_id, producer="gdpr"),
                exchange=self.vendor_exchange,
                routing_key=f"{vendor_id}.{tenant_id}",
            )
        except UnroutableMessage:
            # No dispatcher queue for the vendor: it stays overdue and visible until one exists.
            self.metrics.retries.labels(vendor_id, "unroutable").inc()
            log.error("deletion_retry_unroutable", tenant_id=tenant_id, vendor_id=vendor_id)
            return False
        self.metrics.retries.labels(vendor_id, "sent").inc()
        log.info("deletion_retried", tenant_id=tenant_id, vendor_id=vendor_id, version=version)
        return True

    async def refresh_gauges(self) -> None:
        counts = await self.ledger.counts()
        self.metrics.pending.clear()
        self.metrics.overdue.clear()
        for (tenant_id, vendor_id, status), n in counts.items():
            if status == "pending":
                self.metrics.pending.labels(tenant_id, vendor_id).set(n)
            elif status == "overdue":
                self.metrics.overdue.labels(tenant_id, vendor_id).set(n)
