"""Delivering one vendor's change events, a batch at a time: drop stale ones, record test-mode ones,
push the rest by EGIL SCIM or forward them to the vendor's own queue, and keep the ledger.

Per batch the store sees one ledger read (the batch's entities and everything they refer to, by
``_id``), rarely a second one (references neither found nor being delivered here), and one bulk
write of the outcomes. The SCIM requests of a batch run concurrently within the vendor's limits
(:class:`dispatcher.scim.EgilScimClient`); a change whose references are being delivered, in this
batch or in another one of this process, waits for exactly those deliveries (no polling) and goes
as soon as they are at the vendor. See docs/dispatcher.md.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from pydantic import ValidationError

from skolsynk.adapters.egil import EgilMappingError, EgilResourceType, to_egil
from skolsynk.catalogue import DeliveryMode, VendorCatalogueEntry
from skolsynk.contracts import Envelope
from skolsynk.contracts.envelope import ContractMismatch
from skolsynk.contracts.gdpr import DeletionReceipt
from skolsynk.contracts.vendor import VendorChange
from skolsynk.domain.ids import content_hash
from skolsynk.domain.ss12000 import EntityKind
from skolsynk.logging import get_logger
from skolsynk.messaging import Deferred, MessageContext, PermanentError, Publisher
from skolsynk.storage import Document
from skolsynk.storage.deliveries import DeliveryLedger, LedgerRecord, Status
from skolsynk.storage.delivery_backlog import DeliveryBacklog
from skolsynk.storage.delivery_health import DeliveryHealth
from skolsynk_services.dispatcher.feed import HEADER_QUEUED_AT, FeedCompactor
from skolsynk_services.dispatcher.metrics import DispatcherMetrics
from skolsynk_services.dispatcher.scim import EgilScimClient, PinMismatch, VendorRejected, VendorUnavailable

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

#: The code of a change held back for a reference still on its way (not a failure of the vendor).
REFERENCE_WAITING = "reference_waiting"
#: While a pair's state does not change, its health document is written at most this often.
HEALTH_WRITE_SECONDS = 60.0
#: The changes a dispatcher is done with are counted in the pairs' backlogs at most this often (one write
#: per organiser then, not one per batch: a full sync's batches come several a second).
SETTLED_FLUSH_SECONDS = 5.0

#: What a delivery in flight ends as, for the deliveries that refer to its entity.
LIVE = "live"  # at the vendor now
REFUSED = "refused"  # the vendor refused it for good: leave it out of lists
UNAVAILABLE = "unavailable"  # the vendor was unavailable: the referrer waits for it on the retry ladder
NOT_LIVE = "not_live"  # deleted, failed otherwise, or not delivered at all

Key = tuple[str, str]  # (tenant, entity id)


class Feed(Protocol):
    """Where a queue vendor's changes go (:class:`~skolsynk_services.dispatcher.vendor_feed.VendorFeed`)."""

    async def publish(self, tenant_id: str, envelope: Envelope, *, headers: dict[str, Any], expiration: float) -> str:
        """Publish into the organiser's feed, confirmed; the feed's name. Raises to retry."""
        ...


def _vendor_failure(error: BaseException | None) -> str | None:
    """The code of a failure that is the vendor's (or its connection's), else None."""
    if isinstance(error, VendorUnavailable) and error.code != REFERENCE_WAITING:
        return error.code
    if isinstance(error, PinMismatch):
        return "pin_mismatch"
    return None


class DependencyNotReady(Deferred):
    """A referenced entity is not at the vendor and not being delivered by this process: the change goes
    back to the retry ladder, from its first step (its reference is on its way, through another replica
    or the ladder)."""


class ReferenceRefused(PermanentError):
    """A single reference (a duty's person, a group's school unit) is an entity the vendor refused."""


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


def _is_live(entry: Document) -> bool:
    return entry["status"] == "delivered" and entry["operation"] == "upsert" and not entry["test"]


