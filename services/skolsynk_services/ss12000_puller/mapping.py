"""SS 12000:2020 API objects as canonical source records. The wire format's mapping itself is
:mod:`skolsynk.adapters.ss12000_api` (``from_ss12000``, ``deleted_entities``: Huvudman -> Organisation,
Skolenhet -> SchoolUnit, persons, duties, groups, syllabuses, activities, placements), a wire adapter the
test kit's fake API shares; this module says which collections the connector reads, in which order, and maps
one page of them."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from skolsynk.adapters.ss12000_api import Ss12000MappingError, deleted_entities, from_ss12000
from skolsynk.contracts.source import SourceDeletion, SourceRecord

#: Collections read, in the order the records are published (references point backwards).
ENDPOINTS: tuple[str, ...] = ("organisations", "persons", "duties", "groups", "syllabuses", "activities")
#: ``/deletedEntities`` ``entities`` filter for the collections skolsynk provisions.
DELETED_TYPES: tuple[str, ...] = ("Organisation", "Person", "Duty", "Group", "Syllabus", "Activity")
#: Read as well only while a subscription of the organiser asks for placements (children's data is
#: not read for nobody).
PLACEMENTS_ENDPOINT = "placements"
PLACEMENTS_DELETED_TYPE = "Placement"


def endpoints(*, placements: bool) -> tuple[str, ...]:
    """The collections a run reads, in order."""
    return (*ENDPOINTS, PLACEMENTS_ENDPOINT) if placements else ENDPOINTS


def deleted_types(*, placements: bool) -> tuple[str, ...]:
    """The ``entities`` filter of a run's ``/deletedEntities`` read."""
    return (*DELETED_TYPES, PLACEMENTS_DELETED_TYPE) if placements else DELETED_TYPES


@dataclass
class MappedPage:
    """One page of a collection: the records of the objects that map, and why the others do not."""

    records: list[SourceRecord] = field(default_factory=list)
    unmappable: list[Ss12000MappingError] = field(default_factory=list)
    #: The ``id`` of each unmappable object when it is a UUID (anything else is left out: an id is not
    #: checked, and a source could put a civic number there), in the order of :attr:`unmappable`.
    unmappable_ids: list[str | None] = field(default_factory=list)


def map_page(endpoint: str, objects: Iterable[Any]) -> MappedPage:
    """The objects of one page of ``endpoint`` as records; an object that cannot be mapped is left out and
    its error kept (it is missing from the run, so the run must not delete it)."""
    page = MappedPage()
    for obj in objects:
        try:
            page.records += from_ss12000(endpoint, obj)
        except Ss12000MappingError as error:
            page.unmappable.append(error)
            page.unmappable_ids.append(uuid_or_none(obj.get("id") if isinstance(obj, dict) else None))
    return page


def uuid_or_none(value: Any) -> str | None:
    """``value`` as a canonical UUID string, or None when it is not one."""
    if not isinstance(value, str):
        return None
    try:
        return str(uuid.UUID(value))
    except ValueError:
        return None


def map_deletions(data: Any) -> list[SourceDeletion]:
    """The ``data`` of one ``/deletedEntities`` page as deletions; :class:`Ss12000MappingError` when it is
    not one."""
    return deleted_entities({"data": data})
