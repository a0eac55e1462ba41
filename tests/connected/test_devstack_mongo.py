"""The Mongo wire server as the demo and the bench start it (``skolsynk_testkit.devstack``): the TTL sweep's
interval is applied (``secantusd-py`` reads it from its configuration file and drops it)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pymongo import MongoClient

from skolsynk_testkit.devstack import start_mongo_wire_server, wait_until

pytestmark = [pytest.mark.connected]


def test_the_ttl_sweep_runs_at_the_interval_asked_for(tmp_path: Path) -> None:
    # The server's own sweep runs 60 s after its start: an expired document gone within 20 s was swept
    # at the interval asked for.
    server = start_mongo_wire_server(log_path=tmp_path / "mongo.log", ttl_sweep_seconds=0.5)
    client: MongoClient[dict[str, object]] = MongoClient(server.url)
    try:
        started = time.monotonic()
        expiring = client["devstack"]["expiring"]
        expiring.create_index("expires_at", expireAfterSeconds=0)
        expiring.insert_many(
            [
                {"_id": "expired", "expires_at": datetime.now(UTC) - timedelta(minutes=1)},
                {"_id": "kept", "expires_at": datetime.now(UTC) + timedelta(days=1)},
            ]
        )
        wait_until(
            lambda: expiring.count_documents({"_id": "expired"}) == 0,
            timeout=20,
            what="the expired document to be swept",
        )
        assert time.monotonic() - started < 60
        assert expiring.count_documents({"_id": "kept"}) == 1
    finally:
        client.close()
        server.stop()
