"""Connected sources (settings and credentials, never returned), sync requests and the runs they made."""

from __future__ import annotations

import uuid

from skolsynk.connectors.sources import SOURCE_KINDS
from skolsynk.contracts.sync import SyncRequested
from skolsynk.messaging import sync_request_routing_key
from skolsynk.storage import Document
from skolsynk.storage.sources import SecretsUnavailable
from skolsynk_services.admin import models
from skolsynk_services.admin.auth import Principal
from skolsynk_services.admin.problems import Conflict, Invalid, NotFound
from skolsynk_services.admin.service.core import AdminCore

PULLED_KINDS = frozenset({models.SourceKind.GOOGLE, models.SourceKind.MICROSOFT, models.SourceKind.SS12000})


def source_view(doc: Document) -> models.Source:
    """A stored source as the API shows it: secret values never leave the store."""
    return models.Source(
        source_id=doc["source_id"],
        kind=doc["kind"],
        display_name=doc["display_name"],
        enabled=doc.get("enabled", True),
        settings=doc["settings"],
        secrets_set=doc.get("secret_names", []),
        secret_refs=doc.get("secret_refs", {}),
        problem=(doc.get("problem") or {}).get("message"),
        problem_at=(doc.get("problem") or {}).get("at"),
        created_at=doc["created_at"],
        updated_at=doc["updated_at"],
    )


class SourceAdmin(AdminCore):
    async def list_sources(self, principal: Principal, tenant_id: str) -> list[models.Source]:
        await self._tenant(principal, tenant_id)
        return [source_view(d) for d in await self.sources.list(tenant_id)]

    async def get_source(self, principal: Principal, tenant_id: str, source_id: str) -> models.Source:
        await self._tenant(principal, tenant_id)
        doc = await self.sources.get(tenant_id, source_id)
        if doc is None:
            raise NotFound(f"no source {source_id!r}")
        return source_view(doc)

    async def save_source(
        self, principal: Principal, tenant_id: str, body: models.SourceIn, *, create: bool
    ) -> models.Source:
        await self._tenant(principal, tenant_id)
        current = await self.sources.get(tenant_id, body.source_id)
        if current is not None and current.get("kind") != body.kind.value:
            raise Conflict(f"the source {body.source_id!r} is of another kind ({current.get('kind')})")
        stored = set((current or {}).get("secret_names", []))
        problems = SOURCE_KINDS[body.kind.value].problems(
            body.settings,
            secret_names=(stored | set(body.secrets)) - set(body.secret_refs),
            secret_refs=body.secret_refs,
        )
        if problems:
            raise Invalid(
                f"the {body.kind.value} source is not complete: {', '.join(p.field for p in problems)}",
                errors=[{"field": p.field, "message": p.message} for p in problems],
            )
        try:
            doc = await self.sources.save(
                tenant_id,
                body.source_id,
                kind=body.kind.value,
                enabled=body.enabled,
                display_name=body.display_name,
                settings=body.settings,
                secrets=body.secrets,
                secret_refs=body.secret_refs,
                create=create,
            )
        except SecretsUnavailable as error:
            raise Invalid(str(error)) from None
        if doc is None:
            raise (
                Conflict(f"a source {body.source_id!r} exists already")
                if create
                else NotFound(f"no source {body.source_id!r}")
            )
        after = source_view(doc).model_dump(mode="json", exclude={"created_at", "updated_at"})
        before = source_view(current).model_dump(mode="json", exclude={"created_at", "updated_at"}) if current else None
        await self._audit(
            principal,
            tenant_id,
            "source.create" if create else "source.update",
            body.source_id,
            before=before,
            after=after,
        )
        return source_view(doc)

    async def delete_source(self, principal: Principal, tenant_id: str, source_id: str) -> None:
        await self._tenant(principal, tenant_id)
        current = await self.sources.get(tenant_id, source_id)
        if current is None or not await self.sources.delete(tenant_id, source_id):
            raise NotFound(f"no source {source_id!r}")
        await self._audit(
            principal, tenant_id, "source.delete", source_id, before=source_view(current).model_dump(mode="json")
        )

    async def request_sync(self, principal: Principal, tenant_id: str, source_id: str, mode: str) -> uuid.UUID:
        await self._tenant(principal, tenant_id)
        doc = await self.sources.get(tenant_id, source_id)
        if doc is None:
            raise NotFound(f"no source {source_id!r}")
        kind = models.SourceKind(doc["kind"])
        if kind not in PULLED_KINDS:
            raise Conflict("an EGIL source pushes its data: ask the organiser's EGIL client to send it")
        if not doc.get("enabled", True):
            raise Conflict("the source is disabled: enable it before asking for a sync")
        problem = (doc.get("problem") or {}).get("message")
        if problem:
            raise Conflict(f"the connector cannot read the source: {problem}")
        message_id = await self._send(
            tenant_id,
            SyncRequested(source_id=source_id, mode=mode, requested_by="admin-ui"),
            self.exchanges.control,
            sync_request_routing_key(kind.value),
        )
        await self._audit(principal, tenant_id, "source.sync", source_id, after={"mode": mode})
        return message_id

    async def runs(self, principal: Principal, tenant_id: str, source_id: str | None = None) -> list[Document]:
        await self._tenant(principal, tenant_id)
        return await self.history.source_runs(tenant_id, source_id=source_id)
