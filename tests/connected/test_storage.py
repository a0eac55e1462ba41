"""Storage helpers against the Mongo wire server: indexes, TTL changes, transactions, repositories."""

from __future__ import annotations

import pytest
from pymongo.errors import DuplicateKeyError

from skolsynk.settings import ServiceSettings
from skolsynk.storage import IndexSpec, Repository, create_client, ensure_indexes, in_transaction, ping

pytestmark = pytest.mark.connected


class SchoolUnitNames(Repository):
    collection_name = "school_unit_names"
    indexes = (IndexSpec("school_unit_names", [("code", 1)], name="code_unique", unique=True),)


@pytest.fixture
async def store(settings: ServiceSettings):
    client = create_client(settings.store, app_name="storage-test")
    try:
        yield client, client[settings.store.mongodb_database]
    finally:
        await client.drop_database(settings.store.mongodb_database)
        await client.close()


async def test_ensure_indexes_is_idempotent_and_enforces_uniqueness(store):
    client, db = store
    assert await ping(client)
    await ensure_indexes(db, SchoolUnitNames.indexes)
    await ensure_indexes(db, SchoolUnitNames.indexes)
    repo = SchoolUnitNames(db)
    await repo.upsert("a", {"code": "12345678"})
    with pytest.raises(DuplicateKeyError):
        await db["school_unit_names"].insert_one({"_id": "b", "code": "12345678"})
    assert await repo.count() == 1
    assert (await repo.get("a"))["code"] == "12345678"


async def test_changed_ttl_is_applied_instead_of_failing_start_up(store):
    _, db = store
    first = IndexSpec("inbox_ttl_test", [("processed_at", 1)], name="processed_at_ttl", expire_after_seconds=3600)
    await ensure_indexes(db, [first])
    changed = IndexSpec("inbox_ttl_test", [("processed_at", 1)], name="processed_at_ttl", expire_after_seconds=60)
    await ensure_indexes(db, [changed])
    info = await db["inbox_ttl_test"].index_information()
    assert info["processed_at_ttl"]["expireAfterSeconds"] == 60


async def test_transaction_commits_all_or_nothing(store):
    client, db = store

    async def both(session):  # type: ignore[no-untyped-def]
        await db["state"].insert_one({"_id": 1}, session=session)
        await db["outbox_like"].insert_one({"_id": 1}, session=session)

    await in_transaction(client, both)

    async def fails_halfway(session):  # type: ignore[no-untyped-def]
        await db["state"].insert_one({"_id": 2}, session=session)
        raise RuntimeError("crash before the second write")

    with pytest.raises(RuntimeError):
        await in_transaction(client, fails_halfway)
    assert await db["state"].count_documents({}) == 1
    assert await db["outbox_like"].count_documents({}) == 1
