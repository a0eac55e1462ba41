"""What a stored entity depends on, as tokens the normaliser indexes (``entities.refs``), so that an
incremental projection finds, for the entities a run changed, everything whose projection or whose
data-quality verdict they can change, with indexed queries instead of reading the whole organiser.

A token is ``"<kind>:<entity id>"`` for a reference to another entity (a duty's person, school unit
and assignment-role groups, a group's members, an activity's groups, teacher duties and syllabus, a
placement's child, school unit and group, a person's enrolment units, a
school unit's organisation and school-unit group, an organisation's parent), or
``"<key>:<digest of the value>"`` for a value that must be unique across the organiser (a person's
logins and e-mail addresses, a school unit's code), so that the entities that compete for it are
found together. Each is stored qualified by the kind of the entity that carries it (:func:`stored`).

Pure: the normaliser writes the tokens with every entity and reads them back in
``services/skolsynk_services/normaliser/neighbourhood.py``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any
from uuid import UUID

from skolsynk.domain.ids import entity_id
from skolsynk.domain.ss12000 import EntityKind

#: Prefixes of the uniqueness tokens.
EPPN = "eppn"
EMAIL = "email"
SCHOOL_UNIT_CODE = "code"


def token(kind: EntityKind, target: UUID | str) -> str:
    """The token of a reference to the entity ``target`` of ``kind``."""
    return f"{kind.value}:{target}"


def unique_token(prefix: str, value: str) -> str:
    """A value that must be unique, as a digest: logins and e-mail addresses never stand in plain text
    in the index or in a deleted entity's tombstone."""
    return f"{prefix}:{hashlib.sha256(value.encode()).hexdigest()[:32]}"


def stored(referrer: EntityKind, target: str) -> str:
    """A token as stored with the entity that carries it: qualified by that entity's kind, so that
    "the duties of this person" is one index lookup with no other condition (``"duty>person:<id>"``)."""
    return f"{referrer.value}>{target}"


def _target(stored_token: str) -> str:
    return stored_token.split(">", 1)[-1]


def referenced_ids(tokens: Iterable[str], kind: EntityKind) -> set[str]:
    """The ids of the entities of ``kind`` that (stored) ``tokens`` refer to."""
    prefix = f"{kind.value}:"
    return {t[len(prefix) :] for t in map(_target, tokens) if t.startswith(prefix)}


def uniqueness_tokens(tokens: Iterable[str]) -> set[str]:
    """The (stored) tokens of unique values among ``tokens``: the same token on two entities of one
    kind means they compete for the value."""
    prefixes = (f"{EPPN}:", f"{EMAIL}:", f"{SCHOOL_UNIT_CODE}:")
    return {t for t in tokens if _target(t).startswith(prefixes)}


def references(tenant_id: str, source_id: str, kind: EntityKind, data: dict[str, Any]) -> list[str]:
    """The tokens of one stored entity (``data``: the canonical entity as stored, JSON mode)."""

    def ref(target_kind: EntityKind, key: Any) -> str | None:
        if not isinstance(key, str) or not key:
            return None
        return token(target_kind, entity_id(tenant_id, source_id, target_kind, key))

    tokens: set[str | None] = set()
    if kind is EntityKind.PERSON:
        tokens.update(ref(EntityKind.SCHOOL_UNIT, e.get("school_unit")) for e in data.get("enrolments") or [])
        tokens.update(unique_token(EPPN, str(e).lower()) for e in data.get("eppn") or [])
        tokens.update(unique_token(EMAIL, str(e.get("value"))) for e in data.get("emails") or [] if e.get("value"))
    elif kind is EntityKind.DUTY:
        tokens.add(ref(EntityKind.PERSON, data.get("person")))
        tokens.add(ref(EntityKind.SCHOOL_UNIT, data.get("school_unit")))
        tokens.update(ref(EntityKind.GROUP, r.get("group")) for r in data.get("assignment_roles") or [])
    elif kind is EntityKind.GROUP:
        tokens.add(ref(EntityKind.SCHOOL_UNIT, data.get("school_unit")))
        tokens.update(ref(EntityKind.PERSON, m.get("person")) for m in data.get("memberships") or [])
    elif kind is EntityKind.ACTIVITY:
        tokens.add(ref(EntityKind.SCHOOL_UNIT, data.get("school_unit")))
        tokens.update(ref(EntityKind.GROUP, g) for g in data.get("groups") or [])
        tokens.update(ref(EntityKind.DUTY, t) for t in data.get("teachers") or [])
        tokens.add(ref(EntityKind.SYLLABUS, data.get("syllabus")))
    elif kind is EntityKind.PLACEMENT:
        tokens.add(ref(EntityKind.PERSON, data.get("child")))
        tokens.add(ref(EntityKind.SCHOOL_UNIT, data.get("school_unit")))
        tokens.add(ref(EntityKind.GROUP, data.get("group")))
    elif kind is EntityKind.ORGANISATION:
        tokens.add(ref(EntityKind.ORGANISATION, data.get("parent")))
    elif kind is EntityKind.SCHOOL_UNIT:
        tokens.add(ref(EntityKind.ORGANISATION, data.get("organisation")))
        tokens.add(ref(EntityKind.SCHOOL_UNIT_GROUP, data.get("school_unit_group")))
        if data.get("school_unit_code"):
            tokens.add(unique_token(SCHOOL_UNIT_CODE, str(data["school_unit_code"])))
    return sorted(stored(kind, t) for t in tokens if t is not None)


def place_organisations(tenant_id: str, source_id: str, kind: EntityKind, data: dict[str, Any]) -> set[str]:
    """The ids that the places of one stored entity (a duty's ``dutyAt``, a group's or an activity's
    organisation, a person's enrolments) have if they are organisations above school units rather than
    school units: what an incremental projection reads, with everything beneath, to resolve them.
    Computed from the keys, so entities stored before organisations were kept need no new tokens."""
    if kind is EntityKind.PERSON:
        keys = [e.get("school_unit") for e in data.get("enrolments") or [] if isinstance(e, dict)]
    elif kind in (EntityKind.DUTY, EntityKind.GROUP, EntityKind.ACTIVITY):
        keys = [data.get("school_unit")]
    else:
        return set()
    return {
        str(entity_id(tenant_id, source_id, EntityKind.ORGANISATION, key))
        for key in keys
        if isinstance(key, str) and key
    }
