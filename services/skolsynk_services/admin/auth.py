"""Who is asking: API tokens (hashed at rest) that carry a role and, for organiser admins, a tenant.

Tokens look like ``skt_<id>.<secret>``; only SHA-256 of the secret is stored (a 256-bit random
secret needs no slow hash). A :class:`Principal` is what the rest of the service sees, whatever
authenticated it: an OIDC identity provider fits in by mapping a validated ID/access token's claims
to the same ``Principal`` (subject, role, tenant) in another :class:`Authenticator`.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Protocol

from pymongo.errors import DuplicateKeyError

from skolsynk.storage import Database, Document, IndexSpec
from skolsynk.storage.admin import ADMIN_TOKENS
from skolsynk_services.admin.problems import Forbidden, Unauthenticated

TOKENS = ADMIN_TOKENS
PREFIX = "skt_"
INDEXES = [IndexSpec(TOKENS, [("tenant_id", 1)], name="by_tenant")]


class Role(StrEnum):
    OPERATOR = "operator"  # the platform team: every tenant
    ORGANISER_ADMIN = "organiser_admin"  # an organiser's IT admin: their own tenant


@dataclass(frozen=True)
class Principal:
    subject: str  # a user id (never shown in logs; recorded in the audit log)
    role: Role
    tenant_id: str | None
    token_id: str | None = None

    @property
    def is_operator(self) -> bool:
        return self.role is Role.OPERATOR

    def require_tenant(self, tenant_id: str) -> None:
        """Organiser admins reach only their own tenant; operators every tenant."""
        if not self.is_operator and self.tenant_id != tenant_id:
            raise Forbidden("this token is not allowed to see or change that organiser")

    def require_operator(self) -> None:
        if not self.is_operator:
            raise Forbidden("only operators may do this")


class Authenticator(Protocol):
    async def authenticate(self, credential: str) -> Principal | None: ...


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _token_record(
    token_id: str, secret: str, role: Role, subject: str, tenant_id: str | None, created_by: str
) -> Document:
    """A token as stored: its secret only as a digest."""
    return {
        "_id": token_id,
        "hash": _digest(secret),
        "role": role.value,
        "subject": subject,
        "tenant_id": tenant_id,
        "created_by": created_by,
        "created_at": datetime.now(UTC),
        "revoked_at": None,
    }


def parse_token(token: str) -> tuple[str, str] | None:
    if not token.startswith(PREFIX) or "." not in token:
        return None
    token_id, secret = token[len(PREFIX) :].split(".", 1)
    if not token_id or not secret:
        return None
    return token_id, secret


class TokenStore:
    def __init__(self, db: Database) -> None:
        self.collection = db[TOKENS]

    async def create(
        self, *, role: Role, subject: str, tenant_id: str | None, created_by: str, token: str | None = None
    ) -> tuple[str, Document]:
        """A new token; returns the token (shown once) and its stored record (without the hash)."""
        if role is Role.ORGANISER_ADMIN and tenant_id is None:
            raise ValueError("an organiser admin token belongs to a tenant")
        if token is None:
            token_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
            token = f"{PREFIX}{token_id}.{secret}"
        parsed = parse_token(token)
        if parsed is None:
            raise ValueError(f"a token looks like {PREFIX}<id>.<secret>")
        token_id, secret = parsed
        record = _token_record(token_id, secret, role, subject, tenant_id, created_by)
        await self.collection.replace_one({"_id": token_id}, record, upsert=True)
        return token, {k: v for k, v in record.items() if k != "hash"}

    async def register_bootstrap(self, token: str) -> str:
        """The bootstrap operator token, registered once: ``created`` the first time; ``known`` when the
        store has it; ``revoked`` when it was revoked, which it stays (a restart never brings it back)."""
        parsed = parse_token(token)
        if parsed is None:
            raise ValueError(f"a token looks like {PREFIX}<id>.<secret>")
        token_id, secret = parsed
        record = _token_record(token_id, secret, Role.OPERATOR, "bootstrap-operator", None, "bootstrap")
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
        return Principal(record["subject"], Role(record["role"]), record["tenant_id"], token_id)

    async def revoke(self, token_id: str) -> Document | None:
        return await self.collection.find_one_and_update(
            {"_id": token_id, "revoked_at": None}, {"$set": {"revoked_at": datetime.now(UTC)}}
        )

    async def get(self, token_id: str) -> Document | None:
        return await self.collection.find_one({"_id": token_id}, {"hash": 0})

    async def list(self, tenant_id: str | None = None) -> list[Document]:
        criteria = {} if tenant_id is None else {"tenant_id": tenant_id}
        return await self.collection.find(criteria, {"hash": 0}).sort("created_at", 1).to_list(None)


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
