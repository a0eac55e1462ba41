"""The Google client against the fake: the delegated JWT assertion, token caching and renewal, and which
answers are retried (throttling by reason, 5xx) and which end the read (permanent 403, auth errors)."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from skolsynk.connectors.sources.google import SourceConfig, parse_sources
from skolsynk_services.google_connector.auth import (
    DIRECTORY_SCOPES,
    DelegatedCredentials,
    GoogleReadError,
    encode_jwt,
    load_signer,
)
from skolsynk_services.google_connector.client import GoogleClient, RetryPolicy, error_reason, snake
from skolsynk_testkit.fakes.google_directory import FakeGoogleDirectory, generate_service_account_key

pytestmark = [pytest.mark.unit, pytest.mark.timeout(30)]

ADMIN = "admin@kommun-a.se"
ATTEMPTS = 4


@pytest.fixture(scope="module")
def key() -> dict[str, str]:
    return generate_service_account_key(client_email="skolsynk@kommun-a.iam.gserviceaccount.com")


@pytest.fixture
async def fake(key: dict[str, str]) -> AsyncIterator[FakeGoogleDirectory]:
    directory = FakeGoogleDirectory(service_account_key=key, admins=[ADMIN], domain="kommun-a.se")
    try:
        await directory.start()
        directory.add_user(ADMIN, "Admin", "A", audit=False)
        yield directory
    finally:
        await directory.stop()


def source(fake: FakeGoogleDirectory, **overrides: Any) -> SourceConfig:
    raw = {
        "tenant_id": "kommun-a",
        "source_id": "google",
        "delegated_admin": ADMIN,
        "service_account": {"key_env": "KEY"},
        "api_base_url": fake.base_url,
        "token_url": fake.token_url,
        "mapping": {
            "school_units": [{"from": "org_units", "path_pattern": "/[^/]+", "school_types": ["GR"]}],
            "roles": [{"role": "student", "org_unit": "/"}],
        },
        **overrides,
    }
    return parse_sources([raw])[0]


@pytest.fixture
async def client(fake: FakeGoogleDirectory, key: dict[str, str]) -> AsyncIterator[tuple[GoogleClient, list[str]]]:
    configured = source(fake)
    credentials = DelegatedCredentials(key, subject=ADMIN, scopes=DIRECTORY_SCOPES, token_url=fake.token_url)
    throttled: list[str] = []
    directory = GoogleClient(
        configured,
        credentials,
        retry=RetryPolicy(attempts=ATTEMPTS, wait_initial_seconds=0.001, wait_max_seconds=0.01),
        on_throttled=throttled.append,
    )
    try:
        await directory.start()
        yield directory, throttled
    finally:
        await directory.close()


def data_requests(fake: FakeGoogleDirectory) -> list[int]:
    return [r.status for r in fake.requests if r.endpoint != "token"]


def test_the_assertion_is_a_delegated_rs256_jwt(key: dict[str, str]) -> None:
    # Posted to another address (a proxy, the fake): the audience is still Google's one.
    credentials = DelegatedCredentials(
        key, subject=ADMIN, scopes=DIRECTORY_SCOPES, token_url="https://token-proxy.example/token", clock=lambda: 1000
    )
    header, claims, signature = (
        json.loads(base64.urlsafe_b64decode(part + "==")) if n < 2 else part
        for n, part in enumerate(credentials.assertion().split("."))
    )
    assert header == {"alg": "RS256", "typ": "JWT", "kid": key["private_key_id"]}
    assert claims == {
        "iss": key["client_email"],
        "sub": ADMIN,
        "scope": " ".join(DIRECTORY_SCOPES),
        "aud": "https://oauth2.googleapis.com/token",
        "iat": 1000,
        "exp": 4600,
    }
    assert signature
    assert encode_jwt(load_signer(key), {"a": 1}).count(".") == 2
    with pytest.raises(GoogleReadError) as raised:
        load_signer({**key, "private_key": "-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n"})
    assert raised.value.qualified("users") == "token:invalid_key"


def test_error_codes() -> None:
    assert snake("userRateLimitExceeded") == "user_rate_limit_exceeded"
    assert snake("backendError") == "backend_error"
    assert snake("forbidden") == "forbidden"
    assert snake("weird reason!") == "weird_reason"
    assert error_reason({"error": {"errors": [{"reason": "quotaExceeded"}]}}) == "quotaExceeded"
    assert error_reason({"error": {"code": 500}}) is None
    assert error_reason("not json") is None


async def test_one_token_for_many_requests_and_a_new_one_after_a_401(
    fake: FakeGoogleDirectory, client: tuple[GoogleClient, list[str]]
) -> None:
    directory, _ = client
    for _ in range(3):
        await directory.org_units()
    assert fake.tokens_issued == 1
    fake.expire_tokens()
    await directory.org_units()
    assert fake.tokens_issued == 2
    assert data_requests(fake)[-2:] == [401, 200]


async def test_a_token_refused_twice_is_an_auth_error(key: dict[str, str]) -> None:
    fake = FakeGoogleDirectory(service_account_key=key, admins=[ADMIN], token_ttl_seconds=0)
    try:
        await fake.start()
        fake.add_user(ADMIN, "A", "A", audit=False)
        credentials = DelegatedCredentials(key, subject=ADMIN, scopes=DIRECTORY_SCOPES, token_url=fake.token_url)
        directory = GoogleClient(source(fake), credentials, retry=RetryPolicy(attempts=2, wait_initial_seconds=0.001))
        await directory.start()
        with pytest.raises(GoogleReadError) as raised:
            await directory.org_units()
        await directory.close()
        assert (raised.value.code, raised.value.permanent) == ("auth_error", True)
        assert data_requests(fake) == [401, 401]
    finally:
        await fake.stop()


@pytest.mark.parametrize(
    ("fault", "code"),
    [
        ("userRateLimitExceeded", "user_rate_limit_exceeded"),
        ("rateLimitExceeded", "rate_limit_exceeded"),
        ("quotaExceeded", "quota_exceeded"),
        ("429", "rate_limit_exceeded"),
    ],
)
async def test_throttling_is_retried_by_reason(
    fake: FakeGoogleDirectory, client: tuple[GoogleClient, list[str]], fault: str, code: str
) -> None:
    directory, throttled = client
    fake.fail_next(ATTEMPTS - 1, fault)
    await directory.org_units()
    assert len(data_requests(fake)) == ATTEMPTS
    assert throttled == [code] * (ATTEMPTS - 1)
    # Beyond the attempts, the read fails with the reason.
    fake.fail_next(ATTEMPTS, fault)
    with pytest.raises(GoogleReadError) as raised:
        await directory.org_units()
    assert raised.value.qualified("orgunits") == f"orgunits:{code}"


@pytest.mark.parametrize(
    ("fault", "code", "retried"),
    [
        ("backendError", "backend_error", True),
        ("internalError", "internal_error", True),
        ("forbidden", "forbidden", False),
        ("notAuthorized", "not_authorized", False),
        ("insufficientPermissions", "insufficient_permissions", False),
    ],
)
async def test_server_errors_are_retried_permanent_403s_are_not(
    fake: FakeGoogleDirectory, client: tuple[GoogleClient, list[str]], fault: str, code: str, retried: bool
) -> None:
    directory, throttled = client
    fake.fail_next(100, fault)
    with pytest.raises(GoogleReadError) as raised:
        await directory.org_units()
    assert raised.value.code == code
    assert raised.value.permanent is not retried
    assert len(data_requests(fake)) == (ATTEMPTS if retried else 1)
    assert throttled == []


@pytest.mark.parametrize(
    ("error", "code", "retried"),
    [("invalid_grant", "invalid_grant", False), ("unauthorized_client", "unauthorized_client", False)],
)
async def test_token_errors_end_the_read(
    fake: FakeGoogleDirectory, client: tuple[GoogleClient, list[str]], error: str, code: str, retried: bool
) -> None:
    directory, _ = client
    fake.fail_token(error)
    with pytest.raises(GoogleReadError) as raised:
        await directory.org_units()
    assert raised.value.qualified("orgunits") == f"token:{code}"
    assert raised.value.permanent
    assert [r.status for r in fake.requests] == [400 if error == "invalid_grant" else 401]


async def test_an_unavailable_token_endpoint_is_retried(
    fake: FakeGoogleDirectory, client: tuple[GoogleClient, list[str]]
) -> None:
    directory, _ = client
    fake.fail_token("temporarily_unavailable", count=2)
    await directory.org_units()
    assert [r.status for r in fake.requests] == [503, 503, 200, 200]


async def test_paging_follows_next_page_token(
    fake: FakeGoogleDirectory, client: tuple[GoogleClient, list[str]]
) -> None:
    directory, _ = client
    fake.add_org_unit("/Elever")
    for n in range(7):
        fake.add_user(f"e{n}@kommun-a.se", "E", "E", org_unit_path="/Elever", audit=False)
    small = directory.source.model_copy(update={"page_size": 3})
    directory.source = small
    pages = [
        [u["id"] for u in page]
        async for page in directory.users(query="orgUnitPath='/Elever'", projection="basic", custom_field_mask=[])
    ]
    assert [len(p) for p in pages] == [3, 3, 1]
    users = [r for r in fake.requests if r.endpoint == "users"]
    assert "pageToken" not in users[0].query
    assert all(r.query["query"] == ["orgUnitPath='/Elever'"] for r in users)
    assert all("pageToken" in r.query for r in users[1:])
    # An empty listing (no "users" key at all) is one empty page.
    fake.add_org_unit("/Tom")
    pages = [
        page async for page in directory.users(query="orgUnitPath='/Tom'", projection="basic", custom_field_mask=[])
    ]
    assert pages == [[]]
