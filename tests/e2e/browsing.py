"""What the admin UI's browser tests share: a page in a fresh browser context (Swedish, 1280 px wide) that
collects every answer of 400 or above and saves ``failure.png`` when the test fails, and signing in with
a key on the sign-in page."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from playwright.async_api import Browser, Page, expect


def fresh_artefacts(artefacts: Path) -> None:
    """The test's screenshot folder, emptied of an earlier run's screenshots."""
    artefacts.mkdir(parents=True, exist_ok=True)
    for old in artefacts.glob("*.png"):
        old.unlink()


@asynccontextmanager
async def admin_page(browser: Browser, artefacts: Path) -> AsyncIterator[tuple[Page, list[str]]]:
    """A page, and the URLs answered with 400 or above while it is open (assert it is empty). The
    artefacts folder is emptied of earlier screenshots first."""
    fresh_artefacts(artefacts)
    context = await browser.new_context(viewport={"width": 1280, "height": 900}, locale="sv-SE")
    page = await context.new_page()
    page.set_default_timeout(10_000)
    failed: list[str] = []
    page.on("response", lambda response: failed.append(response.url) if response.status >= 400 else None)
    try:
        yield page, failed
    except BaseException:
        await page.screenshot(path=artefacts / "failure.png", full_page=True)
        raise
    finally:
        await context.close()


async def sign_in_with_key(page: Page, base: str, key: str) -> None:
    """Sign in with an access key and wait for the organiser's overview."""
    await page.goto(base + "/ui/login")
    await page.get_by_label("Åtkomstnyckel").fill(key)
    await page.get_by_role("button", name="Logga in").click()
    await expect(page.get_by_role("heading", name="Översikt")).to_be_visible()
