"""Vendors as data (issue 18): the catalogue lives in the store. An operator adds a vendor through the admin
API and a running dispatcher (serving every vendor of the catalogue) delivers to it without a restart; an
edit restarts only that vendor's worker; retiring stops it; an organiser's token cannot touch the catalogue;
``skolsynk vendors import`` puts a folder of catalogue files in the store and never revives a retired vendor.
Against the admin API, the normaliser, a dispatcher and the fake EGIL SCIM vendor, on the real broker and
the Mongo wire server."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import io
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import trustme
import yaml
from aiohttp import web
from cryptography.hazmat.primitives import serialization

from skolsynk.cli import CliSettings, execute, parser
from skolsynk.contracts.source import SourceRecord
from skolsynk.domain.subscription import VendorSubscription
from skolsynk.service import ServiceApp
from skolsynk.settings import ServiceSettings
from skolsynk.storage.delivery_backlog import DeliveryBacklog
from skolsynk.storage.holds import HoldStore
from skolsynk.storage.sources import SecretBox, SourceStore
from skolsynk.storage.subscriptions import SubscriptionStore
from skolsynk.storage.vendors import VendorStore, seed_catalogue
from skolsynk_services.admin.app import AdminSettings
from skolsynk_services.admin.app import build as build_admin
from skolsynk_services.admin.auth import Role
from skolsynk_services.admin.notify import Mailer, Notifier
from skolsynk_services.admin.stores import LifecycleStore
from skolsynk_services.admin.tokens import TokenStore
from skolsynk_services.dispatcher.app import DispatcherSettings
from skolsynk_services.dispatcher.app import build as build_dispatcher
from skolsynk_services.dispatcher.drift import DriftChecker
from skolsynk_services.dispatcher.vendors import VendorPool
from skolsynk_services.normaliser.app import NormaliserSettings
from skolsynk_services.normaliser.app import build as build_normaliser
from skolsynk_testkit.devstack import free_port, write_vendor_catalogue
from skolsynk_testkit.fakes.egil_vendor import FakeEgilVendor, server_ssl_context, spki_sha256_pin
from skolsynk_testkit.synthetic import full_run, organiser, school_unit_codes
from tests.helpers import delete_topology, wait_for
from tests.smtp import Inbox, local_smtp_server

pytestmark = [pytest.mark.connected, pytest.mark.timeout(120)]

TENANT = "kommun-a"
SOURCE = "egil-1"
VENDOR = "nyleverantor"
API_KEY = "test-key-" + "1" * 16
KEY_ENV = "SKOLSYNK_TEST_NEW_VENDOR_KEY"
SECRETS_KEY = "2mJ3m6mCAxzGzO8Ihc4r3Vxv3Fj0vIYbVwJJmQKkV4g="  # a throwaway Fernet key for tests


@dataclass
class Stack:
    admin: ServiceApp
    normaliser: ServiceApp
    dispatcher: ServiceApp
    vendor: FakeEgilVendor
    session: aiohttp.ClientSession
    operator: str

    @property
    def pool(self) -> VendorPool:
        pool: VendorPool = self.dispatcher.extensions["pool"]
        return pool

    async def call(self, method: str, path: str, body: Any = None, *, token: str | None = None) -> tuple[int, Any]:
        base = f"http://127.0.0.1:{self.admin.web_ports[0]}/api/v1"
        headers = {"Authorization": f"Bearer {token or self.operator}"}
        async with self.session.request(method, base + path, json=body, headers=headers) as response:
            return response.status, await response.json(content_type=None)


@pytest.fixture
def inbox() -> Iterator[tuple[Inbox, int]]:
    with local_smtp_server() as server:
        yield server


@pytest.fixture
async def stack(settings: ServiceSettings, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Stack]:
    monkeypatch.setenv(KEY_ENV, API_KEY)
    base = settings.model_dump()
    vendor = FakeEgilVendor(api_keys={API_KEY: TENANT})
    await vendor.start()
    apps: list[ServiceApp] = []
    session = aiohttp.ClientSession()
    try:
        admin = build_admin(
            AdminSettings.model_validate(
                {
                    **base,
                    "admin_port": 0,
                    "admin_host": "127.0.0.1",
                    "vendor_catalogue_dir": None,
                    "vendors_poll_seconds": 0.2,
                    "delivery_failing_minutes": 0.05,  # three seconds of retrying is failing here
                    "admin_secrets_key": SECRETS_KEY,
                }
            )
        )
        normaliser = build_normaliser(
            NormaliserSettings.model_validate({**base, "date_check_interval_seconds": 86400}),
            clock=lambda: datetime(2026, 11, 26, 12, tzinfo=UTC),
        )
        # One dispatcher for every vendor of the catalogue, which is empty at start.
        dispatcher = build_dispatcher(
            DispatcherSettings.model_validate(
                {
                    **base,
                    "vendor_catalogue_dir": None,
                    "vendors_poll_seconds": 0.2,
                    "vendor_retry_timeout_seconds": 2,
                    "admin_secrets_key": SECRETS_KEY,
                }
            )
        )
        for app in (admin, normaliser, dispatcher):
            apps.append(app)
            await app.start()
        operator, _ = await TokenStore(admin.db).create(
            role=Role.OPERATOR, subject="ops-1", tenant_id=None, created_by="test"
        )
        stack = Stack(admin, normaliser, dispatcher, vendor, session, operator)
        status, _ = await stack.call("POST", "/tenants", {"tenant_id": TENANT, "display_name": "Kommun A"})
        assert status == 201
        yield stack
    finally:
        await session.close()
        for app in reversed(apps):
            await app.drain(1)
            await app.close()
            await delete_topology(settings.broker.amqp_url.get_secret_value(), app.topology)
        await vendor.stop()


def catalogue_entry(tmp_path: Path, base_url: str) -> dict[str, Any]:
    """A catalogue entry as a file in deploy/vendors holds it (EGIL SCIM push with an API key)."""
    folder = write_vendor_catalogue(tmp_path / "vendors", VENDOR, scim_base_url=base_url, api_key_env=KEY_ENV)
    entry: dict[str, Any] = yaml.safe_load((folder / f"{VENDOR}.yaml").read_text(encoding="utf-8"))
    return entry


async def sync(stack: Stack, records: list[Any], tenant_id: str = TENANT) -> None:
    """A full run of the organiser's EGIL source, as the receiver publishes it."""
    for message in full_run(records, source_id=SOURCE, source_kind="egil", page_size=25, run_id=uuid.uuid4()):
        await stack.normaliser.publisher.publish(
            message.to_envelope(tenant_id=tenant_id, producer="test"),
            exchange=stack.normaliser.topology.exchange("source"),
            routing_key=f"egil.{tenant_id}",
        )


