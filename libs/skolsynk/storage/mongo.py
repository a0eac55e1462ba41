"""MongoDB access with PyMongo's async API (``AsyncMongoClient``, the successor of Motor).

One client per process, created inside the running event loop at start-up and closed at shutdown.
Production points ``MONGODB_URL`` at a replica set (transactions, retryable writes and the outbox need
one); the demo, the tests and CI use the embedded SecantusDB wire server.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from prometheus_client import Counter, Histogram
from pymongo import AsyncMongoClient, IndexModel, monitoring
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


#: Commands the driver sends on its own (handshakes, readiness pings, authentication, session clean-up):
#: not the service's store work. Compared in lower case.
DRIVER_COMMANDS = frozenset(
    {"hello", "ismaster", "ping", "buildinfo", "saslstart", "saslcontinue", "authenticate", "getnonce", "endsessions"}
)

#: Values per ``$in`` list. A long ``$in`` costs the Mongo wire server far more than its length (1,300
#: ids in one query took 1.1 s, in parts of 100 0.13 s); MongoDB does not mind either way.
IN_PART_SIZE = 100

#: MongoDB's error code of a duplicate key.
DUPLICATE_KEY = 11000

#: The ``collection`` label of a command that names none (``commitTransaction``, ``abortTransaction``).
NO_COLLECTION = "-"

#: Write commands whose reply's ``n`` counts the documents written, and the array each sends.
_WRITE_ARRAYS = {"insert": "documents", "update": "updates", "delete": "deletes"}


class StoreWorkCounter(monitoring.CommandListener):
    """Counts the store work of one client (a PyMongo command listener, so every command is seen,
    whichever repository sent it): commands by name and collection (each is one round trip), the
    documents MongoDB returned (``firstBatch``/``nextBatch`` of a cursor, the ``value`` of a
    ``findAndModify``) and the documents written (the ``n`` of an insert, update or delete reply, or of
    a ``findAndModify``'s ``lastErrorObject``; the size of the array sent when a reply has none).

    With ``durations``, each command's time from being sent to its reply (or failure) is observed too
    (the driver's ``duration_micros``): where a service waits on the store, and when the store stalled.

    Labels are command names and collection names only: never a tenant or anything a document holds.
    The driver's own commands (:data:`DRIVER_COMMANDS`) are not counted."""

    def __init__(
        self,
        commands: Counter,
        documents_read: Counter,
        documents_written: Counter,
        durations: Histogram | None = None,
    ) -> None:
        self._commands = commands
        self._read = documents_read
        self._written = documents_written
        self._durations = durations
        #: (connection, request id) -> (collection, documents sent) of a command not yet answered.
        self._pending: dict[tuple[Any, int], tuple[str, int]] = {}

    @staticmethod
    def _counted(name: str) -> bool:
        return name.lower() not in DRIVER_COMMANDS

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        name = event.command_name
        if not self._counted(name):
            return
        command = event.command
        target = command.get("collection") if name == "getMore" else command.get(name)
        collection = target if isinstance(target, str) and target else NO_COLLECTION
        sent = command.get(_WRITE_ARRAYS.get(name, ""))
        self._pending[(event.connection_id, event.request_id)] = (
            collection,
            len(sent) if isinstance(sent, list) else 0,
        )
        self._commands.labels(name, collection).inc()

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pending = self._pending.pop((event.connection_id, event.request_id), None)
        if pending is None:
            return
        collection, sent = pending
        self._observe(event, collection)
        reply = event.reply
        read = written = 0
        cursor = reply.get("cursor")
        if isinstance(cursor, Mapping):
            batch = cursor.get("firstBatch", cursor.get("nextBatch"))
            read = len(batch) if isinstance(batch, list) else 0
        name = event.command_name
        if name == "findAndModify":
            read = 1 if reply.get("value") is not None else 0
            last_error = reply.get("lastErrorObject")
            written = int(last_error.get("n", 0)) if isinstance(last_error, Mapping) else 0
        elif name in _WRITE_ARRAYS:
            n = reply.get("n")
            written = int(n) if isinstance(n, int) else sent
        if read:
            self._read.labels(collection).inc(read)
        if written:
            self._written.labels(collection).inc(written)

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pending = self._pending.pop((event.connection_id, event.request_id), None)
        if pending is not None:
            self._observe(event, pending[0])

    def _observe(
        self, event: monitoring.CommandSucceededEvent | monitoring.CommandFailedEvent, collection: str
    ) -> None:
        if self._durations is not None:
            self._durations.labels(event.command_name, collection).observe(event.duration_micros / 1_000_000)


def create_client(
    settings: StoreSettings, *, app_name: str, listeners: Sequence[monitoring.CommandListener] = ()
) -> MongoClient:
    """A client with explicit timeouts. Creating it does no I/O; :func:`ping` does. ``listeners``
    watch its commands (a service installs a :class:`StoreWorkCounter`)."""
    client: MongoClient = AsyncMongoClient(
        settings.mongodb_url.get_secret_value(),
        appname=app_name,
        serverSelectionTimeoutMS=settings.server_selection_timeout_ms,
        tz_aware=True,
        retryWrites=True,
        event_listeners=list(listeners),
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


@dataclass(frozen=True)
class RetiredIndex:
    """An index an earlier version made and this one no longer queries by: dropped at start-up where it is
    (an upgraded store does not keep maintaining it on every write)."""

    collection: str
    name: str


async def ensure_indexes(db: Database, specs: Iterable[IndexSpec], retired: Iterable[RetiredIndex] = ()) -> None:
    """Create the indexes every component declared, and drop the ``retired`` ones that exist. Idempotent;
    a changed TTL is applied with ``collMod`` instead of failing start-up."""
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
    for index in retired:
        try:
            await db[index.collection].drop_index(index.name)
        except OperationFailure as error:
            if error.code not in (26, 27):  # NamespaceNotFound, IndexNotFound: nothing to drop
                raise
        else:
            log.info("retired_index_dropped", collection=index.collection, index=index.name)
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


def in_parts(values: Iterable[str], size: int = IN_PART_SIZE) -> list[list[str]]:
    """``values`` sorted, without repeats, in parts of at most ``size``: the ``$in`` lists of one lookup."""
    ordered = sorted(set(values))
    return [ordered[i : i + size] for i in range(0, len(ordered), size)]


def indexes_of(*repositories: type[Repository]) -> list[IndexSpec]:
    return [spec for repo in repositories for spec in repo.indexes]


def stored_time(value: Any) -> datetime | None:
    """A time as read from the store, in UTC: the store keeps UTC and a client that is not ``tz_aware``
    reads it naive. None for anything that is not a time (a field never written)."""
    if not isinstance(value, datetime):
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)
