"""The fake SS 12000 2.1 source API: paging, change filters, deletions, authentication and faults. Its
answers against the 2.1 OpenAPI: ``test_fake_ss12000_schema.py``."""

from __future__ import annotations

import base64
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest

from skolsynk_testkit.fakes.ss12000_api import FakeSs12000Api

pytestmark = pytest.mark.unit

T0 = datetime(2025, 9, 1, 8, 0, tzinfo=UTC)


def person(n: int, *, modified: datetime = T0) -> dict[str, Any]:
    return {
        "id": str(uuid.UUID(int=n)),
        "meta": {"created": T0.isoformat(), "modified": modified.isoformat()},
        "givenName": f"Elev{n}",
        "familyName": "Testsson",
    }


@pytest.fixture
async def fake() -> AsyncIterator[FakeSs12000Api]:
    api = FakeSs12000Api(auth="none")
    try:
        await api.start()
        yield api
    finally:
        await api.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def get(
    http: aiohttp.ClientSession, url: str, params: Any = None, headers: dict[str, str] | None = None
) -> tuple[int, Any, aiohttp.typedefs.LooseHeaders]:
    async with http.get(url, params=params, headers=headers) as response:
        return response.status, await response.json(content_type=None), response.headers


async def test_paging_with_limit_and_opaque_tokens(fake: FakeSs12000Api, http: aiohttp.ClientSession) -> None:
    fake.put_many("persons", [person(n) for n in range(1, 8)])
    seen: list[str] = []
    status, body, _ = await get(http, f"{fake.base_url}/persons", {"limit": "3"})
    pages = 1
    while True:
        assert status == 200
        assert len(body["data"]) <= 3
        seen += [p["id"] for p in body["data"]]
        if body["pageToken"] is None:
            break
        status, body, _ = await get(http, f"{fake.base_url}/persons", {"pageToken": body["pageToken"], "limit": "3"})
        pages += 1
    assert pages == 3
    assert seen == [str(uuid.UUID(int=n)) for n in range(1, 8)]
    assert [r.page for r in fake.requests] == [0, 1, 2]
    # Without a limit: everything on one page.
    status, body, _ = await get(http, f"{fake.base_url}/persons")
    assert len(body["data"]) == 7
    assert body["pageToken"] is None


async def test_page_token_with_a_filter_is_a_400(fake: FakeSs12000Api, http: aiohttp.ClientSession) -> None:
    fake.put_many("persons", [person(n) for n in range(1, 4)])
    _, body, _ = await get(http, f"{fake.base_url}/persons", {"limit": "1"})
    token = body["pageToken"]
    status, error, _ = await get(
        http, f"{fake.base_url}/persons", {"pageToken": token, "meta.modified.after": T0.isoformat()}
    )
    assert status == 400
    assert set(error) == {"code", "message"}
    status, _, _ = await get(http, f"{fake.base_url}/persons", {"pageToken": "not-a-token"})
    assert status == 400
    status, _, _ = await get(http, f"{fake.base_url}/persons", {"limit": "0"})
    assert status == 400


