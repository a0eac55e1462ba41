"""The test report an admin can trust (issue 21), with the admin API, the normaliser and an EGIL vendor's
dispatcher on the real broker and the Mongo wire server: the report says it is being computed while the
projection is asked for and while the dispatcher has changes to record (its numbers only "so far"), and
when it was ready; the persons and groups per school unit come a page at a time, searchable, with names
only for roles that may see them; what the vendor's profile would refuse is counted and listed with its
reason; a live subscription has no test report, and its page shows the deliveries instead."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from skolsynk.contracts.source import SourceRecord
from skolsynk.domain.ids import entity_id
from skolsynk.domain.ss12000 import EntityKind
from skolsynk.service import ServiceApp
from skolsynk.settings import ServiceSettings
from skolsynk.storage.deliveries import LEDGER, LIST_INDEX
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
from tests.helpers import delete_topology, wait_for

pytestmark = [
    pytest.mark.connected,
    pytest.mark.timeout(150),
    pytest.mark.queues("normaliser.source-events", "normaliser.projections", "gdpr.events"),
]

TENANT = "kommun-r"
SOURCE = "egil-1"
VENDOR = "egilvendor"
API_KEY = "report-key-" + "0" * 16
SECRETS_KEY = "2mJ3m6mCAxzGzO8Ihc4r3Vxv3Fj0vIYbVwJJmQKkV4g="  # a throwaway Fernet key for tests
NO_LOGIN = "student-1-4"  # EGIL needs a userName: the vendor's profile would refuse this student
TODAY = datetime(2026, 11, 26, 12, tzinfo=UTC)


def the_organiser() -> list[SourceRecord]:
    """Two school units of 9 students and 2 teachers; one student without a login."""
    records = []
    for record in organiser(seed=11, school_units=2, students_per_unit=9, teachers_per_unit=2):
        if record.key == NO_LOGIN:
            record = SourceRecord(kind=record.kind, key=record.key, data={**record.data, "eppn": []})
        records.append(record)
    return records


def person_id(key: str) -> str:
    return str(entity_id(TENANT, SOURCE, EntityKind.PERSON, key))


@dataclass
class Stack:
    settings: ServiceSettings
    admin: ServiceApp
    normaliser: ServiceApp
    dispatcher: ServiceApp
    session: aiohttp.ClientSession
    operator: str
    records: list[SourceRecord]

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.admin.web_ports[0]}"

    async def call(
        self, path: str, token: str, method: str = "GET", body: Any = None, params: dict[str, Any] | None = None
    ) -> tuple[int, Any, int | None]:
        """An API call: status, body, and the X-Total-Count of a page."""
        headers = {"Authorization": f"Bearer {token}"}
        url = f"{self.base}/api/v1{path}"
        async with self.session.request(method, url, json=body, headers=headers, params=params) as response:
            total = response.headers.get("X-Total-Count")
            return response.status, await response.json(content_type=None), int(total) if total else None

    async def report(self, token: str) -> dict[str, Any]:
        status, body, _ = await self.call(f"/tenants/{TENANT}/subscriptions/{VENDOR}/test-report", token)
        assert status == 200, body
        return dict(body)

    async def listed(self, token: str, which: str, **query: Any) -> tuple[list[dict[str, Any]], int]:
        path = f"/tenants/{TENANT}/subscriptions/{VENDOR}/test-report/{which}"
        status, body, total = await self.call(path, token, params={k: str(v) for k, v in query.items()})
        assert status == 200, body
        assert total is not None
        return list(body), total

    async def searched(self, token: str, which: str, q: str, **body: Any) -> tuple[list[dict[str, Any]], int]:
        """A list's search: posted, so that a name never travels in a URL."""
        path = f"/tenants/{TENANT}/subscriptions/{VENDOR}/test-report/{which}/search"
        status, found, total = await self.call(path, token, "POST", {"q": q, **body})
        assert status == 200, found
        assert total is not None
        return list(found), total

    async def token(self, role: Role) -> str:
        token, _ = await TokenStore(self.admin.db).create(
            role=role, subject=f"{role.value}@kommun-r.example", tenant_id=TENANT, created_by="test"
        )
        return token

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
    """The admin and the vendor's dispatcher running (the dispatcher not consuming yet); the normaliser
    built, not started."""
    vendor = FakeEgilVendor(api_keys={API_KEY: TENANT})
    await vendor.start()
    monkeypatch.setenv("SKOLSYNK_TEST_VENDOR_KEY", API_KEY)
    catalogue = write_vendor_catalogue(
        tmp_path / "vendors", VENDOR, scim_base_url=vendor.base_url, api_key_env="SKOLSYNK_TEST_VENDOR_KEY"
    )
    base = settings.model_dump()
    admin_settings = {"admin_host": "127.0.0.1", "admin_port": 0, "admin_secrets_key": SECRETS_KEY,
                      "vendor_catalogue_dir": catalogue, "admin_api_requests_per_second": 1000}  # fmt: skip
    admin = build_admin(AdminSettings.model_validate({**base, **admin_settings}))
    normaliser = build_normaliser(
        NormaliserSettings.model_validate({**base, "date_check_interval_seconds": 86400}), clock=lambda: TODAY
    )
    dispatcher = build_dispatcher(
        DispatcherSettings.model_validate({**base, "vendor_id": VENDOR, "vendor_catalogue_dir": catalogue})
    )
    dispatcher.extensions["pool"].consuming = False
    session = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
    apps = [dispatcher, admin]
    try:
        for app in apps:
            await app.start()
        operator, _ = await TokenStore(admin.db).create(
            role=Role.OPERATOR, subject="ops@drift.example", tenant_id=None, created_by="test"
        )
        stack = Stack(settings, admin, normaliser, dispatcher, session, operator, the_organiser())
        status, body, _ = await stack.call("/tenants", operator, "POST", {"tenant_id": TENANT, "display_name": "R"})
        assert status == 201, body
        yield stack
    finally:
        await session.close()
        for app in (normaliser, *apps):
            await app.drain(1)
            await app.close()
        await vendor.stop()
        await delete_topology(settings.broker.amqp_url.get_secret_value(), dispatcher.topology)


