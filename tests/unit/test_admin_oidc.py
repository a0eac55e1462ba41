"""The relying party's protocol pieces (admin.oidc): issuers, discovery checked, the authorization request
with PKCE, the token request, and ID tokens validated (signature, iss, aud, exp, nonce), including
Microsoft's multi-tenant issuer. Tokens are signed here with keys made here (joserfc)."""

from __future__ import annotations

import base64
import hashlib
import json
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from joserfc import jwt
from joserfc.errors import InvalidKeyIdError
from joserfc.jwk import OctKey, RSAKey

from skolsynk_services.admin.oidc import (
    Client,
    ProviderKind,
    ProviderMetadata,
    SignInFailed,
    authorization,
    expected_issuer,
    multi_tenant,
    normalise_issuer,
    provider_kind,
    token_request,
    validate_id_token,
)

pytestmark = pytest.mark.unit

ISSUER = "https://idp.example"
CLIENT_ID = "skolsynk-admin"
NONCE = "nonce-1234"
KEY = RSAKey.generate_key(2048, parameters={"kid": "key-1"}, private=True)
OTHER_KEY = RSAKey.generate_key(2048, parameters={"kid": "key-1"}, private=True)
JWKS = {"keys": [KEY.as_dict(private=False)]}
TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
MULTI = "https://login.microsoftonline.com/organizations/v2.0"
TEMPLATE = "https://login.microsoftonline.com/{tenantid}/v2.0"


def discovered(issuer: str = ISSUER, **overrides: Any) -> dict[str, Any]:
    base = "https://idp.example" if issuer == ISSUER else "https://login.microsoftonline.com/organizations"
    return {"issuer": issuer, "authorization_endpoint": f"{base}/authorize", "token_endpoint": f"{base}/token",
            "jwks_uri": f"{base}/keys", "id_token_signing_alg_values_supported": ["RS256"], **overrides}  # fmt: skip


METADATA = ProviderMetadata.of(ISSUER, discovered())


def id_token(key: Any = KEY, alg: str = "RS256", **claims: Any) -> str:
    now = int(time.time())
    payload = {"iss": ISSUER, "sub": "sub-anna", "aud": CLIENT_ID, "iat": now, "exp": now + 300, "nonce": NONCE,
               "email": "anna@alvik.se", **claims}  # fmt: skip
    payload = {k: v for k, v in payload.items() if v is not None}
    return jwt.encode({"alg": alg, "kid": "key-1"}, payload, key)


def unsigned() -> str:
    """A token with ``alg: none`` and no signature."""

    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    now = int(time.time())
    claims = {"iss": ISSUER, "sub": "s", "aud": CLIENT_ID, "iat": now, "exp": now + 300, "nonce": NONCE}
    return f"{part({'alg': 'none', 'kid': 'key-1'})}.{part(claims)}."


def validate(token: str, metadata: ProviderMetadata = METADATA, **options: Any) -> dict[str, Any]:
    return validate_id_token(token, JWKS, metadata=metadata, client_id=CLIENT_ID, nonce=NONCE, **options)


def test_issuers_are_https_except_on_this_machine() -> None:
    assert normalise_issuer("https://accounts.google.com/") == "https://accounts.google.com"
    assert normalise_issuer("http://127.0.0.1:9400") == "http://127.0.0.1:9400"
    assert normalise_issuer("http://localhost:9400") == "http://localhost:9400"
    for bad in ("http://idp.example", "https://idp.example/?tenant=x", "ftp://idp.example", "idp.example"):
        with pytest.raises(ValueError, match="issuer"):
            normalise_issuer(bad)


def test_provider_kinds_and_multi_tenant_issuers() -> None:
    assert provider_kind("https://accounts.google.com") is ProviderKind.GOOGLE
    assert provider_kind(f"https://login.microsoftonline.com/{TENANT}/v2.0") is ProviderKind.MICROSOFT
    assert provider_kind("http://127.0.0.1:9400") is ProviderKind.OIDC
    assert multi_tenant(MULTI)
    assert multi_tenant("https://login.microsoftonline.com/common/v2.0")
    assert not multi_tenant(f"https://login.microsoftonline.com/{TENANT}/v2.0")
    assert not multi_tenant("https://accounts.google.com")


def test_discovery_must_name_the_configured_issuer_and_secure_endpoints() -> None:
    with pytest.raises(SignInFailed, match="discovery_issuer_mismatch"):
        ProviderMetadata.of(ISSUER, discovered("https://evil.example"))
    with pytest.raises(SignInFailed, match="discovery_insecure_endpoint"):
        ProviderMetadata.of(ISSUER, discovered(token_endpoint="http://idp.example/token"))
    with pytest.raises(SignInFailed, match="discovery_incomplete"):
        ProviderMetadata.of(ISSUER, {k: v for k, v in discovered().items() if k != "jwks_uri"})
    # Microsoft's multi-tenant issuers discover a template; a single tenant's must discover itself.
    assert ProviderMetadata.of(MULTI, discovered(TEMPLATE)).issuer == TEMPLATE
    with pytest.raises(SignInFailed):
        ProviderMetadata.of(f"https://login.microsoftonline.com/{TENANT}/v2.0", discovered(TEMPLATE))
    # Neither "none" nor a shared-secret algorithm is ever accepted, whatever the provider announces.
    assert ProviderMetadata.of(ISSUER, discovered(id_token_signing_alg_values_supported=["none", "HS256"])).algorithms \
        == ("RS256",)  # fmt: skip


