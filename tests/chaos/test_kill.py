"""A dispatcher process killed with SIGKILL mid-batch and started again: what it had taken but not
acknowledged is redelivered, deliveries it made but had not recorded are recognised (409 -> update),
and the vendor ends holding exactly the selection, with no resource created twice."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path

import pytest

from skolsynk.domain.subscription import VendorSubscription
from skolsynk.settings import ServiceSettings
from skolsynk.storage.subscriptions import SubscriptionStore
from skolsynk_services.normaliser.app import NormaliserSettings
from skolsynk_services.normaliser.app import build as build_normaliser
from skolsynk_testkit.devstack import ServiceProcess, start_service, write_vendor_catalogue
from skolsynk_testkit.fakes.egil_vendor import FakeEgilVendor
from skolsynk_testkit.synthetic import school_unit_codes
from tests.chaos.proxy import ChaosProxy
from tests.chaos.test_faults import API_KEY, TENANT, TIMEOUT, VENDOR, ChaosStack, the_organiser
from tests.helpers import delete_topology, wait_for

pytestmark = [pytest.mark.chaos, pytest.mark.e2e, pytest.mark.timeout(TIMEOUT)]


def dispatcher_env(settings: ServiceSettings, catalogue: Path) -> dict[str, str]:
    broker = settings.broker
    return {
        "AMQP_URL": broker.amqp_url.get_secret_value(),
        "MONGODB_URL": settings.store.mongodb_url.get_secret_value(),
        "MONGODB_DATABASE": settings.store.mongodb_database,
        "SKOLSYNK_NAMESPACE": broker.namespace,
        # The same queue arguments as the in-process services declare.
        "SKOLSYNK_DELIVERY_LIMIT": str(broker.delivery_limit),
        "SKOLSYNK_RETRY_DELAYS_SECONDS": json.dumps(list(broker.retry_delays_seconds)),
        "SKOLSYNK_MAX_ATTEMPTS": str(broker.max_attempts),
        "SKOLSYNK_LOG_FORMAT": "json",
        "SKOLSYNK_VENDOR_ID": VENDOR,
        "SKOLSYNK_VENDOR_CATALOGUE_DIR": str(catalogue),
        "SKOLSYNK_VENDOR_RETRY_TIMEOUT_SECONDS": "2",
        "SKOLSYNK_TEST_CHAOS_VENDOR_KEY": API_KEY,
        "SKOLSYNK_READINESS_GRACE_SECONDS": "0",
    }


async def test_a_dispatcher_killed_mid_batch_and_restarted_loses_and_duplicates_nothing(
    settings: ServiceSettings, tmp_path: Path
):
    vendor = FakeEgilVendor(api_keys={API_KEY: TENANT})
    await vendor.start()
    vendor.faults.delay(0.02)  # a little slower, so the kill lands mid-batch
    catalogue = write_vendor_catalogue(
        tmp_path / "vendors", VENDOR, scim_base_url=vendor.base_url, api_key_env="SKOLSYNK_TEST_CHAOS_VENDOR_KEY"
    )
    normaliser = build_normaliser(
        NormaliserSettings.model_validate({**settings.model_dump(), "date_check_interval_seconds": 86400})
    )
    await normaliser.start()
    records = the_organiser()
    await SubscriptionStore(normaliser.db).save(
        VendorSubscription(
            tenant_id=TENANT, vendor_id=VENDOR, school_unit_codes=frozenset(school_unit_codes(records)), test_mode=False
        )
    )
    unused = await ChaosProxy("127.0.0.1", 9).start()  # ChaosStack wants a proxy; this one carries nothing
    stack = ChaosStack(settings, unused, vendor, unused, apps=[normaliser])
    processes: list[ServiceProcess] = []
    try:
        env = dispatcher_env(settings, catalogue)
        processes.append(start_service("dispatcher-1", "skolsynk_services.dispatcher", env=env, log_dir=tmp_path))
        await asyncio.to_thread(processes[0].wait_ready, 60)
        await stack.publish(records)
        await wait_for(lambda: len(vendor.requests) >= 15, timeout=60, interval=0.02, what="deliveries under way")
        processes[0].process.send_signal(signal.SIGKILL)
        await asyncio.to_thread(processes[0].process.wait, 10)
        held_at_kill = sum(len(i) for i in stack.held().values())
        processes.append(start_service("dispatcher-2", "skolsynk_services.dispatcher", env=env, log_dir=tmp_path))
        await stack.converged(records, timeout=150)
        assert held_at_kill < sum(len(i) for i in stack.held().values()), "the kill came after the last delivery"
        duplicates = {k: n for k, n in stack.creates_per_resource().items() if n > 1}
        assert duplicates == {}, f"created twice: {duplicates}"
    finally:
        for process in processes:
            process.terminate(timeout=20)
        await normaliser.drain(1)
        await normaliser.close()
        await unused.stop()
        await vendor.stop()
        from skolsynk.messaging import skolsynk_topology

        topology = skolsynk_topology(settings.broker.namespace, vendor_ids=[VENDOR])
        await delete_topology(settings.broker.amqp_url.get_secret_value(), topology)
