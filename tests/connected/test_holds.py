"""Holds of the mass-deletion guard as an admin reads them, with the admin service and the normaliser
in-process on the real broker and the Mongo wire server: whom a hold affects (names for roles that may see
personal data, ids for viewers, searchable and paged), why its removals came (a source run that dropped
persons, or a named admin's subscription change carried through the projection request), and the history
of decisions (approve, discard) in the service, the API and the operator CLI."""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from skolsynk.cli import CliSettings, execute, parser
from skolsynk.contracts.source import SourceRecord
from skolsynk.contracts.vendor import ProjectionRequested
from skolsynk.service import ServiceApp, topology_for
from skolsynk.settings import ServiceSettings
from skolsynk.storage.holds import HoldStore
from skolsynk_services.admin import models
from skolsynk_services.admin.app import AdminSettings
from skolsynk_services.admin.app import build as build_admin
from skolsynk_services.admin.auth import Principal, Role, TokenStore
from skolsynk_services.admin.service import AdminService
from skolsynk_services.normaliser.app import NormaliserSettings
from skolsynk_services.normaliser.app import build as build_normaliser
from skolsynk_testkit.synthetic import full_run, organiser, school_unit_codes
from tests.helpers import delete_topology, wait_for

pytestmark = [
    pytest.mark.connected,
    pytest.mark.timeout(120),
    pytest.mark.queues("normaliser.source-events", "normaliser.projections"),
]

REPO_ROOT = Path(__file__).resolve().parents[2]
SECRETS_KEY = "2mJ3m6mCAxzGzO8Ihc4r3Vxv3Fj0vIYbVwJJmQKkV4g="  # a throwaway Fernet key for tests
TENANT = "kommun-h"
SOURCE = "egil-1"
VENDOR = "ne"
ADMIN = Principal("anna.admin@kommun-h.example", Role.ORGANISER_ADMIN, TENANT)
VIEWER = Principal("vera.viewer@kommun-h.example", Role.VIEWER, TENANT)
OPERATOR = Principal("drift@skolsynk.example", Role.OPERATOR, None)


@dataclass
class Stack:
    settings: ServiceSettings
    admin: ServiceApp
    normaliser: ServiceApp
    records: list[SourceRecord] = field(default_factory=list)

    @property
    def service(self) -> AdminService:
        service: AdminService = self.admin.extensions["service"]
        return service

    @property
    def codes(self) -> list[str]:
        return school_unit_codes(self.records)

    async def sync(self, records: list[SourceRecord]) -> uuid.UUID:
        """The organiser's EGIL client pushes a complete snapshot; wait until the normaliser has projected it."""
        self.records = records
        run_id = uuid.uuid4()
        for message in full_run(records, source_id=SOURCE, source_kind="egil", run_id=run_id):
            await self.normaliser.publisher.publish(
                message.to_envelope(tenant_id=TENANT, producer="test"),
                exchange=self.normaliser.topology.exchange("source"),
                routing_key=f"egil.{TENANT}",
            )

        async def finalised() -> bool:
            run = await self.normaliser.db["runs"].find_one({"_id": str(run_id)})
            return run is not None and run.get("status") == "finalised"

        await wait_for(finalised, timeout=30, interval=0.1, what="the run to be finalised")
        await self.settled()
        return run_id

    async def settled(self) -> None:
        """No projection of the tenant is running or waiting."""

        async def idle() -> bool:
            return await self.normaliser.db["projection_locks"].count_documents({"_id": TENANT}) == 0

        await wait_for(idle, timeout=30, interval=0.1, what="the projection to finish")

    async def present(self) -> int:
        """Persons the vendor holds (its view)."""
        return await self.normaliser.db["vendor_views"].count_documents(
            {"tenant_id": TENANT, "vendor_id": VENDOR, "kind": "person", "present": True}
        )

    async def holds(self, n: int) -> list[models.Hold]:
        async def made() -> bool:
            return len(await self.service.holds(ADMIN, TENANT)) == n

        await wait_for(made, timeout=30, interval=0.1, what=f"{n} holds")
        return await self.service.holds(ADMIN, TENANT)

    async def date_check(self) -> None:
        """What the normaliser's hourly date check asks for: a projection of the whole organiser."""
        await self.normaliser.publisher.publish(
            ProjectionRequested(reason="dates").to_envelope(tenant_id=TENANT, producer="test"),
            exchange=self.normaliser.topology.exchange("control"),
            routing_key=ProjectionRequested.message_type,
        )

    async def subscribe(self, **changes: Any) -> None:
        body = models.SubscriptionIn(school_unit_codes=self.codes, **changes)
        await self.service.save_subscription(ADMIN, TENANT, VENDOR, body)


