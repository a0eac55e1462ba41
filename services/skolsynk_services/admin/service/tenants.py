"""Organisers, who may reach them (API tokens) and what was done to them (the audit log)."""

from __future__ import annotations

import secrets

from skolsynk.storage import Document
from skolsynk.storage.sources import SecretsUnavailable
from skolsynk_services.admin import models
from skolsynk_services.admin.auth import Principal, Role
from skolsynk_services.admin.problems import Conflict, Invalid, NotFound, Unavailable
from skolsynk_services.admin.service.core import AdminCore


def _tenant_of(doc: Document) -> models.Tenant:
    return models.Tenant(
        tenant_id=doc["_id"], **{k: doc[k] for k in ("display_name", "organisation_number", "created_at")}
    )


class TenantAdmin(AdminCore):
    # --- organisers --------------------------------------------------------------------------------

    async def list_tenants(self, principal: Principal) -> list[models.Tenant]:
        docs = await self.tenants.list(None if principal.is_operator else principal.tenant_id)
        return [_tenant_of(d) for d in docs]

    async def tenants_page(
        self, principal: Principal, *, search: str = "", skip: int = 0, limit: int = 50
    ) -> tuple[list[models.Tenant], int]:
        """One page of the organisers the principal sees (``search``: part of the id, name or organisation
        number) and how many there are in all."""
        only = None if principal.is_operator else principal.tenant_id
        docs = await self.tenants.list(only, search=search, skip=skip, limit=limit)
        return [_tenant_of(d) for d in docs], await self.tenants.count(only, search=search)

    async def create_tenant(self, principal: Principal, body: models.TenantIn) -> models.Tenant:
        principal.require_operator()
        doc = await self.tenants.create(body.tenant_id, body.display_name, body.organisation_number)
        if doc is None:
            raise Conflict("an organiser with that id exists already")
        await self._audit(principal, body.tenant_id, "tenant.create", body.tenant_id, after=body.model_dump())
        return models.Tenant(
            tenant_id=doc["_id"],
            display_name=doc["display_name"],
            organisation_number=doc["organisation_number"],
            created_at=doc["created_at"],
        )

    async def get_tenant(self, principal: Principal, tenant_id: str) -> models.Tenant:
        doc = await self._tenant(principal, tenant_id)
        return models.Tenant(
            tenant_id=doc["_id"],
            display_name=doc["display_name"],
            organisation_number=doc["organisation_number"],
            created_at=doc["created_at"],
        )

    # --- who is told when deliveries fail ------------------------------------------------------------

    async def get_contacts(self, principal: Principal, tenant_id: str) -> models.Contacts:
        tenant = await self._tenant(principal, tenant_id)
        return models.Contacts(
            notify_emails=[str(a) for a in tenant.get("notify_emails") or []],
            webhook_url=tenant.get("notify_webhook_url"),
        )

    async def set_contacts(self, principal: Principal, tenant_id: str, body: models.ContactsIn) -> models.Contacts:
        tenant = await self._tenant(principal, tenant_id)
        before = [str(a) for a in tenant.get("notify_emails") or []]
        await self.tenants.set_contacts(tenant_id, body.notify_emails)
        if before != body.notify_emails:
            # Addresses are personal data: the audit log records how many, not which.
            await self._audit(
                principal,
                tenant_id,
                "contacts.set",
                tenant_id,
                before={"count": len(before)},
                after={"count": len(body.notify_emails)},
            )
        secret: str | None = None
        if "webhook_url" in body.model_fields_set and body.webhook_url != tenant.get("notify_webhook_url"):
            sealed: str | None = None
            if body.webhook_url is not None:
                secret = secrets.token_urlsafe(32)
                try:
                    sealed = self.secret_box.seal({"webhook_secret": secret})
                except SecretsUnavailable as error:
                    raise Unavailable(str(error)) from None
            await self.tenants.set_webhook(tenant_id, body.webhook_url, sealed)
            await self._audit(principal, tenant_id, "contacts.webhook", tenant_id, after={"set": secret is not None})
        current = await self.get_contacts(principal, tenant_id)
        return current.model_copy(update={"webhook_secret": secret})

    # --- what vendors receive of persons the source says too little about --------------------------

    async def get_privacy(self, principal: Principal, tenant_id: str) -> models.Privacy:
        await self._tenant(principal, tenant_id)
        return models.Privacy(missing_marking=await self.organiser_settings.missing_marking(tenant_id))

    async def set_privacy(self, principal: Principal, tenant_id: str, body: models.PrivacyIn) -> models.Privacy:
        """Store the organiser's choice for persons without a securityMarking and, when it changed, project
        the organiser again: the choice changes every vendor's selection (the mass-deletion guard holds a
        school unit's removals as after any change)."""
        await self._tenant(principal, tenant_id)
        principal.require_change()
        before = await self.organiser_settings.missing_marking(tenant_id)
        if body.missing_marking is not before:
            await self.organiser_settings.set_missing_marking(tenant_id, body.missing_marking)
            await self._audit(
                principal,
                tenant_id,
                "tenant.privacy",
                tenant_id,
                before={"missing_marking": before.value},
                after={"missing_marking": body.missing_marking.value},
            )
            await self._project(tenant_id, "privacy", by=principal, action="tenant.privacy", target=tenant_id)
        return models.Privacy(missing_marking=body.missing_marking)

    async def notifications(self, principal: Principal, tenant_id: str) -> list[models.Notification]:
        await self._tenant(principal, tenant_id)
        return [models.Notification.model_validate(d) for d in await self.notification_log.for_tenant(tenant_id)]

    # --- tokens ------------------------------------------------------------------------------------

    async def create_token(
        self, principal: Principal, tenant_id: str | None, body: models.TokenIn
    ) -> models.TokenCreated:
        """A token of an organiser (``tenant_id``), or an operator token (``tenant_id`` None: operators only).
        Organiser admins create admins and viewers of their own organiser; only operators create operators."""
        principal.require_change()
        role = Role(body.role)
        if tenant_id is None or role is Role.OPERATOR:
            principal.require_operator()
        if tenant_id is not None:
            await self._tenant(principal, tenant_id)
        elif role is not Role.OPERATOR:
            raise Invalid("a token of an organiser admin or viewer is created under its organiser")
        token, record = await self.tokens.create(
            role=role,
            subject=body.subject,
            tenant_id=None if role is Role.OPERATOR else tenant_id,
            created_by=principal.subject,
            days=body.expires_in_days,
        )
        await self._audit(
            principal,
            tenant_id,
            "token.create",
            record["_id"],
            after={"role": role.value, "subject": body.subject, "expires_at": record["expires_at"]},
        )
        return models.TokenCreated(
            token=token,
            token_id=record["_id"],
            role=role.value,
            tenant_id=record["tenant_id"],
            subject=body.subject,
            expires_at=record["expires_at"],
        )

    async def _may_list_tokens(self, principal: Principal, tenant_id: str | None) -> None:
        principal.require_change()  # who holds access is not for viewers
        if tenant_id is None:
            principal.require_operator()
        else:
            await self._tenant(principal, tenant_id)

    async def tokens_page(
        self, principal: Principal, tenant_id: str | None, *, search: str = "", skip: int = 0, limit: int = 50
    ) -> tuple[list[models.TokenInfo], int]:
        """One page of :meth:`list_tokens` (``search``: part of who a token is for, or of its organiser's id)
        and how many there are in all."""
        await self._may_list_tokens(principal, tenant_id)
        now = self.clock()
        records = await self.tokens.list(tenant_id, search=search, skip=skip, limit=limit)
        return [models.TokenInfo.of(d, now) for d in records], await self.tokens.count(tenant_id, search=search)

    async def list_tokens(self, principal: Principal, tenant_id: str | None) -> list[models.TokenInfo]:
        """An organiser's tokens, or (``tenant_id`` None, operators only) every token, operators' first."""
        await self._may_list_tokens(principal, tenant_id)
        now = self.clock()
        records = await self.tokens.list(tenant_id)
        if tenant_id is None:
            records.sort(key=lambda d: (d["tenant_id"] is not None, d["tenant_id"] or ""))
        return [models.TokenInfo.of(d, now) for d in records]

    async def revoke_token(self, principal: Principal, tenant_id: str | None, token_id: str) -> None:
        """Revoke a token of the organiser (or, ``tenant_id`` None, any token: operators only); its UI
        sessions end with it. Revoking an already revoked token is fine; an unknown one is a 404."""
        principal.require_change()
        if tenant_id is None:
            principal.require_operator()
        else:
            await self._tenant(principal, tenant_id)
        record = await self.tokens.get(token_id)
        if record is None or (tenant_id is not None and record["tenant_id"] != tenant_id):
            raise NotFound("no such token for this organiser" if tenant_id else "no such token")
        if await self.tokens.revoke(token_id) is not None:
            await self._audit(principal, record["tenant_id"], "token.revoke", token_id)
        if self.sessions is not None:
            await self.sessions.end_for_token(token_id)

    # --- audit -------------------------------------------------------------------------------------

    async def audit(self, principal: Principal, tenant_id: str | None) -> list[Document]:
        await self._may_read_audit(principal, tenant_id)
        return await self.audit_log.entries(tenant_id)

    async def audit_page(
        self,
        principal: Principal,
        tenant_id: str | None,
        *,
        search: str = "",
        actions: tuple[str, ...] = (),
        skip: int = 0,
        limit: int = 50,
    ) -> tuple[list[Document], int]:
        """One page of the audit log, newest first (``search``: part of who, the organiser, the target or the
        note; ``actions``: the actions that text also names) and how many entries match in all."""
        await self._may_read_audit(principal, tenant_id)
        entries = await self.audit_log.entries(tenant_id, search=search, actions=actions, skip=skip, limit=limit)
        return entries, await self.audit_log.count(tenant_id, search=search, actions=actions)

    async def _may_read_audit(self, principal: Principal, tenant_id: str | None) -> None:
        if tenant_id is None:
            principal.require_operator()
        else:
            await self._tenant(principal, tenant_id)
