"""The SS 12000 puller's subscriptions at the source and its ``/log/`` entries, against the fake SS 12000 API
(which notifies the registered webhook when its data changes), the real broker and the Mongo wire server."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from skolsynk.connectors.sources.ss12000 import SourceConfig, parse_sources
from skolsynk.settings import ServiceSettings
from skolsynk_services.ss12000_puller.app import Ss12000ConnectorSettings, build
from skolsynk_services.ss12000_puller.connector import Ss12000Connector
from skolsynk_services.ss12000_puller.runs import SOURCE_KIND, STATE_COLLECTION
from skolsynk_services.ss12000_puller.subscriptions import RESOURCE_TYPES, SubscriptionKeeper
from skolsynk_services.ss12000_puller.webhook import notice_address
from skolsynk_testkit.devstack import free_port
from skolsynk_testkit.fakes.ss12000_api import FakeSs12000Api
from tests.connectors_harness import ConnectorHarness, connector_settings, connector_testbed
from tests.helpers import wait_for

pytestmark = [pytest.mark.connected, pytest.mark.timeout(90)]

TENANT = "kommun-s"
SOURCE = "ss12000-hook"
HOOK_SECRET = "hook-secret-value"
ENVIRON = {"SS12000_WEBHOOK_SECRET": HOOK_SECRET}
LONG_AGO = datetime(2025, 1, 1, tzinfo=UTC)
UNIT_ID = "5b1f0f8e-3c2d-4b7e-8f61-0d9a7c2e4b10"
STUDENT_ID = "9a7e2c3d-1f44-4a8b-b2c5-6d0e9f1a2b30"

Harness = ConnectorHarness[FakeSs12000Api, SourceConfig, Ss12000Connector]
HarnessFactory = Callable[..., Awaitable[Harness]]


def source_config(fake: FakeSs12000Api, **overrides: Any) -> SourceConfig:
    raw = {
        "tenant_id": TENANT,
        "source_id": SOURCE,
        "base_url": fake.base_url,
        "auth": {"kind": "none"},
        "page_size": 100,
        "webhook_secret_env": "SS12000_WEBHOOK_SECRET",
        **overrides,
    }
    return parse_sources([raw])[0]


def student(object_id: str = STUDENT_ID, name: str = "Alva") -> dict[str, Any]:
    return {"id": object_id, "givenName": name, "familyName": "Lindqvist"}


@pytest.fixture
async def make_harness(settings: ServiceSettings, make_app: Any) -> AsyncIterator[HarnessFactory]:
    async with connector_testbed(settings, make_app) as testbed:
        await testbed.collect()
        fakes: dict[str, FakeSs12000Api] = {}

        async def factory(
            *,
            lifetime_seconds: float = 90 * 86400.0,
            subscribe: bool = True,
            webhook_url: str | None = None,
            **app_options: Any,
        ) -> Harness:
            if "fake" not in fakes:  # one source API per test; a second app (a restart) reads the same one
                fake = await testbed.start_fake(FakeSs12000Api(auth="none"))
                fake.subscriptions.lifetime_seconds = lifetime_seconds
                # The spec defines no authentication of notices and a source sends no header of ours: the
                # subscription names the source's notice address (a token derived from the secret).
                fake.put("organisations", {"id": UNIT_ID, "organisationType": "Skolenhet"}, modified=LONG_AGO)
                fake.put("persons", student(), modified=LONG_AGO)
                fakes["fake"] = fake
            fake = fakes["fake"]
            port = free_port()
            hook = webhook_url or f"http://127.0.0.1:{port}/ss12000/notify/{TENANT}/{SOURCE}"
            hook = hook if subscribe else None
            source = source_config(fake, webhook_url=hook)
            app_settings = connector_settings(
                Ss12000ConnectorSettings,
                settings,
                prefix="ss12000",
                ss12000_webhook_host="127.0.0.1",
                ss12000_webhook_port=port,
                **app_options,
            )
            app = build(app_settings, sources=[source], environ=ENVIRON)
            await testbed.start_app(app)
            return Harness(
                testbed=testbed,
                fake=fake,
                app=app,
                source=source,
                connector_type=Ss12000Connector,
                kind=SOURCE_KIND,
                state_collection=STATE_COLLECTION,
                run_options={"mode": "full"},
            )

        yield factory


def address(source: SourceConfig) -> str:
    """The notice address the subscription names: the source's webhook URL and its token."""
    assert source.webhook_url is not None
    return notice_address(source.webhook_url, HOOK_SECRET, source.tenant_id, source.source_id)


