"""MongoDB storage: client factory, indexes ensured at start-up, repository helpers, transactions."""

from skolsynk.storage.mongo import (
    Collection,
    Database,
    Document,
    IndexSpec,
    MongoClient,
    Repository,
    RetiredIndex,
    Session,
    create_client,
    ensure_indexes,
    in_parts,
    in_transaction,
    indexes_of,
    ping,
    stored_time,
)

__all__ = [
    "Collection",
    "Database",
    "Document",
    "IndexSpec",
    "MongoClient",
    "Repository",
    "RetiredIndex",
    "Session",
    "create_client",
    "ensure_indexes",
    "in_parts",
    "in_transaction",
    "indexes_of",
    "ping",
    "stored_time",
]
