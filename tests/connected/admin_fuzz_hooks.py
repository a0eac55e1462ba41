"""Schemathesis hooks of the admin fuzz (``tests/connected/test_admin_fuzz.py``), loaded in schemathesis's own
process through ``SCHEMATHESIS_HOOKS``: the check ``nothing_stored_from_rejected_input``.

Before every write (POST, PUT, PATCH, DELETE) the admin's database is read whole (it stays small: what the
fuzzer created); when the write is answered 4xx it is read again and must be exactly as it was. Left out, on
purpose: a token's ``last_used_at`` (any authenticated request stamps it, to the minute, accepted or not; the
rate limits and sign-in failures are counted in memory, not stored). The database is
named by ``SKOLSYNK_FUZZ_MONGODB_URL`` and ``SKOLSYNK_FUZZ_DATABASE``; without them the check does nothing.
"""

from __future__ import annotations

import json
import os
from typing import Any

import schemathesis
from pymongo import MongoClient

WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
#: Fields any request may change, accepted or not.
VOLATILE_FIELDS = frozenset({"last_used_at"})

_client: MongoClient[dict[str, Any]] | None = None
_before: dict[int, dict[str, list[str]]] = {}


def _database() -> Any:
    global _client
    url, name = os.environ.get("SKOLSYNK_FUZZ_MONGODB_URL"), os.environ.get("SKOLSYNK_FUZZ_DATABASE")
    if not url or not name:
        return None
    if _client is None:
        _client = MongoClient(url, tz_aware=True)
    return _client[name]


def _stable(document: dict[str, Any]) -> str:
    return json.dumps({k: v for k, v in document.items() if k not in VOLATILE_FIELDS}, sort_keys=True, default=repr)


def fingerprint() -> dict[str, list[str]] | None:
    """Every document of the admin's database (volatile fields left out), per collection."""
    db = _database()
    if db is None:
        return None
    snapshot = {
        name: sorted(_stable(document) for document in db[name].find({})) for name in db.list_collection_names()
    }
    # An empty collection is no collection (a conditional update that matched nothing may create it).
    return {name: documents for name, documents in snapshot.items() if documents}


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    if case.method.upper() in WRITES:
        snapshot = fingerprint()
        if snapshot is not None:
            _before[id(case)] = snapshot


@schemathesis.check
def nothing_stored_from_rejected_input(ctx: Any, response: Any, case: Any) -> bool | None:
    before = _before.pop(id(case), None)
    if before is None or not 400 <= response.status_code < 500:
        return None
    after = fingerprint()
    if after != before:
        assert after is not None
        changed = sorted(name for name in {*before, *after} if before.get(name) != after.get(name))
        raise AssertionError(
            f"{case.method} {case.path} was answered {response.status_code} but changed the collections {changed}"
        )
    return True
