"""The operator command line (`skolsynk ...`) against the real broker and the Mongo wire server.

Each test declares its own namespace's topology, runs commands through ``execute`` (what ``main``
runs, without a new event loop) and deletes every queue it declared."""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any

import aio_pika
import pytest

from skolsynk.cli import CliSettings, execute, parser
from skolsynk.cli.queues import HEADER_REPLAYS
from skolsynk.contracts.sync import SyncRequested
from skolsynk.contracts.vendor import ProjectionRequested
from skolsynk.domain.subscription import VendorSubscription
from skolsynk.messaging import Topology, declare_topology, topology_for
from skolsynk.messaging.publisher import HEADER_ATTEMPT, HEADER_FAILURE_REASON, HEADER_FAILURE_TYPE, HEADER_TENANT
from skolsynk.settings import ServiceSettings
from skolsynk.storage import MongoClient
from skolsynk.storage.subscriptions import SubscriptionStore
from tests.helpers import delete_topology, drain_queue, queue_depth

pytestmark = pytest.mark.connected

Run = Callable[..., Coroutine[Any, Any, tuple[int, str, str]]]


@pytest.fixture
def cli_settings(settings: ServiceSettings) -> CliSettings:
    return CliSettings(
        broker=settings.broker,
        store=settings.store,
        observability=settings.observability,
        lifecycle=settings.lifecycle,
    )


@pytest.fixture
async def topology(cli_settings: CliSettings) -> AsyncIterator[Topology]:
    """The system topology of the test's namespace with a google sync-request queue and one vendor,
    declared now and deleted afterwards (the commands only declare parts of it)."""
    broker = cli_settings.broker
    declared = topology_for(broker, vendor_ids=["acme"], connector_kinds=["google"])
    amqp_url = broker.amqp_url.get_secret_value()
    try:
        connection = await aio_pika.connect(amqp_url)
        async with connection:
            await declare_topology(await connection.channel(), declared)
        yield declared
    finally:
        await delete_topology(amqp_url, declared)


