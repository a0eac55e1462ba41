"""The source registry (collection ``admin_sources``): every source an organiser connected, one
document per (tenant, source), written by the admin service and read by the connectors that serve its
kind. Settings are plain; credentials are sealed with :class:`SecretBox` (or given as references to
secrets held elsewhere) and are never returned by the admin.

Each save bumps the document's ``version``, so a connector that follows the registry can tell what
changed by comparing ``(_id, version)`` pairs (:meth:`SourceStore.versions`) without reading bodies.
"""

from __future__ import annotations

import builtins
import json
from datetime import UTC, datetime
from typing import Any

from cryptography.fernet import Fernet, InvalidToken

from skolsynk.storage.mongo import Database, Document, IndexSpec

ADMIN_SOURCES = "admin_sources"

INDEXES = [
    IndexSpec(ADMIN_SOURCES, [("tenant_id", 1)], name="by_tenant"),
    IndexSpec(ADMIN_SOURCES, [("kind", 1)], name="by_kind"),
]


class SecretsUnavailable(ValueError):
    """Secrets cannot be stored or read: no key is configured, or the stored ones need another key."""


class SecretBox:
    """Seals source credentials at rest (Fernet: AES-128-CBC + HMAC-SHA256) with the installation's key
    (``SKOLSYNK_ADMIN_SECRETS_KEY``); without a key, only secret references can be used."""

    def __init__(self, key: str | None) -> None:
        self._fernet = Fernet(key.encode()) if key else None

    @property
    def enabled(self) -> bool:
        return self._fernet is not None

    def seal(self, secrets: dict[str, str]) -> str:
        if self._fernet is None:
            raise SecretsUnavailable(
                "this installation stores no secrets: give secret references instead "
                "(or configure SKOLSYNK_ADMIN_SECRETS_KEY)"
            )
        return self._fernet.encrypt(json.dumps(secrets, sort_keys=True).encode()).decode()

    def open(self, sealed: str) -> dict[str, str]:
        if self._fernet is None:
            raise SecretsUnavailable("no secrets key configured")
        try:
            opened: dict[str, str] = json.loads(self._fernet.decrypt(sealed.encode()))
        except InvalidToken as error:
            raise SecretsUnavailable("the stored secrets cannot be decrypted with the configured key") from error
        return opened


def utcnow() -> datetime:
    return datetime.now(UTC)


