"""One person, followed from the source to every vendor: the answer to "why isn't Anna at NE?".

:class:`PersonExplainer` reads, for one person of one organiser, everything the answer needs and nothing
of anyone else's: their source records (the person, their duties and placements), their groups, the
data-quality findings about them, every subscription's verdict on them with its reasons
(:mod:`skolsynk.domain.verdicts`, on the person's neighbourhood as the normaliser reads it for an
incremental projection, :class:`skolsynk.storage.neighbourhood.Neighbourhood`, so the selection sees
exactly what the normaliser sees), what each vendor was sent and when (the delivery ledger), their
deletions at the vendors with the receipts (the erasure ledger), and their erasure requests and
objections, each with what became of it at every vendor.

Every read is by id or by an index on the person (their references, their views, their ledger entries):
no query walks the organiser. Shared by the admin service (the person page, its API) and the operator
command line (``skolsynk explain``); the result holds personal data (names, logins, addresses): the
admin shows it only to roles that may see it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, date, datetime
from typing import Any
from uuid import UUID

from pydantic import BaseModel, Field

from skolsynk.adapters.egil import EgilMappingError, to_egil
from skolsynk.catalogue import DeliveryMode
from skolsynk.domain.dependencies import EMAIL, EPPN, referenced_ids, stored, token, unique_token
from skolsynk.domain.ids import entity_id
from skolsynk.domain.reconcile import reconcile
from skolsynk.domain.selection import StoredEntity
from skolsynk.domain.ss12000 import (
    Duty,
    Entity,
    EntityKind,
    Group,
    Organisation,
    Person,
    Placement,
    SchoolUnit,
)
from skolsynk.domain.verdicts import AtVendor, FormatCheck, HeldRemoval, VendorVerdict, judge
from skolsynk.storage.admin import OrganiserSettings
from skolsynk.storage.deliveries import entries_of
from skolsynk.storage.entities import EntityReader
from skolsynk.storage.erasures import (
    ErasureLedger,
    ErasureRequestStore,
    receipts_of,
    suppressed_for_vendor,
    suppressions,
)
from skolsynk.storage.findings import FINDINGS
from skolsynk.storage.holds import HoldStore
from skolsynk.storage.mongo import Database, Document, stored_time
from skolsynk.storage.neighbourhood import Neighbourhood
from skolsynk.storage.runs import SourceRuns
from skolsynk.storage.subscriptions import SubscriptionStore
from skolsynk.storage.vendor_views import VendorViews
from skolsynk.storage.vendors import VendorStore


def utcnow() -> datetime:
    return datetime.now(UTC)


class PersonFacts(BaseModel):
    """Who the person is, as their source has it (personal data)."""

    person_id: UUID
    source_id: str
    key: str
    given_name: str
    middle_name: str | None = None
    family_name: str
    logins: list[str] = Field(description="eduPersonPrincipalNames; the first is the login.")
    emails: list[str]
    security_marking: str | None = Field(description="None: the source does not say.")
    person_status: str | None = Field(description="None: a value SS 12000 does not know.")


class SourceRecordView(BaseModel):
    """One record of the person's in a source: the person, a duty, a placement."""

    entity_id: UUID
    source_id: str
    kind: str
    key: str
    changed_at: datetime | None = Field(description="When the record last changed in skolsynk.")
    source_complete_at: datetime | None = Field(
        description="The source's latest complete run, which had the record as it is (None: none complete yet)."
    )


class RelationView(BaseModel):
    """An enrolment, a duty or a placement, in brief."""

    relation: str = Field(description="enrolment, duty or placement.")
    role: str = Field(description="The duty's role (SS 12000), or student.")
    school_unit: str | None = Field(description="The school unit's (or organisation's) name.")
    school_unit_code: str | None
    school_type: str | None = None
    school_year: int | None = None
    start_date: date | None = None
    end_date: date | None = None
    active: bool = Field(description="Active today (dates, and not cancelled).")


class GroupView(BaseModel):
    group_id: UUID
    display_name: str
    group_type: str
    school_unit: str | None
    school_unit_code: str | None
    active: bool = Field(description="The group and the person's membership are active today.")


