"""Stable identifiers: one UUID per (tenant, source, kind, source key), the same on every re-sync.

The UUID is version 5 in skolsynk's own namespace, so two organisers whose sources happen to use the
same keys (or the same EGIL UUIDs) never share an id, and a vendor sees the same id for a person
for as long as the source keeps its key.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any
from uuid import UUID, uuid5

from skolsynk.domain.ss12000 import EntityKind

#: skolsynk's UUID namespace (uuid5 of the DNS namespace and "skolsynk.org"). Never change it.
SKOLSYNK_NAMESPACE = UUID("476f9e93-9f57-5032-a3eb-55588119eed6")


def entity_id(tenant_id: str, source_id: str, kind: EntityKind | str, key: str) -> UUID:
    return uuid5(SKOLSYNK_NAMESPACE, f"{tenant_id}\x1f{source_id}\x1f{EntityKind(kind).value}\x1f{key}")


def content_hash(data: Any) -> str:
    """A hash of a JSON-able value that ignores key order: equal content, equal hash."""
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()
