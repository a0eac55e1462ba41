"""Scale-out: two normaliser replicas and two dispatcher replicas for one vendor, competing for the
same queues, keep every guarantee: the vendor ends exact after a full sync and after a change set
(moves, leavers, joiners), nothing is created twice, and both replicas of each service did work (the
per-tenant projection lock and the per-entity versions are what make that safe). A projection of the
whole organiser cut in slices of time is carried on by whichever replica takes its continuation."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from skolsynk.settings import ServiceSettings
from skolsynk_services.dispatcher.app import build as build_dispatcher
from skolsynk_services.normaliser import projection
from skolsynk_services.normaliser.app import build as build_normaliser
from skolsynk_testkit.synthetic import change_set
from tests.chaos.test_faults import ChaosStack, chaos_stack, the_organiser
from tests.helpers import wait_for

pytestmark = [pytest.mark.chaos, pytest.mark.connected, pytest.mark.timeout(300)]


@pytest.fixture
async def two_of_each(
    settings: ServiceSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[ChaosStack]:
    # A small prefetch, so that the broker hands work to both replicas even for a small organiser.
    settings = settings.model_copy(update={"broker": settings.broker.model_copy(update={"prefetch": 2})})
    async with chaos_stack(settings, tmp_path, monkeypatch) as stack:
        extra = [build_normaliser(stack.normaliser.settings), build_dispatcher(stack.dispatcher.settings)]  # type: ignore[arg-type]
        for app in extra:
            await app.start()
        stack.apps += extra
        yield stack


def consumed(app: object, queue_part: str) -> float:
    registry = app.metrics.registry  # type: ignore[attr-defined]
    return sum(
        sample.value
        for metric in registry.collect()
        if metric.name == "skolsynk_messages_consumed"
        for sample in metric.samples
        if sample.name.endswith("_total")
        and queue_part in sample.labels.get("queue", "")
        and sample.labels.get("outcome") == "ack"
    )


async def sync_and_change(stack: ChaosStack, *, seed: int) -> None:
    """A full sync, then a change set (moves, leavers, joiners), each until the vendor is exact."""
    records = the_organiser()
    await stack.publish(records)
    await stack.converged(records)
    changes = change_set(records, seed=seed, moves=0.2, leavers=0.1, joiners=0.1)
    await stack.publish(changes.records)
    await stack.converged(changes.records)


async def test_two_replicas_of_the_normaliser_and_the_dispatcher_end_exact(two_of_each: ChaosStack):
    stack = two_of_each
    await sync_and_change(stack, seed=2)

    duplicates = {k: n for k, n in stack.creates_per_resource().items() if n > 1}
    assert duplicates == {}, f"created twice: {duplicates}"
    normalisers = [a for a in stack.apps if a.name == "normaliser"]
    dispatchers = [a for a in stack.apps if a.name.startswith("dispatcher")]
    assert len(normalisers) == 2
    assert len(dispatchers) == 2
    for app in normalisers:
        assert consumed(app, "normaliser.source-events") > 0, "a normaliser replica handled no source event"
    for app in dispatchers:
        assert consumed(app, "dispatcher.") > 0, "a dispatcher replica delivered nothing"


async def test_a_projection_in_slices_is_carried_on_by_both_normaliser_replicas(
    two_of_each: ChaosStack, monkeypatch: pytest.MonkeyPatch
):
    """Every chunk of four entities is a slice: the continuations go to whichever replica the broker hands
    them, each resumes the checkpoint the other left with the tenant's lock, and the vendor ends exact, the
    change set's removals (gathered across slices and replicas) included."""
    stack = two_of_each
    normalisers = [a for a in stack.apps if a.name == "normaliser"]
    monkeypatch.setattr(projection, "CHUNK_SIZE", 4)  # the organisation level is one chunk all the same
    resumed = [0 for _ in normalisers]
    for n, app in enumerate(normalisers):
        handlers = app.extensions["handlers"]
        monkeypatch.setattr(handlers, "slice_seconds", 1e-6)
        resume = handlers._resume

        async def counted(tenant_id: str, checkpoint: dict[str, Any], n: int = n, resume: Any = resume) -> Any:
            resumed[n] += 1
            return await resume(tenant_id, checkpoint)

        monkeypatch.setattr(handlers, "_resume", counted)

    await sync_and_change(stack, seed=3)

    assert {k: n for k, n in stack.creates_per_resource().items() if n > 1} == {}
    assert sum(resumed) > 10
    assert all(resumed), f"slices resumed per replica: {resumed}"
    removals = normalisers[0].db["projection_removals"]

    async def none_left() -> bool:
        return await removals.count_documents({}) == 0

    await wait_for(none_left, what="the sliced projections' removals to be cleared")