@pytest.fixture
async def stack(settings: ServiceSettings) -> AsyncIterator[Stack]:
    base = settings.model_dump()
    catalogue = REPO_ROOT / "deploy" / "vendors"
    admin_settings = {"admin_host": "127.0.0.1", "admin_port": 0, "admin_secrets_key": SECRETS_KEY,
                      "vendor_catalogue_dir": catalogue}  # fmt: skip
    admin = build_admin(AdminSettings.model_validate({**base, **admin_settings}))
    normaliser = build_normaliser(NormaliserSettings.model_validate({**base, "date_check_interval_seconds": 86400}))
    apps = [normaliser, admin]
    try:
        for app in apps:
            await app.start()
        service: AdminService = admin.extensions["service"]
        await service.create_tenant(OPERATOR, models.TenantIn(tenant_id=TENANT, display_name="Kommun H"))
        yield Stack(settings, admin, normaliser)
    finally:
        for app in apps:
            await app.drain(1)
        for app in apps:
            await app.close()
        url = settings.broker.amqp_url.get_secret_value()
        await delete_topology(url, topology_for(settings.broker, vendor_ids=[VENDOR]))


def the_organiser() -> list[SourceRecord]:
    """Two school units of six students and a teacher each."""
    return organiser(seed=11, school_units=2, students_per_unit=6, teachers_per_unit=1)


def name_of(record: SourceRecord) -> str:
    return f"{record.data['given_name']} {record.data['family_name']}"