def test_the_authorization_request_carries_pkce_state_and_nonce() -> None:
    started = authorization(METADATA, CLIENT_ID, "https://admin.example/ui/login/oidc/callback")
    url = urlsplit(started.url)
    assert f"{url.scheme}://{url.netloc}{url.path}" == METADATA.authorization_endpoint
    query = {k: v[0] for k, v in parse_qs(url.query).items()}
    challenge = base64.urlsafe_b64encode(hashlib.sha256(started.code_verifier.encode()).digest()).rstrip(b"=")
    assert query == {
        "response_type": "code", "client_id": CLIENT_ID, "redirect_uri": "https://admin.example/ui/login/oidc/callback",
        "scope": "openid email profile", "state": started.state, "nonce": started.nonce,
        "code_challenge": challenge.decode(), "code_challenge_method": "S256",
    }  # fmt: skip
    assert len(started.code_verifier) >= 43
    again = authorization(METADATA, CLIENT_ID, "https://admin.example/ui/login/oidc/callback")
    assert {again.state, again.nonce, again.code_verifier}.isdisjoint({started.state, started.nonce})


def test_the_token_request_sends_the_verifier_and_authenticates_the_client() -> None:
    headers, body = token_request(METADATA, Client(CLIENT_ID, "s3cret"), code="the-code",
                                  redirect_uri="https://admin.example/cb", code_verifier="v" * 64)  # fmt: skip
    form = {k: v[0] for k, v in parse_qs(body).items()}
    assert form == {"grant_type": "authorization_code", "code": "the-code", "redirect_uri": "https://admin.example/cb",
                    "code_verifier": "v" * 64}  # fmt: skip
    assert headers["Authorization"] == "Basic " + base64.b64encode(f"{CLIENT_ID}:s3cret".encode()).decode()
    post_only = ProviderMetadata.of(ISSUER, discovered(token_endpoint_auth_methods_supported=["client_secret_post"]))
    headers, body = token_request(post_only, Client(CLIENT_ID, "s3cret"), code="c", redirect_uri="r",
                                  code_verifier="v" * 64)  # fmt: skip
    assert "Authorization" not in headers
    assert parse_qs(body)["client_secret"] == ["s3cret"]


def test_a_valid_id_token_gives_its_claims() -> None:
    claims = validate(id_token())
    assert (claims["sub"], claims["email"]) == ("sub-anna", "anna@alvik.se")


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        (lambda: id_token(aud="another-app"), "id_token_invalid_claim"),
        (lambda: id_token(iss="https://evil.example"), "id_token_invalid_claim"),
        (lambda: id_token(nonce="replayed"), "id_token_invalid_claim"),
        (lambda: id_token(nonce=None), "id_token_missing_claim"),
        (lambda: id_token(exp=int(time.time()) - 600), "id_token_expired_token"),
        (lambda: id_token(iat=int(time.time()) + 3600, exp=int(time.time()) + 7200), "id_token_invalid_claim"),
        (lambda: id_token(key=OTHER_KEY), "id_token_signature"),
        (lambda: id_token(key=OctKey.import_key("k" * 32), alg="HS256"), "id_token_signature"),
        (lambda: id_token() + "x", "id_token_signature"),
        (lambda: unsigned(), "id_token_signature"),
    ],
    ids=["audience", "issuer", "nonce", "no-nonce", "expired", "issued-later", "other-key", "hmac", "tampered", "none"],
)
def test_an_id_token_that_does_not_hold_is_refused(token: Any, reason: str) -> None:
    with pytest.raises(SignInFailed) as failed:
        validate(token())
    assert failed.value.reason == reason


def test_a_token_signed_with_an_unknown_key_asks_for_the_keys_again() -> None:
    rotated = RSAKey.generate_key(2048, parameters={"kid": "key-2"}, private=True)
    token = jwt.encode({"alg": "RS256", "kid": "key-2"}, {"iss": ISSUER, "sub": "s", "aud": CLIENT_ID,
                       "exp": int(time.time()) + 60, "iat": int(time.time()), "nonce": NONCE}, rotated)  # fmt: skip
    with pytest.raises(InvalidKeyIdError):
        validate(token)
    assert validate_id_token(token, {"keys": [rotated.as_dict(private=False)]}, metadata=METADATA,
                             client_id=CLIENT_ID, nonce=NONCE)["sub"] == "s"  # fmt: skip


def test_the_access_token_hash_is_checked_when_present() -> None:
    access_token = "the-access-token"
    digest = hashlib.sha256(access_token.encode()).digest()[:16]
    at_hash = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    assert validate(id_token(at_hash=at_hash), access_token=access_token)["sub"] == "sub-anna"
    with pytest.raises(SignInFailed):
        validate(id_token(at_hash=at_hash), access_token="another-token")


def test_microsofts_multi_tenant_issuer_is_the_template_with_the_tokens_directory() -> None:
    metadata = ProviderMetadata.of(MULTI, discovered(TEMPLATE))
    issuer = f"https://login.microsoftonline.com/{TENANT}/v2.0"
    assert expected_issuer(TEMPLATE, {"tid": TENANT}) == issuer
    assert validate(id_token(iss=issuer, tid=TENANT), metadata)["tid"] == TENANT
    # The issuer of another directory than the token says, or none, is refused.
    other = "https://login.microsoftonline.com/99999999-8888-7777-6666-555555555555/v2.0"
    with pytest.raises(SignInFailed):
        validate(id_token(iss=other, tid=TENANT), metadata)
    with pytest.raises(SignInFailed, match="id_token_without_tenant"):
        validate(id_token(iss=issuer), metadata)
    with pytest.raises(SignInFailed, match="id_token_without_tenant"):
        expected_issuer(TEMPLATE, {"tid": "a/../b"})
