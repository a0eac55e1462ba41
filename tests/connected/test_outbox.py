"""The transactional outbox: what is committed is published, whatever dies when."""

from __future__ import annotations

import asyncio
import sys
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from uuid import UUID, uuid4

import pytest

from skolsynk.contracts import Envelope, SyncRequested
from skolsynk.contracts.vendor import VendorChange
from skolsynk.domain.ss12000 import EntityKind
from skolsynk.messaging import MessageContext, Outbox, OutboxEntry, OutboxRelay
from skolsynk.messaging.outbox import BUNDLE_PREFIX
from skolsynk.service import ServiceApp
from skolsynk.storage import in_transaction
from tests.helpers import wait_for

pytestmark = [pytest.mark.connected, pytest.mark.queues("connectors.sync-requests")]

WRITER = Path(__file__).with_name("outbox_writer_that_dies.py")


def outcome(app: ServiceApp, queue: str, name: str) -> float:
    return app.metrics.messages_consumed.labels(queue, name)._value.get()


async def test_process_dies_after_commit_before_publish_message_still_published_once(make_app, settings, mongo_url):
    app: ServiceApp = make_app()
    queue = app.queue_name("connectors", "sync-requests")
    received: list[Envelope] = []

    async def collects(envelope: Envelope, context: MessageContext) -> None:
        received.append(envelope)

    app.add_consumer(queue, collects)
    await app.start()  # declares the topology; its relay is the "next process" that picks up the entry

    writer = await asyncio.create_subprocess_exec(
        sys.executable,
        str(WRITER),
        mongo_url,
        settings.store.mongodb_database,
        app.topology.exchange("control"),
        stdout=asyncio.subprocess.PIPE,
    )
    stdout, _ = await writer.communicate()
    assert writer.returncode == 17, "the writer must die right after its commit"
    message_id = UUID(stdout.decode().strip())
    assert await app.db["sync_runs"].count_documents({"_id": str(message_id)}) == 1

    app.outbox.notify()
    await wait_for(lambda: len(received) == 1, what="the committed message to be relayed")
    assert received[0].message_id == message_id

    async def marked_sent() -> bool:
        return await app.outbox.pending_count() == 0

    await wait_for(marked_sent, what="the entry to be marked sent")
    assert len(received) == 1


class RelayThatDiesBeforeMarkingSent(OutboxRelay):
    """Publishes, then 'dies' before it can record that it did."""

    async def mark_sent(self, documents: list[dict[str, object]]) -> None:
        raise ConnectionError("process killed")


async def test_relay_dies_after_publish_before_marking_effect_is_still_once(make_app):
    app: ServiceApp = make_app()
    queue = app.queue_name("connectors", "sync-requests")

    async def counts(envelope: Envelope, context: MessageContext) -> None:
        await app.db["effects"].update_one(
            {"_id": str(envelope.message_id)}, {"$inc": {"n": 1}}, upsert=True, session=context.session
        )

    app.add_consumer(queue, counts)
    await app.start()
    app.relay.stop()  # this test drives the relays by hand

    envelope = SyncRequested(source_id="google", requested_by="test").to_envelope(tenant_id="kommun-a")

    async def commit(session):  # type: ignore[no-untyped-def]
        await app.outbox.add(
            envelope, exchange=app.topology.exchange("control"), routing_key="sync.requested", session=session
        )

    await in_transaction(app.mongo, commit)

    dying = RelayThatDiesBeforeMarkingSent(app.outbox, app.publisher, app.metrics, lease_seconds=0.5)
    with pytest.raises(ConnectionError):
        await dying.relay_once()
    await wait_for(lambda: outcome(app, queue, "ack") == 1, what="the first delivery")
    assert await app.outbox.pending_count() == 1

    successor = OutboxRelay(app.outbox, app.publisher, app.metrics, lease_seconds=0.5)
    assert await successor.relay_once() == 0, "the lease of the dead relay must still hold"

    async def relayed_again() -> bool:
        return await successor.relay_once() == 1

    await wait_for(relayed_again, timeout=10, what="the lease to expire and the entry to be relayed again")
    await wait_for(lambda: outcome(app, queue, "duplicate") == 1, what="the duplicate delivery")
    assert (await app.db["effects"].find_one({"_id": str(envelope.message_id)}))["n"] == 1
    assert await app.outbox.pending_count() == 0


