"""Every EGIL client is a source of its own: two clients of one organiser never see, change or delete
each other's objects, and resources stored before sources were separated move to their source at start."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from pymongo import AsyncMongoClient

from skolsynk.messaging.outbox import Outbox
from skolsynk.settings import ServiceSettings
from skolsynk.storage import Database, ensure_indexes
from skolsynk_services.egil_receiver.app import build_scim_app
from skolsynk_services.egil_receiver.clients import ClientRegistry, EgilClient, hash_key
from skolsynk_services.egil_receiver.store import INDEXES, RESOURCES, ReceiverStore

pytestmark = [pytest.mark.connected, pytest.mark.timeout(120)]

TENANT = "gronkoping"
KEYS = {"egil-north": "egil-north-key-0123456789", "egil-south": "egil-south-key-0123456789"}
PUPIL = "0b5c9a1e-2d3f-4a5b-8c7d-6e5f4a3b2c1d"
CIVIC_NO = "201001012389"


@dataclass
class TwoClients:
    server: TestServer
    store: ReceiverStore
    db: Database
    sessions: dict[str, aiohttp.ClientSession]

    async def request(self, source: str, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        async with self.sessions[source].request(method, str(self.server.make_url(path)), json=body) as response:
            text = await response.text()
            return response.status, text


@pytest.fixture
async def clients(mongo_url: str, settings: ServiceSettings) -> AsyncIterator[TwoClients]:
    client: Any = AsyncMongoClient(mongo_url, tz_aware=True)
    db = client[settings.store.mongodb_database]
    store = ReceiverStore(client, db, Outbox(db), exchange="source", producer="egil-receiver")
    registry = ClientRegistry(
        [EgilClient(tenant_id=TENANT, source_id=source, api_key_sha256=hash_key(key)) for source, key in KEYS.items()]
    )
    server = TestServer(build_scim_app(store, registry))
    sessions: dict[str, aiohttp.ClientSession] = {}
    try:
        await ensure_indexes(db, INDEXES)
        await server.start_server()
        for source, key in KEYS.items():
            sessions[source] = aiohttp.ClientSession(headers={"X-API-Key": key})
        yield TwoClients(server, store, db, sessions)
    finally:
        for session in sessions.values():
            await session.close()
        await server.close()
        await client.drop_database(settings.store.mongodb_database)
        await client.close()


def pupil(given_name: str) -> dict[str, Any]:
    return {
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User", "urn:scim:schemas:extension:sis:school:1.0:User"],
        "externalId": PUPIL,
        "userName": f"{given_name.lower()}@gronkoping.se",
        "name": {"familyName": "Testsson", "givenName": given_name},
        "urn:scim:schemas:extension:sis:school:1.0:User": {"civicNo": CIVIC_NO},
    }


async def test_a_client_neither_sees_nor_changes_nor_deletes_another_source_s_objects(clients: TwoClients) -> None:
    assert (await clients.request("egil-north", "POST", "/Users", pupil("Norr")))[0] == 201

    status, listing = await clients.request("egil-south", "GET", "/Users")
    assert status == 200
    assert '"totalResults": 0' in listing.replace('"totalResults":0', '"totalResults": 0')
    assert CIVIC_NO not in listing
    assert (await clients.request("egil-south", "GET", f"/Users/{PUPIL}"))[0] == 404
    assert (await clients.request("egil-south", "PUT", f"/Users/{PUPIL}", pupil("Syd")))[0] == 404
    assert (await clients.request("egil-south", "DELETE", f"/Users/{PUPIL}"))[0] == 404

    status, body = await clients.request("egil-north", "GET", f"/Users/{PUPIL}")
    assert status == 200
    assert '"Norr"' in body

    # The same externalId from the other client is that source's own resource, not a conflict.
    assert (await clients.request("egil-south", "POST", "/Users", pupil("Syd")))[0] == 201
    assert (await clients.request("egil-north", "DELETE", f"/Users/{PUPIL}"))[0] == 204
    status, body = await clients.request("egil-south", "GET", f"/Users/{PUPIL}")
    assert status == 200
    assert '"Syd"' in body
    held = {d["source_id"]: d["deleted"] async for d in clients.db[RESOURCES].find({"resource_id": PUPIL})}
    assert held == {"egil-north": True, "egil-south": False}


async def test_resources_stored_before_sources_were_separated_move_to_their_source_once(clients: TwoClients) -> None:
    body = pupil("Gammal")
    old = {
        "_id": f"{TENANT}:Users:{PUPIL}",
        "tenant_id": TENANT,
        "source_id": "egil-north",
        "type": "Users",
        "resource_id": PUPIL,
        "body": body,
        "record": {},
        "deleted": False,
        "pending": False,
    }
    await clients.db[RESOURCES].insert_one(old)
    assert await clients.store.migrate_to_source_ids() == 1
    status, text = await clients.request("egil-north", "GET", f"/Users/{PUPIL}")
    assert status == 200
    assert '"Gammal"' in text
    assert (await clients.request("egil-south", "GET", f"/Users/{PUPIL}"))[0] == 404
    assert await clients.db[RESOURCES].count_documents({}) == 1
    assert await clients.store.migrate_to_source_ids() == 0, "nothing of the old form is left"


async def test_resources_stored_with_upper_case_ids_are_found_by_their_canonical_id(clients: TwoClients) -> None:
    """Issue 19: ids are lower-case UUIDs everywhere now; what was stored before under an upper-case
    externalId moves to its lower-case id at start (a twin in both cases becomes one resource)."""
    upper, twin = PUPIL.upper(), str(uuid.uuid4())
    stored = []
    for resource_id, name in ((upper, "Gammal"), (twin.upper(), "Versal"), (twin, "Gemen")):
        body = {**pupil(name), "externalId": resource_id}
        stored.append({"_id": f"{TENANT}:egil-north:Users:{resource_id}", "tenant_id": TENANT,
                       "source_id": "egil-north", "type": "Users", "resource_id": resource_id, "body": body,
                       "record": {}, "deleted": False, "pending": False})  # fmt: skip
    await clients.db[RESOURCES].insert_many(stored)
    assert (await clients.request("egil-north", "GET", f"/Users/{PUPIL}"))[0] == 404  # before: not found
    assert await clients.store.migrate_to_lower_case_ids() == 2
    status, text = await clients.request("egil-north", "GET", f"/Users/{upper}")
    assert status == 200
    assert '"Gammal"' in text
    assert PUPIL in text  # the stored body carries the canonical id too
    status, text = await clients.request("egil-north", "GET", f"/Users/{twin}")
    assert (status, '"Gemen"' in text) == (200, True)
    assert await clients.db[RESOURCES].count_documents({}) == 2
    assert await clients.store.migrate_to_lower_case_ids() == 0