async def test_a_vendor_added_in_the_admin_is_delivered_to_without_a_restart(stack: Stack, tmp_path: Path) -> None:
    assert stack.pool.workers == {}
    entry = catalogue_entry(tmp_path, stack.vendor.base_url)

    # An organiser's admin cannot touch the catalogue; a wrong body is a clear 422 naming the field.
    status, body = await stack.call("POST", f"/tenants/{TENANT}/tokens", {"subject": "it-admin"})
    assert status == 201
    status, _ = await stack.call("PUT", f"/catalogue/vendors/{VENDOR}", entry, token=body["token"])
    assert status == 403
    status, problem = await stack.call("PUT", f"/catalogue/vendors/{VENDOR}", {**entry, "delivery": "fax"})
    assert status == 422
    assert "delivery" in str(problem)
    status, _ = await stack.call("PUT", "/catalogue/vendors/another-id", entry)
    assert status == 422

    status, created = await stack.call("PUT", f"/catalogue/vendors/{VENDOR}", entry)
    assert (status, created["outcome"], created["version"]) == (200, "created", 1)
    status, listed = await stack.call("GET", "/vendors")
    assert VENDOR in {v["vendor_id"] for v in listed}  # this admin at once
    await wait_for(lambda: VENDOR in stack.pool.workers, what="the dispatcher to serve the new vendor")

    # The organiser subscribes and syncs: the first delivery reaches the new vendor.
    records = organiser(seed=5, school_units=1, students_per_unit=4, teachers_per_unit=1)
    await SubscriptionStore(stack.normaliser.db).save(
        VendorSubscription(
            tenant_id=TENANT, vendor_id=VENDOR, school_unit_codes=frozenset(school_unit_codes(records)), test_mode=False
        )
    )
    await sync(stack, records)
    await wait_for(
        lambda: len(stack.vendor.resources(TENANT, "Users")) == 5, timeout=60, what="the persons at the vendor"
    )

    # An edit restarts that vendor's worker with the new settings; unchanged, it writes nothing.
    worker = stack.pool.workers[VENDOR]
    status, same = await stack.call("PUT", f"/catalogue/vendors/{VENDOR}", entry)
    assert (status, same["outcome"], same["version"]) == (200, "unchanged", 1)
    status, edited = await stack.call("PUT", f"/catalogue/vendors/{VENDOR}", {**entry, "display_name": "Ny AB"})
    assert (status, edited["outcome"], edited["version"]) == (200, "updated", 2)
    await wait_for(lambda: stack.pool.workers.get(VENDOR) not in (None, worker), what="the worker restarted")
    assert stack.pool.workers[VENDOR].vendor.display_name == "Ny AB"

    # Retired: no longer served, no longer offered to organisers; its history stays.
    status, retired = await stack.call("DELETE", f"/catalogue/vendors/{VENDOR}")
    assert (status, retired["outcome"]) == (200, "retired")
    assert retired["retired_at"] is not None
    await wait_for(lambda: VENDOR not in stack.pool.workers, what="the dispatcher to stop serving the vendor")
    status, listed = await stack.call("GET", "/vendors")
    assert VENDOR not in {v["vendor_id"] for v in listed}
    status, everything = await stack.call("GET", "/catalogue/vendors")
    assert [v["vendor_id"] for v in everything] == [VENDOR]
    audit = [e async for e in stack.admin.db["admin_audit"].find({"target": VENDOR})]
    assert {e["action"] for e in audit} == {"vendor.put", "vendor.retire"}


async def test_the_import_command_fills_the_store_and_never_revives_a_retired_vendor(
    settings: ServiceSettings, tmp_path: Path, mongo: Any
) -> None:
    db = mongo[settings.store.mongodb_database]
    folder = write_vendor_catalogue(tmp_path / "vendors", "queuevendor")
    write_vendor_catalogue(folder, "scimvendor", scim_base_url="https://vendor.example/scim", api_key_env=KEY_ENV)
    cli = CliSettings(
        broker=settings.broker, store=settings.store, observability=settings.observability, lifecycle=settings.lifecycle
    )

    async def run(*argv: str) -> tuple[int, str]:
        out, err = io.StringIO(), io.StringIO()
        code = await execute(parser().parse_args(list(argv)), cli, out=out, err=err)
        return code, out.getvalue() + err.getvalue()

    # Services seeding from their folder at the same start race: the first one creates, nobody fails.
    seeded = await asyncio.gather(*(seed_catalogue(VendorStore(db), folder) for _ in range(4)), return_exceptions=True)
    assert not [r for r in seeded if isinstance(r, BaseException)]
    assert sorted(v for r in seeded if isinstance(r, list) for v in r) == ["queuevendor", "scimvendor"]
    await db["vendors"].delete_many({})

    code, text = await run("vendors", "import", str(folder), "--dry-run")
    assert code == 0
    assert "2 created" in text
    assert await VendorStore(db).all() == []
    code, text = await run("vendors", "import", str(folder))
    assert (code, "2 created" in text) == (0, True)
    code, text = await run("vendors", "import", str(folder))
    assert (code, "2 unchanged" in text) == (0, True)
    assert await VendorStore(db).retire("queuevendor", by="test")
    code, text = await run("vendors", "import", str(folder))
    assert "1 retired" in text
    assert set(await VendorStore(db).active()) == {"scimvendor"}
    code, text = await run("vendors", "list")
    assert "queuevendor" in text
    assert "scimvendor" in text
    (folder / "broken.yaml").write_text("vendor_id: broken\n", encoding="utf-8")
    code, text = await run("vendors", "import", str(folder))
    assert code == 1
    assert "broken.yaml" in text


