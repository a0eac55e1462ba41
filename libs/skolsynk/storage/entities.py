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
from typing import Any, NamedTuple
from uuid import UUID

from skolsynk.domain.dependencies import stored
from skolsynk.domain.ids import entity_id
from skolsynk.domain.organisation_tree import OrganisationTree
from skolsynk.domain.quality import Finding
from skolsynk.domain.reconcile import reconcile
from skolsynk.domain.selection import StoredEntity, TenantState
from skolsynk.domain.selection_warnings import Relation, RelationCount, UnitPopulation, unit_populations
from skolsynk.domain.ss12000 import ENTITY_MODELS, EntityKind, Person
from skolsynk.domain.subscription import MissingMarkingPolicy
from skolsynk.storage.mongo import Database, Document, IndexSpec, Session, in_parts

ENTITIES = "entities"
ENTITY_TOMBSTONES = "entity_tombstones"

#: Where a person search looks, each word anywhere in one of them: names, logins, e-mail addresses, the id.
PERSON_SEARCHED = ("_id", "data.given_name", "data.middle_name", "data.family_name", "data.eppn", "data.emails.value")
#: Words of a search beyond this many are left out.
MAX_SEARCH_WORDS = 8
#: The entities of a tenant (and of one of its sources, of one kind): the normaliser's whole projections
#: and the person search read by it, hinted (for any predicate beside the index's fields the Mongo wire
#: server's planner walks every tenant's entities); the normaliser and the admin ensure it.
SOURCE_INDEX = "by_source"
INDEXES = [IndexSpec(ENTITIES, [("tenant_id", 1), ("source_id", 1), ("kind", 1)], name=SOURCE_INDEX)]


class FoundPerson(NamedTuple):
    person_id: UUID
    source_id: str
    person: Person


class PersonMatches(NamedTuple):
    """A page of a person search and how many persons it finds in all."""

    persons: list[FoundPerson]
    total: int


