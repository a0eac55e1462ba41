"""The subscription form in headless Chromium (Playwright): an IT admin chooses years 7-9 for a
grundskola and an upper-secondary school, sees the preview warn that the upper-secondary school would
send no students and why, pages through who would be added, changes the school types and group types
instead, and saves; the subscription's page shows the filters. axe-core finds no WCAG 2.x A/AA
violation on the form, the preview with its warning and the subscription's page.

The screenshot of the preview with the warning is saved as ``subscription-form.png`` under
``$SKOLSYNK_TEST_ARTEFACTS/subscription-form`` (default ``tests/artefacts/subscription-form``) for
docs/admin.md, with the whole page at 375 px wide (which must not scroll sideways) as
``subscription-form-narrow.png``."""

from __future__ import annotations

import re

import pytest
from playwright.async_api import Browser, expect

from skolsynk.domain.ss12000 import GroupType, SchoolType
from skolsynk.storage.subscriptions import SubscriptionStore
from skolsynk_services.admin import models
from skolsynk_services.admin.auth import Principal, Role
from skolsynk_testkit.synthetic import school_unit_codes
from tests.connected.test_subscription_form import granmo_organiser
from tests.e2e import test_admin_ui as onboarding
from tests.e2e.accessibility import axe_violations
from tests.e2e.conftest import ARTEFACTS as E2E_ARTEFACTS
from tests.e2e.test_admin_ui import TENANT, VENDOR, Stack

#: The onboarding test's services on the real broker and store (admin, normaliser, NE's dispatcher).
stack = onboarding.stack

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(180)]

ARTEFACTS = E2E_ARTEFACTS / "subscription-form"
STUDENTS = 30  # per unit: with the two teachers, more than one page (50) of who would be added


async def test_the_form_warns_of_years_7_to_9_at_an_upper_secondary_school_and_saves_every_filter(
    stack: Stack, browser: Browser
) -> None:
    stack.records = granmo_organiser(STUDENTS)
    await stack.sync()
    skola, granmo = school_unit_codes(stack.records)
    service = stack.admin.extensions["service"]
    operator = await stack.admin.extensions["tokens"].authenticate(stack.operator)
    assert isinstance(operator, Principal)
    await service.create_tenant(operator, models.TenantIn(tenant_id=TENANT, display_name="Demo kommun"))
    key, _ = await stack.admin.extensions["tokens"].create(
        role=Role.ORGANISER_ADMIN, subject="it-admin@demo-kommun.example", tenant_id=TENANT, created_by="test"
    )
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    context = await browser.new_context(viewport={"width": 1280, "height": 900}, locale="sv-SE")
    page = await context.new_page()
    page.set_default_timeout(10_000)
    console_errors: list[str] = []
    page.on("console", lambda message: console_errors.append(message.text) if message.type == "error" else None)
    problems: list[str] = []
    try:
        await page.goto(stack.base + "/ui/login")
        await page.get_by_label("Åtkomstnyckel").fill(key)
        await page.get_by_role("button", name="Logga in").click()
        await page.get_by_role("link", name="Leverantörer", exact=True).click()
        await page.get_by_role("link", name="Lägg till en leverantör").click()
        await expect(page.get_by_role("heading", name="Lägg till en leverantör")).to_be_visible()
        problems += await axe_violations(page, "the new form")

        # NE, both school units, years 7-9. Each unit says what it has beside its box.
        await page.get_by_label("Leverantör", exact=True).select_option(VENDOR)
        await page.get_by_role("checkbox", name=re.compile(skola)).check()
        granmo_box = page.get_by_role("checkbox", name=re.compile(granmo))
        await granmo_box.check()
        await expect(granmo_box).to_have_accessible_description(
            "Gymnasieskola, årskurs 1\u20133: 30 elever, 1 lärare, 0 övrig personal"
        )
        for year in (7, 8, 9):
            await page.get_by_role("checkbox", name=f"Årskurs {year}", exact=True).check()
        await page.get_by_role("button", name="Förhandsgranska").click()
        preview = page.get_by_role("region", name="Förhandsgranskning (inget är sparat)")
        warning = "Inga elever på Granmogymnasiet: årskurs 7\u20139 finns inte där (skolformen är gymnasieskola)."
        await expect(preview.get_by_text(warning)).to_be_visible()
        await expect(preview.locator(".warnings li")).to_have_count(1)
        await page.get_by_role("heading", name="Kontrollera urvalet").scroll_into_view_if_needed()
        await page.screenshot(path=ARTEFACTS / "subscription-form.png", full_page=False)
        problems += await axe_violations(page, "the preview with a warning")
        # On a phone the preview's tables scroll in their own boxes: the page never scrolls sideways.
        await page.set_viewport_size({"width": 375, "height": 800})
        widths = await page.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth]")
        assert widths[0] <= widths[1], f"the preview is {widths[0]} px wide at {widths[1]} px"
        await page.screenshot(path=ARTEFACTS / "subscription-form-narrow.png", full_page=True)
        await page.set_viewport_size({"width": 1280, "height": 900})
        assert await SubscriptionStore(stack.admin.db).get(TENANT, VENDOR) is None

        # The admin takes every year, of grundskola and gymnasieskola, and classes only: no warning; the
        # list of who would be added has a second page.
        for year in (7, 8, 9):
            await page.get_by_role("checkbox", name=f"Årskurs {year}", exact=True).uncheck()
        await page.get_by_role("checkbox", name="Grundskola (GR)").check()
        await page.get_by_role("checkbox", name="Gymnasieskola (GY)").check()
        await page.get_by_role("checkbox", name="Klass", exact=True).check()
        await page.get_by_role("button", name="Förhandsgranska").click()
        added = 2 * STUDENTS + 2
        await expect(preview.get_by_role("table", name=f"Läggs till: {added} personer")).to_be_visible()
        await expect(preview.locator(".warnings")).to_have_count(0)
        pager = preview.get_by_role("navigation", name=f"Sidor: Läggs till: {added} personer")
        await expect(pager).to_contain_text(f"Visar 1\u201350 av {added}")
        await pager.get_by_role("button", name="2", exact=True).click()
        await expect(pager).to_contain_text(f"Visar 51\u2013{added} av {added}")
        await expect(page.get_by_role("checkbox", name="Klass", exact=True)).to_be_checked()  # the form is kept
        problems += await axe_violations(page, "the preview's second page")
        await preview.get_by_role("button", name="Spara").click()

        await expect(page.locator(".flash")).to_contain_text("Prenumerationen är sparad och i testläge")
        await expect(page.get_by_text("skolformerna grundskola och gymnasieskola · grupptypen klass")).to_be_visible()
        problems += await axe_violations(page, "the subscription's page")
        saved = await SubscriptionStore(stack.admin.db).get(TENANT, VENDOR)
        assert saved is not None
        assert saved.school_types == {SchoolType.GR, SchoolType.GY}
        assert saved.group_types == {GroupType.KLASS}
        assert saved.school_years is None
        assert saved.school_unit_codes == {skola, granmo}
        assert not console_errors, console_errors  # no CSP violation, nothing broken
    except BaseException:
        await page.screenshot(path=ARTEFACTS / "failure.png", full_page=True)
        raise
    finally:
        await context.close()
    assert not problems, "\n".join(problems)
