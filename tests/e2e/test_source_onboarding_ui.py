"""From "Koppla en källa" to the first complete run, in headless Chromium, without any file edited: an
organiser's IT admin fills in the SS 12000 source form, tests the connection (the SS 12000 puller itself
answers over RabbitMQ), saves, and watches the source's first run arrive complete on the sources page. The
admin, the normaliser and the SS 12000 puller (following the source registry) run in-process on the real
broker and the Mongo wire server; the API is the fake SS 12000 API.

Screenshots under ``$SKOLSYNK_TEST_ARTEFACTS/source-onboarding`` (default ``tests/artefacts/...``)."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, expect

from skolsynk.service import ServiceApp
from skolsynk.settings import ServiceSettings
from skolsynk_services.admin.app import AdminSettings
from skolsynk_services.admin.app import build as build_admin
from skolsynk_services.admin.auth import Role, TokenStore
from skolsynk_services.normaliser.app import NormaliserSettings
from skolsynk_services.normaliser.app import build as build_normaliser
from skolsynk_services.ss12000_puller.app import Ss12000ConnectorSettings
from skolsynk_services.ss12000_puller.app import build as build_puller
from skolsynk_testkit.fakes.ss12000_api import FakeSs12000Api
from tests.e2e.conftest import ARTEFACTS as E2E_ARTEFACTS
from tests.helpers import delete_topology

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(120)]

REPO_ROOT = Path(__file__).resolve().parents[2]
ARTEFACTS = E2E_ARTEFACTS / "source-onboarding"
SECRETS_KEY = "2mJ3m6mCAxzGzO8Ihc4r3Vxv3Fj0vIYbVwJJmQKkV4g="  # a throwaway Fernet key for tests
TENANT = "demo-kommun"
SECRET = "the-api-client-secret"
UNIT = "5b1f0f8e-3c2d-4b7e-8f61-0d9a7c2e4b10"


@dataclass
class Stack:
    admin: ServiceApp
    api: FakeSs12000Api
    operator: str

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.admin.web_ports[0]}"


@pytest.fixture
async def stack(settings: ServiceSettings) -> AsyncIterator[Stack]:
    base = settings.model_dump()
    api = FakeSs12000Api(client_secret=SECRET)
    api.put("organisations", {"id": UNIT, "displayName": "Norrskolan", "organisationType": "Skolenhet",
                              "schoolUnitCode": "87654321", "schoolTypes": ["GR"]})  # fmt: skip
    for n in range(3):
        api.put(
            "persons",
            {"id": f"00000000-0000-0000-0000-0000000009{n:02d}", "givenName": f"Elev{n}", "familyName": "Test",
             "eduPersonPrincipalNames": [f"elev{n}@skola.example"]},
        )  # fmt: skip
    admin = build_admin(
        AdminSettings.model_validate(
            {**base, "admin_host": "127.0.0.1", "admin_port": 0, "admin_secrets_key": SECRETS_KEY,
             "vendor_catalogue_dir": REPO_ROOT / "deploy" / "vendors"}
        )
    )  # fmt: skip
    normaliser = build_normaliser(NormaliserSettings.model_validate({**base, "date_check_interval_seconds": 86400}))
    puller = build_puller(
        Ss12000ConnectorSettings.model_validate(
            {**base, "admin_secrets_key": SECRETS_KEY, "sources_poll_seconds": 0.5, "ss12000_schedule": True,
             "ss12000_webhook_host": "127.0.0.1", "ss12000_webhook_port": 0}
        )
    )  # fmt: skip
    apps = [normaliser, puller, admin]
    await api.start()
    try:
        for app in apps:
            await app.start()
        operator, _ = await TokenStore(admin.db).create(
            role=Role.OPERATOR, subject="drift@skolsynk.example", tenant_id=None, created_by="test"
        )
        yield Stack(admin, api, operator)
    finally:
        for app in apps:
            await app.drain(1)
        for app in apps:
            await app.close()
        await delete_topology(settings.broker.amqp_url.get_secret_value(), puller.topology)
        await api.stop()


async def test_a_source_is_connected_tested_and_read_to_its_first_complete_run_in_the_browser(
    stack: Stack, browser: Browser
) -> None:
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    context = await browser.new_context(viewport={"width": 1280, "height": 900}, locale="sv-SE")
    page: Page = await context.new_page()
    page.set_default_timeout(15_000)
    taken = 0

    async def shot(name: str) -> None:
        nonlocal taken
        taken += 1
        await page.screenshot(path=ARTEFACTS / f"{taken:02d}-{name}.png", full_page=True)

    try:
        await page.goto(stack.base + "/")
        await page.get_by_label("Åtkomstnyckel").fill(stack.operator)
        await page.get_by_role("button", name="Logga in").click()
        await page.get_by_label(re.compile(r"^Namn")).fill("Demo kommun")
        await page.get_by_label(re.compile(r"^Id\b")).fill(TENANT)
        await page.get_by_role("button", name="Skapa huvudman").click()
        await expect(page.locator("li.next")).to_contain_text("Koppla en källa")

        # The form of an SS 12000 API: address, login, client id and secret.
        await page.get_by_role("link", name="Källor").click()
        await page.get_by_role("link", name="SS 12000-API").click()
        await page.get_by_label(re.compile(r"^Namn")).fill("Elevregistret")
        await page.get_by_label(re.compile(r"^Id\b")).fill("elevregistret")
        await page.get_by_label(re.compile(r"^API-adress")).fill(stack.api.base_url)
        await page.get_by_label(re.compile(r"^Inloggning")).select_option("oauth2")
        await page.get_by_label(re.compile(r"^Token-adress")).fill(stack.api.token_url)
        await page.get_by_label(re.compile(r"^Klient-ID")).fill(stack.api.client_id)
        await page.get_by_label(re.compile(r"^Klienthemlighet")).fill("not-the-secret")
        await shot("ss12000-formular")

        # Test before saving: a wrong secret is refused by the API's token endpoint ...
        await page.get_by_role("button", name="Testa anslutningen utan att spara").click()
        await expect(page.locator("#check-result")).to_contain_text("Anslutningen fungerar inte")
        await shot("test-fel-hemlighet")
        # ... the right one reads the school unit and the persons.
        await page.get_by_label(re.compile(r"^Klienthemlighet")).fill(SECRET)
        await page.get_by_role("button", name="Testa anslutningen utan att spara").click()
        await expect(page.locator("#check-result")).to_contain_text(
            "Anslutningen fungerar: källan svarade med 1 skolenhet och 3 personer."
        )
        await shot("test-ok")
        assert await stack.admin.db["admin_sources"].count_documents({}) == 0  # nothing saved by a test

        # Saved: the puller takes it from the registry and runs it; its first run arrives complete.
        await page.get_by_label(re.compile(r"^Klienthemlighet")).fill(SECRET)
        await page.get_by_role("button", name="Spara källan").click()
        await expect(page.locator(".flash")).to_contain_text("Kopplingen börjar läsa källan inom en minut")
        row = page.get_by_role("row", name=re.compile("Elevregistret"))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # the page does not refresh itself: look again until the run is there
            if "komplett" in await row.inner_text():
                break
            await page.reload()
        await expect(row).to_contain_text("komplett")
        await expect(row).to_contain_text("poster")
        await shot("forsta-korningen")
        stored = await stack.admin.db["admin_sources"].find_one({"source_id": "elevregistret"})
        assert stored is not None
        assert SECRET not in str(stored)  # sealed
    finally:
        await context.close()
