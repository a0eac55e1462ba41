"""Signing in to the admin UI with an OpenID Connect provider (Microsoft Entra ID, Google): the relying
party's side of the authorization code flow with PKCE, state and nonce.

Authlib does the protocol (the authorization URL with its S256 code challenge, the token request and the
client's authentication at the token endpoint, the ID token's claims: ``iss``, ``aud``, ``exp``, ``iat``,
``nonce``, ``azp``, ``at_hash``) and joserfc, which Authlib builds on, the ID token's signature against the
provider's JWKS. Authlib has no aiohttp client, so this module is the thin glue around them: discovery
(``<issuer>/.well-known/openid-configuration``), the JWKS and the token request over aiohttp, with the
discovery document and the keys cached per issuer (the keys fetched again once when a token names an
unknown key: the provider has rotated them).

Microsoft's multi-tenant issuers (``https://login.microsoftonline.com/{common|organizations}/v2.0``)
discover the issuer ``https://login.microsoftonline.com/{tenantid}/v2.0``: an ID token's ``iss`` must then be
that template with the token's own ``tid``, and the account is of that directory (``tid``), which the account
rules bind e-mail and domain rules to (``admin.accounts``).

Errors are :class:`SignInFailed` with a reason code (for logs and metrics: never a claim's value)."""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, cast
from urllib.parse import urlsplit

import aiohttp
from authlib.common.security import generate_token
from authlib.oauth2.auth import ClientAuth
from authlib.oauth2.client import OAuth2Client
from authlib.oauth2.rfc6749.parameters import prepare_token_request
from authlib.oidc.core import CodeIDToken
from joserfc import jwt
from joserfc.errors import InvalidKeyIdError, JoseError
from joserfc.jwk import KeySet, KeySetSerialization
from joserfc.jws import JWSRegistry

#: What skolsynk asks for: who signed in and their e-mail address.
SCOPE = "openid email profile"
MICROSOFT_HOST = "login.microsoftonline.com"
GOOGLE_ISSUER = "https://accounts.google.com"
#: The tenant segments of Microsoft's issuers that admit accounts of many directories.
MICROSOFT_MULTI_TENANT = frozenset({"common", "organizations", "consumers"})
TENANT_PLACEHOLDER = "{tenantid}"
#: Discovery documents and keys are kept this long (a key the provider has rotated in is fetched at once).
METADATA_SECONDS = 3600.0
#: Clock skew allowed on ``exp``, ``iat`` and ``nbf``.
LEEWAY_SECONDS = 120
HTTP_TIMEOUT_SECONDS = 10.0
#: Signature algorithms accepted on ID tokens (never ``none`` nor a shared-secret HMAC).
ASYMMETRIC = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"})


class SignInFailed(Exception):
    """A sign-in that cannot go on; ``reason`` is a code safe for logs (no personal data)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ProviderKind(StrEnum):
    MICROSOFT = "microsoft"
    GOOGLE = "google"
    OIDC = "oidc"  # any other OpenID provider (a test's local one, an organiser's own)


def normalise_issuer(issuer: str) -> str:
    """The issuer as configured: ``https://`` (``http://`` only on a loopback address, for local tests), no
    query or fragment, no trailing slash. ValueError says what is wrong."""
    issuer = issuer.strip().rstrip("/")
    parts = urlsplit(issuer)
    if parts.query or parts.fragment or not parts.hostname:
        raise ValueError("an issuer is a URL without query or fragment, e.g. https://accounts.google.com")
    if parts.scheme == "http" and _loopback(parts.hostname):
        return issuer
    if parts.scheme != "https":
        raise ValueError("an issuer is an https:// URL")
    return issuer


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def provider_kind(issuer: str) -> ProviderKind:
    host = urlsplit(issuer).hostname
    if host == MICROSOFT_HOST:
        return ProviderKind.MICROSOFT
    if issuer.rstrip("/") == GOOGLE_ISSUER:
        return ProviderKind.GOOGLE
    return ProviderKind.OIDC


def multi_tenant(issuer: str) -> bool:
    """A Microsoft issuer that admits accounts of any directory (``common``, ``organizations``,
    ``consumers``)."""
    path = urlsplit(issuer).path.strip("/").split("/")
    return provider_kind(issuer) is ProviderKind.MICROSOFT and bool(path) and path[0] in MICROSOFT_MULTI_TENANT


def expected_issuer(discovered: str, claims: dict[str, Any]) -> str:
    """The ``iss`` an ID token must carry: the discovered issuer, or for a multi-tenant Microsoft issuer
    (``.../{tenantid}/v2.0``) that template with the token's own directory (``tid``)."""
    if TENANT_PLACEHOLDER not in discovered:
        return discovered
    tid = claims.get("tid")
    if not isinstance(tid, str) or not tid or "/" in tid:
        raise SignInFailed("id_token_without_tenant")
    return discovered.replace(TENANT_PLACEHOLDER, tid)


