"""The organiser's organisation tree and how a reference into it resolves to school units.

SS 12000 has one Organisation type for every level: the huvudman, the levels an organiser uses between
it and its school units (Verksamhetsområde, Förvaltning, Rektorsområde, Skola ...) and the school units
(Skolenhet), linked by ``parentOrganisation``. skolsynk keeps the school units as
:class:`~skolsynk.domain.ss12000.SchoolUnit` (``organisation``: the level above) and every other level as an
:class:`~skolsynk.domain.ss12000.Organisation` (``organisation_type``, ``parent``). Selection stays per
school unit, so a reference to a level above school units resolves to the school units beneath it
(docs/domain-model.md, "The organisation tree", has the rules as a table):

* a **duty** (``dutyAt``: "school unit or school") resolves to every school unit beneath its level;
* an **enrolment**, a **group** or an **activity** belongs to one school unit: a level above resolves
  only when exactly one school unit is beneath it;
* a level with no school unit beneath it, or one that does not exist, resolves to nothing (the caller
  makes that a finding naming the level).

Pure and cycle-safe: a parent chain that loops, or is deeper than :data:`MAX_DEPTH`, stops there.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from skolsynk.domain.ss12000 import Entity, Organisation, OrganisationType, SchoolUnit

#: Levels followed up or down from one organisation (SS 12000 has 9 types; real trees have 2 to 5).
MAX_DEPTH = 10

#: The level of a school unit, as findings name it.
SCHOOL_UNIT_LEVEL = OrganisationType.SKOLENHET.value
#: The level of an organisation whose type is missing or unknown (kept, with a finding).
UNKNOWN_LEVEL = "okänd typ"

Ref = tuple[str, str]  # (source id, key)


class OrganisationTree:
    """The school units and organisations of an organiser (or of the part of it that was read), by
    source and key."""

    def __init__(self, entities: Iterable[tuple[str, Entity]]) -> None:
        self.units: dict[Ref, SchoolUnit] = {}
        self.organisations: dict[Ref, Organisation] = {}
        self._children: dict[Ref, list[Ref]] = defaultdict(list)
        for source_id, entity in entities:
            if isinstance(entity, SchoolUnit):
                self.units[(source_id, entity.key)] = entity
                if entity.organisation is not None:
                    self._children[(source_id, entity.organisation)].append((source_id, entity.key))
            elif isinstance(entity, Organisation):
                self.organisations[(source_id, entity.key)] = entity
                if entity.parent is not None:
                    self._children[(source_id, entity.parent)].append((source_id, entity.key))

    def level(self, source_id: str, key: str) -> str | None:
        """What ``key`` is: ``Skolenhet``, an organisation type, :data:`UNKNOWN_LEVEL`, or None when the
        organiser has nothing with that key."""
        if (source_id, key) in self.units:
            return SCHOOL_UNIT_LEVEL
        organisation = self.organisations.get((source_id, key))
        if organisation is None:
            return None
        return organisation.organisation_type.value if organisation.organisation_type else UNKNOWN_LEVEL

    def units_beneath(self, source_id: str, key: str) -> list[str]:
        """The keys of the school units ``key`` resolves to, by school-unit code: itself when it is a school
        unit, every school unit beneath it when it is an organisation, none when it is unknown."""
        if (source_id, key) in self.units:
            return [key]
        if (source_id, key) not in self.organisations:
            return []
        found: set[str] = set()
        seen = {(source_id, key)}
        frontier = [(source_id, key)]
        for _ in range(MAX_DEPTH):
            below: list[Ref] = []
            for ref in frontier:
                for child in self._children.get(ref, ()):
                    if child in seen:
                        continue
                    seen.add(child)
                    if child in self.units:
                        found.add(child[1])
                    else:
                        below.append(child)
            if not below:
                break
            frontier = below
        return sorted(found, key=lambda k: (self.units[(source_id, k)].school_unit_code, k))

    def resolve_one(self, source_id: str, key: str) -> str | None:
        """The one school unit an enrolment, group or activity at ``key`` belongs to: ``key`` itself, or
        the only school unit beneath the organisation ``key`` (None with none or several)."""
        beneath = self.units_beneath(source_id, key)
        return beneath[0] if len(beneath) == 1 else None

    def huvudman(self, source_id: str, unit: SchoolUnit) -> str | None:
        """The organisation a school unit is delivered under: the nearest Huvudman above it, or (when
        its chain has none) the organisation directly above it, as before the tree was kept; None when
        the level above is unknown."""
        direct = unit.organisation
        if direct is None or (source_id, direct) not in self.organisations:
            return None
        key: str | None = direct
        seen: set[str] = set()
        for _ in range(MAX_DEPTH):
            if key is None or key in seen:
                break
            organisation = self.organisations.get((source_id, key))
            if organisation is None:
                break
            if organisation.organisation_type is OrganisationType.HUVUDMAN:
                return key
            seen.add(key)
            key = organisation.parent
        return direct
