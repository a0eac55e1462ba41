"""The compose demo's fake source: a subscription and a complete synthetic snapshot on the source exchange."""

from __future__ import annotations

import json

import pytest

from skolsynk.contracts.source import SourceRunCompleted, SourceRunStarted
from skolsynk.messaging import topology_for
from skolsynk.settings import ServiceSettings
from skolsynk.storage import MongoClient
from skolsynk.storage.subscriptions import SubscriptionStore
from skolsynk_testkit.demo_source import parser, run
from tests.helpers import delete_topology, drain_queue

pytestmark = pytest.mark.connected


async def test_demo_source_subscribes_and_sends_one_full_snapshot(
    settings: ServiceSettings, mongo: MongoClient
) -> None:
    amqp_url = settings.broker.amqp_url.get_secret_value()
    topology = topology_for(settings.broker, vendor_ids=["demo-vendor"])
    try:
        await run(parser().parse_args(["--school-units", "1", "--students-per-unit", "3"]), settings)
        subscription = await SubscriptionStore(mongo[settings.store.mongodb_database]).get("demo-kommun", "demo-vendor")
        assert subscription is not None
        assert subscription.test_mode is False
        messages = await drain_queue(amqp_url, f"{settings.broker.namespace}.normaliser.source-events")
        types = [json.loads(m.body)["message_type"] for m in messages]
        assert types[0] == SourceRunStarted.message_type
        assert types[-1] == SourceRunCompleted.message_type
        assert all(json.loads(m.body)["tenant_id"] == "demo-kommun" for m in messages)
    finally:
        await delete_topology(amqp_url, topology)
