"""Dependency tokens: what each kind of entity refers to, found again by id; unique values as digests."""

from __future__ import annotations

import pytest

from skolsynk.domain.dependencies import (
    EMAIL,
    EPPN,
    SCHOOL_UNIT_CODE,
    referenced_ids,
    references,
    stored,
    token,
    unique_token,
    uniqueness_tokens,
)
from skolsynk.domain.ids import entity_id
from skolsynk.domain.ss12000 import EntityKind

pytestmark = pytest.mark.unit

T, S = "kommun-a", "egil-1"


def eid(kind: EntityKind, key: str) -> str:
    return str(entity_id(T, S, kind, key))


def test_a_person_refers_to_the_units_of_their_enrolments_and_competes_for_logins_and_addresses():
    data = {
        "enrolments": [{"school_unit": "u1"}, {"school_unit": "u2"}],
        "eppn": ["Anna@Skola.example"],
        "emails": [{"value": "anna@skola.example"}],
    }
    tokens = references(T, S, EntityKind.PERSON, data)
    assert referenced_ids(tokens, EntityKind.SCHOOL_UNIT) == {
        eid(EntityKind.SCHOOL_UNIT, "u1"),
        eid(EntityKind.SCHOOL_UNIT, "u2"),
    }
    # Logins compete case-insensitively, as reconcile compares them; neither value stands in plain text.
    person = EntityKind.PERSON
    eppn = stored(person, unique_token(EPPN, "anna@skola.example"))
    email = stored(person, unique_token(EMAIL, "anna@skola.example"))
    assert eppn in tokens
    assert email in tokens
    assert not any("anna" in t.lower() for t in tokens)
    assert uniqueness_tokens(tokens) == {eppn, email}
    # Stored qualified by the carrier's kind: "the persons enrolled at u1" is one index lookup.
    assert stored(person, token(EntityKind.SCHOOL_UNIT, eid(EntityKind.SCHOOL_UNIT, "u1"))) in tokens


@pytest.mark.parametrize(
    ("kind", "data", "expected"),
    [
        (
            EntityKind.DUTY,
            {"person": "p1", "school_unit": "u1"},
            {EntityKind.PERSON: {"p1"}, EntityKind.SCHOOL_UNIT: {"u1"}},
        ),
        (
            EntityKind.GROUP,
            {"school_unit": "u1", "memberships": [{"person": "p1"}, {"person": "p2"}]},
            {EntityKind.PERSON: {"p1", "p2"}, EntityKind.SCHOOL_UNIT: {"u1"}},
        ),
        (
            EntityKind.ACTIVITY,
            {"school_unit": "u1", "groups": ["g1"], "teachers": ["d1", "d2"]},
            {EntityKind.GROUP: {"g1"}, EntityKind.DUTY: {"d1", "d2"}, EntityKind.SCHOOL_UNIT: {"u1"}},
        ),
        (
            EntityKind.SCHOOL_UNIT,
            {"organisation": "o1", "school_unit_group": None, "school_unit_code": "12345678"},
            {EntityKind.ORGANISATION: {"o1"}},
        ),
    ],
)
def test_each_kind_refers_to_the_entities_it_names(kind, data, expected):
    tokens = references(T, S, kind, data)
    for target, keys in expected.items():
        assert referenced_ids(tokens, target) == {eid(target, k) for k in keys}
    assert all(t.startswith(f"{kind.value}>") for t in tokens)


def test_school_units_with_the_same_code_share_a_token():
    first = references(T, S, EntityKind.SCHOOL_UNIT, {"school_unit_code": "12345678"})
    second = references(T, "other-source", EntityKind.SCHOOL_UNIT, {"school_unit_code": "12345678"})
    assert stored(EntityKind.SCHOOL_UNIT, unique_token(SCHOOL_UNIT_CODE, "12345678")) in set(first) & set(second)