async def test_a_slow_vendor_does_not_delay_another_vendors_deliveries(stack: Stack, tmp_path: Path) -> None:
    """One dispatcher serving two vendors: each has its own queue, consumer and SCIM client, so a vendor
    whose server takes seconds per request holds up only its own deliveries."""
    fast = FakeEgilVendor(api_keys={API_KEY: TENANT})
    await fast.start()
    try:
        slow_entry = catalogue_entry(tmp_path, stack.vendor.base_url)
        slow_entry["scim"]["concurrency"] = 1
        fast_entry = {**catalogue_entry(tmp_path, fast.base_url), "vendor_id": "snabb", "display_name": "Snabb AB"}
        for entry in (slow_entry, fast_entry):
            status, body = await stack.call("PUT", f"/catalogue/vendors/{entry['vendor_id']}", entry)
            assert status == 200, body
        await wait_for(lambda: set(stack.pool.workers) == {VENDOR, "snabb"}, what="both vendors served")
        stack.vendor.faults.delay(3.0)  # every request to the slow vendor takes three seconds

        records = organiser(seed=5, school_units=1, students_per_unit=4, teachers_per_unit=1)
        codes = frozenset(school_unit_codes(records))
        for vendor_id in (VENDOR, "snabb"):
            await SubscriptionStore(stack.normaliser.db).save(
                VendorSubscription(tenant_id=TENANT, vendor_id=vendor_id, school_unit_codes=codes, test_mode=False)
            )
        await sync(stack, records)
        await wait_for(lambda: len(fast.resources(TENANT, "Users")) == 5, timeout=60, what="the fast vendor's persons")
        assert len(stack.vendor.resources(TENANT, "Users")) < 5  # the slow one is still at it
    finally:
        stack.vendor.faults.delay(0)
        await fast.stop()


async def test_delivery_health_follows_a_vendor_that_fails_and_recovers(
    stack: Stack, tmp_path: Path, inbox: tuple[Inbox, int]
) -> None:
    """Issue 18: the organiser sees, on the subscription (API, vendor page, overview) and the operator in
    `skolsynk status` and the metric, that deliveries go through, are retrying (with the last error in
    Swedish and English), are failing past the threshold, and are fine again once the vendor answers."""
    support = {"email": "support@leverantor.example", "phone": "+46 8 123 45 67"}
    status, _ = await stack.call(
        "PUT", f"/catalogue/vendors/{VENDOR}", {**catalogue_entry(tmp_path, stack.vendor.base_url), "support": support}
    )
    assert status == 200
    await wait_for(lambda: VENDOR in stack.pool.workers, what="the vendor served")
    records = organiser(seed=5, school_units=1, students_per_unit=4, teachers_per_unit=1)
    await SubscriptionStore(stack.normaliser.db).save(
        VendorSubscription(
            tenant_id=TENANT, vendor_id=VENDOR, school_unit_codes=frozenset(school_unit_codes(records)), test_mode=False
        )
    )

    async def health() -> dict[str, Any]:
        status, body = await stack.call("GET", f"/tenants/{TENANT}/subscriptions/{VENDOR}")
        assert status == 200, body
        result: dict[str, Any] = body["health"]
        return result

    assert (await health())["state"] == "unknown"
    # The organiser's contacts, and the admin's notifier on the local SMTP server.
    server, smtp_port = inbox
    mails = server.messages
    status, contacts = await stack.call(
        "PUT", f"/tenants/{TENANT}/contacts", {"notify_emails": ["it@kommun-a.example"]}
    )
    assert (status, contacts["notify_emails"], contacts["webhook_url"]) == (200, ["it@kommun-a.example"], None)
    status, _ = await stack.call("PUT", f"/tenants/{TENANT}/contacts", {"notify_emails": ["inte en adress"]})
    assert status == 422
    notifier: Notifier = stack.admin.extensions["notifier"]
    notifier.mailer = Mailer(host="127.0.0.1", port=smtp_port, sender="skolsynk@drift.example", starttls=False)
    await sync(stack, records)
    await wait_for(lambda: len(stack.vendor.resources(TENANT, "Users")) == 5, timeout=60, what="the first delivery")

    async def state_is(expected: str) -> bool:
        return (await health())["state"] == expected

    async def pending_is(expected: int) -> bool:
        return int((await health())["pending"]) == expected

    await wait_for(lambda: state_is("ok"), what="the pair to be ok")
    assert (await health())["last_success_at"] is not None

    await wait_for(lambda: pending_is(0), what="nothing pending once everything is at the vendor")

    stack.vendor.faults.error_rate(1.0, status=503)  # the vendor's server fails every request
    renamed = [
        SourceRecord(kind=r.kind, key=r.key, data={**r.data, "family_name": "Nyström"}) if r.key == "student-0-0" else r
        for r in records
    ]
    await sync(stack, renamed)
    await wait_for(lambda: state_is("retrying"), timeout=60, what="the pair to be retrying")
    failing = await health()
    assert failing["last_error"] == "http_503"
    # The renamed student waits (and whatever else the rename changed): counted, with when it was queued.
    assert failing["pending"] >= 1
    assert failing["oldest_pending_at"] is not None
    assert not failing["oldest_pending_at_least"]
    waiting_since = datetime.fromisoformat(failing["oldest_pending_at"])
    assert timedelta(0) <= datetime.now(UTC) - waiting_since < timedelta(minutes=2)
    assert failing["last_error_sv"] == "Leverantörens server svarade med ett fel (503)."
    assert failing["last_error_en"] == "The vendor's server answered with an error (503)."
    await wait_for(lambda: state_is("failing"), timeout=30, what="retrying past the threshold: failing")
    await notifier.check()
    await notifier.check()  # the same episode: nothing more
    assert [m["Subject"] for m in mails] == ["skolsynk: leveranserna till nyleverantor (demo) misslyckas"]
    assert mails[0]["To"] == "it@kommun-a.example"
    text = mails[0].get_content()
    assert "Leverantörens support: support@leverantor.example, +46 8 123 45 67." in text  # where to turn
    assert "Leverantörens server svarade med ett fel (503)." in text
    assert "The vendor's server answered with an error (503)." in text
    await stack.pool.refresh_health()
    gauge = stack.dispatcher.metrics.registry.get_sample_value(
        "skolsynk_delivery_retrying_seconds", {"tenant": TENANT, "vendor": VENDOR}
    )
    assert gauge is not None
    assert gauge > 0
    out, err = io.StringIO(), io.StringIO()
    cli = CliSettings.model_validate({**stack.dispatcher.settings.model_dump(), "delivery_failing_minutes": 0.05})
    assert await execute(parser().parse_args(["status", "--json"]), cli, out=out, err=err) == 0
    rows = json.loads(out.getvalue())["delivery_states"]
    assert [(r["tenant_id"], r["vendor_id"], r["state"], r["last_error"]) for r in rows] == [
        (TENANT, VENDOR, "failing", "http_503")
    ]
    assert rows[0]["pending"] == failing["pending"]
    assert rows[0]["oldest_pending_at"] is not None
    assert await stack.pool.refresh_backlog() == 0  # busy (retrying): the counts are not levelled
    samples = {
        name: stack.dispatcher.metrics.registry.get_sample_value(name, {"tenant": TENANT, "vendor": VENDOR})
        for name in ("skolsynk_delivery_pending_changes", "skolsynk_delivery_oldest_pending_seconds")
    }
    assert samples["skolsynk_delivery_pending_changes"] == failing["pending"]
    assert (samples["skolsynk_delivery_oldest_pending_seconds"] or 0) > 0

    # The vendor's last drift check, as it concerns this organiser, is there too.
    await stack.dispatcher.db["drift_reports"].insert_one(
        {
            "vendor_id": VENDOR,
            "at": datetime.now(UTC),
            "missing": 3,
            "ghosts": 0,
            "missing_by_tenant": {TENANT: 2, "kommun-b": 1},
            "ghosts_by_tenant": {},
        }
    )
    drift = await health()
    assert (drift["drift_missing"], drift["drift_ghosts"]) == (2, 0)

    # The subscription's page and the overview say so, in Swedish (and the error in English too).
    origin = f"http://127.0.0.1:{stack.admin.web_ports[0]}"
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
        login = {"token": stack.operator}
        async with browser.post(f"{origin}/ui/login", data=login, headers={"Origin": origin}) as response:
            assert response.status == 200, await response.text()  # redirected to the start page
        async with browser.get(f"{origin}/ui/t/{TENANT}/vendors/{VENDOR}") as response:
            page = await response.text()
        assert "Misslyckas" in page
        assert "Leverantörens server svarade med ett fel (503)." in page
        assert "The vendor&#39;s server answered with an error (503)." in page
        assert "2 saknades hos leverantören" in page
        assert "väntar på att nå nyleverantor (demo)" in page
        assert 'href="mailto:support@leverantor.example"' in page
        async with browser.get(f"{origin}/ui/t/{TENANT}/") as response:
            overview = await response.text()
        assert "Misslyckas" in overview
        assert "äldsta från" in overview  # the pending changes of the pair
        assert "Leveranserna till nyleverantor (demo) misslyckas" in overview  # the notification, listed
        assert "till 1 mottagare" in overview

    stack.vendor.faults.error_rate(0)  # back: the retried change goes through
    await wait_for(lambda: state_is("ok"), timeout=90, what="the pair to be ok again")
    await wait_for(lambda: pending_is(0), what="nothing pending once the retried changes are through")
    # Counts that drifted (a crash between a delivery and its count) are levelled while the vendor is idle
    # (at the pool's next reading of its gauges: every poll here).
    stack.pool.gauge_seconds = stack.pool.poll_seconds
    await DeliveryBacklog(stack.normaliser.db).queued(VENDOR, TENANT, 3, at=datetime.now(UTC), session=None)
    await wait_for(lambda: pending_is(0), what="the drifted counts levelled")
    settled = await stack.dispatcher.db["delivery_backlog"].find_one({"_id": f"{VENDOR}:{TENANT}:settled"})
    assert settled is not None
    assert settled["leveled_at"] is not None
    await notifier.check()
    await notifier.check()
    assert [m["Subject"] for m in mails][1:] == ["skolsynk: leveranserna till nyleverantor (demo) fungerar igen"]
    status, told = await stack.call("GET", f"/tenants/{TENANT}/notifications")
    assert status == 200
    assert [(n["kind"], n["subject"], n["recipients"]) for n in told] == [("delivery_failing", VENDOR, 1)]
    assert told[0]["recovered_at"] is not None
    assert told[0]["recovery_sent_at"] is not None
    names = [u.get("name", {}).get("familyName") for u in stack.vendor.resources(TENANT, "Users").values()]
    assert "Nyström" in names
    await stack.pool.refresh_health()
    assert (
        stack.dispatcher.metrics.registry.get_sample_value(
            "skolsynk_delivery_retrying_seconds", {"tenant": TENANT, "vendor": VENDOR}
        )
        == 0.0
    )


