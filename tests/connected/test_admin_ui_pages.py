"""The admin web UI without a browser (aiohttp's test client) on the real broker and the Mongo wire
server: sign-in and the session cookie, tenant isolation, CSRF, secrets never in a page, the gate and
its operator override, and every page rendering, labelled and captioned, for an operator and an
organiser admin."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from typing import Any

import pytest
import trustme
import yaml
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from skolsynk.contracts.source import SourceRecord
from skolsynk.domain.ids import entity_id
from skolsynk.domain.ss12000 import EntityKind
from skolsynk.domain.subscription import MissingMarkingPolicy
from skolsynk.service import ServiceApp
from skolsynk.settings import ServiceSettings
from skolsynk.storage.admin import OrganiserSettings
from skolsynk.storage.deliveries import DeliveryLedger
from skolsynk.storage.erasures import ErasureLedger, ErasureRequestStore
from skolsynk.storage.subscriptions import SubscriptionStore
from skolsynk_services.admin.app import AdminSettings, build
from skolsynk_services.admin.auth import Principal, Role, TokenStore, parse_token
from skolsynk_services.admin.service import AdminService
from skolsynk_services.admin.ui import COOKIE, build_ui
from skolsynk_services.normaliser.app import NormaliserSettings
from skolsynk_services.normaliser.app import build as build_normaliser
from skolsynk_testkit.synthetic import full_run, organiser, school_unit_codes
from tests.helpers import delete_topology, wait_for

pytestmark = [
    pytest.mark.connected,
    pytest.mark.timeout(90),
    pytest.mark.queues("normaliser.source-events", "normaliser.projections", "gdpr.events"),
]

TENANT, OTHER = "kommun-u", "kommun-v"
SOURCE = "egil-1"
VENDOR = "ne"
#: The person the person page is opened for.
ALMA_KEY = "student-0-0"


def person_of(key: str) -> uuid.UUID:
    return entity_id(TENANT, SOURCE, EntityKind.PERSON, key)


SECRETS_KEY = "2mJ3m6mCAxzGzO8Ihc4r3Vxv3Fj0vIYbVwJJmQKkV4g="  # a throwaway Fernet key for tests
SECRETS = ("google-key-SECRET-4711", "graph-SECRET-0815", "ss12000-SECRET-1234", "retyped-SECRET-9999")


@dataclass
class Ui:
    app: ServiceApp
    client: TestClient[Any, Any]
    service: AdminService
    tokens: TokenStore
    clock: list[timedelta]
    operator: str

    @property
    def origin(self) -> str:
        return str(self.client.make_url("")).rstrip("/")

    async def login(self, token: str) -> None:
        self.client.session.cookie_jar.clear()
        response = await self.post("/ui/login", {"token": token})
        assert response.status == 303, await response.text()

    async def get(self, path: str) -> tuple[int, str]:
        response = await self.client.get(path, allow_redirects=False)
        return response.status, await response.text()

    async def post(self, path: str, data: Any, *, origin: str | None = "", **headers: str) -> Any:
        """A form POST as a browser on this site sends it (``origin=None``: without an Origin header)."""
        if origin is not None:
            headers["Origin"] = origin or self.origin
        return await self.client.post(path, data=data, headers=headers, allow_redirects=False)

    async def token_for(self, tenant_id: str, subject: str = "it-admin@kommun.example") -> str:
        token, _ = await self.tokens.create(
            role=Role.ORGANISER_ADMIN, subject=subject, tenant_id=tenant_id, created_by="test"
        )
        return token


@pytest.fixture
async def ui(settings: ServiceSettings) -> AsyncIterator[Ui]:
    clock = [timedelta(0)]
    admin_settings = AdminSettings.model_validate(
        {**settings.model_dump(), "admin_port": 0, "admin_host": "127.0.0.1", "admin_secrets_key": SECRETS_KEY}
    )
    app = build(admin_settings, clock=lambda: datetime.now(UTC) + clock[0])
    service: AdminService = app.extensions["service"]
    tokens: TokenStore = app.extensions["tokens"]
    client: TestClient[Any, Any] | None = None
    try:
        await app.start()
        root = web.Application()
        root.add_subapp("/ui", build_ui(service, app.extensions["sessions"], tokens))
        client = TestClient(TestServer(root, host="127.0.0.1"))
        await client.start_server()
        operator, _ = await tokens.create(
            role=Role.OPERATOR, subject="ops@drift.example", tenant_id=None, created_by="t"
        )
        ui = Ui(app, client, service, tokens, clock, operator)
        await ui.login(operator)
        for tenant_id, name in ((TENANT, "Kommun U"), (OTHER, "Kommun V")):
            response = await ui.post("/ui/tenants", {"tenant_id": tenant_id, "display_name": name})
            assert response.status == 303, await response.text()
        yield ui
    finally:
        if client is not None:
            await client.close()
        await app.drain(1)
        await app.close()
        await delete_topology(settings.broker.amqp_url.get_secret_value(), app.topology)


# --- HTML checks ---------------------------------------------------------------------------------------


class PageCheck(HTMLParser):
    """Swedish, one h1, every form control labelled, every table captioned, no script."""

    def __init__(self) -> None:
        super().__init__()
        self.lang: str | None = None
        self.h1 = 0
        self.label_depth = 0
        self.labelled: set[str] = set()
        self.controls: list[tuple[str | None, bool, str]] = []  # (id, inside a label, description)
        self.tables = 0
        self.captions = 0
        self.scripts = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "html":
            self.lang = attributes.get("lang")
        elif tag == "h1":
            self.h1 += 1
        elif tag == "label":
            self.label_depth += 1
            if attributes.get("for"):
                self.labelled.add(str(attributes["for"]))
        elif tag in ("input", "select", "textarea"):
            if attributes.get("type") not in ("hidden", "submit"):
                self.controls.append((attributes.get("id"), self.label_depth > 0, f"{tag} {attributes.get('name')}"))
        elif tag == "table":
            self.tables += 1
        elif tag == "caption":
            self.captions += 1
        elif tag == "script":
            self.scripts += 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "label":
            self.label_depth -= 1

    def problems(self) -> list[str]:
        found = []
        if self.lang != "sv":
            found.append(f"lang={self.lang}")
        if self.h1 != 1:
            found.append(f"{self.h1} h1")
        found += [f"unlabelled {d}" for i, inside, d in self.controls if not inside and i not in self.labelled]
        if self.captions != self.tables:
            found.append(f"{self.tables} tables, {self.captions} captions")
        if self.scripts:
            found.append("script")
        return found


def check_page(path: str, html: str) -> None:
    checker = PageCheck()
    checker.feed(html)
    assert not checker.problems(), (path, checker.problems())


# --- seeding -------------------------------------------------------------------------------------------


def the_organiser() -> list[SourceRecord]:
    """Two school units; one student without a login (EPPN), one with a broken e-mail address."""
    records = []
    for record in organiser(seed=5, school_units=2, students_per_unit=4, teachers_per_unit=1):
        if record.key == "student-0-1":
            record = SourceRecord(kind=record.kind, key=record.key, data={**record.data, "eppn": []})
        if record.key == "student-1-2":
            emails = [{"value": "inte-en-adress", "type": "Skola elev"}]
            record = SourceRecord(kind=record.kind, key=record.key, data={**record.data, "emails": emails})
        records.append(record)
    return records


async def seed_with_the_normaliser(settings: ServiceSettings, records: list[SourceRecord]) -> None:
    normaliser = build_normaliser(
        NormaliserSettings.model_validate({**settings.model_dump(), "date_check_interval_seconds": 86400})
    )
    try:
        await normaliser.start()
        run_id = uuid.uuid4()
        for message in full_run(records, source_id=SOURCE, source_kind="egil", run_id=run_id):
            await normaliser.publisher.publish(
                message.to_envelope(tenant_id=TENANT, producer="test"),
                exchange=normaliser.topology.exchange("source"),
                routing_key=f"egil.{TENANT}",
            )

        async def finalised() -> bool:
            run = await normaliser.db["runs"].find_one({"_id": str(run_id)})
            return run is not None and run.get("status") == "finalised"

        await wait_for(finalised, timeout=30, interval=0.1, what="the run to be finalised")
    finally:
        await normaliser.drain(1)
        await normaliser.close()


async def seed_the_rest(ui: Ui, codes: list[str]) -> dict[str, Any]:
    """What other services would write: a hold, deletions with and without receipts, an erasure request,
    test deliveries."""
    db = ui.app.db
    now = datetime.now(UTC)
    unit_id = str(uuid.uuid4())
    await db["holds"].insert_one(
        {
            "_id": f"{TENANT}:{VENDOR}:{unit_id}",
            "tenant_id": TENANT,
            "vendor_id": VENDOR,
            "school_unit_id": unit_id,
            "school_unit_codes": [codes[0]],
            "entity_ids": [str(uuid.uuid4()) for _ in range(3)],
            "removals": 3,
            "population": 4,
            "status": "pending",
            "created_at": now,
            "updated_at": now,
        }
    )
    ledger = ErasureLedger(db)
    person = uuid.uuid4()
    await ledger.requested(
        TENANT,
        vendor_id=VENDOR,
        person_id=person,
        vendor_entity_id=person,
        version=3,
        reason="left_source",
        removed_at=now - timedelta(hours=2),
        requested_at=now - timedelta(hours=1),
    )
    request_id = uuid.uuid4()
    await ErasureRequestStore(db).add(
        TENANT,
        request_id=request_id,
        person_id=uuid.uuid4(),
        vendor_ids=None,
        kind="erasure",
        requested_by="it-admin@kommun.example",
        reference="DNR-2026-17",
        requested_at=now,
    )
    deliveries = DeliveryLedger(db, VENDOR)
    for n in range(3):
        await deliveries.record(
            TENANT,
            uuid.uuid4(),
            kind="person",
            operation="upsert",
            version=1,
            resource_hash="h",
            status="test" if n else "test_rejected",
            test=True,
            school_unit_ids=[unit_id],
            roles=["student"],
            reason=None if n else "no eppn",
        )
    return {"request_id": request_id, "unit_id": unit_id}


# --- tests ---------------------------------------------------------------------------------------------


async def test_without_a_session_every_page_leads_to_the_login_page(ui: Ui):
    ui.client.session.cookie_jar.clear()
    for path in ("/ui/", f"/ui/t/{TENANT}/", f"/ui/t/{TENANT}/sources", f"/ui/t/{TENANT}/findings.csv", "/ui/log"):
        response = await ui.client.get(path, allow_redirects=False)
        assert response.status == 303, path
        assert response.headers["Location"].startswith("/ui/login?next="), path
    response = await ui.post(f"/ui/t/{TENANT}/sources/{SOURCE}/sync", {})
    assert response.status == 303
    assert response.headers["Location"] == "/ui/login"

    # A wrong or revoked token is refused in Swedish; the cookie of a bad session is removed.
    response = await ui.post("/ui/login", {"token": "skt_nope.nope"})
    assert response.status == 401
    assert "Nyckeln känns inte igen" in await response.text()
    ui.client.session.cookie_jar.update_cookies({COOKIE: "skt_bad.cookie"})
    response = await ui.client.get("/ui/", allow_redirects=False)
    assert response.status == 303
    assert COOKIE in response.cookies
    assert response.cookies[COOKIE].value == ""

    # Signing in sets the session cookie as the UI needs it, and goes where the person was heading.
    response = await ui.post("/ui/login", {"token": ui.operator, "next": f"/ui/t/{TENANT}/quality"})
    assert response.status == 303
    assert response.headers["Location"] == f"/ui/t/{TENANT}/quality"
    cookie = response.cookies[COOKIE]
    assert cookie.value  # a session's own secret, never the API token (issue 19)
    assert ui.operator not in cookie.value
    assert (parse_token(ui.operator) or ("", "missing"))[1] not in cookie.value
    assert cookie["httponly"]
    assert cookie["samesite"] == "Strict"
    assert cookie["path"] == "/ui"
    assert not cookie["secure"]  # plain HTTP here; Secure over TLS
    # ... but never to another site.
    response = await ui.post("/ui/login", {"token": ui.operator, "next": "//evil.example/ui/"})
    assert response.headers["Location"] == "/ui/"
    status, html = await ui.get("/ui/")
    assert status == 200
    assert "Huvudmän" in html

    # Logging out ends the session in the store, not only in the browser: the old cookie replayed is refused.
    session = ui.client.session.cookie_jar.filter_cookies(ui.client.make_url("/ui/"))[COOKIE].value
    response = await ui.post("/ui/logout", {})
    assert response.status == 303
    assert response.cookies[COOKIE].value == ""
    ui.client.session.cookie_jar.clear()
    assert (await ui.get("/ui/"))[0] == 303
    ui.client.session.cookie_jar.update_cookies({COOKIE: session})
    assert (await ui.get("/ui/"))[0] == 303


async def test_a_session_ends_when_idle_at_its_age_and_with_its_token(ui: Ui):
    """Issue 19: the UI's session is server-side: 30 minutes without a request end it, and so do 12 hours
    however busy, and revoking the token it was started with (the cookie alone no longer opens anything)."""
    page = f"/ui/t/{TENANT}/log"
    await ui.login(await ui.token_for(TENANT, "idle@kommun.example"))
    for _ in range(3):  # busy: each request restarts the idle clock
        ui.clock[0] += timedelta(minutes=25)
        assert (await ui.get(page))[0] == 200
    ui.clock[0] += timedelta(minutes=31)
    status, _ = await ui.get(page)
    assert status == 303  # idle too long

    await ui.login(await ui.token_for(TENANT, "busy@kommun.example"))
    for _ in range(int(12 * 60 / 25)):
        ui.clock[0] += timedelta(minutes=25)
        assert (await ui.get(page))[0] == 200
    ui.clock[0] += timedelta(minutes=25)
    assert (await ui.get(page))[0] == 303  # 12 hours old

    token = await ui.token_for(TENANT, "revoked@kommun.example")
    await ui.login(token)
    assert (await ui.get(page))[0] == 200
    record = next(t for t in await ui.service.list_tokens(ui_principal(ui), TENANT) if t.subject.startswith("revoked"))
    await ui.service.revoke_token(ui_principal(ui), TENANT, record.token_id)
    assert (await ui.get(page))[0] == 303
    assert await ui.app.db["admin_sessions"].count_documents({"token_id": record.token_id}) == 0


def ui_principal(ui: Ui) -> Principal:
    return Principal("ops@drift.example", Role.OPERATOR, None, (parse_token(ui.operator) or ("", ""))[0])


async def test_a_viewer_sees_the_pages_and_can_change_nothing(ui: Ui):
    viewer, _ = await ui.tokens.create(role=Role.VIEWER, subject="las@kommun.example", tenant_id=TENANT, created_by="t")
    await ui.login(viewer)
    base = f"/ui/t/{TENANT}"
    for page in ("/", "/sources", "/quality", "/vendors", "/holds", "/gdpr", "/log"):
        status, html = await ui.get(base + page)
        assert status == 200, page
        assert "läsbehörighet" in html
        assert f'href="{base}/access"' not in html  # who holds access is not for viewers
    assert (await ui.get(base + "/access"))[0] == 403
    response = await ui.post(f"{base}/sources/{SOURCE}/sync", {})
    assert response.status == 403
    assert "bara läsbehörighet" in await response.text()
    response = await ui.post(f"{base}/access", {"subject": "x", "role": "viewer"})
    assert response.status == 403
    # Names are not for viewers (issue 21): the person search and the person page refuse them.
    response = await ui.post(f"{base}/gdpr", {"q": "student"})
    assert response.status == 403
    assert "ser inte namn" in await response.text()
    assert f'href="{base}/persons"' not in (await ui.get(base + "/"))[1]
    assert (await ui.get(f"{base}/persons"))[0] == 403
    assert (await ui.get(f"{base}/persons/{uuid.uuid4()}"))[0] == 403
    response = await ui.post("/ui/logout", {})
    assert response.status == 303


async def test_operators_see_every_token_with_expiry_and_last_use_and_revoke_any(ui: Ui):
    """Issue 19: operator tokens were only reachable with the CLI."""
    status, html = await ui.get("/ui/operators")
    assert status == 200
    assert "ops@drift.example" in html
    assert "Senast använd" in html
    response = await ui.post("/ui/operators", {"subject": "ops2@drift.example", "expires_in_days": "30"})
    html = await response.text()
    assert response.status == 200, html
    created = re.search(r'id="new-token">(skt_[^<]+)<', html)
    assert created is not None
    new_token = created.group(1)
    assert (await ui.tokens.authenticate(new_token)) is not None
    assert "driftoperatör" in html
    response = await ui.post("/ui/operators", {"subject": "x", "expires_in_days": "400"})
    assert response.status == 422
    assert "1 till 365" in await response.text()
    token_id = (parse_token(new_token) or ("", ""))[0]
    response = await ui.post(f"/ui/operators/{token_id}/revoke", {})
    assert response.status == 303
    assert (await ui.tokens.authenticate(new_token)) is None
    # An organiser admin has no such page.
    await ui.login(await ui.token_for(TENANT))
    assert (await ui.get("/ui/operators"))[0] == 403


async def test_many_failed_sign_ins_from_one_address_are_slowed_down(ui: Ui):
    ui.client.session.cookie_jar.clear()
    for _ in range(10):
        assert (await ui.post("/ui/login", {"token": "skt_guess.guess"})).status == 401
    response = await ui.post("/ui/login", {"token": ui.operator})
    assert response.status == 429  # even the right token, until the window has passed
    assert 1 <= int(response.headers["Retry-After"]) <= 60
    assert "För många misslyckade inloggningar" in await response.text()


async def test_an_organiser_admin_reaches_only_their_own_tenant(ui: Ui):
    await ui.login(await ui.token_for(TENANT))
    response = await ui.client.get("/ui/", allow_redirects=False)
    assert response.status == 303
    assert response.headers["Location"] == f"/ui/t/{TENANT}/"
    assert (await ui.get(f"/ui/t/{TENANT}/"))[0] == 200

    pages = ["/", "/sources", "/sources/new?kind=google", f"/sources/{SOURCE}/edit", "/quality", "/findings.csv",
             "/vendors", "/vendors/new", f"/vendors/{VENDOR}", f"/vendors/{VENDOR}/edit", f"/vendors/{VENDOR}/end",
             f"/vendors/{VENDOR}/report.csv", "/holds", "/gdpr", "/gdpr/evidence.csv", "/gdpr/evidence.json",
             "/log", "/access"]  # fmt: skip
    for page in pages:
        status, html = await ui.get(f"/ui/t/{OTHER}{page}")
        assert status == 403, page
        assert "Du har inte behörighet till den huvudmannen." in html, page
    actions = ["/sources/new", f"/sources/{SOURCE}/edit", f"/sources/{SOURCE}/sync", f"/sources/{SOURCE}/delete",
               "/vendors/new", f"/vendors/{VENDOR}/edit", f"/vendors/{VENDOR}/review", f"/vendors/{VENDOR}/go-live",
               f"/vendors/{VENDOR}/test-mode", f"/vendors/{VENDOR}/end", "/holds", "/gdpr/requests",
               f"/gdpr/requests/{uuid.uuid4()}/withdraw", "/access", "/access/abc/revoke"]  # fmt: skip
    form = {"confirm": "yes", "decision": "approve", "person_id": str(uuid.uuid4()), "subject": "x", "kind": "egil"}
    for action in actions:
        response = await ui.post(f"/ui/t/{OTHER}{action}", form)
        assert response.status == 403, action
    # Operator-only pages and actions.
    assert (await ui.get("/ui/log"))[0] == 403
    response = await ui.post("/ui/tenants", {"tenant_id": "ny-kommun", "display_name": "Ny"})
    assert response.status == 403
    assert "Det får bara driftoperatörer göra." in await response.text()
    response = await ui.post(f"/ui/t/{TENANT}/access", {"subject": "x", "role": "operator"})
    assert response.status == 403
    assert not [t for t in await ui.tokens.list(None) if t["subject"] == "x"]


async def test_posts_from_another_site_are_refused(ui: Ui):
    path = f"/ui/t/{TENANT}/sources/new"
    form = {"kind": "egil", "source_id": "egil-9", "display_name": "EGIL"}
    for headers in (
        {"origin": None},  # neither Origin nor Referer
        {"origin": "https://evil.example"},
        {"origin": "null"},
        {"origin": ui.origin.replace("127.0.0.1", "localhost")},  # same port, other host
        {"origin": None, "Referer": "https://evil.example/ui/t/kommun-u/sources"},
    ):
        response = await ui.post(path, form, **headers)
        assert response.status == 403, headers
        assert "Begäran stoppades" in await response.text()
    # The login form is protected as well (login CSRF).
    response = await ui.post("/ui/login", {"token": ui.operator}, origin="https://evil.example")
    assert response.status == 403
    assert await ui.service.sources.list(TENANT) == []

    # From the UI's own pages: an Origin, or only a Referer of this host.
    response = await ui.post(path, form, origin=None, Referer=f"{ui.origin}/ui/t/{TENANT}/sources/new?kind=egil")
    assert response.status == 303
    response = await ui.post(path, {**form, "source_id": "egil-10"})
    assert response.status == 303
    assert [s["source_id"] for s in await ui.service.sources.list(TENANT)] == ["egil-10", "egil-9"]


async def test_the_gate_holds_an_organiser_admin_and_an_operator_may_override_it_with_a_reason(ui: Ui):
    codes = ["90005000", "90005001"]
    form = {"vendor_id": VENDOR, "school_unit_codes": codes, "roles": ["student", "teacher"], "action": "save"}
    await ui.login(await ui.token_for(TENANT))
    response = await ui.post(f"/ui/t/{TENANT}/vendors/new", form)
    assert response.status == 303, await response.text()
    report = f"/ui/t/{TENANT}/vendors/{VENDOR}"
    assert response.headers["Location"] == report
    status, html = await ui.get(report)
    assert status == 200
    assert re.search(r'<button type="submit" id="go-live" disabled', html)
    assert "Testläget har pågått i 0 av de 24 timmar som krävs." in html
    assert "Testrapporten är inte markerad som granskad." in html
    assert "Gå live trots spärren" not in html  # the override is for operators

    response = await ui.post(f"{report}/go-live", {})
    assert response.status == 303
    status, html = await ui.get(report)
    assert "Prenumerationen kan inte gå live än: Testläget har pågått i" in html
    response = await ui.post(f"{report}/go-live", {"override": "yes", "override_reason": "brådskande"})
    assert response.status == 403
    assert "Det får bara driftoperatörer göra." in await response.text()
    subscription = await SubscriptionStore(ui.app.db).get(TENANT, VENDOR)
    assert subscription is not None
    assert subscription.test_mode

    await ui.login(ui.operator)
    status, html = await ui.get(report)
    assert "Gå live trots spärren" in html
    await ui.post(f"{report}/go-live", {"override": "yes", "override_reason": "x"})
    status, html = await ui.get(report)
    assert "Skriv en motivering på 5-300 tecken." in html
    response = await ui.post(f"{report}/go-live", {"override": "yes", "override_reason": "Skolstart, avtal klart"})
    assert response.status == 303
    status, html = await ui.get(report)
    assert "Prenumerationen är live." in html
    subscription = await SubscriptionStore(ui.app.db).get(TENANT, VENDOR)
    assert subscription is not None
    assert not subscription.test_mode
    status, html = await ui.get(f"/ui/t/{TENANT}/log")
    assert "Gick live" in html
    assert "gate overridden: Skolstart, avtal klart" in html

    # Back to test mode, and the end of the subscription only after confirming what it means.
    response = await ui.post(f"{report}/test-mode", {})
    status, html = await ui.get(report)
    assert "Prenumerationen är tillbaka i testläge" in html
    status, html = await ui.get(f"{report}/end")
    assert "raderas <strong>alla</strong> elever" in html
    response = await ui.post(f"{report}/end", {})
    assert response.headers["Location"] == f"{report}/end"
    subscription = await SubscriptionStore(ui.app.db).get(TENANT, VENDOR)
    assert subscription is not None
    assert subscription.ended_at is None
    response = await ui.post(f"{report}/end", {"confirm": "yes"})
    status, html = await ui.get(report)
    assert "Prenumerationen är avslutad." in html
    assert '<span class="tag muted">Avslutad</span>' in html
    subscription = await SubscriptionStore(ui.app.db).get(TENANT, VENDOR)
    assert subscription is not None
    assert subscription.ended_at is not None


GOOGLE_MAPPING = """\
scope: [/Skolor]
school_units:
  - from: org_units
    path_pattern: /Skolor/[^/]+
    code_from: description
    code_pattern: (?P<code>[0-9]{8})
    school_types: [GR]
