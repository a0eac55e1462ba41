"""Purging a person's personal data once every vendor confirmed their deletion.

Where personal data of a person can be, and how it leaves (docs/gdpr.md has the whole map). Every
collection is reached through its owner's repository in ``skolsynk.storage`` (the outbox through
``skolsynk.messaging``), never by name:

* ``entities`` (normaliser state): the person's record. Removed by the normaliser when the person
  leaves the source; while the person is still in the source it is current data, not purged here.
* ``run_pages``: staged records of a source run; the normaliser forgets them when the run is
  finalised, and a person's staged records are removed here as well.
* ``outbox``: a vendor change carries the minimised resource until the broker confirmed it, and
  loses it in the write that marks it sent; the person's sent single entries are removed here, and
  their messages pulled out of a sent bundle only where one forgot nothing (written before vendor
  changes forgot their resource: a bundle holds many persons, and purges writing it conflict).
* ``dq_findings``: findings name the entity (ids and a source key) and may carry its offending value (an
  e-mail address, a login); the person's, and those naming them as a duplicate's other party, removed here.
* ``hold_entities``: a mass-deletion hold keeps the name of an entity it holds after the entity left the
  source (a hold of a test-mode subscription does not block the purge); the name is dropped here.

What stays is pseudonymous: the vendor views' ids and hashes, the delivery and erasure ledgers, and a
tombstone; the ledger entries and the tombstone expire by TTL after the retention period.

When: the purge is decided by the erasure ledger (no live deletion of the person still open) and the
person being gone from the source and from every live subscription's view; a test-mode subscription
never blocks it (nothing was delivered there). It is tried on every event that can complete it (a
deletion request, a receipt, whichever comes last) and by the sweep (:class:`PurgeSweep`), so no order
of events leaves a person unpurged.
"""

from __future__ import annotations

from dataclasses import dataclass

from skolsynk.logging import get_logger
from skolsynk.messaging import Outbox
from skolsynk.messaging.outbox import OUTBOX_COLLECTION
from skolsynk.storage import Database, Session
from skolsynk.storage.entities import EntityReader
from skolsynk.storage.erasures import ErasureLedger, TombstoneStore
from skolsynk.storage.findings import FINDINGS, FindingStore
from skolsynk.storage.holds import HOLD_ENTITIES, HoldStore
from skolsynk.storage.runs import RUN_PAGES, SourceRuns
from skolsynk.storage.vendor_views import VendorViews

log = get_logger(__name__)


@dataclass(frozen=True)
class PurgeOutcome:
    purged: bool
    reason: str
    counts: dict[str, int]


class PersonalDataPurger:
    def __init__(self, db: Database, ledger: ErasureLedger, tombstones: TombstoneStore) -> None:
        self.db = db
        self.ledger = ledger
        self.tombstones = tombstones
        self.entities = EntityReader(db)
        self.views = VendorViews(db)
        self.findings = FindingStore(db)
        self.runs = SourceRuns(db)
        self.holds = HoldStore(db)

    async def blocker(self, tenant_id: str, person_id: str, *, session: Session | None = None) -> str | None:
        """Why the person's data must stay for now, or None."""
        if await self.ledger.open_for_person(tenant_id, person_id, session=session):
            return "deletions_pending"
        if await self.entities.exists(person_id, session=session):
            return "still_in_source"
        if await self.views.present_at_a_live_vendor(tenant_id, person_id, session=session):
            return "still_at_a_vendor"  # e.g. removals held by the mass-deletion guard (test mode never blocks)
        return None

    async def purge_if_done(self, tenant_id: str, person_id: str, *, session: Session | None = None) -> PurgeOutcome:
        if session is not None:
            await self.ledger.claim_person(tenant_id, person_id, session=session)
        reason = await self.blocker(tenant_id, person_id, session=session)
        if reason is not None:
            return PurgeOutcome(False, reason, {})
        entries = await self.ledger.for_person(tenant_id, person_id, session=session)
        ids = sorted({person_id, *(e["vendor_entity_id"] for e in entries)})
        counts = await self._purge(tenant_id, ids, session=session)
        await self.tombstones.record(
            tenant_id,
            person_id,
            purged=counts,
            vendors=sorted({e["vendor_id"] for e in entries}),
            deletions=len(entries),
            session=session,
        )
        await self.ledger.mark_purged(tenant_id, person_id, session=session)
        log.info("personal_data_purged", tenant_id=tenant_id, person_id=person_id, **counts)
        return PurgeOutcome(True, "purged", counts)

    async def _purge(self, tenant_id: str, ids: list[str], *, session: Session | None) -> dict[str, int]:
        """What was purged, by collection (the tombstone's ``purged``)."""
        counts: dict[str, int] = {}
        counts[OUTBOX_COLLECTION] = await Outbox(self.db).forget_sent(tenant_id, ids, session=session)
        counts[FINDINGS] = await self.findings.forget_entities(tenant_id, ids, session=session)
        counts[HOLD_ENTITIES] = await self.holds.forget_names(tenant_id, ids, session=session)
        counts[RUN_PAGES] = await self.runs.forget_staged(tenant_id, ids, session=session)
        return counts
