"""The data-quality report an admin can fix the source from (issue 21), on the real broker and the Mongo wire
server: the real normaliser reads a small organiser with a duplicated login, an invalid e-mail address and
many students without a login; the admin API then reports names, the offending value and the duplicate's
other party to an organiser admin and only codes, ids and counts to a viewer, pages in the store with the
total in ``X-Total-Count``, searches by name and value, and the UI's CSV for a school office is filtered by
school unit, semicolon-separated with a BOM, without personal columns for a viewer."""

from __future__ import annotations

import csv
import io
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from skolsynk.contracts.source import SourceRecord
from skolsynk.domain.ids import entity_id
from skolsynk.domain.ss12000 import EntityKind
from skolsynk.service import ServiceApp
from skolsynk.settings import ServiceSettings
from skolsynk.storage.findings import FindingStore
from skolsynk_services.admin.app import AdminSettings, build
from skolsynk_services.admin.auth import Role, TokenStore
from skolsynk_services.normaliser.app import NormaliserSettings
from skolsynk_services.normaliser.app import build as build_normaliser
from skolsynk_testkit.synthetic import full_run, organiser
from tests.helpers import delete_topology, wait_for

pytestmark = [
    pytest.mark.connected,
    pytest.mark.timeout(120),
    pytest.mark.queues("normaliser.source-events", "normaliser.projections"),
]

TENANT, SOURCE = "kommun-q", "egil-1"
SECRETS_KEY = "2mJ3m6mCAxzGzO8Ihc4r3Vxv3Fj0vIYbVwJJmQKkV4g="  # a throwaway Fernet key for tests
#: The person who has the login first (keeps it) and the one whose copy of it is withheld.
KEEPER, TWIN = "student-0-3", "student-1-5"
KEEPER_NAME, TWIN_NAME = "Sigrid Qvarnström", "Ture Lindholm"
LOGIN = "student-0-3@demo.skolsynk.example"
BAD_ADDRESS = "sigrid..q@@elev.example"
WITHOUT_LOGIN = 24  # students without a login (eppn.missing), enough for several pages


def the_organiser(students_per_unit: int = 25, without_login: int = WITHOUT_LOGIN) -> list[SourceRecord]:
    """Two school units; ``without_login`` students without a login, a duplicated login (the twin has the
    keeper's, in capitals), an invalid e-mail address."""
    records = []
    missing = 0
    for record in organiser(seed=11, school_units=2, students_per_unit=students_per_unit, teachers_per_unit=1):
        data = dict(record.data)
        if record.key == KEEPER:
            data.update(given_name="Sigrid", family_name="Qvarnström")
        elif record.key == TWIN:
            data.update(given_name="Ture", family_name="Lindholm", eppn=[LOGIN.upper()])
        elif record.key == "student-0-7":
            data["emails"] = [{"value": BAD_ADDRESS, "type": "Skola elev"}, *data["emails"]]
        elif (
            record.key.startswith("student-") and int(record.key.rsplit("-", 1)[1]) % 2 == 0 and missing < without_login
        ):
            data["eppn"] = []
            missing += 1
        records.append(SourceRecord(kind=record.kind, key=record.key, data=data))
    assert missing == without_login
    return records


@dataclass
class Report:
    admin: ServiceApp
    session: aiohttp.ClientSession
    origin: str
    tokens: dict[str, str]
    unit_codes: dict[str, str]  # unit key -> school-unit code

    async def api(
        self, path: str, who: str = "admin", search: dict[str, Any] | None = None
    ) -> tuple[int, Any, dict[str, str]]:
        """GET ``path`` of the tenant, or POST ``search`` to it."""
        headers = {"Authorization": f"Bearer {self.tokens[who]}"}
        method = "GET" if search is None else "POST"
        address = f"{self.origin}/api/v1/tenants/{TENANT}{path}"
        async with self.session.request(method, address, headers=headers, json=search) as response:
            body = await response.text() if response.content_type == "text/csv" else await response.json()
            return response.status, body, dict(response.headers)

    async def ui_csv(self, who: str, query: str, form: dict[str, str] | None = None) -> tuple[str, str]:
        """Sign in to the UI with the token of ``who`` and download the CSV of ``query`` (or post ``form``, a
        search, as the page's button does)."""
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:  # an IP address
            origin = {"Origin": self.origin}
            async with browser.post(f"{self.origin}/ui/login", data={"token": self.tokens[who]}, headers=origin) as r:
                assert r.status == 200, await r.text()  # followed to the organiser's pages
            address = f"{self.origin}/ui/t/{TENANT}/findings.csv?{query}"
            sent = browser.get(address) if form is None else browser.post(address, data=form, headers=origin)
            async with sent as response:
                assert response.status == 200
                return response.headers["Content-Disposition"], (await response.read()).decode("utf-8")


