"""The canonical state the normaliser keeps (collection ``entities``, and ``entity_tombstones``: per
deleted entity its last dependency tokens until the next projection): named here, and read through
here by the normaliser's own projections, the admin service's previews and person search, and the
GDPR purge.

The normaliser is the only writer (``services/skolsynk_services/normaliser/state.py``, with the indexes
of its queries)."""

from __future__ import annotations

import re
from datetime import date
from typing import Any
from uuid import UUID

from skolsynk.domain.quality import Finding
from skolsynk.domain.reconcile import reconcile
from skolsynk.domain.selection import StoredEntity, TenantState
from skolsynk.domain.ss12000 import ENTITY_MODELS, EntityKind, Person
from skolsynk.domain.subscription import MissingMarkingPolicy
from skolsynk.storage.mongo import Database, Session

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
