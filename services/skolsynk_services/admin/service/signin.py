"""Signing in with Microsoft or Google: the identity providers and account rules operators configure (API
and UI, audited, in effect at once), and the sign-in itself (``begin_sign_in`` sends the browser to the
provider, ``finish_sign_in`` takes it back, validates the ID token and maps the account to a principal)."""

from __future__ import annotations

from dataclasses import dataclass

from skolsynk.logging import get_logger
from skolsynk.storage import Document
from skolsynk.storage.sources import SecretsUnavailable
from skolsynk_services.admin import models
from skolsynk_services.admin.accounts import (
    AccountRule,
    RuleKind,
    RuleRefused,
    SignedInAccount,
    account_of,
    check_rule,
    choose_rule,
    normalise_value,
)
from skolsynk_services.admin.auth import Principal, Role
from skolsynk_services.admin.oidc import (
    Client,
    ProviderMetadata,
    SignInFailed,
    authorization,
    multi_tenant,
    normalise_issuer,
    provider_kind,
)
from skolsynk_services.admin.problems import Conflict, Invalid, NotFound, Unavailable
from skolsynk_services.admin.service.core import AdminCore

log = get_logger(__name__)
#: Account rules per page at most (API and UI).
RULES_PAGE = 100


class SignInRefused(Exception):
    """A sign-in that ends without a session. ``reason``: ``state`` (unknown, used, too old or another
    browser's), ``provider`` (unknown or disabled), ``denied`` (the account or the provider said no),
    ``failed`` (the provider could not be reached or its answer did not validate), ``unmapped`` (no account
    rule). ``account`` names the account for the person signing in (never logged)."""

    def __init__(self, reason: str, *, account: str | None = None, provider: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.account = account
        self.provider = provider


@dataclass(frozen=True)
class SignedIn:
    principal: Principal
    account: SignedInAccount
    next_path: str


def _invalid(field: str, code: str, detail: str) -> Invalid:
    """An invalid field, with a code the UI words in Swedish (``signin.errors.<code>``)."""
    return Invalid(detail, errors=[{"field": field, "message": detail, "code": code}])


def _provider_view(doc: Document, rules: int) -> models.IdentityProvider:
    return models.IdentityProvider(
        provider_id=doc["_id"],
        display_name=doc["display_name"],
        issuer=doc["issuer"],
        kind=provider_kind(doc["issuer"]).value,
        multi_tenant=multi_tenant(doc["issuer"]),
        client_id=doc["client_id"],
        client_secret_stored=bool(doc.get("client_secret")),
        enabled=doc["enabled"],
        rules=rules,
        created_at=doc["created_at"],
        updated_at=doc["updated_at"],
    )


def _rule_view(doc: Document) -> models.AccountRule:
    return models.AccountRule(
        rule_id=doc["_id"],
        provider_id=doc["provider_id"],
        kind=doc["kind"],
        value=doc["value"],
        directory=doc.get("directory"),
        role=doc["role"],
        tenant_id=doc.get("tenant_id"),
        created_by=doc["created_by"],
        created_at=doc["created_at"],
    )


class SignInAdmin(AdminCore):
    # --- identity providers (operators) --------------------------------------------------------------

    async def list_identity_providers(self, principal: Principal) -> list[models.IdentityProvider]:
        principal.require_operator()
        return [
            _provider_view(doc, await self.account_rules.count_for_provider(doc["_id"]))
            for doc in await self.identity_providers.list()
        ]

    async def get_identity_provider(self, principal: Principal, provider_id: str) -> models.IdentityProvider:
        principal.require_operator()
        doc = await self.identity_providers.get(provider_id)
        if doc is None:
            raise NotFound("no identity provider with that id")
        return _provider_view(doc, await self.account_rules.count_for_provider(provider_id))

    def _seal(self, client_secret: str) -> str:
        try:
            return self.secret_box.seal({"client_secret": client_secret})
        except SecretsUnavailable:
            raise Unavailable(
                "client secrets are stored sealed: configure SKOLSYNK_ADMIN_SECRETS_KEY first",
                errors=[{"field": "client_secret", "message": "no secrets key", "code": "secrets_key"}],
            ) from None

    async def create_identity_provider(
        self, principal: Principal, body: models.IdentityProviderIn
    ) -> models.IdentityProvider:
        """A new provider, once its discovery document has been read (a wrong issuer is refused now, not at
        the first sign-in)."""
        principal.require_operator()
        try:
            issuer = normalise_issuer(body.issuer)
        except ValueError as error:
            raise _invalid("issuer", "issuer", str(error)) from None
        if await self.identity_providers.get(body.provider_id) is not None:
            raise Conflict("an identity provider with that id exists already",
                           errors=[{"field": "provider_id", "message": "taken", "code": "provider_taken"}])  # fmt: skip
        try:
            await self.relying_party.metadata(issuer)
        except SignInFailed as failed:
            raise _invalid(
                "issuer", "discovery", f"the issuer's discovery document could not be used ({failed.reason})"
            ) from None
        now = self.clock()
        sealed = self._seal(body.client_secret.get_secret_value())
        doc = {"_id": body.provider_id, "display_name": body.display_name.strip(), "issuer": issuer,
               "client_id": body.client_id.strip(), "client_secret": sealed, "enabled": body.enabled,
               "created_at": now, "updated_at": now, "created_by": principal.subject}  # fmt: skip
        if not await self.identity_providers.create(doc):
            raise Conflict("an identity provider with that id exists already",
                           errors=[{"field": "provider_id", "message": "taken", "code": "provider_taken"}])  # fmt: skip
        await self._audit(principal, None, "identity_provider.create", body.provider_id,
                          after={"issuer": issuer, "client_id": doc["client_id"], "display_name": doc["display_name"],
                                 "enabled": body.enabled})  # fmt: skip
        return _provider_view(doc, 0)

    async def update_identity_provider(
        self, principal: Principal, provider_id: str, body: models.IdentityProviderUpdate
    ) -> models.IdentityProvider:
        """Change what is given; disabling a provider ends the sessions started with it."""
        principal.require_operator()
        changes: Document = {}
        if body.display_name is not None:
            changes["display_name"] = body.display_name.strip()
        if body.client_id is not None:
            changes["client_id"] = body.client_id.strip()
        if body.enabled is not None:
            changes["enabled"] = body.enabled
        if body.client_secret is not None:
            changes["client_secret"] = self._seal(body.client_secret.get_secret_value())
        before = await self.identity_providers.update(provider_id, {**changes, "updated_at": self.clock()})
        if before is None:
            raise NotFound("no identity provider with that id")
        shown = ("display_name", "client_id", "enabled")
        await self._audit(
            principal, None, "identity_provider.update", provider_id,
            before={k: before.get(k) for k in shown if k in changes},
            after={**{k: changes[k] for k in shown if k in changes},
                   **({"client_secret": "replaced"} if "client_secret" in changes else {})},
        )  # fmt: skip
        if body.enabled is False and self.sessions is not None:
            await self.sessions.end_for_provider(provider_id)
        return await self.get_identity_provider(principal, provider_id)

    async def delete_identity_provider(self, principal: Principal, provider_id: str) -> None:
        """Remove a provider with its account rules; its sessions end."""
        principal.require_operator()
        doc = await self.identity_providers.delete(provider_id)
        if doc is None:
            raise NotFound("no identity provider with that id")
        rules = await self.account_rules.delete_for_provider(provider_id)
        if self.sessions is not None:
            await self.sessions.end_for_provider(provider_id)
        await self._audit(principal, None, "identity_provider.delete", provider_id,
                          before={"issuer": doc["issuer"], "rules": rules})  # fmt: skip

    # --- account rules (operators) -------------------------------------------------------------------

    async def list_account_rules(
        self, principal: Principal, *, search: str = "", skip: int = 0, limit: int = RULES_PAGE
    ) -> tuple[list[models.AccountRule], int]:
        """A page of the account rules (paged in the store), filtered by a text in the value, organiser or
        provider; and how many match in all."""
        principal.require_operator()
        skip, limit = max(0, skip), max(1, min(limit, RULES_PAGE))
        docs, total = await self.account_rules.page(search=search.strip()[:200], skip=skip, limit=limit)
        return [_rule_view(d) for d in docs], total

    async def create_account_rule(self, principal: Principal, body: models.AccountRuleIn) -> models.AccountRule:
        """A rule, in effect at the next sign-in; audited for its organiser."""
        principal.require_operator()
        provider = await self.identity_providers.get(body.provider_id)
        if provider is None:
            raise _invalid("provider_id", "unknown_provider", "no identity provider with that id")
        kind, role = RuleKind(body.kind), Role(body.role)
        directory = body.directory.strip().lower() if body.directory and body.directory.strip() else None
        tenant_id = body.tenant_id or None
        try:
            value = normalise_value(kind, body.value)
            check_rule(kind, role, tenant_id, directory, multi=multi_tenant(provider["issuer"]))
        except RuleRefused as refused:
            raise _invalid(refused.field, refused.code, str(refused)) from None
        if tenant_id is not None and await self.tenants.get(tenant_id) is None:
            raise _invalid("tenant_id", "unknown_tenant", "no organiser with that id")
        doc = await self.account_rules.create(provider_id=body.provider_id, kind=kind, value=value,
                                              directory=directory, role=role, tenant_id=tenant_id,
                                              created_by=principal.subject)  # fmt: skip
        if doc is None:
            raise Conflict("the provider has a rule for that account already; remove it first",
                           errors=[{"field": "value", "message": "taken", "code": "rule_taken"}])  # fmt: skip
        await self._audit(principal, tenant_id, "account_rule.create", doc["_id"],
                          after={"provider_id": body.provider_id, "kind": kind.value, "value": value,
                                 "directory": directory, "role": role.value})  # fmt: skip
        return _rule_view(doc)

    async def delete_account_rule(self, principal: Principal, rule_id: str) -> None:
        """Remove a rule; the sessions it let in end at once."""
        principal.require_operator()
        doc = await self.account_rules.delete(rule_id)
        if doc is None:
            raise NotFound("no account rule with that id")
        if self.sessions is not None:
            await self.sessions.end_for_rule(rule_id)
        await self._audit(principal, doc.get("tenant_id"), "account_rule.delete", rule_id,
                          before={"provider_id": doc["provider_id"], "kind": doc["kind"], "value": doc["value"],
                                  "role": doc["role"]})  # fmt: skip

    # --- signing in ----------------------------------------------------------------------------------

    async def sign_in_providers(self) -> list[tuple[str, str]]:
        """(id, display name) of every enabled provider, for the sign-in page."""
        return [(d["_id"], d["display_name"]) for d in await self.identity_providers.list(enabled_only=True)]

    async def begin_sign_in(self, provider_id: str, *, redirect_uri: str, browser: str, next_path: str) -> str:
        """Where to send the browser: the provider's authorization endpoint with a fresh state, nonce and
        PKCE challenge, kept (bound to the browser's ``browser`` secret) until it comes back."""
        provider = await self._enabled_provider(provider_id)
        try:
            metadata = await self.relying_party.metadata(provider["issuer"])
        except SignInFailed as failed:
            log.warning("oidc_signin_failed", provider_id=provider_id, reason=failed.reason)
            raise SignInRefused("failed", provider=provider["display_name"]) from None
        started = authorization(metadata, provider["client_id"], redirect_uri)
        await self.signin_states.start(state=started.state, provider_id=provider_id, nonce=started.nonce,
                                       code_verifier=started.code_verifier, browser=browser,
                                       redirect_uri=redirect_uri, next_path=next_path, now=self.clock())  # fmt: skip
        return started.url

    async def _enabled_provider(self, provider_id: str) -> Document:
        provider = await self.identity_providers.get(provider_id)
        if provider is None or not provider.get("enabled"):
            raise SignInRefused("provider")
        return provider

    async def finish_sign_in(self, *, state: str, code: str | None, error: str | None, browser: str | None) -> SignedIn:
        """The provider's answer: the sign-in ``state`` names (once, in the browser that began it), the code
        exchanged, the ID token validated, the account mapped by the most specific account rule. The sign-in
        is audited for the organiser; refusals are logged with a reason code only."""
        pending = await self.signin_states.take(state, browser, now=self.clock()) if state else None
        if pending is None:
            log.info("oidc_signin_refused", reason="state")
            raise SignInRefused("state")
        provider_id = pending["provider_id"]
        provider = await self._enabled_provider(provider_id)
        name = provider["display_name"]
        if error is not None or not code:
            log.info("oidc_signin_refused", provider_id=provider_id, reason="denied")
            raise SignInRefused("denied", provider=name)
        try:
            secret = self.secret_box.open(provider["client_secret"])["client_secret"]
        except (SecretsUnavailable, KeyError):
            log.error("oidc_signin_failed", provider_id=provider_id, reason="client_secret_unreadable")
            raise SignInRefused("failed", provider=name) from None
        try:
            metadata: ProviderMetadata = await self.relying_party.metadata(provider["issuer"])
            claims = await self.relying_party.finish(
                metadata, Client(provider["client_id"], secret), code=code, redirect_uri=pending["redirect_uri"],
                code_verifier=pending["code_verifier"], nonce=pending["nonce"],
            )  # fmt: skip
        except SignInFailed as failed:
            log.warning("oidc_signin_failed", provider_id=provider_id, reason=failed.reason)
            raise SignInRefused("failed", provider=name) from None
        account = account_of(provider_id, provider_kind(provider["issuer"]), claims)
        rule: AccountRule | None = choose_rule(account, await self.account_rules.candidates(account))
        if rule is None:
            log.info("oidc_signin_refused", provider_id=provider_id, reason="unmapped")
            raise SignInRefused("unmapped", account=account.name, provider=name)
        principal = Principal(account.name, rule.role, rule.tenant_id, provider_id=provider_id, rule_id=rule.rule_id)
        after = {"subject": account.subject, "rule_id": rule.rule_id, "rule": rule.kind.value}
        await self._audit(principal, rule.tenant_id, "signin.oidc", provider_id, after=after)
        log.info("oidc_signed_in", provider_id=provider_id, role=rule.role.value, rule=rule.kind.value)
        return SignedIn(principal, account, pending["next"])
