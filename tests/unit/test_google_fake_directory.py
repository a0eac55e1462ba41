"""The fake Google Directory/Reports API and token endpoint: JWT validation, bearer checks, paging, the
search language, projections, groups and members, audit events, and Google's error shapes."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from skolsynk_testkit.fakes.google_directory import (
    ALL_SCOPES,
    GOOGLE_TOKEN_URI,
    JWT_BEARER_GRANT,
    SCOPE_PREFIX,
    FakeGoogleDirectory,
    generate_service_account_key,
    parse_query,
)

pytestmark = [pytest.mark.unit, pytest.mark.timeout(30)]

ADMIN = "admin@demo.skolsynk.example"
SA_EMAIL = "skolsynk@project.iam.gserviceaccount.com"
USERS = "/admin/directory/v1/users"


@pytest.fixture(scope="module")
def key() -> dict[str, str]:
    return generate_service_account_key(client_email=SA_EMAIL)


@pytest.fixture
async def fake(key: dict[str, str]) -> AsyncIterator[FakeGoogleDirectory]:
    directory = FakeGoogleDirectory(service_account_key=key, admins=[ADMIN])
    try:
        await directory.start()
        directory.add_user(ADMIN, "Admin", "Istrator", audit=False)
        yield directory
    finally:
        await directory.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def assertion(key: dict[str, str], aud: str = GOOGLE_TOKEN_URI, **overrides: Any) -> str:
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": key["client_email"],
        "sub": ADMIN,
        "scope": " ".join(sorted(ALL_SCOPES)),
        "aud": aud,
        "iat": now,
        "exp": now + 3600,
        **overrides,
    }
    claims = {k: v for k, v in claims.items() if v is not None}
    header = {"alg": "RS256", "typ": "JWT", "kid": key["private_key_id"]}
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}".encode()
    private = serialization.load_pem_private_key(key["private_key"].encode(), password=None)
    assert isinstance(private, rsa.RSAPrivateKey)
    return f"{signing_input.decode()}.{b64(private.sign(signing_input, padding.PKCS1v15(), hashes.SHA256()))}"


async def token_request(http: aiohttp.ClientSession, fake: FakeGoogleDirectory, jwt: str) -> tuple[int, Any]:
    form = {"grant_type": JWT_BEARER_GRANT, "assertion": jwt}
    async with http.post(fake.token_url, data=form) as response:
        return response.status, await response.json()


async def get(
    http: aiohttp.ClientSession, fake: FakeGoogleDirectory, path: str, params: dict[str, str], token: str
) -> tuple[int, Any, Any]:
    headers = {"Authorization": f"Bearer {token}"}
    async with http.get(fake.base_url + path, params=params, headers=headers) as response:
        return response.status, await response.json(), response.headers


def admin_token(fake: FakeGoogleDirectory) -> str:
    return fake.issue_token(ADMIN)


# --- token endpoint --------------------------------------------------------------------------------


async def test_a_valid_assertion_gets_a_token(
    fake: FakeGoogleDirectory, http: aiohttp.ClientSession, key: dict[str, str]
) -> None:
    status, body = await token_request(http, fake, assertion(key, GOOGLE_TOKEN_URI))
    assert status == 200
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 3599
    status, _, _ = await get(http, fake, USERS, {"customer": "my_customer"}, body["access_token"])
    assert status == 200


@pytest.mark.parametrize(
    ("overrides", "status", "error", "description"),
    [
        ({"aud": "https://elsewhere.example/token"}, 400, "invalid_grant", "audience"),
        # The address the token is asked for is not an audience Google accepts: only its fixed one is.
        ({"aud": "FAKE_TOKEN_URL"}, 400, "invalid_grant", "audience"),
        ({"exp": int(time.time()) + 7200}, 400, "invalid_grant", "short-lived"),
        ({"iat": int(time.time()) - 7200, "exp": int(time.time()) - 3600}, 400, "invalid_grant", "short-lived"),
        ({"iss": "someone@else.iam.gserviceaccount.com"}, 400, "invalid_grant", "account not found"),
        ({"sub": "nobody@demo.skolsynk.example"}, 400, "invalid_grant", "Invalid email or User ID"),
        ({"scope": SCOPE_PREFIX + "drive"}, 400, "invalid_scope", "Invalid OAuth scope"),
    ],
)
async def test_bad_assertions_are_refused_like_google(
    fake: FakeGoogleDirectory,
    http: aiohttp.ClientSession,
    key: dict[str, str],
    overrides: dict[str, Any],
    status: int,
    error: str,
    description: str,
) -> None:
    if overrides.get("aud") == "FAKE_TOKEN_URL":
        overrides = {**overrides, "aud": fake.token_url}
    code, body = await token_request(http, fake, assertion(key, **overrides))
    assert (code, body["error"]) == (status, error)
    assert description in body["error_description"]


async def test_signature_and_grant_type_are_checked(
    fake: FakeGoogleDirectory, http: aiohttp.ClientSession, key: dict[str, str]
) -> None:
    other = generate_service_account_key(client_email=SA_EMAIL)
    forged = assertion({**other, "private_key_id": key["private_key_id"]}, fake.token_url)
    status, body = await token_request(http, fake, forged)
    assert (status, body["error"], body["error_description"]) == (400, "invalid_grant", "Invalid JWT Signature.")
    head, claims, signature = assertion(key, GOOGLE_TOKEN_URI).split(".")
    tampered = json.loads(base64.urlsafe_b64decode(claims + "=="))
    tampered["sub"] = "someone-else@demo.skolsynk.example"
    status, body = await token_request(http, fake, f"{head}.{b64(json.dumps(tampered).encode())}.{signature}")
    assert body["error_description"] == "Invalid JWT Signature."
    async with http.post(fake.token_url, data={"grant_type": "client_credentials"}) as response:
        assert response.status == 400
        assert (await response.json())["error"] == "unsupported_grant_type"


async def test_domain_wide_delegation_allow_list(
    fake: FakeGoogleDirectory, http: aiohttp.ClientSession, key: dict[str, str]
) -> None:
    fake.set_delegated_scopes(SA_EMAIL, [SCOPE_PREFIX + "admin.directory.user.readonly"])
    status, body = await token_request(http, fake, assertion(key, GOOGLE_TOKEN_URI))
    assert (status, body["error"]) == (401, "unauthorized_client")
    narrow = assertion(key, GOOGLE_TOKEN_URI, scope=SCOPE_PREFIX + "admin.directory.user.readonly")
    status, body = await token_request(http, fake, narrow)
    assert status == 200
    # The token works for users, but not for groups (insufficientPermissions).
    status, _, _ = await get(http, fake, USERS, {"customer": "my_customer"}, body["access_token"])
    assert status == 200
    status, error, _ = await get(
        http, fake, "/admin/directory/v1/groups", {"customer": "my_customer"}, body["access_token"]
    )
    assert status == 403
    assert error["error"]["errors"][0]["reason"] == "insufficientPermissions"


async def test_forced_token_errors(fake: FakeGoogleDirectory, http: aiohttp.ClientSession, key: dict[str, str]) -> None:
    fake.fail_token("unauthorized_client", count=1)
    status, body = await token_request(http, fake, assertion(key, GOOGLE_TOKEN_URI))
    assert (status, body["error"]) == (401, "unauthorized_client")
    status, body = await token_request(http, fake, assertion(key, GOOGLE_TOKEN_URI))
    assert status == 200
    fake.fail_token("temporarily_unavailable")
    status, body = await token_request(http, fake, assertion(key, GOOGLE_TOKEN_URI))
    assert (status, body["error"]) == (503, "temporarily_unavailable")


async def test_bearer_checks(fake: FakeGoogleDirectory, http: aiohttp.ClientSession, key: dict[str, str]) -> None:
    params = {"customer": "my_customer"}
    status, body, headers = await get(http, fake, USERS, params, "ya29.unknown")
    assert status == 401
    assert body["error"]["errors"][0]["reason"] == "authError"
    assert body["error"]["status"] == "UNAUTHENTICATED"
    assert "WWW-Authenticate" in headers
    token = admin_token(fake)
    fake.expire_tokens()
    status, body, _ = await get(http, fake, USERS, params, token)
    assert status == 401
    # A user that is not an admin, and a token without sub: 403 forbidden.
    fake.add_user("teacher@demo.skolsynk.example", "T", "T", audit=False)
    for subject in ("teacher@demo.skolsynk.example", None):
        status, body, _ = await get(http, fake, USERS, params, fake.issue_token(subject))
        assert status == 403
        assert body["error"]["errors"][0]["reason"] == "forbidden"
        assert body["error"]["message"] == "Not Authorized to access this resource/api"


# --- users.list ------------------------------------------------------------------------------------


def fill(fake: FakeGoogleDirectory, count: int, path: str = "/Skolor/A/Elever") -> list[dict[str, Any]]:
    fake.add_org_unit(path)
    return [
        fake.add_user(
            f"elev{n}@demo.skolsynk.example",
            f"Elev{n}",
            "Testsson",
            org_unit_path=path,
            custom_schemas={"SS12000": {"Arskurs": str(n % 9 + 1)}, "Other": {"X": "y"}},
            audit=False,
        )
        for n in range(count)
    ]


async def test_paging_tokens_are_opaque_and_bound_to_the_query(
    fake: FakeGoogleDirectory, http: aiohttp.ClientSession
) -> None:
    fill(fake, 12)
    token = admin_token(fake)
    params = {"customer": "my_customer", "maxResults": "5", "query": "orgUnitPath=/Skolor"}
    seen: list[str] = []
    status, body, _ = await get(http, fake, USERS, params, token)
    pages = [body]
    while "nextPageToken" in body:
        assert status == 200
        status, body, _ = await get(http, fake, USERS, {**params, "pageToken": body["nextPageToken"]}, token)
        pages.append(body)
    seen = [u["id"] for p in pages for u in p["users"]]
    assert [len(p["users"]) for p in pages] == [5, 5, 2]
    assert len(set(seen)) == 12
    assert "nextPageToken" not in pages[-1]
    assert pages[0]["kind"] == "admin#directory#users"
    assert all(u["kind"] == "admin#directory#user" and u["etag"] for u in pages[0]["users"])
    # The token does not say where it points, and works only with the same parameters.
    status, body, _ = await get(http, fake, USERS, params, token)
    page_token = body["nextPageToken"]
    assert not page_token.isdigit()
    status, body, _ = await get(http, fake, USERS, {**params, "maxResults": "6", "pageToken": page_token}, token)
    assert status == 400
    fake.expire_page_tokens()
    status, body, _ = await get(http, fake, USERS, {**params, "pageToken": page_token}, token)
    assert status == 400


async def test_empty_results_omit_the_array_and_limits_are_clamped(
    fake: FakeGoogleDirectory, http: aiohttp.ClientSession
) -> None:
    fill(fake, 3)
    fake.add_org_unit("/Tom")
    token = admin_token(fake)
    status, body, _ = await get(http, fake, USERS, {"customer": "my_customer", "query": "orgUnitPath=/Tom"}, token)
    assert status == 200
    assert "users" not in body
    assert "nextPageToken" not in body
    status, body, _ = await get(http, fake, USERS, {"customer": "my_customer", "maxResults": "9999"}, token)
    assert len(body["users"]) == 4
    status, body, _ = await get(http, fake, USERS, {"customer": "my_customer", "maxResults": "0"}, token)
    assert len(body["users"]) == 1
    status, body, _ = await get(http, fake, USERS, {}, token)
    assert status == 400
    status, body, _ = await get(http, fake, USERS, {"customer": "C0other"}, token)
    assert status == 400
    status, body, _ = await get(
        http, fake, USERS, {"customer": "my_customer", "query": "orgUnitPath=/Finns/Inte"}, token
    )
    assert status == 400
    assert "INVALID_OU_ID" in body["error"]["message"]


async def test_search_language_subset(fake: FakeGoogleDirectory, http: aiohttp.ClientSession) -> None:
    users = fill(fake, 4)
    fake.add_org_unit("/Skolor/B Skola/Åk 7")
    special = fake.add_user(
        "o.brien@demo.skolsynk.example",
        "Liam",
        "O'Brien",
        org_unit_path="/Skolor/B Skola/Åk 7",
        external_ids=[{"value": "X-17", "type": "organization"}],
        audit=False,
    )
    fake.suspend_user(users[0]["id"], audit=False)
    fake.archive_user(users[1]["id"], audit=False)
    token = admin_token(fake)

    async def ids(query: str) -> set[str]:
        status, body, _ = await get(http, fake, USERS, {"customer": "my_customer", "query": query}, token)
        assert status == 200, body
        return {u["id"] for u in body.get("users", [])}

    everyone = {u["id"] for u in users} | {special["id"]}
    assert await ids("orgUnitPath=/Skolor") == everyone
    assert await ids("orgUnitPath=/") == everyone | {fake._user(ADMIN)["id"]}
    assert await ids("orgUnitPath='/Skolor/B Skola'") == {special["id"]}
    assert await ids("orgUnitPath='/skolor/b skola/åk 7'") == {special["id"]}
    assert await ids("orgUnitPath=/Skolor isSuspended=false isArchived=false") == everyone - {
        users[0]["id"],
        users[1]["id"],
    }
    assert await ids("isSuspended=true") == {users[0]["id"]}
    assert await ids("familyName='O\\'Brien'") == {special["id"]}
    assert await ids("email:o.bri*") == {special["id"]}
    assert await ids("externalId=X-17") == {special["id"]}
    assert await ids("SS12000.Arskurs=2") == {users[1]["id"]}
    for bad in ("shoeSize=44", "orgUnitPath:/Skolor", "isSuspended=maybe", "=x"):
        status, body, _ = await get(http, fake, USERS, {"customer": "my_customer", "query": bad}, token)
        assert status == 400, bad
        assert body["error"]["errors"][0]["reason"] == "invalid"
    assert parse_query("a.b='x y' c=1") == [("a.b", "=", "x y"), ("c", "=", "1")]


async def test_projections_and_deleted_users(fake: FakeGoogleDirectory, http: aiohttp.ClientSession) -> None:
    users = fill(fake, 2)
    token = admin_token(fake)
    base = {"customer": "my_customer", "query": "orgUnitPath=/Skolor"}

    async def schemas(**params: str) -> Any:
        status, body, _ = await get(http, fake, USERS, {**base, **params}, token)
        assert status == 200
        return [u.get("customSchemas") for u in body["users"]]

    assert await schemas() == [None, None]
    assert await schemas(projection="full") == [u["customSchemas"] for u in users]
    assert await schemas(projection="custom", customFieldMask="SS12000") == [
        {"SS12000": u["customSchemas"]["SS12000"]} for u in users
    ]
    status, _, _ = await get(http, fake, USERS, {**base, "projection": "custom"}, token)
    assert status == 400
    fake.delete_user(users[0]["id"], audit=False)
    status, body, _ = await get(http, fake, USERS, {**base, "showDeleted": "true"}, token)
    assert [u["id"] for u in body["users"]] == [users[0]["id"]]
    assert body["users"][0]["deletionTime"].endswith("Z")


# --- orgunits, groups, members --------------------------------------------------------------------


async def test_orgunits_list_types(fake: FakeGoogleDirectory, http: aiohttp.ClientSession) -> None:
    fake.add_org_unit("/Skolor/Norr/Elever", description="Skolenhetskod 12345678")
    token = admin_token(fake)
    path = f"/admin/directory/v1/customer/{fake.customer_id}/orgunits"
    status, body, _ = await get(http, fake, path, {"type": "all"}, token)
    assert status == 200
    assert [u["orgUnitPath"] for u in body["organizationUnits"]] == ["/Skolor", "/Skolor/Norr", "/Skolor/Norr/Elever"]
    leaf = body["organizationUnits"][2]
    assert leaf["parentOrgUnitPath"] == "/Skolor/Norr"
    assert leaf["parentOrgUnitId"] == body["organizationUnits"][1]["orgUnitId"]
    assert leaf["description"] == "Skolenhetskod 12345678"
    assert "description" not in body["organizationUnits"][1]
    status, body, _ = await get(http, fake, path, {}, token)
    assert [u["orgUnitPath"] for u in body["organizationUnits"]] == ["/Skolor"]
    status, body, _ = await get(http, fake, path, {"orgUnitPath": "/Skolor/Norr", "type": "allIncludingParent"}, token)
    assert [u["orgUnitPath"] for u in body["organizationUnits"]] == ["/Skolor/Norr", "/Skolor/Norr/Elever"]
    status, body, _ = await get(http, fake, path, {"orgUnitPath": "/Skolor/Norr/Elever"}, token)
    assert "organizationUnits" not in body


async def test_groups_and_members_with_paging_and_nesting(
    fake: FakeGoogleDirectory, http: aiohttp.ClientSession
) -> None:
    users = fill(fake, 5)
    token = admin_token(fake)
    klass = fake.add_group("klass-7a@grupper.demo.skolsynk.example", "7A")
    staff = fake.add_group("larare@demo.skolsynk.example", "Lärare")
    for user in users[:3]:
        fake.add_member(klass["id"], user["id"], audit=False)
    fake.add_member(staff["id"], users[4]["id"], audit=False)
    fake.add_member(klass["id"], staff["id"], role="OWNER", audit=False)
    fake.suspend_user(users[2]["id"], audit=False)
    status, body, _ = await get(
        http, fake, "/admin/directory/v1/groups", {"customer": "my_customer", "maxResults": "1"}, token
    )
    assert status == 200
    assert len(body["groups"]) == 1
    assert "nextPageToken" in body
    members_path = f"/admin/directory/v1/groups/{klass['email']}/members"
    status, body, _ = await get(http, fake, members_path, {"maxResults": "2"}, token)
    assert len(body["members"]) == 2
    status, body, _ = await get(
        http, fake, members_path, {"maxResults": "2", "pageToken": body["nextPageToken"]}, token
    )
    assert len(body["members"]) == 2
    assert "nextPageToken" not in body
    status, body, _ = await get(http, fake, members_path, {}, token)
    kinds = {m["id"]: (m["type"], m["role"], m["status"]) for m in body["members"]}
    assert kinds[staff["id"]] == ("GROUP", "OWNER", "ACTIVE")
    assert kinds[users[2]["id"]] == ("USER", "MEMBER", "SUSPENDED")
    assert users[4]["id"] not in kinds
    status, body, _ = await get(http, fake, members_path, {"includeDerivedMembership": "true"}, token)
    assert users[4]["id"] in {m["id"] for m in body["members"]}
    status, body, _ = await get(http, fake, members_path, {"roles": "OWNER"}, token)
    assert [m["id"] for m in body["members"]] == [staff["id"]]
    status, body, _ = await get(http, fake, "/admin/directory/v1/groups/nosuch/members", {}, token)
    assert status == 404
    assert body["error"]["errors"][0]["reason"] == "notFound"


# --- reports ---------------------------------------------------------------------------------------


async def test_admin_activities_shape_and_filters(fake: FakeGoogleDirectory, http: aiohttp.ClientSession) -> None:
    users = fill(fake, 2)
    fake.add_org_unit("/Skolor/B/Elever")
    fake.suspend_user(users[0]["id"])
    fake.move_user(users[1]["id"], "/Skolor/B/Elever")
    fake.event_lag_seconds = 3600
    fake.delete_user(users[0]["id"])  # recorded, but not visible for an hour
    token = fake.issue_token(ADMIN, [SCOPE_PREFIX + "admin.reports.audit.readonly"])
    path = "/admin/reports/v1/activity/users/all/applications/admin"
    status, body, _ = await get(http, fake, path, {"startTime": "2000-01-01T00:00:00Z"}, token)
    assert status == 200
    names = [item["events"][0]["name"] for item in body["items"]]
    assert names == ["MOVE_USER_TO_ORG_UNIT", "SUSPEND_USER"]  # newest first
    move = body["items"][0]
    assert move["id"]["applicationName"] == "admin"
    assert move["id"]["uniqueQualifier"]
    params = {p["name"]: p["value"] for p in move["events"][0]["parameters"]}
    assert params == {
        "USER_EMAIL": users[1]["primaryEmail"],
        "ORG_UNIT_NAME": "/Skolor/A/Elever",
        "NEW_VALUE": "/Skolor/B/Elever",
    }
    status, body, _ = await get(http, fake, path, {"eventName": "SUSPEND_USER"}, token)
    assert [item["events"][0]["name"] for item in body["items"]] == ["SUSPEND_USER"]
    status, body, _ = await get(http, fake, path, {"startTime": "2999-01-01T00:00:00Z"}, token)
    assert "items" not in body
    status, body, _ = await get(http, fake, "/admin/reports/v1/activity/users/all/applications/drive", {}, token)
    assert status == 400


# --- faults ----------------------------------------------------------------------------------------


async def test_injected_rate_limits_have_googles_shape_and_no_retry_after(
    fake: FakeGoogleDirectory, http: aiohttp.ClientSession
) -> None:
    token = admin_token(fake)
    params = {"customer": "my_customer"}
    fake.fail_next(1, "userRateLimitExceeded")
    status, body, headers = await get(http, fake, USERS, params, token)
    assert status == 403
    assert "Retry-After" not in headers
    error = body["error"]
    assert error["code"] == 403
    assert error["errors"][0] == {
        "message": "User Rate Limit Exceeded",
        "domain": "usageLimits",
        "reason": "userRateLimitExceeded",
    }
    fake.fail_next(1, "429")
    status, body, headers = await get(http, fake, USERS, params, token)
    assert (status, body["error"]["status"], body["error"]["errors"][0]["reason"]) == (
        429,
        "RESOURCE_EXHAUSTED",
        "rateLimitExceeded",
    )
    assert "Retry-After" not in headers
    status, _, _ = await get(http, fake, USERS, params, token)
    assert status == 200

    fake.fail_every(3, "backendError")
    statuses = [(await get(http, fake, USERS, params, token))[0] for _ in range(6)]
    assert statuses == [200, 200, 503, 200, 200, 503]
    fake.clear_faults()

    fake.quota(2, per_seconds=60)
    statuses = [(await get(http, fake, USERS, params, token))[0] for _ in range(3)]
    assert statuses == [200, 200, 403]
    fake.clear_faults()

    fill(fake, 4)
    fake.fail_page("users", 1, "forbidden")
    status, body, _ = await get(http, fake, USERS, {**params, "maxResults": "2"}, token)
    assert status == 200
    status, body, _ = await get(
        http, fake, USERS, {**params, "maxResults": "2", "pageToken": body["nextPageToken"]}, token
    )
    assert (status, body["error"]["errors"][0]["reason"]) == (403, "forbidden")
    assert [r.page for r in fake.requests if r.endpoint == "users"][-2:] == [0, 1]


async def test_a_lagging_search_index_hides_new_and_moved_users_from_queries_only(
    fake: FakeGoogleDirectory, http: aiohttp.ClientSession
) -> None:
    """Google's search results can take up to 36 hours to show a new or changed user; listing without a
    query and users.get do not go through the index (issue 23)."""
    users = fill(fake, 3)
    fake.add_org_unit("/Skolor/C Skola")
    token = admin_token(fake)

    async def ids(params: dict[str, str]) -> set[str]:
        status, body, _ = await get(http, fake, USERS, {"customer": "my_customer", **params}, token)
        assert status == 200, body
        return {u["id"] for u in body.get("users", [])}

    fake.lag_search_index()
    newcomer = fake.add_user("ny.elev@demo.skolsynk.example", "Ny", "Elev", org_unit_path="/Skolor", audit=False)
    fake.move_user(users[0]["id"], "/Skolor/C Skola", audit=False)
    assert newcomer["id"] not in await ids({"query": "orgUnitPath=/Skolor"})
    assert users[0]["id"] not in await ids({"query": "orgUnitPath='/Skolor/C Skola'"})  # still where it was
    assert {newcomer["id"], users[0]["id"]} <= await ids({})  # listed by customer: current
    fake.catch_up_search_index()
    assert newcomer["id"] in await ids({"query": "orgUnitPath=/Skolor"})
    assert users[0]["id"] in await ids({"query": "orgUnitPath='/Skolor/C Skola'"})


async def test_users_carry_their_primary_address_in_emails(
    fake: FakeGoogleDirectory, http: aiohttp.ClientSession
) -> None:
    [user] = fill(fake, 1)
    status, body, _ = await get(http, fake, f"{USERS}/{user['id']}", {}, admin_token(fake))
    assert status == 200, body
    assert body["emails"] == [{"address": user["primaryEmail"], "primary": True}]
    status, body, _ = await get(http, fake, f"{USERS}/nobody@demo.skolsynk.example", {}, admin_token(fake))
    assert (status, body["error"]["errors"][0]["reason"]) == (404, "notFound")