class EntityReader:
    def __init__(self, db: Database) -> None:
        self.collection = db[ENTITIES]

    async def exists(self, entity_id: str, *, session: Session | None = None) -> bool:
        """Whether the entity is in the canonical state (by ``_id`` alone: ids are unique across tenants)."""
        return bool(await self.collection.count_documents({"_id": entity_id}, session=session))

    async def shown(self, ids: Iterable[str], fields: Iterable[str]) -> dict[str, dict[str, Any]]:
        """``kind``, ``source_id`` and these ``fields`` of ``data`` (names, logins, a group's type: what a list
        of entities shows) of the entities among ``ids`` still in the source, by id (one read per part)."""
        projection = {"kind": 1, "source_id": 1, **{f"data.{name}": 1 for name in fields}}
        found: dict[str, dict[str, Any]] = {}
        for part in in_parts(ids):
            found.update({doc["_id"]: doc async for doc in self.collection.find({"_id": {"$in": part}}, projection)})
        return found

    async def matching(
        self, tenant_id: str, kind: EntityKind, text: str, fields: Iterable[str], *, limit: int
    ) -> list[str]:
        """Ids of the tenant's entities of ``kind`` in which every word of ``text`` is found
        (case-insensitive, anywhere) in one of ``fields`` (``_id``, ``data.given_name``, ...); at most
        ``limit``, the caller tells when there are more."""
        words = text.split()
        if not words:
            return []
        paths = list(fields)
        criteria = {
            "tenant_id": tenant_id,
            "kind": kind.value,
            "$and": [{"$or": [{p: {"$regex": re.escape(w), "$options": "i"}} for p in paths]} for w in words],
        }
        return [doc["_id"] async for doc in self.collection.find(criteria, {"_id": 1}).limit(limit)]

    async def load_tenant(self, tenant_id: str) -> list[StoredEntity]:
        cursor = self.collection.find({"tenant_id": tenant_id}, {"data": 1, "kind": 1, "source_id": 1})
        return [
            StoredEntity(
                UUID(doc["_id"]), doc["source_id"], ENTITY_MODELS[EntityKind(doc["kind"])].model_validate(doc["data"])
            )
            async for doc in cursor
        ]

    async def load_kind(self, tenant_id: str, kind: EntityKind) -> list[StoredEntity]:
        """The tenant's entities of one kind (its school units, without reading its persons)."""
        cursor = self.collection.find({"tenant_id": tenant_id, "kind": kind.value}, {"data": 1, "source_id": 1})
        model = ENTITY_MODELS[kind]
        return [
            StoredEntity(UUID(doc["_id"]), doc["source_id"], model.model_validate(doc["data"])) async for doc in cursor
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

    async def persons_of(self, ids: Iterable[str]) -> dict[str, str]:
        """For the duties and placements among ``ids``: the id of their person (the child placed), so a
        report names the person (one read per part of the ids)."""
        found: dict[str, str] = {}
        kinds = [EntityKind.DUTY.value, EntityKind.PLACEMENT.value]
        for part in in_parts(ids):
            cursor = self.collection.find(
                {"_id": {"$in": part}, "kind": {"$in": kinds}},
                {"tenant_id": 1, "source_id": 1, "data.person": 1, "data.child": 1},
            )
            async for doc in cursor:
                key = (doc.get("data") or {}).get("person") or (doc.get("data") or {}).get("child")
                if isinstance(key, str):
                    person = entity_id(doc["tenant_id"], doc["source_id"], EntityKind.PERSON, key)
                    found[doc["_id"]] = str(person)
        return found

    async def find_persons(self, tenant_id: str, text: str, *, skip: int = 0, limit: int = 20) -> PersonMatches:
        """The tenant's persons that every word of ``text`` finds (case-insensitive, anywhere in a name, a
        login, an e-mail address or the id: "Alma Bergman", "bergman alma" and "alma.bergman" all find
        her), by family and given name: the page at ``skip`` of at most ``limit``, and how many there are.
        No words: every person. Read in the store, page and count."""
        criteria: dict[str, Any] = {"tenant_id": tenant_id, "kind": EntityKind.PERSON.value}
        words = text.split()[:MAX_SEARCH_WORDS]
        if words:
            criteria["$and"] = [
                {"$or": [{field: {"$regex": re.escape(word), "$options": "i"}} for field in PERSON_SEARCHED]}
                for word in words
            ]
        total = await self.collection.count_documents(criteria, hint=SOURCE_INDEX)
        cursor = (
            self.collection.find(criteria, {"data": 1, "source_id": 1})
            .hint(SOURCE_INDEX)
            .sort([("data.family_name", 1), ("data.given_name", 1), ("_id", 1)])
            .skip(max(0, skip))
            .limit(max(1, limit))
        )
        found = [
            FoundPerson(UUID(doc["_id"]), doc["source_id"], Person.model_validate(doc["data"])) async for doc in cursor
        ]
        return PersonMatches(found, total)

    # --- what one person's selection depends on (read by ``skolsynk.storage.neighbourhood``) ----------

    async def by_ids(self, ids: Iterable[str]) -> list[Document]:
        found: list[Document] = []
        for part in in_parts(ids):
            found += await self.collection.find({"_id": {"$in": part}}).to_list(None)
        return found

    async def referring(self, tenant_id: str, targets: Iterable[str], kinds: Iterable[EntityKind]) -> list[Document]:
        """Entities of ``kinds`` that refer to any of ``targets`` (tokens as :func:`token` makes them),
        served by ``by_reference`` alone: the kind is part of the stored token."""
        targets = sorted(set(targets))
        return await self.carrying(tenant_id, [stored(k, t) for k in kinds for t in targets])

    async def carrying(self, tenant_id: str, tokens: Iterable[str]) -> list[Document]:
        """Entities that carry any of these stored tokens. In batches: a long ``$in`` costs the Mongo
        wire server more than its length (1,000 tokens take 100 times as long as 100)."""
        found: list[Document] = []
        for part in in_parts(tokens):
            found += await self.collection.find({"tenant_id": tenant_id, "refs": {"$in": part}}).to_list(None)
        return found

    async def unit_populations(self, tenant_id: str, today: date) -> dict[str, UnitPopulation]:
        """Per school unit active ``today`` (by code), what the organiser's data has there as counts:
        students by school type and year, placed children by school type, staff by role, groups by
        type (for the subscription form's warnings, :mod:`skolsynk.domain.selection_warnings`).

        One aggregation over the organiser's persons, duties, placements and groups, counted in the
        store (no person leaves it), and one read of its school units and organisations for the tree."""
        day = today.isoformat()

        def active(prefix: str) -> dict[str, Any]:
            start, end = f"{prefix}.start_date", f"{prefix}.end_date"
            return {
                "$and": [
                    {"$or": [{"$eq": [{"$ifNull": [start, None]}, None]}, {"$lte": [start, day]}]},
                    {"$or": [{"$eq": [{"$ifNull": [end, None]}, None]}, {"$gte": [end, day]}]},
                ]
            }

        def of_kind(kind: EntityKind) -> dict[str, Any]:
            return {"$eq": ["$kind", kind.value]}

        enrolments = {
            "$filter": {
                "input": {"$ifNull": ["$data.enrolments", []]},
                "as": "e",
                "cond": {"$and": [{"$ne": ["$$e.cancelled", True]}, active("$$e")]},
            }
        }
        rows = {
            "$switch": {
                "branches": [
                    {
                        "case": {"$and": [of_kind(EntityKind.PERSON), {"$eq": ["$data.person_status", "Aktiv"]}]},
                        "then": {
                            "$map": {
                                "input": enrolments,
                                "as": "e",
                                "in": {
                                    "r": "enrolment",
                                    "at": "$$e.school_unit",
                                    "t": "$$e.school_type",
                                    "y": "$$e.school_year",
                                },
                            }
                        },
                    },
                    {
                        "case": {"$and": [of_kind(EntityKind.DUTY), active("$data")]},
                        "then": [{"r": "duty", "at": "$data.school_unit", "v": "$data.role"}],
                    },
                    {
                        "case": {"$and": [of_kind(EntityKind.PLACEMENT), active("$data")]},
                        "then": [{"r": "placement", "at": "$data.school_unit", "t": "$data.school_type"}],
                    },
                    {
                        "case": {"$and": [of_kind(EntityKind.GROUP), active("$data")]},
                        "then": [{"r": "group", "at": "$data.school_unit", "v": "$data.group_type"}],
                    },
                ],
                "default": [],
            }
        }
        counted = [EntityKind.PERSON, EntityKind.DUTY, EntityKind.PLACEMENT, EntityKind.GROUP]
        pipeline: list[dict[str, Any]] = [
            {"$match": {"tenant_id": tenant_id, "kind": {"$in": [k.value for k in counted]}}},
            {"$project": {"source_id": 1, "rows": rows}},
            {"$unwind": "$rows"},
            {
                "$group": {
                    "_id": {
                        "s": "$source_id",
                        "r": "$rows.r",
                        "at": "$rows.at",
                        "t": "$rows.t",
                        "y": "$rows.y",
                        "v": "$rows.v",
                    },
                    "n": {"$sum": 1},
                }
            },
        ]
        cursor = await self.collection.aggregate(pipeline)
        counts = [
            RelationCount(
                source_id=doc["_id"]["s"],
                relation=Relation(doc["_id"]["r"]),
                at=doc["_id"]["at"],
                n=int(doc["n"]),
                school_type=doc["_id"].get("t"),
                school_year=doc["_id"].get("y"),
                value=doc["_id"].get("v"),
            )
            async for doc in cursor
            if isinstance(doc["_id"].get("at"), str)
        ]
        levels = [EntityKind.SCHOOL_UNIT.value, EntityKind.ORGANISATION.value]
        levels_cursor = self.collection.find(
            {"tenant_id": tenant_id, "kind": {"$in": levels}}, {"data": 1, "kind": 1, "source_id": 1}
        )
        tree = OrganisationTree(
            [
                (doc["source_id"], ENTITY_MODELS[EntityKind(doc["kind"])].model_validate(doc["data"]))
                async for doc in levels_cursor
            ]
        )
        return unit_populations(tree, counts, today)

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
