"""Every page of the admin web UI on a phone-sized screen (375 x 800 CSS pixels) in headless Chromium,
with data in it: the page never scrolls sideways (a wide table scrolls inside its own ``.table-wrap``)
and axe-core finds no WCAG 2.x A/AA violation. The pages are every GET route of the UI (a route this
test does not know fails it, so a new page is measured too), seen by an operator, plus the sign-in
page and an error page.

A screenshot of each page is saved as ``narrow-<page>.png`` under ``$SKOLSYNK_TEST_ARTEFACTS/narrow``
(default ``tests/artefacts/narrow``)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from axe_playwright_python.async_playwright import Axe
from playwright.async_api import Browser, Page

from skolsynk.storage.entities import ENTITIES
from skolsynk.storage.erasures import ErasureLedger, ErasureRequestStore
from skolsynk_services.admin import models
from skolsynk_services.admin.auth import Principal
from skolsynk_services.admin.stores import AuditLog
from skolsynk_services.admin.ui import build_ui
from skolsynk_testkit.synthetic import school_unit_codes
from tests.e2e import test_admin_ui as onboarding
from tests.e2e.accessibility import WCAG
from tests.e2e.conftest import ARTEFACTS as E2E_ARTEFACTS
from tests.e2e.test_admin_ui import SOURCE, TENANT, VENDOR, Stack

#: The onboarding test's services on the real broker and store (admin, normaliser, dispatcher).
stack = onboarding.stack

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(240)]

ARTEFACTS = E2E_ARTEFACTS / "narrow"
WIDTH, HEIGHT = 375, 800
#: GET routes that are no page: downloads, redirects to and back from Microsoft's admin consent and an OpenID
#: Connect provider's sign-in.
NOT_PAGES = {"findings_csv", "delivery_report", "evidence", "microsoft_consent_done", "logout", "oidc_start",
             "oidc_callback"}  # fmt: skip
PULLED = "ss12000-1"
#: The vendor of the seeded hold: one without a subscription, whose projections would decide its holds again.
HELD = "gleerups"

#: The element that sticks out furthest to the right, outside any box that scrolls or clips it.
WIDEST = """() => {
  const width = document.documentElement.clientWidth;
  let widest = null, right = width;
  for (const element of document.body.querySelectorAll('*')) {
    const box = element.getBoundingClientRect();
    if (box.right <= right + 0.5) continue;
    let clipped = false;
    for (let up = element.parentElement; up && up !== document.body; up = up.parentElement) {
      if (getComputedStyle(up).overflowX !== 'visible') { clipped = true; break; }
    }
    if (!clipped) { right = box.right; widest = element; }
  }
  if (widest === null) {  // no box sticks out: the element whose content (a long word) overflows it furthest
    for (const element of document.body.querySelectorAll('*')) {
      const reach = element.getBoundingClientRect().left + element.scrollWidth;
      if (reach > right + 0.5 && getComputedStyle(element).overflowX === 'visible') { right = reach; widest = element; }
    }
  }
  if (widest === null) return null;
  const classes = typeof widest.className === 'string' ? widest.className.trim().split(/\\s+/) : [];
  const name = widest.tagName.toLowerCase() + (widest.id ? '#' + widest.id : '')
    + classes.filter(Boolean).map(c => '.' + c).join('');
  return `${name} reaches ${Math.round(right)} px: "${(widest.textContent || '').trim().slice(0, 60)}"`;
}"""


async def seed(stack: Stack, logs: Path) -> dict[str, str]:
    """An organiser with what every page lists: sources (one pulled, with settings and a secret), its first
    run, a subscription in test mode, tokens, a hold, a deletion waiting for its receipt, an erasure request,
    an audit log longer than one page and an identity provider for the sign-in page."""
    await stack.sync()
    service = stack.admin.extensions["service"]
    principal = await stack.admin.extensions["tokens"].authenticate(stack.operator)
    assert isinstance(principal, Principal)
    db = stack.admin.db
    now = datetime.now(UTC)
    await service.create_tenant(
        principal,
        models.TenantIn(tenant_id=TENANT, display_name="Demo kommun", organisation_number="212000-0001"),
    )
    await service.save_source(
        principal,
        TENANT,
        models.SourceIn(source_id=SOURCE, kind="egil", display_name="Elevregistret via EGIL"),
        create=True,
    )
    pulled = models.SourceIn(
        source_id=PULLED,
        kind="ss12000",
        display_name="Elevregistrets SS 12000-API med ett långt namn",
        settings={"base_url": "https://api.elevregistret.example.se/ss12000v2-api/v2.0",
                  "auth": {"kind": "oauth2", "token_url": "https://inloggning.elevregistret.example.se/oauth2/token",
                           "client_id": "skolsynk-klient-med-ett-mycket-langt-id-0123456789"}},
        secrets={"client_secret": "narrow-SECRET-1"},
    )  # fmt: skip
    await service.save_source(principal, TENANT, pulled, create=True)
    codes = school_unit_codes(stack.records)
    await service.save_subscription(
        principal, TENANT, VENDOR, models.SubscriptionIn(school_unit_codes=codes, roles=["student", "teacher"])
    )
    for n in range(3):
        await service.create_token(
            principal, TENANT, models.TokenIn(subject=f"it-admin-{n}@demo-kommun.example", role="organiser_admin")
        )
    unit_id = str(uuid.uuid4())
    await db["holds"].insert_one(
        {"_id": f"{TENANT}:{HELD}:{unit_id}", "tenant_id": TENANT, "vendor_id": HELD, "school_unit_id": unit_id,
         "school_unit_codes": [codes[0]], "entity_ids": [str(uuid.uuid4()) for _ in range(3)], "removals": 3,
         "population": 4, "status": "pending", "created_at": now, "updated_at": now}
    )  # fmt: skip
    person = uuid.uuid4()
    await ErasureLedger(db).requested(
        TENANT, vendor_id=VENDOR, person_id=person, vendor_entity_id=person, version=3, reason="left_source",
        removed_at=now - timedelta(hours=2), requested_at=now - timedelta(hours=1),
    )  # fmt: skip
    await ErasureRequestStore(db).add(
        TENANT, request_id=uuid.uuid4(), person_id=person, vendor_ids=None, kind="erasure",
        requested_by="it-admin-0@demo-kommun.example", reference="DNR-2026-17", requested_at=now,
    )  # fmt: skip
    audit = AuditLog(db)
    for n in range(60):
        await audit.record(actor="it-admin-1@demo-kommun.example", role="organiser_admin", tenant_id=TENANT,
                           action="source.sync", target=PULLED, note=f"körning {n}")  # fmt: skip
    if hasattr(service, "create_identity_provider"):  # OpenID Connect sign-in, from its tests' local provider
        from tests.oidc_provider import local_provider

        async with local_provider(logs / "oidc-provider.log") as provider:
            body = models.IdentityProviderIn(provider_id="mock", display_name="Microsoft", issuer=provider.issuer,
                                             client_id="skolsynk-admin", client_secret="narrow-SECRET-2")  # fmt: skip
            await service.create_identity_provider(principal, body)
    listed = await db[ENTITIES].find_one({"tenant_id": TENANT, "kind": "person"})
    assert listed is not None
    return {"person": str(person), "hold_unit": unit_id, "listed_person": str(listed["_id"])}


def pages(stack: Stack, seeded: dict[str, str]) -> dict[str, str]:
    """Every page of the UI as name -> path: each GET route of the UI (with the seeded organiser's parts),
    the source form of each kind, a chosen person on the GDPR page, and an error page."""
    base, tenant = "/ui", f"/ui/t/{TENANT}"
    known = {
        "home": f"{base}/",
        "platform_log": f"{base}/log",
        "catalogue": f"{base}/catalogue",
        "catalogue_edit": f"{base}/catalogue/{VENDOR}",
        "operators": f"{base}/operators",
        "overview": f"{tenant}/",
        "sources": f"{tenant}/sources",
        "source_edit": f"{tenant}/sources/{PULLED}/edit",
        "egil_client": f"{tenant}/sources/{SOURCE}/egil",
        "quality": f"{tenant}/quality",
        "vendors": f"{tenant}/vendors",
        "subscription_new": f"{tenant}/vendors/new",
        "subscription": f"{tenant}/vendors/{VENDOR}",
        "subscription_edit": f"{tenant}/vendors/{VENDOR}/edit",
        "subscription_end": f"{tenant}/vendors/{VENDOR}/end",
        "holds": f"{tenant}/holds",
        "hold": f"{tenant}/holds/{HELD}/{seeded['hold_unit']}",
        "gdpr": f"{tenant}/gdpr",
        "log": f"{tenant}/log",
        "access": f"{tenant}/access",
        "persons": f"{tenant}/persons",
        "person": f"{tenant}/persons/{seeded['listed_person']}",
        "identity": f"{base}/identity",
        "identity_provider": f"{base}/identity/providers/mock",
    }
    extensions = stack.admin.extensions
    ui = build_ui(extensions["service"], extensions["sessions"], extensions["tokens"])
    routes = {
        str(resource.name)
        for resource in ui.router.resources()
        if resource.name and any(route.method == "GET" for route in resource)
    }
    unknown = routes - set(known) - NOT_PAGES - {"login", "source_new"}
    assert not unknown, f"pages this test does not visit yet (add them to pages()): {sorted(unknown)}"
    found = {name: path for name, path in known.items() if name in routes}
    for kind in models.SourceKind:
        found[f"source_new-{kind.value}"] = f"{tenant}/sources/new?kind={kind.value}"
    found["gdpr-person"] = f"{tenant}/gdpr?person={seeded['person']}"
    found["error"] = f"{tenant}/vendors/no-such-vendor"
    return found


async def measure(page: Page, name: str, axe: Axe) -> list[str]:
    """What is wrong with the page on screen now: sideways scrolling (naming the widest element) and axe's
    violations. Saves its screenshot."""
    problems = []
    await page.screenshot(path=ARTEFACTS / f"narrow-{name}.png", full_page=True)
    scroll_width, inner_width = await page.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth]")
    if scroll_width > inner_width:
        widest = await page.evaluate(WIDEST)
        problems.append(f"{name}: the page is {scroll_width} px wide at {inner_width} px; widest: {widest}")
    results = await axe.run(page, options={"runOnly": {"type": "tag", "values": WCAG}, "resultTypes": ["violations"]})
    for violation in results.response["violations"]:
        targets = "; ".join(", ".join(node["target"]) for node in violation["nodes"][:3])
        problems.append(f"{name}: axe {violation['id']} ({violation['impact']}): {violation['help']} at {targets}")
    return problems


async def test_every_page_fits_a_phone_screen_and_passes_axe(stack: Stack, browser: Browser, tmp_path: Path) -> None:
    seeded = await seed(stack, tmp_path)
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    for old in ARTEFACTS.glob("narrow-*.png"):
        old.unlink()
    context = await browser.new_context(viewport={"width": WIDTH, "height": HEIGHT}, locale="sv-SE")
    page = await context.new_page()
    page.set_default_timeout(15_000)
    axe = Axe()
    problems: list[str] = []
    measured: list[str] = []
    try:
        await page.goto(stack.base + "/ui/login")
        problems += await measure(page, "login", axe)
        measured.append("login")
        await page.get_by_label("Åtkomstnyckel").fill(stack.operator)
        await page.get_by_role("button", name="Logga in").click()
        await page.wait_for_url(stack.base + "/ui/")
        for name, path in pages(stack, seeded).items():
            response: Any = await page.goto(stack.base + path)
            assert response is not None
            expected = 404 if name == "error" else 200
            assert response.status == expected, f"{name} ({path}) answered {response.status}"
            problems += await measure(page, name, axe)
            measured.append(name)
    finally:
        await context.close()
    assert len(measured) > 25, measured
    assert not problems, "\n".join(problems)
