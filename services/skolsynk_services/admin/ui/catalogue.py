"""The UI's Swedish text catalogue: every sentence, label and plural the pages and the Python code show
lives in ``sv.json`` beside this module (one file, as a translator expects it), read once at import.

Keys are dotted paths into the file (``"holds.cause.source"``); a text may name values in braces
(``"{vendor} får inte personen"``). Plurals are objects with the forms Swedish needs, ``one`` and
``other``: ``plural("school_units", 1)`` is "1 skolenhet", ``plural("school_units", 3)`` "3 skolenheter"."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from skolsynk_services.admin.ui.formatting import number

CATALOGUE = Path(__file__).with_name("sv.json")


@cache
def catalogue() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(CATALOGUE.read_text(encoding="utf-8"))
    return loaded


def lookup(key: str) -> Any:
    """The entry at a dotted key (a string, a plural object or a whole section); KeyError names the key."""
    node: Any = catalogue()
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(f"no text {key!r} in {CATALOGUE.name}")
        node = node[part]
    return node


def text(key: str, /, **values: Any) -> str:
    """The Swedish text at ``key``, with ``{name}`` placeholders filled from ``values``."""
    entry = lookup(key)
    if not isinstance(entry, str):
        raise KeyError(f"{key!r} in {CATALOGUE.name} is not a single text")
    return entry.format(**values) if values else entry


def plural(key: str, n: int, /, **values: Any) -> str:
    """The form of ``plural.<key>`` for ``n`` (``{n}`` is the number, grouped the Swedish way)."""
    forms = lookup(f"plural.{key}")
    form = forms["one"] if n == 1 else forms["other"]
    return str(form).format(n=number(n), **values)


def section(key: str) -> dict[str, Any]:
    """A whole section (for example every status's label) as a mapping."""
    entry = lookup(key)
    if not isinstance(entry, dict):
        raise KeyError(f"{key!r} in {CATALOGUE.name} is not a section")
    return entry