async def test_a_hold_waiting_for_a_decision_is_told_once_and_its_decision_once(
    stack: Stack, tmp_path: Path, inbox: tuple[Inbox, int]
) -> None:
    """By e-mail, and by a signed webhook POST the organiser can verify with the secret it got once."""
    server, smtp_port = inbox
    posts: list[tuple[dict[str, str], bytes]] = []

    async def receive(request: web.Request) -> web.Response:
        posts.append((dict(request.headers), await request.read()))
        return web.Response(status=204)

    hook = web.Application()
    hook.router.add_post("/hook", receive)
    runner = web.AppRunner(hook)
    await runner.setup()
    hook_port = free_port()
    await web.TCPSite(runner, "127.0.0.1", hook_port).start()
    webhook = {"notify_emails": ["it@kommun-a.example"], "webhook_url": f"http://127.0.0.1:{hook_port}/hook"}
    status, contacts = await stack.call("PUT", f"/tenants/{TENANT}/contacts", webhook)
    assert status == 200, contacts
    secret = contacts["webhook_secret"]
    assert secret
    status, again = await stack.call("GET", f"/tenants/{TENANT}/contacts")
    assert (again["webhook_url"], again["webhook_secret"]) == (webhook["webhook_url"], None)  # shown once
    status, _ = await stack.call(
        "PUT", f"/catalogue/vendors/{VENDOR}", catalogue_entry(tmp_path, stack.vendor.base_url)
    )
    assert status == 200
    notifier: Notifier = stack.admin.extensions["notifier"]
    notifier.mailer = Mailer(host="127.0.0.1", port=smtp_port, sender="skolsynk@drift.example", starttls=False)
    holds = HoldStore(stack.admin.db)
    unit = str(uuid.uuid4())
    await holds.collection.insert_one(
        {
            "_id": HoldStore.hold_id(TENANT, VENDOR, unit),
            "tenant_id": TENANT,
            "vendor_id": VENDOR,
            "school_unit_id": unit,
            "status": "pending",
            "removals": 120,
            "created_at": datetime.now(UTC),
        }
    )
    await notifier.check()
    await notifier.check()
    assert [m["Subject"] for m in server.messages] == [
        "skolsynk: raderingar hos nyleverantor (demo) väntar på ditt beslut"
    ]
    assert "120 raderingar" in server.messages[0].get_content()
    assert await holds.decide(TENANT, VENDOR, unit, "approved", by="it-admin")
    await notifier.check()
    await notifier.check()
    assert [m["Subject"] for m in server.messages][1:] == ["skolsynk: spärren för nyleverantor (demo) är beslutad"]
    assert len(posts) == 2
    for headers, body in posts:
        expected = hmac.new(
            secret.encode(), headers["X-Skolsynk-Timestamp"].encode() + b"." + body, hashlib.sha256
        ).hexdigest()
        assert headers["X-Skolsynk-Signature"] == f"sha256={expected}"
    assert [(json.loads(b)["kind"], json.loads(b)["resolved"]) for _, b in posts] == [
        ("holds_waiting", False),
        ("holds_waiting", True),
    ]
    await runner.cleanup()