async def test_a_hold_from_the_source_names_the_run_and_whom_it_keeps(stack: Stack) -> None:
    await stack.sync(the_organiser())
    await stack.subscribe()
    await stack.settled()
    await wait_for(lambda: _equals(stack.present(), 14), timeout=30, interval=0.1, what="the selection")

    # A half export: five students of the first school unit are missing from the next snapshot.
    leavers = [r for r in stack.records if r.key in {f"student-0-{n}" for n in range(5)}]
    run_id = await stack.sync([r for r in stack.records if r not in leavers])
    [hold] = await stack.holds(1)
    assert hold.status == "pending"
    assert hold.school_unit_codes == [stack.codes[0]]
    assert hold.removals == 5
    [cause] = hold.causes
    assert (cause.kind, cause.source_id, cause.run_id, cause.mode) == ("source", SOURCE, str(run_id), "full")
    assert cause.actor is None

    # Whom: the persons the source no longer has, by the names they had there (kept by the hold).
    entities, total = await stack.service.held_entities(ADMIN, TENANT, VENDOR, hold.school_unit_id)
    assert total == 5
    assert {e.name for e in entities} == {name_of(r) for r in leavers}
    assert {(e.kind, e.reason) for e in entities} == {("person", "left_source")}
    # ... searchable by name, and paged in the store.
    first = leavers[0]
    found, total = await stack.service.held_entities(
        ADMIN, TENANT, VENDOR, hold.school_unit_id, search=str(first.data["family_name"]).upper()
    )
    assert first.data["given_name"] in {str(e.name).split()[0] for e in found}
    assert total == len(found) >= 1
    page, total = await stack.service.held_entities(ADMIN, TENANT, VENDOR, hold.school_unit_id, skip=3, limit=3)
    assert (len(page), total) == (2, 5)
    # A viewer reads ids, never names, and cannot find anyone by name.
    seen, _ = await stack.service.held_entities(VIEWER, TENANT, VENDOR, hold.school_unit_id)
    assert {e.name for e in seen} == {None}
    assert {e.entity_id for e in seen} == {e.entity_id for e in entities}
    found, total = await stack.service.held_entities(
        VIEWER, TENANT, VENDOR, hold.school_unit_id, search=str(first.data["family_name"])
    )
    assert total == 0
    found, total = await stack.service.held_entities(
        VIEWER, TENANT, VENDOR, hold.school_unit_id, search=entities[0].entity_id[:13]
    )
    assert entities[0].entity_id in {e.entity_id for e in found}

    # Discarded: kept, not asked again; the history says who, what and why.
    await stack.service.decide_hold(ADMIN, TENANT, VENDOR, hold.school_unit_id, "discard")
    await stack.settled()
    [kept] = await stack.service.holds(ADMIN, TENANT)
    assert kept.status == "discarded"
    history, total = await stack.service.hold_history(ADMIN, TENANT)
    assert total == 1
    assert (history[0].outcome, history[0].by, history[0].removals) == ("discarded", ADMIN.subject, 5)
    assert history[0].causes == hold.causes
    assert await stack.present() == 14  # nobody removed

    # The source comes back: at the next projection of the whole organiser (the hourly date check) the hold
    # is no longer needed, and its entities (with the kept names) go with it.
    await stack.sync(the_organiser())
    await stack.date_check()
    await wait_for(lambda: _equals(_count(stack.service.holds(ADMIN, TENANT)), 0), what="the hold to close")
    assert await stack.normaliser.db["hold_entities"].count_documents({}) == 0

    # The same half export again: a new hold, of the new run. Nobody decides; the source comes back, and the
    # history says the hold closed undecided.
    run_id = await stack.sync([r for r in stack.records if r not in leavers])
    [again] = await stack.holds(1)
    assert (again.status, again.causes[0].run_id) == ("pending", str(run_id))
    await stack.sync(the_organiser())
    await stack.date_check()
    await wait_for(lambda: _equals(_count(stack.service.holds(ADMIN, TENANT)), 0), what="the hold to close")
    history, total = await stack.service.hold_history(ADMIN, TENANT)
    assert total == 2  # written before the hold is removed
    assert (history[0].outcome, history[0].by, history[0].removals) == ("resolved", None, 5)
    assert history[0].causes == again.causes


