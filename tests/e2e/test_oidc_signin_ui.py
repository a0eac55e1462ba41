"""Signing in with Microsoft or Google in headless Chromium (Playwright): an organiser's IT admin presses
"Logga in med Microsoft", signs in at the provider (a local OpenID provider, oidc-provider-mock, standing in
for Microsoft Entra ID) and lands on the organiser's overview with the role an operator's account rule
gives; an account without a rule is refused in plain Swedish; a forged answer is refused; the operator
configures a rule on the page Inloggning. axe-core finds no WCAG A/AA violation on the sign-in page (with
its buttons, and with a refusal) nor on Inloggning.

Screenshots for the docs under ``$SKOLSYNK_TEST_ARTEFACTS/signin`` (default ``tests/artefacts/signin``):
``login.png`` (the sign-in page with both providers), ``login-refused.png``, ``overview.png`` (signed in),
``inloggning.png`` (the operators' page)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from axe_playwright_python.async_playwright import Axe
from playwright.async_api import Browser, Page, expect

from skolsynk.service import ServiceApp
from skolsynk.settings import ServiceSettings
from skolsynk_services.admin import models
from skolsynk_services.admin.app import AdminSettings
from skolsynk_services.admin.app import build as build_admin
from skolsynk_services.admin.auth import Principal, Role, TokenStore
from skolsynk_services.admin.service import AdminService
from tests.e2e.accessibility import no_axe_violations
from tests.e2e.conftest import ARTEFACTS as E2E_ARTEFACTS
from tests.helpers import delete_topology
from tests.oidc_provider import LocalProvider, local_provider

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(120), pytest.mark.queues()]

ARTEFACTS = E2E_ARTEFACTS / "signin"
SECRETS_KEY = "2mJ3m6mCAxzGzO8Ihc4r3Vxv3Fj0vIYbVwJJmQKkV4g="  # a throwaway Fernet key for tests
TENANT = "alvik"


@dataclass
class Stack:
    admin: ServiceApp
    operator: str
    provider: LocalProvider

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.admin.web_ports[0]}"


@pytest.fixture
async def stack(settings: ServiceSettings, tmp_path: Path) -> AsyncIterator[Stack]:
    admin = build_admin(AdminSettings.model_validate(
        {**settings.model_dump(), "admin_host": "127.0.0.1", "admin_port": 0, "admin_secrets_key": SECRETS_KEY}
    ))  # fmt: skip
    try:
        await admin.start()
        operator, _ = await TokenStore(admin.db).create(role=Role.OPERATOR, subject="drift@skolsynk.example",
                                                        tenant_id=None, created_by="test")  # fmt: skip
        async with local_provider(tmp_path / "oidc-provider.log") as provider:
            service: AdminService = admin.extensions["service"]
            ops = Principal("drift@skolsynk.example", Role.OPERATOR, None)
            await service.create_tenant(ops, models.TenantIn(tenant_id=TENANT, display_name="Alviks kommun"))
            # Both stand-ins are the local provider: one as Microsoft (the organiser's tenant), one as Google.
            for provider_id, name in (("microsoft", "Microsoft"), ("google", "Google")):
                await service.create_identity_provider(ops, models.IdentityProviderIn.model_validate({
                    "provider_id": provider_id, "display_name": name, "issuer": provider.issuer,
                    "client_id": f"skolsynk-{provider_id}", "client_secret": "client-secret-4711",
                }))  # fmt: skip
            await service.create_account_rule(ops, models.AccountRuleIn(
                provider_id="microsoft", kind="domain", value="alvik.se", role="organiser_admin", tenant_id=TENANT
            ))  # fmt: skip
            await provider.add_user("sub-anna", email="anna@alvik.se", email_verified=True, name="Anna Alvik")
            await provider.add_user("sub-eve", email="eve@elsewhere.example", email_verified=True)
            yield Stack(admin, operator, provider)
    finally:
        await admin.drain(1)
        await admin.close()
        await delete_topology(settings.broker.amqp_url.get_secret_value(), admin.topology)


async def sign_in_at_the_provider(page: Page, subject: str) -> None:
    await page.get_by_role("link", name="Logga in med Microsoft").click()
    await page.get_by_placeholder("sub").fill(subject)
    await page.get_by_role("button", name="Authorize").click()


async def test_an_organiser_admin_signs_in_with_microsoft(stack: Stack, browser: Browser) -> None:
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    for old in ARTEFACTS.glob("*.png"):
        old.unlink()
    context = await browser.new_context(viewport={"width": 1280, "height": 900}, locale="sv-SE")
    page = await context.new_page()
    page.set_default_timeout(10_000)
    console_errors: list[str] = []

    def console(message: Any) -> None:
        """Errors of skolsynk's pages (the provider's page loads a style sheet from the internet, and the
        refusals below answer 400 and 403 on purpose)."""
        ours = str(message.location.get("url", "")).startswith(stack.base)
        expected = "the server responded with a status of 40" in message.text
        if message.type == "error" and ours and not expected:
            console_errors.append(message.text)

    page.on("console", console)
    axe = Axe()
    try:
        # The sign-in page offers both providers beside the token form.
        await page.goto(stack.base + "/")
        await expect(page.get_by_role("heading", name="Logga in", exact=True)).to_be_visible()
        await expect(page.get_by_role("link", name="Logga in med Microsoft")).to_be_visible()
        await expect(page.get_by_role("link", name="Logga in med Google")).to_be_visible()
        await expect(page.get_by_label("Åtkomstnyckel")).to_be_visible()
        await no_axe_violations(page, "the sign-in page", axe)
        await page.screenshot(path=ARTEFACTS / "login.png", full_page=True)

        # Anna signs in with her organiser's account and lands on its overview, as its admin.
        await sign_in_at_the_provider(page, "sub-anna")
        await expect(page.get_by_role("heading", name="Översikt")).to_be_visible()
        assert page.url == f"{stack.base}/ui/t/{TENANT}/"
        await expect(page.locator("header .who")).to_contain_text("Inloggad som anna@alvik.se")
        await expect(page.locator("header .who")).to_contain_text("(administratör för huvudmannen)")
        await expect(page.get_by_role("link", name="Åtkomst")).to_be_visible()  # an admin's page, not a viewer's
        await page.screenshot(path=ARTEFACTS / "overview.png", full_page=True)
        await page.get_by_role("button", name="Logga ut").click()
        await expect(page.locator(".flash")).to_contain_text("Du är utloggad.")

        # Eve's account has no rule: refused, in Swedish, and still on the sign-in page.
        await sign_in_at_the_provider(page, "sub-eve")
        refusal = page.get_by_role("alert")
        await expect(refusal).to_contain_text(
            "Kontot eve@elsewhere.example (Microsoft) har ingen behörighet i skolsynk"
        )
        await expect(page.get_by_role("link", name="Logga in med Microsoft")).to_be_visible()
        await no_axe_violations(page, "the sign-in page with a refusal", axe)
        await page.screenshot(path=ARTEFACTS / "login-refused.png", full_page=True)

        # A forged answer (a state this browser never started) is refused.
        response = await page.goto(stack.base + "/ui/login/oidc/callback?state=forged&code=stolen")
        assert response is not None
        assert response.status == 400
        await expect(page.get_by_role("alert")).to_contain_text("Inloggningen kunde inte slutföras")

        # The operator gives Eve a viewer's role on the page Inloggning; her next sign-in gets it.
        await page.get_by_label("Åtkomstnyckel").fill(stack.operator)
        await page.get_by_role("button", name="Logga in", exact=True).click()
        await page.get_by_role("link", name="Inloggning").click()
        await expect(page.get_by_role("heading", name="Inloggning", exact=True)).to_be_visible()
        await expect(page.locator("#redirect-uri")).to_have_text(f"{stack.base}/ui/login/oidc/callback")
        await page.get_by_label("Inloggningstjänst").select_option("microsoft")
        await page.get_by_label("Vilka konton").select_option("email")
        await page.get_by_label(re.compile(r"^Konto, e-postadress eller domän")).fill("eve@elsewhere.example")
        await page.get_by_label("Huvudman", exact=True).select_option(TENANT)
        await page.get_by_label("Roll", exact=True).select_option("viewer")
        await page.get_by_role("button", name="Lägg till regeln").click()
        await expect(page.locator(".flash")).to_contain_text("Regeln är tillagd")
        rules = page.get_by_role("table", name="Regler")
        await expect(rules).to_contain_text("En e-postadress: eve@elsewhere.example")
        await expect(rules).to_contain_text("En domän: alvik.se")
        await no_axe_violations(page, "Inloggning", axe)
        await page.screenshot(path=ARTEFACTS / "inloggning.png", full_page=True)
        await page.get_by_role("button", name="Logga ut").click()
        await sign_in_at_the_provider(page, "sub-eve")
        await expect(page.locator("header .who")).to_contain_text("(läsbehörighet för huvudmannen)")
        assert not console_errors, console_errors  # no CSP violation, nothing broken on skolsynk's pages
    except BaseException:
        await page.screenshot(path=ARTEFACTS / "failure.png", full_page=True)
        raise
    finally:
        await context.close()
