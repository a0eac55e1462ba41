"""EGIL intake at the client's pace, against the Mongo wire server: a SCIM write request costs one
store command (counted with a PyMongo command listener, never timed), pages and outbox entries are
built per burst, and a paging transaction that fails leaves every write to be paged once, later."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from pymongo import AsyncMongoClient, monitoring

from skolsynk.adapters.egil import EgilResourceType, from_egil
from skolsynk.contracts.envelope import Envelope
from skolsynk.messaging.outbox import OUTBOX_COLLECTION, Outbox
from skolsynk.settings import ServiceSettings
from skolsynk.storage import Database, MongoClient, ensure_indexes
from skolsynk_services.egil_receiver import store as store_module
from skolsynk_services.egil_receiver.app import EgilReceiverSettings, build_scim_app
from skolsynk_services.egil_receiver.clients import ClientRegistry, EgilClient, hash_key
from skolsynk_services.egil_receiver.store import BATCHES, INDEXES, RESOURCES, ReceiverStore, RunPager

pytestmark = [pytest.mark.connected, pytest.mark.timeout(120)]

TENANT = "gronkoping"
SOURCE = "egil-ldap"
API_KEY = "egil-intake-key-0123456789"
ORGANISATION = "4f3d2c1b-8a9e-4b7c-9d6e-5f4a3b2c1d0e"
SCHOOL_UNIT = "9f8e7d6c-5b4a-4f3e-9d2c-1b0a9f8e7d6c"
#: What the driver sends on its own, not on behalf of a request.
DRIVER_COMMANDS = {"hello", "ismaster", "ping", "buildinfo", "endsessions", "saslstart", "saslcontinue"}


class CommandLog(monitoring.CommandListener):
    """Every command the client sends, as (command, collection)."""

    def __init__(self) -> None:
        self.commands: list[tuple[str, str]] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name.lower() in DRIVER_COMMANDS:
            return
        target = event.command.get(event.command_name)
        self.commands.append((event.command_name, target if isinstance(target, str) else "-"))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


@dataclass
class Intake:
    http: aiohttp.ClientSession
    server: TestServer
    store: ReceiverStore
    pager: RunPager
    db: Database
    log: CommandLog

    def url(self, path: str) -> str:
        return str(self.server.make_url(path))

    async def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, int]:
        """One request; returns its status and the store commands it cost."""
        before = len(self.log.commands)
        async with self.http.request(method, self.url(path), json=body) as response:
            await response.read()
        return response.status, len(self.log.commands) - before

    async def outbox(self) -> list[Envelope]:
        entries = await self.db[OUTBOX_COLLECTION].find({}).sort("created_at", 1).to_list(None)
        return [Envelope.model_validate(m["envelope"]) for entry in entries for m in Outbox.messages_of(entry)]


@pytest.fixture
async def intake(mongo_url: str, settings: ServiceSettings) -> AsyncIterator[Intake]:
    log = CommandLog()
    client: MongoClient = AsyncMongoClient(mongo_url, tz_aware=True, event_listeners=[log])
    db = client[settings.store.mongodb_database]
    store = ReceiverStore(client, db, Outbox(db), exchange="source", producer="egil-receiver", page_size=10)
    # The pager's loop is not started: the test runs its passes, so every command in a request's
    # window is the request's own.
    pager = RunPager(store, idle_seconds=3600, max_age_seconds=86400, page_seconds=0.5)
    registry = ClientRegistry([EgilClient(tenant_id=TENANT, source_id=SOURCE, api_key_sha256=hash_key(API_KEY))])
    server = TestServer(build_scim_app(store, registry, on_write=pager.written))
    http: aiohttp.ClientSession | None = None
    try:
        await ensure_indexes(db, [*INDEXES, *Outbox.index_specs(3600)])
        log.commands.clear()  # start-up work is not a request's
        await server.start_server()
        # One kept-alive connection, one request at a time: how the EGIL client talks.
        http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1), headers={"X-API-Key": API_KEY})
        yield Intake(http, server, store, pager, db, log)
    finally:
        if http is not None:
            await http.close()
        await server.close()
        await client.drop_database(settings.store.mongodb_database)
        await client.close()


def user(external_id: str, name: str) -> dict[str, Any]:
    return {
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User", "urn:scim:schemas:extension:sis:school:1.0:User"],
        "externalId": external_id,
        "userName": f"{name.lower()}@gronkoping.se",
        "displayName": f"{name} Testsson",
        "name": {"familyName": "Testsson", "givenName": name},
        "urn:scim:schemas:extension:sis:school:1.0:User": {
            "enrolments": [{"value": SCHOOL_UNIT, "schoolYear": 7, "schoolType": "GR"}]
        },
    }


def directory(persons: int) -> list[tuple[str, dict[str, Any]]]:
    """An organisation, a school unit and its pupils, as (endpoint, body) in the client's send order."""
    return [
        ("/Organisations", {"externalId": ORGANISATION, "displayName": "Grönköpings kommun"}),
        (
            "/SchoolUnits",
            {
                "externalId": SCHOOL_UNIT,
                "displayName": "Norrskolan",
                "schoolUnitCode": "29384756",
                "organisation": {"value": ORGANISATION},
            },
        ),
        *[("/Users", user(str(uuid.UUID(int=number + 1)), f"Elev{number}")) for number in range(persons)],
    ]


