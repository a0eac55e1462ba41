"""What a "test connection" found, as the IT admin reads it on the sources page and form."""

from __future__ import annotations

import pytest

from skolsynk_services.admin.models import SourceCheck
from skolsynk_services.admin.ui.formatting import number
from skolsynk_services.admin.ui.texts import check_text

pytestmark = pytest.mark.unit


def result(**fields: object) -> SourceCheck:
    defaults: dict[str, object] = {"source_id": "s", "ok": True, "error_code": None, "counts": {},
                                   "complete": True, "elapsed_seconds": 0.1}  # fmt: skip
    return SourceCheck.model_validate({**defaults, **fields})


def test_counts_are_words_with_the_right_number() -> None:
    assert check_text(result(counts={"school_units": 1, "persons": 1}), "ss12000") == (
        "Anslutningen fungerar: källan svarade med 1 skolenhet och 1 person."
    )
    partial = result(counts={"school_units": 3, "persons": 1000}, complete=False)
    assert check_text(partial, "microsoft") == (
        f"Anslutningen fungerar: källan svarade med 3 skolenheter och {number(1000)} personer på första sidan."
    )


def test_failures_say_what_to_do() -> None:
    refused = check_text(result(ok=False, error_code="token_http_401"), "ss12000")
    assert refused.startswith("Anslutningen fungerar inte: ")
    assert "token_http_401" not in refused  # the hint, not the code
    missing = result(ok=False, error_code="configuration", detail="the environment variable X is not set")
    assert (
        check_text(missing, "ss12000") == "Inställningarna går inte att använda: the environment variable X is not set."
    )
    assert "svarade inte i tid" in check_text(result(ok=False, error_code="no_answer"), "google")
    assert check_text(result(ok=False, error_code="weird"), "google") == "Anslutningen fungerar inte (felkod weird)."


def test_a_google_check_previews_what_the_mapping_makes_of_the_first_users() -> None:
    counts = {"school_units": 2, "persons": 10, "students": 6, "teachers": 2, "staff": 0, "without_role": 2,
              "without_school_unit": 1}  # fmt: skip
    text = check_text(result(counts=counts), "google")
    assert text.endswith(
        "Enligt mappningen: 6 elever, 2 lärare, 0 övrig personal; 2 utan roll och 1 utan skolenhet (de läses inte in)."
    )
