"""The test report in headless Chromium (Playwright): an IT admin saves a subscription to an EGIL vendor and
reads its test report, which says it is being computed (its numbers "so far") until the vendor's dispatcher
has recorded everything, and then when it was ready; pages through the persons, searches one by name,
narrows to a school unit, reads the groups and what the vendor's profile would refuse and why; once the
subscription is live its page has no test report but the deliveries. axe-core finds no WCAG A/AA violation
on any of these pages. Admin, normaliser and dispatcher run in-process on the real broker and the Mongo wire
server. Screenshots under ``$SKOLSYNK_TEST_ARTEFACTS/test-report`` (``test-report.png`` is the docs')."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from playwright.async_api import Browser, expect

from skolsynk.contracts.source import SourceRecord
from skolsynk.domain.ss12000 import EntityKind
from skolsynk.service import ServiceApp
from skolsynk.settings import ServiceSettings
from skolsynk_services.admin.app import AdminSettings
from skolsynk_services.admin.app import build as build_admin
from skolsynk_services.admin.auth import Role, TokenStore
from skolsynk_services.dispatcher.app import DispatcherSettings
from skolsynk_services.dispatcher.app import build as build_dispatcher
from skolsynk_services.normaliser.app import NormaliserSettings
from skolsynk_services.normaliser.app import build as build_normaliser
from skolsynk_testkit.devstack import write_vendor_catalogue
from skolsynk_testkit.fakes.egil_vendor import FakeEgilVendor
from skolsynk_testkit.synthetic import full_run, organiser, school_unit_codes
from tests.e2e.accessibility import no_axe_violations
from tests.e2e.conftest import ARTEFACTS as E2E_ARTEFACTS
from tests.helpers import delete_topology, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(180)]

ARTEFACTS = E2E_ARTEFACTS / "test-report"
SECRETS_KEY = "2mJ3m6mCAxzGzO8Ihc4r3Vxv3Fj0vIYbVwJJmQKkV4g="  # a throwaway Fernet key for tests
API_KEY = "report-ui-key-" + "0" * 16
TENANT = "demo-kommun"
SOURCE = "egil-1"
VENDOR = "laromedel"
VENDOR_NAME = "laromedel (demo)"
STUDENTS = 30  # per school unit: with two teachers each, more than one page (50) of persons
NO_LOGIN = "student-1-7"  # EGIL needs a userName: the vendor's profile would refuse this student
TODAY = datetime(2026, 11, 26, 12, tzinfo=UTC)
DASH = "\u2013"  # between a page's first and last row


def the_organiser() -> list[SourceRecord]:
    records = []
    for record in organiser(seed=3, school_units=2, students_per_unit=STUDENTS, teachers_per_unit=2):
        if record.key == NO_LOGIN:
            record = SourceRecord(kind=record.kind, key=record.key, data={**record.data, "eppn": []})
        records.append(record)
    return records


@dataclass
class Stack:
    admin: ServiceApp
    normaliser: ServiceApp
    dispatcher: ServiceApp
    operator: str
    records: list[SourceRecord]

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.admin.web_ports[0]}"

    async def api(self, method: str, path: str, token: str, body: Any = None) -> Any:
        async with aiohttp.ClientSession() as session:
            headers = {"Authorization": f"Bearer {token}"}
            async with session.request(method, f"{self.base}/api/v1{path}", json=body, headers=headers) as response:
                assert response.status < 300, await response.text()
                return await response.json(content_type=None)

    async def sync(self) -> None:
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

        await wait_for(finalised, timeout=30, interval=0.1, what="the organiser's run")


@pytest.fixture
async def stack(settings: ServiceSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Stack]:
    """Admin, normaliser and the EGIL vendor's dispatcher (holding its changes back until the test lets it
    consume), with the organiser's data synced."""
    vendor = FakeEgilVendor(api_keys={API_KEY: TENANT})
    await vendor.start()
    monkeypatch.setenv("SKOLSYNK_TEST_VENDOR_KEY", API_KEY)
    catalogue = write_vendor_catalogue(
        tmp_path / "vendors", VENDOR, scim_base_url=vendor.base_url, api_key_env="SKOLSYNK_TEST_VENDOR_KEY"
    )
    base = settings.model_dump()
    admin_settings = {"admin_host": "127.0.0.1", "admin_port": 0, "admin_secrets_key": SECRETS_KEY,
                      "admin_promotion_hours": 24, "vendor_catalogue_dir": catalogue}  # fmt: skip
    admin = build_admin(AdminSettings.model_validate({**base, **admin_settings}))
    normaliser = build_normaliser(
        NormaliserSettings.model_validate({**base, "date_check_interval_seconds": 86400}), clock=lambda: TODAY
    )
    dispatcher = build_dispatcher(
        DispatcherSettings.model_validate({**base, "vendor_id": VENDOR, "vendor_catalogue_dir": catalogue})
    )
    dispatcher.extensions["pool"].consuming = False
    apps = [normaliser, dispatcher, admin]
    try:
        for app in apps:
            await app.start()
        operator, _ = await TokenStore(admin.db).create(
            role=Role.OPERATOR, subject="drift@skolsynk.example", tenant_id=None, created_by="test"
        )
        stack = Stack(admin, normaliser, dispatcher, operator, the_organiser())
        await stack.api("POST", "/tenants", operator, {"tenant_id": TENANT, "display_name": "Demo kommun"})
        await stack.sync()
        yield stack
    finally:
        for app in apps:
            await app.drain(1)
        for app in apps:
            await app.close()
        await vendor.stop()
        await delete_topology(settings.broker.amqp_url.get_secret_value(), dispatcher.topology)


