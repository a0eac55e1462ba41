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
import os
import signal
import sys
import time
from pathlib import Path

import aio_pika

from skolsynk.contracts import SyncRequested
from skolsynk.devstack import (
    DevStackError,
    MongoWireServer,
    ServiceProcess,
    amqp_url_with_vhost,
    create_vhost,
    delete_vhost,
    ensure_rabbitmq,
    start_mongo_wire_server,
    start_service,
    wait_until,
)
from skolsynk.settings import DEFAULT_AMQP_URL

ROOT = Path(__file__).resolve().parent.parent
LOG_DIR = ROOT / ".demo"
NAMESPACE = "demo"
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


async def send_source_event(amqp_url: str) -> None:
    envelope = SyncRequested(source_id="demo-source", requested_by="demo").to_envelope(
        tenant_id="demo-kommun", producer="demo"
    )
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        exchange = await channel.get_exchange(f"{NAMESPACE}.source")
        await exchange.publish(
            aio_pika.Message(envelope.model_dump_json().encode(), delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
            routing_key="demo.demo-kommun",
        )


def main() -> int:
    LOG_DIR.mkdir(exist_ok=True)
    say("skolsynk demo: foundation (services on the real broker and the Mongo wire server)")
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
        "MONGODB_DATABASE": "skolsynk_demo",
        "SKOLSYNK_NAMESPACE": NAMESPACE,
        "SKOLSYNK_LOG_FORMAT": "json",
        "SKOLSYNK_READINESS_GRACE_SECONDS": "1",
    }
    services: list[ServiceProcess] = []
    try:
        say("  [3/5] starting services ...")
        for name, (module, extra) in SERVICES.items():
            services.append(start_service(name, module, env={**env, **extra}, log_dir=LOG_DIR))
        for service in services:
            started = time.monotonic()
            service.wait_ready(timeout=90)
            say(f"        {service.name:<24} ready in {time.monotonic() - started:4.1f}s  {service.health_url}/readyz")
        say("  [4/5] sending a source event to the normaliser ...")
        asyncio.run(send_source_event(amqp_url))
        normaliser = services[0]
        queue = f"{NAMESPACE}.normaliser.source-events"
        wait_until(
            lambda: metric(normaliser, f'skolsynk_messages_consumed_total{{outcome="ack",queue="{queue}"}}') == "1.0",
            timeout=30,
            what="the normaliser to consume the event",
        )
        say("        consumed and acked by the normaliser")
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
        if mongo is not None:
            mongo.stop()
        if demo_vhost is not None:
            delete_vhost(demo_vhost)


if __name__ == "__main__":
    raise SystemExit(main())
