"""Pure GDPR logic: why a removal happens, who is suppressed for which vendor, the receipt outcomes,
and the contracts' guard rails (no personal data fields, vendor ids validated)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from skolsynk.contracts.gdpr import DeletionReason, DeletionReceipt, DeletionRequested, ErasureRequested
from skolsynk.domain.ss12000 import EntityKind
from skolsynk.domain.subscription import VendorSubscription
from skolsynk.storage.erasures import ALL_VENDORS, suppressed_for_vendor
from skolsynk_services.dispatcher.delivery import RECEIPT_OUTCOMES
from skolsynk_services.normaliser.projection import IMMEDIATE, _RemovalReasons

pytestmark = pytest.mark.unit

PERSON, OTHER = str(uuid.uuid4()), str(uuid.uuid4())


def subscription(**fields: object) -> VendorSubscription:
    return VendorSubscription.model_validate(
        {"tenant_id": "kommun-a", "vendor_id": "binogi", "school_unit_codes": ["11111111"], **fields}
    )


def view(entity_id: str, kind: str = "person", source_entity_id: str | None = None) -> dict[str, object]:
    return {"entity_id": entity_id, "kind": kind, "source_entity_id": source_entity_id}


def test_a_person_gone_from_the_source_left_it_and_one_still_there_left_the_selection():
    reasons = _RemovalReasons(subscription(), {}, persons_in_source={OTHER})
    assert reasons(view(PERSON)) is DeletionReason.LEFT_SOURCE
    assert reasons(view(OTHER)) is DeletionReason.LEFT_SELECTION
    # Groups and other kinds never "leave the source" as persons do; they leave the selection.
    assert reasons(view(PERSON, kind="group")) is DeletionReason.LEFT_SELECTION


def test_a_pseudonymised_view_is_judged_by_its_source_person():
    pseudonym = str(uuid.uuid4())
    reasons = _RemovalReasons(subscription(), {PERSON: "objection"}, persons_in_source={PERSON})
    assert reasons(view(pseudonym, source_entity_id=PERSON)) is DeletionReason.OBJECTION


def test_an_ended_subscription_and_erasure_requests_win_over_other_reasons():
    ended = subscription(ended_at=datetime(2026, 11, 1, tzinfo=UTC))
    assert _RemovalReasons(ended, {PERSON: "erasure"}, set())(view(PERSON)) is DeletionReason.SUBSCRIPTION_ENDED
    erased = _RemovalReasons(subscription(), {PERSON: "erasure"}, {PERSON})
    assert erased(view(PERSON)) is DeletionReason.ERASURE_REQUEST
    assert {DeletionReason.ERASURE_REQUEST, DeletionReason.OBJECTION, DeletionReason.SUBSCRIPTION_ENDED} == IMMEDIATE


def test_suppressions_apply_per_vendor_and_for_every_vendor():
    suppressed = {PERSON: {"binogi": "erasure"}, OTHER: {ALL_VENDORS: "objection"}}
    assert suppressed_for_vendor(suppressed, "binogi") == {PERSON: "erasure", OTHER: "objection"}
    assert suppressed_for_vendor(suppressed, "ilt") == {OTHER: "objection"}
    assert suppressed_for_vendor({}, "ilt") == {}


def test_the_dispatchers_outcomes_map_to_receipt_outcomes():
    allowed = set(DeletionReceipt.model_fields["outcome"].annotation.__args__)  # type: ignore[union-attr]
    assert set(RECEIPT_OUTCOMES.values()) <= allowed
    assert RECEIPT_OUTCOMES["absent"] == "already_absent"


def test_the_grace_period_is_bounded_and_defaults_to_immediate():
    assert subscription().deletion_grace_hours == 0
    assert subscription(deletion_grace_hours=72).deletion_grace_hours == 72
    with pytest.raises(ValidationError):
        subscription(deletion_grace_hours=-1)
    with pytest.raises(ValidationError):
        subscription(deletion_grace_hours=24 * 365)


def test_gdpr_contracts_carry_ids_not_personal_data():
    forbidden = {"name", "given_name", "family_name", "email", "emails", "civic_no", "eppn"}
    for contract in (DeletionRequested, DeletionReceipt, ErasureRequested):
        assert not forbidden & set(contract.model_fields), contract.__name__
    with pytest.raises(ValidationError):
        ErasureRequested(request_id=uuid.uuid4(), person_id=uuid.uuid4(), requested_by="x" * 65)
    with pytest.raises(ValidationError):
        DeletionReceipt(
            vendor_id="Not A Vendor",
            entity_kind=EntityKind.PERSON,
            vendor_entity_id=uuid.uuid4(),
            version=1,
            outcome="deleted",
            delivered_at=datetime.now(UTC),
        )
