"""The admin web UI end to end in headless Chromium (Playwright): an operator creates an organiser and
hands its IT admin a key; the IT admin connects the source, reads the data-quality report, chooses a
vendor and school units with a preview, reads the test report, marks it reviewed, is held by the
promotion gate until the test period has passed, and goes live. The admin service, the normaliser and
the vendor's dispatcher run in-process on the real broker and the Mongo wire server; the organiser's
data comes from a synthetic EGIL run through the real normaliser.

A screenshot of every step is saved under ``$SKOLSYNK_TEST_ARTEFACTS/admin-ui`` (default
``tests/artefacts/admin-ui``)."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, expect

from skolsynk.contracts.source import SourceRecord
from skolsynk.service import ServiceApp
from skolsynk.settings import ServiceSettings
from skolsynk.storage.deliveries import DeliveryLedger
from skolsynk.storage.subscriptions import SubscriptionStore
from skolsynk_services.admin.app import AdminSettings
from skolsynk_services.admin.app import build as build_admin
from skolsynk_services.admin.auth import Role, TokenStore
from skolsynk_services.dispatcher.app import DispatcherSettings
from skolsynk_services.dispatcher.app import build as build_dispatcher
from skolsynk_services.normaliser.app import NormaliserSettings
from skolsynk_services.normaliser.app import build as build_normaliser
from skolsynk_testkit.synthetic import full_run, organiser, school_unit_codes
from tests.e2e.conftest import ARTEFACTS as E2E_ARTEFACTS
from tests.helpers import delete_topology, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(120)]

REPO_ROOT = Path(__file__).resolve().parents[2]
ARTEFACTS = E2E_ARTEFACTS / "admin-ui"
SECRETS_KEY = "2mJ3m6mCAxzGzO8Ihc4r3Vxv3Fj0vIYbVwJJmQKkV4g="  # a throwaway Fernet key for tests

TENANT = "demo-kommun"
SOURCE = "egil-1"
VENDOR = "ne"  # a queue vendor from deploy/vendors: live deliveries land in its feed queue
PERSONS = 14  # 2 school units x (6 students + 1 teacher)


def the_organiser() -> list[SourceRecord]:
    """Two school units; one student without a login (EPPN), which the data-quality report shows."""
    records = []
    for record in organiser(seed=7, school_units=2, students_per_unit=6, teachers_per_unit=1):
        if record.key == "student-1-3":
            record = SourceRecord(kind=record.kind, key=record.key, data={**record.data, "eppn": []})
        records.append(record)
    return records


@dataclass
class Stack:
    settings: ServiceSettings
    admin: ServiceApp
    normaliser: ServiceApp
    dispatcher: ServiceApp
    clock: list[timedelta]
    operator: str
    records: list[SourceRecord] = field(default_factory=the_organiser)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.admin.web_ports[0]}"

    async def sync(self) -> None:
        """The organiser's EGIL client pushes a complete snapshot; wait until the normaliser has it."""
        run_id = uuid.uuid4()
        for message in full_run(self.records, source_id=SOURCE, source_kind="egil", run_id=run_id):
            await self.normaliser.publisher.publish(
                message.to_envelope(tenant_id=TENANT, producer="test"),
                exchange=self.normaliser.topology.exchange("source"),
                routing_key=f"egil.{TENANT}",
            )

        async def finalised() -> bool:
            run = await self.normaliser.db["runs"].find_one({"_id": str(run_id)})
            return run is not None and run.get("status") == "finalised"

        await wait_for(finalised, timeout=30, interval=0.1, what="the organiser's first run")

    async def deliveries(self, *, test: bool) -> int:
        entries = await DeliveryLedger(self.admin.db, VENDOR).entries(TENANT, test=test)
        return sum(1 for e in entries if e["kind"] == "person" and e["operation"] == "upsert")


@pytest.fixture
async def stack(settings: ServiceSettings, vendor_vhosts: Callable[[str], Awaitable[str]]) -> AsyncIterator[Stack]:
    await vendor_vhosts(VENDOR)  # the queue vendor's own vhost, for its feed (deleted with it afterwards)
    base = settings.model_dump()
    clock = [timedelta(0)]  # how far the admin service's clock runs ahead (the gate's test period)
    catalogue = REPO_ROOT / "deploy" / "vendors"
    admin_settings = {"admin_host": "127.0.0.1", "admin_port": 0, "admin_secrets_key": SECRETS_KEY,
                      "admin_promotion_hours": 24, "vendor_catalogue_dir": catalogue}  # fmt: skip
    admin = build_admin(
        AdminSettings.model_validate({**base, **admin_settings}), clock=lambda: datetime.now(UTC) + clock[0]
    )
    normaliser = build_normaliser(NormaliserSettings.model_validate({**base, "date_check_interval_seconds": 86400}))
    dispatcher = build_dispatcher(
        DispatcherSettings.model_validate({**base, "vendor_id": VENDOR, "vendor_catalogue_dir": catalogue})
    )
    apps = [normaliser, dispatcher, admin]
    try:
        for app in apps:
            await app.start()
        operator, _ = await TokenStore(admin.db).create(
            role=Role.OPERATOR, subject="drift@skolsynk.example", tenant_id=None, created_by="test"
        )
        yield Stack(settings, admin, normaliser, dispatcher, clock, operator)
    finally:
        for app in apps:
            await app.drain(1)
        for app in apps:
            await app.close()
        url = settings.broker.amqp_url.get_secret_value()
        await delete_topology(url, dispatcher.topology)  # the system topology plus the vendor's queues


