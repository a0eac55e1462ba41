"""One person followed from the source to every vendor (issue 21), on the real broker and the Mongo wire
server: the real normaliser projects a small organiser to two subscriptions (one whose school units leave
the person out, one that takes them), then the admin API's person search (every word, any order, paged in
the store with its total), the explanation with each subscription's verdict and reason, the GDPR page's
requests with their receipts, ``skolsynk explain`` (text and JSON, the same document as the API), personal
data refused to viewers, and every read of the explanation served by an index."""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from pymongo import monitoring

from skolsynk.cli import CliSettings, execute, parser
from skolsynk.contracts.source import SourceRecord
from skolsynk.domain.ids import entity_id
from skolsynk.domain.ss12000 import EntityKind
from skolsynk.domain.subscription import VendorSubscription
from skolsynk.explain import PersonExplainer
from skolsynk.service import ServiceApp
from skolsynk.settings import ServiceSettings
from skolsynk.storage import create_client
from skolsynk.storage.deliveries import DeliveryLedger
from skolsynk.storage.entities import EntityReader
from skolsynk.storage.erasures import ErasureLedger, ErasureRequestStore
from skolsynk.storage.subscriptions import SubscriptionStore
from skolsynk.storage.vendor_views import VendorViews
from skolsynk_services.admin.app import AdminSettings
from skolsynk_services.admin.app import build as build_admin
from skolsynk_services.admin.auth import Role as TokenRole
from skolsynk_services.admin.auth import TokenStore
from skolsynk_services.normaliser.app import NormaliserSettings
from skolsynk_services.normaliser.app import build as build_normaliser
from skolsynk_testkit.synthetic import full_run, organiser, school_unit_codes
from tests.helpers import delete_topology, wait_for

pytestmark = [pytest.mark.connected, pytest.mark.timeout(120)]

REPO_ROOT = Path(__file__).resolve().parents[2]
TENANT = "kommun-p"
SOURCE = "egil-1"
SECRETS_KEY = "2mJ3m6mCAxzGzO8Ihc4r3Vxv3Fj0vIYbVwJJmQKkV4g="  # a throwaway Fernet key for tests
EXCLUDING, INCLUDING = "ne", "binogi"  # a queue vendor and an EGIL SCIM vendor of deploy/vendors
ALMA = "student-0-0"
ERASED = "student-0-1"
#: Students per school unit: every one of them is a Bergman, more than a page of 20.
STUDENTS = 13


def pid(key: str) -> uuid.UUID:
    return entity_id(TENANT, SOURCE, EntityKind.PERSON, key)


def the_organiser() -> list[SourceRecord]:
    """Two school units; every student's family name is Bergman, and the first one is Alma Bergman."""
    records = []
    for record in organiser(seed=21, school_units=2, students_per_unit=STUDENTS, teachers_per_unit=1):
        if record.kind is EntityKind.PERSON and record.key.startswith("student-"):
            given = "Alma" if record.key == ALMA else record.data["given_name"]
            eppn = ["alma.bergman@demo.skolsynk.example"] if record.key == ALMA else record.data["eppn"]
            data = {**record.data, "given_name": given, "family_name": "Bergman", "eppn": eppn}
            record = SourceRecord(kind=record.kind, key=record.key, data=data)
        records.append(record)
    return records


@dataclass
class Organiser:
    settings: ServiceSettings
    admin: ServiceApp
    session: aiohttp.ClientSession
    token: str
    viewer: str
    records: list[SourceRecord]

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.admin.web_ports[0]}/api/v1/tenants/{TENANT}"

    async def call(self, method: str, path: str, body: Any = None, *, token: str | None = None) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {token or self.token}"}
        async with self.session.request(method, self.base + path, json=body, headers=headers) as response:
            return response.status, await response.json(content_type=None)


async def run_source(normaliser: ServiceApp, records: list[SourceRecord]) -> None:
    run_id = uuid.uuid4()
    for message in full_run(records, source_id=SOURCE, source_kind="egil", page_size=50, run_id=run_id):
        await normaliser.publisher.publish(
            message.to_envelope(tenant_id=TENANT, producer="test"),
            exchange=normaliser.topology.exchange("source"),
            routing_key=f"egil.{TENANT}",
        )

    async def finalised() -> bool:
        run = await normaliser.db["runs"].find_one({"_id": str(run_id)})
        return run is not None and run.get("status") == "finalised"

    await wait_for(finalised, timeout=30, what="the source run")