async def test_modified_after_is_exclusive_and_before_inclusive(
    fake: FakeSs12000Api, http: aiohttp.ClientSession
) -> None:
    for n in range(1, 4):
        fake.put("persons", person(n), modified=T0 + timedelta(minutes=n))
    after = (T0 + timedelta(minutes=1)).isoformat()
    _, body, _ = await get(http, f"{fake.base_url}/persons", {"meta.modified.after": after})
    assert [p["id"] for p in body["data"]] == [str(uuid.UUID(int=2)), str(uuid.UUID(int=3))]
    before = (T0 + timedelta(minutes=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    _, body, _ = await get(http, f"{fake.base_url}/persons", {"meta.modified.before": before})
    assert len(body["data"]) == 2
    status, _, _ = await get(http, f"{fake.base_url}/persons", {"meta.modified.after": "yesterday"})
    assert status == 400


@pytest.mark.parametrize("key", ["activitites", "activities"])
async def test_deleted_entities_after_with_either_spelling(key: str, http: aiohttp.ClientSession) -> None:
    fake = FakeSs12000Api(auth="none", deleted_activities_key=key)  # type: ignore[arg-type]
    try:
        await fake.start()
        fake.put("persons", person(1))
        fake.delete("persons", str(uuid.UUID(int=1)), at=T0 + timedelta(minutes=1))
        fake.delete("activities", "a-1", at=T0 + timedelta(minutes=2))
        fake.delete("groups", "g-old", at=T0 - timedelta(days=1))
        assert fake.data["persons"] == {}
        _, body, _ = await get(http, f"{fake.base_url}/deletedEntities", {"after": T0.isoformat()})
        assert body["pageToken"] is None
        assert body["data"]["persons"] == [str(uuid.UUID(int=1))]
        assert body["data"][key] == ["a-1"]
        assert body["data"]["groups"] == []
        other = "activities" if key == "activitites" else "activitites"
        assert other not in body["data"]
        _, body, _ = await get(http, f"{fake.base_url}/deletedEntities", [("after", T0.isoformat()), ("limit", "1")])
        assert body["pageToken"] is not None
        _, body, _ = await get(
            http, f"{fake.base_url}/deletedEntities", [("after", T0.isoformat()), ("entities", "Activity")]
        )
        assert body["data"]["persons"] == []
        assert body["data"][key] == ["a-1"]
    finally:
        await fake.stop()


async def test_oauth2_client_credentials_and_expiry(http: aiohttp.ClientSession) -> None:
    now = [1000.0]
    fake = FakeSs12000Api(
        auth="oauth2", client_id="cid", client_secret="sec", token_ttl_seconds=60, clock=lambda: now[0]
    )
    try:
        await fake.start()
        fake.put("persons", person(1))
        status, _, headers = await get(http, f"{fake.base_url}/persons")
        assert status == 401
        assert "WWW-Authenticate" in headers
        form = {"grant_type": "client_credentials", "client_id": "cid", "client_secret": "sec"}
        async with http.post(fake.token_url, data=form) as response:
            assert response.status == 200
            token = await response.json()
        assert token["token_type"] == "Bearer"
        assert token["expires_in"] == 60
        bearer = {"Authorization": f"Bearer {token['access_token']}"}
        status, body, _ = await get(http, f"{fake.base_url}/persons", headers=bearer)
        assert status == 200
        assert len(body["data"]) == 1
        now[0] += 61
        status, _, _ = await get(http, f"{fake.base_url}/persons", headers=bearer)
        assert status == 401
        # HTTP Basic is accepted too; wrong credentials and grants are refused.
        basic = {"Authorization": "Basic " + base64.b64encode(b"cid:sec").decode()}
        async with http.post(fake.token_url, data={"grant_type": "client_credentials"}, headers=basic) as response:
            assert response.status == 200
            bearer = {"Authorization": f"Bearer {(await response.json())['access_token']}"}
        assert (await get(http, f"{fake.base_url}/persons", headers=bearer))[0] == 200
        fake.expire_tokens()
        assert (await get(http, f"{fake.base_url}/persons", headers=bearer))[0] == 401
        async with http.post(fake.token_url, data={**form, "client_secret": "wrong"}) as response:
            assert response.status == 401
        async with http.post(fake.token_url, data={**form, "grant_type": "password"}) as response:
            assert response.status == 400
        assert fake.tokens_issued == 2
    finally:
        await fake.stop()


async def test_api_key(http: aiohttp.ClientSession) -> None:
    fake = FakeSs12000Api(auth="api_key", api_key="k1", api_key_header="X-Key")
    try:
        await fake.start()
        assert (await get(http, f"{fake.base_url}/groups"))[0] == 401
        assert (await get(http, f"{fake.base_url}/groups", headers={"X-Key": "nope"}))[0] == 403
        assert (await get(http, f"{fake.base_url}/groups", headers={"X-Key": "k1"}))[0] == 200
    finally:
        await fake.stop()


async def test_faults(fake: FakeSs12000Api, http: aiohttp.ClientSession) -> None:
    fake.put_many("duties", [{"id": f"d{n}"} for n in range(4)])
    fake.throttle(2, retry_after=7)
    for _ in range(2):
        status, _, headers = await get(http, f"{fake.base_url}/duties")
        assert status == 429
        assert headers["Retry-After"] == "7"
    fake.fail_next(1, status=502)
    assert (await get(http, f"{fake.base_url}/duties"))[0] == 502
    assert (await get(http, f"{fake.base_url}/duties"))[0] == 200
    fake.fail_page("duties", 1, status=500)
    status, body, _ = await get(http, f"{fake.base_url}/duties", {"limit": "2"})
    assert status == 200
    for _ in range(3):  # permanently
        status, _, _ = await get(http, f"{fake.base_url}/duties", {"limit": "2", "pageToken": body["pageToken"]})
        assert status == 500
    assert fake.requests[-1].page == 1
    assert fake.requests[-1].endpoint == "duties"
    fake.clear_faults()
    assert (await get(http, f"{fake.base_url}/duties", {"limit": "2", "pageToken": body["pageToken"]}))[0] == 200
