"""Service account with domain-wide delegation: the OAuth 2.0 JWT bearer grant (RFC 7523).

The assertion is an RS256 JWT ``{iss: client_email, sub: delegated admin, scope, aud, iat, exp}`` (``aud`` is
always Google's ``https://oauth2.googleapis.com/token``, the one audience Google accepts)
with ``kid`` = the key's ``private_key_id``, posted to the token URL as
``grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer&assertion=...``. The access token is reused until
shortly before it expires.

Signing uses google-auth (``google.auth.crypt.RSASigner``, ``google.auth.jwt.encode``), only for the key and
the JWT: the token request itself is a plain aiohttp POST (google-auth's transports are synchronous).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

import aiohttp
from google.auth import crypt
from google.auth import jwt as google_jwt

from skolsynk.connectors import http
from skolsynk.connectors.http import AccessToken, SourceReadError, TokenCache, access_token, json_or_none
from skolsynk.connectors.sources.google import DIRECTORY_SCOPES as DIRECTORY_SCOPES
from skolsynk.connectors.sources.google import GOOGLE_TOKEN_URL
from skolsynk.connectors.sources.google import REPORTS_SCOPE as REPORTS_SCOPE
from skolsynk.logging import get_logger

if TYPE_CHECKING:
    from skolsynk.connectors.sources.google import SourceConfig

log = get_logger(__name__)
T = TypeVar("T")

JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
ASSERTION_LIFETIME_SECONDS = 3600
#: A token is renewed this long before it expires (at most half its lifetime).
TOKEN_RENEW_MARGIN_SECONDS = 300.0
#: Token endpoint errors that are worth retrying (google-auth treats the same as retryable).
RETRYABLE_TOKEN_ERRORS = frozenset({"internal_failure", "server_error", "temporarily_unavailable"})


class GoogleReadError(SourceReadError):
    """A read that failed for good. ``code`` is short and safe to log and publish (no personal data);
    ``step`` is ``token`` for the token endpoint, else None (the caller names the endpoint)."""

    def __init__(self, code: str, *, step: str | None = None, permanent: bool = False) -> None:
        super().__init__(code)
        self.step = step
        #: A configuration or permission problem: retrying will not help until someone acts.
        self.permanent = permanent

    def qualified(self, endpoint: str) -> str:
        return f"{self.step or endpoint}:{self.code}"


async def attempt(source: SourceConfig, event: str, endpoint: str, work: Callable[[], Awaitable[T]]) -> T | None:
    """``work`` once, for a background loop: a failure is logged as ``event`` (a read error with its code
    qualified by ``endpoint``, anything else with its traceback) and gives ``None``; cancellation passes."""
    try:
        return await work()
    except GoogleReadError as error:
        log.warning(event, tenant_id=source.tenant_id, source_id=source.source_id, code=error.qualified(endpoint))
    except Exception:
        log.exception(event, tenant_id=source.tenant_id, source_id=source.source_id)
    return None


class Retryable(http.Retryable):
    """A transient answer (throttling, 5xx): retried with backoff (Google sends no ``Retry-After``).
    ``code`` says which."""

    def __init__(self, status: int, code: str, *, throttled: bool = False, step: str | None = None) -> None:
        super().__init__(status, message=code)
        self.code = code
        self.throttled = throttled
        self.step = step


def load_signer(info: Mapping[str, Any]) -> crypt.Signer:
    """The signer of a service-account key file's content (``private_key`` PEM, ``private_key_id``)."""
    try:
        signer: crypt.Signer = crypt.RSASigner.from_service_account_info(dict(info))  # type: ignore[no-untyped-call]
    except (KeyError, ValueError, TypeError):
        raise GoogleReadError("invalid_key", step="token", permanent=True) from None
    return signer


def encode_jwt(signer: crypt.Signer, payload: Mapping[str, Any]) -> str:
    """An RS256 JWT of ``payload`` (compact serialisation), ``kid`` = the key's id."""
    token: bytes = google_jwt.encode(signer, dict(payload))  # type: ignore[no-untyped-call]
    return token.decode("ascii")


def _reason(error: object) -> str:
    """A token endpoint ``error`` as a short code (letters, digits, underscores)."""
    text = str(error) if isinstance(error, str) else ""
    cleaned = "".join(c if c.isalnum() or c == "_" else "_" for c in text.lower())[:40]
    return cleaned or "unknown"


class DelegatedCredentials:
    """Access tokens for ``subject`` (the delegated admin) with ``scopes``, cached until shortly before
    they expire. One fetch at a time; callers waiting meanwhile get the same token."""

    def __init__(
        self,
        info: Mapping[str, Any],
        *,
        subject: str,
        scopes: tuple[str, ...],
        token_url: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.signer = load_signer(info)
        self.client_email = str(info["client_email"])
        self.subject = subject
        self.scopes = scopes
        self.token_url = token_url
        self._clock = clock
        self._tokens = TokenCache(renew_margin_seconds=TOKEN_RENEW_MARGIN_SECONDS, clock=clock)

    @property
    def fetched(self) -> int:
        """Tokens fetched so far."""
        return self._tokens.fetched

    def assertion(self) -> str:
        now = int(self._clock())
        claims = {
            "iss": self.client_email,
            "sub": self.subject,
            "scope": " ".join(self.scopes),
            # Google accepts exactly this audience (developers.google.com/identity/protocols/oauth2/
            # service-account: "this value is always https://oauth2.googleapis.com/token"), wherever the
            # token is asked for: token_url only says where to post the assertion.
            "aud": GOOGLE_TOKEN_URL,
            "iat": now,
            "exp": now + ASSERTION_LIFETIME_SECONDS,
        }
        return encode_jwt(self.signer, claims)

    def invalidate(self, token: str) -> None:
        """The API refused ``token``: the next :meth:`token` fetches a new one."""
        self._tokens.invalidate(token)

    async def token(self, session: aiohttp.ClientSession) -> str:
        return await self._tokens.get(lambda: self._fetch(session))

    async def _fetch(self, session: aiohttp.ClientSession) -> AccessToken:
        form = {"grant_type": JWT_BEARER_GRANT, "assertion": self.assertion()}
        async with session.post(self.token_url, data=form, headers={"Accept": "application/json"}) as response:
            body = await json_or_none(response)
            error = body.get("error") if isinstance(body, dict) else None
            if response.status == 429 or response.status >= 500 or error in RETRYABLE_TOKEN_ERRORS:
                code = _reason(error) if error else f"http_{response.status}"
                raise Retryable(response.status, code, step="token")
            if response.status != 200:
                code = _reason(error) if error else f"http_{response.status}"
                raise GoogleReadError(code, step="token", permanent=True)
        token = access_token(body, default_lifetime=3600.0)  # google-auth accepts a string lifetime too
        if token is None:
            raise GoogleReadError("token_missing", step="token")
        log.info("google_token_fetched", expires_in=token[1])
        return token