@dataclass(eq=False)
class Delivery:
    """One change of a batch and what became of it."""

    index: int
    envelope: Envelope
    change: VendorChange
    tenant_id: str
    status: str = "retry"
    error: BaseException | None = None
    #: The same version as the ledger's entry: a copy of a change already done (not counted done twice).
    replay: bool = False

    @property
    def key(self) -> Key:
        return (self.tenant_id, str(self.change.entity_id))

    def record(self, status: Status, *, reason: str | None = None) -> LedgerRecord:
        change = self.change
        resource = change.resource or {}
        return LedgerRecord(
            self.tenant_id,
            change.entity_id,
            kind=change.entity_kind.value,
            operation=change.operation,
            version=change.version,
            resource_hash=content_hash(resource) if change.resource is not None else None,
            status=status,
            test=change.test_mode,
            school_unit_ids=tuple(str(u) for u in change.school_unit_ids),
            roles=tuple(resource.get("roles", [])),
            reason=reason,
            members=len(resource["member_ids"]) if isinstance(resource.get("member_ids"), list) else None,
        )


class VendorDeliverer:
    def __init__(
        self,
        vendor: VendorCatalogueEntry,
        ledger: DeliveryLedger,
        *,
        scim: EgilScimClient | None = None,
        publisher: Publisher | None = None,
        feed: Feed | None = None,
        receipts_exchange: str | None = None,
        dependency_wait_seconds: float = 10.0,
        metrics: DispatcherMetrics | None = None,
        compactor: FeedCompactor | None = None,
        health: DeliveryHealth | None = None,
        backlog: DeliveryBacklog | None = None,
    ) -> None:
        self.metrics = metrics
        #: What waits for this vendor per organiser: the changes done with are counted here, gathered for
        #: up to ``SETTLED_FLUSH_SECONDS`` (:meth:`flush_settled`).
        self.backlog = backlog
        self.unflushed: Counter[str] = Counter()
        self._flush_task: asyncio.Task[None] | None = None
        self._flushing = False
        #: How each organiser's deliveries to this vendor fare (docs/dispatcher.md, "Delivery health").
        self.health = health
        self._health_written: dict[str, tuple[str, float]] = {}
        #: Told of every delete forwarded to the feed, to take what it supersedes out of an unread feed.
        self.compactor = compactor
        if receipts_exchange is not None and publisher is None:
            raise ValueError("deletion receipts need a publisher")
        self.receipts_exchange = receipts_exchange
        #: Longest a change waits for a delivery in flight of an entity it refers to.
        self.dependency_wait_seconds = dependency_wait_seconds
        if vendor.delivery is DeliveryMode.EGIL_SCIM and scim is None:
            raise ValueError("an EGIL SCIM vendor needs a SCIM client")
        if vendor.delivery is DeliveryMode.QUEUE and feed is None:
            raise ValueError("a queue vendor needs its feed")
        self.vendor = vendor
        self.ledger = ledger
        self.scim = scim
        self.publisher = publisher
        #: A queue vendor's feeds, in its own vhost (the organiser's own with ``feed_per_organiser``).
        self.feed = feed
        #: SCIM deliveries running now in this process, by entity: what their referrers wait for.
        self._in_flight: dict[Key, asyncio.Future[str]] = {}

    async def handle_batch(self, contexts: list[MessageContext]) -> dict[int, BaseException]:
        """A batch of changes (the batch consumer's handler); returns the failures by position."""
        failures: dict[int, BaseException] = {}
        deliveries: list[Delivery] = []
        for index, context in enumerate(contexts):
            try:
                deliveries.append(self._parse(index, context.envelope))
            except (PermanentError, ContractMismatch, ValidationError) as error:
                failures[index] = error
        try:
            await self._deliver_batch(deliveries)
        except BaseException:
            self._count(deliveries, failed=True)
            raise
        self._count(deliveries)
        failures.update({d.index: d.error for d in deliveries if d.error is not None})
        # One line per batch (each change's own line is at debug: a full sync of a large organiser is
        # a million of them); the counts per outcome are also in skolsynk_deliveries_total.
        outcomes = Counter(d.status for d in deliveries)
        log.info("batch_delivered", changes=len(contexts), invalid=len(contexts) - len(deliveries), **outcomes)
        await self._note_health(deliveries)
        await self._count_settled(deliveries)
        return failures

    async def _count_settled(self, deliveries: list[Delivery]) -> None:
        """Count, per tenant, the changes this batch is done with (anything but a retry, and not a copy of
        a change already counted), to be written to the pairs' backlogs within ``SETTLED_FLUSH_SECONDS``."""
        if self.backlog is None:
            return
        self.unflushed.update(d.tenant_id for d in deliveries if d.status != "retry" and not d.replay)
        if self.unflushed and self._flush_task is None:
            self._flush_task = asyncio.create_task(self._flush_later(), name=f"backlog-{self.vendor.vendor_id}")

    async def _flush_later(self) -> None:
        await asyncio.sleep(SETTLED_FLUSH_SECONDS)
        self._flush_task = None
        await self.flush_settled()

    async def flush_settled(self) -> None:
        """Write the counts gathered so far (also at stop). A failed write is logged and its counts kept for
        the next flush: it never fails a batch (and the dispatcher levels the counts when the vendor is idle)."""
        if self.backlog is None or not self.unflushed:
            return
        counts, self.unflushed = self.unflushed, Counter()
        self._flushing = True
        try:
            await self.backlog.settled(self.vendor.vendor_id, dict(counts), at=datetime.now(UTC))
        except Exception:
            log.warning("delivery_backlog_write_failed", exc_info=True)
            self.unflushed.update(counts)
            if self._flush_task is None:
                self._flush_task = asyncio.create_task(self._flush_later(), name=f"backlog-{self.vendor.vendor_id}")
        finally:
            self._flushing = False

    @property
    def counting(self) -> bool:
        """Counts of changes done with are gathered or being written (not yet in the store)."""
        return bool(self.unflushed) or self._flushing

    async def close(self) -> None:
        """At stop, once no batch runs: the counts gathered are written now."""
        task, self._flush_task = self._flush_task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await self.flush_settled()

    async def _note_health(self, deliveries: list[Delivery]) -> None:
        """Per tenant of the batch: did it reach the vendor (a real delivery), or fail for the vendor's sake
        (unreachable, 5xx, 429, TLS, the server pin)? Written when the state changes, else once a minute.
        A health write that fails is logged: it never fails the batch."""
        if self.health is None:
            return
        verdicts: dict[str, str | None] = {}  # tenant -> None (ok) or the failure code
        for d in deliveries:
            if d.change.test_mode:
                continue
            code = _vendor_failure(d.error)
            if code is not None:
                verdicts[d.tenant_id] = code
            elif d.status == "delivered":
                verdicts.setdefault(d.tenant_id, None)
        now, clock = datetime.now(UTC), time.monotonic()
        for tenant_id, code in verdicts.items():
            state = "ok" if code is None else "retrying"
            last = self._health_written.get(tenant_id)
            if last is not None and last[0] == state and clock - last[1] < HEALTH_WRITE_SECONDS:
                continue
            try:
                if code is None:
                    await self.health.succeeded(self.vendor.vendor_id, tenant_id, at=now)
                else:
                    await self.health.failed(self.vendor.vendor_id, tenant_id, code=code, at=now)
            except Exception:
                log.warning("delivery_health_write_failed", tenant_id=tenant_id, exc_info=True)
                continue
            self._health_written[tenant_id] = (state, clock)

    def _parse(self, index: int, envelope: Envelope) -> Delivery:
        change = VendorChange.from_envelope(envelope)
        if envelope.tenant_id is None:
            raise PermanentError("a vendor change must name its tenant")
        if change.vendor_id != self.vendor.vendor_id:
            raise PermanentError(f"a change for {change.vendor_id} reached the dispatcher of {self.vendor.vendor_id}")
        return Delivery(index, envelope, change, envelope.tenant_id)

    def _count(self, deliveries: list[Delivery], *, failed: bool = False) -> None:
        if self.metrics is None:
            return
        for d in deliveries:
            status = "retry" if failed else d.status
            self.metrics.deliveries.labels(d.tenant_id, self.vendor.vendor_id, d.change.operation, status).inc()

    async def _deliver_batch(self, deliveries: list[Delivery]) -> None:
        work, superseded = self._newest(deliveries)
        scim = self.vendor.delivery is DeliveryMode.EGIL_SCIM
        # Announce the batch's SCIM deliveries before the first await, so a batch running beside this
        # one finds them in flight and waits for them instead of giving its changes back.
        announced: dict[Key, asyncio.Future[str]] = {}
        if scim:
            loop = asyncio.get_running_loop()
            for d in work:
                if not d.change.test_mode:
                    announced[d.key] = self._in_flight[d.key] = loop.create_future()
        try:
            await self._deliver_newest(work, superseded, announced)
        finally:
            for key, future in announced.items():
                if not future.done():
                    future.set_result(NOT_LIVE)
                if self._in_flight.get(key) is future:
                    del self._in_flight[key]

    async def _deliver_newest(
        self, work: list[Delivery], superseded: list[Delivery], announced: dict[Key, asyncio.Future[str]]
    ) -> None:
        for d in superseded:
            await self._answer(d, "superseded")
        needs: dict[int, set[str]] = {}
        keys: set[Key] = {d.key for d in work}
        for d in work:
            if d.key in announced and d.change.operation == "upsert":
                needs[d.index] = references(d.change.resource or {}, self.vendor.profile.kinds)
                keys.update((d.tenant_id, r) for r in needs[d.index])
        ledger = await self.ledger.get_many(keys)
        records: list[LedgerRecord] = []
        forwards: list[Delivery] = []
        pushes: list[tuple[Delivery, Document | None]] = []
        for d in work:
            current = ledger.get(d.key)
            if await self._is_stale(d, current):
                if d.key in announced:
                    announced[d.key].set_result(LIVE if current is not None and _is_live(current) else NOT_LIVE)
                continue
            if d.change.test_mode:
                records.append(self._record_test(d))
            elif d.key in announced:
                pushes.append((d, current))
            else:
                forwards.append(d)
        if forwards:
            await asyncio.gather(*(self._forward(d, records) for d in forwards))
        if pushes:
            await self._push_all(pushes, ledger, needs, records, announced)
        await self.ledger.record_many(records, new=keys - ledger.keys())

    @staticmethod
    def _newest(deliveries: list[Delivery]) -> tuple[list[Delivery], list[Delivery]]:
        """Of several changes of one entity in the batch only the newest is delivered; the older ones
        are stale. Returns the newest, and the older deletes, which are answered as superseded."""
        newest: dict[Key, Delivery] = {}
        for d in deliveries:
            known = newest.get(d.key)
            if known is None or d.change.version > known.change.version:
                newest[d.key] = d
        superseded: list[Delivery] = []
        for d in deliveries:
            winner = newest[d.key]
            if winner is d:
                continue
            d.status = "stale"
            if d.change.operation == "delete" and not d.change.test_mode and d.change.version < winner.change.version:
                superseded.append(d)
        return [d for d in deliveries if newest[d.key] is d], superseded

    async def _is_stale(self, d: Delivery, current: Document | None) -> bool:
        change = d.change
        if current is None or current["status"] == "rejected" or current["version"] < change.version:
            return False
        log.debug("stale_change_dropped", version=change.version, delivered_version=current["version"])
        d.status = "stale"
        d.replay = current["version"] == change.version and current["operation"] == change.operation
        if change.operation == "delete" and not change.test_mode and not current["test"]:
            # Asked again (the GDPR service retries overdue deletions): answer with the receipt.
            repeated = current["operation"] == "delete" and current["version"] == change.version
            await self._answer(d, (current.get("reason") or "deleted") if repeated else "superseded")
        return True

    async def _answer(self, d: Delivery, outcome: str) -> None:
        """A receipt for a change that is not delivered again; if it cannot be sent, the change is retried."""
        try:
            await self._receipt(d.tenant_id, d.change, outcome)
        except Exception as error:  # noqa: BLE001 - the broker: retried like the delivery
            d.status, d.error = "retry", error

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

    def _record_test(self, d: Delivery) -> LedgerRecord:
        """Test mode: record what would be sent, and whether the vendor's profile would reject it."""
        status: Status = "test"
        reason: str | None = None
        if self.vendor.delivery is DeliveryMode.EGIL_SCIM and d.change.operation == "upsert":
            try:
                to_egil(d.change.resource or {})
            except EgilMappingError as error:
                status, reason = "test_rejected", str(error)
        d.status = status
        log.debug("recorded_in_test_mode", kind=d.change.entity_kind.value, operation=d.change.operation, status=status)
        return d.record(status, reason=reason)

    async def _delivered(self, d: Delivery, outcome: str, records: list[LedgerRecord]) -> None:
        """The change reached the vendor: the receipt of a delete goes out before the ledger entry (a
        crash in between redelivers the change, which deletes again (404, already absent) and repeats
        the receipt; the GDPR ledger keeps one)."""
        log.debug("delivered", kind=d.change.entity_kind.value, operation=d.change.operation, outcome=outcome)
        reason: str | None = None
        if d.change.operation == "delete":
            try:
                await self._receipt(d.tenant_id, d.change, outcome)
            except Exception as error:  # noqa: BLE001 - retried like the delivery
                d.error = error
                return
            reason = outcome
        records.append(d.record("delivered", reason=reason))
        d.status = "delivered"

    async def _forward(self, d: Delivery, records: list[LedgerRecord]) -> None:
        assert self.feed is not None
        try:
            await self.feed.publish(
                d.tenant_id,
                d.envelope,
                headers={HEADER_QUEUED_AT: int(time.time() * 1000)},
                expiration=self.vendor.feed_retention_hours * 3600,  # unread personal data does not stay
            )
        except Exception as error:  # noqa: BLE001 - retried along the ladder
            d.error = error
            return
        if self.compactor is not None and d.change.operation == "delete":
            self.compactor.deleted(d.tenant_id, str(d.change.entity_id), d.change.version)
        await self._delivered(d, "queued", records)

    async def _push_all(
        self,
        pushes: list[tuple[Delivery, Document | None]],
        ledger: dict[Key, Document],
        needs: dict[int, set[str]],
        records: list[LedgerRecord],
        announced: dict[Key, asyncio.Future[str]],
    ) -> None:
        """Push a batch's SCIM requests concurrently (the client keeps the vendor's limits). What
        refers to an entity in flight waits for exactly that delivery and goes right after it."""
        live = {key for key, entry in ledger.items() if _is_live(entry)}
        refused = {key for key, entry in ledger.items() if entry["status"] == "rejected"}
        unknown = {(d.tenant_id, r) for d, _ in pushes for r in needs.get(d.index, ())}
        unknown -= live | refused | set(self._in_flight)
        if unknown:
            # Delivered by another batch since the read above, or not (yet) at all: look once more.
            again = await self.ledger.get_many(unknown)
            live |= {key for key, entry in again.items() if _is_live(entry)}
            refused |= {key for key, entry in again.items() if entry["status"] == "rejected"}
        await asyncio.gather(
            *(
                self._push(d, current, announced[d.key], needs.get(d.index, set()), live, refused, records)
                for d, current in pushes
            )
        )

    async def _push(
        self,
        d: Delivery,
        current: Document | None,
        announced: asyncio.Future[str],
        needed: set[str],
        live: set[Key],
        refused: set[Key],
        records: list[LedgerRecord],
    ) -> None:
        assert self.scim is not None
        change = d.change
        result = NOT_LIVE
        try:
            if change.operation == "delete":
                outcome = await self.scim.delete(
                    EgilResourceType.for_kind(change.entity_kind), str(change.entity_id), tenant_id=d.tenant_id
                )
            else:
                resource = await self._resolved(d, needed, live, refused)
                egil_type, body = to_egil(resource)
                exists = current is not None and _is_live(current)
                outcome = await self.scim.upsert(
                    egil_type, str(change.entity_id), body, exists=exists, tenant_id=d.tenant_id
                )
                result = LIVE
        except (VendorRejected, EgilMappingError, ReferenceRefused) as error:
            result = REFUSED
            records.append(d.record("rejected", reason=str(error)[:300]))
            d.status = "rejected"
            d.error = PermanentError(str(error)) if isinstance(error, EgilMappingError) else error
            return
        except VendorUnavailable as error:
            result = UNAVAILABLE
            d.error = error
            return
        except Exception as error:  # noqa: BLE001 - classified by the consumer (retry ladder or DLQ)
            d.status = "rejected" if isinstance(error, PermanentError) else "retry"
            d.error = error
            return
        finally:
            if not announced.done():
                announced.set_result(result)
        await self._delivered(d, outcome, records)

    async def _resolved(self, d: Delivery, needed: set[str], live: set[Key], refused: set[Key]) -> dict[str, Any]:
        """The resource, once everything it refers to is at the vendor; references the vendor refused
        are left out of member, group and teacher lists rather than holding back everyone else."""
        tenant_id = d.tenant_id
        resource = d.change.resource or {}
        refused_ids = {r for r in needed if (tenant_id, r) in refused}
        waiting = {r for r in needed if (tenant_id, r) not in live and r not in refused_ids}
        missing: set[str] = set()
        if waiting:
            outcomes = await self._wait_for(tenant_id, waiting)
            if any(outcome == UNAVAILABLE for outcome in outcomes.values()):
                raise VendorUnavailable(
                    f"{d.change.entity_kind.value}: a referenced entity waits for the vendor", code=REFERENCE_WAITING
                )
            refused_ids |= {r for r, outcome in outcomes.items() if outcome == REFUSED}
            missing = {r for r, outcome in outcomes.items() if outcome not in (LIVE, REFUSED)}
        kind = d.change.entity_kind.value
        if refused_ids:
            resource = {
                k: [i for i in v if i not in refused_ids] if k in LIST_REFERENCES and isinstance(v, list) else v
                for k, v in resource.items()
            }
            still = references(resource, self.vendor.profile.kinds)
            if still & refused_ids:
                raise ReferenceRefused(f"{kind}: refers to {len(still & refused_ids)} entities the vendor refused")
            missing &= still
        if missing:
            raise DependencyNotReady(f"{kind}: {len(missing)} referenced entities are not at the vendor yet")
        return resource

    async def _wait_for(self, tenant_id: str, ids: set[str]) -> dict[str, str]:
        """How the deliveries in flight of these entities ended (waiting for them, at most
        ``dependency_wait_seconds``); an entity not in flight here is ``NOT_LIVE``."""
        futures = {r: self._in_flight.get((tenant_id, r)) for r in ids}
        pending = {f for f in futures.values() if f is not None and not f.done()}
        if pending:
            await asyncio.wait(pending, timeout=self.dependency_wait_seconds)
        return {r: f.result() if f is not None and f.done() else NOT_LIVE for r, f in futures.items()}