async def test_a_write_request_costs_one_store_command_and_pages_are_built_per_burst(intake: Intake) -> None:
    pushed = directory(20)
    costs: dict[str, list[int]] = {}
    for endpoint, body in pushed:
        status, commands = await intake.request("POST", endpoint, body)
        assert status == 201
        costs.setdefault("POST", []).append(commands)
    pupils = [body["externalId"] for endpoint, body in pushed if endpoint == "/Users"]
    for number, pupil in enumerate(pupils[:5]):
        status, commands = await intake.request("PUT", f"/Users/{pupil}", user(pupil, f"Bytt{number}"))
        assert status == 200
        costs.setdefault("PUT", []).append(commands)
    for pupil in pupils[-3:]:
        status, commands = await intake.request("DELETE", f"/Users/{pupil}")
        assert status == 204
        costs.setdefault("DELETE", []).append(commands)
    # A strict server's refusals: the write's own result says it (a POST whose id is taken tries to
    # replace a tombstone, in a second command).
    refusals = [
        ("POST", "/Users", user(pupils[0], "Igen"), 409),
        ("PUT", f"/Users/{pupils[-1]}", user(pupils[-1], "Borta"), 404),
        ("DELETE", f"/Users/{pupils[-1]}", None, 404),
    ]
    for method, path, body, expected in refusals:
        status, commands = await intake.request(method, path, body)
        assert status == expected
        costs.setdefault(f"{method} {expected}", []).append(commands)
    assert intake.log.commands, "the command listener saw nothing"
    assert {method: max(counts) for method, counts in costs.items()} == {
        "POST": 1, "PUT": 1, "DELETE": 1, "POST 409": 2, "PUT 404": 1, "DELETE 404": 1,
    }  # fmt: skip
    assert max(max(counts) for counts in costs.values()) <= 2
    touched = {collection for _, collection in intake.log.commands}
    assert touched == {RESOURCES}, "the request path wrote nothing but the resource itself"
    assert await intake.outbox() == []

    # The burst is paged in one pass: 22 resources written (5 of them twice, 3 deleted) make 3 pages
    # of at most 10, each in one transaction of a handful of commands, whatever the burst's length.
    before = len(intake.log.commands)
    assert await intake.pager.pass_once() == 22
    paging = intake.log.commands[before:]
    assert len(paging) <= 7 * 3, paging
    messages = await intake.outbox()
    assert [m.message_type for m in messages] == ["source.run.started", *["source.records"] * 3]
    pages = [m.payload for m in messages[1:]]
    assert [p["page"] for p in pages] == [0, 1, 2]
    assert {p["run_id"] for p in pages} == {messages[0].payload["run_id"]}
    records = {r["key"]: r for p in pages for r in p["records"]}
    deletions = {d["key"] for p in pages for d in p["deletions"]}
    assert sum(len(p["records"]) + len(p["deletions"]) for p in pages) == 22  # each resource once
    assert set(records) == {ORGANISATION, SCHOOL_UNIT, *pupils[:-3]}
    assert deletions == set(pupils[-3:])
    for number, pupil in enumerate(pupils[:5]):  # the latest state of a resource written twice
        assert records[pupil]["data"]["given_name"] == f"Bytt{number}"
    # Tombstones leave once their deletions are paged; nothing is left to page.
    assert await intake.db[RESOURCES].count_documents({}) == 19
    assert await intake.db[RESOURCES].count_documents({"pending": True}) == 0
    assert (await intake.db[BATCHES].find_one({}) or {})["status"] == "open"

    # Nothing written, nothing due: a pass costs no store work.
    before = len(intake.log.commands)
    assert await intake.pager.pass_once() == 0
    assert intake.log.commands[before:] == []

    # The client's pause ends the run: completed with its page count.
    intake.pager.idle_seconds = 0
    assert await intake.pager.pass_once() == 0
    completed = (await intake.outbox())[-1]
    assert completed.message_type == "source.run.completed"
    assert completed.payload["pages"] == 3
    assert completed.payload["run_id"] == messages[0].payload["run_id"]

    # The next burst is a new run, from page 0.
    intake.pager.idle_seconds = 3600
    status, _ = await intake.request("PUT", f"/Users/{pupils[0]}", user(pupils[0], "Senare"))
    assert status == 200
    assert await intake.pager.pass_once() == 1
    started, page = (await intake.outbox())[-2:]
    assert started.message_type == "source.run.started"
    assert started.payload["run_id"] != completed.payload["run_id"]
    assert page.payload["page"] == 0
    assert [r["key"] for r in page.payload["records"]] == [pupils[0]]


