"""The test report's reasons: every refusal the EGIL profile makes gets a code naming what is missing, every
code a Swedish text (with what to fix), and a projection's progress says when a report is final."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from skolsynk.adapters.egil import EgilMappingError, to_egil
from skolsynk.storage.projection_status import ProjectionProgress, progress_of
from skolsynk_services.admin.service.reports import REASON_CODES, reason_code
from skolsynk_services.admin.ui.catalogue import section, text

pytestmark = pytest.mark.unit


def refusal(resource: dict[str, Any]) -> str:
    """The reason the dispatcher records when the EGIL profile cannot carry ``resource``."""
    with pytest.raises(EgilMappingError) as refused:
        to_egil(resource)
    return str(refused.value)


def person(**changes: Any) -> dict[str, Any]:
    return {"id": str(uuid.uuid4()), "kind": "person", "given_name": "Alma", "family_name": "Bergman",
            "eppn": ["alma.bergman@skola.example"], **changes}  # fmt: skip


@pytest.mark.parametrize(
    ("resource", "code"),
    [
        (person(eppn=[]), "no_login"),
        (person(given_name=""), "no_given_name"),
        (person(family_name=None), "no_family_name"),
        (person(emails=[{"value": "alma@skola.example", "type": "Privat fax"}]), "bad_email"),
        (person(id="not-a-uuid"), "bad_id"),
        (person(enrolments=[{"school_unit_id": "x"}]), "bad_reference"),
        ({"id": str(uuid.uuid4()), "kind": "group", "member_ids": [], "school_unit_id": str(uuid.uuid4())}, "no_name"),
        ({"id": str(uuid.uuid4()), "kind": "school_unit", "display_name": "Skola 1"}, "no_school_unit_code"),
        (
            {
                "id": str(uuid.uuid4()),
                "kind": "duty",
                "person_id": str(uuid.uuid4()),
                "school_unit_id": str(uuid.uuid4()),
            },
            "no_role",
        ),
    ],
)
def test_each_refusal_of_the_egil_profile_names_what_is_missing(resource: dict[str, Any], code: str) -> None:
    assert reason_code(refusal(resource)) == code


def test_the_vendors_own_refusals_and_refused_references_have_codes_and_the_rest_a_fallback() -> None:
    assert reason_code("vendor answered 422: userName taken") == "vendor_refused"
    assert reason_code("group: refers to 2 entities the vendor refused") == "reference_refused"
    assert reason_code("schoolTypes[0]: not a string") == "other"
    assert reason_code(None) == "other"
    assert reason_code("") == "other"


def test_every_reason_code_has_a_swedish_text_and_no_text_lacks_a_code() -> None:
    texts = section("test_report.reasons")
    assert set(texts) == set(REASON_CODES)
    for code in REASON_CODES:
        assert text(f"test_report.reasons.{code}").endswith(".")


def test_a_projection_is_busy_until_it_answers_every_request_and_stops_running() -> None:
    assert not ProjectionProgress().busy
    assert progress_of(None) == ProjectionProgress()
    asked = progress_of({"requested": 2, "done": 1, "running": False})
    assert asked.waiting
    assert asked.busy
    running = progress_of({"requested": 2, "done": 2, "running": True})
    assert not running.waiting
    assert running.busy
    assert not progress_of({"requested": 2, "done": 2, "running": False}).busy