async def test_a_source_failing_past_the_threshold_is_told_once_and_its_recovery_once(
    stack: Stack, inbox: tuple[Inbox, int]
) -> None:
    """A source whose runs have been incomplete for longer than the threshold: one mail (with the fix for
    its error code), none while a new run is still in progress, one when a run is complete again."""
    server, smtp_port = inbox
    status, _ = await stack.call("PUT", f"/tenants/{TENANT}/contacts", {"notify_emails": ["it@kommun-a.example"]})
    assert status == 200
    notifier: Notifier = stack.admin.extensions["notifier"]
    notifier.mailer = Mailer(host="127.0.0.1", port=smtp_port, sender="skolsynk@drift.example", starttls=False)
    runs = stack.admin.db["runs"]
    now = datetime.now(UTC)

    async def run(minutes_ago: float, *, complete: bool | None, status: str = "finalised") -> None:
        await runs.insert_one(
            {
                "_id": str(uuid.uuid4()),
                "tenant_id": TENANT,
                "source_id": "google-1",
                "source_kind": "google",
                "mode": "full",
                "status": status,
                "started_at": now - timedelta(minutes=minutes_ago),
                # As the normaliser writes a finalised run: the connector's error codes in the completion,
                # why the run is incomplete (in English) in the outcome.
                "completion": {"errors": [] if complete else ["token:unauthorized_client"]},
                "outcome": {"complete": complete, "reasons": [] if complete else ["the source reported read errors"]},
            }
        )

    await run(120, complete=True)
    await run(60, complete=False)
    await run(30, complete=False)
    await run(1, complete=None, status="receiving")  # in progress: passed over
    await notifier.check()
    await notifier.check()
    assert [m["Subject"] for m in server.messages] == ["skolsynk: inläsningen från google-1 misslyckas"]
    text = server.messages[0].get_content()
    assert "token:unauthorized_client" in text
    assert "delegering" in text.lower()  # the fix for the code, from the source-error hints
    assert "delegation" in text.lower()  # and in English

    # The source's health where people look: the API, the sources page, the overview and skolsynk status.
    await SourceStore(stack.admin.db, SecretBox(None)).save(
        TENANT,
        "google-1",
        kind="google",
        display_name="Google",
        settings={},
        secrets={},
        secret_refs={},
        create=True,
        enabled=False,
    )
    status, source = await stack.call("GET", f"/tenants/{TENANT}/sources/google-1")
    assert status == 200, source
    health = source["health"]
    assert (health["state"], health["failed_runs"]) == ("failing", 2)
    assert abs(datetime.fromisoformat(health["failing_since"]) - (now - timedelta(minutes=60))) < timedelta(seconds=1)
    assert health["errors"][0]["code"] == "token:unauthorized_client"
    assert health["errors"][0]["needs_admin"] is True
    assert health["reasons"] == ["the source reported read errors"]
    assert abs(datetime.fromisoformat(health["last_complete_at"]) - (now - timedelta(minutes=120))) < timedelta(
        seconds=1
    )
    assert health["running_since"] is not None
    origin = f"http://127.0.0.1:{stack.admin.web_ports[0]}"
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
        login = {"token": stack.operator}
        async with browser.post(f"{origin}/ui/login", data=login, headers={"Origin": origin}) as response:
            assert response.status == 200, await response.text()
        async with browser.get(f"{origin}/ui/t/{TENANT}/sources") as response:
            page = await response.text()
        assert "Misslyckas" in page
        assert "2 körningar i rad" in page
        async with browser.get(f"{origin}/ui/t/{TENANT}/") as response:
            overview = await response.text()
        assert "<caption>Källor</caption>" in overview
        assert "Misslyckas" in overview
    out, err = io.StringIO(), io.StringIO()
    cli = CliSettings.model_validate({**stack.dispatcher.settings.model_dump(), "delivery_failing_minutes": 0.05})
    assert await execute(parser().parse_args(["status", "--json"]), cli, out=out, err=err) == 0
    sources = json.loads(out.getvalue())["sources"]
    assert [(r["source_id"], r["health"], r["errors"]) for r in sources] == [
        ("google-1", "failing", ["token:unauthorized_client"])
    ]
    await run(0, complete=True)
    await notifier.check()
    await notifier.check()
    assert [m["Subject"] for m in server.messages][1:] == [
        "skolsynk: inläsningen från Google fungerar igen"
    ]  # named as the admin calls it


async def test_overdue_deletions_and_an_open_promotion_gate_are_told(
    stack: Stack, tmp_path: Path, inbox: tuple[Inbox, int]
) -> None:
    """Deletions not confirmed in time: one mail, and one when they are all confirmed. A test period that
    is over: one mail saying the subscription can go live (its end, going live, needs no mail)."""
    server, smtp_port = inbox
    entry = catalogue_entry(tmp_path, stack.vendor.base_url)
    assert (await stack.call("PUT", f"/catalogue/vendors/{VENDOR}", entry))[0] == 200
    assert (await stack.call("PUT", f"/tenants/{TENANT}/contacts", {"notify_emails": ["dpo@kommun-a.example"]}))[
        0
    ] == 200
    notifier: Notifier = stack.admin.extensions["notifier"]
    notifier.mailer = Mailer(host="127.0.0.1", port=smtp_port, sender="skolsynk@drift.example", starttls=False)
    now = datetime.now(UTC)
    ledger = stack.admin.db["erasure_ledger"]
    await ledger.insert_one(
        {"_id": "e-1", "tenant_id": TENANT, "vendor_id": VENDOR, "status": "overdue", "overdue_at": now}
    )
    await SubscriptionStore(stack.admin.db).save(
        VendorSubscription(tenant_id=TENANT, vendor_id=VENDOR, school_unit_codes=frozenset({"90005000"}))
    )
    await LifecycleStore(stack.admin.db).test_started(TENANT, VENDOR, now - timedelta(hours=25))
    await notifier.check()
    await notifier.check()
    assert sorted(m["Subject"] for m in server.messages) == [
        "skolsynk: nyleverantor (demo) kan gå live",
        "skolsynk: raderingar hos nyleverantor (demo) är försenade",
    ]
    await ledger.update_one({"_id": "e-1"}, {"$set": {"status": "completed"}})
    await stack.call("POST", f"/tenants/{TENANT}/subscriptions/{VENDOR}/review", {})
    await SubscriptionStore(stack.admin.db).save(
        VendorSubscription(
            tenant_id=TENANT, vendor_id=VENDOR, school_unit_codes=frozenset({"90005000"}), test_mode=False
        )
    )
    await notifier.check()
    await notifier.check()
    assert [m["Subject"] for m in server.messages][2:] == [
        "skolsynk: raderingarna hos nyleverantor (demo) är kvitterade"
    ]


