"""Schemathesis hooks of the admin fuzz (``tests/connected/test_admin_fuzz.py``), loaded in schemathesis's own
process through ``SCHEMATHESIS_HOOKS``: the check ``nothing_stored_from_rejected_input``.

A write (POST, PUT, PATCH, DELETE) answered 4xx must leave the admin's database as it was: the check reads the
whole (small) database before and after the request and compares. With ``SKOLSYNK_FUZZ_OPLOG=1`` it reads the
oplog entries of the admin's database written while the request was answered instead (for a real replica set:
on the Mongo wire server the oplog is the whole server's, and after a full test run too long to search).
Left out, on purpose: a token's ``last_used_at`` (any authenticated request stamps it, to the minute, accepted
or not; the rate limits and sign-in failures are counted in memory, not stored). The database is named by
``SKOLSYNK_FUZZ_MONGODB_URL`` and ``SKOLSYNK_FUZZ_DATABASE``; without them the check does nothing.
"""

from __future__ import annotations

import json
import os
from typing import Any

import schemathesis
from pymongo import MongoClient
from pymongo.errors import PyMongoError

WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
#: Fields any request may change, accepted or not.
VOLATILE_FIELDS = frozenset({"last_used_at"})

_client: MongoClient[dict[str, Any]] | None = None
_before: dict[int, Any] = {}


def _database() -> Any:
    global _client
    url, name = os.environ.get("SKOLSYNK_FUZZ_MONGODB_URL"), os.environ.get("SKOLSYNK_FUZZ_DATABASE")
    if not url or not name:
        return None
    if _client is None:
        _client = MongoClient(url, tz_aware=True)
    return _client[name]


def _oplog() -> Any:
    assert _client is not None
    return _client["local"]["oplog.rs"]


def _stable(document: dict[str, Any]) -> str:
    return json.dumps({k: v for k, v in document.items() if k not in VOLATILE_FIELDS}, sort_keys=True, default=repr)


def fingerprint(db: Any) -> dict[str, list[str]]:
    """Every document of the admin's database (volatile fields left out), per collection."""
    snapshot = {
        name: sorted(_stable(document) for document in db[name].find({})) for name in db.list_collection_names()
    }
    # An empty collection is no collection (a conditional update that matched nothing may create it).
    return {name: documents for name, documents in snapshot.items() if documents}


def mark(db: Any) -> tuple[str, Any]:
    """Where the database is now: ("oplog", the newest entry's time) or ("snapshot", every document)."""
    # The oplog is the whole server's: after a full test run on the Mongo wire server it is so long that
    # finding its newest entry outlasted the test (seen in CI), so it is read only where asked for
    # (SKOLSYNK_FUZZ_OPLOG=1, e.g. against a real replica set); the admin's own database is small.
    newest = None
    if os.environ.get("SKOLSYNK_FUZZ_OPLOG") == "1":
        try:
            newest = _oplog().find_one({}, {"ts": 1}, sort=[("$natural", -1)])
        except PyMongoError:
            newest = None
    if newest is not None:
        return "oplog", newest["ts"]
    return "snapshot", fingerprint(db)


def _updated_fields(change: dict[str, Any]) -> set[str]:
    """The top-level fields an update entry of the oplog changes: MongoDB's ``diff`` (``u``, ``i``, ``d`` and
    ``s<field>`` for a nested change), the Mongo wire server's (``updatedFields``, ``removedFields``), or the
    older ``$set``/``$unset``; anything else counts as a change of the whole document."""
    diff = change.get("diff")
    if isinstance(diff, dict):
        fields = {f.split(".")[0] for f in [*diff.get("updatedFields", {}), *diff.get("removedFields", [])]}
        fields |= {field for part in ("u", "i", "d") for field in diff.get(part, {})}
        fields |= {key[1:] for key in diff if key.startswith("s") and len(key) > 1}
        truncated = {t.get("field", "").split(".")[0] for t in diff.get("truncatedArrays", [])}
        return fields | truncated or {"(unknown)"}
    if any(key.startswith("$") for key in change if key != "$v"):
        return {field.split(".")[0] for operator in ("$set", "$unset") for field in change.get(operator, {})}
    return {"(replaced)"}


def writes_since(db: Any, before: tuple[str, Any]) -> list[str]:
    """What was written to the database since ``before`` (volatile fields left out)."""
    kind, value = before
    if kind == "snapshot":
        after = fingerprint(db)
        return sorted(name for name in {*value, *after} if value.get(name) != after.get(name))
    found = []
    for entry in _oplog().find({"ts": {"$gt": value}, "ns": {"$regex": f"^{db.name}\\."}}):
        if entry["op"] == "n" or (entry["op"] == "c" and "create" in entry["o"]):
            continue  # a no-op, or an empty collection made (a conditional update that matched nothing may)
        if entry["op"] == "u" and _updated_fields(entry["o"]) <= VOLATILE_FIELDS:
            continue
        found.append(f"{entry['op']} {entry['ns'].split('.', 1)[1]}")
    return found


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    if case.method.upper() in WRITES and (db := _database()) is not None:
        _before[id(case)] = mark(db)


@schemathesis.check
def nothing_stored_from_rejected_input(ctx: Any, response: Any, case: Any) -> bool | None:
    before = _before.pop(id(case), None)
    if before is None or not 400 <= response.status_code < 500:
        return None
    written = writes_since(_database(), before)
    assert not written, f"{case.method} {case.path} was answered {response.status_code} but wrote: {written}"
    return True