async def test_the_test_report_says_when_it_is_final_lists_a_page_at_a_time_and_says_what_would_be_refused(
    stack: Stack,
) -> None:
    admin = await stack.token(Role.ORGANISER_ADMIN)
    subscription = {"school_unit_codes": school_unit_codes(stack.records), "roles": ["student", "teacher"]}
    status, body, _ = await stack.call(f"/tenants/{TENANT}/subscriptions/{VENDOR}", admin, "PUT", subscription)
    assert status == 200, body

    # Asked for, not started (no normaliser runs): computing, nothing yet, never shown as final.
    report = await stack.report(admin)
    assert report["state"] == "computing"
    assert report["projection"] == "requested"
    assert report["computing_since"] is not None
    assert report["ready_at"] is None

    # The normaliser projects (the request, then the organiser's run): every change is queued for the
    # vendor, whose dispatcher records none yet. Still computing: the numbers are those so far.
    await stack.normaliser.start()
    await stack.sync()
    persons = sum(1 for r in stack.records if r.kind is EntityKind.PERSON)

    async def queued() -> bool:
        report = await stack.report(admin)
        return report["projection"] is None and report["pending"] > persons

    await wait_for(queued, timeout=60, interval=0.2, what="every change queued for the vendor")
    report = await stack.report(admin)
    assert report["state"] == "computing"
    assert report["would_send"].get("person", 0) < persons - 1
    progress = await stack.admin.db["projection_status"].find_one({"_id": TENANT})
    assert progress is not None
    assert progress["done"] == progress["requested"] == 1
    assert progress["running"] is False

    # The dispatcher records them: ready, with the time, and the numbers are final.
    [_] = await stack.dispatcher.extensions["pool"].start_consuming()

    async def ready() -> bool:
        return (await stack.report(admin))["state"] == "ready"

    await wait_for(ready, timeout=60, interval=0.2, what="the test report to be ready")
    report = await stack.report(admin)
    assert report["pending"] == 0
    assert report["ready_at"] is not None
    assert report["would_send"]["person"] == persons - 1  # the student without a login would be refused
    assert report["would_send"]["group"] == sum(1 for r in stack.records if r.kind is EntityKind.GROUP)
    assert report["would_be_refused"] == {"person": 1}
    assert report["refused_per_reason"] == {"no_login": 1}
    units = {r["school_unit_code"]: r["school_unit_id"] for r in report["per_school_unit"] if r["school_unit_id"]}
    assert set(units) == set(school_unit_codes(stack.records))
    assert [r["role"] for r in report["per_school_unit"] if not r["school_unit_id"]] == ["organisation"]
    students_at = {r["school_unit_code"]: r["count"] for r in report["per_school_unit"] if r["role"] == "student"}
    assert sorted(students_at.values()) == [8, 9]  # one of the second unit's is refused

    # The persons, a page at a time: every one once, names and logins for the organiser's admin.
    first, total = await stack.listed(admin, "persons", limit=7)
    second, _ = await stack.listed(admin, "persons", limit=7, skip=7)
    rest, _ = await stack.listed(admin, "persons", limit=7, skip=14)
    assert total == persons - 1
    assert [len(first), len(second), len(rest)] == [7, 7, total - 14]
    listed = {p["entity_id"]: p for p in [*first, *second, *rest]}
    assert len(listed) == total
    assert person_id(NO_LOGIN) not in listed
    by_key = {r.key: r for r in stack.records if r.kind is EntityKind.PERSON}
    teacher = listed[person_id("teacher-0-1")]
    assert teacher["name"] == f"{by_key['teacher-0-1'].data['given_name']} {by_key['teacher-0-1'].data['family_name']}"
    assert teacher["login"] == "teacher-0-1@demo.skolsynk.example"
    assert teacher["roles"] == ["teacher"]
    assert [u["school_unit_code"] for u in teacher["school_units"]] == [school_unit_codes(stack.records)[0]]
    assert teacher["school_units"][0]["display_name"] == "Skola 1"

    # One school unit's; a search by name ("Förnamn Efternamn") and by login.
    code = school_unit_codes(stack.records)[1]
    at_unit, at_unit_total = await stack.listed(admin, "persons", school_unit_id=units[code])
    assert at_unit_total == 8 + 2
    assert all(code in [u["school_unit_code"] for u in p["school_units"]] for p in at_unit)
    student = by_key["student-0-3"].data
    named = f"{student['given_name']} {student['family_name']}"
    found, found_total = await stack.searched(admin, "persons", named)
    same_name = [k for k, r in by_key.items() if r.data["given_name"] == student["given_name"]
                 and r.data["family_name"] == student["family_name"] and k != NO_LOGIN]  # fmt: skip
    assert found_total == len(same_name)
    assert person_id("student-0-3") in [p["entity_id"] for p in found]
    found, found_total = await stack.searched(admin, "persons", "student-0-3@demo")
    assert [p["entity_id"] for p in found] == [person_id("student-0-3")]

    # The groups: names, types, members as the vendor would get them.
    groups, groups_total = await stack.listed(admin, "groups")
    assert groups_total == report["would_send"]["group"]
    memberships = {r.data["display_name"] + r.data["school_unit"]: len(r.data["memberships"])
                   for r in stack.records if r.kind is EntityKind.GROUP}  # fmt: skip
    assert sorted(g["members"] for g in groups) == sorted(memberships.values())
    assert {g["group_type"] for g in groups} == {"Klass"}
    assert all(g["name"] and g["school_units"][0]["school_unit_code"] for g in groups)

    # What would be refused, and why.
    refused, refused_total = await stack.listed(admin, "refused")
    assert refused_total == 1
    [refusal] = refused
    assert refusal["entity_id"] == person_id(NO_LOGIN)
    assert refusal["reason_code"] == "no_login"
    assert "userName" in refusal["reason"]
    assert refusal["name"] == f"{by_key[NO_LOGIN].data['given_name']} {by_key[NO_LOGIN].data['family_name']}"

    # A viewer reads ids and counts: no names or logins, and a name finds nobody; an id does.
    viewer = await stack.token(Role.VIEWER)
    seen, _ = await stack.listed(viewer, "persons", limit=200)
    assert seen
    assert all(p["name"] is None and p["login"] is None for p in seen)
    assert (await stack.searched(viewer, "persons", named))[1] == 0
    assert (await stack.searched(viewer, "persons", person_id("student-0-3")))[1] == 1
    # A group by its name, for everyone; one school unit's only.
    [group], _ = await stack.searched(viewer, "groups", "3A", school_unit_id=units[code])
    assert group["school_units"][0]["school_unit_code"] == code
    [hidden] = (await stack.listed(viewer, "refused"))[0]
    assert hidden["name"] is None

    # The lists are read by the ledger's index (explain on the Mongo wire server).
    ledger = stack.admin.db[LEDGER]
    criteria = {"tenant_id": TENANT, "vendor_id": VENDOR, "test": True, "kind": {"$in": ["person"]},
                "operation": "upsert", "status": "test"}  # fmt: skip
    plan = (await ledger.find(criteria).hint(LIST_INDEX).explain())["queryPlanner"]["winningPlan"]
    assert "COLLSCAN" not in str(plan), plan

    # The subscription page says it is ready, and lists and searches the same.
    await ui_login(stack, admin)
    html = await ui_page(stack, f"/ui/t/{TENANT}/vendors/{VENDOR}")
    assert "Testrapport" in html
    assert "Klar" in html
    assert "Beräknas" not in html
    assert "Skulle avvisas av leverantören (1)" in html
    html = await ui_page(stack, f"/ui/t/{TENANT}/vendors/{VENDOR}?lista=avvisas")
    table = html.split("Det egilvendor (demo) skulle avvisa, och varför")[1].split("</table>")[0]
    assert "Inloggnings-id (eduPersonPrincipalName) saknas" in table
    assert by_key[NO_LOGIN].data["family_name"] in table
    # The search is posted; one in the address is not run.
    response = await stack.session.post(
        f"{stack.base}/ui/t/{TENANT}/vendors/{VENDOR}/search",
        data={"q": "student-0-3@demo", "lista": "personer"},
        headers={"Origin": stack.base},
    )
    html = await response.text()
    assert response.status == 200, html[:2000]
    table = html.split("Personer som egilvendor (demo) skulle få")[1].split("</table>")[0]
    assert table.count("<tr>") == 2  # the header and the one found
    assert "student-0-3@demo.skolsynk.example" in table
    html = await ui_page(stack, f"/ui/t/{TENANT}/vendors/{VENDOR}?q=student-0-3")
    assert "sökning" not in html.split("Personer som egilvendor (demo) skulle få")[1].split("</caption>")[0]


