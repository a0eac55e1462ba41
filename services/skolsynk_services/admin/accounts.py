"""Who a signed-in Microsoft or Google account is in skolsynk: the identity providers an operator has
configured, the account rules that give accounts an organiser and a role, and the sign-ins in flight.

An **account rule** names a provider and matches an account by its subject (the ID token's ``sub``), its
e-mail address or its domain; the most specific rule that matches wins (subject, then e-mail, then domain;
at each, a rule bound to the account's Microsoft directory before one that is not). An account that no
rule matches is refused. What can be trusted of an account depends on the provider
(:func:`account_of`):

* **Google**: the e-mail address only when ``email_verified``; the domain only from ``hd``, the Google
  Workspace domain the account belongs to (a personal Google account may carry a verified address at any
  domain, so its e-mail's domain says nothing about the organiser);
* **Microsoft**: the e-mail address (``email``, else a ``preferred_username`` that is one) and its domain,
  within the account's directory (``tid``), which the organiser's own administrators control. For a
  multi-tenant issuer every e-mail and domain rule names the directory (:func:`check_rule`), so an account
  of another directory that claims an organiser's address matches nothing;
* **any other provider**: the e-mail address and its domain only when ``email_verified``.

The role ``operator`` is given only by a subject or e-mail rule, never to a whole domain.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from pymongo.errors import DuplicateKeyError

from skolsynk.storage import Database, Document, IndexSpec
from skolsynk.storage.admin import ADMIN_ACCOUNT_RULES, ADMIN_IDENTITY_PROVIDERS, ADMIN_SIGNIN_STATES
from skolsynk_services.admin.auth import Principal, Role
from skolsynk_services.admin.oidc import ProviderKind

PROVIDERS = ADMIN_IDENTITY_PROVIDERS
RULES = ADMIN_ACCOUNT_RULES
STATES = ADMIN_SIGNIN_STATES
#: How long a sign-in may take at the provider.
SIGNIN_SECONDS = 600
INDEXES = [
    IndexSpec(RULES, [("provider_id", 1), ("kind", 1), ("value", 1), ("directory", 1)], name="one_rule", unique=True),
    IndexSpec(RULES, [("tenant_id", 1)], name="by_tenant"),
    IndexSpec(STATES, [("created_at", 1)], name="expire", expire_after_seconds=SIGNIN_SECONDS),
]
EMAIL = re.compile(r"^[^@\s]{1,64}@([a-z0-9-]{1,63}(?:\.[a-z0-9-]{1,63})+)$")
DOMAIN = re.compile(r"^[a-z0-9-]{1,63}(?:\.[a-z0-9-]{1,63})+$")
#: A Microsoft directory (tenant) id.
DIRECTORY = re.compile(r"^[0-9a-f]{8}-(?:[0-9a-f]{4}-){3}[0-9a-f]{12}$")


def utcnow() -> datetime:
    return datetime.now(UTC)


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class RuleRefused(ValueError):
    """A rule that may not be made: the form ``field`` at fault and a ``code`` (its Swedish text is
    ``signin.errors.<code>`` in the UI's catalogue)."""

    def __init__(self, field: str, code: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.code = code


class RuleKind(StrEnum):
    SUBJECT = "subject"
    EMAIL = "email"
    DOMAIN = "domain"


#: Most specific first.
SPECIFICITY = (RuleKind.SUBJECT, RuleKind.EMAIL, RuleKind.DOMAIN)


@dataclass(frozen=True)
class SignedInAccount:
    """An account as its validated ID token describes it, with only what can be trusted (see the module)."""

    provider_id: str
    subject: str
    email: str | None = None
    domain: str | None = None
    directory: str | None = None

    @property
    def name(self) -> str:
        """How skolsynk names the account (the audit log's actor, the page header)."""
        return self.email or f"{self.provider_id}:{self.subject}"


def account_of(provider_id: str, kind: ProviderKind, claims: dict[str, Any]) -> SignedInAccount:
    """The account a validated ID token's claims describe."""
    subject = str(claims["sub"])
    verified = claims.get("email_verified") is True
    email = _email(claims.get("email"))
    directory = claims.get("tid") if isinstance(claims.get("tid"), str) else None
    if kind is ProviderKind.MICROSOFT:
        email = email or _email(claims.get("preferred_username"))
        return SignedInAccount(provider_id, subject, email, _domain_of(email), directory)
    if kind is ProviderKind.GOOGLE:
        hosted = claims.get("hd")
        domain = hosted.lower() if isinstance(hosted, str) and DOMAIN.match(hosted.lower()) else None
        return SignedInAccount(provider_id, subject, email if verified else None, domain)
    email = email if verified else None
    return SignedInAccount(provider_id, subject, email, _domain_of(email))


def _email(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    value = value.strip().lower()
    return value if EMAIL.match(value) else None


def _domain_of(email: str | None) -> str | None:
    return email.rsplit("@", 1)[1] if email else None


@dataclass(frozen=True)
class AccountRule:
    rule_id: str
    provider_id: str
    kind: RuleKind
    value: str
    directory: str | None
    role: Role
    tenant_id: str | None

    @classmethod
    def of(cls, doc: Document) -> AccountRule:
        return cls(doc["_id"], doc["provider_id"], RuleKind(doc["kind"]), doc["value"], doc.get("directory"),
                   Role(doc["role"]), doc.get("tenant_id"))  # fmt: skip

    def matches(self, account: SignedInAccount) -> bool:
        if self.provider_id != account.provider_id:
            return False
        if self.directory is not None and self.directory != account.directory:
            return False
        if self.role is Role.OPERATOR and self.kind is RuleKind.DOMAIN:
            return False  # never a whole domain of operators, whatever the store holds
        wanted = {RuleKind.SUBJECT: account.subject, RuleKind.EMAIL: account.email, RuleKind.DOMAIN: account.domain}
        return wanted[self.kind] is not None and wanted[self.kind] == self.value


def choose_rule(account: SignedInAccount, rules: Iterable[AccountRule]) -> AccountRule | None:
    """The most specific rule that matches the account (None: the account is refused)."""
    matching = [rule for rule in rules if rule.matches(account)]
    if not matching:
        return None
    return min(matching, key=lambda rule: (SPECIFICITY.index(rule.kind), rule.directory is None))


def normalise_value(kind: RuleKind, value: str) -> str:
    """A rule's value as it is compared: a subject as given, an e-mail address and a domain in lower case
    (a domain without a leading ``@``). RuleRefused says what is wrong."""
    value = value.strip()
    if kind is RuleKind.SUBJECT:
        if not 1 <= len(value) <= 255:
            raise RuleRefused("value", "subject", "a subject is 1 to 255 characters (the ID token's sub)")
        return value
    value = value.lower()
    if kind is RuleKind.EMAIL:
        if not EMAIL.match(value):
            raise RuleRefused("value", "email", "not an e-mail address")
        return value
    value = value.removeprefix("@")
    if not DOMAIN.match(value):
        raise RuleRefused("value", "domain", "not a domain, e.g. alvik.se")
    return value


def check_rule(kind: RuleKind, role: Role, tenant_id: str | None, directory: str | None, *, multi: bool) -> None:
    """Whether a rule may be made (RuleRefused says why not): operators only by subject or e-mail and
    without an organiser, everyone else with one; on a multi-tenant Microsoft provider an e-mail or domain
    rule names the directory its accounts must belong to."""
    if directory is not None and not DIRECTORY.match(directory):
        raise RuleRefused("directory", "directory", "a directory is a Microsoft tenant id (a GUID)")
    if role is Role.OPERATOR:
        if kind is RuleKind.DOMAIN:
            raise RuleRefused(
                "role",
                "operator_domain",
                "the role operator is given to one account (subject or e-mail), never a domain",
            )
        if tenant_id is not None:
            raise RuleRefused("tenant_id", "operator_tenant", "an operator belongs to no organiser")
    elif tenant_id is None:
        raise RuleRefused("tenant_id", "tenant_required", "an organiser admin or viewer belongs to an organiser")
    if multi and kind is not RuleKind.SUBJECT and directory is None:
        raise RuleRefused(
            "directory",
            "directory_required",
            "this provider admits accounts of every Microsoft directory: an e-mail or domain rule names the "
            "directory (tenant id) of the organiser",
        )


class IdentityProviderStore:
    """The providers the sign-in page offers (``client_secret`` sealed by the caller)."""

    def __init__(self, db: Database) -> None:
        self.collection = db[PROVIDERS]

    async def create(self, doc: Document) -> bool:
        try:
            await self.collection.insert_one(doc)
        except DuplicateKeyError:
            return False
        return True

    async def get(self, provider_id: str) -> Document | None:
        return await self.collection.find_one({"_id": provider_id})

    async def list(self, *, enabled_only: bool = False) -> list[Document]:
        criteria = {"enabled": True} if enabled_only else {}
        return await self.collection.find(criteria).sort([("display_name", 1), ("_id", 1)]).to_list(None)

    async def update(self, provider_id: str, changes: Document) -> Document | None:
        """The provider as it was before the change (None: no such provider)."""
        return await self.collection.find_one_and_update({"_id": provider_id}, {"$set": changes})

    async def delete(self, provider_id: str) -> Document | None:
        return await self.collection.find_one_and_delete({"_id": provider_id})


class AccountRuleStore:
    """The account rules; also what a signed-in session is at each request (:meth:`principal_of_session`),
    so a rule's removal takes effect at once."""

    def __init__(self, db: Database) -> None:
        self.collection = db[RULES]

    async def create(
        self,
        *,
        provider_id: str,
        kind: RuleKind,
        value: str,
        directory: str | None,
        role: Role,
        tenant_id: str | None,
        created_by: str,
    ) -> Document | None:
        """The new rule, or None when the provider has a rule for that account already."""
        doc = {"_id": secrets.token_hex(8), "provider_id": provider_id, "kind": kind.value, "value": value,
               "directory": directory, "role": role.value, "tenant_id": tenant_id, "created_by": created_by,
               "created_at": utcnow()}  # fmt: skip
        try:
            await self.collection.insert_one(doc)
        except DuplicateKeyError:
            return None
        return doc

    async def get(self, rule_id: str) -> Document | None:
        return await self.collection.find_one({"_id": rule_id})

    async def page(self, *, search: str = "", skip: int = 0, limit: int = 50) -> tuple[list[Document], int]:
        """One page of the rules (by provider, organiser, kind and value), filtered by a text any of the
        value, organiser or provider contains; and how many match in all."""
        criteria: Document = {}
        if search:
            pattern = {"$regex": re.escape(search), "$options": "i"}
            criteria = {"$or": [{"value": pattern}, {"tenant_id": pattern}, {"provider_id": pattern}]}
        cursor = self.collection.find(criteria).sort([("provider_id", 1), ("tenant_id", 1), ("kind", 1), ("value", 1)])
        return await cursor.skip(skip).limit(limit).to_list(None), await self.collection.count_documents(criteria)

    async def candidates(self, account: SignedInAccount) -> list[AccountRule]:
        """The provider's rules that could match the account (one query); :func:`choose_rule` decides."""
        keys: list[Document] = [{"kind": RuleKind.SUBJECT.value, "value": account.subject}]
        if account.email:
            keys.append({"kind": RuleKind.EMAIL.value, "value": account.email})
        if account.domain:
            keys.append({"kind": RuleKind.DOMAIN.value, "value": account.domain})
        docs = await self.collection.find({"provider_id": account.provider_id, "$or": keys}).to_list(None)
        return [AccountRule.of(doc) for doc in docs]

    async def delete(self, rule_id: str) -> Document | None:
        return await self.collection.find_one_and_delete({"_id": rule_id})

    async def delete_for_provider(self, provider_id: str) -> int:
        result = await self.collection.delete_many({"provider_id": provider_id})
        return result.deleted_count

    async def count_for_provider(self, provider_id: str) -> int:
        return await self.collection.count_documents({"provider_id": provider_id})

    async def principal_of_session(self, session: Document) -> Principal | None:
        doc = await self.collection.find_one({"_id": session["rule_id"]})
        if doc is None:
            return None
        rule = AccountRule.of(doc)
        return Principal(session["subject"], rule.role, rule.tenant_id, provider_id=rule.provider_id,
                         rule_id=rule.rule_id)  # fmt: skip


class SignInStates:
    """Sign-ins in flight, keyed by SHA-256 of the ``state`` sent to the provider; each is bound to the
    browser that started it (SHA-256 of a random cookie) and used once, within ``SIGNIN_SECONDS``."""

    def __init__(self, db: Database) -> None:
        self.collection = db[STATES]

    async def start(
        self, *, state: str, provider_id: str, nonce: str, code_verifier: str, browser: str, redirect_uri: str,
        next_path: str, now: datetime,
    ) -> None:  # fmt: skip
        await self.collection.insert_one(
            {"_id": _digest(state), "provider_id": provider_id, "nonce": nonce, "code_verifier": code_verifier,
             "browser": _digest(browser), "redirect_uri": redirect_uri, "next": next_path, "created_at": now}
        )  # fmt: skip

    async def take(self, state: str, browser: str | None, *, now: datetime) -> Document | None:
        """The sign-in ``state`` names, once; None when unknown, used, too old or started in another browser
        (then it is spent all the same)."""
        doc = await self.collection.find_one_and_delete({"_id": _digest(state)})
        if doc is None or browser is None or not hmac.compare_digest(doc["browser"], _digest(browser)):
            return None
        created = doc["created_at"] if doc["created_at"].tzinfo else doc["created_at"].replace(tzinfo=UTC)
        return doc if now - created <= timedelta(seconds=SIGNIN_SECONDS) else None
