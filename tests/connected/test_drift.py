"""Drift checks against the fake EGIL vendor: a user the vendor lost is sent again, a user whose
DELETE was lost is deleted again, and accounts skolsynk never sent are reported, not touched."""

from __future__ import annotations

import copy
import uuid
from pathlib import Path

import aiohttp
import pytest

from skolsynk.contracts.source import SourceRecord
from skolsynk.domain.ss12000 import EntityKind
from skolsynk.settings import ServiceSettings
from skolsynk_services.dispatcher.drift import DriftChecker
from tests.connected.test_dispatcher import API_KEY, TENANT, Stack, person_id, start_stack, stop_stack
from tests.helpers import wait_for

pytestmark = [
    pytest.mark.connected,
    pytest.mark.timeout(120),
    pytest.mark.queues("normaliser.source-events", "normaliser.projections", "gdpr.events"),
]


@pytest.fixture
async def stack(settings: ServiceSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    built = await start_stack(settings, tmp_path, monkeypatch)
    try:
        yield built
    finally:
        await stop_stack(built)


async def test_drift_is_found_and_repaired(stack: Stack):
    assert stack.vendor is not None
    vendor = stack.vendor
    await stack.subscribe(test_mode=False)
    await stack.sync()
    await stack.settled()
    users = vendor.resources(TENANT, "Users")
    lost, leaver = str(person_id("student-0-2")), str(person_id("student-1-1"))
    leaver_body = copy.deepcopy(users[leaver])
    # The leaver leaves; then the vendor "restores a backup": the leaver is back, another user is gone,
    # and someone added an account by hand.
    remaining = []
    for record in stack.records:
        if record.key == "student-1-1":
            continue
        if record.kind is EntityKind.GROUP:
            members = [m for m in record.data["memberships"] if m["person"] != "student-1-1"]
            record = SourceRecord(kind=record.kind, key=record.key, data={**record.data, "memberships": members})
        remaining.append(record)
    await stack.sync(remaining)
    await stack.settled()
    assert leaver not in vendor.resources(TENANT, "Users")
    unmanaged_body = {**copy.deepcopy(leaver_body), "externalId": str(uuid.uuid4())}
    headers = {"X-API-Key": API_KEY, "Content-Type": "application/scim+json"}
    async with aiohttp.ClientSession(headers=headers) as http:
        async with http.post(f"{vendor.base_url}/Users", json=leaver_body) as response:
            assert response.status == 201
        async with http.post(f"{vendor.base_url}/Users", json=unmanaged_body) as response:
            assert response.status == 201
        async with http.delete(f"{vendor.base_url}/Users/{lost}") as response:
            assert response.status in (200, 204)

    checker: DriftChecker = stack.dispatcher.extensions["drift"]
    report = await checker.check()
    assert report.missing == {TENANT: [lost]}
    assert report.ghosts == {TENANT: [leaver]}
    assert (report.unmanaged, report.redeleted, report.resend_requested) == (1, 1, [TENANT])
    assert leaver not in vendor.resources(TENANT, "Users")
    await wait_for(lambda: lost in vendor.resources(TENANT, "Users"), timeout=60, what="the lost user sent again")
    assert unmanaged_body["externalId"] in vendor.resources(TENANT, "Users"), "an unmanaged account was touched"
    stored = await stack.dispatcher.db["drift_reports"].find_one({"vendor_id": report.vendor_id})
    assert stored is not None
    assert (stored["missing"], stored["ghosts"], stored["unmanaged"]) == (1, 1, 1)
    # Per organiser too: what the admin shows on the subscription's page (issue 18).
    assert (stored["missing_by_tenant"], stored["ghosts_by_tenant"]) == ({TENANT: 1}, {TENANT: 1})
    registry = stack.dispatcher.metrics.registry
    labels = {"vendor": report.vendor_id, "finding": "missing"}
    assert registry.get_sample_value("skolsynk_vendor_drift", labels) == 1

    await stack.settled()
    again = await checker.check()
    assert (again.missing, again.ghosts, again.unmanaged) == ({}, {}, 1)
    assert registry.get_sample_value("skolsynk_vendor_drift", labels) == 0
