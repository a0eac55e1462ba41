"""The normaliser's vendor views (collection ``vendor_views``): per (tenant, vendor, entity) what the
vendor was last sent (hash, version, present, school units, roles). Named here, with the query the
GDPR service runs on it.

The normaliser is the only writer; its projection's queries and their indexes are in
``services/skolsynk_services/normaliser`` (``projection.py``, ``state.py``). Ids, hashes and versions
only: no personal data.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta

from skolsynk.storage.erasures import DEFAULT_RETENTION
from skolsynk.storage.mongo import Database, Document, IndexSpec, Session, in_parts

VENDOR_VIEWS = "vendor_views"

#: A person's views at every vendor (the GDPR purge: is the person still at any vendor).
PERSON_VIEWS_INDEX = "by_person"

#: How long the view of an entity the vendor no longer holds is kept: a week longer than the delivery
#: ledger's entry of its deletion (``deliveries.DELETED_RETENTION``), so that an entity coming back is
#: always sent with a version newer than the dispatcher has recorded.
ABSENT_RETENTION = DEFAULT_RETENTION + timedelta(days=7)

#: Ensured by the normaliser (the owner of the collection) with its own indexes.
INDEXES = [
    IndexSpec(VENDOR_VIEWS, [("tenant_id", 1), ("source_entity_id", 1)], name=PERSON_VIEWS_INDEX),
    # Views written absent carry ``expires_at`` (``ABSENT_RETENTION``); a present view has none.
    IndexSpec(VENDOR_VIEWS, [("expires_at", 1)], name="expires_at_ttl", expire_after_seconds=0),
]


class VendorViews:
    """What components other than the normaliser read from its vendor views."""

    def __init__(self, db: Database) -> None:
        self.collection = db[VENDOR_VIEWS]

    async def sources_of(self, tenant_id: str, vendor_id: str, entity_ids: Iterable[str]) -> dict[str, str]:
        """For these ids a vendor knows entities by: the entity's own id (a protected person's pseudonym,
        a duty at one of several school units: another id than its own), by ``_id`` (one read per part)."""
        found: dict[str, str] = {}
        for part in in_parts(f"{tenant_id}:{vendor_id}:{e}" for e in entity_ids):
            cursor = self.collection.find({"_id": {"$in": part}}, {"entity_id": 1, "source_entity_id": 1})
            found.update({d["entity_id"]: d.get("source_entity_id") or d["entity_id"] async for d in cursor})
        return found

    async def present_at_a_live_vendor(self, tenant_id: str, person_id: str, *, session: Session | None = None) -> bool:
        """Whether a live subscription's view still holds the person as present (a removal held by the
        mass-deletion guard, for example). A test-mode subscription's view never counts: nothing was
        delivered, so nothing waits there for a deletion."""
        # Equality on (tenant_id, source_entity_id) alone, served by ``by_person``, ``present`` and
        # ``test_mode`` checked here: with extra predicates the Mongo wire server walked every vendor view
        # (seconds per receipt at 20,000 persons).
        views = self.collection.find(
            {"tenant_id": tenant_id, "source_entity_id": person_id}, {"present": 1, "test_mode": 1}, session=session
        )
        return any([bool(doc.get("present")) and not doc.get("test_mode") async for doc in views])

    async def of_entities(self, tenant_id: str, source_entity_ids: Iterable[str]) -> list[Document]:
        """Every vendor's views of these entities of the tenant (``by_person``): a person's, with their
        duties' (a view's ``source_entity_id`` is the entity's own id, also when the vendor knows it by a
        pseudonym or one id per school unit): ``vendor_id``, ``entity_id`` (the id the vendor knows),
        ``source_entity_id``, ``kind``, ``present``, ``version``, ``hash``, ``test_mode``,
        ``removal_pending_since``, ``updated_at``."""
        fields = ("vendor_id", "entity_id", "source_entity_id", "kind", "present", "version", "hash",
                  "test_mode", "removal_pending_since", "updated_at")  # fmt: skip
        found: list[Document] = []
        for part in in_parts(source_entity_ids):
            criteria = {"tenant_id": tenant_id, "source_entity_id": {"$in": part}}
            found += await self.collection.find(criteria, {"_id": 0, **dict.fromkeys(fields, 1)}).to_list(None)
        return found