async def test_two_relays_never_publish_the_same_entry_twice(make_app):
    app: ServiceApp = make_app()
    queue = app.queue_name("connectors", "sync-requests")
    deliveries: Counter[UUID] = Counter()

    async def counts(envelope: Envelope, context: MessageContext) -> None:
        deliveries[envelope.message_id] += 1

    app.add_consumer(queue, counts, idempotent=False)  # count raw deliveries, duplicates included
    await app.start()
    app.relay.stop()
    envelopes = [
        SyncRequested(source_id=f"s{n}", requested_by="test").to_envelope(tenant_id="kommun-a") for n in range(40)
    ]

    async def commit(session):  # type: ignore[no-untyped-def]
        for envelope in envelopes:
            await app.outbox.add(
                envelope, exchange=app.topology.exchange("control"), routing_key="sync.requested", session=session
            )

    await in_transaction(app.mongo, commit)
    relays = [OutboxRelay(app.outbox, app.publisher, app.metrics, batch_size=7) for _ in range(2)]

    async def drain(relay: OutboxRelay) -> int:
        total = 0
        while (relayed := await relay.relay_once()) > 0:
            total += relayed
        return total

    totals = await asyncio.gather(*(drain(r) for r in relays))
    assert sum(totals) == 40
    await wait_for(lambda: sum(deliveries.values()) == 40, what="40 deliveries")
    assert set(deliveries) == {e.message_id for e in envelopes}
    assert max(deliveries.values()) == 1


def sync_requests(n: int) -> list[Envelope]:
    return [SyncRequested(source_id=f"s{i}", requested_by="test").to_envelope(tenant_id="kommun-a") for i in range(n)]


async def started_with_own_relay(app: ServiceApp, **relay_options: float) -> tuple[OutboxRelay, asyncio.Task[None]]:
    """The app started, its own relay stopped and one with ``relay_options`` running instead."""
    await app.start()
    app.relay.stop()
    await asyncio.gather(*(t for t in app._tasks if t.get_name().endswith(":outbox-relay")))
    app.outbox._wakeup.clear()  # the stopped relay's wake-up call, which it has answered
    relay = OutboxRelay(app.outbox, app.publisher, app.metrics, **relay_options)  # type: ignore[arg-type]
    return relay, asyncio.create_task(relay.run())


async def test_add_many_writes_one_bundle_and_the_relay_publishes_its_messages_in_order(make_app):
    app: ServiceApp = make_app()
    queue = app.queue_name("connectors", "sync-requests")
    deliveries: Counter[UUID] = Counter()
    order: list[UUID] = []

    async def counts(envelope: Envelope, context: MessageContext) -> None:
        deliveries[envelope.message_id] += 1
        order.append(envelope.message_id)

    app.add_consumer(queue, counts, idempotent=False)
    relay, task = await started_with_own_relay(app, poll_interval_seconds=60, pending_gauge_interval_seconds=60)
    try:
        await wait_for(lambda: relay.round_trips >= 2, what="the relay's first look and count")
        before = relay.round_trips
        envelopes = sync_requests(30)
        inserts: list[str] = []
        insert_one = app.outbox.collection.insert_one

        async def counted_insert_one(document, **kwargs):  # type: ignore[no-untyped-def]
            inserts.append(document["_id"])
            return await insert_one(document, **kwargs)

        app.outbox.collection.insert_one = counted_insert_one  # type: ignore[method-assign]

        async def commit(session):  # type: ignore[no-untyped-def]
            return await app.outbox.add_many(
                [
                    OutboxEntry(e, exchange=app.topology.exchange("control"), routing_key="sync.requested")
                    for e in envelopes
                ],
                session=session,
            )

        assert await in_transaction(app.mongo, commit) == 30
        assert len(inserts) == 1
        assert inserts[0].startswith(BUNDLE_PREFIX)
        bundle = await app.outbox.collection.find_one({"_id": inserts[0]})
        assert bundle is not None
        assert set(bundle) == {
            "_id", "messages", "size", "created_at", "lease_until", "lease_owner", "attempts", "sent_at",
        }  # fmt: skip
        assert bundle["size"] == 30
        messages = Outbox.messages_of(bundle)
        assert [m["_id"] for m in messages] == [str(e.message_id) for e in envelopes]
        assert Envelope.model_validate(messages[0]["envelope"]) == envelopes[0]
        assert await app.outbox.pending_count() == 30  # messages, not documents
        app.outbox.notify()
        await wait_for(lambda: sum(deliveries.values()) == 30, what="30 deliveries")
        assert order == [e.message_id for e in envelopes]
        assert max(deliveries.values()) == 1

        async def marked_sent() -> bool:
            return await app.outbox.pending_count() == 0

        await wait_for(marked_sent, what="the bundle to be marked sent")
        # One claim (look, lease, read) and one mark for the 30, nothing else.
        assert relay.round_trips - before == 4
    finally:
        relay.stop()
        await task


