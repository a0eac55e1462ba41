"""Source records are typed by kind: closed field names, checked where a record is built and where it is
read, named in the error without their values; the names are the canonical model's."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from skolsynk.contracts.source import (
    FIELDS,
    NESTED,
    EmailFields,
    PersonFields,
    SourceRecord,
    SourceRecordPage,
    fields_schema,
    unknown_fields,
)
from skolsynk.contracts.vendor import RESOURCES, VendorChange, unknown_resource_fields
from skolsynk.domain.selection import project
from skolsynk.domain.ss12000 import (
    ENTITY_MODELS,
    VENDOR_KINDS,
    Email,
    Enrolment,
    EntityKind,
    ExternalIdentifier,
    Membership,
)
from tests.unit.domain_factories import TODAY, profile, state, subscription

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("kind", list(EntityKind))
def test_each_kind_s_field_names_are_the_canonical_model_s(kind: EntityKind) -> None:
    assert set(FIELDS[kind].__annotations__) == set(ENTITY_MODELS[kind].model_fields) - {"kind"}


@pytest.mark.parametrize(
    ("field", "model"),
    [
        ("emails", Email),
        ("enrolments", Enrolment),
        ("memberships", Membership),
        ("external_identifiers", ExternalIdentifier),
    ],
)
def test_nested_field_names_are_the_canonical_model_s(field: str, model: type[Any]) -> None:
    assert set(NESTED[field].__annotations__) == set(model.model_fields)


def test_a_record_built_from_typed_fields_keeps_only_what_was_given() -> None:
    fields = PersonFields(given_name="Ada", family_name="Berg", emails=[EmailFields(value="a@b.se", type="Skola elev")])
    record = SourceRecord.of(EntityKind.PERSON, "p1", fields)
    assert record.data == {
        "given_name": "Ada",
        "family_name": "Berg",
        "emails": [{"value": "a@b.se", "type": "Skola elev"}],
    }


def test_a_misspelt_field_is_refused_where_the_record_is_built_named_without_its_value() -> None:
    with pytest.raises(ValidationError) as refused:
        SourceRecord(kind=EntityKind.PERSON, key="p1", data={"given_nmae": "Ada Secret", "family_name": "Berg"})
    assert "person has no field given_nmae" in str(refused.value)
    assert "Ada Secret" not in str(refused.value)


def test_a_misspelt_nested_field_is_refused_with_its_position() -> None:
    data = {"given_name": "A", "emails": [{"value": "a@b.se"}, {"value": "c@d.se", "typ": "Skola elev"}]}
    assert unknown_fields(EntityKind.PERSON, data) == ["emails.1.typ"]
    with pytest.raises(ValidationError, match=r"emails\.1\.typ"):
        SourceRecord(kind=EntityKind.PERSON, key="p1", data=data)


def test_a_field_of_another_kind_is_refused() -> None:
    with pytest.raises(ValidationError, match="group has no field given_name"):
        SourceRecord(kind=EntityKind.GROUP, key="g1", data={"display_name": "7A", "given_name": "x"})


def test_bad_values_are_not_the_contract_s_business_the_normaliser_makes_them_findings() -> None:
    record = SourceRecord(
        kind=EntityKind.PERSON,
        key="p1",
        data={"given_name": "", "emails": [{"value": "not-an-address", "type": "Okänd"}], "birth_date": "2010-13-45"},
    )
    assert record.data["emails"][0]["value"] == "not-an-address"


def test_the_reading_end_checks_names_too() -> None:
    page = {
        "run_id": "6f2f1e7e-8a0b-4c39-9d7e-2b8f4e5a6c01",
        "source_id": "src",
        "page": 0,
        "records": [{"kind": "duty", "key": "d1", "data": {"person": "p1", "school_unit": "u1", "roel": "Lärare"}}],
    }
    with pytest.raises(ValidationError, match="duty has no field roel"):
        SourceRecordPage.model_validate(page)


def test_the_fields_schemas_are_closed_for_connector_authors() -> None:
    schemas = fields_schema()
    assert set(schemas) == {kind.value for kind in EntityKind}
    person = schemas["person"]
    assert person["additionalProperties"] is False
    assert person["$defs"]["EmailFields"]["additionalProperties"] is False
    assert "given_name" in person["properties"]


# --- what vendors receive ------------------------------------------------------------------------

RESOLVED_IDS = {
    EntityKind.ORGANISATION: set(),
    EntityKind.SCHOOL_UNIT_GROUP: set(),
    EntityKind.SCHOOL_UNIT: {"organisation_id", "school_unit_group_id"},
    EntityKind.PERSON: {"roles", "school_unit_ids", "placements"},
    EntityKind.DUTY: {"person_id", "school_unit_id"},
    EntityKind.GROUP: {"school_unit_id", "member_ids"},
    EntityKind.ACTIVITY: {"school_unit_id", "group_ids", "teacher_duty_ids"},
}


#: Canonical fields no vendor resource carries: only persons whose personStatus is Aktiv reach a vendor.
NEVER_SENT: dict[EntityKind, set[str]] = {EntityKind.PERSON: {"person_status"}}


@pytest.mark.parametrize("kind", VENDOR_KINDS)
def test_a_vendor_resource_has_the_canonical_fields_and_the_resolved_ids(kind: EntityKind) -> None:
    expected = set(ENTITY_MODELS[kind].model_fields) - NEVER_SENT.get(kind, set()) | {"id", "kind"} | RESOLVED_IDS[kind]
    assert set(RESOURCES[kind].__annotations__) == expected


def test_a_vendor_change_with_a_name_its_kind_does_not_have_is_refused() -> None:
    change = {
        "vendor_id": "ne",
        "entity_kind": "group",
        "entity_id": "6f2f1e7e-8a0b-4c39-9d7e-2b8f4e5a6c01",
        "operation": "upsert",
        "version": 1,
        "resource": {"id": "x", "kind": "group", "member_ids": [], "given_name": "Secret"},
        "test_mode": False,
        "reason": "snapshot",
    }
    with pytest.raises(ValidationError, match="a group resource has no field given_name") as refused:
        VendorChange.model_validate(change)
    assert "Secret" not in str(refused.value)
    VendorChange.model_validate({**change, "resource": {"id": "x", "kind": "group", "member_ids": []}})


def test_every_resource_the_selection_makes_has_only_its_kind_s_names() -> None:
    """The widest selection of the fixture organiser: every kind, every field, every role."""
    resources = project(state(), subscription(), profile(), TODAY).values()
    assert {r.kind for r in resources} == set(VENDOR_KINDS)
    for resource in resources:
        assert unknown_resource_fields(resource.kind, resource.resource) == [], resource.kind
        VendorChange(
            vendor_id="ne",
            entity_kind=resource.kind,
            entity_id=resource.id,
            operation="upsert",
            version=1,
            resource=resource.resource,
            test_mode=False,
            reason="snapshot",
        )