roles:
  - role: student
    org_unit: /Elever(/|$)
"""


async def test_every_page_renders_and_no_page_ever_shows_a_secret(ui: Ui, settings: ServiceSettings):
    records = the_organiser()
    codes = school_unit_codes(records)
    await seed_with_the_normaliser(settings, records)
    base = f"/ui/t/{TENANT}"

    # Sources with secrets, through the forms.
    google = {"kind": "google", "source_id": "google-1", "display_name": "Google", "enabled": "on",
              "setting_domain": "skola.example.se", "setting_delegated_admin": "admin@skola.example.se",
              "setting_mapping": GOOGLE_MAPPING, "secret_service_account_key": SECRETS[0]}  # fmt: skip
    graph = {"kind": "microsoft", "source_id": "graph-1", "display_name": "Microsoft 365", "enabled": "on",
             "setting_azure_tenant_id": "kommun.onmicrosoft.com",
             "setting_client_id": "7c2e4a10-0d3b-4b6f-8e21-9a4c5b6d7e02",
             "secret_client_secret": SECRETS[1]}  # fmt: skip
    ss12000 = {"kind": "ss12000", "source_id": "ss12000-1", "display_name": "SS 12000", "enabled": "on",
               "setting_base_url": "https://api.example.se/ss12000", "setting_auth.kind": "oauth2",
               "setting_auth.token_url": "https://idp.example.se/token", "setting_auth.client_id": "c-2",
               "secret_client_secret": SECRETS[2]}  # fmt: skip
    egil = {"kind": "egil", "source_id": SOURCE, "display_name": "EGIL-klienten"}
    for form in (google, graph, ss12000, egil):
        response = await ui.post(f"{base}/sources/new", form)
        assert response.status == 303, await response.text()
    # A form that fails validation shows the errors in Swedish, and never the secret typed into it.
    response = await ui.post(f"{base}/sources/google-1/edit", {**google, "display_name": "",
                             "setting_delegated_admin": "", "secret_service_account_key": SECRETS[3]})  # fmt: skip
    html = await response.text()
    assert response.status == 422
    assert 'id="f-setting_delegated_admin-error">Måste fyllas i.' in html
    assert "Skriv ett namn (högst 200 tecken)." in html
    assert SECRETS[3] not in html
    check_page("google-1/edit (invalid)", html)
    # A mapping that is not YAML, or one the connector would refuse, is named at the mapping's field.
    response = await ui.post(f"{base}/sources/google-1/edit", {**google, "setting_mapping": "roles: [unclosed"})
    assert response.status == 422
    assert 'id="f-setting_mapping-error">Texten är inte giltig YAML.' in await response.text()
    response = await ui.post(f"{base}/sources/google-1/edit", {**google, "setting_mapping": "roles: []"})
    html = await response.text()
    assert response.status == 422
    assert 'id="f-setting_mapping-error">school_units: Måste fyllas i.' in html or "school_units" in html
    check_page("google-1/edit (bad mapping)", html)
    # A stored mapping is shown as YAML again, to edit.
    status, html = await ui.get(f"{base}/sources/google-1/edit")
    assert "path_pattern: /Skolor/[^/]+" in html
    # A missing secret of a new source is named next to its field.
    response = await ui.post(f"{base}/sources/new", {**ss12000, "source_id": "ss12000-2", "secret_client_secret": ""})
    html = await response.text()
    assert response.status == 422
    assert 'id="f-secret_client_secret-error">Måste fyllas i' in html
    # Editing without retyping the secret keeps it, and the page says it is stored. Push notifications turned
    # off in the form are off in the stored settings the connector reads, and shown so again.
    edit = {**google, "secret_service_account_key": "", "setting_watch.enabled": "false"}
    response = await ui.post(f"{base}/sources/google-1/edit", edit)
    assert response.status == 303
    source = await ui.service.sources.get(TENANT, "google-1")
    assert source is not None
    assert ui.service.sources.box.open(source["sealed"]) == {"service_account_key": SECRETS[0]}
    assert source["settings"]["watch"] == {"enabled": "false"}  # as typed; the connector reads it as false
    status, html = await ui.get(f"{base}/sources/google-1/edit")
    assert '<option value="false" selected>Av</option>' in html
    status, html = await ui.get(f"{base}/sources/google-1/edit")
    assert "lagrad" in html
    # What to enter in Google Admin's domain-wide delegation: the key's client id (this key is no JSON, so the
    # page says where to find it) and the exact scopes.
    assert "Domänövergripande delegering" in html
    assert "står under <code>client_id</code>" in html
    assert "admin.directory.group.member.readonly</code>" in html
    # A sync is requested for a pulled source; an EGIL source pushes, and the page says so in Swedish.
    response = await ui.post(f"{base}/sources/ss12000-1/sync", {})
    status, html = await ui.get(f"{base}/sources")
    assert "Synkroniseringen är begärd." in html or "Ingen tjänst tar emot begäran just nu" in html
    response = await ui.post(f"{base}/sources/{SOURCE}/sync", {})
    status, html = await ui.get(f"{base}/sources")
    assert "En EGIL-källa skickar sina uppgifter själv" in html
    # Each source's latest run is on its row: the seeded EGIL run complete, the others not run yet.
    status, html = await ui.get(f"{base}/sources")
    egil_row = html.split("EGIL-klienten</strong>", 1)[1].split("</tr>", 1)[0]
    assert '<span class="tag ok">komplett</span>' in egil_row
    assert " poster</span>" in egil_row
    google_row = html.split("Google</strong>", 1)[1].split("</tr>", 1)[0]
    assert "Ingen körning än" in google_row
    # "Test connection" with no connector of the kind running: the page says why, in Swedish.
    response = await ui.post(f"{base}/sources/ss12000-1/check", {})
    status, html = await ui.get(f"{base}/sources")
    assert "Ingen tjänst tar emot begäran just nu" in html
    response = await ui.post(f"{base}/sources/ss12000-1/edit", {**ss12000, "action": "check"})
    html = await response.text()
    assert "Ingen tjänst tar emot begäran just nu" in html
    assert SECRETS[2] not in html
    # An EGIL client's page: the API key is shown on the answer that created it and never again.
    status, html = await ui.get(f"{base}/sources/{SOURCE}/egil")
    assert status == 200
    assert "Källan har ingen API-nyckel." in html
    check_page("egil client", html)
    response = await ui.post(f"{base}/sources/{SOURCE}/egil/api-key", {})
    html = await response.text()
    assert response.status == 200
    assert response.headers["Cache-Control"] == "no-store"
    api_key = html.split('<code id="api-key">', 1)[1].split("</code>", 1)[0]
    assert api_key.startswith("egil_")
    assert f"http-auth-key-value = {api_key}" in html
    check_page("egil client (new key)", html)
    status, html = await ui.get(f"{base}/sources/{SOURCE}/egil")
    assert api_key not in html
    assert "Byt API-nyckel" in html
    response = await ui.post(f"{base}/sources/{SOURCE}/egil/certificates", {"pem": "not a certificate"})
    assert response.status == 422
    assert "Klistra in certifikatet i PEM-format" in await response.text()
    response = await ui.post(f"{base}/sources/google-1/egil/api-key", {})
    status, html = await ui.get(f"{base}/sources")
    assert "Bara en EGIL-källa har API-nyckel och klientcertifikat." in html

    # A subscription, previewed first, then saved.
    form = {"vendor_id": VENDOR, "school_unit_codes": codes, "roles": ["student", "teacher"],
            "school_years": [], "deletion_grace_hours": "0", "protected_identity_policy": "exclude"}  # fmt: skip
    response = await ui.post(f"{base}/vendors/new", {**form, "action": "preview"})
    html = await response.text()
    assert response.status == 200
    assert "Förhandsgranskning (inget är sparat)" in html
    assert "Läggs till: 10 personer" in html  # 8 students, 2 teachers
    assert await SubscriptionStore(ui.app.db).get(TENANT, VENDOR) is None
    response = await ui.post(f"{base}/vendors/new", {**form, "action": "save"})
    assert response.status == 303
    saved = await SubscriptionStore(ui.app.db).get(TENANT, VENDOR)
    assert saved is not None
    assert not saved.placements  # placements only when asked for
    # Placements are chosen in the form (issue 20): checked, saved, shown checked; unchecked again.
    response = await ui.post(f"{base}/vendors/{VENDOR}/edit", {**form, "placements": "on", "action": "save"})
    assert response.status == 303
    saved = await SubscriptionStore(ui.app.db).get(TENANT, VENDOR)
    assert saved is not None
    assert saved.placements
    status, html = await ui.get(f"{base}/vendors/{VENDOR}/edit")
    assert 'name="placements" value="on" checked' in html
    response = await ui.post(f"{base}/vendors/{VENDOR}/edit", {**form, "action": "save"})
    assert response.status == 303
    saved = await SubscriptionStore(ui.app.db).get(TENANT, VENDOR)
    assert saved is not None
    assert not saved.placements
    # Saving again as new is refused with a pointer to editing; a form without a school unit says so.
    response = await ui.post(f"{base}/vendors/new", {**form, "action": "save"})
    assert "Det finns redan en prenumeration för NE Nationalencyklopedin." in await response.text()
    response = await ui.post(f"{base}/vendors/{VENDOR}/edit", {**form, "school_unit_codes": [], "action": "preview"})
    assert response.status == 422
    assert "Välj minst en skolenhet." in await response.text()

    seeded = await seed_the_rest(ui, codes)
    pages = ["/", "/sources", "/sources/new?kind=google", "/sources/new?kind=microsoft", "/sources/new?kind=egil",
             "/sources/new?kind=ss12000", "/sources/google-1/edit", "/sources/graph-1/edit",
             "/sources/ss12000-1/edit", f"/sources/{SOURCE}/edit", "/quality", "/quality?severity=warning",
             "/quality?code=eppn.missing", f"/quality?school_unit={codes[0]}", "/quality?severity=bogus",
             "/vendors", "/vendors/new", "/vendors/new?vendor_id=binogi", f"/vendors/{VENDOR}",
             f"/vendors/{VENDOR}/edit", f"/vendors/{VENDOR}/end", "/holds", f"/holds/{VENDOR}/{seeded['unit_id']}",
             f"/holds/{VENDOR}/{seeded['unit_id']}?q=nobody&sida=3", "/gdpr",
             f"/gdpr?person={uuid.uuid4()}", f"/gdpr?vendor={VENDOR}&status=pending", "/log",
             "/access", "/persons", "/persons?sida=2", f"/persons/{person_of(ALMA_KEY)}"]  # fmt: skip
    downloads = ["/findings.csv", f"/vendors/{VENDOR}/report.csv", "/gdpr/evidence.csv", "/gdpr/evidence.json",
                 f"/gdpr/evidence.csv?vendor={VENDOR}"]  # fmt: skip
    organiser_admin = await ui.token_for(TENANT)
    for who, token in (("operator", ui.operator), ("organiser admin", organiser_admin)):
        await ui.login(token)
        for path in ["/ui/", *(base + p for p in pages)] + (["/ui/log"] if who == "operator" else []):
            status, html = await ui.get(path)
            if path == "/ui/" and who != "operator":
                assert status == 303
                continue
            assert status == 200, (who, path, html[:2000])
            assert not [s for s in SECRETS if s in html], (who, path)
            check_page(path, html)
        for path in downloads:
            response = await ui.client.get(base + path)
            assert response.status == 200, path
            assert "attachment" in response.headers["Content-Disposition"]
            assert not [s for s in SECRETS if s in await response.text()], path

    # What the seeded pages show.
    status, html = await ui.get(f"{base}/quality?code=eppn.missing")
    table = html.split("<caption>Anmärkningar (filtrerade): 1</caption>")[1]
    assert "Inloggnings-id (EPPN) saknas" in table
    assert "Ogiltig e-postadress" not in table
    status, html = await ui.get(f"{base}/")
    assert "<svg" in html
    assert "1 körning från" in html
    assert html.count('<span class="tag ok">Klart</span>') == 4  # source, data, subscription, test mode
    status, html = await ui.get(f"{base}/vendors/{VENDOR}")
    assert "Skulle avvisas av leverantören (1)" in html
    response = await ui.post(f"{base}/gdpr", {"q": "student-0-1@elev"})  # a POST: names never in a URL
    html = await response.text()
    assert response.status == 200
    assert "Sökresultat" in html
    assert html.count('name="person" value=') == 1  # found by e-mail ...
    assert "<td>student-0-1@elev" not in html  # ... shown by name and login
    status, html = await ui.get(f"{base}/gdpr?q=student-0-1")
    assert "Sökresultat" not in html  # a search in the URL is not run
    # Personer: the same search (every word, any order), each found person a link to their page, whose
    # verdicts name the rule.
    alma = next(r for r in the_organiser() if r.key == ALMA_KEY)
    given, family = str(alma.data["given_name"]), str(alma.data["family_name"])
    response = await ui.post(f"{base}/persons", {"q": f"{family.lower()} {given.upper()}"})
    html = await response.text()
    assert response.status == 200
    check_page(f"{base}/persons (search)", html)
    assert f'href="{base}/persons/{person_of(ALMA_KEY)}"' in html
    status, html = await ui.get(f"{base}/persons/{person_of(ALMA_KEY)}")
    assert f"{given} {family}" in html
    assert 'class="verdict verdict-waiting" data-vendor="ne"' in html  # saved, not projected: no normaliser runs
    assert "Väntar (NE Nationalencyklopedin): skickas vid nästa synkronisering" in html
    assert (await ui.get(f"{base}/persons/{uuid.uuid4()}"))[0] == 404
    assert (await ui.get(f"{base}/persons/not-an-id"))[0] == 404
    status, html = await ui.get(f"{base}/gdpr")
    assert "DNR-2026-17" in html

    # Holds and GDPR requests act through the service (and say so).
    response = await ui.post(
        f"{base}/holds", {"vendor_id": VENDOR, "school_unit_id": seeded["unit_id"], "decision": "approve"}
    )
    assert response.status == 303
    status, html = await ui.get(f"{base}/holds")
    assert "Borttagningarna är godkända" in html
    assert "Godkänd" in html
    response = await ui.post(f"{base}/gdpr/requests/{seeded['request_id']}/withdraw", {})
    assert response.status == 303
    response = await ui.post(f"{base}/gdpr", {"q": "student-0-0"})
    chosen = re.search(r'name="person" value="([^"]+)"', await response.text())
    assert chosen is not None
    response = await ui.post(f"{base}/gdpr", {"q": "student-0-0", "person": chosen.group(1)})
    html = await response.text()
    person_id = re.search(r'name="person_id" value="([^"]+)"', html)
    assert person_id is not None
    response = await ui.post(
        f"{base}/gdpr/requests", {"person_id": person_id.group(1), "kind": "erasure", "scope": "all", "confirm": "yes"}
    )
    assert response.status == 303
    status, html = await ui.get(f"{base}/gdpr")
    assert "Begäran om radering är skickad." in html
    status, html = await ui.get(f"{base}/log")
    assert "Begärde radering" in html
    assert "Godkände spärrade borttagningar" in html
    assert not [s for s in SECRETS if s in html]


async def test_a_failed_run_shows_each_error_code_with_its_fix_hint_in_swedish(ui: Ui):
    now = datetime.now(UTC)
    await ui.app.db["runs"].insert_one(
        {
            "_id": str(uuid.uuid4()),
            "tenant_id": TENANT,
            "source_id": "google-1",
            "source_kind": "google",
            "mode": "full",
            "status": "finalised",
            "started_at": now - timedelta(minutes=1),
            "finalised_at": now,
            "completion": {"pages": 0, "counts": {}, "healthy": False, "errors": ["token:invalid_grant", "users:odd"]},
            "outcome": {"complete": False, "reasons": []},
        }
    )
    await ui.login(await ui.token_for(TENANT))
    status, html = await ui.get(f"/ui/t/{TENANT}/sources")
    assert status == 200
    check_page("sources", html)
    assert "<code>token:invalid_grant</code>: <strong>Google godtog inte tjänstekontots inloggning.</strong>" in html
    assert "Kontrollera administratörskontot (delegated_admin" in html
    assert "<li><code>users:odd</code></li>" in html  # a code without a hint is still shown


async def test_an_operator_keeps_the_vendor_catalogue_in_the_ui(ui: Ui) -> None:
    """Issue 18: vendors are added, edited and retired in the UI as their catalogue entry (YAML); what
    cannot be used is named, nothing is stored; an organiser's admin cannot reach the page."""
    entry = {"vendor_id": "ny-leverantor", "display_name": "Ny leverantör AB", "delivery": "queue", "profile": {}}
    status, html = await ui.get("/ui/catalogue")
    assert status == 200
    check_page("catalogue", html)
    # The seeded files are there (deploy/vendors: the admin's default folder).
    assert "binogi" in html
    response = await ui.post("/ui/catalogue", {"entry": "vendor_id: [unclosed"})
    assert response.status == 422
    assert "Texten är inte giltig YAML." in await response.text()
    response = await ui.post("/ui/catalogue", {"entry": yaml.safe_dump({**entry, "delivery": "fax"})})
    html = await response.text()
    assert response.status == 422
    assert "delivery" in html
    check_page("catalogue (invalid)", html)
    assert await ui.service.vendor_store.get("ny-leverantor") is None

    response = await ui.post("/ui/catalogue", {"entry": yaml.safe_dump(entry, allow_unicode=True)})
    assert response.status == 303, await response.text()
    stored = await ui.service.vendor_store.get("ny-leverantor")
    assert stored is not None
    assert stored.entry.display_name == "Ny leverantör AB"
    status, html = await ui.get("/ui/catalogue/ny-leverantor")
    assert "display_name: Ny leverantör AB" in html
    check_page("catalogue edit", html)
    response = await ui.post("/ui/catalogue", {"entry": yaml.safe_dump({**entry, "display_name": "Omdöpt AB"})})
    assert response.status == 303
    stored = await ui.service.vendor_store.get("ny-leverantor")
    assert stored is not None
    assert (stored.entry.display_name, stored.version) == ("Omdöpt AB", 2)
    # An organiser's own API key at the vendor: set (never shown again), refused when too short, removed.
    secret_key = "organiser-key-" + "k" * 20
    form = {"tenant_id": TENANT, "api_key": secret_key}
    response = await ui.post("/ui/catalogue/ny-leverantor/credentials", form)
    assert response.status == 303
    assert [c["tenant_id"] for c in await ui.service.credentials.listed("ny-leverantor")] == [TENANT]
    status, html = await ui.get("/ui/catalogue/ny-leverantor")
    assert f"Ta bort uppgifterna för {TENANT}" in html
    assert "API-nyckel</span>" in html
    assert secret_key not in html
    check_page("catalogue edit with keys", html)
    response = await ui.post("/ui/catalogue/ny-leverantor/credentials", {"tenant_id": OTHER, "api_key": "kort"})
    assert response.status == 303
    assert [c["tenant_id"] for c in await ui.service.credentials.listed("ny-leverantor")] == [TENANT]
    # A client certificate needs the vendor over https; nothing filled in is refused with what to fill in.
    certificate = trustme.CA().issue_cert("kommun.skolsynk.example")
    form = {
        "tenant_id": OTHER,
        "client_certificate_pem": certificate.cert_chain_pems[0].bytes().decode(),
        "client_key_pem": certificate.private_key_pem.bytes().decode(),
    }
    response = await ui.post("/ui/catalogue/ny-leverantor/credentials", form)
    assert response.status == 303
    status, html = await ui.get("/ui/catalogue/ny-leverantor")
    assert "Klientcertifikat går bara till en EGIL SCIM-leverantör över https." in html
    assert [c["tenant_id"] for c in await ui.service.credentials.listed("ny-leverantor")] == [TENANT]
    response = await ui.post("/ui/catalogue/ny-leverantor/credentials", {"tenant_id": OTHER})
    status, html = await ui.get("/ui/catalogue/ny-leverantor")
    assert "Fyll i en API-nyckel, eller ett klientcertifikat med dess privata nyckel." in html
    response = await ui.post(f"/ui/catalogue/ny-leverantor/credentials/{TENANT}/delete", {})
    assert response.status == 303
    assert await ui.service.credentials.listed("ny-leverantor") == []

    response = await ui.post("/ui/catalogue/ny-leverantor/retire", {})
    assert response.status == 303
    stored = await ui.service.vendor_store.get("ny-leverantor")
    assert stored is not None
    assert stored.retired_at is not None
    status, html = await ui.get("/ui/catalogue")
    assert "Avvecklad" in html

    await ui.login(await ui.token_for(TENANT))
    status, _ = await ui.get("/ui/catalogue")
    assert status == 403


