"""The person page's Swedish: every verdict and every reason code has its text in the catalogue (ui/sv.json,
section ``person``), and a verdict reads as one plain sentence that names the rule."""

from __future__ import annotations

import pytest

from skolsynk.domain.verdicts import ReasonCode, Verdict
from skolsynk_services.admin.ui import verdict_texts
from skolsynk_services.admin.ui.catalogue import section
from tests.unit.test_domain_verdicts import CASES

pytestmark = pytest.mark.unit


def test_every_reason_code_and_verdict_has_a_swedish_text():
    assert set(section("person.reasons")) == {code.value for code in ReasonCode}
    assert set(section("person.verdicts")) == {v.value for v in Verdict}
    assert set(section("person.verdict_tags")) == {v.value for v in Verdict}


@pytest.mark.parametrize("code", list(ReasonCode), ids=str)
def test_every_reason_reads_without_a_placeholder_left(code: ReasonCode):
    given = CASES[code][0]()
    said = verdict_texts.sentence(given, "NE")
    assert "{" not in said
    assert said.startswith(section("person.verdicts")[given.verdict.value].format(vendor="NE"))
    for reason in verdict_texts.reasons(given):
        assert "{" not in reason
        assert reason[:1].isupper()


#: What test mode adds to a verdict.
TEST = " (testläge: skickas inte på riktigt)"


@pytest.mark.parametrize(
    ("code", "sentence"),
    [
        (ReasonCode.UNIT_NOT_CHOSEN, "Skickas inte till NE: Skola su-b ingår inte i urvalet" + TEST),
        (ReasonCode.PROTECTED_IDENTITY, "Undanhållen från NE: skyddad identitet (Skyddad folkbokföring)" + TEST),
        (ReasonCode.HOLD, "Väntar (NE): spärr för Skola su-b; Skola su-b ingår inte i urvalet"),
        (ReasonCode.TEST_MODE, "Skickas till NE" + TEST),
        (ReasonCode.ROLE, "Skickas inte till NE: rollen lärare ingår inte" + TEST),
        (ReasonCode.SCHOOL_YEAR, "Skickas inte till NE: årskurs 5 ingår inte" + TEST),
        (ReasonCode.NOT_ACTIVE, "Skickas inte till NE: personen är inte aktiv (personStatus Utvandrad)" + TEST),
        (
            ReasonCode.VENDOR_REQUIRES_LOGIN,
            "Undanhållen från NE: inloggnings-id saknas (leverantörens profil kräver det)" + TEST,
        ),
        (ReasonCode.ERASURE_REQUEST, "Raderas hos NE: begäran om radering" + TEST),
    ],
)
def test_a_verdict_is_one_plain_sentence_naming_the_rule(code: ReasonCode, sentence: str):
    assert verdict_texts.sentence(CASES[code][0](), "NE") == sentence


def test_a_delivered_person_lists_where_and_as_what():
    given = CASES[ReasonCode.SELECTED][0]()
    assert verdict_texts.reasons(given) == [
        "I urvalet som elev vid Skola su-a",
        "Testläge: skickas inte på riktigt",
    ]