async def test_a_failed_paging_transaction_loses_and_repeats_nothing(
    intake: Intake, monkeypatch: pytest.MonkeyPatch
) -> None:
    for endpoint, body in directory(12):
        status, _ = await intake.request("POST", endpoint, body)
        assert status == 201
    status, _ = await intake.request("DELETE", f"/Users/{uuid.UUID(int=1)}")
    assert status == 204

    # The outbox insert fails inside the paging transaction (as if the process died there).
    add_many = intake.store.outbox.add_many

    async def broken(*args: Any, **kwargs: Any) -> int:
        raise ConnectionError("the store went away")

    monkeypatch.setattr(intake.store.outbox, "add_many", broken)
    with pytest.raises(ConnectionError):
        await intake.pager.pass_once()
    assert await intake.outbox() == []
    assert await intake.db[BATCHES].count_documents({}) == 0
    assert await intake.db[RESOURCES].count_documents({"pending": True}) == 14

    # The next pass (here, or any replica's sweep) pages every write exactly once.
    monkeypatch.setattr(intake.store.outbox, "add_many", add_many)
    assert await intake.pager.pass_once() == 14
    messages = await intake.outbox()
    pages = [m.payload for m in messages if m.message_type == "source.records"]
    keys = [r["key"] for p in pages for r in p["records"]] + [d["key"] for p in pages for d in p["deletions"]]
    assert len(keys) == len(set(keys)) == 14
    assert [p["page"] for p in pages] == [0, 1]
    assert await intake.db[RESOURCES].count_documents({"pending": True}) == 0
    # A fresh pager (another replica, or this one restarted) finds nothing more to page.
    fresh = RunPager(intake.store, idle_seconds=3600, max_age_seconds=86400, page_seconds=0.5)
    assert await fresh.pass_once(sweep=True) == 0
    assert len(await intake.outbox()) == len(messages)


@pytest.mark.parametrize(("max_age_hours", "runs"), [(None, 1), (1.0, 2)])
async def test_an_initial_sync_of_hours_is_one_run_closed_by_the_pause(
    intake: Intake, monkeypatch: pytest.MonkeyPatch, max_age_hours: float | None, runs: int
) -> None:
    """A slow one-at-a-time client (a gap of 50 s between writes, on a clock the test moves) takes
    two hours: with the default settings that is one run, closed only by the pause at the end; the
    age limit is a guard that, set below the sync's length, splits it (nothing else does)."""
    clock = [datetime(2026, 1, 5, 6, 0, tzinfo=UTC)]
    monkeypatch.setattr(store_module, "now", lambda: clock[0])
    default_max_age = EgilReceiverSettings.model_fields["egil_run_max_age_seconds"].default
    intake.pager.idle_seconds = 60.0
    intake.pager.max_age_seconds = default_max_age if max_age_hours is None else max_age_hours * 3600
    pupils = [str(uuid.UUID(int=number + 1)) for number in range(150)]
    for number, pupil in enumerate(pupils):
        status, _ = await intake.request("POST", "/Users", user(pupil, f"Elev{number}"))
        assert status == 201
        clock[0] += timedelta(seconds=50)
        if number % 10 == 9:
            await intake.pager.pass_once()
    assert await intake.pager.pass_once() == 0
    clock[0] += timedelta(seconds=61)  # the client's pause
    await intake.pager.pass_once()
    messages = await intake.outbox()
    started = [m for m in messages if m.message_type == "source.run.started"]
    completed = [m for m in messages if m.message_type == "source.run.completed"]
    pages = [m for m in messages if m.message_type == "source.records"]
    assert len(started) == len(completed) == runs
    assert sum(c.payload["pages"] for c in completed) == len(pages) == 15
    assert sorted(r["key"] for p in pages for r in p.payload["records"]) == sorted(pupils)
    assert await intake.db[BATCHES].count_documents({"status": "open"}) == 0


