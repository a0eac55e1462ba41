"""The data-quality report in headless Chromium (Playwright), as an IT admin fixing the source from it: the
summary per school unit and code links to its list; filtering by school unit and code finds the duplicated
login naming both persons and the value, with how to fix it for the EGIL client; the CSV for that school
downloads with the filter; a long list pages (page 2); axe-core finds no WCAG A/AA violation; a viewer
sees the same finding without names or values. The admin service and the normaliser run in-process on the
real broker and the Mongo wire server.

The screenshot for the docs is saved as ``$SKOLSYNK_TEST_ARTEFACTS/quality/quality.png`` (default
``tests/artefacts/quality``)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import pytest
from axe_playwright_python.async_playwright import Axe
from playwright.async_api import Browser, Page, expect

from skolsynk.settings import ServiceSettings
from tests.connected.test_quality_report import (
    KEEPER_NAME,
    LOGIN,
    TENANT,
    TWIN,
    TWIN_NAME,
    Report,
    reporting,
    the_organiser,
)
from tests.e2e.accessibility import no_axe_violations
from tests.e2e.conftest import ARTEFACTS as E2E_ARTEFACTS

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(180)]

ARTEFACTS = E2E_ARTEFACTS / "quality"
DASH = "\u2013"  # the pager's "Visar 1-50" has an en dash
#: More students without a login than one page of the report shows (50).
WITHOUT_LOGIN = 60


@pytest.fixture
async def report(settings: ServiceSettings) -> AsyncIterator[Report]:
    async with reporting(
        settings, the_organiser(students_per_unit=60, without_login=WITHOUT_LOGIN), WITHOUT_LOGIN
    ) as r:
        yield r


async def sign_in(page: Page, report: Report, who: str) -> None:
    await page.goto(f"{report.origin}/ui/login")
    await page.get_by_label("Åtkomstnyckel").fill(report.tokens[who])
    await page.get_by_role("button", name="Logga in").click()
    await expect(page.get_by_role("heading", name="Översikt")).to_be_visible()


async def test_an_admin_finds_the_duplicate_login_by_unit_and_code_and_pages_through_the_rest(
    report: Report, browser: Browser
) -> None:
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    unit = report.unit_codes["unit-1"]
    context = await browser.new_context(viewport={"width": 1280, "height": 900}, locale="sv-SE", accept_downloads=True)
    page = await context.new_page()
    page.set_default_timeout(10_000)
    failed: list[str] = []
    page.on("response", lambda response: failed.append(response.url) if response.status >= 400 else None)
    axe = Axe()
    try:
        await sign_in(page, report, "admin")
        await page.get_by_role("navigation", name="Huvudmannens sidor").get_by_role("link", name="Datakvalitet").click()
        await expect(page.get_by_role("heading", name="Datakvalitet", level=1)).to_be_visible()

        # The summary: a row per school unit, a column per kind of finding; each count links to its list.
        summary = page.get_by_role("table", name="Anmärkningar per skolenhet och typ av anmärkning")
        await expect(
            summary.get_by_role("columnheader", name="Samma inloggnings-id (EPPN) som en annan person")
        ).to_be_visible()
        await expect(summary.get_by_role("rowheader", name=re.compile(rf"\({unit}\)"))).to_be_visible()
        await no_axe_violations(page, "the report", axe)

        # Filter by school unit and code: the duplicate names both persons and the login they share.
        await page.get_by_label("Skolenhet", exact=True).select_option(unit)
        await page.get_by_label("Typ av anmärkning").select_option("eppn.duplicate")
        await page.get_by_role("button", name="Visa").click()
        findings = page.get_by_role("table", name=re.compile(r"^Anmärkningar \(filtrerade\): 1$"))
        await expect(findings).to_be_visible()
        [row] = await findings.locator("tbody tr").all()
        await expect(row).to_contain_text("Samma inloggnings-id (EPPN) som en annan person")
        await expect(row).to_contain_text(TWIN_NAME)
        await expect(row).to_contain_text(f"nyckel i källan: {TWIN}")
        await expect(row).to_contain_text(LOGIN.upper())
        await expect(row.locator(".other")).to_contain_text(f"Samma värde som: {KEEPER_NAME}")
        await row.get_by_text("Så rättar du").click()  # opens the fix, for the EGIL client the source is
        await expect(row.locator("details p")).to_contain_text("elevregistret")
        await page.screenshot(path=ARTEFACTS / "quality.png", full_page=True)
        await no_axe_violations(page, "the filtered report", axe)

        # The CSV for that school: the same filter, the file named after the unit.
        async with page.expect_download() as download_info:
            await page.get_by_role("link", name="Ladda ner listan som CSV-fil").click()
        download = await download_info.value
        assert download.suggested_filename == f"datakvalitet-{TENANT}-{unit}.csv"
        path = await download.path()
        raw = path.read_bytes()
        assert raw.startswith("\ufeff".encode())  # Swedish Excel reads UTF-8 with a byte-order mark
        text = raw.decode("utf-8-sig")
        assert TWIN_NAME in text
        assert KEEPER_NAME in text
        assert text.count("\r\n") == 2  # the header and the one finding

        # A search by name is posted: the name never reaches the address.
        await page.get_by_role("link", name="Rensa filtret").click()
        await page.get_by_label("Sök", exact=True).fill("lindholm ture")
        await page.get_by_role("button", name="Visa").click()
        hits = page.get_by_role("table", name=re.compile(r"^Anmärkningar \(filtrerade\): \d+$"))
        await expect(hits).to_contain_text(TWIN_NAME)
        assert "lindholm" not in page.url.lower()
        await no_axe_violations(page, "a search", axe)

        # The whole list of students without a login pages: 60 findings, 50 a page.
        await page.get_by_role("link", name="Rensa filtret").click()
        await page.get_by_label("Typ av anmärkning").select_option("eppn.missing")
        await page.get_by_role("button", name="Visa").click()
        await expect(page.get_by_role("table", name=f"Anmärkningar (filtrerade): {WITHOUT_LOGIN}")).to_be_visible()
        pager = page.get_by_role("navigation", name="Sidor", exact=True)
        await expect(pager).to_contain_text(f"Visar 1{DASH}50 av {WITHOUT_LOGIN}")
        first_page = await page.locator("table:has(caption) tbody tr").count()
        await pager.get_by_role("link", name="Nästa").click()
        await expect(pager).to_contain_text(f"Visar 51{DASH}{WITHOUT_LOGIN} av {WITHOUT_LOGIN}")
        assert page.url.endswith("sida=2")
        assert "code=eppn.missing" in page.url  # the filter is kept
        rows = page.get_by_role("table", name=f"Anmärkningar (filtrerade): {WITHOUT_LOGIN}").locator("tbody tr")
        await expect(rows).to_have_count(WITHOUT_LOGIN - 50)
        assert first_page > 0
        await no_axe_violations(page, "page 2", axe)
        assert not failed, failed

        # A viewer sees the same finding by code and key, without names or the value.
        await page.get_by_role("button", name="Logga ut").click()
        await sign_in(page, report, "viewer")
        await page.goto(f"{report.origin}/ui/t/{TENANT}/quality?school_unit={unit}&code=eppn.duplicate")
        [row] = (
            await page.get_by_role("table", name=re.compile(r"^Anmärkningar \(filtrerade\): 1$"))
            .locator("tbody tr")
            .all()
        )
        await expect(row).to_contain_text(f"nyckel i källan: {TWIN}")
        for personal in (TWIN_NAME, KEEPER_NAME, LOGIN.upper()):
            await expect(page.locator("main")).not_to_contain_text(personal)
        await no_axe_violations(page, "the viewer's report", axe)
        # ... and may search (a search changes nothing), by the source's key, not by name.
        await page.get_by_label("Sök", exact=True).fill(TWIN)
        await page.get_by_role("button", name="Visa").click()
        await expect(page.locator("main")).to_contain_text(f"nyckel i källan: {TWIN}")
    except BaseException:
        await page.screenshot(path=ARTEFACTS / "failure.png", full_page=True)
        raise
    finally:
        await context.close()