async def subscribe_and_sync(stack: Stack) -> None:
    """The organiser subscribes live to the vendor with a small organiser's school units, and syncs it
    (5 persons: 4 students and a teacher)."""
    records = organiser(seed=5, school_units=1, students_per_unit=4, teachers_per_unit=1)
    await SubscriptionStore(stack.normaliser.db).save(
        VendorSubscription(
            tenant_id=TENANT, vendor_id=VENDOR, school_unit_codes=frozenset(school_unit_codes(records)), test_mode=False
        )
    )
    await sync(stack, records)


async def delivery_health(stack: Stack) -> dict[str, Any]:
    """The organiser's delivery health at the vendor, as the admin API shows it."""
    status, body = await stack.call("GET", f"/tenants/{TENANT}/subscriptions/{VENDOR}")
    assert status == 200, body
    found: dict[str, Any] = body["health"]
    return found


async def wait_for_delivery_error(stack: Stack, code: str) -> dict[str, Any]:
    """The organiser's delivery health once its last error is ``code``."""

    async def failing() -> bool:
        return (await delivery_health(stack)).get("last_error") == code

    await wait_for(failing, timeout=30, what=f"deliveries waiting with {code}")
    return await delivery_health(stack)


async def deliver_two_organisers(stack: Stack, vendor: FakeEgilVendor, other: str) -> None:
    """Two organisers subscribe to the vendor and sync: 5 persons land in tenant ``vendor-a`` at the vendor
    server (kommun-a's own credentials) and 4 in ``vendor-b`` (the other's)."""
    organisers = {TENANT: organiser(seed=5, school_units=1, students_per_unit=4, teachers_per_unit=1),
                  other: organiser(seed=6, school_units=1, students_per_unit=3, teachers_per_unit=1)}  # fmt: skip
    for tenant_id, records in organisers.items():
        codes = frozenset(school_unit_codes(records))
        await SubscriptionStore(stack.normaliser.db).save(
            VendorSubscription(tenant_id=tenant_id, vendor_id=VENDOR, school_unit_codes=codes, test_mode=False)
        )
        await sync(stack, records, tenant_id)
    await wait_for(
        lambda: (len(vendor.resources("vendor-a", "Users")), len(vendor.resources("vendor-b", "Users"))) == (5, 4),
        timeout=60,
        what="each organiser's persons in its own tenant",
    )


async def wait_for_no_drift(drift: DriftChecker) -> None:
    """The drift check finds nothing amiss once the last deliveries are in the ledger (a resource the vendor
    has answered for is recorded a moment later; until then the check counts it as unmanaged)."""

    async def clean() -> bool:
        report = await drift.check()
        return (report.missing, report.ghosts, report.unmanaged) == ({}, {}, 0)

    await wait_for(clean, interval=0.2, what="a drift check that finds nothing amiss")


