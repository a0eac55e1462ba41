"""MongoDB access with PyMongo's async API (``AsyncMongoClient``, the successor of Motor).

One client per process, created inside the running event loop at start-up and closed at shutdown.
Production points ``MONGODB_URL`` at a replica set (transactions, retryable writes and the outbox need
one); the demo, the tests and CI use the embedded SecantusDB wire server.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pymongo import AsyncMongoClient, IndexModel
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import OperationFailure, PyMongoError

from skolsynk.logging import get_logger
from skolsynk.settings import StoreSettings

log = get_logger(__name__)

Document = dict[str, Any]
MongoClient = AsyncMongoClient[Document]
Database = AsyncDatabase[Document]
Collection = AsyncCollection[Document]
Session = AsyncClientSession
T = TypeVar("T")


def create_client(settings: StoreSettings, *, app_name: str) -> MongoClient:
    """A client with explicit timeouts. Creating it does no I/O; :func:`ping` does."""
    client: MongoClient = AsyncMongoClient(
        settings.mongodb_url.get_secret_value(),
        appname=app_name,
        serverSelectionTimeoutMS=settings.server_selection_timeout_ms,
        tz_aware=True,
        retryWrites=True,
    )
    return client


async def ping(client: MongoClient) -> bool:
    """Readiness check: the server answers."""
    try:
        await client.admin.command("ping")
    except PyMongoError:
        return False
    return True


@dataclass(frozen=True)
class IndexSpec:
    """An index a component needs, declared next to the code that queries it."""

    collection: str
    keys: Sequence[tuple[str, int]]
    name: str
    unique: bool = False
    expire_after_seconds: int | None = None
    partial_filter: Mapping[str, Any] | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def model(self) -> IndexModel:
        options: dict[str, Any] = {"name": self.name, "unique": self.unique, **self.extra}
        if self.expire_after_seconds is not None:
            options["expireAfterSeconds"] = self.expire_after_seconds
        if self.partial_filter is not None:
            options["partialFilterExpression"] = dict(self.partial_filter)
        return IndexModel(list(self.keys), **options)


async def ensure_indexes(db: Database, specs: Iterable[IndexSpec]) -> None:
    """Create the indexes every component declared. Idempotent; a changed TTL is applied with
    ``collMod`` instead of failing start-up."""
    by_collection: dict[str, list[IndexSpec]] = {}
    for spec in specs:
        by_collection.setdefault(spec.collection, []).append(spec)
    for collection_name, collection_specs in by_collection.items():
        collection = db[collection_name]
        try:
            await collection.create_indexes([s.model() for s in collection_specs])
        except OperationFailure as error:
            if error.code not in (85, 86):  # IndexOptionsConflict, IndexKeySpecsConflict
                raise
            await _update_ttl_indexes(db, collection_name, collection_specs)
    log.info("indexes_ensured", collections=sorted(by_collection))


async def _update_ttl_indexes(db: Database, collection_name: str, specs: Sequence[IndexSpec]) -> None:
    for spec in specs:
        if spec.expire_after_seconds is None:
            continue
        await db.command(
            "collMod",
            collection_name,
            index={"keyPattern": dict(spec.keys), "expireAfterSeconds": spec.expire_after_seconds},
        )


async def in_transaction(client: MongoClient, work: Callable[[Session], Awaitable[T]]) -> T:
    """Run ``work`` in a transaction; transient errors and unknown commit results are retried by the
    driver (``with_transaction``), so ``work`` must be safe to run again from the start."""
    async with client.start_session() as session:
        return await session.with_transaction(work)


class Repository:
    """Thin base for a collection owned by one component: its name, its indexes and a few helpers
    that keep the rest of the code free of driver details."""

    collection_name: str = ""
    indexes: tuple[IndexSpec, ...] = ()

    def __init__(self, db: Database) -> None:
        if not self.collection_name:
            raise TypeError(f"{type(self).__name__} must set collection_name")
        self.db = db
        self.collection: Collection = db[self.collection_name]

    async def get(self, document_id: Any, *, session: Session | None = None) -> Document | None:
        return await self.collection.find_one({"_id": document_id}, session=session)

    async def upsert(self, document_id: Any, fields: Mapping[str, Any], *, session: Session | None = None) -> None:
        await self.collection.update_one({"_id": document_id}, {"$set": dict(fields)}, upsert=True, session=session)

    async def count(self, query: Mapping[str, Any] | None = None, *, session: Session | None = None) -> int:
        return await self.collection.count_documents(dict(query or {}), session=session)


def indexes_of(*repositories: type[Repository]) -> list[IndexSpec]:
    return [spec for repo in repositories for spec in repo.indexes]