async def test_an_admin_reads_a_test_report_that_says_when_it_is_final_and_what_would_be_refused(
    stack: Stack, browser: Browser
) -> None:
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    for old in ARTEFACTS.glob("*.png"):
        old.unlink()
    codes = school_unit_codes(stack.records)
    persons = {r.key: r.data for r in stack.records if r.kind is EntityKind.PERSON}
    key, _ = await TokenStore(stack.admin.db).create(
        role=Role.ORGANISER_ADMIN, subject="it-admin@demo-kommun.example", tenant_id=TENANT, created_by="test"
    )
    context = await browser.new_context(viewport={"width": 1280, "height": 900}, locale="sv-SE")
    page = await context.new_page()
    page.set_default_timeout(10_000)
    console_errors: list[str] = []
    page.on("console", lambda message: console_errors.append(message.text) if message.type == "error" else None)
    failed: list[str] = []
    page.on("response", lambda response: failed.append(response.url) if response.status >= 400 else None)
    try:
        await page.goto(stack.base + "/ui/login")
        await page.get_by_label("Åtkomstnyckel").fill(key)
        await page.get_by_role("button", name="Logga in").click()
        await expect(page.get_by_role("heading", name="Översikt")).to_be_visible()

        # Saved (through the API, as the form would): the vendor's dispatcher has recorded nothing yet, so the
        # report says it is being computed and shows its numbers as those so far.
        await stack.api("PUT", f"/tenants/{TENANT}/subscriptions/{VENDOR}", key,
                        {"school_unit_codes": codes, "roles": ["student", "teacher"]})  # fmt: skip
        subscription = f"{stack.base}/ui/t/{TENANT}/vendors/{VENDOR}"
        await page.goto(subscription)
        report = page.get_by_role("heading", name=re.compile(r"^Testrapport"))
        await expect(report).to_contain_text("Beräknas…")
        state = page.locator(".report-state")
        await expect(state).to_contain_text("hittills")
        await expect(page.get_by_role("table", name="Per skolenhet och roll (hittills)")).to_be_visible()
        await no_axe_violations(page, "the report being computed")
        await page.screenshot(path=ARTEFACTS / "test-report-computing.png", full_page=True)

        # The dispatcher records what it would send: once everything is recorded the report is ready.
        await stack.dispatcher.extensions["pool"].start_consuming()

        async def ready() -> bool:
            await page.goto(subscription)
            return "Klar" in await report.inner_text()

        await wait_for(ready, timeout=60, interval=0.5, what="the test report to be ready")
        await expect(state).to_contain_text(re.compile(r"Klar \d{4}-\d\d-\d\d \d\d:\d\d"))
        await expect(state).not_to_contain_text("hittills")
        everyone = len(persons) - 1  # the student without a login would be refused
        await expect(page.locator(".cards")).to_contain_text(f"{everyone} personer")

        # The persons, 50 a page: the second page has the rest.
        pager = page.get_by_role("navigation", name="Sidor", exact=True)
        await expect(pager).to_contain_text(f"Visar 1{DASH}50 av {everyone}")
        listed = page.get_by_role("table", name=f"Personer som {VENDOR_NAME} skulle få")
        await expect(listed.locator("tbody tr")).to_have_count(50)
        await expect(listed.locator("tbody tr").first).to_contain_text(re.compile(r"-\d+@demo\.skolsynk\.example"))
        await no_axe_violations(page, "the ready report")
        await page.screenshot(path=ARTEFACTS / "test-report.png", full_page=True)
        await pager.get_by_role("link", name="Nästa").click()
        await expect(pager).to_contain_text(f"Visar 51{DASH}{everyone} av {everyone}")
        await expect(listed.locator("tbody tr")).to_have_count(everyone - 50)

        # One person by name ("Förnamn Efternamn"), then one school unit's.
        wanted = persons["student-0-5"]
        name = f"{wanted['given_name']} {wanted['family_name']}"
        await page.get_by_label(re.compile(r"^Sök på namn")).fill(name)
        await page.get_by_role("button", name="Sök", exact=True).click()
        found = page.get_by_role("table", name=re.compile(rf"^Personer som .* sökning ”{name}”"))
        await expect(found).to_contain_text("student-0-5@demo.skolsynk.example")
        await expect(found).to_contain_text(f"Skola 1 ({codes[0]})")
        await page.goto(subscription)
        await page.get_by_label("Skolenhet", exact=True).select_option(label=f"Skola 2 ({codes[1]})")
        await page.get_by_role("button", name="Visa").click()
        at_unit = page.get_by_role("table", name=f"Personer som {VENDOR_NAME} skulle få, Skola 2 ({codes[1]})")
        await expect(at_unit.locator("tbody tr")).to_have_count(STUDENTS - 1 + 2)
        await expect(at_unit).not_to_contain_text(f"Skola 1 ({codes[0]})")

        # The groups, with their type and members; what the vendor's profile would refuse, and why.
        await page.get_by_role("link", name=re.compile(r"^Grupper \(")).click()
        groups = page.get_by_role("table", name=f"Grupper som {VENDOR_NAME} skulle få")
        await expect(groups).to_contain_text("Klass")
        cells = [c.strip() for c in await groups.locator("tbody tr").first.locator("td").all_inner_texts()]
        unit_keys = {f"Skola {n + 1} ({code})": f"unit-{n}" for n, code in enumerate(codes)}
        shown = (cells[0], unit_keys[cells[2]])
        [members] = [len(r.data["memberships"]) for r in stack.records if r.kind is EntityKind.GROUP
                     and (r.data["display_name"], r.data["school_unit"]) == shown]  # fmt: skip
        assert cells[3] == str(members)
        await page.get_by_role("link", name="Skulle avvisas (1)").click()
        refused = page.get_by_role("table", name=f"Det {VENDOR_NAME} skulle avvisa, och varför")
        await expect(refused).to_contain_text(f"{persons[NO_LOGIN]['given_name']} {persons[NO_LOGIN]['family_name']}")
        await expect(refused).to_contain_text("Inloggnings-id (eduPersonPrincipalName) saknas")
        summary = page.get_by_role("table", name="Skulle avvisas av leverantören (1)")
        await expect(summary).to_contain_text("Inloggnings-id (eduPersonPrincipalName) saknas")
        await no_axe_violations(page, "what would be refused")
        await page.screenshot(path=ARTEFACTS / "test-report-refused.png", full_page=True)

        # Live (an operator overrides the gate): no test report, the deliveries instead.
        await stack.api("POST", f"/tenants/{TENANT}/subscriptions/{VENDOR}/go-live", stack.operator,
                        {"override_reason": "the vendor's pilot, agreed"})  # fmt: skip
        await page.goto(subscription)
        await expect(page.get_by_role("heading", name=re.compile(r"Live$"), level=1)).to_be_visible()
        await expect(page.get_by_role("heading", name=re.compile(r"^Testrapport"))).to_have_count(0)
        await expect(page.get_by_text("Inget beräknat än")).to_have_count(0)
        await expect(page.get_by_role("heading", name=re.compile(r"^Leveranser"))).to_be_visible()
        await expect(page.get_by_role("heading", name=f"Hos {VENDOR_NAME}")).to_be_visible()
        await no_axe_violations(page, "a live subscription")
        await page.screenshot(path=ARTEFACTS / "live.png", full_page=True)
        assert not console_errors, console_errors
        assert not failed, failed
    except BaseException:
        await page.screenshot(path=ARTEFACTS / "failure.png", full_page=True)
        raise
    finally:
        await context.close()