@pytest.fixture
async def seeded(settings: ServiceSettings) -> AsyncIterator[Organiser]:
    """The organiser projected to two subscriptions in test mode: ``ne`` has only the second school unit
    (Alma's is the first), ``binogi`` only the first; binogi's dispatcher has recorded Alma (the ledger
    written as a dispatcher writes it); ``student-0-1`` asked to be erased everywhere, and binogi sent the
    receipt."""
    base = settings.model_dump()
    catalogue = REPO_ROOT / "deploy" / "vendors"
    admin = build_admin(
        AdminSettings.model_validate(
            {
                **base,
                "admin_host": "127.0.0.1",
                "admin_port": 0,
                "admin_secrets_key": SECRETS_KEY,
                "vendor_catalogue_dir": catalogue,
            }
        )
    )
    normaliser = build_normaliser(NormaliserSettings.model_validate({**base, "date_check_interval_seconds": 86400}))
    records = the_organiser()
    codes = school_unit_codes(records)
    session: aiohttp.ClientSession | None = None
    try:
        await normaliser.start()
        await admin.start()
        operator, _ = await TokenStore(admin.db).create(
            role=TokenRole.OPERATOR, subject="ops", tenant_id=None, created_by="test"
        )
        session = aiohttp.ClientSession()
        api = f"http://127.0.0.1:{admin.web_ports[0]}/api/v1"
        headers = {"Authorization": f"Bearer {operator}"}
        async with session.post(
            f"{api}/tenants", json={"tenant_id": TENANT, "display_name": "P"}, headers=headers
        ) as r:
            assert r.status == 201
        tokens = []
        for subject, role in (("it-admin", "organiser_admin"), ("viewer", "viewer")):
            body = {"subject": subject, "role": role}
            async with session.post(f"{api}/tenants/{TENANT}/tokens", json=body, headers=headers) as r:
                tokens.append((await r.json())["token"])
        subscriptions = SubscriptionStore(normaliser.db)
        for vendor_id, unit_codes in ((EXCLUDING, codes[1:]), (INCLUDING, codes[:1])):
            await subscriptions.save(
                VendorSubscription(tenant_id=TENANT, vendor_id=vendor_id, school_unit_codes=frozenset(unit_codes))
            )
        await ErasureRequestStore(normaliser.db).add(
            TENANT, request_id=uuid.uuid4(), person_id=pid(ERASED), vendor_ids=None, kind="erasure",
            requested_by="it-admin", reference="D-1", requested_at=datetime.now(UTC) - timedelta(minutes=5),
        )  # fmt: skip
        await run_source(normaliser, records)
        views = VendorViews(normaliser.db)

        async def projected() -> bool:
            return any(v["present"] for v in await views.of_entities(TENANT, [str(pid(ALMA))]))

        await wait_for(projected, timeout=30, what="Alma's projection")
        [view] = [v for v in await views.of_entities(TENANT, [str(pid(ALMA))]) if v["vendor_id"] == INCLUDING]
        await DeliveryLedger(normaliser.db, INCLUDING).record(
            TENANT, pid(ALMA), kind="person", operation="upsert", version=view["version"],
            resource_hash=view["hash"], status="test", test=True, school_unit_ids=view.get("school_unit_ids", []),
        )  # fmt: skip
        erased_at = str(uuid.uuid4())
        ledger = ErasureLedger(normaliser.db)
        await ledger.requested(
            TENANT, vendor_id=INCLUDING, person_id=pid(ERASED), vendor_entity_id=uuid.UUID(erased_at), version=2,
            reason="erasure_request", requested_at=datetime.now(UTC), removed_at=None,
        )  # fmt: skip
        await ledger.receipt(
            TENANT, vendor_id=INCLUDING, vendor_entity_id=uuid.UUID(erased_at), version=2, outcome="deleted",
            delivered_at=datetime.now(UTC), vendor_status=204,
        )  # fmt: skip
        yield Organiser(settings, admin, session, tokens[0], tokens[1], records)
    finally:
        if session is not None:
            await session.close()
        for app in (admin, normaliser):
            await app.drain(1)
            await app.close()
        await delete_topology(settings.broker.amqp_url.get_secret_value(), normaliser.topology)