def calls(fake: FakeSs12000Api, method: str, endpoint: str = "subscriptions") -> int:
    return sum(1 for r in fake.requests if r.method == method and r.endpoint == endpoint)


async def stored_subscription(h: Harness) -> dict[str, Any] | None:
    return (await h.state()).get("subscription")


def keeper(h: Harness) -> SubscriptionKeeper:
    assert h.connector.subscriptions is not None
    return h.connector.subscriptions


async def test_subscribes_renews_before_expiry_and_notices_trigger_runs(make_harness: HarnessFactory) -> None:
    # The source grants 3 seconds: renewed halfway, so the webhook never goes quiet.
    h = await make_harness(lifetime_seconds=3.0, ss12000_subscription_check_seconds=0.2)
    await wait_for(lambda: len(h.fake.subscriptions.live()) == 1, what="a subscription at the source")
    made = h.fake.subscriptions.live()[0]
    assert made.target == address(h.source)
    assert HOOK_SECRET not in made.target  # the secret itself never travels in a URL
    assert made.resource_types == list(RESOURCE_TYPES)
    first_expiry = made.expires
    stored = await stored_subscription(h)
    assert stored is not None
    assert stored["id"] == made.id
    assert stored["target"] == address(h.source)

    await wait_for(lambda: calls(h.fake, "PATCH") >= 1, what="a renewal")
    await wait_for(lambda: datetime.now(UTC) > first_expiry, what="the first expiry to pass")
    assert [s.id for s in h.fake.subscriptions.live()] == [made.id]  # renewed, not replaced
    assert calls(h.fake, "POST") == 1

    await h.run("full")
    h.fake.put("persons", student("2d3c4b5a-6978-4a6b-9c8d-7e6f5a4b3c20", "Elsa"))  # the source's data changes
    await wait_for(lambda: any(n.status == 200 for n in h.fake.subscriptions.notices), what="a notice")
    triggered = await h.nth_run(2, what="the run the notice triggered")
    assert h.collected.started(triggered).mode == "incremental"
    keys = {r.key for p in h.collected.pages(triggered) for r in p.records}
    assert keys == {"2d3c4b5a-6978-4a6b-9c8d-7e6f5a4b3c20"}


async def test_a_source_without_patch_is_renewed_by_replacement(make_harness: HarnessFactory) -> None:
    h = await make_harness(lifetime_seconds=4.0, ss12000_subscription_check_seconds=0.2)
    h.fake.subscriptions.renew_offered = False
    h.fake.subscriptions.unsupported_status = 501
    await wait_for(lambda: len(h.fake.subscriptions.live()) == 1, what="a subscription")
    first = h.fake.subscriptions.live()[0]
    await wait_for(lambda: calls(h.fake, "DELETE") >= 1, what="the first replaced and deleted")
    assert calls(h.fake, "PATCH") >= 1
    assert datetime.now(UTC) < first.expires  # a new one took over before the first ran out
    live = h.fake.subscriptions.live()
    assert len(live) == 1
    assert live[0].id != first.id
    await wait_for(lambda: _stored_id(h, live[0].id), what="the replacement stored")