async def test_a_bundle_of_more_messages_than_a_batch_is_claimed_alone_and_whole(make_app):
    app: ServiceApp = make_app()
    queue = app.queue_name("connectors", "sync-requests")
    deliveries: Counter[UUID] = Counter()

    async def counts(envelope: Envelope, context: MessageContext) -> None:
        deliveries[envelope.message_id] += 1

    app.add_consumer(queue, counts, idempotent=False)
    relay, task = await started_with_own_relay(app, batch_size=5, poll_interval_seconds=60)
    try:
        exchange = app.topology.exchange("control")
        big, small = sync_requests(12), sync_requests(1)

        async def commit(session):  # type: ignore[no-untyped-def]
            await app.outbox.add_many([OutboxEntry(e, exchange, "sync.requested") for e in big], session=session)
            await app.outbox.add_many([OutboxEntry(e, exchange, "sync.requested") for e in small], session=session)

        await in_transaction(app.mongo, commit)
        app.outbox.notify()
        await wait_for(lambda: sum(deliveries.values()) == 13, what="13 deliveries")
        assert max(deliveries.values()) == 1
    finally:
        relay.stop()
        await task


async def test_an_idle_relay_neither_counts_nor_claims_except_a_backing_off_look(make_app):
    app: ServiceApp = make_app()
    counted: list[int] = []
    pending_count = app.outbox.pending_count

    async def counting_pending_count() -> int:
        counted.append(1)
        return await pending_count()

    app.outbox.pending_count = counting_pending_count  # type: ignore[method-assign]
    relay, task = await started_with_own_relay(
        app, poll_interval_seconds=0.02, idle_poll_max_seconds=10, pending_gauge_interval_seconds=0.01
    )
    try:
        looks: list[float] = []
        claim = relay._claim

        async def timed_claim():  # type: ignore[no-untyped-def]
            looks.append(asyncio.get_running_loop().time())
            return await claim()

        relay._claim = timed_claim  # type: ignore[method-assign]
        await wait_for(lambda: len(looks) >= 6, timeout=10, what="six looks for orphaned entries")
        assert len(counted) <= 1, "the pending gauge is counted once (nothing pending), not on every pass"
        # 0.02 s doubling each time an idle look finds nothing: at least 0.02 + 0.04 + 0.08 + 0.16 + 0.32.
        assert looks[5] - looks[0] >= 0.6
        round_trips = relay.round_trips
        assert round_trips <= len(looks) + 1
    finally:
        relay.stop()
        await task


async def test_notifies_of_a_burst_of_single_writes_are_coalesced_into_few_claims(make_app):
    app: ServiceApp = make_app()
    queue = app.queue_name("connectors", "sync-requests")
    received: list[UUID] = []

    async def collects(envelope: Envelope, context: MessageContext) -> None:
        received.append(envelope.message_id)

    app.add_consumer(queue, collects, idempotent=False)
    relay, task = await started_with_own_relay(
        app, poll_interval_seconds=60, coalesce_seconds=1.0, pending_gauge_interval_seconds=60
    )
    try:
        await wait_for(lambda: relay.round_trips >= 2, what="the relay's first look and count")
        claims_before = relay._claims
        envelopes = sync_requests(20)
        for envelope in envelopes:  # one transaction and one notify per write, as a request handler does

            async def commit(session, envelope=envelope):  # type: ignore[no-untyped-def]
                await app.outbox.add(
                    envelope, exchange=app.topology.exchange("control"), routing_key="sync.requested", session=session
                )

            await in_transaction(app.mongo, commit)
            app.outbox.notify()
        await wait_for(lambda: len(received) == 20, what="20 deliveries")
        assert relay._claims - claims_before <= 5, "each notify must not cost a claim of its own"
    finally:
        relay.stop()
        await task


def person_change(entity: UUID, tenant: str = "kommun-a") -> Envelope:
    change = VendorChange(
        vendor_id="fakevendor",
        entity_kind=EntityKind.PERSON,
        entity_id=entity,
        operation="upsert",
        version=1,
        resource={"id": str(entity), "given_name": "Alma", "family_name": "Bergman"},
        test_mode=False,
        reason="test",
    )
    return change.to_envelope(tenant_id=tenant)


