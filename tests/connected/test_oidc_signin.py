"""Signing in with Microsoft or Google, against a local OpenID provider (oidc-provider-mock, its own process)
and the admin on the real broker and the Mongo wire server, without a browser (aiohttp's test client): an
operator configures the provider and account rules through the API; an organiser's account signs in (code
flow with PKCE, state and nonce), gets the most specific rule's organiser and role, and loses the session
when its rule goes; an unmapped account, a tampered, replayed, expired or foreign state are refused, and no
account's address reaches the logs."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from skolsynk.service import ServiceApp
from skolsynk.settings import ServiceSettings
from skolsynk_services.admin import models
from skolsynk_services.admin.accounts import SIGNIN_SECONDS
from skolsynk_services.admin.app import AdminSettings, build, web_root
from skolsynk_services.admin.auth import Principal, Role, TokenStore
from skolsynk_services.admin.oidc import provider_kind
from skolsynk_services.admin.service import AdminService
from skolsynk_services.admin.ui import COOKIE
from skolsynk_services.admin.ui.views.signin import SIGNIN_COOKIE
from tests.helpers import delete_topology
from tests.oidc_provider import LocalProvider, local_provider

pytestmark = [pytest.mark.connected, pytest.mark.timeout(90), pytest.mark.queues()]

SECRETS_KEY = "2mJ3m6mCAxzGzO8Ihc4r3Vxv3Fj0vIYbVwJJmQKkV4g="  # a throwaway Fernet key for tests
TENANT = "alvik"
CLIENT_SECRET = "client-SECRET-4711"  # never in a response, a page or the store unsealed
ANNA, BERTIL, EVE = "anna@alvik.se", "bertil@alvik.se", "eve@elsewhere.example"
DASH = "\N{EN DASH}"  # the pager's "Visar 1-50 av 55"


@dataclass
class Admin:
    app: ServiceApp
    client: TestClient[Any, Any]
    service: AdminService
    clock: list[timedelta]
    operator: str
    provider: LocalProvider
    idp: aiohttp.ClientSession  # the browser's requests to the provider (another origin)

    @property
    def origin(self) -> str:
        return str(self.client.make_url("")).rstrip("/")

    async def api(self, method: str, path: str, *, token: str | None = None, json: Any = None) -> Any:
        headers = {"Authorization": f"Bearer {token or self.operator}"}
        return await self.client.request(method, "/api/v1" + path, json=json, headers=headers)

    async def start(self, next_path: str = "") -> str:
        """The sign-in button: where it sends the browser (the provider's authorization endpoint)."""
        query = f"?next={next_path}" if next_path else ""
        response = await self.client.get(f"/ui/login/oidc/mock{query}", allow_redirects=False)
        assert response.status == 303, await response.text()
        return response.headers["Location"]

    async def sign_in(self, subject: str, next_path: str = "") -> aiohttp.ClientResponse:
        """The whole sign-in as a browser goes through it; the callback's response."""
        back = await self.provider.authorize(self.idp, await self.start(next_path), subject)
        return await self.client.get(_local(back), allow_redirects=False)

    async def page(self, path: str) -> tuple[int, str]:
        response = await self.client.get(path, allow_redirects=False)
        return response.status, (response.headers.get("Location") or await response.text())


def _local(url: str) -> str:
    parts = urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


@pytest.fixture
async def admin(settings: ServiceSettings, tmp_path: Path) -> AsyncIterator[Admin]:
    clock = [timedelta(0)]
    admin_settings = AdminSettings.model_validate(
        {**settings.model_dump(), "admin_port": 0, "admin_host": "127.0.0.1", "admin_secrets_key": SECRETS_KEY}
    )
    app = build(admin_settings, clock=lambda: datetime.now(UTC) + clock[0])
    service: AdminService = app.extensions["service"]
    tokens: TokenStore = app.extensions["tokens"]
    client: TestClient[Any, Any] | None = None
    try:
        await app.start()
        client = TestClient(TestServer(web_root(service, tokens, app.extensions["sessions"]), host="127.0.0.1"))
        await client.start_server()
        operator, _ = await tokens.create(role=Role.OPERATOR, subject="ops@drift.example", tenant_id=None,
                                          created_by="test")  # fmt: skip
        async with local_provider(tmp_path / "oidc-provider.log") as provider, aiohttp.ClientSession() as idp:
            admin = Admin(app, client, service, clock, operator, provider, idp)
            await service.create_tenant(Principal("ops@drift.example", Role.OPERATOR, None),
                                        models.TenantIn(tenant_id=TENANT, display_name="Alvik"))  # fmt: skip
            yield admin
    finally:
        if client is not None:
            await client.close()
        await app.drain(1)
        await app.close()
        await delete_topology(settings.broker.amqp_url.get_secret_value(), app.topology)


async def configure(admin: Admin, *rules: dict[str, Any]) -> None:
    """The local provider as "Microsoft" (id ``mock``) and the given account rules, as an operator."""
    operator = Principal("ops@drift.example", Role.OPERATOR, None)
    await admin.service.create_identity_provider(operator, models.IdentityProviderIn.model_validate({
        "provider_id": "mock", "display_name": "Microsoft", "issuer": admin.provider.issuer,
        "client_id": "skolsynk-admin", "client_secret": CLIENT_SECRET,
    }))  # fmt: skip
    for rule in rules:
        await admin.service.create_account_rule(operator, models.AccountRuleIn.model_validate({"provider_id": "mock",
                                                                                               **rule}))  # fmt: skip


async def test_an_operator_configures_providers_and_account_rules_through_the_api(admin: Admin) -> None:
    response = await admin.api("POST", "/identity-providers", json={
        "provider_id": "mock", "display_name": "Microsoft", "issuer": admin.provider.issuer,
        "client_id": "skolsynk-admin", "client_secret": CLIENT_SECRET,
    })  # fmt: skip
    assert response.status == 201, await response.text()
    assert CLIENT_SECRET not in await response.text()
    listed = await admin.api("GET", "/identity-providers")
    body = await listed.text()
    assert CLIENT_SECRET not in body
    [provider] = await listed.json()
    assert provider["client_secret_stored"] is True
    assert provider["kind"] == provider_kind(admin.provider.issuer).value == "oidc"
    stored = await admin.service.identity_providers.get("mock")
    assert stored is not None
    assert CLIENT_SECRET not in str(stored)
    assert admin.service.secret_box.open(stored["client_secret"]) == {"client_secret": CLIENT_SECRET}

    # Rules: a domain for viewers, one address for an admin, never a domain of operators.
    for rule in ({"kind": "domain", "value": "@Alvik.SE", "role": "viewer", "tenant_id": TENANT},
                 {"kind": "email", "value": ANNA, "role": "organiser_admin", "tenant_id": TENANT}):  # fmt: skip
        response = await admin.api("POST", "/account-rules", json={"provider_id": "mock", **rule})
        assert response.status == 201, await response.text()
    refused = await admin.api("POST", "/account-rules", json={
        "provider_id": "mock", "kind": "domain", "value": "drift.example", "role": "operator"})  # fmt: skip
    assert refused.status == 422
    assert (await refused.json())["errors"][0]["code"] == "operator_domain"
    duplicate = await admin.api("POST", "/account-rules", json={
        "provider_id": "mock", "kind": "domain", "value": "alvik.se", "role": "organiser_admin", "tenant_id": TENANT,
    })  # fmt: skip
    assert duplicate.status == 409
    page = await admin.api("GET", "/account-rules?q=alvik&limit=1")
    assert page.headers["X-Total-Count"] == "2"
    assert [r["value"] for r in await page.json()] == ["alvik.se"]  # domain before email, one per page

    # Only operators configure sign-in; the organiser's log shows who was given access to it.
    organiser_token, _ = await admin.service.tokens.create(role=Role.ORGANISER_ADMIN, subject="it@alvik.se",
                                                           tenant_id=TENANT, created_by="test")  # fmt: skip
    assert (await admin.api("GET", "/identity-providers", token=organiser_token)).status == 403
    assert (await admin.api("GET", "/account-rules", token=organiser_token)).status == 403
    log = await admin.api("GET", f"/tenants/{TENANT}/audit")
    actions = [entry["action"] for entry in await log.json()]
    assert actions.count("account_rule.create") == 2
    platform = [e["action"] for e in await (await admin.api("GET", "/audit")).json()]
    assert "identity_provider.create" in platform

    # A wrong issuer is refused before it is stored: its discovery document must be there.
    wrong = await admin.api("POST", "/identity-providers", json={
        "provider_id": "wrong", "display_name": "Fel", "issuer": admin.provider.issuer + "/nowhere",
        "client_id": "x", "client_secret": "y"})  # fmt: skip
    assert wrong.status == 422
    assert (await wrong.json())["errors"][0]["code"] == "discovery"
    insecure = await admin.api("POST", "/identity-providers", json={
        "provider_id": "insecure", "display_name": "Osäker", "issuer": "http://idp.example", "client_id": "x",
        "client_secret": "y"})  # fmt: skip
    assert insecure.status == 422

    # Disabled, then removed with its rules.
    response = await admin.api("PATCH", "/identity-providers/mock", json={"enabled": False, "display_name": "MS"})
    assert response.status == 200, await response.text()
    assert ((await response.json())["enabled"], (await response.json())["display_name"]) == (False, "MS")
    assert (await admin.api("DELETE", "/identity-providers/mock")).status == 204
    assert (await admin.api("GET", "/identity-providers/mock")).status == 404
    assert (await admin.api("GET", "/account-rules")).headers["X-Total-Count"] == "0"


async def test_an_organiser_admin_signs_in_with_the_most_specific_rule(admin: Admin) -> None:
    await configure(
        admin,
        {"kind": "domain", "value": "alvik.se", "role": "viewer", "tenant_id": TENANT},
        {"kind": "email", "value": ANNA, "role": "organiser_admin", "tenant_id": TENANT},
    )
    await admin.provider.add_user("sub-anna", email=ANNA, email_verified=True, name="Anna Alvik")
    await admin.provider.add_user("sub-bertil", email=BERTIL, email_verified=True)

    status, login = await admin.page("/ui/login")
    assert status == 200
    assert "Logga in med Microsoft" in login
    assert "Åtkomstnyckel" in login  # tokens stay, for operators' break-glass

    # The authorization request: code flow, PKCE S256, state and nonce, skolsynk's redirect URI.
    query = parse_qs(urlsplit(await admin.start()).query)
    assert query["response_type"] == ["code"]
    assert query["code_challenge_method"] == ["S256"]
    assert len(query["code_challenge"][0]) == 43
    assert query["state"][0]
    assert query["nonce"][0]
    assert query["redirect_uri"] == [admin.origin + "/ui/login/oidc/callback"]
    assert "openid" in query["scope"][0].split()

    response = await admin.sign_in("sub-anna", next_path="/ui/")
    assert response.status == 200, await response.text()
    assert 'http-equiv="refresh" content="0;url=/ui/"' in await response.text()
    assert COOKIE in response.cookies
    status, location = await admin.page("/ui/")
    assert (status, location) == (303, f"/ui/t/{TENANT}/")
    status, overview = await admin.page(f"/ui/t/{TENANT}/")
    assert status == 200
    assert f"Inloggad som <strong>{ANNA}</strong> (administratör för huvudmannen)" in overview
    session = await admin.app.db["admin_sessions"].find_one({"provider_id": "mock"})
    assert session is not None
    assert session["account_subject"] == "sub-anna"
    assert session["token_id"] is None

    # The sign-in is in the organiser's log, with the provider and the account's subject.
    [entry] = [e for e in await admin.service.audit_log.entries(TENANT) if e["action"] == "signin.oidc"]
    assert (entry["actor"], entry["via"], entry["after"]["subject"]) == (ANNA, "mock", "sub-anna")
    # ... and so is what the signed-in admin changes, with the provider it signed in with.
    response = await admin.client.post(f"/ui/t/{TENANT}/contacts", data={"notify_emails": "it@alvik.se"},
                                       headers={"Origin": admin.origin}, allow_redirects=False)  # fmt: skip
    assert response.status == 303
    [change] = [e for e in await admin.service.audit_log.entries(TENANT) if e["action"] == "contacts.set"]
    assert (change["actor"], change["via"]) == (ANNA, "mock")

    # Bertil is at the domain only: a viewer, who reads and changes nothing.
    await admin.client.post("/ui/logout", headers={"Origin": admin.origin}, allow_redirects=False)
    response = await admin.sign_in("sub-bertil")
    assert response.status == 200
    status, overview = await admin.page(f"/ui/t/{TENANT}/")
    assert "(läsbehörighet för huvudmannen)" in overview
    response = await admin.client.post(f"/ui/t/{TENANT}/contacts", data={"notify_emails": ""},
                                       headers={"Origin": admin.origin}, allow_redirects=False)  # fmt: skip
    assert response.status == 403

    # The rule goes: the session that it let in ends at once.
    operator = Principal("ops@drift.example", Role.OPERATOR, None)
    rules, _ = await admin.service.list_account_rules(operator)
    await admin.service.delete_account_rule(operator, next(r.rule_id for r in rules if r.kind == "domain"))
    status, location = await admin.page(f"/ui/t/{TENANT}/")
    assert status == 303
    assert location.startswith("/ui/login")


async def test_an_unmapped_account_is_refused_and_never_logged(
    admin: Admin, capsys: pytest.CaptureFixture[str]
) -> None:
    await configure(admin, {"kind": "domain", "value": "alvik.se", "role": "viewer", "tenant_id": TENANT})
    # Eve's address is at another domain; Mallory claims an address at alvik.se that the provider never verified.
    await admin.provider.add_user("sub-eve", email=EVE, email_verified=True)
    await admin.provider.add_user("sub-mallory", email="mallory@alvik.se", email_verified=False)
    capsys.readouterr()
    for subject, account in (("sub-eve", EVE), ("sub-mallory", "mock:sub-mallory")):
        response = await admin.sign_in(subject)
        page = await response.text()
        assert response.status == 403, page
        assert f"Kontot {account} (Microsoft) har ingen behörighet i skolsynk" in page
        assert COOKIE not in response.cookies
    assert await admin.app.db["admin_sessions"].count_documents({}) == 0
    logged = capsys.readouterr()
    assert "oidc_signin_refused" in logged.out + logged.err
    for personal in (EVE, "mallory@alvik.se", "sub-eve", "sub-mallory"):
        assert personal not in logged.out + logged.err


async def test_a_tampered_replayed_expired_or_foreign_state_is_refused(admin: Admin) -> None:
    await configure(admin, {"kind": "email", "value": ANNA, "role": "organiser_admin", "tenant_id": TENANT})
    await admin.provider.add_user("sub-anna", email=ANNA, email_verified=True)
    refused = "Inloggningen kunde inte slutföras"

    async def callback(back: str, *, state: str | None = None) -> aiohttp.ClientResponse:
        parts = urlsplit(back)
        query = parse_qs(parts.query)
        if state is not None:
            query["state"] = [state]
        params = {k: v[0] for k, v in query.items()}
        return await admin.client.get(parts.path, params=params, allow_redirects=False)

    # Tampered: the provider's answer comes back with another state. The sign-in is over in this browser.
    back = await admin.provider.authorize(admin.idp, await admin.start(), "sub-anna")
    state = parse_qs(urlsplit(back).query)["state"][0]
    response = await callback(back, state=state[:-2] + ("AA" if not state.endswith("AA") else "BB"))
    assert response.status == 400
    assert refused in await response.text()
    assert (await callback(back)).status == 400

    # Replayed: a state is used once, even by the browser that began it.
    back = await admin.provider.authorize(admin.idp, await admin.start(), "sub-anna")
    callback_url = admin.client.make_url("/ui/login/oidc/callback")
    browser = admin.client.session.cookie_jar.filter_cookies(callback_url)[SIGNIN_COOKIE].value
    assert (await callback(back)).status == 200
    admin.client.session.cookie_jar.clear()
    admin.client.session.cookie_jar.update_cookies({SIGNIN_COOKIE: browser}, callback_url)
    replay = await callback(back)
    assert replay.status == 400
    assert refused in await replay.text()
    assert COOKIE not in replay.cookies

    # Expired: the provider took longer than the sign-in may take.
    back = await admin.provider.authorize(admin.idp, await admin.start(), "sub-anna")
    admin.clock[0] = timedelta(seconds=SIGNIN_SECONDS + 1)
    assert (await callback(back)).status == 400
    admin.clock[0] = timedelta(0)

    # Foreign: a state started in another browser (an attacker's, to log the victim in as the attacker).
    back = await admin.provider.authorize(admin.idp, await admin.start(), "sub-anna")
    admin.client.session.cookie_jar.clear()
    response = await callback(back)
    assert response.status == 400
    assert COOKIE not in response.cookies

    # The provider said no (the person cancelled): a plain message.
    await admin.start()
    started = await admin.start()
    state = parse_qs(urlsplit(started).query)["state"][0]
    response = await admin.client.get("/ui/login/oidc/callback", params={"state": state, "error": "access_denied"},
                                      allow_redirects=False)  # fmt: skip
    assert response.status == 403
    assert "Inloggningen hos Microsoft avbröts eller nekades" in await response.text()
    assert re.search(r"name=\"token\"", await response.text())  # the token form is still there


async def test_a_disabled_provider_is_not_offered_and_its_sessions_end(admin: Admin) -> None:
    await configure(admin, {"kind": "email", "value": ANNA, "role": "organiser_admin", "tenant_id": TENANT})
    await admin.provider.add_user("sub-anna", email=ANNA, email_verified=True)
    assert (await admin.sign_in("sub-anna")).status == 200
    assert (await admin.page(f"/ui/t/{TENANT}/"))[0] == 200
    operator = Principal("ops@drift.example", Role.OPERATOR, None)
    disabled = models.IdentityProviderUpdate(enabled=False)
    changed = await admin.service.update_identity_provider(operator, "mock", disabled)
    assert changed.enabled is False
    status, location = await admin.page(f"/ui/t/{TENANT}/")
    assert (status, location.startswith("/ui/login")) == (303, True)
    status, login = await admin.page("/ui/login")
    assert "Logga in med Microsoft" not in login
    response = await admin.client.get("/ui/login/oidc/mock", allow_redirects=False)
    assert response.status == 404
    assert SIGNIN_COOKIE not in response.cookies


async def test_the_operators_page_configures_sign_in_in_swedish_and_never_shows_the_secret(admin: Admin) -> None:
    token = admin.client.post("/ui/login", data={"token": admin.operator}, headers={"Origin": admin.origin},
                              allow_redirects=False)  # fmt: skip
    assert (await token).status == 303

    async def post(path: str, data: dict[str, str]) -> aiohttp.ClientResponse:
        return await admin.client.post(path, data=data, headers={"Origin": admin.origin}, allow_redirects=False)

    provider = {"provider_id": "mock", "display_name": "Microsoft", "issuer": admin.provider.issuer,
                "client_id": "skolsynk-admin", "client_secret": CLIENT_SECRET}  # fmt: skip
    wrong = await post("/ui/identity/providers", {**provider, "issuer": admin.provider.issuer + "/nowhere"})
    page = await wrong.text()
    assert wrong.status == 422
    assert "Utfärdarens beskrivning (.well-known/openid-configuration) kunde inte läsas" in page
    assert 'id="f-issuer" name="issuer" value="' in page
    assert CLIENT_SECRET not in page  # a refused form is shown again without the secret
    assert (await post("/ui/identity/providers", provider)).status == 303
    status, page = await admin.page("/ui/identity")
    assert status == 200
    assert "/ui/login/oidc/callback" in page
    assert CLIENT_SECRET not in page
    status, page = await admin.page("/ui/identity/providers/mock")
    assert status == 200
    assert CLIENT_SECRET not in page

    # A domain of operators is refused in Swedish, at its field; rules page in the store.
    response = await post("/ui/identity/rules", {"provider_id": "mock", "kind": "domain", "value": "alvik.se",
                                                 "directory": "", "tenant_id": "", "role": "operator"})  # fmt: skip
    page = await response.text()
    assert response.status == 422
    assert "aldrig till en hel domän" in page
    assert re.search(r'<select id="f-role" [^>]*aria-describedby="f-role-help f-role-error" aria-invalid="true"', page)
    for n in range(55):
        rule = {"provider_id": "mock", "kind": "email", "value": f"person{n:02d}@alvik.se", "directory": "",
                "tenant_id": TENANT, "role": "viewer"}  # fmt: skip
        assert (await post("/ui/identity/rules", rule)).status == 303
    status, page = await admin.page("/ui/identity")
    assert f"Visar 1{DASH}50 av 55" in page
    assert "person49@alvik.se" in page
    assert "person50@alvik.se" not in page
    status, page = await admin.page("/ui/identity?sida=2")
    assert f"Visar 51{DASH}55 av 55" in page
    assert "person54@alvik.se" in page
    status, page = await admin.page("/ui/identity?q=person07")
    assert f"Visar 1{DASH}1 av 1" in page

    # An organiser's admin does not reach the page.
    organiser_token, _ = await admin.service.tokens.create(role=Role.ORGANISER_ADMIN, subject="it@alvik.se",
                                                           tenant_id=TENANT, created_by="test")  # fmt: skip
    await admin.client.post("/ui/login", data={"token": organiser_token}, headers={"Origin": admin.origin})
    assert (await admin.page("/ui/identity"))[0] == 403
    assert (await post("/ui/identity/rules", {"provider_id": "mock"})).status == 403