async def test_a_write_that_lands_while_its_resource_is_paged_goes_out_too(
    intake: Intake, monkeypatch: pytest.MonkeyPatch
) -> None:
    for endpoint, body in directory(3):
        status, _ = await intake.request("POST", endpoint, body)
        assert status == 201
    pupil = str(uuid.UUID(int=1))
    add_many = intake.store.outbox.add_many
    landed: list[int] = []

    async def add_many_while_the_client_writes(*args: Any, **kwargs: Any) -> int:
        if not landed:  # the client's PUT arrives in the middle of the paging transaction
            status, _ = await intake.request("PUT", f"/Users/{pupil}", user(pupil, "Mitt"))
            landed.append(status)
        return await add_many(*args, **kwargs)

    monkeypatch.setattr(intake.store.outbox, "add_many", add_many_while_the_client_writes)
    await intake.pager.pass_once()
    assert landed == [200]
    await intake.pager.pass_once()  # whatever the first pass could not mark goes out now
    assert await intake.db[RESOURCES].count_documents({"pending": True}) == 0
    pages = sorted(
        (m.payload for m in await intake.outbox() if m.message_type == "source.records"), key=lambda p: p["page"]
    )
    versions = [r["data"]["given_name"] for p in pages for r in p["records"] if r["key"] == pupil]
    assert versions[-1] == "Mitt"  # the normaliser applies pages in order: it ends with the latest write
    assert len({r["key"] for p in pages for r in p["records"]}) == 5


async def test_a_post_after_a_delete_creates_even_when_the_tombstone_is_paged_away_in_between(
    intake: Intake, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The insert finds the deleted resource's tombstone; before the tombstone can be replaced the pager
    has paged and removed it. The client must get 201 (nothing exists), not 409."""
    for endpoint, body in directory(1):
        status, _ = await intake.request("POST", endpoint, body)
        assert status == 201
    pupil = str(uuid.UUID(int=1))
    status, _ = await intake.request("DELETE", f"/Users/{pupil}")
    assert status == 204
    replace_tombstone = intake.store.resources.update_one
    paged_away: list[int] = []

    async def pager_removes_the_tombstone_first(criteria: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        if not paged_away and criteria.get("deleted") is True:
            removed = await intake.db[RESOURCES].delete_one({"_id": criteria["_id"], "deleted": True})
            paged_away.append(removed.deleted_count)
        return await replace_tombstone(criteria, *args, **kwargs)

    monkeypatch.setattr(intake.store.resources, "update_one", pager_removes_the_tombstone_first)
    status, _ = await intake.request("POST", "/Users", user(pupil, "Åter"))
    assert paged_away == [1]
    assert status == 201
    held = await intake.db[RESOURCES].find_one({"resource_id": pupil, "deleted": False})
    assert held is not None
    status, _ = await intake.request("POST", "/Users", user(pupil, "Igen"))
    assert status == 409  # a live resource is still a conflict


async def test_the_record_is_derived_from_the_body_when_paged_and_an_earlier_stored_record_still_pages(
    intake: Intake,
) -> None:
    """The request's one write holds the body only (half the document); the pager maps it as the door did.
    A resource an earlier receiver stored with its record beside the body is paged from that record."""
    pupil = str(uuid.UUID(int=7))
    status, _ = await intake.request("POST", "/Users", user(pupil, "Elev"))
    assert status == 201
    stored = await intake.db[RESOURCES].find_one({})
    assert stored is not None
    assert "record" not in stored
    assert await intake.pager.pass_once() == 1
    [first] = [m.payload for m in await intake.outbox() if m.message_type == "source.records"]
    assert [(r["key"], r["data"]["given_name"]) for r in first["records"]] == [(pupil, "Elev")]

    status, _ = await intake.request("PUT", f"/Users/{pupil}", user(pupil, "Ny"))
    assert status == 200
    record = from_egil(EgilResourceType.USERS, user(pupil, "Tidigare")).model_dump(mode="json")
    await intake.db[RESOURCES].update_one({"_id": stored["_id"]}, {"$set": {"record": record}})
    assert await intake.pager.pass_once() == 1
    pages = [m.payload for m in await intake.outbox() if m.message_type == "source.records"]
    assert [r["data"]["given_name"] for r in pages[-1]["records"]] == ["Tidigare"]
