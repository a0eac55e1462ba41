"""`make demo`: the main job on the embedded defaults.

Today (foundation): starts the infrastructure (local RabbitMQ, the SecantusDB Mongo wire server), runs
every skolsynk service as its own process, waits until each answers /readyz, sends a source event
through the normaliser, shows each service's health and metrics, then stops them with SIGTERM and
checks they drained and exited cleanly. Later issues extend it to a full sync from fake sources to
fake vendors.

Environment: DEMO_KEEP_RUNNING=1 keeps the services up until Ctrl-C; AMQP_URL and MONGODB_URL use an
existing broker / MongoDB instead of the embedded ones (by default the demo runs in its own vhost,
deleted at the end).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from pymongo import AsyncMongoClient

from skolsynk.contracts.source import SourceRecord
from skolsynk.devstack import (
    DevStackError,
    MongoWireServer,
    ServiceProcess,
    amqp_url_with_vhost,
    create_vhost,
    delete_vhost,
    ensure_rabbitmq,
    publish_messages,
    start_mongo_wire_server,
    start_service,
    wait_until,
    write_vendor_catalogue,
)
from skolsynk.domain.ids import entity_id
from skolsynk.domain.selection import StoredEntity, TenantState, project
from skolsynk.domain.ss12000 import ENTITY_MODELS
from skolsynk.domain.subscription import VendorProfile, VendorSubscription
from skolsynk.settings import DEFAULT_AMQP_URL
from skolsynk.storage.subscriptions import SubscriptionStore
from skolsynk.synthetic import full_run, organiser, school_unit_codes, today

ROOT = Path(__file__).resolve().parent.parent
LOG_DIR = ROOT / ".demo"
NAMESPACE = "demo"
DATABASE = "skolsynk_demo"
SERVICES = {
    "normaliser": ("normaliser", {}),
    "dispatcher-demo-vendor": ("dispatcher", {"SKOLSYNK_VENDOR_ID": "demo-vendor"}),
    "gdpr": ("gdpr", {}),
    "admin": ("admin", {}),
}


def say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def metric(service: ServiceProcess, name: str) -> str:
    _, body = service.get("/metrics")
    for line in body.decode().splitlines():
        if line.startswith(name):
            return line.split()[-1]
    return "-"


TENANT = "demo-kommun"
VENDOR = "demo-vendor"
SOURCE = "demo-egil"


async def subscribe(mongo_url: str, records: list[SourceRecord]) -> None:
    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(mongo_url)
    try:
        await SubscriptionStore(client[DATABASE]).save(
            VendorSubscription(
                tenant_id=TENANT,
                vendor_id=VENDOR,
                school_unit_codes=frozenset(school_unit_codes(records)),
                test_mode=False,
            )
        )
    finally:
        await client.close()


def expected_changes(records: list[SourceRecord]) -> int:
    """What the vendor should receive, computed by the same rules without the services."""
    entities = [
        StoredEntity(
            entity_id(TENANT, SOURCE, r.kind, r.key),
            SOURCE,
            ENTITY_MODELS[r.kind].model_validate({**r.data, "key": r.key, "kind": r.kind}),
        )
        for r in records
    ]
    state = TenantState(TENANT, entities)
    subscription = VendorSubscription(
        tenant_id=TENANT, vendor_id=VENDOR, school_unit_codes=frozenset(school_unit_codes(records))
    )
    return len(project(state, subscription, VendorProfile(vendor_id=VENDOR), today()))


def wait_for_vendor_url(log_path: Path, process: subprocess.Popen[bytes]) -> str:
    found: list[str] = []

    def announced() -> bool:
        if process.poll() is not None:
            raise DevStackError(f"the fake vendor exited; see {log_path}")
        match = re.search(r"listening on (\S+)", log_path.read_text(errors="replace"))
        if match:
            found.append(match.group(1))
        return bool(found)

    wait_until(announced, timeout=30, what="the fake vendor server")
    return found[0].rstrip("/")


def vendor_holds(base_url: str, api_key: str) -> dict[str, int]:
    """What the vendor's server holds, by EGIL type (its GET lists)."""
    counts = {}
    for endpoint in ("Organisations", "SchoolUnits", "Users", "Employments", "StudentGroups", "Activities"):
        request = urllib.request.Request(f"{base_url}/{endpoint}", headers={"X-API-Key": api_key})  # noqa: S310
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            counts[endpoint] = int(json.loads(response.read())["totalResults"])
    return counts


