"""Hostile JSON gets a reason, never a crash (libs/skolsynk/json_input.py, issue 19)."""

from __future__ import annotations

import pytest

from skolsynk.json_input import MAX_JSON_DEPTH, UnsafeJson, parse_json


def test_ordinary_json_is_read() -> None:
    body = b'{"a": [1, {"b": "[[[ {{{ not nesting \\" ]"}], "c": -9223372036854775808, "d": true, "e": -1.5e300}'
    assert parse_json(body)["c"] == -(2**63)
    assert parse_json(body)["e"] == -1.5e300
    assert parse_json(b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH) is not None


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"[" * (MAX_JSON_DEPTH + 1) + b"]" * (MAX_JSON_DEPTH + 1), "nested deeper than 32 levels"),
        (b"[" * 100_000, "nested deeper"),  # a RecursionError for the standard parser
        (b'{"name": "\\ud800"}', "lone surrogate"),
        (b'{"\\udfff": 1}', "lone surrogate"),  # a key too
        (b'{"n": 9223372036854775808}', "out of range"),
        (b"[-9223372036854775809]", "out of range"),
        (b'{"name": "Karin \xff"}', "not UTF-8"),
        (b'{"name": ', "malformed JSON at position 9"),
        # Not JSON, but the standard parser reads them: the receiver stored a NaN (the receiver fuzz found it).
        (b'{"f": NaN}', "NaN is not a JSON number"),
        (b"[Infinity]", "Infinity is not a JSON number"),
        (b"[-Infinity]", "-Infinity is not a JSON number"),
        (b'{"f": 1e400}', "too large for a float"),
        (b'{"f": -1.5e999}', "too large for a float"),
    ],
)
def test_hostile_json_is_refused_with_a_reason_that_does_not_repeat_it(raw: bytes, reason: str) -> None:
    with pytest.raises(UnsafeJson, match=reason) as refused:
        parse_json(raw)
    assert "Karin" not in str(refused.value)


def test_a_surrogate_pair_is_one_character_and_fine() -> None:
    assert parse_json(b'"\\ud83d\\ude00"') == "\U0001f600"


def _depth_by_walking(text: str) -> int:
    """The nesting as a character-by-character walk finds it (what json_input did before its regular
    expressions): the reference the fast version must agree with."""
    deepest = depth = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def test_the_depth_ignores_brackets_in_strings_exactly_as_a_walk_does() -> None:
    import random

    from skolsynk.json_input import _depth

    alphabet = '[]{}"\\ a,:'
    generator = random.Random(19)
    texts = [
        '{"a": "[[[", "b": [{"c": "\\"]]]"}]}',
        '["\\\\", [[["x"]]]]',
        '"unterminated [[[[',
        '["a\\"[[[',
        '{"k": "\\\\\\"[[" } [[',
    ]
    texts += ["".join(generator.choice(alphabet) for _ in range(generator.randint(0, 40))) for _ in range(5000)]
    for text in texts:
        assert _depth(text) == _depth_by_walking(text), text
