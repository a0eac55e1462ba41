"""The rule that keeps personal data out of logs: key masking, free-text scrubbing, and the whole
structlog pipeline as configured by :func:`skolsynk.logging.configure_logging`."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from hypothesis import given
from hypothesis import strategies as st

from skolsynk.logging import (
    REDACTED,
    bound_context,
    configure_logging,
    get_logger,
    redact_mapping,
    redact_personal_data,
    scrub,
)

pytestmark = pytest.mark.unit


def _redact(**event: Any) -> dict[str, Any]:
    return dict(redact_personal_data(None, "info", dict(event)))


# ---------------------------------------------------------------------------
# Keys that name personal data
# ---------------------------------------------------------------------------

PERSONAL_KEYS = [
    "email",
    "Email",
    "EMAIL",
    "emails",
    "mail",
    "given_name",
    "givenName",
    "given-name",
    "GivenName",
    "family_name",
    "familyName",
    "family-name",
    "first_name",
    "firstName",
    "last_name",
    "lastName",
    "display_name",
    "displayName",
    "name",
    "full_name",
    "civic_no",
    "civicNo",
    "civic-no",
    "personnummer",
    "Personnummer",
    "ssn",
    "national_id",
    "phone",
    "phoneNumber",
    "address",
    "username",
    "userName",
    "eppn",
    "payload",
    "body",
    "password",
    "secret",
    "token",
    "authorization",
    "Authorization",
    "api_key",
    "apiKey",
]

SAFE_KEYS = ["tenant_id", "vendor_id", "message_id", "count", "queue", "duration_ms", "source_id", "status"]


@pytest.mark.parametrize("key", PERSONAL_KEYS)
def test_personal_data_key_is_masked_at_top_level(key: str) -> None:
    out = _redact(event="user_synced", **{key: "Anna Svensson"})
    assert out[key] == REDACTED
    assert out["event"] == "user_synced"


@pytest.mark.parametrize("key", PERSONAL_KEYS)
def test_personal_data_key_is_masked_whatever_the_value_type(key: str) -> None:
    # Masked by key, not by content: numbers, dicts and lists under such a key go too.
    for value in (199001151234, {"nested": "x"}, ["a", "b"], None):
        assert _redact(**{key: value})[key] == REDACTED


@pytest.mark.parametrize("key", SAFE_KEYS)
def test_id_keys_are_kept(key: str) -> None:
    assert _redact(**{key: "kommun-a"})[key] == "kommun-a"


@pytest.mark.parametrize("key", PERSONAL_KEYS)
def test_personal_data_key_is_masked_in_nested_dicts_and_lists(key: str) -> None:
    event = {
        "user": {"id": "u-1", key: "Anna", "roles": [{"school": "s-1", key: "Anna"}]},
        "users": [{key: "Bertil", "id": "u-2"}, ({key: "Cecilia"},)],
    }
    out = _redact(**event)
    assert out["user"]["id"] == "u-1"
    assert out["user"][key] == REDACTED
    assert out["user"]["roles"][0] == {"school": "s-1", key: REDACTED}
    assert out["users"][0] == {key: REDACTED, "id": "u-2"}
    assert out["users"][1] == [{key: REDACTED}]


def test_nested_string_values_are_scrubbed() -> None:
    out = _redact(detail={"note": "mail anna@example.se, pnr 19900115-1234", "ids": ["ok", "900115-1234"]})
    assert out["detail"] == {"note": "mail [email], pnr [civic-no]", "ids": ["ok", "[civic-no]"]}


@pytest.mark.parametrize("key", ["timestamp", "level", "logger"])
def test_metadata_keys_are_left_alone(key: str) -> None:
    # These are produced by structlog itself; they are never scrubbed (and are never personal).
    assert _redact(**{key: "19900115-1234"})[key] == "19900115-1234"


def test_redact_mapping_returns_a_masked_copy() -> None:
    original = {"email": "anna@example.se", "reason": "bad address anna@example.se", "attempt": 3}
    out = redact_mapping(original)
    assert out == {"email": REDACTED, "reason": "bad address [email]", "attempt": 3}
    assert original["email"] == "anna@example.se"  # the input is not modified


# ---------------------------------------------------------------------------
# scrub(): free text
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("anna.svensson@example.se", "[email]"),
        ("contact: Anna.Svensson+skola@elev.kommun-a.se.", "contact: [email]."),
        ("two: a@b.se and c_d@e.co.uk", "two: [email] and [email]"),
        ("19900115-1234", "[civic-no]"),  # YYYYMMDD-NNNN
        ("20051231-9876", "[civic-no]"),
        ("900115-1234", "[civic-no]"),  # YYMMDD-NNNN
        ("191212+1234", "[civic-no]"),  # YYMMDD+NNNN (100 years or older)
        ("199001151234", "[civic-no]"),  # 12 digits
        ("9001151234", "[civic-no]"),  # 10 digits
        ("19900175-1234", "[civic-no]"),  # coordination number: day 15 + 60
        ("900161-1234", "[civic-no]"),  # coordination number: day 1 + 60
        ("9001911234", "[civic-no]"),  # coordination number: day 31 + 60
        ("pnr=19900115-1234;", "pnr=[civic-no];"),
        ("(900115-1234)", "([civic-no])"),
        ("elev 900115-1234 saknar klass", "elev [civic-no] saknar klass"),
        ("a\n19900115-1234\nb", "a\n[civic-no]\nb"),
    ],
)
def test_scrub_masks_email_addresses_and_civic_numbers(text: str, expected: str) -> None:
    assert scrub(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "123e4567-e89b-12d3-a456-426614174000",  # UUID
        "f47ac10b-58cc-4372-a567-0e02b2c3d479",
        "00000000-0000-0000-0000-000000000000",
        "2024-01-15T10:20:30Z",  # ISO timestamps
        "2024-01-15T10:20:30.123456+00:00",
        "1990-01-15",
        "school unit 12345678",  # 8-digit skolenhetskod
        "19900115",  # a date alone (8 digits) is not a civic number
        "900115",
        "42",
        "attempt 3 of 5",
        "1234-5678",
        "556036-0793",  # organisation number (month digits >= 20): not a person
        "212000-0142",  # a municipality's organisation number
        "901315-1234",  # month 13: not plausible
        "900132-1234",  # day 32: not plausible
        "900192-1234",  # day 92: beyond coordination range
        "12345678901234",  # 14-digit run: not a civic number shape
        "x19900115-1234",  # glued to a letter: an identifier, not a civic number
        "no personal data here",
        "",
    ],
)
def test_scrub_leaves_ids_timestamps_and_short_numbers(text: str) -> None:
    assert scrub(text) == text


@pytest.mark.parametrize("uuid_text", ["19900115-1234-4abc-8def-0123456789ab", "123e4567-e89b-12d3-a456-199001151234"])
def test_scrub_leaves_uuids_with_date_shaped_groups(uuid_text: str) -> None:
    assert scrub(uuid_text) == uuid_text


def test_scrub_is_idempotent() -> None:
    text = "anna@example.se 19900115-1234 900115+1234"
    assert scrub(scrub(text)) == scrub(text)


# Plausible civic numbers: century optional, month 01-12, day 01-28 (valid in every month) or the
# coordination-number day (+60), four final digits.
_year = st.integers(min_value=0, max_value=99).map(lambda y: f"{y:02d}")
_month = st.integers(min_value=1, max_value=12).map(lambda m: f"{m:02d}")
_day = st.integers(min_value=1, max_value=28).flatmap(lambda d: st.sampled_from([f"{d:02d}", f"{d + 60:02d}"]))
_tail = st.integers(min_value=0, max_value=9999).map(lambda n: f"{n:04d}")


@st.composite
def civic_numbers(draw: st.DrawFn) -> str:
    century = draw(st.sampled_from(["", "19", "20"]))
    separator = draw(st.sampled_from(["", "-"] if century else ["", "-", "+"]))
    return f"{century}{draw(_year)}{draw(_month)}{draw(_day)}{separator}{draw(_tail)}"


# Surrounding text without digits, joined to the number by a non-alphanumeric delimiter.
_no_digits = st.text(alphabet=st.characters(exclude_categories=("Nd", "Cs")), max_size=30)
_delimiter = st.sampled_from([" ", "\n", "\t", "(", ")", ",", ";", ":", "=", '"', "'", "/", "[", "]"])


@given(number=civic_numbers(), before=_no_digits, after=_no_digits, left=_delimiter, right=_delimiter)
def test_civic_number_digits_never_survive_scrub(number: str, before: str, after: str, left: str, right: str) -> None:
    text = f"{before}{left}{number}{right}{after}"
    out = scrub(text)
    assert number not in out
    assert re.search(r"\d", out) is None, out


@given(number=civic_numbers())
def test_civic_number_is_scrubbed_inside_log_values(number: str) -> None:
    out = _redact(event=f"lookup failed for {number}", detail={"ids": [number]})
    assert number not in json.dumps(out)


# ---------------------------------------------------------------------------
# The whole pipeline: configure_logging(json) -> stdout
# ---------------------------------------------------------------------------


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    noisy = {name: logging.getLogger(name).level for name in ("aio_pika", "aiormq", "pymongo", "aiohttp.access")}
    try:
        yield
    finally:
        structlog.reset_defaults()
        structlog.contextvars.clear_contextvars()
        root.handlers[:] = handlers
        root.setLevel(level)
        for name, noisy_level in noisy.items():
            logging.getLogger(name).setLevel(noisy_level)


def _json_lines(captured: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in captured.splitlines() if line.strip()]


@pytest.mark.usefixtures("restore_logging")
def test_json_logging_end_to_end_has_no_personal_data_and_carries_bound_context(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging(log_format="json", level="INFO", service="normaliser")
    log = get_logger("skolsynk.test")
    with bound_context(tenant_id="kommun-a", message_id="7278a908-3fc9-4485-a698-04704d2773bd", vendor_id=None):
        log.info(
            "could not match anna.svensson@example.se (19900115-1234)",
            email="anna.svensson@example.se",
            given_name="Anna",
            familyName="Svensson",
            user={"id": "u-1", "civic_no": "900115-1234"},
            count=3,
        )
    log.info("outside_context")

    captured = capsys.readouterr()
    lines = _json_lines(captured.out)
    assert len(lines) == 2, captured
    record, outside = lines
    raw = captured.out
    for secret in ("anna.svensson", "example.se", "Svensson", "19900115", "900115-1234", '"Anna"'):
        assert secret not in raw
    assert record["event"] == "could not match [email] ([civic-no])"
    assert record["email"] == REDACTED
    assert record["given_name"] == REDACTED
    assert record["familyName"] == REDACTED
    assert record["user"] == {"id": "u-1", "civic_no": REDACTED}
    assert record["count"] == 3
    assert record["tenant_id"] == "kommun-a"
    assert record["message_id"] == "7278a908-3fc9-4485-a698-04704d2773bd"
    assert "vendor_id" not in record  # None values are not bound
    assert record["service"] == "normaliser"
    assert record["level"] == "info"
    assert record["logger"] == "skolsynk.test"
    assert "timestamp" in record
    # The context ends with the block.
    assert outside["event"] == "outside_context"
    assert "tenant_id" not in outside
    assert outside["service"] == "normaliser"


@pytest.mark.usefixtures("restore_logging")
def test_json_logging_scrubs_exceptions_and_stdlib_records(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(log_format="json", level="INFO")
    log = get_logger("skolsynk.test")
    with bound_context(tenant_id="kommun-b"):
        try:
            raise ValueError("no account for anna@example.se / 900115-1234")
        except ValueError:
            log.exception("lookup_failed")
        # A foreign (stdlib) logger goes through the same processors.
        logging.getLogger("thirdparty.lib").warning("retrying for %s", "bertil@example.se")

    captured = capsys.readouterr()
    lines = _json_lines(captured.out)
    assert len(lines) == 2, captured
    assert "anna@example.se" not in captured.out
    assert "bertil@example.se" not in captured.out
    assert "900115-1234" not in captured.out
    failure, foreign = lines
    assert failure["event"] == "lookup_failed"
    assert "ValueError: no account for [email] / [civic-no]" in failure["exception"]
    assert failure["tenant_id"] == "kommun-b"
    assert foreign["event"] == "retrying for [email]"
    assert foreign["logger"] == "thirdparty.lib"
    assert foreign["level"] == "warning"
    assert foreign["tenant_id"] == "kommun-b"


def test_non_text_values_are_scrubbed_through_their_repr() -> None:
    event = redact_personal_data(
        None, "info", {"event": "x", "raw": b"anna@example.se 19900115-1234", "err": ValueError("bertil@example.se")}
    )
    rendered = repr(event)
    assert "anna@" not in rendered
    assert "bertil@" not in rendered
    assert "19900115-1234" not in rendered