def main() -> int:
    LOG_DIR.mkdir(exist_ok=True)
    say("skolsynk demo: a sync from a fake source through the normaliser to a vendor's EGIL SCIM server")
    say("  [1/5] RabbitMQ ...")
    amqp_url = os.environ.get("AMQP_URL", "")
    demo_vhost: str | None = None
    if not amqp_url:
        ensure_rabbitmq()
        demo_vhost = "skolsynk-demo"
        with contextlib.suppress(DevStackError):
            delete_vhost(demo_vhost)  # a previous demo that was interrupted
        create_vhost(demo_vhost)
        amqp_url = amqp_url_with_vhost(DEFAULT_AMQP_URL, demo_vhost)
    mongo: MongoWireServer | None = None
    mongo_url = os.environ.get("MONGODB_URL")
    if not mongo_url:
        say("  [2/5] starting the Mongo wire server (secantusd-py, in memory) ...")
        mongo = start_mongo_wire_server(log_path=LOG_DIR / "secantusd.log")
        mongo_url = mongo.url
    env = {
        "AMQP_URL": amqp_url,
        "MONGODB_URL": mongo_url,
        "MONGODB_DATABASE": DATABASE,
        "SKOLSYNK_NAMESPACE": NAMESPACE,
        "SKOLSYNK_LOG_FORMAT": "json",
        "SKOLSYNK_READINESS_GRACE_SECONDS": "1",
    }
    services: list[ServiceProcess] = []
    vendor_server: subprocess.Popen[bytes] | None = None
    try:
        vendor_key = secrets.token_urlsafe(24)
        vendor_log = LOG_DIR / "fake-vendor.log"
        with vendor_log.open("wb") as log_file:
            vendor_server = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "skolsynk.fakes.egil_vendor",
                    "--port",
                    "0",
                    "--api-key",
                    f"{vendor_key}={TENANT}",
                ],
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        vendor_url = wait_for_vendor_url(vendor_log, vendor_server)
        say(f"        a fake EGIL SCIM vendor server (like the reference server) on {vendor_url}")
        env["SKOLSYNK_VENDOR_CATALOGUE_DIR"] = str(
            write_vendor_catalogue(LOG_DIR / "vendors", VENDOR, scim_base_url=vendor_url, api_key_env="DEMO_VENDOR_KEY")
        )
        env["DEMO_VENDOR_KEY"] = vendor_key
        say("  [3/5] starting services ...")
        for name, (module, extra) in SERVICES.items():
            services.append(start_service(name, module, env={**env, **extra}, log_dir=LOG_DIR))
        for service in services:
            started = time.monotonic()
            service.wait_ready(timeout=90)
            say(f"        {service.name:<24} ready in {time.monotonic() - started:4.1f}s  {service.health_url}/readyz")
        records = organiser(seed=1, school_units=2, students_per_unit=12)
        expected = expected_changes(records)
        say(f"  [4/5] a full snapshot of {len(records)} records from a fake EGIL source to {VENDOR} ...")
        asyncio.run(subscribe(mongo_url, records))
        normaliser, dispatcher = services[0], services[1]
        vendor_queue = f"{NAMESPACE}.dispatcher.{VENDOR}"
        delivered = f'skolsynk_messages_consumed_total{{outcome="ack",queue="{vendor_queue}"}}'
        projections = f'skolsynk_messages_consumed_total{{outcome="ack",queue="{NAMESPACE}.normaliser.projections"}}'

        def send_snapshot() -> int:
            messages = list(full_run(records, source_id=SOURCE, source_kind="egil", page_size=20))
            return asyncio.run(
                publish_messages(amqp_url, f"{NAMESPACE}.source", f"egil.{TENANT}", messages, tenant_id=TENANT)
            )

        sent = send_snapshot()
        wait_until(
            lambda: metric(dispatcher, delivered) == f"{float(expected)}",
            timeout=90,
            what=f"{expected} changes to reach {VENDOR}",
        )
        held = vendor_holds(vendor_url, vendor_key)
        say(f"        first sync: {sent} messages in, {expected} changes pushed by EGIL SCIM to {VENDOR}")
        say("        the vendor now holds: " + ", ".join(f"{n} {kind}" for kind, n in held.items()))
        before = float(metric(normaliser, projections))
        sent = send_snapshot()
        wait_until(lambda: float(metric(normaliser, projections)) > before, timeout=90, what="the second projection")
        wait_until(lambda: metric(normaliser, "skolsynk_outbox_pending") == "0.0", timeout=30, what="an empty outbox")
        if metric(dispatcher, delivered) != f"{float(expected)}":
            say("demo FAILED: the unchanged snapshot sent changes")
            return 1
        say(f"        same snapshot again: {sent} messages in, nothing new sent (unchanged entities cost nothing)")
        say(f"        {'service':<24} {'ready':>5} {'reconnects':>10}")
        for service in services:
            say(
                f"        {service.name:<24} {metric(service, 'skolsynk_ready'):>5} "
                f"{metric(service, 'skolsynk_broker_reconnects_total'):>10}"
            )
        if os.environ.get("DEMO_KEEP_RUNNING"):
            say("  services are running; Ctrl-C stops them")
            with contextlib.suppress(KeyboardInterrupt):
                signal.pause()
        say("  [5/5] stopping services with SIGTERM (drain, then close) ...")
        failures = 0
        for service in services:
            code = service.terminate(timeout=60)
            failures += code != 0
            say(f"        {service.name:<24} exit {code}")
        say(f"  logs: {LOG_DIR}/")
        say("demo OK" if failures == 0 else f"demo FAILED: {failures} service(s) did not exit cleanly")
        return 1 if failures else 0
    finally:
        for service in services:
            service.terminate(timeout=10)
        if vendor_server is not None:
            vendor_server.terminate()
            vendor_server.wait(timeout=10)
        if mongo is not None:
            mongo.stop()
        if demo_vhost is not None:
            delete_vhost(demo_vhost)


if __name__ == "__main__":
    raise SystemExit(main())
