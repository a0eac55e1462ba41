"""Removals held by the mass-deletion guard (collection ``holds``): written by the normaliser (its
projection's queries are in ``services/skolsynk_services/normaliser/projection.py``), decided by an
operator through the admin service, counted by the operator CLI.

* **approve**: the held removals go out at the next projection, and the hold closes;
* **discard**: the held removals are not sent; the hold stays (status ``discarded``) while the
  same removals are still wanted, so nobody is asked again about the same thing, and a new pending
  hold appears if the situation changes (more removals, or the source comes back). Fix the source,
  or approve later.

After a decision, request a projection (``tenant.projection.requested``) for it to take effect.

Beside a hold:

* ``hold_entities``: one document per entity whose removal a hold keeps back (its vendor id, source id,
  kind, why it leaves the selection, and, for an entity no longer in the source, the name it had
  there), so the admin lists who a hold affects page by page; the hold itself keeps the ids the
  guard compares (``entity_ids``). Written with the hold, removed with it.
* ``hold_history``: one document per decision (who, when, what, how many removals, why the hold came)
  and per hold that closed undecided because its removals no longer applied; kept, as the audit log is.

A hold's ``causes`` say why its removals came (:data:`HoldCause`): the source runs, or the admin's
change (who, which action, when), that the projection creating or growing the hold carried out.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, Literal, TypedDict

from pymongo import DeleteMany, ReturnDocument, UpdateOne

from skolsynk.storage.mongo import Database, Document, IndexSpec, Session, in_parts

HOLDS = "holds"
HOLD_ENTITIES = "hold_entities"
HOLD_HISTORY = "hold_history"

INDEXES = [
    IndexSpec(HOLDS, [("tenant_id", 1), ("vendor_id", 1)], name="by_vendor"),
    IndexSpec(HOLD_ENTITIES, [("hold_id", 1), ("order", 1), ("entity_id", 1)], name="by_hold"),
    IndexSpec(HOLD_ENTITIES, [("tenant_id", 1), ("source_entity_id", 1)], name="by_source_entity"),
    IndexSpec(HOLD_HISTORY, [("tenant_id", 1), ("at", -1)], name="by_tenant"),
]

Decision = Literal["approved", "discarded"]
#: What a history entry records: a decision, or a hold that closed undecided (its removals no longer applied).
Outcome = Literal["approved", "discarded", "resolved"]

#: At most this many causes are kept on a hold (the latest).
MAX_CAUSES = 5
#: The order the affected entities are listed in: persons first.
KIND_ORDER = {"person": 0, "duty": 1, "group": 2, "activity": 3, "placement": 4}


class HoldCause(TypedDict, total=False):
    """Why a hold's removals came. ``kind``: ``source`` (a source run: ``source_id``, ``run_id``, ``mode``,
    ``at`` when it finished), ``change`` (the admin's change: ``actor``, ``action`` as in the audit log,
    ``target``, ``at``, and the projection's ``reason``), ``dates`` (end dates in the source's data passed)
    or ``other`` (a projection for another ``reason``: an erasure, a resend, a drift check)."""

    kind: Literal["source", "change", "dates", "other"]
    reason: str
    source_id: str
    run_id: str
    mode: str
    actor: str
    action: str
    target: str
    at: datetime


class HeldEntity(TypedDict, total=False):
    """One held removal, as the normaliser writes it to ``hold_entities``."""

    entity_id: str
    source_entity_id: str
    kind: str
    reason: str
    #: The name the entity had in the source, only when it is no longer there (nothing else has it).
    name: str


def merge_causes(earlier: Sequence[HoldCause], new: Iterable[HoldCause]) -> list[HoldCause]:
    """``earlier`` then ``new``, each once (the latest :data:`MAX_CAUSES`)."""
    merged: list[HoldCause] = []
    for cause in (*earlier, *new):
        if cause not in merged:
            merged.append(cause)
    return merged[-MAX_CAUSES:]


class HoldStore:
    def __init__(self, db: Database) -> None:
        self.collection = db[HOLDS]
        self.entities = db[HOLD_ENTITIES]
        self.history_collection = db[HOLD_HISTORY]

    @staticmethod
    def hold_id(tenant_id: str, vendor_id: str, school_unit_id: str) -> str:
        return f"{tenant_id}:{vendor_id}:{school_unit_id}"

    async def holding(self, tenant_id: str, vendor_id: str, entity_id: str) -> Document | None:
        """The vendor's hold that keeps back the removal of ``entity_id`` (pending), or kept it (discarded),
        without its ids (the person page). Hinted ``by_vendor``: for the predicate on the ids beside the
        index's fields the Mongo wire server's planner would walk the collection."""
        criteria = {"tenant_id": tenant_id, "vendor_id": vendor_id, "entity_ids": entity_id}
        async for hold in self.collection.find(criteria, {"entity_ids": 0}).hint("by_vendor"):
            if hold.get("status") in ("pending", "discarded"):
                return hold
        return None

    async def for_tenant(self, tenant_id: str, *, status: str | None = None) -> list[Document]:
        criteria: dict[str, str] = {"tenant_id": tenant_id}
        if status is not None:
            criteria["status"] = status
        return await self.collection.find(criteria).sort("_id", 1).to_list(None)

    async def get(self, tenant_id: str, vendor_id: str, school_unit_id: str) -> Document | None:
        return await self.collection.find_one({"_id": self.hold_id(tenant_id, vendor_id, school_unit_id)})

    async def pending_by_vendor(self) -> list[Document]:
        """Pending holds of every tenant, per (tenant, vendor): ``_id`` is ``{t: tenant, v: vendor}``,
        then ``n`` (holds), ``removals`` (held removals) and ``oldest`` (when the oldest was created)."""
        cursor = await self.collection.aggregate(
            [
                {"$match": {"status": "pending"}},
                {
                    "$group": {
                        "_id": {"t": "$tenant_id", "v": "$vendor_id"},
                        "n": {"$sum": 1},
                        "removals": {"$sum": "$removals"},
                        "oldest": {"$min": "$created_at"},
                    }
                },
            ]
        )
        return [doc async for doc in cursor]

    async def decide(self, tenant_id: str, vendor_id: str, school_unit_id: str, decision: Decision, *, by: str) -> bool:
        """Record a decision on a pending hold, and in the history; False when there is no such pending hold."""
        at = datetime.now(UTC)
        decided = await self.collection.find_one_and_update(
            {"_id": self.hold_id(tenant_id, vendor_id, school_unit_id), "status": "pending"},
            {"$set": {"status": decision, "decided_by": by, "decided_at": at}},
            return_document=ReturnDocument.AFTER,
        )
        if decided is None:
            return False
        await self.record(decided, decision, by=by, at=at)
        return True

    # --- history -----------------------------------------------------------------------------------

    async def record(self, hold: Document, outcome: Outcome, *, by: str | None, at: datetime) -> None:
        """Add what became of ``hold`` to the history: the hold as it was (counts, causes, codes), never its ids."""
        await self.history_collection.insert_one(
            {
                "hold_id": hold["_id"],
                "tenant_id": hold["tenant_id"],
                "vendor_id": hold["vendor_id"],
                "school_unit_id": hold["school_unit_id"],
                "school_unit_codes": hold.get("school_unit_codes", []),
                "outcome": outcome,
                "by": by,
                "at": at,
                "removals": hold.get("removals", 0),
                "population": hold.get("population", 0),
                "causes": hold.get("causes", []),
                "held_since": hold.get("created_at"),
            }
        )

    async def history(self, tenant_id: str, *, skip: int = 0, limit: int = 50) -> tuple[list[Document], int]:
        """A page of the tenant's history, newest first, and how many entries there are."""
        criteria = {"tenant_id": tenant_id}
        total = await self.history_collection.count_documents(criteria)
        cursor = self.history_collection.find(criteria, {"_id": 0}).sort("at", -1).skip(skip).limit(limit)
        return await cursor.to_list(None), total

    # --- the entities a hold affects ---------------------------------------------------------------

    async def affected(
        self,
        tenant_id: str,
        vendor_id: str,
        school_unit_id: str,
        *,
        skip: int = 0,
        limit: int = 50,
        text: str = "",
        by_name: bool = True,
        source_ids: Iterable[str] | None = None,
    ) -> tuple[list[Document], int]:
        """A page of the entities a hold affects (persons first) and how many match. ``text`` finds them by
        their ids or (``by_name``) the name kept for those no longer in the source; ``source_ids`` (entities
        of the source whose names match, found by the caller) by their source ids as well."""
        criteria: dict[str, Any] = {"hold_id": self.hold_id(tenant_id, vendor_id, school_unit_id)}
        alternatives: list[dict[str, Any]] = []
        if text:
            pattern = {"$regex": re.escape(text), "$options": "i"}
            alternatives += [{"entity_id": pattern}, {"source_entity_id": pattern}]
            if by_name:
                alternatives.append({"name": pattern})
        if source_ids is not None:
            for part in in_parts(source_ids):
                alternatives.append({"source_entity_id": {"$in": part}})
        if text or source_ids is not None:
            criteria["$or"] = alternatives or [{"_id": None}]
        total = await self.entities.count_documents(criteria)
        cursor = self.entities.find(criteria).sort([("order", 1), ("entity_id", 1)]).skip(skip).limit(limit)
        return await cursor.to_list(None), total

    async def keep_entities(
        self, hold: Document, ids: Iterable[str], entries: Iterable[HeldEntity], *, session: Session | None = None
    ) -> None:
        """Make ``hold``'s entities exactly ``ids``: write ``entries`` it does not list yet, drop the rest. An
        entity listed already keeps its document (and a name kept from when it left the source)."""
        hold_id = hold["_id"]
        wanted = set(ids)
        listed = {d["entity_id"] async for d in self.entities.find({"hold_id": hold_id}, {"entity_id": 1})}
        operations: list[Any] = []
        for entry in entries:
            entity_id = entry["entity_id"]
            if entity_id not in wanted or entity_id in listed:
                continue
            listed.add(entity_id)
            fields: dict[str, Any] = {
                "hold_id": hold_id,
                "tenant_id": hold["tenant_id"],
                "vendor_id": hold["vendor_id"],
                "school_unit_id": hold["school_unit_id"],
                **entry,
                "order": KIND_ORDER.get(entry.get("kind", ""), len(KIND_ORDER)),
            }
            operations.append(UpdateOne({"_id": f"{hold_id}:{entity_id}"}, {"$set": fields}, upsert=True))
        gone = listed - wanted
        for part in in_parts(gone):
            operations.append(DeleteMany({"_id": {"$in": [f"{hold_id}:{e}" for e in part]}}))
        if operations:
            await self.entities.bulk_write(operations, ordered=False, session=session)

    async def forget(self, hold_id: str, *, session: Session | None = None) -> None:
        """A hold is gone: so are the entities it listed."""
        await self.entities.delete_many({"hold_id": hold_id}, session=session)

    async def forget_names(self, tenant_id: str, ids: Iterable[str], *, session: Session | None = None) -> int:
        """Drop the names kept for ``ids`` (the GDPR purge of a person: their ids stay, pseudonymous)."""
        forgotten = 0
        for part in in_parts(ids):
            result = await self.entities.update_many(
                # The index's fields alone (a further predicate makes the Mongo wire server walk the
                # collection); an entity without a name is matched and left as it is.
                {"tenant_id": tenant_id, "source_entity_id": {"$in": part}},
                {"$unset": {"name": ""}},
                session=session,
            )
            forgotten += result.modified_count
        return forgotten