async def test_a_live_subscription_has_no_test_report_and_its_page_shows_the_deliveries(stack: Stack) -> None:
    admin = await stack.token(Role.ORGANISER_ADMIN)
    subscription = {"school_unit_codes": school_unit_codes(stack.records)[:1], "roles": ["teacher"]}
    status, body, _ = await stack.call(f"/tenants/{TENANT}/subscriptions/{VENDOR}", admin, "PUT", subscription)
    assert status == 200, body
    await ui_login(stack, admin)
    html = await ui_page(stack, f"/ui/t/{TENANT}/vendors/{VENDOR}")
    assert "Beräknas…" in html  # asked for, and no normaliser runs
    assert "hittills" in html

    override = {"override_reason": "the vendor's pilot, agreed"}
    path = f"/tenants/{TENANT}/subscriptions/{VENDOR}/go-live"
    status, body, _ = await stack.call(path, stack.operator, "POST", override)
    assert status == 200, body
    await stack.normaliser.start()
    await stack.dispatcher.extensions["pool"].start_consuming()
    await stack.sync()

    async def delivered() -> bool:
        teachers = {"tenant_id": TENANT, "kind": "person", "status": "delivered"}
        return await stack.admin.db[LEDGER].count_documents(teachers) == 2  # the unit's two teachers

    await wait_for(delivered, timeout=60, interval=0.2, what="the live deliveries")
    status, problem, _ = await stack.call(f"/tenants/{TENANT}/subscriptions/{VENDOR}/test-report", admin)
    assert status == 409
    assert "live" in problem["detail"]
    status, problem, _ = await stack.call(f"/tenants/{TENANT}/subscriptions/{VENDOR}/test-report/persons", admin)
    assert status == 409

    html = await ui_page(stack, f"/ui/t/{TENANT}/vendors/{VENDOR}")
    assert "Testrapport" not in html
    assert "Inget beräknat än" not in html
    assert "Beräknas" not in html
    assert "Leveranser" in html  # the deliveries' health
    assert "Hos egilvendor (demo)" in html  # what the vendor holds, from the ledger
    assert "Personer hos egilvendor (demo)" in html
    teacher = next(r for r in stack.records if r.key == "teacher-0-0")
    assert teacher.data["family_name"] in html


async def ui_login(stack: Stack, token: str) -> None:
    response = await stack.session.post(
        f"{stack.base}/ui/login", data={"token": token}, headers={"Origin": stack.base}, allow_redirects=False
    )
    assert response.status == 303, await response.text()


async def ui_page(stack: Stack, path: str) -> str:
    async with stack.session.get(stack.base + path, allow_redirects=False) as response:
        html = await response.text()
        assert response.status == 200, html[:2000]
        return html