async def test_sent_messages_forget_what_they_asked_to_in_the_one_write_that_marks_them_sent(make_app):
    """A vendor change forgets its resource once the broker has it: the relay removes it in the write that
    marks the bundle sent (one round trip, whatever the batch holds), and leaves the messages that forget
    nothing, and single messages, as they were."""
    app: ServiceApp = make_app()
    queue = app.queue_name("connectors", "sync-requests")
    delivered: list[Envelope] = []

    async def collects(envelope: Envelope, context: MessageContext) -> None:
        delivered.append(envelope)

    app.add_consumer(queue, collects, idempotent=False)
    relay, task = await started_with_own_relay(app, poll_interval_seconds=60, pending_gauge_interval_seconds=60)
    try:
        await wait_for(lambda: relay.round_trips >= 2, what="the relay's first look and count")
        alma, bo = uuid4(), uuid4()
        exchange = app.topology.exchange("control")
        forgetting = [
            OutboxEntry(person_change(p), exchange, "sync.requested", forget_when_sent=("resource",))
            for p in (alma, bo)
        ]
        keeping = OutboxEntry(person_change(alma), exchange, "sync.requested")
        single = person_change(bo)

        async def commit(session):  # type: ignore[no-untyped-def]
            await app.outbox.add_many([*forgetting, keeping], session=session)
            await app.outbox.add(single, exchange=exchange, routing_key="sync.requested", session=session)

        await in_transaction(app.mongo, commit)
        before = relay.round_trips
        app.outbox.notify()
        await wait_for(lambda: len(delivered) == 4, what="4 deliveries")
        # What the consumers got is whole: the resource goes only after the broker confirmed it.
        assert all(e.payload["resource"]["given_name"] == "Alma" for e in delivered)

        async def marked_sent() -> bool:
            return await app.outbox.pending_count() == 0

        await wait_for(marked_sent, what="the bundle and the single message to be marked sent")
        assert relay.round_trips - before == 4  # look, lease, read, and one mark for both documents
        bundle = await app.outbox.collection.find_one({"_id": {"$regex": f"^{BUNDLE_PREFIX}"}})
        assert bundle is not None
        assert bundle["sent_at"] is not None
        payloads = [m["envelope"]["payload"] for m in Outbox.messages_of(bundle)]
        assert ["resource" in p for p in payloads] == [False, False, True]
        assert [p["entity_id"] for p in payloads] == [str(alma), str(bo), str(alma)]
        stored_single = await app.outbox.collection.find_one({"_id": str(single.message_id)})
        assert stored_single is not None
        assert stored_single["envelope"]["payload"]["resource"]["given_name"] == "Alma"
    finally:
        relay.stop()
        await task


async def test_the_purge_rewrites_only_a_sent_bundle_that_still_tells_about_the_person(make_app):
    """A sent bundle whose messages forgot their resource is left alone by the purge of a person (no write,
    so purges of the many persons one bundle holds do not conflict); one written before messages forgot
    (no ``forget``) loses the person's messages and keeps the others; sent single messages about them are
    deleted; unsent ones stay."""
    app: ServiceApp = make_app()
    alma, bo = uuid4(), uuid4()
    exchange = app.topology.exchange("control")
    forgot = Outbox.bundle(
        [OutboxEntry(person_change(p), exchange, "r", forget_when_sent=("resource",)) for p in (alma, bo)]
    )
    for message in forgot["messages"]:
        del message["envelope"]["payload"]["resource"]  # as the relay's mark left them
    older = Outbox.bundle([OutboxEntry(person_change(p), exchange, "r") for p in (alma, bo)])
    unsent = Outbox.bundle([OutboxEntry(person_change(alma), exchange, "r")])
    other_tenant = Outbox.bundle([OutboxEntry(person_change(alma, "kommun-b"), exchange, "r")])
    single = Outbox.entry(person_change(alma), exchange=exchange, routing_key="r")
    sent = datetime.now(UTC)
    for document in (forgot, older, other_tenant, single):
        document["sent_at"] = sent
    await app.outbox.collection.insert_many([forgot, older, unsent, other_tenant, single])
    stored_forgot = await app.outbox.collection.find_one({"_id": forgot["_id"]})

    assert await app.outbox.forget_sent("kommun-a", [str(alma)]) == 2  # the single deleted, the older bundle
    assert await app.outbox.collection.find_one({"_id": forgot["_id"]}) == stored_forgot
    left = await app.outbox.collection.find_one({"_id": older["_id"]})
    assert left is not None
    assert [m["envelope"]["payload"]["entity_id"] for m in Outbox.messages_of(left)] == [str(bo)]
    assert await app.outbox.collection.count_documents({"_id": single["_id"]}) == 0
    for kept in (unsent, other_tenant):
        stored = await app.outbox.collection.find_one({"_id": kept["_id"]})
        assert stored is not None
        assert len(Outbox.messages_of(stored)) == 1
