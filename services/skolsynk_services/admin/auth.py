"""Who is asking: API tokens (hashed at rest) that carry a role and, for organiser admins and viewers, a
tenant; and the UI's server-side sessions, started by signing in with a token or with an organiser's
Microsoft or Google account (OpenID Connect, ``admin.oidc`` and ``admin.accounts``).

Tokens look like ``skt_<id>.<secret>``; only SHA-256 of the secret is stored (a 256-bit random
secret needs no slow hash). Every token created has an expiry; its last use is kept (to the minute,
so a busy token costs one write a minute). A :class:`Principal` is what the rest of the service sees,
whatever authenticated it: a token, or a signed-in account whose account rule gave it a role and tenant.

A UI session is a random secret in an HttpOnly cookie (never the API token); the store keeps its
SHA-256 and what it was started with (the token, or the provider, the account's subject and the account
rule), and ends it at logout, after ``idle`` without a request, at ``absolute`` age, or as soon as its
token is revoked or expires or its account rule is removed (docs/admin.md, "Accounts and sessions").
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Protocol

from pymongo.errors import DuplicateKeyError

from skolsynk.storage import Database, Document, IndexSpec
from skolsynk.storage.admin import ADMIN_SESSIONS, ADMIN_TOKENS
from skolsynk_services.admin.problems import Forbidden, Unauthenticated

TOKENS = ADMIN_TOKENS
SESSIONS = ADMIN_SESSIONS
PREFIX = "skt_"
INDEXES = [
    IndexSpec(TOKENS, [("tenant_id", 1)], name="by_tenant"),
    IndexSpec(SESSIONS, [("token_id", 1)], name="by_token"),
    IndexSpec(SESSIONS, [("rule_id", 1)], name="by_account_rule"),
    IndexSpec(SESSIONS, [("provider_id", 1)], name="by_identity_provider"),
    # A session is gone from the store at its absolute end even if nobody asks for it again.
    IndexSpec(SESSIONS, [("expires_at", 1)], name="expire", expire_after_seconds=0),
]
#: A token's last use is written when the stored one is older than this.
LAST_USE_RESOLUTION = timedelta(minutes=1)
#: How long a new token is valid unless its creator says otherwise, and the longest it may be.
DEFAULT_TOKEN_DAYS = 90
MAX_TOKEN_DAYS = 365


def utcnow() -> datetime:
    return datetime.now(UTC)


def _aware(moment: datetime | None) -> datetime | None:
    return moment.replace(tzinfo=UTC) if moment is not None and moment.tzinfo is None else moment


class Role(StrEnum):
    OPERATOR = "operator"  # the platform team: every tenant
    ORGANISER_ADMIN = "organiser_admin"  # an organiser's IT admin: their own tenant
    VIEWER = "viewer"  # reads one organiser's pages and API, changes nothing


@dataclass(frozen=True)
class Principal:
    subject: str  # a user id (never shown in logs; recorded in the audit log)
    role: Role
    tenant_id: str | None
    token_id: str | None = None
    #: Signed in with an identity provider: the provider's id and the account rule that gave role and tenant.
    provider_id: str | None = None
    rule_id: str | None = None

    @property
    def is_operator(self) -> bool:
        return self.role is Role.OPERATOR

    @property
    def may_change(self) -> bool:
        return self.role is not Role.VIEWER

    @property
    def may_see_personal_data(self) -> bool:
        """Names, e-mail addresses and logins (the person page, the data-quality report's names and values,
        GDPR search) are for the organiser's admins and the operators who support them; a viewer reads
        counts, codes and ids."""
        return self.role is not Role.VIEWER

    def require_personal_data(self) -> None:
        if not self.may_see_personal_data:
            raise Forbidden("this token may not see personal data (role viewer)")

    def require_change(self) -> None:
        """Viewers read; only admins and operators change anything."""
        if not self.may_change:
            raise Forbidden("this token may only read (role viewer)")

    def require_tenant(self, tenant_id: str) -> None:
        """Organiser admins reach only their own tenant; operators every tenant."""
        if not self.is_operator and self.tenant_id != tenant_id:
            raise Forbidden("this token is not allowed to see or change that organiser")

    def require_operator(self) -> None:
        if not self.is_operator:
            raise Forbidden("only operators may do this")


class Authenticator(Protocol):
    async def authenticate(self, credential: str) -> Principal | None: ...


class AccountSessions(Protocol):
    """Who a session started by signing in with an identity provider is now (its account rule as it is at
    this request); None when the rule is gone."""

    async def principal_of_session(self, session: Document) -> Principal | None: ...


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _token_record(
    token_id: str,
    secret: str,
    role: Role,
    subject: str,
    tenant_id: str | None,
    created_by: str,
    *,
    now: datetime,
    days: int,
) -> Document:
    """A token as stored: its secret only as a digest."""
    return {
        "_id": token_id,
        "hash": _digest(secret),
        "role": role.value,
        "subject": subject,
        "tenant_id": tenant_id,
        "created_by": created_by,
        "created_at": now,
        "expires_at": now + timedelta(days=days),
        "last_used_at": None,
        "revoked_at": None,
    }


def token_active(record: Document, now: datetime) -> bool:
    """Not revoked and not expired (a token stored before expiries existed has none)."""
    expires_at = _aware(record.get("expires_at"))
    return record.get("revoked_at") is None and (expires_at is None or now < expires_at)


def parse_token(token: str) -> tuple[str, str] | None:
    if not token.startswith(PREFIX) or "." not in token:
        return None
    token_id, secret = token[len(PREFIX) :].split(".", 1)
    if not token_id or not secret:
        return None
    return token_id, secret


class TokenStore:
    def __init__(
        self, db: Database, *, default_days: int = DEFAULT_TOKEN_DAYS, clock: Callable[[], datetime] = utcnow
    ) -> None:
        self.collection = db[TOKENS]
        self.default_days = default_days
        self.clock = clock

    async def create(
        self,
        *,
        role: Role,
        subject: str,
        tenant_id: str | None,
        created_by: str,
        token: str | None = None,
        days: int | None = None,
    ) -> tuple[str, Document]:
        """A new token valid ``days`` (default: the store's); returns the token (shown once) and its stored
        record (without the hash)."""
        if role is not Role.OPERATOR and tenant_id is None:
            raise ValueError("an organiser admin's or viewer's token belongs to a tenant")
        if token is None:
            token_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
            token = f"{PREFIX}{token_id}.{secret}"
        parsed = parse_token(token)
        if parsed is None:
            raise ValueError(f"a token looks like {PREFIX}<id>.<secret>")
        token_id, secret = parsed
        record = _token_record(
            token_id, secret, role, subject, tenant_id, created_by, now=self.clock(), days=days or self.default_days
        )
        await self.collection.replace_one({"_id": token_id}, record, upsert=True)
        return token, {k: v for k, v in record.items() if k != "hash"}

    async def register_bootstrap(self, token: str) -> str:
        """The bootstrap operator token, registered once: ``created`` the first time; ``known`` when the
        store has it; ``revoked`` when it was revoked, which it stays (a restart never brings it back)."""
        parsed = parse_token(token)
        if parsed is None:
            raise ValueError(f"a token looks like {PREFIX}<id>.<secret>")
        token_id, secret = parsed
        record = _token_record(
            token_id, secret, Role.OPERATOR, "bootstrap-operator", None, "bootstrap",
            now=self.clock(), days=self.default_days,
        )  # fmt: skip
        try:
            await self.collection.insert_one(record)
            return "created"
        except DuplicateKeyError:
            existing = await self.collection.find_one({"_id": token_id}, {"revoked_at": 1})
            return "revoked" if existing and existing.get("revoked_at") else "known"

    async def authenticate(self, credential: str) -> Principal | None:
        parsed = parse_token(credential)
        if parsed is None:
            return None
        token_id, secret = parsed
        record = await self.collection.find_one({"_id": token_id, "revoked_at": None})
        if record is None or not hmac.compare_digest(record["hash"], _digest(secret)):
            return None
        now = self.clock()
        if not token_active(record, now):
            return None
        await self._used(record, now)
        return principal_of_token(record)

    async def active(self, token_id: str) -> Principal | None:
        """The principal of a token that is neither revoked nor expired (a session's token, at each request);
        counts as a use."""
        record = await self.collection.find_one({"_id": token_id, "revoked_at": None}, {"hash": 0})
        now = self.clock()
        if record is None or not token_active(record, now):
            return None
        await self._used(record, now)
        return principal_of_token(record)

    async def _used(self, record: Document, now: datetime) -> None:
        last = _aware(record.get("last_used_at"))
        if last is None or now - last >= LAST_USE_RESOLUTION:
            await self.collection.update_one({"_id": record["_id"]}, {"$set": {"last_used_at": now}})

    async def revoke(self, token_id: str) -> Document | None:
        return await self.collection.find_one_and_update(
            {"_id": token_id, "revoked_at": None}, {"$set": {"revoked_at": self.clock()}}
        )

    async def get(self, token_id: str) -> Document | None:
        return await self.collection.find_one({"_id": token_id}, {"hash": 0})

    async def list(
        self, tenant_id: str | None = None, *, search: str = "", skip: int = 0, limit: int = 0
    ) -> list[Document]:
        """The organiser's tokens (``tenant_id`` None: every token, the operators' first, then by organiser),
        oldest first; ``search``: part of who it is for or of the organiser's id; ``limit`` 0: all."""
        order = [("created_at", 1)] if tenant_id is not None else [("tenant_id", 1), ("created_at", 1)]
        cursor = self.collection.find(self._criteria(tenant_id, search), {"hash": 0}).sort(order).skip(max(skip, 0))
        return await (cursor.limit(limit) if limit else cursor).to_list(None)

    async def count(self, tenant_id: str | None = None, *, search: str = "") -> int:
        return await self.collection.count_documents(self._criteria(tenant_id, search))

    @staticmethod
    def _criteria(tenant_id: str | None, search: str) -> dict[str, object]:
        criteria: dict[str, object] = {} if tenant_id is None else {"tenant_id": tenant_id}
        if search:
            pattern = {"$regex": re.escape(search), "$options": "i"}
            criteria["$or"] = [{"subject": pattern}, {"tenant_id": pattern}]
        return criteria


def principal_of_token(record: Document) -> Principal:
    return Principal(record["subject"], Role(record["role"]), record["tenant_id"], record["_id"])


class SessionStore:
    """The UI's signed-in sessions (see the module docstring). ``idle`` and ``absolute`` bound a session;
    the cookie holds only the random secret, the store only its digest."""

    def __init__(
        self,
        db: Database,
        tokens: TokenStore,
        *,
        idle: timedelta,
        absolute: timedelta,
        clock: Callable[[], datetime] = utcnow,
        accounts: AccountSessions | None = None,
    ) -> None:
        self.collection = db[SESSIONS]
        self.tokens = tokens
        self.idle = idle
        self.absolute = absolute
        self.clock = clock
        #: Resolves sessions started with an identity provider (None: only token sessions are resumed).
        self.accounts = accounts

    async def start(self, principal: Principal, *, account_subject: str | None = None) -> str:
        """A new session for a principal that has just signed in, with its token or (``rule_id`` and
        ``provider_id`` set) with an identity provider whose account is ``account_subject`` (its ``sub``,
        kept for the audit log); returns the cookie value."""
        if principal.token_id is None and (principal.rule_id is None or principal.provider_id is None):
            raise ValueError("a session is started with a token or with an account rule of an identity provider")
        secret = secrets.token_urlsafe(32)
        now = self.clock()
        session: Document = {"_id": _digest(secret), "token_id": principal.token_id, "created_at": now,
                             "seen_at": now, "expires_at": now + self.absolute}  # fmt: skip
        if principal.token_id is None:
            session.update(
                provider_id=principal.provider_id,
                rule_id=principal.rule_id,
                subject=principal.subject,
                account_subject=account_subject,
            )
        await self.collection.insert_one(session)
        return secret

    async def resume(self, secret: str) -> Principal | None:
        """The principal of a live session (its idle clock restarts, to the minute); None when the session is
        unknown, ended, idle too long, too old, or its token no longer valid (the session is then ended)."""
        session_id = _digest(secret)
        session = await self.collection.find_one({"_id": session_id})
        if session is None:
            return None
        now = self.clock()
        seen_at, expires_at = _aware(session["seen_at"]), _aware(session["expires_at"])
        assert seen_at is not None
        assert expires_at is not None
        principal: Principal | None = None
        if now - seen_at < self.idle and now < expires_at:
            if session.get("token_id") is not None:
                principal = await self.tokens.active(session["token_id"])
            elif session.get("rule_id") is not None and self.accounts is not None:
                principal = await self.accounts.principal_of_session(session)
        if principal is None:
            await self.collection.delete_one({"_id": session_id})
            return None
        if now - seen_at >= LAST_USE_RESOLUTION:
            await self.collection.update_one({"_id": session_id}, {"$set": {"seen_at": now}})
        return principal

    async def end(self, secret: str) -> None:
        await self.collection.delete_one({"_id": _digest(secret)})

    async def end_for_token(self, token_id: str) -> int:
        """Every session started with a token (when it is revoked)."""
        result = await self.collection.delete_many({"token_id": token_id})
        return result.deleted_count

    async def end_for_rule(self, rule_id: str) -> int:
        """Every session an account rule let in (when the rule is removed)."""
        result = await self.collection.delete_many({"rule_id": rule_id})
        return result.deleted_count

    async def end_for_provider(self, provider_id: str) -> int:
        """Every session started with an identity provider (when it is disabled or removed)."""
        result = await self.collection.delete_many({"provider_id": provider_id})
        return result.deleted_count


def bearer(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, value = authorization.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


async def authenticate(authenticators: list[Authenticator], credential: str | None) -> Principal:
    if credential is None:
        raise Unauthenticated("send an API token as 'Authorization: Bearer <token>'")
    for authenticator in authenticators:
        principal = await authenticator.authenticate(credential)
        if principal is not None:
            return principal
    raise Unauthenticated("the token is unknown, malformed or revoked")