async def test_an_organiser_sets_who_is_told_when_deliveries_fail(ui: Ui) -> None:
    """Issue 18: the overview's notification recipients, one address a line; a wrong one is refused."""
    await ui.login(await ui.token_for(TENANT))
    response = await ui.post(
        f"/ui/t/{TENANT}/contacts", {"notify_emails": "it@kommun.example\nrektor@kommun.example\n"}
    )
    assert response.status == 303
    tenant = await ui.service.tenants.get(TENANT)
    assert tenant is not None
    assert tenant["notify_emails"] == ["it@kommun.example", "rektor@kommun.example"]
    status, html = await ui.get(f"/ui/t/{TENANT}/")
    assert status == 200
    assert "it@kommun.example\nrektor@kommun.example" in html
    check_page("overview with contacts", html)
    response = await ui.post(f"/ui/t/{TENANT}/contacts", {"notify_emails": "inte en adress"})
    assert response.status == 303
    tenant = await ui.service.tenants.get(TENANT)
    assert tenant is not None
    assert tenant["notify_emails"] == ["it@kommun.example", "rektor@kommun.example"]
    # Another organiser's contacts are out of reach.
    response = await ui.post(f"/ui/t/{OTHER}/contacts", {"notify_emails": "x@y.example"})
    assert response.status == 403