async def test_two_organisers_at_one_vendor_land_in_two_tenants_there(
    stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 18: each (organiser, vendor) pair has its own API key, set (and rotated) by an operator in the
    admin, sealed in the store: the vendor server keeps a tenant per key, so each organiser's data lands in
    its own tenant, exactly; the drift check compares each pair with its own key and finds nothing amiss."""
    shared, key_a, key_b, key_a2 = ("shared-key-" + c * 16 for c in "0abz")
    vendor = FakeEgilVendor(api_keys={shared: "shared", key_a: "vendor-a", key_b: "vendor-b"})
    await vendor.start()
    monkeypatch.setenv(KEY_ENV, shared)
    try:
        other = "kommun-b"
        status, _ = await stack.call("POST", "/tenants", {"tenant_id": other, "display_name": "Kommun B"})
        assert status == 201
        status, _ = await stack.call("PUT", f"/catalogue/vendors/{VENDOR}", catalogue_entry(tmp_path, vendor.base_url))
        assert status == 200
        for tenant_id, key in ((TENANT, key_a), (other, key_b)):
            status, listed = await stack.call(
                "PUT", f"/catalogue/vendors/{VENDOR}/credentials/{tenant_id}", {"api_key": key}
            )
            assert status == 200, listed
        assert key_a not in str(listed)
        assert key_b not in str(listed)
        assert {c["tenant_id"] for c in listed} == {TENANT, other}
        stored = [d async for d in stack.admin.db["vendor_credentials"].find({})]
        assert all(key_a not in str(d) and key_b not in str(d) for d in stored)  # sealed at rest

        await wait_for(lambda: VENDOR in stack.pool.workers, what="the vendor served")
        worker = stack.pool.workers[VENDOR]
        assert worker.scim is not None
        await wait_for(lambda: len(worker.scim.tenant_keys) == 2, what="the pairs' keys in the dispatcher")
        await deliver_two_organisers(stack, vendor, other)
        assert vendor.resources("shared", "Users") == {}
        a_ids = set(vendor.resources("vendor-a", "Users"))
        b_ids = set(vendor.resources("vendor-b", "Users"))
        assert not a_ids & b_ids

        assert worker.drift is not None
        await wait_for_no_drift(worker.drift)

        # Rotation: a new key for kommun-a (the vendor knows both for a moment), the old one withdrawn.
        vendor.api_keys[key_a2] = "vendor-a"
        status, _ = await stack.call("PUT", f"/catalogue/vendors/{VENDOR}/credentials/{TENANT}", {"api_key": key_a2})
        assert status == 200
        await wait_for(lambda: worker.scim.tenant_keys.get(TENANT) == key_a2, what="the rotated key in use")
        del vendor.api_keys[key_a]
        report = await worker.drift.check()
        assert (report.missing, report.ghosts) == ({}, {})
    finally:
        await vendor.stop()


async def test_organisers_with_their_own_client_certificates_land_in_their_own_tenants(
    stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 18: a pair's credentials can be a client certificate and its key (mutual TLS, as EGIL vendor
    servers keep a tenant per certificate pin), set and rotated by an operator in the admin, sealed in the
    store; each organiser's data lands in its own tenant, and a rotated certificate is used without a
    restart. A key that does not belong to the certificate, or is encrypted, is a 422 naming the field."""
    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    server_file = tmp_path / "server.pem"
    ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(server_file))
    certs = {name: ca.issue_cert(f"{name}.skolsynk.example") for name in ("a", "b", "a2")}
    pem = {
        name: (c.cert_chain_pems[0].bytes().decode(), c.private_key_pem.bytes().decode()) for name, c in certs.items()
    }
    pins = {name: spki_sha256_pin(c.cert_chain_pems[0].bytes()) for name, c in certs.items()}
    vendor = FakeEgilVendor(client_pins={pins["a"]: "vendor-a", pins["b"]: "vendor-b"})
    await vendor.start(ssl_context=server_ssl_context(str(server_file), client_ca=str(ca_file)))
    monkeypatch.setenv(KEY_ENV, "shared-key-" + "0" * 16)
    try:
        other = "kommun-b"
        status, _ = await stack.call("POST", "/tenants", {"tenant_id": other, "display_name": "Kommun B"})
        assert status == 201
        entry = catalogue_entry(tmp_path, vendor.base_url)
        entry["scim"]["auth"]["ca_pem"] = ca_file.read_text()  # pasted in the admin: no file on the dispatcher
        status, _ = await stack.call("PUT", f"/catalogue/vendors/{VENDOR}", entry)
        assert status == 200
        path = f"/catalogue/vendors/{VENDOR}/credentials"

        # What is wrong is said, naming the field, never quoting the key.
        status, problem = await stack.call(
            "PUT", f"{path}/{TENANT}", {"client_certificate_pem": pem["a"][0], "client_key_pem": pem["b"][1]}
        )
        assert (status, problem["errors"][0]["field"]) == (422, "client_key_pem")
        assert "does not belong" in problem["detail"]
        assert "PRIVATE KEY" not in str(problem)
        locked = serialization.load_pem_private_key(pem["a"][1].encode(), password=None).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"hemligt"),
        )
        status, problem = await stack.call(
            "PUT", f"{path}/{TENANT}", {"client_certificate_pem": pem["a"][0], "client_key_pem": locked.decode()}
        )
        assert (status, problem["errors"][0]["field"]) == (422, "client_key_pem")
        status, problem = await stack.call("PUT", f"{path}/{TENANT}", {"client_certificate_pem": pem["a"][0]})
        assert status == 422

        for tenant_id, name in ((TENANT, "a"), (other, "b")):
            status, listed = await stack.call(
                "PUT", f"{path}/{tenant_id}", {"client_certificate_pem": pem[name][0], "client_key_pem": pem[name][1]}
            )
            assert status == 200, listed
        shown = {c["tenant_id"]: c for c in listed}
        assert (shown[TENANT]["kinds"], shown[TENANT]["certificate_pin"]) == (["client_certificate"], pins["a"])
        assert shown[other]["certificate_not_after"] is not None
        stored = [d async for d in stack.admin.db["vendor_credentials"].find({})]
        assert all("PRIVATE KEY" not in str(d) for d in stored)  # sealed at rest

        await wait_for(lambda: VENDOR in stack.pool.workers, what="the vendor served")
        worker = stack.pool.workers[VENDOR]
        assert worker.scim is not None
        scim = worker.scim
        await wait_for(lambda: len(scim._tenant_sessions) == 2, what="a session per organiser's certificate")
        await deliver_two_organisers(stack, vendor, other)
        assert not set(vendor.resources("vendor-a", "Users")) & set(vendor.resources("vendor-b", "Users"))
        assert worker.drift is not None
        await wait_for_no_drift(worker.drift)

        # Rotation: kommun-a's new certificate (the vendor registers its pin), then the old pin withdrawn.
        # The session in use before the PUT: the dispatcher's poll may take the new one up before the
        # PUT's answer is read.
        vendor.client_pins[pins["a2"]] = "vendor-a"
        first = scim._tenant_sessions[TENANT][1]
        status, listed = await stack.call(
            "PUT", f"{path}/{TENANT}", {"client_certificate_pem": pem["a2"][0], "client_key_pem": pem["a2"][1]}
        )
        assert status == 200
        assert {c["tenant_id"]: c["certificate_pin"] for c in listed}[TENANT] == pins["a2"]
        await wait_for(lambda: scim._tenant_sessions[TENANT][1] is not first, what="the rotated certificate in use")
        del vendor.client_pins[pins["a"]]
        report = await worker.drift.check()
        assert (report.missing, report.ghosts) == ({}, {})
    finally:
        await vendor.stop()


async def test_a_vendor_without_a_shared_credential_serves_organisers_with_their_own(stack: Stack) -> None:
    """Issue 18, without files: a vendor entered in the admin with no credential of its own (no key variable,
    no certificate file on the dispatcher) delivers to each organiser by its own key; an organiser without
    one waits, shown as ``no_credentials`` in Swedish and English, and is delivered once an operator sets it."""
    own_key = "kommun-a-key-" + "a" * 16
    vendor = FakeEgilVendor(api_keys={own_key: "vendor-a"})
    await vendor.start()
    try:
        entry = {
            "vendor_id": VENDOR,
            "display_name": "Utan nyckel AB",
            "delivery": "egil_scim",
            "scim": {"base_url": vendor.base_url, "auth": {}, "rate_per_second": 200, "burst": 50},
            "profile": {},
        }
        status, created = await stack.call("PUT", f"/catalogue/vendors/{VENDOR}", entry)
        assert status == 200, created
        await wait_for(lambda: VENDOR in stack.pool.workers, what="the vendor served without a shared key")
        await subscribe_and_sync(stack)
        waiting = await wait_for_delivery_error(stack, "no_credentials")
        assert waiting["state"] in ("retrying", "failing")
        assert waiting["pending"] >= 1
        assert "inga egna inloggningsuppgifter" in waiting["last_error_sv"]
        assert vendor.requests == []  # nothing was sent without credentials

        status, _ = await stack.call("PUT", f"/catalogue/vendors/{VENDOR}/credentials/{TENANT}", {"api_key": own_key})
        assert status == 200
        await wait_for(
            lambda: len(vendor.resources("vendor-a", "Users")) == 5, timeout=90, what="delivered with the new key"
        )
    finally:
        await vendor.stop()