def person_id(key: str) -> str:
    return str(entity_id(TENANT, SOURCE, EntityKind.PERSON, key))


@asynccontextmanager
async def reporting(
    settings: ServiceSettings, records: list[SourceRecord], without_login: int
) -> AsyncIterator[Report]:
    """The admin and the normaliser in-process; the normaliser has read ``records`` (with ``without_login``
    students without a login) and projected them; the organiser, its EGIL source and an admin's and a
    viewer's tokens exist."""
    base = settings.model_dump()
    admin = build(
        AdminSettings.model_validate(
            {**base, "admin_port": 0, "admin_host": "127.0.0.1", "admin_secrets_key": SECRETS_KEY,
             "admin_api_requests_per_second": 10_000}
        )
    )  # fmt: skip
    normaliser = build_normaliser(NormaliserSettings.model_validate({**base, "date_check_interval_seconds": 86400}))
    session = aiohttp.ClientSession()
    try:
        for app in (normaliser, admin):
            await app.start()
        run_id = uuid.uuid4()
        for message in full_run(records, source_id=SOURCE, source_kind="egil", page_size=50, run_id=run_id):
            await normaliser.publisher.publish(
                message.to_envelope(tenant_id=TENANT, producer="test"),
                exchange=normaliser.topology.exchange("source"),
                routing_key=f"egil.{TENANT}",
            )

        async def projected() -> bool:  # the projection after the run has made the reconcile findings
            findings = normaliser.db["dq_findings"]
            placed = {"tenant_id": TENANT, "origin": "reconcile", "school_unit_code": {"$ne": None}}
            return await findings.count_documents({**placed, "code": "eppn.missing"}) == without_login

        await wait_for(projected, timeout=60, interval=0.1, what="the organiser's first run")
        tokens = {}
        store = TokenStore(admin.db)
        operator, _ = await store.create(role=Role.OPERATOR, subject="ops", tenant_id=None, created_by="test")
        for who, role in (("admin", Role.ORGANISER_ADMIN), ("viewer", Role.VIEWER)):
            tokens[who], _ = await store.create(role=role, subject=who, tenant_id=TENANT, created_by="test")
        origin = f"http://127.0.0.1:{admin.web_ports[0]}"
        headers = {"Authorization": f"Bearer {operator}"}
        tenant = {"tenant_id": TENANT, "display_name": "Kommun Q"}
        async with session.post(f"{origin}/api/v1/tenants", json=tenant, headers=headers) as response:
            assert response.status == 201
        source = {"source_id": SOURCE, "kind": "egil", "display_name": "Elevregistret"}
        async with session.post(f"{origin}/api/v1/tenants/{TENANT}/sources", json=source, headers=headers) as response:
            assert response.status == 201, await response.text()
        units = {r.key: r.data["school_unit_code"] for r in records if r.kind is EntityKind.SCHOOL_UNIT}
        yield Report(admin, session, origin, tokens, units)
    finally:
        await session.close()
        for app in (admin, normaliser):
            await app.drain(1)
        for app in (admin, normaliser):
            await app.close()
        await delete_topology(settings.broker.amqp_url.get_secret_value(), normaliser.topology)


@pytest.fixture
async def report(settings: ServiceSettings) -> AsyncIterator[Report]:
    async with reporting(settings, the_organiser(), WITHOUT_LOGIN) as seeded:
        yield seeded


