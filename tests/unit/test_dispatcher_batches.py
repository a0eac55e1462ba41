"""The dispatcher's pure batch logic: which change of an entity a batch delivers, and what a
resource refers to (its references decide what it waits for)."""

from __future__ import annotations

import uuid

import pytest

from skolsynk.contracts.vendor import VendorChange
from skolsynk.domain.ss12000 import EntityKind
from skolsynk_services.dispatcher.delivery import Delivery, VendorDeliverer, references

pytestmark = pytest.mark.unit

TENANT = "kommun-a"


def delivery(
    index: int, entity: uuid.UUID, version: int, operation: str = "upsert", *, tenant: str = TENANT
) -> Delivery:
    change = VendorChange(
        vendor_id="fakevendor",
        entity_kind=EntityKind.PERSON,
        entity_id=entity,
        operation=operation,  # type: ignore[arg-type]
        version=version,
        resource={"id": str(entity)} if operation == "upsert" else None,
        test_mode=False,
        reason="test",
    )
    return Delivery(index, change.to_envelope(tenant_id=tenant), change, tenant)


def test_only_the_newest_change_of_an_entity_in_a_batch_is_delivered():
    anna, bo = uuid.uuid4(), uuid.uuid4()
    batch = [
        delivery(0, anna, 2, "delete"),
        delivery(1, bo, 1),
        delivery(2, anna, 3),
        delivery(3, bo, 1),  # the same change twice
        delivery(4, anna, 1, "delete"),
        delivery(5, anna, 3, tenant="kommun-b"),  # another tenant's entity
    ]
    work, superseded = VendorDeliverer._newest(batch)
    assert [d.index for d in work] == [1, 2, 5]
    assert [d.index for d in superseded] == [0, 4], "older deletes are answered as superseded"
    assert {d.index for d in batch if d.status == "stale"} == {0, 3, 4}


def test_references_are_what_the_vendor_receives_of_a_resource():
    unit, person, group, duty = (str(uuid.uuid4()) for _ in range(4))
    activity = {
        "id": str(uuid.uuid4()),
        "school_unit_id": unit,
        "group_ids": [group],
        "teacher_duty_ids": [duty],
    }
    everything = frozenset(EntityKind)
    assert references(activity, everything) == {unit, group, duty}
    assert references(activity, {EntityKind.GROUP, EntityKind.ACTIVITY}) == {group}
    student = {"id": person, "enrolments": [{"school_unit_id": unit}], "member_ids": [person]}
    assert references(student, everything) == {unit}, "never itself"