async def test_an_organiser_whose_own_credentials_cannot_be_opened_waits_and_is_never_sent_as_the_shared_tenant(
    stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 18: an organiser's own credentials that this installation cannot open (sealed with another
    secrets key, or damaged) never make its data go out with the catalogue entry's credentials, into the
    vendor's shared tenant: its deliveries wait as ``own_credentials_unusable`` (Swedish and English), the
    admin lists the pair as unreadable, and setting them again delivers to its own tenant."""
    shared, own_key = "shared-key-" + "0" * 16, "kommun-a-key-" + "a" * 16
    vendor = FakeEgilVendor(api_keys={shared: "shared", own_key: "vendor-a"})
    await vendor.start()
    monkeypatch.setenv(KEY_ENV, shared)
    try:
        status, _ = await stack.call("PUT", f"/catalogue/vendors/{VENDOR}", catalogue_entry(tmp_path, vendor.base_url))
        assert status == 200
        path = f"/catalogue/vendors/{VENDOR}/credentials"
        status, _ = await stack.call("PUT", f"{path}/{TENANT}", {"api_key": own_key})
        assert status == 200
        # Sealed with a key this installation does not have (as after a secrets key changed without re-sealing).
        await stack.admin.db["vendor_credentials"].update_one(
            {"tenant_id": TENANT}, {"$set": {"sealed": "gAAAAAB-sealed-with-another-key"}}
        )
        status, listed = await stack.call("GET", path)
        assert status == 200
        assert [(c["tenant_id"], c["readable"]) for c in listed] == [(TENANT, False)]

        await wait_for(lambda: VENDOR in stack.pool.workers, what="the vendor served")
        worker = stack.pool.workers[VENDOR]
        assert worker.scim is not None
        scim = worker.scim
        await wait_for(lambda: scim.unusable_tenants == {TENANT}, what="the pair known as unusable")
        await subscribe_and_sync(stack)
        state = await wait_for_delivery_error(stack, "own_credentials_unusable")
        assert "går inte att använda" in state["last_error_sv"]
        assert "cannot be used" in state["last_error_en"]
        assert vendor.requests == []  # nothing went out, least of all with the shared key
        assert worker.drift is not None
        report = await worker.drift.check()  # its tenant cannot be read: not compared, not mixed with the shared
        assert (report.missing, report.ghosts) == ({}, {})

        status, listed = await stack.call("PUT", f"{path}/{TENANT}", {"api_key": own_key})
        assert status == 200
        assert [(c["tenant_id"], c["readable"]) for c in listed] == [(TENANT, True)]
        await wait_for(
            lambda: len(vendor.resources("vendor-a", "Users")) == 5, timeout=90, what="delivered with the key set again"
        )
        assert vendor.resources("shared", "Users") == {}
    finally:
        await vendor.stop()


async def test_an_organisers_credentials_as_references_to_a_mounted_secret_are_read_and_rotated_from_it(
    stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 18: a pair's credentials can be secret references, the keys of the Kubernetes Secret mounted in
    the dispatchers (``SKOLSYNK_VENDOR_SECRETS_DIR``): nothing secret is stored, the dispatcher reads the
    files at every poll (a rotated Secret is used without a restart), and a reference naming nothing readable
    makes the organiser wait (``own_credentials_unusable``), never go out with the shared credentials."""
    shared, key_a, key_a2 = ("shared-key-" + c * 16 for c in "0az")
    vendor = FakeEgilVendor(api_keys={shared: "shared", key_a: "vendor-a"})
    await vendor.start()
    monkeypatch.setenv(KEY_ENV, shared)
    mounted = tmp_path / "vendor-credentials"
    mounted.mkdir()
    stack.pool.secrets_dir = mounted
    try:
        status, _ = await stack.call("PUT", f"/catalogue/vendors/{VENDOR}", catalogue_entry(tmp_path, vendor.base_url))
        assert status == 200
        path = f"/catalogue/vendors/{VENDOR}/credentials"
        for wrong in ({"api_key_ref": "../etc/passwd"}, {"api_key": key_a, "api_key_ref": "a"},
                      {"client_certificate_ref": "cert"}):  # fmt: skip
            status, problem = await stack.call("PUT", f"{path}/{TENANT}", wrong)
            assert status == 422, problem
        status, listed = await stack.call("PUT", f"{path}/{TENANT}", {"api_key_ref": "kommun-a-api-key"})
        assert status == 200, listed
        assert [(c["kinds"], c["secret_refs"], c["readable"]) for c in listed] == [
            (["api_key"], {"api_key": "kommun-a-api-key"}, True)
        ]
        stored = await stack.admin.db["vendor_credentials"].find_one({"tenant_id": TENANT})
        assert stored is not None
        assert stored["sealed"] is None  # nothing secret in the store

        await wait_for(lambda: VENDOR in stack.pool.workers, what="the vendor served")
        worker = stack.pool.workers[VENDOR]
        assert worker.scim is not None
        scim = worker.scim
        # Not in the Secret yet: the organiser waits.
        await wait_for(lambda: scim.unusable_tenants == {TENANT}, what="a reference naming nothing readable")
        (mounted / "kommun-a-api-key").write_text(key_a + "\n")
        await wait_for(lambda: scim.tenant_keys.get(TENANT) == key_a, what="the key read from the Secret")
        assert scim.unusable_tenants == set()
        await subscribe_and_sync(stack)
        await wait_for(lambda: len(vendor.resources("vendor-a", "Users")) == 5, timeout=60, what="delivered")

        # Rotation in the Secret alone (as the kubelet updates the mounted file): used within a poll.
        vendor.api_keys[key_a2] = "vendor-a"
        (mounted / "kommun-a-api-key").write_text(key_a2)
        await wait_for(lambda: scim.tenant_keys.get(TENANT) == key_a2, what="the rotated key in use")
        del vendor.api_keys[key_a]
        assert worker.drift is not None
        report = await worker.drift.check()
        assert (report.missing, report.ghosts) == ({}, {})
        assert vendor.resources("shared", "Users") == {}
    finally:
        await vendor.stop()