async def test_a_hold_from_a_subscription_change_names_the_admin_and_keeps_its_decisions(stack: Stack) -> None:
    await stack.sync(the_organiser())
    await stack.subscribe()
    await stack.settled()
    await wait_for(lambda: _equals(stack.present(), 14), timeout=30, interval=0.1, what="the selection")

    # The admin narrows the subscription to teachers: every student would be removed, at both units.
    before = datetime.now(UTC)
    await stack.subscribe(roles=["teacher"])
    holds = await stack.holds(2)
    for hold in holds:
        assert hold.removals == 6
        [cause] = hold.causes
        assert (cause.kind, cause.actor, cause.action, cause.target) == (
            "change",
            ADMIN.subject,
            "subscription.update",
            VENDOR,
        )
        assert cause.at is not None
        assert cause.at >= before - timedelta(seconds=1)
    first, second = sorted(holds, key=lambda h: h.school_unit_codes)

    # Whom: the students, still in the source, named when the list is read.
    entities, total = await stack.service.held_entities(ADMIN, TENANT, VENDOR, first.school_unit_id)
    students = {name_of(r) for r in stack.records if r.key.startswith("student-0-")}
    assert total == 6
    assert {e.name for e in entities} == students
    assert {e.reason for e in entities} == {"left_selection"}

    # Approve one (the removals go out, the hold closes), discard the other.
    await stack.service.decide_hold(ADMIN, TENANT, VENDOR, first.school_unit_id, "approve")
    await stack.settled()
    await wait_for(lambda: _equals(stack.present(), 8), timeout=30, interval=0.1, what="the approved removals")
    await stack.service.decide_hold(OPERATOR, TENANT, VENDOR, second.school_unit_id, "discard")
    await stack.settled()
    [left] = await stack.service.holds(ADMIN, TENANT)
    assert (left.school_unit_id, left.status) == (second.school_unit_id, "discarded")
    assert await stack.normaliser.db["hold_entities"].count_documents({"school_unit_id": first.school_unit_id}) == 0

    history, total = await stack.service.hold_history(ADMIN, TENANT)
    assert total == 2
    assert [(h.outcome, h.by, h.school_unit_id) for h in history] == [
        ("discarded", OPERATOR.subject, second.school_unit_id),
        ("approved", ADMIN.subject, first.school_unit_id),
    ]
    assert all(h.causes[0].actor == ADMIN.subject and h.removals == 6 for h in history)
    page, total = await stack.service.hold_history(ADMIN, TENANT, skip=1, limit=1)
    assert (len(page), total, page[0].outcome) == (1, 2, "approved")

    # The API says the same, to whoever may read the organiser.
    token, _ = await TokenStore(stack.admin.db).create(
        role=Role.VIEWER, subject=VIEWER.subject, tenant_id=TENANT, created_by="test"
    )
    base = f"http://127.0.0.1:{stack.admin.web_ports[0]}/api/v1/tenants/{TENANT}/holds"
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as http:
        async with http.get(base) as response:
            assert response.status == 200
            [listed] = await response.json()
            assert listed["status"] == "discarded"
            assert listed["causes"][0]["actor"] == ADMIN.subject
            assert "entity_ids" not in listed
        async with http.get(f"{base}/history", params={"limit": "1"}) as response:
            assert response.status == 200
            assert response.headers["X-Total-Count"] == "2"
            assert [e["outcome"] for e in await response.json()] == ["discarded"]
        async with http.get(f"{base}/{VENDOR}/{second.school_unit_id}/entities") as response:
            assert response.status == 200
            assert response.headers["X-Total-Count"] == "6"
            assert {e["name"] for e in await response.json()} == {None}  # a viewer
        async with http.get(f"{base}/{VENDOR}/{first.school_unit_id}") as response:
            assert response.status == 404  # approved and closed: only the history has it

    # And the operator CLI.
    out = io.StringIO()
    settings = CliSettings.model_validate(stack.settings.model_dump())
    status = await execute(parser().parse_args(["holds", TENANT, "--json"]), settings, out=out, err=io.StringIO())
    assert status == 0
    report = json.loads(out.getvalue())
    assert [h["status"] for h in report["holds"]] == ["discarded"]
    assert report["holds"][0]["causes"][0]["actor"] == ADMIN.subject
    assert [h["outcome"] for h in report["history"]] == ["discarded", "approved"]


async def test_the_history_and_the_hold_entities_are_in_the_hold_store(stack: Stack) -> None:
    """The store alone: a decision is written to the history once; a hold's entities follow its ids."""
    db = stack.admin.db
    store = HoldStore(db)
    hold = {"_id": store.hold_id(TENANT, VENDOR, "u1"), "tenant_id": TENANT, "vendor_id": VENDOR,
            "school_unit_id": "u1", "status": "pending", "removals": 2, "population": 3,
            "created_at": datetime.now(UTC)}  # fmt: skip
    await db["holds"].insert_one(hold)
    entries = [{"entity_id": e, "source_entity_id": e, "kind": k} for e, k in (("b", "group"), ("a", "person"))]
    await store.keep_entities(hold, ["a", "b"], entries)  # type: ignore[arg-type]
    docs, total = await store.affected(TENANT, VENDOR, "u1")
    assert ([d["entity_id"] for d in docs], total) == (["a", "b"], 2)  # persons first
    await store.keep_entities(hold, ["b"], [])
    assert [d["entity_id"] for d in (await store.affected(TENANT, VENDOR, "u1"))[0]] == ["b"]
    assert await store.decide(TENANT, VENDOR, "u1", "approved", by="x")
    assert not await store.decide(TENANT, VENDOR, "u1", "discarded", by="x")
    history, total = await store.history(TENANT)
    assert (total, history[0]["outcome"], history[0]["by"]) == (1, "approved", "x")


async def _equals(value: Any, expected: Any) -> bool:
    return await value == expected


async def _count(value: Any) -> int:
    return len(await value)