@pytest.fixture
def run(cli_settings: CliSettings) -> Run:
    async def run_command(*argv: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        status = await execute(parser().parse_args(list(argv)), cli_settings, out=out, err=err)
        return status, out.getvalue(), err.getvalue()

    return run_command


async def _publish(amqp_url: str, queue: str, *, message_id: str, headers: dict[str, Any]) -> None:
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        await channel.default_exchange.publish(
            aio_pika.Message(
                body=json.dumps({"message_id": message_id}).encode(),
                message_id=message_id,
                type="source.record-page",
                correlation_id="corr-1",
                headers=headers,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            ),
            routing_key=queue,
            mandatory=True,
        )


def _dead_letter_headers(reason: str, error_type: str) -> dict[str, Any]:
    return {
        HEADER_TENANT: "tenant-a",
        HEADER_ATTEMPT: 3,
        HEADER_FAILURE_TYPE: error_type,
        HEADER_FAILURE_REASON: reason,
        "x-custom": "kept",
    }


@pytest.fixture
async def poisoned(cli_settings: CliSettings, topology: Topology) -> tuple[str, list[str], list[str]]:
    """Five dead letters in the normaliser's source-events DLQ: three failed on an unavailable vendor,
    two on a bad envelope. Returns (work queue, vendor-failure ids, envelope-failure ids)."""
    amqp_url = cli_settings.broker.amqp_url.get_secret_value()
    work_queue = f"{cli_settings.broker.namespace}.normaliser.source-events"
    transient = [f"transient-{n}" for n in range(3)]
    bad = [f"bad-{n}" for n in range(2)]
    for message_id in [transient[0], bad[0], transient[1], bad[1], transient[2]]:
        reason = "vendor answered 503: down for maintenance" if message_id in transient else "invalid envelope"
        error_type = "VendorUnavailable" if message_id in transient else "InvalidEnvelope"
        await _publish(
            amqp_url, work_queue + ".dlq", message_id=message_id, headers=_dead_letter_headers(reason, error_type)
        )
    return work_queue, transient, bad


async def test_dlq_list_shows_the_dead_letters_and_leaves_them(
    run: Run, poisoned: tuple[str, list[str], list[str]], cli_settings: CliSettings
) -> None:
    work_queue, transient, bad = poisoned
    status, out, _ = await run("dlq", "list", "normaliser.source-events", "--json")
    assert status == 0
    listed = json.loads(out)
    assert listed["total"] == 5
    assert listed["dlq"] == work_queue + ".dlq"
    assert {m["message_id"] for m in listed["messages"]} == {*transient, *bad}
    first = next(m for m in listed["messages"] if m["message_id"] == bad[0])
    assert first["failure_type"] == "InvalidEnvelope"
    assert first["tenant_id"] == "tenant-a"
    assert first["attempt"] == 3
    assert await queue_depth(cli_settings.broker.amqp_url.get_secret_value(), work_queue + ".dlq") == 5

    status, out, _ = await run("dlq", "list", work_queue + ".dlq", "--limit", "2")
    assert status == 0
    assert "5 dead letter(s), the first 2" in out


async def test_dlq_replay_moves_only_the_matching_messages_back_with_their_ids_and_headers(
    run: Run, poisoned: tuple[str, list[str], list[str]], cli_settings: CliSettings
) -> None:
    work_queue, transient, bad = poisoned
    amqp_url = cli_settings.broker.amqp_url.get_secret_value()

    status, out, err = await run("dlq", "replay", "normaliser.source-events", "--filter-reason", "VENDOR ANSWERED 503")
    assert status == 0, err
    assert "replayed 3 of 5 examined" in out
    assert "examined: 5/5" in err  # progress on standard error

    replayed = await drain_queue(amqp_url, work_queue)
    assert [m.message_id for m in replayed] == transient  # in their DLQ order
    for message in replayed:
        headers = message.headers or {}
        assert headers[HEADER_ATTEMPT] == 0, "a replayed message gets its whole retry ladder again"
        assert headers[HEADER_REPLAYS] == 1
        assert headers["x-custom"] == "kept"
        assert headers[HEADER_FAILURE_TYPE] == "VendorUnavailable"
        assert message.type == "source.record-page"
        assert message.correlation_id == "corr-1"
        assert json.loads(message.body) == {"message_id": message.message_id}
    left = await drain_queue(amqp_url, work_queue + ".dlq")
    assert [m.message_id for m in left] == bad


async def test_dlq_replay_limit_and_dry_run(
    run: Run, poisoned: tuple[str, list[str], list[str]], cli_settings: CliSettings
) -> None:
    work_queue, transient, bad = poisoned
    amqp_url = cli_settings.broker.amqp_url.get_secret_value()

    status, out, _ = await run("dlq", "replay", "normaliser.source-events", "--dry-run")
    assert status == 0
    assert "would replay 5 of 5 examined" in out
    assert await queue_depth(amqp_url, work_queue) == 0
    assert await queue_depth(amqp_url, work_queue + ".dlq") == 5

    status, out, _ = await run("dlq", "replay", "normaliser.source-events", "--limit", "2")
    assert status == 0
    assert "replayed 2 of 2 examined" in out
    assert [m.message_id for m in await drain_queue(amqp_url, work_queue)] == [transient[0], bad[0]]
    assert [m.message_id for m in await drain_queue(amqp_url, work_queue + ".dlq")] == [transient[1], bad[1],
                                                                                         transient[2]]  # fmt: skip


async def test_dlq_of_an_unknown_queue_is_an_error(run: Run, topology: Topology) -> None:
    status, _, err = await run("dlq", "replay", "nothing.here")
    assert status == 1
    assert "does not exist" in err


async def test_sync_publishes_a_sync_request_for_the_connector(
    run: Run, topology: Topology, cli_settings: CliSettings
) -> None:
    status, out, err = await run("sync", "tenant-a", "google", "workspace-1", "--mode", "incremental")
    assert status == 0, err
    assert "sync requested" in out
    (message,) = await drain_queue(
        cli_settings.broker.amqp_url.get_secret_value(), f"{cli_settings.broker.namespace}.google.sync-requests"
    )
    body = json.loads(message.body)
    assert body["message_type"] == SyncRequested.message_type
    assert body["tenant_id"] == "tenant-a"
    assert body["payload"] == {"source_id": "workspace-1", "mode": "incremental", "requested_by": "operator"}


async def test_sync_refuses_a_kind_without_sync_requests(run: Run) -> None:
    with pytest.raises(SystemExit):
        await run("sync", "tenant-a", "egil", "client-1")  # EGIL clients push; nothing to ask


async def test_resend_needs_a_subscription_then_requests_a_projection_with_the_vendor(
    run: Run, topology: Topology, cli_settings: CliSettings, mongo: MongoClient
) -> None:
    status, _, err = await run("resend", "tenant-a", "acme")
    assert status == 1
    assert "no subscription" in err

    db = mongo[cli_settings.store.mongodb_database]
    await SubscriptionStore(db).save(
        VendorSubscription(tenant_id="tenant-a", vendor_id="acme", school_unit_codes=["12345678"])
    )
    status, _, err = await run("resend", "tenant-a", "acme")
    assert status == 0, err
    (message,) = await drain_queue(
        cli_settings.broker.amqp_url.get_secret_value(), f"{cli_settings.broker.namespace}.normaliser.projections"
    )
    body = json.loads(message.body)
    assert body["message_type"] == ProjectionRequested.message_type
    assert body["tenant_id"] == "tenant-a"
    assert body["payload"]["resend_vendor_id"] == "acme"


async def _seed(db: Any) -> None:
    now = datetime.now(UTC)
    await db["runs"].insert_many(
        [
            {"_id": str(uuid.uuid4()), "tenant_id": "tenant-a", "source_id": "src-1", "source_kind": "google",
             "mode": "full", "status": "finalised", "started_at": now - timedelta(hours=3),
             "finalised_at": now - timedelta(hours=3), "outcome": {"complete": True, "reasons": []}},
            {"_id": str(uuid.uuid4()), "tenant_id": "tenant-a", "source_id": "src-1", "source_kind": "google",
             "mode": "full", "status": "finalised", "started_at": now - timedelta(hours=1),
             "finalised_at": now - timedelta(minutes=50),
             "outcome": {"complete": False, "reasons": ["2 of 3 pages received"]}},
            {"_id": str(uuid.uuid4()), "tenant_id": "tenant-b", "source_id": "src-9", "source_kind": "egil",
             "mode": "incremental", "status": "running", "started_at": now - timedelta(minutes=5)},
        ]
    )  # fmt: skip
    await db["holds"].insert_one(
        {"_id": "tenant-a:acme:unit-1", "tenant_id": "tenant-a", "vendor_id": "acme", "school_unit_id": "unit-1",
         "school_unit_codes": ["12345678"], "entity_ids": ["e1", "e2"], "removals": 2, "population": 3,
         "status": "pending", "created_at": now - timedelta(hours=5), "updated_at": now}
    )  # fmt: skip
    await db["erasure_ledger"].insert_one(
        {"_id": "tenant-a:acme:p1:2", "tenant_id": "tenant-a", "vendor_id": "acme", "person_id": "p-1",
         "vendor_entity_id": "v-1", "version": 2, "reason": "left_source", "status": "overdue",
         "requested_at": now - timedelta(days=2), "retries": 1}
    )  # fmt: skip
    await db["delivery_ledger"].insert_many(
        [
            {"_id": f"tenant-a:acme:{n}", "tenant_id": "tenant-a", "vendor_id": "acme", "entity_id": str(n),
             "status": "delivered" if n < 3 else "rejected", "test": False}
            for n in range(4)
        ]
    )  # fmt: skip
    await db["vendor_profiles"].insert_one({"_id": "acme", "profile": {"vendor_id": "acme"}})


async def test_status_reports_sources_queues_vendors_holds_and_overdue_deletions(
    run: Run, topology: Topology, cli_settings: CliSettings, mongo: MongoClient
) -> None:
    await _seed(mongo[cli_settings.store.mongodb_database])
    namespace = cli_settings.broker.namespace
    await _publish(
        cli_settings.broker.amqp_url.get_secret_value(),
        f"{namespace}.dispatcher.acme.dlq",
        message_id="dead-1",
        headers=_dead_letter_headers("x", "y"),
    )

    status, out, err = await run("status", "--json")
    assert status == 0, err
    report = json.loads(out)
    sources = {(s["tenant_id"], s["source_id"]): s for s in report["sources"]}
    assert sources["tenant-a", "src-1"]["complete"] is False  # the latest run, not the older complete one
    assert sources["tenant-a", "src-1"]["reasons"] == ["2 of 3 pages received"]
    assert sources["tenant-b", "src-9"]["status"] == "running"
    queues = {q["queue"]: q for q in report["queues"]}
    assert queues[f"{namespace}.dispatcher.acme"] == {
        "queue": f"{namespace}.dispatcher.acme",
        "exists": True,
        "ready": 0,
        "consumers": 0,
        "dead_letters": 1,
    }
    assert queues[f"{namespace}.normaliser.source-events"]["exists"] is True
    assert report["vendors"] == [{"vendor": "acme", "delivered": 3, "test": 0, "test_rejected": 0, "rejected": 1}]
    assert report["holds_pending"][0]["tenant_id"] == "tenant-a"
    assert report["holds_pending"][0]["removals"] == 2
    assert report["deletions_overdue"] == [{"tenant_id": "tenant-a", "vendor_id": "acme", "overdue": 1}]

    status, out, _ = await run("status")
    assert status == 0
    for heading in ("Sources", "Queues", "Vendors", "Holds pending", "Deletions overdue"):
        assert heading in out
    assert "2 of 3 pages received" in out

    status, out, _ = await run("status", "--tenant", "tenant-b", "--json")
    assert [s["source_id"] for s in json.loads(out)["sources"]] == ["src-9"]


async def test_holds_and_overdue_of_a_tenant(
    run: Run, topology: Topology, cli_settings: CliSettings, mongo: MongoClient
) -> None:
    await _seed(mongo[cli_settings.store.mongodb_database])
    status, out, _ = await run("holds", "tenant-a")
    assert status == 0
    assert "unit-1" in out
    assert "12345678" in out
    assert "pending" in out
    status, out, _ = await run("overdue", "tenant-a", "--json")
    assert status == 0
    (entry,) = json.loads(out)["overdue"]
    assert entry["vendor_id"] == "acme"
    assert entry["retries"] == 1
    status, out, _ = await run("overdue", "tenant-b")
    assert "(none)" in out
