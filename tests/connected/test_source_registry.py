"""The source registry (``admin_sources``), against the Mongo wire server: every save is a new version,
a connector of one kind reads the versions of its kind's sources alone, and secrets are stored sealed
and opened only with the installation's key."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from cryptography.fernet import Fernet
from pymongo import AsyncMongoClient

from skolsynk.settings import ServiceSettings
from skolsynk.storage import ensure_indexes
from skolsynk.storage.sources import ADMIN_SOURCES, INDEXES, SecretBox, SecretsUnavailable, SourceStore

pytestmark = pytest.mark.connected

KEY = Fernet.generate_key().decode()


@pytest.fixture
async def registry(mongo_url: str, settings: ServiceSettings) -> AsyncIterator[SourceStore]:
    client: Any = AsyncMongoClient(mongo_url, tz_aware=True)
    db = client[settings.store.mongodb_database]
    try:
        await ensure_indexes(db, INDEXES)
        yield SourceStore(db, SecretBox(KEY))
    finally:
        await client.drop_database(settings.store.mongodb_database)
        await client.close()


async def save(registry: SourceStore, tenant: str, source: str, kind: str, *, create: bool, **settings: Any) -> Any:
    return await registry.save(
        tenant,
        source,
        kind=kind,
        display_name=source,
        settings=settings,
        secrets={"client_secret": f"secret-of-{source}"} if create else {},
        secret_refs={},
        create=create,
    )


async def test_every_save_is_a_new_version_and_a_kind_sees_only_its_own_sources(registry: SourceStore) -> None:
    await save(registry, "kommun-a", "ss-a", "ss12000", create=True, base_url="https://a.example/v2")
    await save(registry, "kommun-b", "ss-b", "ss12000", create=True, base_url="https://b.example/v2")
    await save(registry, "kommun-a", "google-a", "google", create=True, domain="a.example")
    assert await registry.versions("ss12000") == {"kommun-a:ss-a": 1, "kommun-b:ss-b": 1}

    edited = await save(registry, "kommun-a", "ss-a", "ss12000", create=False, base_url="https://a2.example/v2")
    assert edited is not None
    assert await registry.versions("ss12000") == {"kommun-a:ss-a": 2, "kommun-b:ss-b": 1}
    (first, second) = await registry.of_kind("ss12000")
    assert (first["settings"]["base_url"], first["version"]) == ("https://a2.example/v2", 2)
    assert registry.secrets_of(first) == {"client_secret": "secret-of-ss-a"}, "an edit without secrets keeps them"
    assert second["_id"] == "kommun-b:ss-b"

    assert await registry.delete("kommun-b", "ss-b")
    assert await registry.versions("ss12000") == {"kommun-a:ss-a": 2}


async def test_secrets_are_sealed_at_rest_and_need_the_installation_s_key(registry: SourceStore) -> None:
    await save(registry, "kommun-a", "ss-a", "ss12000", create=True)
    raw = await registry.collection.database[ADMIN_SOURCES].find_one({"_id": "kommun-a:ss-a"})
    assert raw is not None
    assert "secret-of-ss-a" not in str(raw)
    assert raw["secret_names"] == ["client_secret"]
    with pytest.raises(SecretsUnavailable, match="cannot be decrypted"):
        SourceStore(registry.collection.database, SecretBox(Fernet.generate_key().decode())).secrets_of(raw)
    with pytest.raises(SecretsUnavailable, match="no secrets key"):
        SourceStore(registry.collection.database, SecretBox(None)).secrets_of(raw)