@dataclass(frozen=True)
class ProviderMetadata:
    """What discovery says about an issuer (the parts the sign-in uses)."""

    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    algorithms: tuple[str, ...]
    auth_methods: tuple[str, ...]

    @classmethod
    def of(cls, configured_issuer: str, document: dict[str, Any]) -> ProviderMetadata:
        """The discovered metadata, checked: its issuer is the configured one (for a multi-tenant Microsoft
        issuer, the ``{tenantid}`` template of it), its endpoints https (or loopback http like the issuer)."""
        discovered = document.get("issuer")
        if not isinstance(discovered, str) or not _issuer_matches(configured_issuer, discovered):
            raise SignInFailed("discovery_issuer_mismatch")
        endpoints = {}
        for name in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
            value = document.get(name)
            if not isinstance(value, str):
                raise SignInFailed("discovery_incomplete")
            try:
                normalise_issuer(value)
            except ValueError:
                raise SignInFailed("discovery_insecure_endpoint") from None
            endpoints[name] = value
        algorithms = tuple(a for a in document.get("id_token_signing_alg_values_supported") or ["RS256"]
                           if a in ASYMMETRIC)  # fmt: skip
        methods = tuple(document.get("token_endpoint_auth_methods_supported") or ["client_secret_basic"])
        return cls(discovered, algorithms=algorithms or ("RS256",), auth_methods=methods, **endpoints)

    @property
    def client_auth_method(self) -> str:
        """How the client secret is sent: HTTP Basic when offered (the default of the specification),
        otherwise in the form."""
        return "client_secret_post" if "client_secret_basic" not in self.auth_methods else "client_secret_basic"


def _issuer_matches(configured: str, discovered: str) -> bool:
    if discovered.rstrip("/") == configured.rstrip("/"):
        return True
    if not multi_tenant(configured):
        return False
    tenant_segment = urlsplit(configured).path.strip("/").split("/")[0]
    return discovered.rstrip("/") == configured.rstrip("/").replace(f"/{tenant_segment}/", f"/{TENANT_PLACEHOLDER}/")


@dataclass(frozen=True)
class Client:
    """skolsynk as registered at the provider."""

    client_id: str
    client_secret: str


@dataclass(frozen=True)
class Authorization:
    """A sign-in started: where to send the browser, and what to keep until it comes back."""

    url: str
    state: str
    nonce: str
    code_verifier: str


def authorization(metadata: ProviderMetadata, client_id: str, redirect_uri: str) -> Authorization:
    """The authorization request: code flow, PKCE (S256), a fresh state and nonce."""
    state, nonce, verifier = generate_token(32), generate_token(32), generate_token(64)
    oauth = OAuth2Client(None, client_id=client_id, scope=SCOPE, redirect_uri=redirect_uri,
                         code_challenge_method="S256")  # fmt: skip
    url, _ = oauth.create_authorization_url(
        metadata.authorization_endpoint, state=state, code_verifier=verifier, nonce=nonce
    )
    return Authorization(url=url, state=state, nonce=nonce, code_verifier=verifier)


def token_request(
    metadata: ProviderMetadata, client: Client, *, code: str, redirect_uri: str, code_verifier: str
) -> tuple[dict[str, str], str]:
    """The headers and form body that exchange the authorization code (with the PKCE verifier)."""
    body = prepare_token_request("authorization_code", code=code, redirect_uri=redirect_uri,
                                 code_verifier=code_verifier)  # fmt: skip
    headers = {"Accept": "application/json", "Content-Type": "application/x-www-form-urlencoded;charset=UTF-8"}
    auth = ClientAuth(client.client_id, client.client_secret, metadata.client_auth_method)
    _, headers, body = auth.prepare("POST", metadata.token_endpoint, headers, body)
    return headers, body


