"""Reading JSON that strangers send (the EGIL receiver, the admin API, the SS 12000 webhook): one reader
for every HTTP server, so hostile bodies get a clear 400 everywhere instead of a 500 somewhere.

:func:`parse_json` refuses, with a reason that never repeats the submitted value:

* bytes that are not UTF-8;
* nesting deeper than ``max_depth`` (the standard parser recurses: a few thousand ``[`` were a
  ``RecursionError``, a 500);
* a lone surrogate (``"\\ud800"``): the parser accepts the escape, the store cannot encode it (a 500 at
  write time);
* an integer outside 64 bits: the store cannot hold it (an ``OverflowError`` at write time);
* ``NaN``, ``Infinity`` and a number too large for a float (``1e400``, read as infinity): not JSON, which the
  standard parser accepts anyway; stored, they would go out again as invalid JSON (the receiver fuzz found it);
* anything that is not JSON (with the position only).
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

#: Deep enough for every body skolsynk takes (an EGIL SCIM resource nests about five levels).
MAX_JSON_DEPTH = 32
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


class UnsafeJson(ValueError):
    """Why a body was refused (a reason for the client: never the submitted value)."""


def parse_json(raw: bytes, *, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """The JSON value of ``raw``, or :class:`UnsafeJson` saying what is wrong with it."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise UnsafeJson("the body is not UTF-8") from None
    if _depth(text) > max_depth:
        raise UnsafeJson(f"the JSON is nested deeper than {max_depth} levels")
    try:
        value = json.loads(text, parse_constant=_not_a_number, parse_float=_finite)
    except json.JSONDecodeError as error:
        raise UnsafeJson(f"malformed JSON at position {error.pos}") from None
    _check(value)
    return value


def _not_a_number(token: str) -> Any:
    raise UnsafeJson(f"{token} is not a JSON number")


def _finite(token: str) -> float:
    value = float(token)
    if not math.isfinite(value):
        raise UnsafeJson("a number is out of range (too large for a float)")
    return value


#: A JSON string (escapes included), and a bracket outside of one.
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_BRACKET = re.compile(r"[\[\]{}]")


def _depth(text: str) -> int:
    """The deepest nesting of arrays and objects, ignoring brackets inside strings (no recursion; the
    strings are cut out by a regular expression, so only the brackets are walked in Python: the receiver
    reads every EGIL request through here). An unterminated string runs to the end of the text."""
    outside = _STRING.sub("", text).split('"', 1)[0]
    deepest = depth = 0
    for bracket in _BRACKET.findall(outside):
        if bracket in "[{":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def _check(value: Any) -> None:
    """Every string (keys too) valid Unicode, every integer within 64 bits (iteratively)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            _unicode(item)
        elif isinstance(item, bool):
            continue
        elif isinstance(item, int):
            if not INT64_MIN <= item <= INT64_MAX:
                raise UnsafeJson("a number is out of range (integers have 64 bits)")
        elif isinstance(item, dict):
            for key, inner in item.items():
                _unicode(key)
                stack.append(inner)
        elif isinstance(item, list):
            stack.extend(item)


def _unicode(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise UnsafeJson("a string holds a lone surrogate (\\uD800-\\uDFFF), which is not Unicode") from None