class FindingView(BaseModel):
    """A data-quality finding about the person or one of their records."""

    code: str
    severity: str
    entity_kind: str | None = None
    entity_id: UUID | None = None
    field: str | None = None
    detail: str = ""
    value: str | None = Field(default=None, description="The offending value (may be personal data).")
    school_unit_code: str | None = None


class DeliveryView(BaseModel):
    """What the vendor's dispatcher last recorded for one of the person's entities (the delivery ledger)."""

    vendor_id: str
    entity_id: UUID = Field(description="The id the vendor knows it by.")
    kind: str
    operation: str
    version: int
    status: str = Field(description="delivered, test, test_rejected or rejected.")
    test: bool
    at: datetime
    reason: str | None = None


class DeletionView(BaseModel):
    """One deletion of the person at a vendor (the erasure ledger) and its receipt."""

    vendor_id: str
    vendor_entity_id: UUID
    version: int
    reason: str | None
    requested_at: datetime | None
    status: str = Field(description="pending, overdue, completed or superseded.")
    outcome: str | None = None
    delivered_at: datetime | None = None
    retries: int = 0


class RequestReceipt(BaseModel):
    """What became of an erasure request or objection at one vendor."""

    vendor_id: str
    status: str = Field(description="pending, overdue, completed, superseded, or none (nothing deleted there yet).")
    requested_at: datetime | None = None
    outcome: str | None = None
    delivered_at: datetime | None = None


class RequestView(BaseModel):
    request_id: str
    kind: str = Field(description="erasure or objection.")
    status: str = Field(description="active or withdrawn.")
    vendor_ids: list[str] | None = Field(description="None: every vendor.")
    reference: str | None = None
    requested_at: datetime | None = None
    requested_by: str | None = None
    withdrawn_at: datetime | None = None
    receipts: list[RequestReceipt]


class PersonExplanation(BaseModel):
    """One person from the source to every vendor (``skolsynk explain --json`` prints the same)."""

    tenant_id: str
    person_id: UUID
    today: date
    person: PersonFacts | None = Field(description="None: no source has the person (any more).")
    records: list[SourceRecordView]
    relations: list[RelationView]
    groups: list[GroupView]
    findings: list[FindingView]
    verdicts: list[VendorVerdict] = Field(description="One per subscription, in vendor order.")
    vendor_names: dict[str, str]
    deliveries: list[DeliveryView]
    deletions: list[DeletionView]
    requests: list[RequestView]


def egil_check(resource: dict[str, Any]) -> str | None:
    """The field an EGIL SCIM vendor cannot take in ``resource`` (as its dispatcher would refuse it)."""
    try:
        to_egil(resource)
    except EgilMappingError as error:
        return error.field
    return None