async def test_a_lost_subscription_is_made_again_and_a_restart_adds_none(make_harness: HarnessFactory) -> None:
    public = f"https://skolsynk.example.se/ss12000/notify/{TENANT}/{SOURCE}"  # behind the operator's proxy
    h = await make_harness(webhook_url=public, ss12000_subscription_check_seconds=0.2)
    await wait_for(lambda: len(h.fake.subscriptions.live()) == 1, what="a subscription")
    first = h.fake.subscriptions.live()[0].id

    h.fake.subscriptions.forget()  # the source lost it: the next look (GET) finds a 404
    await wait_for(lambda: len(h.fake.subscriptions.live()) == 1, what="a new subscription")
    second = h.fake.subscriptions.live()[0].id
    assert second != first
    await wait_for(lambda: _stored_id(h, second), what="the new one stored")

    # A crash after the source's answer but before the store: the next pass adopts it from the list.
    posts = calls(h.fake, "POST")
    await h.app.db[STATE_COLLECTION].update_one({"_id": h.source.key}, {"$unset": {"subscription": ""}})
    await wait_for(lambda: _stored_id(h, second), what="the subscription adopted")
    assert calls(h.fake, "POST") == posts

    # A restart (or a second replica) reads the stored one: still exactly one at the source.
    looks = calls(h.fake, "GET")
    await make_harness(webhook_url=public, ss12000_subscription_check_seconds=0.2)
    await wait_for(lambda: calls(h.fake, "GET") >= looks + 4, what="both processes looking at it")
    assert [s.id for s in h.fake.subscriptions.live()] == [second]
    assert calls(h.fake, "POST") == posts
    assert calls(h.fake, "DELETE") == 0


async def _stored_id(h: Harness, expected: str) -> bool:
    return (await stored_subscription(h) or {}).get("id") == expected


async def test_a_new_url_replaces_it_and_a_removed_source_deletes_it(make_harness: HarnessFactory) -> None:
    h = await make_harness(ss12000_subscription_check_seconds=0.2)
    await wait_for(lambda: len(h.fake.subscriptions.live()) == 1, what="a subscription")
    old = h.fake.subscriptions.live()[0]

    moved = h.source.model_copy(update={"webhook_url": "https://skolsynk.example.se/ss12000/notify/a/b"})
    await h.connector.set_sources([moved])
    await wait_for(lambda: [s.target for s in h.fake.subscriptions.live()] == [address(moved)], what="the replacement")
    assert old.id not in h.fake.subscriptions.subscriptions

    await h.connector.set_sources([moved.model_copy(update={"webhook_url": None})])  # webhook turned off
    await wait_for(lambda: not h.fake.subscriptions.live(), what="the subscription deleted")
    await wait_for(lambda: _stored_gone(h), what="the stored subscription forgotten")

    await h.connector.set_sources([h.source])
    await wait_for(lambda: len(h.fake.subscriptions.live()) == 1, what="subscribed again")
    await h.connector.set_sources([])  # removed from the registry (or disabled)
    assert h.fake.subscriptions.live() == []
    assert await stored_subscription(h) is None