async def test_a_person_is_found_by_every_word_in_any_order_a_page_at_a_time(seeded: Organiser):
    for words in ("Alma Bergman", "bergman alma", "alma.bergman", "ALMA  berg", str(pid(ALMA))[:13]):
        status, found = await seeded.call("POST", "/persons/search", {"q": words})
        assert status == 200, found
        assert (found["total"], [p["person_id"] for p in found["persons"]]) == (1, [str(pid(ALMA))]), words
    [alma] = found["persons"]
    assert (alma["name"], alma["login"], alma["source_id"]) == (
        "Alma Bergman",
        "alma.bergman@demo.skolsynk.example",
        SOURCE,
    )
    # More Bergmans than a page: the total says so, the next page has the rest (never a silent cap).
    status, first = await seeded.call("POST", "/persons/search", {"q": "bergman"})
    assert (status, first["total"], len(first["persons"]), first["size"]) == (200, 2 * STUDENTS, 20, 20)
    status, second = await seeded.call("POST", "/persons/search", {"q": "bergman", "page": 2})
    assert len(second["persons"]) == 2 * STUDENTS - 20
    assert not {p["person_id"] for p in first["persons"]} & {p["person_id"] for p in second["persons"]}
    assert (await seeded.call("POST", "/persons/search", {"q": "bergman nobody"}))[1]["total"] == 0
    # Everyone, by name, a page at a time; search words never in a URL.
    persons = sum(1 for r in seeded.records if r.kind is EntityKind.PERSON)
    status, listed = await seeded.call("GET", "/persons?page=2&size=10")
    assert (status, listed["total"], len(listed["persons"]), listed["page"]) == (200, persons, 10, 2)
    status, problem = await seeded.call("GET", "/persons?q=Alma")
    assert status == 422
    assert "Alma" not in json.dumps(problem)
    assert (await seeded.call("GET", "/persons?size=1000"))[0] == 422


async def test_the_explanation_gives_each_subscription_its_verdict_and_the_rule(seeded: Organiser):
    status, x = await seeded.call("GET", f"/persons/{pid(ALMA)}/explanation")
    assert status == 200, x
    verdicts = {v["vendor_id"]: v for v in x["verdicts"]}
    excluded, included = verdicts[EXCLUDING], verdicts[INCLUDING]
    assert excluded["verdict"] == "not_selected"
    assert excluded["reasons"][0] == {
        "code": "unit_not_chosen",
        "params": {
            "relation": "enrolment",
            "role": "student",
            "unit": "Skola 1",
            "unit_code": school_unit_codes(seeded.records)[0],
        },
    }
    assert included["verdict"] == "delivered"
    assert [r["code"] for r in included["reasons"]] == ["selected", "test_mode"]
    assert included["reasons"][0]["params"] == {"roles": ["student"], "units": ["Skola 1"]}
    assert x["person"]["given_name"] == "Alma"
    assert [(r["kind"], r["key"]) for r in x["records"]] == [("person", ALMA)]
    assert x["records"][0]["source_complete_at"] is not None
    assert [(r["relation"], r["school_unit"], r["active"]) for r in x["relations"]] == [("enrolment", "Skola 1", True)]
    assert x["groups"]
    assert [(d["vendor_id"], d["status"]) for d in x["deliveries"]] == [(INCLUDING, "test")]
    assert x["vendor_names"][EXCLUDING] == "NE Nationalencyklopedin"
    # A teacher at the first unit: binogi takes every role, ne not that unit.
    teacher = entity_id(TENANT, SOURCE, EntityKind.PERSON, "teacher-0-0")
    status, x = await seeded.call("GET", f"/persons/{teacher}/explanation")
    assert [r["relation"] for r in x["relations"]] == ["duty"]
    assert [(r["kind"]) for r in x["records"]] == ["person", "duty"]
    # The erased person: every vendor's verdict says so, and the request shows binogi's receipt.
    status, x = await seeded.call("GET", f"/persons/{pid(ERASED)}/explanation")
    assert {v["vendor_id"]: (v["verdict"], v["reasons"][0]["code"]) for v in x["verdicts"]} == {
        EXCLUDING: ("erased", "erasure_request"),
        INCLUDING: ("erased", "erasure_request"),
    }
    [request] = x["requests"]
    assert {r["vendor_id"]: (r["status"], r["outcome"]) for r in request["receipts"]} == {
        EXCLUDING: ("none", None),
        INCLUDING: ("completed", "deleted"),
    }
    [deletion] = x["deletions"]
    assert (deletion["vendor_id"], deletion["outcome"]) == (INCLUDING, "deleted")
    # The GDPR page's list of requests carries the same receipts.
    status, requests = await seeded.call("GET", "/erasure-requests")
    assert [(r["vendor_id"], r["status"]) for r in requests[0]["receipts"]] == [
        (INCLUDING, "completed"),
        (EXCLUDING, "none"),
    ]
    assert (await seeded.call("GET", f"/persons/{uuid.uuid4()}/explanation"))[0] == 404
    assert (await seeded.call("GET", "/persons/not-an-id/explanation"))[0] == 404


