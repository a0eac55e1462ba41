"""Broker topology as data: names, kinds, queue arguments and the retry ladder."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from skolsynk.messaging.topology import (
    EXCHANGE_PURPOSES,
    Binding,
    QueueSpec,
    Topology,
    queue_name,
    skolsynk_topology,
    work_queue_arguments,
)

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("namespace", ["skolsynk", "staging-2"])
def test_exchanges_are_prefixed_with_the_namespace_and_have_their_kinds(namespace: str) -> None:
    topology = skolsynk_topology(namespace)
    assert topology.namespace == namespace
    assert topology.exchanges == {
        f"{namespace}.source": "topic",
        f"{namespace}.vendor": "topic",
        f"{namespace}.control": "topic",
        f"{namespace}.gdpr": "topic",
        f"{namespace}.dead-letter": "direct",
    }
    assert topology.dead_letter_exchange == f"{namespace}.dead-letter"


def test_work_queues_without_vendors() -> None:
    topology = skolsynk_topology("ns")
    assert [q.name for q in topology.queues] == [
        "ns.normaliser.source-events",
        "ns.normaliser.projections",
        "ns.connectors.sync-requests",
        "ns.gdpr.events",
    ]
    assert topology.queue("ns.normaliser.source-events").bindings == (Binding("ns.source", "#"),)
    assert topology.queue("ns.connectors.sync-requests").bindings == (Binding("ns.control", "sync.requested"),)
    assert topology.queue("ns.gdpr.events").bindings == (Binding("ns.gdpr", "#"),)
    assert topology.queue("ns.normaliser.projections").bindings == (
        Binding("ns.control", "tenant.projection.requested"),
    )


def test_one_dispatcher_queue_per_vendor_deduplicated_and_sorted() -> None:
    topology = skolsynk_topology("ns", vendor_ids=["zeta", "alpha", "zeta", "mid-vendor", "alpha"])
    dispatchers = [q for q in topology.queues if q.name.startswith("ns.dispatcher.")]
    assert [q.name for q in dispatchers] == ["ns.dispatcher.alpha", "ns.dispatcher.mid-vendor", "ns.dispatcher.zeta"]
    assert topology.queue("ns.dispatcher.alpha").bindings == (Binding("ns.vendor", "alpha.*"),)
    assert len({q.name for q in topology.queues}) == len(topology.queues)


def test_vendor_ids_may_be_any_iterable() -> None:
    topology = skolsynk_topology("ns", vendor_ids=(v for v in ["b", "a"]))
    assert [q.name for q in topology.queues][-2:] == ["ns.dispatcher.a", "ns.dispatcher.b"]


def test_every_binding_targets_a_declared_exchange() -> None:
    topology = skolsynk_topology("ns", vendor_ids=["v1", "v2"])
    for spec in topology.queues:
        assert spec.bindings, spec.name
        for binding in spec.bindings:
            assert binding.exchange in topology.exchanges


def test_queue_settings_are_passed_to_every_work_queue() -> None:
    topology = skolsynk_topology("ns", delivery_limit=7, retry_delays_seconds=(0.1, 0.2), vendor_ids=["v"])
    for spec in topology.queues:
        assert spec.delivery_limit == 7
        assert spec.retry_delays_seconds == (0.1, 0.2)
        assert spec.single_active_consumer is False


def test_queue_name() -> None:
    assert queue_name("ns", "dispatcher", "demo-vendor") == "ns.dispatcher.demo-vendor"


# ---------------------------------------------------------------------------
# Lookups
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("purpose", [*EXCHANGE_PURPOSES, "dead-letter"])
def test_exchange_by_purpose(purpose: str) -> None:
    assert skolsynk_topology("ns").exchange(purpose) == f"ns.{purpose}"


@pytest.mark.parametrize("purpose", ["unknown", "ns.source", "", "Source", "dead_letter"])
def test_unknown_exchange_purpose_raises_key_error(purpose: str) -> None:
    with pytest.raises(KeyError, match="not part of the topology"):
        skolsynk_topology("ns").exchange(purpose)


@pytest.mark.parametrize("name", ["ns.dispatcher.nobody", "normaliser.source-events", "other.gdpr.events", ""])
def test_unknown_queue_raises_key_error(name: str) -> None:
    with pytest.raises(KeyError, match="not part of the topology"):
        skolsynk_topology("ns").queue(name)


def test_with_queues_adds_without_changing_the_original() -> None:
    topology = skolsynk_topology("ns")
    extra = QueueSpec(name="ns.tests.probe", single_active_consumer=True)
    bigger = topology.with_queues([extra])
    assert bigger.queue("ns.tests.probe") is extra
    assert bigger.exchanges == topology.exchanges
    assert bigger.exchanges is not topology.exchanges
    with pytest.raises(KeyError):
        topology.queue("ns.tests.probe")
    assert len(bigger.queues) == len(topology.queues) + 1


# ---------------------------------------------------------------------------
# QueueSpec: DLQ and retry ladder
# ---------------------------------------------------------------------------


def test_dead_letter_and_retry_queue_names() -> None:
    spec = QueueSpec(name="ns.gdpr.events")
    assert spec.dead_letter_queue == "ns.gdpr.events.dlq"
    assert [spec.retry_queue(n) for n in range(4)] == [f"ns.gdpr.events.retry.{n}" for n in range(4)]


@pytest.mark.parametrize(
    ("attempt", "step"),
    [(-3, 0), (0, 0), (1, 0), (2, 1), (3, 2), (4, 3), (5, 3), (6, 3), (1000, 3)],
)
def test_retry_step_for_attempt_with_the_default_ladder(attempt: int, step: int) -> None:
    assert QueueSpec(name="q").retry_step_for_attempt(attempt) == step


@pytest.mark.parametrize(("attempt", "step"), [(1, 0), (2, 0), (50, 0)])
def test_retry_step_with_a_single_delay(attempt: int, step: int) -> None:
    assert QueueSpec(name="q", retry_delays_seconds=(5.0,)).retry_step_for_attempt(attempt) == step


@given(
    ladder=st.lists(st.floats(min_value=0.001, max_value=3600), min_size=1, max_size=10).map(tuple),
    attempt=st.integers(min_value=-5, max_value=10_000),
)
def test_retry_step_is_always_a_declared_step_and_monotonic(ladder: tuple[float, ...], attempt: int) -> None:
    spec = QueueSpec(name="q", retry_delays_seconds=ladder)
    step = spec.retry_step_for_attempt(attempt)
    assert 0 <= step < len(ladder)
    assert spec.retry_step_for_attempt(attempt + 1) >= step
    if 1 <= attempt <= len(ladder):
        assert step == attempt - 1  # the ladder is walked one step per attempt
    elif attempt > len(ladder):
        assert step == len(ladder) - 1  # then stays on the longest delay


# ---------------------------------------------------------------------------
# Work-queue arguments
# ---------------------------------------------------------------------------


def test_work_queue_arguments() -> None:
    topology = skolsynk_topology("ns", delivery_limit=9)
    spec = topology.queue("ns.normaliser.source-events")
    assert work_queue_arguments(topology, spec) == {
        "x-queue-type": "quorum",
        "x-delivery-limit": 9,
        "x-dead-letter-exchange": "ns.dead-letter",
        "x-dead-letter-routing-key": "ns.normaliser.source-events",
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
    }


@pytest.mark.parametrize("vendor", ["demo-vendor", "another"])
def test_dead_letter_routing_key_is_the_queue_name(vendor: str) -> None:
    topology = skolsynk_topology("ns", vendor_ids=[vendor])
    for spec in topology.queues:
        arguments = work_queue_arguments(topology, spec)
        assert arguments["x-dead-letter-routing-key"] == spec.name
        assert arguments["x-dead-letter-exchange"] == topology.dead_letter_exchange


@pytest.mark.parametrize(("single_active", "expected"), [(False, None), (True, True)])
def test_single_active_consumer_only_when_asked(single_active: bool, expected: bool | None) -> None:
    topology = Topology("ns", {"ns.dead-letter": "direct"})
    spec = QueueSpec(name="ns.svc.work", delivery_limit=3, single_active_consumer=single_active)
    arguments = work_queue_arguments(topology, spec)
    assert arguments.get("x-single-active-consumer") is expected
    assert ("x-single-active-consumer" in arguments) is single_active
    assert arguments["x-delivery-limit"] == 3
    assert arguments["x-queue-type"] == "quorum"


def test_work_queue_arguments_are_a_fresh_dict() -> None:
    topology = skolsynk_topology("ns")
    spec = topology.queues[0]
    first = work_queue_arguments(topology, spec)
    first["x-delivery-limit"] = 999
    assert work_queue_arguments(topology, spec)["x-delivery-limit"] == 20
