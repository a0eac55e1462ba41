"""The normaliser's state gauges after projections: a tenant's findings, runs and holds are re-read at
most once per interval, and the last projection of a burst is always reflected once the interval is over."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from prometheus_client import CollectorRegistry

from skolsynk.settings import ServiceSettings
from skolsynk.storage.findings import FINDINGS
from skolsynk_services.normaliser.metrics import NormaliserMetrics, StateGauges
from tests.helpers import wait_for

pytestmark = pytest.mark.connected

TENANT = "kommun-gauges"


def findings_gauge(registry: CollectorRegistry, code: str) -> float | None:
    return registry.get_sample_value("skolsynk_dq_findings", {"tenant": TENANT, "code": code, "severity": "error"})


async def test_a_burst_of_projections_refreshes_the_gauges_once_at_its_end(mongo, settings: ServiceSettings):
    db = mongo[settings.store.mongodb_database]
    registry = CollectorRegistry()
    metrics = NormaliserMetrics(registry)
    gauges = StateGauges(db, metrics, min_interval=0.5)
    reads: list[str | None] = []
    read_findings = gauges.refresh_findings

    async def counted(tenant_id: str | None = None) -> None:
        reads.append(tenant_id)
        await read_findings(tenant_id)

    gauges.refresh_findings = counted  # type: ignore[method-assign]
    finding = {"tenant_id": TENANT, "code": "email.invalid", "severity": "error"}

    await db[FINDINGS].insert_one(dict(finding))
    await gauges.after_projection(TENANT)  # the first projection: read at once
    assert findings_gauge(registry, "email.invalid") == 1
    assert reads == [TENANT]

    # Three more projections within the interval: nothing read now, one postponed refresh.
    for _ in range(3):
        await db[FINDINGS].insert_one(dict(finding))
        await gauges.after_projection(TENANT)
    assert reads == [TENANT]
    assert findings_gauge(registry, "email.invalid") == 1

    refresher = asyncio.create_task(gauges.run_forever(interval=3600))
    try:
        # run_forever reads every tenant once when it starts; the postponed refresh is then covered.
        await wait_for(lambda: findings_gauge(registry, "email.invalid") == 4, what="the burst's end in the gauge")
        await wait_for(lambda: not gauges._due, what="no refresh left to do")
        assert reads == [TENANT, None]

        # A projection within the interval after that is reflected when the interval is over, by one read.
        await db[FINDINGS].delete_many({"tenant_id": TENANT})
        await db[FINDINGS].insert_one({**finding, "code": "email.missing"})
        await gauges.after_projection(TENANT)
        await gauges.after_projection(TENANT)
        assert findings_gauge(registry, "email.invalid") == 4
        await wait_for(lambda: findings_gauge(registry, "email.invalid") is None, what="the postponed refresh")
        assert findings_gauge(registry, "email.missing") == 1
        assert reads == [TENANT, None, TENANT]
    finally:
        refresher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await refresher