async def test_an_organiser_chooses_how_persons_without_a_marking_are_treated(ui: Ui) -> None:
    """Issue 20: the overview's choice for persons whose source gives no securityMarking (protected by
    default); a value that is not one of the choices is refused, another organiser's is out of reach."""
    await ui.login(await ui.token_for(TENANT))
    status, html = await ui.get(f"/ui/t/{TENANT}/")
    assert status == 200
    assert 'value="protected" checked' in html
    assert "Skyddade personuppgifter" in html
    check_page("overview with the marking choice", html)
    response = await ui.post(f"/ui/t/{TENANT}/privacy", {"missing_marking": "not_protected"})
    assert response.status == 303
    assert await OrganiserSettings(ui.service.db).missing_marking(TENANT) is MissingMarkingPolicy.NOT_PROTECTED
    status, html = await ui.get(f"/ui/t/{TENANT}/")
    assert 'value="not_protected" checked' in html
    assert "Leverantörernas urval räknas om" in html
    response = await ui.post(f"/ui/t/{TENANT}/privacy", {"missing_marking": "kanske"})
    assert response.status == 303
    assert await OrganiserSettings(ui.service.db).missing_marking(TENANT) is MissingMarkingPolicy.NOT_PROTECTED
    response = await ui.post(f"/ui/t/{OTHER}/privacy", {"missing_marking": "not_protected"})
    assert response.status == 403
    assert await OrganiserSettings(ui.service.db).missing_marking(OTHER) is MissingMarkingPolicy.PROTECTED