class Screens:
    """Numbered full-page screenshots, one per step."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.taken = 0
        ARTEFACTS.mkdir(parents=True, exist_ok=True)
        for old in ARTEFACTS.glob("*.png"):
            old.unlink()

    async def __call__(self, name: str) -> None:
        self.taken += 1
        await self.page.screenshot(path=ARTEFACTS / f"{self.taken:02d}-{name}.png", full_page=True)


async def flash(page: Page, text: str) -> None:
    await expect(page.locator(".flash")).to_contain_text(text)


async def test_an_organiser_is_onboarded_through_to_live_in_the_browser(stack: Stack, browser: Browser):
    await stack.sync()
    codes = school_unit_codes(stack.records)
    context = await browser.new_context(viewport={"width": 1280, "height": 900}, locale="sv-SE")
    page = await context.new_page()
    page.set_default_timeout(10_000)
    console_errors: list[str] = []
    page.on("console", lambda message: console_errors.append(message.text) if message.type == "error" else None)
    failed: list[str] = []
    page.on("response", lambda response: failed.append(response.url) if response.status >= 400 else None)
    shot = Screens(page)
    try:
        # The operator signs in (the service's root leads to the sign-in page) and creates the organiser.
        await page.goto(stack.base + "/")
        await expect(page.get_by_role("heading", name="Logga in")).to_be_visible()
        await shot("logga-in")
        await page.get_by_label("Åtkomstnyckel").fill(stack.operator)
        await page.get_by_role("button", name="Logga in").click()
        await expect(page.get_by_role("heading", name="Huvudmän")).to_be_visible()
        await page.get_by_label(re.compile(r"^Namn")).fill("Demo kommun")
        await page.get_by_label(re.compile(r"^Id\b")).fill(TENANT)
        await page.get_by_label("Organisationsnummer (valfritt)").fill("212000-0001")
        await shot("skapa-huvudman")
        await page.get_by_role("button", name="Skapa huvudman").click()
        await flash(page, "Huvudmannen Demo kommun är skapad.")
        await expect(page.get_by_role("heading", name="Översikt")).to_be_visible()
        await shot("oversikt-ny")

        # ... and gives the organiser's IT admin a key, shown once.
        await page.get_by_role("link", name="Åtkomst").click()
        await page.get_by_label(re.compile(r"^Till vem")).fill("it-admin@demo-kommun.example")
        await page.get_by_role("button", name="Skapa nyckel").click()
        key = (await page.locator("#new-token").inner_text()).strip()
        assert key.startswith("skt_")
        await shot("atkomstnyckel")
        await page.get_by_role("button", name="Logga ut").click()
        await flash(page, "Du är utloggad.")

        # The IT admin signs in and lands on the organiser's checklist.
        await page.get_by_label("Åtkomstnyckel").fill(key)
        await page.get_by_role("button", name="Logga in").click()
        await expect(page.get_by_role("heading", name="Översikt")).to_be_visible()
        assert page.url.endswith(f"/ui/t/{TENANT}/")
        await expect(page.locator("li.next")).to_contain_text("Koppla en källa")

        # 1. Connect the source: the EGIL client that has pushed the snapshot.
        await page.get_by_role("link", name="Källor").click()
        await page.get_by_role("link", name="EGIL-klient").click()
        await page.get_by_label(re.compile(r"^Namn")).fill("Elevregistret via EGIL")
        await page.get_by_label(re.compile(r"^Id\b")).fill(SOURCE)
        await shot("lagg-till-kalla")
        await page.get_by_role("button", name="Spara källan").click()
        await flash(page, "Källan Elevregistret via EGIL är sparad.")
        runs = page.get_by_role("table", name="Senaste körningarna, nyaste först")
        await expect(runs.get_by_role("row")).to_have_count(2)
        await expect(runs).to_contain_text("komplett")
        await expect(page.locator("figure.chart > svg > rect")).to_have_count(1)
        await shot("kallor")

        # 2. Data quality: the student without a login is reported, and the filter narrows to warnings.
        await page.get_by_role("link", name="Datakvalitet").click()
        findings = page.get_by_role("table", name=re.compile(r"^Anmärkningar( \(filtrerade\))?:"))
        await expect(findings).to_contain_text("Inloggnings-id (EPPN) saknas")
        await page.get_by_label("Allvarlighet").select_option("warning")
        await page.get_by_role("button", name="Visa").click()
        await expect(findings).to_contain_text("(filtrerade)")
        await expect(findings.get_by_role("cell", name="Fel", exact=True)).to_have_count(0)
        await shot("datakvalitet")

        # 3. Choose the vendor, school units and roles; preview before saving.
        await page.get_by_role("link", name="Leverantörer").click()
        await page.get_by_role("link", name="Lägg till en leverantör").click()
        await page.get_by_label("Leverantör", exact=True).select_option(VENDOR)
        for code in codes:
            await page.get_by_role("checkbox", name=re.compile(code)).check()
        await expect(page.get_by_role("checkbox", name="Elever")).to_be_checked()
        await page.get_by_role("button", name="Förhandsgranska").click()
        preview = page.get_by_role("region", name="Förhandsgranskning (inget är sparat)")
        await expect(preview.get_by_role("table", name=f"Läggs till: {PERSONS} personer")).to_be_visible()
        await expect(preview.get_by_role("table", name="Tas bort: 0 personer")).to_be_visible()
        assert await SubscriptionStore(stack.admin.db).get(TENANT, VENDOR) is None
        await shot("forhandsgranskning")
        await preview.get_by_role("button", name="Spara").click()

        # 4. Test mode: the dispatcher records what it would send; the test report shows it.
        await flash(page, "Prenumerationen är sparad och i testläge")
        await expect(page.get_by_role("heading", name="NE Nationalencyklopedin Testläge")).to_be_visible()

        async def recorded() -> bool:
            return await stack.deliveries(test=True) == PERSONS

        await wait_for(recorded, timeout=30, interval=0.2, what="the test deliveries")
        await page.reload()
        per_unit = page.get_by_role("table", name="Per skolenhet och roll")
        await expect(per_unit).to_contain_text("Skola 1 (")
        await expect(per_unit).to_contain_text("Elever")
        await shot("testrapport")

        # 5. Review the test report. The gate still holds: the test period has not passed.
        await page.get_by_role("button", name="Markera som granskad").click()
        await flash(page, "Testrapporten är markerad som granskad.")
        go_live = page.get_by_role("button", name="Gå live", exact=True)
        await expect(go_live).to_be_disabled()
        await expect(page.locator("#gate-blockers")).to_contain_text("Testläget har pågått i 0 av de 24 timmar")
        await expect(page.get_by_text("Gå live trots spärren")).to_have_count(0)
        await shot("sparren-stangd")
        # The server holds too, whatever the browser does with the button.
        await go_live.evaluate("button => button.removeAttribute('disabled')")
        await go_live.click()
        await flash(page, "Prenumerationen kan inte gå live än: Testläget har pågått i")
        subscription = await SubscriptionStore(stack.admin.db).get(TENANT, VENDOR)
        assert subscription is not None
        assert subscription.test_mode
        await shot("sparren-haller")

        # 6. A day later the gate opens; the IT admin's session has ended (idle, and past its age), so the page
        # asks for the key again and comes back to the subscription; the IT admin goes live.
        stack.clock[0] = timedelta(hours=25)
        await page.reload()
        await expect(page.get_by_role("heading", name="Logga in")).to_be_visible()
        await page.get_by_label("Åtkomstnyckel").fill(key)
        await page.get_by_role("button", name="Logga in").click()
        await expect(go_live).to_be_enabled()
        await expect(page.locator("#gate-blockers")).to_have_count(0)
        await go_live.click()
        await flash(page, "Prenumerationen är live.")
        await expect(page.get_by_role("heading", name="NE Nationalencyklopedin Live")).to_be_visible()
        await shot("live")
        subscription = await SubscriptionStore(stack.admin.db).get(TENANT, VENDOR)
        assert subscription is not None
        assert not subscription.test_mode

        async def delivered() -> bool:
            return await stack.deliveries(test=False) == PERSONS

        await wait_for(delivered, timeout=30, interval=0.2, what="the live deliveries")

        # Every step of the checklist is done, and the log tells who did what.
        await page.get_by_role("link", name="Översikt").click()
        await expect(page.locator("ol.checklist .tag.ok")).to_have_count(6)
        await shot("oversikt-klar")
        await page.get_by_role("link", name="Logg").click()
        log = page.get_by_role("table", name=re.compile(r"^Ändringar"))
        await expect(log).to_contain_text("Gick live")
        await expect(log).to_contain_text("it-admin@demo-kommun.example")
        await shot("logg")
        assert not console_errors, console_errors  # no CSP violation, nothing broken
        assert not failed, failed
    except BaseException:
        await page.screenshot(path=ARTEFACTS / "failure.png", full_page=True)
        raise
    finally:
        await context.close()