async def test_the_subscription_follows_whether_the_organiser_wants_placements(make_harness: HarnessFactory) -> None:
    """Placements are read only while a subscription of the organiser asks for them; the source's subscription
    names ``Placement`` exactly then (replaced, the new one first), so a changed placement is notified when it
    is read, and children's data is not asked about when it is not."""
    h = await make_harness(ss12000_subscription_check_seconds=0.2)
    wanted = False

    async def placements_wanted(tenant_id: str) -> bool:
        return wanted

    h.connector.placements_wanted = placements_wanted
    await wait_for(lambda: len(h.fake.subscriptions.live()) == 1, what="a subscription")
    [first] = h.fake.subscriptions.live()
    assert first.resource_types == list(RESOURCE_TYPES)
    h.fake.put("placements", {"id": "0c6a8e1f-2b3d-4c5e-8f70-9a1b2c3d4e5f", "child": {"id": STUDENT_ID}})
    h.fake.put("persons", student())  # a change the subscription names, so a notice goes out
    await wait_for(lambda: any(n.status == 200 for n in h.fake.subscriptions.notices), what="a notice")
    assert all("Placement" not in n.modified for n in h.fake.subscriptions.notices)

    wanted = True  # a vendor subscription of the organiser now asks for placements
    with_placements = [*RESOURCE_TYPES, "Placement"]
    await wait_for(
        lambda: [s.resource_types for s in h.fake.subscriptions.live()] == [with_placements], what="the replacement"
    )
    [second] = h.fake.subscriptions.live()
    assert first.id not in h.fake.subscriptions.subscriptions
    assert second.target == first.target
    await wait_for(lambda: _stored_id(h, second.id), what="the replacement stored")
    assert (await stored_subscription(h) or {})["resource_types"] == with_placements
    h.fake.put("placements", {"id": "0c6a8e1f-2b3d-4c5e-8f70-9a1b2c3d4e5f", "child": {"id": STUDENT_ID}})
    await wait_for(
        lambda: any("Placement" in n.modified and n.status == 200 for n in h.fake.subscriptions.notices),
        what="a placement's notice",
    )

    wanted = False  # no longer: back to what the puller reads without placements
    await wait_for(
        lambda: [s.resource_types for s in h.fake.subscriptions.live()] == [list(RESOURCE_TYPES)],
        what="placements left",
    )
    assert second.id not in h.fake.subscriptions.subscriptions
    assert calls(h.fake, "POST") == 3


async def _stored_gone(h: Harness) -> bool:
    return await stored_subscription(h) is None


@pytest.mark.parametrize("status", [405, 501])
async def test_a_source_without_subscriptions_is_asked_once(make_harness: HarnessFactory, status: int) -> None:
    h = await make_harness(subscribe=False)  # built without a webhook URL, so nothing is asked yet
    h.fake.subscriptions.offered = False
    h.fake.subscriptions.unsupported_status = status
    source = h.source.model_copy(update={"webhook_url": "https://skolsynk.example.se/hook"})
    h.connector.sources[source.key] = source  # the keeper below is driven by hand
    for _ in range(3):
        wait = await keeper(h).maintain(source)
        assert wait is not None
        assert wait > 3600  # until the source is asked again (a day by default)
    assert calls(h.fake, "POST") == 1
    state = await h.state()
    assert state["subscriptions_not_offered"]["base_url"] == source.base_url
    assert "subscription" not in state


async def test_a_failed_run_is_posted_to_the_sources_log(make_harness: HarnessFactory) -> None:
    h = await make_harness(subscribe=False)
    h.fake.fail_page("duties", 0, 500)
    broken = "0c9b8a7d-1f44-4a8b-b2c5-6d0e9f1a2b31"
    h.fake.put("groups", {"id": broken, "organisation": "not a reference"})
    _, completed = await h.run("full")
    assert not completed.healthy
    entries = h.fake.subscriptions.log_entries
    assert [(e["messageType"], e.get("resourceType"), e.get("resourceId")) for e in entries] == [
        ("skolsynk.read_failed", "Duty", None),
        ("skolsynk.object_unmappable", "Group", broken),
    ]
    assert all(e["severityLevel"] == "Error" for e in entries)
    assert not any("Alva" in e["message"] or "Lindqvist" in e["message"] for e in entries)

    # A healthy run posts nothing.
    h.fake.clear_faults()
    h.fake.data["groups"].clear()
    _, completed = await h.run("full")
    assert completed.healthy
    assert len(entries) == 2

    # A source without /log/ is asked once, then remembered.
    h.fake.subscriptions.log_offered = False
    h.fake.fail_page("duties", 0, 500)
    await h.run("full")
    await h.run("full")
    assert calls(h.fake, "POST", "log") == 3  # two posted, one refused
    assert (await h.state())["log_not_offered"]["base_url"] == h.source.base_url
