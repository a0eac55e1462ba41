"""The fake SS 12000 API's ``/subscriptions`` and ``/log``: both spellings of ``resourceTypes``, renewal and
expiry, a lost subscription, a source that offers neither, notices on data changes; and (when the SIS
OpenAPI file is in the reference directory) its subscriptions validated against the 2.1 schema."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import jsonschema
import pytest
import yaml
from aiohttp import web

from skolsynk_testkit.fakes.ss12000_api import FakeSs12000Api
from tests.helpers import wait_for
from tests.reference import SS12000_OPENAPI, reference_file

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
async def fake() -> AsyncIterator[FakeSs12000Api]:
    api = FakeSs12000Api(auth="api_key")
    try:
        await api.start()
        yield api
    finally:
        await api.stop()


@pytest.fixture
async def http(fake: FakeSs12000Api) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(headers={"X-API-Key": fake.api_key}) as session:
        yield session


async def call(http: aiohttp.ClientSession, method: str, url: str, body: Any = None) -> tuple[int, Any]:
    async with http.request(method, url, json=body) as response:
        text = await response.text()
        return response.status, (await response.json(content_type=None)) if text else None


def subscription(target: str = "https://skolsynk.example/hook", types: Any = None) -> dict[str, Any]:
    return {"name": "skolsynk", "target": target, "resourceTypes": types or [{"resource": "Person"}]}


async def test_create_get_renew_delete(fake: FakeSs12000Api, http: aiohttp.ClientSession) -> None:
    clock = Clock()
    fake.subscriptions.clock = clock
    fake.subscriptions.lifetime_seconds = 3600
    url = f"{fake.base_url}/subscriptions"
    status, created = await call(http, "POST", url, subscription())
    assert status == 201
    assert created["resourceTypes"] == [{"resource": "Person"}]
    assert datetime.fromisoformat(created["expires"].replace("Z", "+00:00")) == clock.now + timedelta(hours=1)
    one = f"{url}/{created['id']}"
    assert await call(http, "GET", one) == (200, created)

    clock.now += timedelta(minutes=30)
    status, renewed = await call(http, "PATCH", one)  # no body: the source picks the expiry
    assert status == 200
    assert datetime.fromisoformat(renewed["expires"].replace("Z", "+00:00")) == clock.now + timedelta(hours=1)
    status, listed = await call(http, "GET", url)
    assert (status, [s["id"] for s in listed["data"]], listed["pageToken"]) == (200, [created["id"]], None)

    assert (await call(http, "DELETE", one))[0] == 204
    assert (await call(http, "GET", one))[0] == 404
    assert (await call(http, "PATCH", one))[0] == 404
    assert (await call(http, "GET", f"{url}/not-a-uuid"))[0] == 400
    assert [r.status for r in fake.requests if r.endpoint == "subscriptions"] == [
        201,
        200,
        200,
        200,
        204,
        404,
        404,
        400,
    ]


async def test_both_spellings_of_resource_types(fake: FakeSs12000Api, http: aiohttp.ClientSession) -> None:
    url = f"{fake.base_url}/subscriptions"
    # The spec's own example: plain strings, "Organsation" misspelt.
    status, created = await call(http, "POST", url, subscription(types=["Organsation", "Person", "Duty"]))
    assert status == 201
    assert created["resourceTypes"] == [{"resource": t} for t in ("Organisation", "Person", "Duty")]
    for bad in (["Pupil"], [{"resource": "Nope"}], [], "Person", [{"kind": "Person"}]):
        assert (await call(http, "POST", url, subscription(types=bad) | {"resourceTypes": bad}))[0] == 400
    assert (await call(http, "POST", url, {"name": "x", "target": "ftp://x", "resourceTypes": ["Person"]}))[0] == 400


async def test_expired_or_forgotten_subscriptions_are_gone(fake: FakeSs12000Api, http: aiohttp.ClientSession) -> None:
    url = f"{fake.base_url}/subscriptions"
    first = (await call(http, "POST", url, subscription()))[1]
    second = (await call(http, "POST", url, subscription()))[1]
    fake.subscriptions.expire(first["id"])
    assert (await call(http, "PATCH", f"{url}/{first['id']}"))[0] == 404
    fake.subscriptions.forget(second["id"])
    assert (await call(http, "GET", f"{url}/{second['id']}"))[0] == 404
    assert (await call(http, "GET", url))[1]["data"] == []


async def test_listing_is_paged(fake: FakeSs12000Api, http: aiohttp.ClientSession) -> None:
    url = f"{fake.base_url}/subscriptions"
    ids = [(await call(http, "POST", url, subscription()))[1]["id"] for _ in range(3)]
    status, page = await call(http, "GET", f"{url}?limit=2")
    assert status == 200
    assert [s["id"] for s in page["data"]] == ids[:2]
    status, rest = await call(http, "GET", f"{url}?limit=2&pageToken={page['pageToken']}")
    assert ([s["id"] for s in rest["data"]], rest["pageToken"]) == (ids[2:], None)


@pytest.mark.parametrize("status", [404, 405, 501])
async def test_a_source_that_offers_neither(fake: FakeSs12000Api, http: aiohttp.ClientSession, status: int) -> None:
    fake.subscriptions.offered = False
    fake.subscriptions.log_offered = False
    fake.subscriptions.unsupported_status = status
    assert (await call(http, "POST", f"{fake.base_url}/subscriptions", subscription()))[0] == status
    entry = {"message": "m", "severityLevel": "Error"}
    assert (await call(http, "POST", f"{fake.base_url}/log/", entry))[0] == status


async def test_a_source_that_cannot_renew(fake: FakeSs12000Api, http: aiohttp.ClientSession) -> None:
    fake.subscriptions.renew_offered = False
    fake.subscriptions.unsupported_status = 405
    status, created = await call(http, "POST", f"{fake.base_url}/subscriptions", subscription())
    assert status == 201
    assert (await call(http, "PATCH", f"{fake.base_url}/subscriptions/{created['id']}"))[0] == 405
    assert (await call(http, "GET", f"{fake.base_url}/subscriptions/{created['id']}"))[0] == 200


async def test_log_entries_are_recorded_and_checked(fake: FakeSs12000Api, http: aiohttp.ClientSession) -> None:
    good = {
        "message": "skolsynk could not read persons",
        "severityLevel": "Error",
        "messageType": "persons:http_500",
        "resourceType": "Person",
        "resourceId": str(uuid.uuid4()),
    }
    assert (await call(http, "POST", f"{fake.base_url}/log/", good))[0] == 201
    assert (await call(http, "POST", f"{fake.base_url}/log", good))[0] == 201  # both forms of the path
    for bad in ({"message": "m"}, {"message": "m", "severityLevel": "Fatal"}, good | {"resourceType": "Pupil"},
                good | {"resourceId": "19121212-1212"}, ["not", "an", "object"]):  # fmt: skip
        assert (await call(http, "POST", f"{fake.base_url}/log/", bad))[0] == 400
    assert fake.subscriptions.log_entries == [good, good]
    # Without credentials nothing is recorded.
    async with aiohttp.ClientSession() as anonymous:
        assert (await call(anonymous, "POST", f"{fake.base_url}/log/", good))[0] == 401
    assert len(fake.subscriptions.log_entries) == 2


async def test_data_changes_notify_the_subscribed_webhook(fake: FakeSs12000Api, http: aiohttp.ClientSession) -> None:
    received: list[tuple[dict[str, Any], str | None]] = []

    async def hook(request: web.Request) -> web.Response:
        received.append((await request.json(), request.headers.get("X-Skolsynk-Webhook-Secret")))
        return web.json_response({"status": "accepted"})

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        target = f"http://127.0.0.1:{port}/hook"
        fake.subscriptions.notify_headers = {"X-Skolsynk-Webhook-Secret": "s3cret"}
        persons = (await call(http, "POST", f"{fake.base_url}/subscriptions", subscription(target)))[1]
        groups = subscription(target, [{"resource": "Group"}])
        await call(http, "POST", f"{fake.base_url}/subscriptions", groups)

        fake.put("persons", {"id": str(uuid.uuid4())})
        fake.put("persons", {"id": str(uuid.uuid4())})  # within the batch: one notice
        await wait_for(lambda: len(received) == 1, what="a notice")
        assert received == [({"modifiedEntites": ["Person"], "deletedEntities": False}, "s3cret")]
        assert [(n.subscription_id, n.status) for n in fake.subscriptions.notices] == [(persons["id"], 200)]

        fake.delete("persons", "gone")  # a deletion concerns every subscription
        await wait_for(lambda: len(received) == 3, what="deletion notices")
        assert {r[0]["deletedEntities"] for r in received[1:]} == {True}

        # Expired: quiet.
        fake.subscriptions.expire()
        fake.subscriptions.notice_key = "modifiedEntities"
        fake.put("persons", {"id": str(uuid.uuid4())})
        await fake.subscriptions.notify(["Person"])
        assert len(received) == 3
    finally:
        await runner.cleanup()


def _nullable(node: Any) -> Any:
    """OpenAPI 3.0 ``nullable: true`` as JSON Schema (type + null); examples dropped."""
    if isinstance(node, dict):
        node = {k: _nullable(v) for k, v in node.items() if k != "example"}
        if node.pop("nullable", False) and isinstance(node.get("type"), str):
            node["type"] = [node["type"], "null"]
        return node
    if isinstance(node, list):
        return [_nullable(v) for v in node]
    return node


async def test_answers_follow_the_2_1_schema(fake: FakeSs12000Api, http: aiohttp.ClientSession) -> None:
    spec = yaml.safe_load(reference_file(SS12000_OPENAPI).read_text(encoding="utf-8"))
    schemas = _nullable(json.loads(json.dumps(spec["components"]["schemas"], default=str)))

    def check(instance: Any, name: str) -> None:
        schema = {"$ref": f"#/components/schemas/{name}", "components": {"schemas": schemas}}
        jsonschema.Draft7Validator(schema, format_checker=jsonschema.FormatChecker()).validate(instance)

    url = f"{fake.base_url}/subscriptions"
    status, created = await call(http, "POST", url, subscription(types=["Person", "Organsation"]))
    assert status == 201
    check(created, "Subscription")
    check((await call(http, "PATCH", f"{url}/{created['id']}"))[1], "Subscription")
    check((await call(http, "GET", url))[1], "Subscriptions")
    entry = {"message": "m", "severityLevel": "Error", "resourceType": "Person", "resourceId": str(uuid.uuid4())}
    check(entry, "LogEntry")  # what the fake accepts is what the schema allows
