"""Storage helpers against the Mongo wire server: indexes, TTL changes, transactions, repositories, and the
counting of store work (commands, documents read and written) every service's client carries."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry
from pymongo.errors import DuplicateKeyError, OperationFailure

from skolsynk.observability import Metrics
from skolsynk.settings import ServiceSettings
from skolsynk.storage import (
    IndexSpec,
    Repository,
    RetiredIndex,
    create_client,
    ensure_indexes,
    in_transaction,
    ping,
)
from skolsynk.storage.mongo import StoreWorkCounter

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


async def test_a_retired_index_is_dropped_where_it_is_and_its_absence_is_no_error(store):
    """An index an earlier version made (the findings' partial index of the other party) goes at start-up;
    a store that never had it, or a collection that does not exist yet, starts all the same."""
    _, db = store
    old = IndexSpec(
        "findings_test",
        [("tenant_id", 1), ("other_entity_id", 1)],
        name="by_other_party",
        partial_filter={"other_entity_id": {"$type": "string"}},
    )
    new = IndexSpec("findings_test", [("other_entity_id", 1)], name="by_other_party_id")
    await ensure_indexes(db, [old])
    retired = [RetiredIndex("findings_test", "by_other_party"), RetiredIndex("never_made", "by_anything")]
    await ensure_indexes(db, [new], retired)
    assert set(await db["findings_test"].index_information()) == {"_id_", "by_other_party_id"}
    await ensure_indexes(db, [new], retired)  # again: nothing left to drop
    assert set(await db["findings_test"].index_information()) == {"_id_", "by_other_party_id"}


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


# --- counting store work (the command listener every service's client carries) ---------------------


@pytest.fixture
async def counted(settings: ServiceSettings):
    metrics = Metrics()
    counter = StoreWorkCounter(
        metrics.store_commands,
        metrics.store_documents_read,
        metrics.store_documents_written,
        metrics.store_command_seconds,
    )
    client = create_client(settings.store, app_name="storage-count-test", listeners=[counter])
    try:
        yield client, client[settings.store.mongodb_database], metrics.registry
    finally:
        await client.drop_database(settings.store.mongodb_database)
        await client.close()


def _sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


def _commands(registry: CollectorRegistry) -> dict[tuple[str, str], float]:
    return {
        (s.labels["command"], s.labels["collection"]): s.value
        for family in registry.collect()
        if family.name == "skolsynk_store_commands"
        for s in family.samples
        if s.name == "skolsynk_store_commands_total"
    }


async def test_store_work_is_counted_by_command_and_documents(counted):
    client, db, registry = counted
    assert await ping(client)  # the driver's own commands are not store work
    assert _commands(registry) == {}

    await db["units"].insert_many([{"_id": n, "year": n % 2} for n in range(5)])
    assert _commands(registry) == {("insert", "units"): 1}
    assert _sample(registry, "skolsynk_store_documents_written_total", collection="units") == 5

    found = await db["units"].find({}, batch_size=2).to_list(None)
    assert len(found) == 5
    commands = _commands(registry)
    assert commands[("find", "units")] == 1
    assert commands[("getMore", "units")] == 2  # batches of 2, 2 and 1
    assert _sample(registry, "skolsynk_store_documents_read_total", collection="units") == 5

    await db["units"].update_many({"year": 1}, {"$set": {"odd": True}})  # matches 1 and 3
    await db["units"].update_one({"_id": 99}, {"$set": {"year": 9}}, upsert=True)
    await db["units"].update_one({"_id": 100}, {"$set": {"year": 9}})  # matches nothing
    assert _sample(registry, "skolsynk_store_documents_written_total", collection="units") == 5 + 2 + 1
    assert _commands(registry)[("update", "units")] == 3

    before = await db["units"].find_one_and_update({"_id": 0}, {"$set": {"claimed": True}})
    assert before is not None
    assert await db["units"].find_one_and_update({"_id": 42}, {"$set": {"claimed": True}}) is None
    assert _commands(registry)[("findAndModify", "units")] == 2
    assert _sample(registry, "skolsynk_store_documents_read_total", collection="units") == 5 + 1
    assert _sample(registry, "skolsynk_store_documents_written_total", collection="units") == 8 + 1

    await db["units"].delete_many({"year": 0})  # 0, 2, 4
    assert _sample(registry, "skolsynk_store_documents_written_total", collection="units") == 9 + 3

    async def two_writes(session):  # type: ignore[no-untyped-def]
        await db["state"].insert_one({"_id": 1}, session=session)
        await db["outbox_like"].insert_one({"_id": 1}, session=session)

    await in_transaction(client, two_writes)
    commands = _commands(registry)
    assert commands[("insert", "state")] == 1
    assert commands[("insert", "outbox_like")] == 1
    assert commands[("commitTransaction", "-")] == 1

    read_before = _sample(registry, "skolsynk_store_documents_read_total", collection="units")
    assert await db["units"].count_documents({}) == 3
    assert _commands(registry)[("aggregate", "units")] == 1
    assert _sample(registry, "skolsynk_store_documents_read_total", collection="units") == read_before + 1
    assert not any(name.lower() in {"hello", "ismaster", "ping"} for name, _ in _commands(registry))


async def test_each_store_commands_time_is_observed_by_command_and_collection(counted):
    client, db, registry = counted
    await ping(client)
    await db["units"].insert_one({"_id": 1})
    await db["units"].find_one({"_id": 1})
    with pytest.raises(OperationFailure):  # a failed command is timed too
        await db.command("noSuchCommand", 1)

    def observed(command: str, collection: str) -> tuple[float, float]:
        labels = {"command": command, "collection": collection}
        count = registry.get_sample_value("skolsynk_store_command_seconds_count", labels) or 0.0
        seconds = registry.get_sample_value("skolsynk_store_command_seconds_sum", labels) or 0.0
        return count, seconds

    assert observed("insert", "units")[0] == 1
    count, seconds = observed("find", "units")
    assert count == 1
    assert 0 < seconds < 10
    assert observed("noSuchCommand", "-")[0] == 1  # the failed one (it names no collection)
    assert observed("ping", "-") == (0, 0)  # the driver's own commands are neither counted nor timed
