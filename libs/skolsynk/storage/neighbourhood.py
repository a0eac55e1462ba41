"""The part of an organiser that an incremental projection reads: the entities whose projection is
recomputed (the *outputs*) and every entity their selection, their minimised resources and their
data-quality verdicts depend on, found with indexed queries on the dependency tokens
(``skolsynk.domain.dependencies``) instead of reading the whole organiser.

What an output needs, so that ``reconcile`` and ``project`` give it exactly what they would give it
over the whole organiser:

* a **person**: the school units of their enrolments, their duties and those duties' units (their
  relations), and every person competing for one of their logins or e-mail addresses (who keeps
  it, followed to a fixed point of at most :data:`UNIQUENESS_ROUNDS` rounds);
* a **duty**: its person (as above) and its unit;
* a **group**: its unit and every member (as persons above: whether they are selected, and with
  one school unit per user, which units they keep);
* an **activity**: its unit, its groups (with their units), its teacher duties (as above) and its syllabus;
* a duty's **assignment-role groups** (with their units) and a person's **placements** (with their units);
* a **school unit**: every unit with the same school-unit code (one per code), its school-unit group
  and the organisations above it (the nearest Huvudman is what vendors get);
* a place that is an **organisation above school units** (a duty's ``dutyAt``, an enrolment, a
  group's or an activity's organisation): that organisation and every organisation and school unit
  beneath it (:meth:`Neighbourhood.beneath`, one indexed query per level), which is what it resolves
  to (``skolsynk.domain.organisation_tree``).

Entities loaded only as inputs may come out of ``reconcile`` and ``project`` incomplete (a group
loaded for an activity has none of its members): only the outputs' results are used.

Read by the normaliser's incremental projections and by the explanation of one person
(``skolsynk.explain``: the person page, ``skolsynk explain``), which so see the person as the
normaliser does.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from uuid import UUID

from skolsynk.domain.dependencies import place_organisations, referenced_ids, stored, token, uniqueness_tokens
from skolsynk.domain.organisation_tree import MAX_DEPTH
from skolsynk.domain.selection import StoredEntity
from skolsynk.domain.ss12000 import ENTITY_MODELS, EntityKind
from skolsynk.storage.entities import EntityReader
from skolsynk.storage.mongo import Document

#: Rounds of following shared logins and e-mail addresses between persons (a chain longer than
#: this, A sharing with B sharing with C sharing with D, is left to the next whole projection).
UNIQUENESS_ROUNDS = 3
#: What hangs beneath an organisation.
_TREE_KINDS = (EntityKind.ORGANISATION, EntityKind.SCHOOL_UNIT)


@dataclass
class Neighbourhood:
    tenant_id: str
    store: EntityReader
    #: Every entity read so far (None: the id was looked up and does not exist).
    documents: dict[str, Document | None] = field(default_factory=dict)
    #: Persons whose duties were looked up, tokens whose competitors were looked up.
    _duties_read: set[str] = field(default_factory=set)
    _tokens_read: set[str] = field(default_factory=set)
    #: Organisations whose children were looked up.
    _children_read: set[str] = field(default_factory=set)

    def remember(self, documents: Iterable[Document]) -> None:
        for document in documents:
            self.documents[document["_id"]] = document

    async def fetch(self, ids: Iterable[str]) -> None:
        missing = {i for i in ids if i not in self.documents}
        if missing:
            found = await self.store.by_ids(missing)
            self.remember(found)
            for i in missing:
                self.documents.setdefault(i, None)

    def existing(self, ids: Iterable[str]) -> list[Document]:
        return [d for i in ids if (d := self.documents.get(i)) is not None]

    async def duties_of(self, person_ids: Iterable[str]) -> set[str]:
        """The ids of the duties of these persons (looked up once per person)."""
        unread = sorted(set(person_ids) - self._duties_read)
        if unread:
            found = await self.store.referring(
                self.tenant_id, [token(EntityKind.PERSON, p) for p in unread], [EntityKind.DUTY]
            )
            self.remember(found)
            self._duties_read.update(unread)
        wanted = {stored(EntityKind.DUTY, token(EntityKind.PERSON, p)) for p in person_ids}
        return {
            i
            for i, d in self.documents.items()
            if d is not None and d["kind"] == EntityKind.DUTY.value and wanted.intersection(d.get("refs", []))
        }

    async def placements_of(self, person_ids: Iterable[str]) -> list[Document]:
        """The placements of these persons (one indexed query)."""
        wanted = sorted(set(person_ids))
        if not wanted:
            return []
        found = await self.store.referring(
            self.tenant_id, [token(EntityKind.PERSON, p) for p in wanted], [EntityKind.PLACEMENT]
        )
        self.remember(found)
        return list(found)

    async def referring(self, tokens: Iterable[str], kinds: Iterable[EntityKind]) -> set[str]:
        """Ids of the entities of ``kinds`` that carry any of ``tokens`` (not cached: used once per
        projection round for dependants)."""
        found = await self.store.referring(self.tenant_id, tokens, kinds)
        self.remember(found)
        return {d["_id"] for d in found}

    async def competitors(self, tokens: Iterable[str], kind: EntityKind) -> set[str]:
        """Entities of ``kind`` sharing a (stored) uniqueness token (a login, an e-mail address, a
        code) with the entities the tokens come from."""
        unread = sorted(set(tokens) - self._tokens_read)
        if unread:
            self.remember(await self.store.carrying(self.tenant_id, unread))
            self._tokens_read.update(unread)
        wanted = set(tokens)
        return {
            i
            for i, d in self.documents.items()
            if d is not None and d["kind"] == kind.value and wanted.intersection(d.get("refs", []))
        }

    async def beneath(self, organisations: Iterable[str]) -> set[str]:
        """Read the organisations and school units beneath ``organisations`` (level by level, at most
        :data:`MAX_DEPTH` levels, each organisation's children looked up once); returns the ids of the
        school units among them."""
        units: set[str] = set()
        frontier = set(organisations)
        seen = set(frontier)
        for _ in range(MAX_DEPTH):
            unread = sorted(frontier - self._children_read)
            if unread:
                self.remember(
                    await self.store.referring(
                        self.tenant_id,
                        [token(EntityKind.ORGANISATION, o) for o in unread],
                        _TREE_KINDS,
                    )
                )
                self._children_read.update(unread)
            wanted = {stored(k, token(EntityKind.ORGANISATION, o)) for o in frontier for k in _TREE_KINDS}
            below = {
                i: d["kind"]
                for i, d in self.documents.items()
                if d is not None and wanted.intersection(d.get("refs", []))
            }
            units |= {i for i, k in below.items() if k == EntityKind.SCHOOL_UNIT.value}
            frontier = {i for i, k in below.items() if k == EntityKind.ORGANISATION.value} - seen
            if not frontier:
                break
            seen |= frontier
        return units

    async def places(self, documents: Iterable[Document]) -> set[str]:
        """Read the organisations ``documents`` are placed at (when their places are organisations above
        school units) and what is beneath them; returns the ids of the school units beneath."""
        organisations = {
            i
            for d in documents
            for i in place_organisations(self.tenant_id, d["source_id"], EntityKind(d["kind"]), d.get("data", {}))
        }
        await self.fetch(organisations)
        return await self.beneath(d["_id"] for d in self.existing(organisations))

    async def ancestors(self, units: Iterable[str]) -> None:
        """Read the organisations above these school units, up to the top (at most :data:`MAX_DEPTH`)."""
        frontier = {p for d in self.existing(units) for p in referenced_ids(d.get("refs", []), EntityKind.ORGANISATION)}
        seen: set[str] = set()
        for _ in range(MAX_DEPTH):
            frontier -= seen
            if not frontier:
                break
            await self.fetch(frontier)
            seen |= frontier
            frontier = {
                p for d in self.existing(frontier) for p in referenced_ids(d.get("refs", []), EntityKind.ORGANISATION)
            }

    async def load(self, outputs: dict[str, EntityKind]) -> list[StoredEntity]:
        """Read what ``outputs`` depend on; returns every entity read, as the domain sees them."""
        persons = {i for i, k in outputs.items() if k is EntityKind.PERSON}
        duties = {i for i, k in outputs.items() if k is EntityKind.DUTY}
        output_groups = {i for i, k in outputs.items() if k is EntityKind.GROUP}
        activities = {i for i, k in outputs.items() if k is EntityKind.ACTIVITY}
        await self.fetch(outputs)
        # A school unit's own projection needs its school-unit group and the organisations above it.
        units = {i for i, k in outputs.items() if k is EntityKind.SCHOOL_UNIT}
        await self.fetch(
            p for d in self.existing(units) for p in referenced_ids(d.get("refs", []), EntityKind.SCHOOL_UNIT_GROUP)
        )
        await self.ancestors(units)
        input_groups: set[str] = set()
        syllabuses: set[str] = set()
        for document in self.existing(activities):
            refs = document.get("refs", [])
            units |= referenced_ids(refs, EntityKind.SCHOOL_UNIT)
            input_groups |= referenced_ids(refs, EntityKind.GROUP)
            duties |= referenced_ids(refs, EntityKind.DUTY)
            syllabuses |= referenced_ids(refs, EntityKind.SYLLABUS)
        await self.fetch(syllabuses)
        for document in self.existing(output_groups):
            refs = document.get("refs", [])
            units |= referenced_ids(refs, EntityKind.SCHOOL_UNIT)
            persons |= referenced_ids(refs, EntityKind.PERSON)
        await self.fetch(input_groups | duties)
        for document in self.existing(input_groups):
            units |= referenced_ids(document.get("refs", []), EntityKind.SCHOOL_UNIT)
        units |= await self.places(self.existing(activities | output_groups | input_groups))
        # Persons and duties depend on each other (a duty on its person; a person on all its duties):
        # follow both ways until nothing new turns up.
        while True:
            for document in self.existing(duties):
                persons |= referenced_ids(document.get("refs", []), EntityKind.PERSON)
            await self.fetch(persons)
            more = await self.duties_of(persons) - duties
            if not more:
                break
            duties |= more
        for document in self.existing(duties):
            units |= referenced_ids(document.get("refs", []), EntityKind.SCHOOL_UNIT)
        for document in self.existing(persons):
            units |= referenced_ids(document.get("refs", []), EntityKind.SCHOOL_UNIT)
        units |= await self.places(self.existing(duties | persons))
        # A duty's assignment-role groups (whether the vendor gets them, at which unit) and a person's
        # placements (relations like enrolments, with their units).
        mentored = {g for d in self.existing(duties) for g in referenced_ids(d.get("refs", []), EntityKind.GROUP)}
        await self.fetch(mentored)
        for document in self.existing(mentored):
            units |= referenced_ids(document.get("refs", []), EntityKind.SCHOOL_UNIT)
        units |= await self.places(self.existing(mentored))
        for document in await self.placements_of(persons):
            units |= referenced_ids(document.get("refs", []), EntityKind.SCHOOL_UNIT)
        # Who else holds the same logins and e-mail addresses (and who else holds theirs).
        competing = set(persons)
        for _ in range(UNIQUENESS_ROUNDS):
            tokens = {t for d in self.existing(competing) for t in uniqueness_tokens(d.get("refs", []))}
            found = await self.competitors(tokens, EntityKind.PERSON)
            if found <= competing:
                break
            competing |= found
        await self.fetch(units)
        codes = {t for d in self.existing(units) for t in uniqueness_tokens(d.get("refs", []))}
        await self.competitors(codes, EntityKind.SCHOOL_UNIT)
        return [_stored(d) for d in self.documents.values() if d is not None]


def _stored(document: Document) -> StoredEntity:
    kind = EntityKind(document["kind"])
    return StoredEntity(
        UUID(document["_id"]), document["source_id"], ENTITY_MODELS[kind].model_validate(document["data"])
    )