async def test_a_viewer_is_refused_personal_data(seeded: Organiser):
    for method, path, body in (
        ("POST", "/persons/search", {"q": "Alma"}),
        ("GET", "/persons", None),
        ("GET", f"/persons/{pid(ALMA)}/explanation", None),
    ):
        headers = {"Authorization": f"Bearer {seeded.viewer}"}
        async with seeded.session.request(method, seeded.base + path, json=body, headers=headers) as response:
            assert response.status == 403, path
            assert response.content_type == "application/problem+json"
            problem = await response.json(content_type=None)
        assert "personal data" in problem["detail"]
        assert "Alma" not in json.dumps(problem)


async def test_skolsynk_explain_prints_the_same_explanation_as_the_api(seeded: Organiser):
    settings = seeded.settings
    cli = CliSettings(broker=settings.broker, store=settings.store, observability=settings.observability,
                      lifecycle=settings.lifecycle)  # fmt: skip

    async def run(*argv: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        status = await execute(parser().parse_args(list(argv)), cli, out=out, err=err)
        return status, out.getvalue(), err.getvalue()

    status, text, _ = await run("explain", TENANT, "alma.bergman@demo.skolsynk.example")
    assert status == 0
    assert "Alma Bergman" in text
    vendors = text.split("\nVendors\n")[1].split("\n\n")[0]
    lines = {line.split()[0]: line for line in vendors.splitlines()[1:]}
    assert "not_selected" in lines[EXCLUDING]
    assert "unit_not_chosen (relation=enrolment, role=student, unit=Skola 1" in lines[EXCLUDING]
    assert "delivered" in lines[INCLUDING]
    status, out, _ = await run("explain", TENANT, "student-0-0@elev.demo.skolsynk.example", "--json")
    assert status == 0
    printed = json.loads(out)
    _, api = await seeded.call("GET", f"/persons/{pid(ALMA)}/explanation")
    assert printed["verdicts"] == api["verdicts"]
    assert printed["person_id"] == str(pid(ALMA))
    status, _, err = await run("explain", TENANT, "nobody@nowhere.example")
    assert (status, err.strip()) == (
        1,
        f"skolsynk explain: {TENANT} has no person with that id, login or e-mail address",
    )


class Reads(monitoring.CommandListener):
    """The find commands a client sends: collection, filter, hint."""

    def __init__(self) -> None:
        self.finds: list[tuple[str, dict[str, Any], Any]] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name == "find":
            command = event.command
            self.finds.append((command["find"], dict(command.get("filter", {})), command.get("hint")))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


async def test_every_read_of_an_explanation_is_served_by_an_index(seeded: Organiser):
    """The person page reads one person's neighbourhood, views, ledgers, requests, holds, findings and
    runs: each by an index (the vendor catalogue, a handful of documents of no tenant, is read whole); a
    search reads the organiser's persons by the index of the tenant's entities."""
    reads = Reads()
    client = create_client(seeded.settings.store, app_name="test", listeners=[reads])
    try:
        db = client[seeded.settings.store.mongodb_database]
        assert await PersonExplainer(db).explain(TENANT, pid(ALMA)) is not None
        assert await PersonExplainer(db).explain(TENANT, pid(ERASED)) is not None
        # A search reads the organiser's persons, by the index of its entities (no other tenant's).
        assert (await EntityReader(db).find_persons(TENANT, "alma bergman")).total == 1
        assert len(reads.finds) > 10
        for collection, criteria, hint in reads.finds:
            if collection == "vendors":
                continue
            cursor = db[collection].find(criteria)
            if hint is not None:
                cursor = cursor.hint(hint)
            plan = (await cursor.explain())["queryPlanner"]["winningPlan"]
            assert "COLLSCAN" not in str(plan), f"{collection} {criteria} scans the collection: {plan}"
    finally:
        await client.close()