class PersonExplainer:
    def __init__(self, db: Database, *, clock: Callable[[], datetime] = utcnow) -> None:
        self.db = db
        self.clock = clock
        self.entities = EntityReader(db)
        self.subscriptions = SubscriptionStore(db)
        self.organiser_settings = OrganiserSettings(db)
        self.requests = ErasureRequestStore(db)
        self.ledger = ErasureLedger(db)
        self.views = VendorViews(db)
        self.runs = SourceRuns(db)
        self.vendors = VendorStore(db)
        self.holds = HoldStore(db)

    async def resolve(self, tenant_id: str, text: str) -> list[UUID]:
        """The persons ``text`` names exactly: their id, or one of their logins or e-mail addresses (an index
        lookup of the digests the normaliser keeps); none, one, or several (a login two persons share)."""
        text = text.strip()
        try:
            return [UUID(text)]
        except ValueError:
            pass
        tokens = [stored(EntityKind.PERSON, unique_token(prefix, text.lower())) for prefix in (EPPN, EMAIL)]
        found = await self.entities.carrying(tenant_id, tokens)
        return sorted({UUID(d["_id"]) for d in found if d.get("kind") == EntityKind.PERSON.value}, key=str)

    async def explain(self, tenant_id: str, person_id: UUID) -> PersonExplanation | None:
        """Everything about one person; None when skolsynk knows nothing of them (not in a source, never
        delivered, no deletion or request)."""
        now = self.clock()
        today = now.date()
        pid = str(person_id)
        neighbourhood = Neighbourhood(tenant_id, self.entities)
        entities = await neighbourhood.load({pid: EntityKind.PERSON})
        doc = neighbourhood.documents.get(pid)
        if doc is not None and doc.get("kind") != EntityKind.PERSON.value:
            return None
        missing_marking = await self.organiser_settings.missing_marking(tenant_id)
        state, reconciled = reconcile(tenant_id, entities, today, missing_marking=missing_marking)
        subscriptions = await self.subscriptions.for_tenant(tenant_id)
        requests = await self.requests.for_person(tenant_id, pid)
        deletions = await self.ledger.for_person(tenant_id, pid)
        records = [d for d in neighbourhood.documents.values() if d is not None and _belongs(d, pid)]
        views = await self.views.of_entities(tenant_id, [str(d["_id"]) for d in records] or [pid])
        deliveries = await entries_of(self.db, tenant_id, [(v["vendor_id"], v["entity_id"]) for v in views])
        if doc is None and not views and not deletions and not requests:
            return None
        catalogue = {v.entry.vendor_id: v.entry for v in await self.vendors.all()}
        suppressed = suppressions(requests)
        ledger_of = {(d["vendor_id"], d["entity_id"]): d for d in deliveries}
        verdicts = []
        for subscription, profile in subscriptions:
            vendor_id = subscription.vendor_id
            view = next((v for v in views if v["vendor_id"] == vendor_id and v["source_entity_id"] == pid), None)
            at_vendor = None if view is None else _at_vendor(view, ledger_of.get((vendor_id, view["entity_id"])))
            entry = catalogue.get(vendor_id)
            check: FormatCheck | None = egil_check if entry and entry.delivery is DeliveryMode.EGIL_SCIM else None
            verdicts.append(
                judge(
                    state,
                    reconciled,
                    person_id,
                    subscription,
                    profile,
                    today,
                    suppression=suppressed_for_vendor(suppressed, vendor_id).get(pid),
                    at_vendor=at_vendor,
                    held=await self._held(tenant_id, vendor_id, view),
                    format_check=check,
                )
            )
        places = _Places(entities)
        await places.add_missing(self.entities, tenant_id, await self._groups(tenant_id, pid))
        person = next((s for s in entities if str(s.id) == pid), None)
        return PersonExplanation(
            tenant_id=tenant_id,
            person_id=person_id,
            today=today,
            person=_facts(person) if person is not None else None,
            records=await self._records(tenant_id, records, now),
            relations=_relations(entities, pid, places, today),
            groups=places.groups(pid, today),
            findings=await self._findings(tenant_id, [str(d["_id"]) for d in records] or [pid]),
            verdicts=verdicts,
            vendor_names={vendor_id: entry.display_name for vendor_id, entry in catalogue.items()},
            deliveries=sorted(
                (_delivery(d) for d in deliveries), key=lambda d: (d.vendor_id, d.kind, str(d.entity_id))
            ),
            deletions=[_deletion(d) for d in sorted(deletions, key=lambda d: str(d.get("requested_at")))],
            requests=[
                _request(r, deletions, [s.vendor_id for s, _ in subscriptions if s.ended_at is None]) for r in requests
            ],
        )

    async def _held(self, tenant_id: str, vendor_id: str, view: Document | None) -> HeldRemoval | None:
        """The hold that keeps back the removal of the person's view at the vendor, if any."""
        if view is None or not view.get("present"):
            return None
        hold = await self.holds.holding(tenant_id, vendor_id, view["entity_id"])
        if hold is None:
            return None
        codes = hold.get("school_unit_codes") or [None]
        return HeldRemoval(school_unit_code=codes[0], status=str(hold["status"]))

    async def _groups(self, tenant_id: str, person_id: str) -> list[Document]:
        """The groups the person is a member of (``by_reference``)."""
        return await self.entities.referring(tenant_id, [token(EntityKind.PERSON, person_id)], [EntityKind.GROUP])

    async def _findings(self, tenant_id: str, entity_ids: list[str]) -> list[FindingView]:
        # Exactly the fields of ``ENTITY_INDEX``, not hinted (a hint makes the Mongo wire server walk it all).
        cursor = self.db[FINDINGS].find({"tenant_id": tenant_id, "entity_id": {"$in": sorted(entity_ids)}}, {"_id": 0})
        found = [
            FindingView.model_validate({k: doc.get(k) for k in FindingView.model_fields if doc.get(k) is not None})
            async for doc in cursor
        ]
        return sorted(found, key=lambda f: (f.severity, f.code))

    async def _records(self, tenant_id: str, records: list[Document], now: datetime) -> list[SourceRecordView]:
        complete: dict[str, datetime | None] = {}
        for source_id in sorted({str(d["source_id"]) for d in records}):
            complete[source_id] = (await self.runs.health(tenant_id, source_id, now=now)).last_complete_at
        order = {EntityKind.PERSON.value: 0, EntityKind.DUTY.value: 1, EntityKind.PLACEMENT.value: 2}
        return [
            SourceRecordView(
                entity_id=UUID(d["_id"]),
                source_id=d["source_id"],
                kind=d["kind"],
                key=str(d.get("key") or (d.get("data") or {}).get("key") or ""),
                changed_at=stored_time(d.get("updated_at")),
                source_complete_at=complete.get(str(d["source_id"])),
            )
            for d in sorted(records, key=lambda d: (order.get(d["kind"], 9), str(d.get("key"))))
        ]


