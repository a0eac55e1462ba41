"""The canonical state the normaliser keeps (collection ``entities``, and ``entity_tombstones``: per
deleted entity its last dependency tokens until the next projection): named here, and read through
here by the normaliser's own projections, the admin service's previews and person search, and the
GDPR purge.

The normaliser is the only writer (``services/skolsynk_services/normaliser/state.py``, with the indexes
of its queries)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import date
from typing import Any
from uuid import UUID

from skolsynk.domain.quality import Finding
from skolsynk.domain.reconcile import reconcile
from skolsynk.domain.selection import StoredEntity, TenantState
from skolsynk.domain.ss12000 import ENTITY_MODELS, EntityKind, Person
from skolsynk.domain.subscription import MissingMarkingPolicy
from skolsynk.storage.mongo import Database, Session, in_parts

ENTITIES = "entities"
ENTITY_TOMBSTONES = "entity_tombstones"


class EntityReader:
    def __init__(self, db: Database) -> None:
        self.collection = db[ENTITIES]

    async def exists(self, entity_id: str, *, session: Session | None = None) -> bool:
        """Whether the entity is in the canonical state (by ``_id`` alone: ids are unique across tenants)."""
        return bool(await self.collection.count_documents({"_id": entity_id}, session=session))

    async def load_tenant(self, tenant_id: str) -> list[StoredEntity]:
        cursor = self.collection.find({"tenant_id": tenant_id}, {"data": 1, "kind": 1, "source_id": 1})
        return [
            StoredEntity(
                UUID(doc["_id"]), doc["source_id"], ENTITY_MODELS[EntityKind(doc["kind"])].model_validate(doc["data"])
            )
            async for doc in cursor
        ]

    async def tenant_state(
        self,
        tenant_id: str,
        today: date,
        *,
        missing_marking: MissingMarkingPolicy = MissingMarkingPolicy.PROTECTED,
    ) -> tuple[TenantState, list[Finding]]:
        """The reconciled state, exactly as the normaliser projects it (given the organiser's
        ``missing_marking`` setting, :class:`skolsynk.storage.admin.OrganiserSettings`)."""
        return reconcile(tenant_id, await self.load_tenant(tenant_id), today, missing_marking=missing_marking)

    async def counts(self, tenant_id: str) -> dict[str, int]:
        """Entities per kind."""
        pipeline: list[dict[str, Any]] = [
            {"$match": {"tenant_id": tenant_id}},
            {"$group": {"_id": "$kind", "n": {"$sum": 1}}},
        ]
        cursor = await self.collection.aggregate(pipeline)
        return {doc["_id"]: doc["n"] async for doc in cursor}

    async def find_persons(self, tenant_id: str, text: str, *, limit: int = 20) -> list[tuple[UUID, Person]]:
        """Persons whose name, login or e-mail contains ``text`` (case-insensitive), for the admin's
        erasure form; at most ``limit``."""
        if len(text.strip()) < 2:
            return []
        pattern = {"$regex": re.escape(text.strip()), "$options": "i"}
        criteria = {
            "tenant_id": tenant_id,
            "kind": EntityKind.PERSON.value,
            "$or": [
                {"data.given_name": pattern},
                {"data.family_name": pattern},
                {"data.eppn": pattern},
                {"data.emails.value": pattern},
            ],
        }
        found = []
        async for doc in self.collection.find(criteria, {"data": 1}).limit(limit):
            person = Person.model_validate(doc["data"])
            found.append((UUID(doc["_id"]), person))
        return found

    # --- names (the admin's lists of whom something affects) -------------------------------------------

    async def names(self, ids: Iterable[str]) -> dict[str, str]:
        """The names of the entities among ``ids`` still in the source (one read per part of the ids): a
        person's given and family name, a group's or activity's display name."""
        found: dict[str, str] = {}
        for part in in_parts(ids):
            cursor = self.collection.find({"_id": {"$in": part}}, {f"data.{n}": 1 for n in NAME_FIELDS})
            found.update({doc["_id"]: name async for doc in cursor if (name := entity_name(doc.get("data") or {}))})
        return found

    async def named(self, tenant_id: str, text: str, *, limit: int = 5000) -> list[str]:
        """Ids of the tenant's entities whose name contains every word of ``text`` (case-insensitive), or
        whose login or e-mail address contains it; at most ``limit``."""
        words = text.split()
        if not words:
            return []
        criteria: dict[str, Any] = {
            "tenant_id": tenant_id,
            "$and": [
                {"$or": [{f"data.{n}": {"$regex": re.escape(word), "$options": "i"}} for n in SEARCHED_FIELDS]}
                for word in words
            ],
        }
        cursor = self.collection.find(criteria, {"_id": 1}).limit(limit)
        return [doc["_id"] async for doc in cursor]


#: Where an entity's name is in its ``data``: a person's given and family name, anything else's display name.
NAME_FIELDS = ("given_name", "family_name", "display_name")
#: What a search for an entity by name also looks in.
SEARCHED_FIELDS = (*NAME_FIELDS, "eppn", "emails.value")


def entity_name(data: dict[str, Any]) -> str:
    """The name an entity's ``data`` gives it ("" when it has none: a duty, a placement)."""
    person = " ".join(str(data[n]) for n in ("given_name", "family_name") if data.get(n))
    return person or str(data.get("display_name") or "")