async def test_an_admin_reads_names_the_value_and_the_other_party_a_viewer_codes_and_ids(report: Report):
    status, found, headers = await report.api("/findings?code=eppn.duplicate")
    assert status == 200, found
    assert headers["X-Total-Count"] == "1"
    [duplicate] = found
    assert duplicate["entity_id"] == person_id(TWIN)
    assert duplicate["entity_name"] == TWIN_NAME
    assert duplicate["value"] == LOGIN.upper()  # as the withheld person has it
    assert duplicate["other_entity_id"] == person_id(KEEPER)
    assert duplicate["other_name"] == KEEPER_NAME
    assert duplicate["school_unit_code"] == report.unit_codes["unit-1"]
    assert duplicate["source_kind"] == "egil"
    status, [invalid], _ = await report.api("/findings?code=email.invalid")
    assert (invalid["entity_id"], invalid["value"]) == (person_id("student-0-7"), BAD_ADDRESS)
    assert invalid["entity_name"]

    # A viewer: the same finding by code and ids, without the name, the value or the other party's name.
    status, [seen], headers = await report.api("/findings?code=eppn.duplicate", who="viewer")
    assert status == 200
    assert (seen["entity_id"], seen["other_entity_id"], seen["source_key"]) == (
        person_id(TWIN),
        person_id(KEEPER),
        TWIN,
    )
    assert seen["value"] is seen["entity_name"] is seen["other_name"] is None
    status, everything, _ = await report.api("/findings", who="viewer")
    text = str(everything)
    for personal in (TWIN_NAME, KEEPER_NAME, LOGIN, LOGIN.upper(), BAD_ADDRESS):
        assert personal not in text

    # The programs' CSV: the value column for the admin only.
    _, admin_csv, _ = await report.api("/findings.csv?code=eppn.duplicate")
    _, viewer_csv, _ = await report.api("/findings.csv?code=eppn.duplicate", who="viewer")
    [row] = list(csv.DictReader(io.StringIO(admin_csv)))
    assert (row["value"], row["other_entity_id"]) == (LOGIN.upper(), person_id(KEEPER))
    [row] = list(csv.DictReader(io.StringIO(viewer_csv)))
    assert "value" not in row
    assert row["other_entity_id"] == person_id(KEEPER)


async def test_the_report_pages_in_the_store_with_its_total_and_searches_names_and_values(report: Report):
    status, first, headers = await report.api("/findings?code=eppn.missing&limit=10")
    assert status == 200
    assert (headers["X-Total-Count"], len(first)) == (str(WITHOUT_LOGIN), 10)
    pages = [first]
    for skip in range(10, WITHOUT_LOGIN, 10):
        status, page, headers = await report.api(f"/findings?code=eppn.missing&limit=10&skip={skip}")
        assert headers["X-Total-Count"] == str(WITHOUT_LOGIN)
        pages.append(page)
    assert [len(p) for p in pages] == [10, 10, WITHOUT_LOGIN - 20]
    keys = [f["source_key"] for page in pages for f in page]
    assert len(set(keys)) == WITHOUT_LOGIN  # no finding twice, none skipped
    assert all(f["entity_name"] for page in pages for f in page)
    status, whole, headers = await report.api("/findings?code=eppn.missing")
    assert [f["source_key"] for f in whole] == keys  # the same order as the pages
    status, beyond, headers = await report.api(f"/findings?code=eppn.missing&skip={WITHOUT_LOGIN}")
    assert (status, beyond, headers["X-Total-Count"]) == (200, [], str(WITHOUT_LOGIN))
    for bad in ("limit=5000", "limit=-1", "skip=x"):
        status, problem, _ = await report.api(f"/findings?{bad}")
        assert status == 422, bad
        assert bad.split("=")[0] in problem["detail"]
    # Per school unit: the unit's own findings, and the summary counts what the list has.
    unit = report.unit_codes["unit-0"]
    status, there, headers = await report.api(f"/findings?school_unit_code={unit}")
    assert {f["school_unit_code"] for f in there} == {unit}
    status, summary, _ = await report.api("/findings/summary")
    assert sum(n for k, n in summary[unit].items() if k in ("error", "warning")) == int(headers["X-Total-Count"])

    # Search (posted: names never travel in a URL): by the whole name in any order and case (either party of
    # a duplicate), by part of a value; a viewer by key only.
    for text in ("lindholm ture", "Qvarnström", "STUDENT-0-3@demo"):
        status, hits, headers = await report.api("/findings/search", search={"q": text})
        assert status == 200, hits
        assert person_id(TWIN) in {f["entity_id"] for f in hits}, text
        assert headers["X-Total-Count"] == str(len(hits))
    status, hits, _ = await report.api("/findings/search", search={"q": "..q@@", "severity": "warning"})
    assert [f["code"] for f in hits] == ["email.invalid"]
    status, hits, _ = await report.api("/findings/search", search={"q": "Qvarnström", "code": "email.invalid"})
    assert hits == []  # the filter holds as well
    status, hits, _ = await report.api("/findings/search", who="viewer", search={"q": "Lindholm"})
    assert (status, hits) == (200, [])  # a viewer cannot find anyone by name
    status, hits, _ = await report.api("/findings/search", who="viewer", search={"q": TWIN})
    assert person_id(TWIN) in {f["entity_id"] for f in hits}
    status, problem, _ = await report.api("/findings/search", search={"q": "x"})
    assert status == 422  # one letter would find nearly everything