def _belongs(document: Document, person_id: str) -> bool:
    """The person's own record, or a duty or placement of theirs."""
    if document["_id"] == person_id:
        return True
    if document["kind"] not in (EntityKind.DUTY.value, EntityKind.PLACEMENT.value):
        return False
    return person_id in referenced_ids(document.get("refs", []), EntityKind.PERSON)


def _at_vendor(view: Document, ledger: Document | None) -> AtVendor:
    return AtVendor(
        entity_id=UUID(view["entity_id"]),
        present=bool(view.get("present")),
        version=int(view.get("version") or 0),
        hash=view.get("hash"),
        removal_pending_since=stored_time(view.get("removal_pending_since")),
        delivered_version=None if ledger is None else int(ledger.get("version") or 0),
        delivered_status=None if ledger is None else str(ledger.get("status")),
    )


def _facts(stored_person: StoredEntity) -> PersonFacts:
    person = stored_person.entity
    assert isinstance(person, Person)
    return PersonFacts(
        person_id=stored_person.id,
        source_id=stored_person.source_id,
        key=person.key,
        given_name=person.given_name,
        middle_name=person.middle_name,
        family_name=person.family_name,
        logins=list(person.eppn),
        emails=[e.value for e in person.emails],
        security_marking=None if person.security_marking is None else person.security_marking.value,
        person_status=None if person.person_status is None else person.person_status.value,
    )


class _Places:
    """The school units and organisations read for the person (by source and key), for names and codes."""

    def __init__(self, entities: Iterable[StoredEntity]) -> None:
        self.by_key: dict[tuple[str, str], Entity] = {}
        self.group_docs: list[Document] = []
        for s in entities:
            if isinstance(s.entity, SchoolUnit | Organisation):
                self.by_key[(s.source_id, s.entity.key)] = s.entity

    async def add_missing(self, reader: EntityReader, tenant_id: str, groups: list[Document]) -> None:
        """Remember the person's groups, and read the school units of theirs not read yet (by id)."""
        self.group_docs = groups
        wanted = {
            str(
                entity_id(
                    tenant_id, g["source_id"], EntityKind.SCHOOL_UNIT, str((g.get("data") or {}).get("school_unit"))
                )
            )
            for g in groups
            if (g["source_id"], str((g.get("data") or {}).get("school_unit"))) not in self.by_key
        }
        for doc in await reader.by_ids(wanted) if wanted else []:
            if doc.get("kind") == EntityKind.SCHOOL_UNIT.value:
                unit = SchoolUnit.model_validate(doc["data"])
                self.by_key[(doc["source_id"], unit.key)] = unit

    def name_and_code(self, source_id: str, key: str) -> tuple[str | None, str | None]:
        entity = self.by_key.get((source_id, key))
        if isinstance(entity, SchoolUnit):
            return entity.display_name, entity.school_unit_code
        if isinstance(entity, Organisation):
            return entity.display_name, None
        return None, None

    def groups(self, person_id: str, today: date) -> list[GroupView]:
        """The person's groups (active ones first), with whether their membership is active today."""
        views = []
        for doc in self.group_docs:
            group = Group.model_validate(doc["data"])
            name, code = self.name_and_code(doc["source_id"], group.school_unit)
            source = (doc["tenant_id"], doc["source_id"])
            mine = [m for m in group.memberships if str(entity_id(*source, EntityKind.PERSON, m.person)) == person_id]
            views.append(
                GroupView(
                    group_id=UUID(doc["_id"]),
                    display_name=group.display_name,
                    group_type=group.group_type.value,
                    school_unit=name,
                    school_unit_code=code,
                    active=group.active_on(today) and any(m.active_on(today) for m in mine),
                )
            )
        return sorted(views, key=lambda g: (not g.active, g.display_name))


