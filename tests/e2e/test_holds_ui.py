"""A hold in headless Chromium: the organiser's IT admin narrows a subscription to teachers, which would
remove every student of both school units at the vendor; the guard holds the removals. On Spärrar the
admin sees both holds caused by their own change (not the source's), opens one, reads whom it affects by
name (searchable) and why, approves it, and finds the decision in the history. axe-core finds no WCAG
A/AA violation on the pages on the way. The admin service, the normaliser and the vendor's dispatcher run
in-process on the real broker and the Mongo wire server (the onboarding test's stack).

Screenshots under ``$SKOLSYNK_TEST_ARTEFACTS/holds`` (default ``tests/artefacts/holds``); ``holds.png`` is
the hold's page that docs/admin.md shows."""

from __future__ import annotations

import re

import pytest
from axe_playwright_python.async_playwright import Axe
from playwright.async_api import Browser, expect

from skolsynk_services.admin import models
from skolsynk_services.admin.auth import Principal, Role, TokenStore
from skolsynk_testkit.synthetic import school_unit_codes
from tests.e2e import test_admin_ui as onboarding
from tests.e2e.accessibility import no_axe_violations
from tests.e2e.browsing import admin_page, sign_in_with_key
from tests.e2e.conftest import ARTEFACTS as E2E_ARTEFACTS
from tests.e2e.test_admin_ui import SOURCE, TENANT, VENDOR, Stack
from tests.helpers import wait_for

#: The onboarding test's services on the real broker and store (admin, normaliser, dispatcher).
stack = onboarding.stack

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(180)]

ARTEFACTS = E2E_ARTEFACTS / "holds"
ADMIN = "anna.admin@demo-kommun.example"


async def held_by_the_admins_change(stack: Stack) -> str:
    """The organiser, its source, a subscription of every student and teacher, then the IT admin's change
    to teachers only (through the service, as the subscription form would): two holds. Returns the admin's key."""
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
    await service.save_subscription(admin, TENANT, VENDOR, models.SubscriptionIn(school_unit_codes=codes))
    views = stack.normaliser.db["vendor_views"]

    async def selected() -> bool:
        return await views.count_documents({"vendor_id": VENDOR, "kind": "person", "present": True}) == 14

    await wait_for(selected, timeout=30, interval=0.2, what="the subscription's selection")
    narrowed = models.SubscriptionIn(school_unit_codes=codes, roles=["teacher"])
    await service.save_subscription(admin, TENANT, VENDOR, narrowed)

    async def held() -> bool:
        return len(await service.holds(admin, TENANT)) == 2

    await wait_for(held, timeout=30, interval=0.2, what="the two holds")
    return str(key)


async def test_an_admin_sees_whom_a_hold_affects_and_why_decides_it_and_finds_it_in_the_history(
    stack: Stack, browser: Browser
) -> None:
    key = await held_by_the_admins_change(stack)
    students = [r for r in stack.records if r.key.startswith("student-0-")]
    names = [f"{r.data['given_name']} {r.data['family_name']}" for r in students]
    axe = Axe()
    async with admin_page(browser, ARTEFACTS) as (page, failed):
        await sign_in_with_key(page, stack.base, key)

        # Spärrar: both holds, caused by the admin's own change.
        await page.get_by_role("link", name="Spärrar").click()
        open_holds = page.get_by_role("table", name="Öppna spärrar (2)")
        await expect(open_holds.get_by_role("row")).to_have_count(3)
        await expect(open_holds.get_by_role("cell", name=f"Ändring av {ADMIN}")).to_have_count(2)
        await no_axe_violations(page, "Spärrar", axe)
        await page.screenshot(path=ARTEFACTS / "sparrar.png", full_page=True)

        # One hold: why, and whom it affects by name.
        await open_holds.get_by_role("link", name=re.compile(r"^Granska spärren för .* vid Skola 1 ")).click()
        await expect(page.get_by_role("heading", level=1)).to_contain_text("Spärr: NE Nationalencyklopedin vid Skola 1")
        await expect(page.locator("ul.causes")).to_contain_text(
            f"inte från källan: {ADMIN} ändrade en prenumeration (NE Nationalencyklopedin)"
        )
        affected = page.get_by_role("table", name="Berörda (6)")
        await expect(affected.get_by_role("row")).to_have_count(7)
        for name in names:
            await expect(affected.get_by_role("cell", name=name, exact=True)).to_be_visible()
        await expect(affected.get_by_role("cell", name="Ingår inte längre i urvalet")).to_have_count(6)
        await no_axe_violations(page, "the hold", axe)
        await page.screenshot(path=ARTEFACTS / "holds.png", full_page=True)

        # Search among them by family name.
        family = str(students[0].data["family_name"])
        await page.get_by_label(re.compile(r"^Sök bland dem som berörs")).fill(family)
        await page.get_by_role("button", name="Sök", exact=True).click()
        searched = page.get_by_role("table", name=re.compile(r"^Berörda \("))
        await expect(searched.get_by_role("cell", name=names[0], exact=True)).to_be_visible()
        expected = sum(1 for r in students if family.lower() in str(r.data["family_name"]).lower())
        await expect(searched.get_by_role("row")).to_have_count(1 + expected)

        # Approve: the removals go out, and the decision is in the history.
        await page.get_by_role("button", name="Godkänn").click()
        await expect(page.locator(".flash")).to_contain_text("Borttagningarna är godkända")
        history = page.get_by_role("table", name="Beslut och avslutade spärrar, nyaste först")
        await expect(history.get_by_role("row")).to_have_count(2)
        await expect(history).to_contain_text("Godkänd")
        await expect(history).to_contain_text(ADMIN)
        await expect(history).to_contain_text(f"Ändring av {ADMIN}")
        service = stack.admin.extensions["service"]
        admin = Principal(ADMIN, Role.ORGANISER_ADMIN, TENANT)

        async def closed() -> bool:  # the projection the decision asked for sent the removals
            return len(await service.holds(admin, TENANT)) == 1

        await wait_for(closed, timeout=30, interval=0.2, what="the approved hold to close")
        await page.reload()
        await expect(page.get_by_role("table", name="Öppna spärrar (1)")).to_be_visible()
        await expect(history.get_by_role("row")).to_have_count(2)
        await no_axe_violations(page, "Spärrar with its history", axe)
        await page.screenshot(path=ARTEFACTS / "sparrar-historik.png", full_page=True)
        assert not failed, failed