async def test_the_csv_for_a_school_office_is_filtered_by_unit_and_personal_only_for_admins(report: Report):
    unit = report.unit_codes["unit-1"]
    disposition, text = await report.ui_csv("admin", f"school_unit={unit}")
    assert disposition == f'attachment; filename="datakvalitet-{TENANT}-{unit}.csv"'
    assert text.startswith("\ufeff")  # Swedish Excel reads UTF-8 with a BOM
    rows = list(csv.DictReader(io.StringIO(text[1:]), delimiter=";"))
    assert rows
    assert {r["Skolenhetskod"] for r in rows} == {unit}  # the school's own list only
    [twin] = [r for r in rows if r["Nyckel i källan"] == TWIN and r["Anmärkning"].startswith("Samma inloggnings-id")]
    assert (twin["Namn"], twin["Värde"], twin["Samma värde som"]) == (TWIN_NAME, LOGIN.upper(), KEEPER_NAME)
    assert twin["Samma värde som (id)"] == person_id(KEEPER)
    assert "elevregistret" in twin["Så rättar du i källan"]  # the EGIL client's way of fixing it
    assert twin["Allvarlighet"] == "Fel"

    # A search is posted (names never in a URL) and the CSV has its findings only.
    _, text = await report.ui_csv("admin", "", form={"q": "Ture Lindholm"})
    rows = list(csv.DictReader(io.StringIO(text[1:]), delimiter=";"))
    assert {r["Namn"] for r in rows} == {TWIN_NAME}

    disposition, text = await report.ui_csv("viewer", f"school_unit={unit}")
    header = next(csv.reader(io.StringIO(text[1:]), delimiter=";"))
    assert not {"Namn", "Värde", "Samma värde som"} & set(header)
    assert "Samma värde som (id)" in header
    for personal in (TWIN_NAME, KEEPER_NAME, LOGIN, LOGIN.upper()):
        assert personal not in text


async def test_the_purge_removes_the_findings_that_name_a_person_as_the_other_party(report: Report):
    store = FindingStore(report.admin.db)
    keeper = uuid.UUID(person_id(KEEPER))
    before = await store.query(TENANT)
    assert [(f.entity_id, f.other_entity_id) for f in before if f.other_entity_id] == [
        (uuid.UUID(person_id(TWIN)), keeper)
    ]
    own = [f for f in before if f.entity_id == keeper]
    removed = await store.forget_entities(TENANT, [str(keeper)])
    assert removed == len(own) + 1  # the keeper's own and the twin's duplicate, whose value is the keeper's too
    after = await store.query(TENANT)
    assert not [f for f in after if f.other_entity_id or f.entity_id == keeper]
    assert len(after) == len(before) - removed
