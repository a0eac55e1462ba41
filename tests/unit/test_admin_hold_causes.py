"""How a hold's page words why its removals came: the source's run names the source and says to check it;
an admin's own change in skolsynk names who did what and never blames the source."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from skolsynk_services.admin.models import HoldCause
from skolsynk_services.admin.ui.views.holds import cause_texts, short_cause

pytestmark = pytest.mark.unit

AT = datetime(2026, 12, 6, 9, 30, tzinfo=UTC)
SOURCE = HoldCause(kind="source", source_id="egil-1", run_id="r-1", mode="full", at=AT)
CHANGE = HoldCause(
    kind="change", reason="subscription", actor="anna@kommun.se", action="subscription.update", target="ne", at=AT
)
SOURCES = {"egil-1": "Elevregistret via EGIL"}
VENDORS = {"ne": "NE Nationalencyklopedin"}


def test_a_hold_from_the_source_names_the_source_and_its_run() -> None:
    [sentence] = cause_texts([SOURCE], source_names=SOURCES, vendor_names=VENDORS)
    assert "Elevregistret via EGIL" in sentence
    assert "hela källan" in sentence
    assert "2026-12-06 10:30" in sentence  # Swedish local time
    assert "Kontrollera källan" in sentence
    assert short_cause([SOURCE], source_names=SOURCES) == "Källan: Elevregistret via EGIL"


def test_a_hold_from_an_admins_change_names_the_admin_and_does_not_blame_the_source() -> None:
    [sentence] = cause_texts([CHANGE], source_names=SOURCES, vendor_names=VENDORS)
    assert sentence == (
        "Borttagningarna kommer av en ändring i skolsynk, inte från källan: anna@kommun.se ändrade en "
        "prenumeration (NE Nationalencyklopedin) 2026-12-06 10:30."
    )
    assert "Kontrollera källan" not in sentence
    assert short_cause([CHANGE]) == "Ändring av anna@kommun.se"


def test_both_causes_are_told_and_the_admins_change_comes_first_in_short() -> None:
    sentences = cause_texts([SOURCE, CHANGE], source_names=SOURCES, vendor_names=VENDORS)
    assert len(sentences) == 2
    assert "Elevregistret" in sentences[0]
    assert "anna@kommun.se" in sentences[1]
    assert short_cause([SOURCE, CHANGE], source_names=SOURCES) == "Ändring av anna@kommun.se"


def test_a_hold_decision_or_a_privacy_change_names_its_target_only_when_it_is_a_vendor() -> None:
    decided = HoldCause(kind="change", actor="ops", action="hold.approve", target="ne:unit-1", at=AT)
    assert cause_texts([decided], vendor_names=VENDORS) == [
        "Borttagningarna kommer av en ändring i skolsynk, inte från källan: ops godkände spärrade borttagningar "
        "(NE Nationalencyklopedin) 2026-12-06 10:30."
    ]
    privacy = HoldCause(kind="change", actor="ops", action="tenant.privacy", target="kommun-a", at=AT)
    [sentence] = cause_texts([privacy], vendor_names=VENDORS)
    assert "ops ändrade hur personer utan skyddsmarkering behandlas 2026-12-06" in sentence


def test_dates_other_and_unknown_causes() -> None:
    assert "Slutdatum" in cause_texts([HoldCause(kind="dates")])[0]
    assert cause_texts([HoldCause(kind="other", reason="erasure")]) == [
        "Borttagningarna upptäcktes vid en omräkning (efter en GDPR-begäran)."
    ]
    assert "inte känd" in cause_texts([])[0]
    assert short_cause([]) == "Okänd"
    # An unknown source is named by its id.
    assert "egil-9" in cause_texts([HoldCause(kind="source", source_id="egil-9")])[0]