def _relations(entities: list[StoredEntity], person_id: str, places: _Places, today: date) -> list[RelationView]:
    person = next((s for s in entities if str(s.id) == person_id), None)
    if person is None or not isinstance(person.entity, Person):
        return []
    source, key = person.source_id, person.entity.key
    rows = []
    for enrolment in person.entity.enrolments:
        name, code = places.name_and_code(source, enrolment.school_unit)
        rows.append(
            RelationView(
                relation="enrolment",
                role="student",
                school_unit=name,
                school_unit_code=code,
                school_type=enrolment.school_type.value,
                school_year=enrolment.school_year,
                start_date=enrolment.start_date,
                end_date=enrolment.end_date,
                active=enrolment.active_on(today),
            )
        )
    for s in entities:
        entity = s.entity
        if s.source_id != source:
            continue
        if isinstance(entity, Duty) and entity.person == key:
            name, code = places.name_and_code(source, entity.school_unit)
            rows.append(
                RelationView(
                    relation="duty",
                    role=entity.role.value,
                    school_unit=name,
                    school_unit_code=code,
                    start_date=entity.start_date,
                    end_date=entity.end_date,
                    active=entity.active_on(today),
                )
            )
        elif isinstance(entity, Placement) and entity.child == key:
            name, code = places.name_and_code(source, entity.school_unit)
            rows.append(
                RelationView(
                    relation="placement",
                    role="student",
                    school_unit=name,
                    school_unit_code=code,
                    school_type=entity.school_type.value,
                    start_date=entity.start_date,
                    end_date=entity.end_date,
                    active=entity.active_on(today),
                )
            )
    return rows


def _delivery(doc: Document) -> DeliveryView:
    return DeliveryView(
        vendor_id=doc["vendor_id"],
        entity_id=UUID(doc["entity_id"]),
        kind=doc["kind"],
        operation=doc["operation"],
        version=int(doc["version"]),
        status=doc["status"],
        test=bool(doc.get("test")),
        at=stored_time(doc.get("at")) or datetime.min.replace(tzinfo=UTC),
        reason=doc.get("reason"),
    )


def _deletion(doc: Document) -> DeletionView:
    receipt = doc.get("receipt") or {}
    return DeletionView(
        vendor_id=doc["vendor_id"],
        vendor_entity_id=UUID(doc["vendor_entity_id"]),
        version=int(doc["version"]),
        reason=doc.get("reason"),
        requested_at=stored_time(doc.get("requested_at")),
        status=doc["status"],
        outcome=receipt.get("outcome"),
        delivered_at=stored_time(receipt.get("delivered_at")),
        retries=int(doc.get("retries") or 0),
    )


def _request(doc: Document, ledger: list[Document], vendor_ids: list[str]) -> RequestView:
    return RequestView(
        request_id=str(doc["_id"]),
        kind=doc["kind"],
        status=doc["status"],
        vendor_ids=doc.get("vendor_ids"),
        reference=doc.get("reference"),
        requested_at=stored_time(doc.get("requested_at")),
        requested_by=doc.get("requested_by"),
        withdrawn_at=stored_time(doc.get("withdrawn_at")),
        receipts=[RequestReceipt.model_validate(r) for r in receipts_of(doc, ledger, vendor_ids)],
    )