def validate_id_token(
    id_token: str,
    jwks: dict[str, Any],
    *,
    metadata: ProviderMetadata,
    client_id: str,
    nonce: str,
    access_token: str | None = None,
    now: int | None = None,
) -> dict[str, Any]:
    """The claims of an ID token whose signature (one of the provider's keys, an asymmetric algorithm it
    announces), issuer, audience, expiry, issue time, nonce and access-token hash hold; SignInFailed
    otherwise. InvalidKeyIdError passes through: the caller fetches the keys again."""
    registry = JWSRegistry(algorithms=list(metadata.algorithms), strict_check_header=False)
    try:
        token = jwt.decode(id_token, KeySet.import_key_set(cast(KeySetSerialization, jwks)), registry=registry)
    except InvalidKeyIdError:
        raise
    except (JoseError, ValueError) as error:
        raise SignInFailed("id_token_signature") from error
    issuer = expected_issuer(metadata.issuer, token.claims)
    options: dict[str, Any] = {
        "iss": {"essential": True, "value": issuer},
        "aud": {"essential": True, "value": client_id},
        "exp": {"essential": True},
        "nonce": {"essential": True, "value": nonce},
    }
    params = {"nonce": nonce, "client_id": client_id, **({"access_token": access_token} if access_token else {})}
    claims = CodeIDToken(token.claims, token.header, options, params)
    try:
        claims.validate(now=now if now is not None else int(time.time()), leeway=LEEWAY_SECONDS)
    except JoseError as error:
        raise SignInFailed(f"id_token_{getattr(error, 'error', 'invalid')}") from error
    return dict(claims)


class RelyingParty:
    """Discovery, keys and the token request over HTTP, with the discovery documents and keys cached per
    issuer. One per admin process (``close`` at shutdown)."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic, timeout: float = HTTP_TIMEOUT_SECONDS) -> None:
        self.clock = clock
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None
        self._metadata: dict[str, tuple[float, ProviderMetadata]] = {}
        self._keys: dict[str, tuple[float, dict[str, Any]]] = {}
        self._lock = asyncio.Lock()

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def _json(self, method: str, url: str, reason: str, **options: Any) -> dict[str, Any]:
        try:
            async with self._http().request(method, url, allow_redirects=False, **options) as response:
                document = await response.json(content_type=None)
                status = response.status
        except (aiohttp.ClientError, TimeoutError, ValueError) as error:
            raise SignInFailed(f"{reason}_unreachable") from error
        if not isinstance(document, dict):
            raise SignInFailed(f"{reason}_not_json")
        if status >= 400:
            code = document.get("error")
            raise SignInFailed(f"{reason}_{code}" if isinstance(code, str) and code.isidentifier() else reason)
        return document

    async def metadata(self, issuer: str) -> ProviderMetadata:
        """The issuer's discovery document (cached ``METADATA_SECONDS``)."""
        cached = self._metadata.get(issuer)
        if cached is not None and self.clock() - cached[0] < METADATA_SECONDS:
            return cached[1]
        document = await self._json("GET", f"{issuer}/.well-known/openid-configuration", "discovery")
        metadata = ProviderMetadata.of(issuer, document)
        self._metadata[issuer] = (self.clock(), metadata)
        return metadata

    async def keys(self, metadata: ProviderMetadata, *, fresh: bool = False) -> dict[str, Any]:
        cached = self._keys.get(metadata.jwks_uri)
        if not fresh and cached is not None and self.clock() - cached[0] < METADATA_SECONDS:
            return cached[1]
        async with self._lock:
            keys = await self._json("GET", metadata.jwks_uri, "jwks")
            self._keys[metadata.jwks_uri] = (self.clock(), keys)
        return keys

    async def finish(
        self, metadata: ProviderMetadata, client: Client, *, code: str, redirect_uri: str, code_verifier: str,
        nonce: str,
    ) -> dict[str, Any]:  # fmt: skip
        """Exchange the code and return the validated ID token's claims."""
        headers, body = token_request(metadata, client, code=code, redirect_uri=redirect_uri,
                                      code_verifier=code_verifier)  # fmt: skip
        tokens = await self._json("POST", metadata.token_endpoint, "token", data=body, headers=headers)
        id_token = tokens.get("id_token")
        if not isinstance(id_token, str):
            raise SignInFailed("token_without_id_token")
        access_token = tokens.get("access_token") if isinstance(tokens.get("access_token"), str) else None

        def validated(jwks: dict[str, Any]) -> dict[str, Any]:
            return validate_id_token(
                id_token, jwks, metadata=metadata, client_id=client.client_id, nonce=nonce, access_token=access_token
            )

        try:
            return validated(await self.keys(metadata))
        except InvalidKeyIdError:
            try:
                return validated(await self.keys(metadata, fresh=True))
            except InvalidKeyIdError as error:
                raise SignInFailed("id_token_unknown_key") from error