class SourceStore:
    def __init__(self, db: Database, box: SecretBox) -> None:
        self.collection = db[ADMIN_SOURCES]
        self.box = box

    @staticmethod
    def _id(tenant_id: str, source_id: str) -> str:
        return f"{tenant_id}:{source_id}"

    async def save(
        self,
        tenant_id: str,
        source_id: str,
        *,
        kind: str,
        display_name: str,
        settings: dict[str, Any],
        secrets: dict[str, str],
        secret_refs: dict[str, str],
        create: bool,
        enabled: bool = True,
        drop_secrets: builtins.list[str] | tuple[str, ...] = (),
    ) -> Document | None:
        """Create (``create``) or replace a source; None when creating an existing one or replacing a
        missing one. Secrets given replace the stored ones by name; the others are kept. Every save
        gives the source a new ``version`` (and clears the problem a connector reported)."""
        current = await self.collection.find_one({"_id": self._id(tenant_id, source_id)})
        if (current is not None) == create:
            return None
        stored: dict[str, str] = {}
        if current is not None and current.get("sealed"):
            stored = self.box.open(current["sealed"])
        stored.update(secrets)
        for name in (*secret_refs, *drop_secrets):
            stored.pop(name, None)
        doc = {
            "_id": self._id(tenant_id, source_id),
            "tenant_id": tenant_id,
            "source_id": source_id,
            "kind": kind,
            "display_name": display_name,
            "enabled": enabled,
            "settings": settings,
            "secret_refs": secret_refs,
            "secret_names": sorted(stored),
            "sealed": self.box.seal(stored) if stored else None,
            "version": int(current.get("version", 0)) + 1 if current else 1,
            "created_at": current["created_at"] if current else utcnow(),
            "updated_at": utcnow(),
        }
        await self.collection.replace_one({"_id": doc["_id"]}, doc, upsert=True)
        return doc

    async def get(self, tenant_id: str, source_id: str) -> Document | None:
        return await self.collection.find_one({"_id": self._id(tenant_id, source_id)})

    async def list(self, tenant_id: str) -> list[Document]:
        return await self.collection.find({"tenant_id": tenant_id}).sort("source_id", 1).to_list(None)

    async def delete(self, tenant_id: str, source_id: str) -> bool:
        result = await self.collection.delete_one({"_id": self._id(tenant_id, source_id)})
        return result.deleted_count == 1

    # -- what the connectors of a kind read -------------------------------------------------------

    async def versions(self, kind: str) -> dict[str, int]:
        """``"tenant:source" -> version`` of every source of ``kind``: what a connector compares with
        what it serves, to read only the sources added or changed (and drop the ones gone)."""
        cursor = self.collection.find({"kind": kind}, {"version": 1})
        return {str(doc["_id"]): int(doc.get("version", 0)) async for doc in cursor}

    async def of_kind(self, kind: str) -> builtins.list[Document]:
        """Every source of ``kind``, in (tenant, source) order."""
        return await self.collection.find({"kind": kind}).sort("_id", 1).to_list(None)

    async def by_keys(self, keys: builtins.list[str]) -> builtins.list[Document]:
        """The sources of these ``tenant:source`` keys (the ones that exist)."""
        if not keys:
            return []
        return await self.collection.find({"_id": {"$in": keys}}).to_list(None)

    async def report_problem(self, key: str, version: int, problem: str | None) -> None:
        """What the connector serving a source found wrong with this ``version`` of it (a missing secret,
        settings it cannot run), or None when it serves it; shown with the source. A newer save replaces
        the document, so a report about an older version is dropped."""
        update: dict[str, Any] = (
            {"$set": {"problem": {"message": problem, "at": utcnow()}}}
            if problem is not None
            else {"$unset": {"problem": ""}}
        )
        await self.collection.update_one({"_id": key, "version": version}, update)

    async def put(
        self,
        tenant_id: str,
        source_id: str,
        *,
        kind: str,
        display_name: str,
        settings: dict[str, Any],
        secret_refs: dict[str, str],
        dry_run: bool = False,
    ) -> str:
        """Create or update a source from a sources file (secret references only): ``"created"``,
        ``"updated"``, or ``"unchanged"`` when it already says exactly this (no new version: importing
        the same file again changes nothing). A source of another kind under the same id is a
        :class:`ValueError`. Sealed secrets the file now gives as references are dropped."""
        current = await self.get(tenant_id, source_id)
        if current is not None and current.get("kind") != kind:
            raise ValueError(f"{tenant_id}:{source_id} is a {current.get('kind')} source, not {kind}")
        if (
            current is not None
            and current.get("settings") == settings
            and current.get("secret_refs") == secret_refs
            and current.get("enabled", True)
        ):
            return "unchanged"
        if dry_run:  # what it would be, nothing written
            return "updated" if current else "created"
        await self.save(
            tenant_id,
            source_id,
            kind=kind,
            display_name=str(current["display_name"]) if current else display_name,
            settings=settings,
            secrets={},
            secret_refs=secret_refs,
            create=current is None,
        )
        return "updated" if current else "created"

    def secrets_of(self, doc: Document) -> dict[str, str]:
        """The source's sealed secrets, opened (for the connector that serves it; never returned by the
        admin). References (``secret_refs``) are resolved by the connector where they live."""
        sealed = doc.get("sealed")
        return self.box.open(sealed) if sealed else {}
