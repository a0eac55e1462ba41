"""The person page in headless Chromium: "varför syns inte Alma hos Binogi?". The organiser's IT admin
searches "Alma Bergman" under Personer, opens her, and reads per subscription a plain Swedish verdict
that names the rule: Binogi's subscription does not include her school unit, NE's does (in test mode,
recorded by NE's dispatcher). axe-core finds no WCAG A/AA violation on the search or the person page. The
admin service, the normaliser and NE's dispatcher run in-process on the real broker and the Mongo wire
server (the onboarding test's stack).

Screenshots under ``$SKOLSYNK_TEST_ARTEFACTS/person`` (default ``tests/artefacts/person``); ``person.png``
is the person page that docs/admin.md shows."""

from __future__ import annotations

import pytest
from axe_playwright_python.async_playwright import Axe
from playwright.async_api import Browser, expect

from skolsynk.contracts.source import SourceRecord
from skolsynk.domain.ids import entity_id
from skolsynk.domain.ss12000 import EntityKind
from skolsynk.storage.deliveries import DeliveryLedger
from skolsynk_services.admin import models
from skolsynk_services.admin.auth import Principal, Role, TokenStore
from skolsynk_testkit.synthetic import school_unit_codes
from tests.e2e import test_admin_ui as onboarding
from tests.e2e.accessibility import no_axe_violations
from tests.e2e.browsing import admin_page, sign_in_with_key
from tests.e2e.conftest import ARTEFACTS as E2E_ARTEFACTS
from tests.e2e.test_admin_ui import SOURCE, TENANT, VENDOR, Stack
from tests.helpers import wait_for

#: The onboarding test's services on the real broker and store (admin, normaliser, NE's dispatcher).
stack = onboarding.stack

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(180)]

ARTEFACTS = E2E_ARTEFACTS / "person"
ADMIN = "anna.admin@demo-kommun.example"
#: A vendor without a dispatcher here, whose subscription leaves Alma's school unit out.
OTHER = "binogi"
ALMA = "student-0-0"


async def two_subscriptions(stack: Stack) -> str:
    """The organiser (the first student renamed Alma Bergman), its source, NE with Alma's school unit and
    Binogi with the other one, both in test mode; NE's dispatcher has recorded Alma. Returns the admin's key."""
    stack.records = [
        SourceRecord(kind=r.kind, key=r.key, data={**r.data, "given_name": "Alma", "family_name": "Bergman"})
        if r.key == ALMA
        else r
        for r in stack.records
    ]
    await stack.sync()
    service = stack.admin.extensions["service"]
    tokens: TokenStore = stack.admin.extensions["tokens"]
    operator = await tokens.authenticate(stack.operator)
    assert isinstance(operator, Principal)
    await service.create_tenant(operator, models.TenantIn(tenant_id=TENANT, display_name="Demo kommun"))
    source = models.SourceIn(source_id=SOURCE, kind="egil", display_name="Elevregistret via EGIL")
    await service.save_source(operator, TENANT, source, create=True)
    key, _ = await tokens.create(role=Role.ORGANISER_ADMIN, subject=ADMIN, tenant_id=TENANT, created_by="test")
    admin = Principal(ADMIN, Role.ORGANISER_ADMIN, TENANT)
    codes = school_unit_codes(stack.records)
    await service.save_subscription(admin, TENANT, VENDOR, models.SubscriptionIn(school_unit_codes=codes[:1]))
    await service.save_subscription(admin, TENANT, OTHER, models.SubscriptionIn(school_unit_codes=codes[1:]))
    ledger = DeliveryLedger(stack.admin.db, VENDOR)
    alma = entity_id(TENANT, SOURCE, EntityKind.PERSON, ALMA)

    async def recorded() -> bool:
        return await ledger.get(TENANT, alma) is not None

    await wait_for(recorded, timeout=30, interval=0.2, what="NE's dispatcher to record Alma")
    return str(key)


async def test_an_admin_finds_a_person_and_reads_why_each_vendor_has_them_or_not(
    stack: Stack, browser: Browser
) -> None:
    key = await two_subscriptions(stack)
    axe = Axe()
    async with admin_page(browser, ARTEFACTS) as (page, failed):
        await sign_in_with_key(page, stack.base, key)

        # Personer: search by first and family name; the name never goes into the URL.
        await page.get_by_role("link", name="Personer").click()
        await expect(page.get_by_role("heading", name="Personer", level=1)).to_be_visible()
        await page.get_by_label("Sök person").fill("Alma Bergman")
        await page.get_by_role("button", name="Sök", exact=True).click()
        found = page.get_by_role("table", name="Personer som matchar ”Alma Bergman” (1)")
        await expect(found.get_by_role("row")).to_have_count(2)
        assert "Alma" not in page.url
        await no_axe_violations(page, "Personer", axe)
        await page.screenshot(path=ARTEFACTS / "personer.png", full_page=True)

        # Her page: per subscription a verdict that names the rule.
        await found.get_by_role("link", name="Alma Bergman").click()
        await expect(page.get_by_role("heading", name="Alma Bergman", level=1)).to_be_visible()
        excluded = page.locator(f"li.verdict[data-vendor='{OTHER}']")
        await expect(excluded.locator("strong")).to_have_text(
            "Skickas inte till Binogi: Skola 1 ingår inte i urvalet (testläge: skickas inte på riktigt)"
        )
        included = page.locator(f"li.verdict[data-vendor='{VENDOR}']")
        await expect(included.locator("strong")).to_have_text(
            "Skickas till NE Nationalencyklopedin (testläge: skickas inte på riktigt)"
        )
        await expect(included.locator("ul.reasons")).to_contain_text("I urvalet som elev vid Skola 1")
        await expect(page.get_by_role("table", name="Poster i källorna")).to_contain_text(ALMA)
        deliveries = page.get_by_role("table", name="Leveranser (1)")
        await expect(deliveries).to_contain_text("NE Nationalencyklopedin")
        await expect(deliveries).to_contain_text("Registrerad i testläge")
        await no_axe_violations(page, "the person page", axe)
        await page.screenshot(path=ARTEFACTS / "person.png", full_page=True)
        assert not failed, failed
