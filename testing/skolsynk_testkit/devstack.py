"""The embedded infrastructure for the demo, the tests and CI on a developer machine.

* RabbitMQ: the local broker (``rabbitmq-server -detached`` starts it if it is not running).
* MongoDB: the SecantusDB wire server (``secantusd-py``), started as its own process on a free port
  with in-memory storage. Production and docker compose point ``MONGODB_URL`` at a real replica set.

Nothing here is used by the services themselves.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aio_pika
import yaml
from pymongo import MongoClient
from pymongo.errors import PyMongoError

from skolsynk.contracts.envelope import MessageContract


class DevStackError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_until(predicate: Callable[[], bool], *, timeout: float, interval: float = 0.2, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise DevStackError(f"timed out after {timeout:.0f}s waiting for {what}")


# --- RabbitMQ ---------------------------------------------------------------------------------


def ensure_rabbitmq(host: str = "127.0.0.1", port: int = 5672, *, timeout: float = 90.0) -> None:
    """Make sure the local broker is accepting connections, starting it if needed."""
    if port_open(host, port):
        return
    if shutil.which("rabbitmq-server") is None:
        raise DevStackError(f"RabbitMQ is not reachable on {host}:{port} and rabbitmq-server is not installed")
    subprocess.run(["rabbitmq-server", "-detached"], check=False, capture_output=True)
    wait_until(lambda: port_open(host, port), timeout=timeout, what=f"RabbitMQ on {host}:{port}")


def rabbitmqctl(*args: str, timeout: float = 60.0) -> str:
    result = subprocess.run(["rabbitmqctl", "-q", *args], capture_output=True, text=True, timeout=timeout, check=False)
    if result.returncode != 0:
        raise DevStackError(f"rabbitmqctl {' '.join(args)} failed: {result.stderr.strip() or result.stdout.strip()}")
    return result.stdout


def create_vhost(name: str, user: str = "guest") -> None:
    rabbitmqctl("add_vhost", name)
    rabbitmqctl("set_permissions", "-p", name, user, ".*", ".*", ".*")


def delete_vhost(name: str) -> None:
    rabbitmqctl("delete_vhost", name)


#: The description a vhost made by :func:`claim_vhost` carries: who made it, so that a later run knows
#: whether a vhost of that name is a leftover of its own kind (its maker is gone) or someone else's.
_CLAIM = "made by skolsynk devstack: host {host} pid {pid}"
_CLAIM_PATTERN = re.compile(r"^made by skolsynk devstack: host (?P<host>\S+) pid (?P<pid>\d+)$")


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def claim_vhost(name: str, *, attempts: int = 20) -> str:
    """A vhost of this process's own, named ``name`` or, when that one is taken, ``name-2``, ``name-3``...
    A vhost of that name is deleted and made again only when this machine's devstack made it and the
    process that made it is gone (an interrupted run); one that a running process uses, or that anyone
    else made, is never touched. Returns the vhost's name (delete it with :func:`delete_vhost`)."""
    host = socket.gethostname()
    described = {}
    for line in rabbitmqctl("list_vhosts", "name", "description").splitlines()[1:]:
        vhost, _, description = line.partition("\t")
        described[vhost] = description.strip()
    for attempt in range(1, attempts + 1):
        candidate = name if attempt == 1 else f"{name}-{attempt}"
        if candidate in described:
            claim = _CLAIM_PATTERN.match(described[candidate])
            if claim is None or claim["host"] != host or _process_alive(int(claim["pid"])):
                continue
            delete_vhost(candidate)  # our own kind's leftover: its maker is gone
        rabbitmqctl("add_vhost", candidate, "--description", _CLAIM.format(host=host, pid=os.getpid()))
        rabbitmqctl("set_permissions", "-p", candidate, "guest", ".*", ".*", ".*")
        return candidate
    raise DevStackError(f"no free vhost among {name} .. {name}-{attempts}: delete the ones no longer used")


# --- the Mongo wire server --------------------------------------------------------------------


@dataclass
class MongoWireServer:
    process: subprocess.Popen[bytes]
    url: str
    log_path: Path

    def stop(self, timeout: float = 10.0) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=timeout)


def mongo_ping(url: str) -> bool:
    client: MongoClient[dict[str, object]] = MongoClient(url, serverSelectionTimeoutMS=500)
    try:
        client.admin.command("ping")
    except PyMongoError:
        return False
    finally:
        client.close()
    return True


def start_mongo_wire_server(
    *,
    port: int | None = None,
    log_path: Path | None = None,
    timeout: float = 60.0,
    storage_path: Path | None = None,
    ttl_sweep_seconds: float | None = None,
    cache_size: str | None = None,
) -> MongoWireServer:
    """Start ``secantusd-py`` and wait until it answers ``ping``: in memory, or on disk in
    ``storage_path`` (so a restart on the same port and path keeps the data, for fault tests).

    ``ttl_sweep_seconds``: how often the server expires TTL-indexed documents (its default, like mongod's,
    is 60 s; 0 never). Its sweep decodes every document of every TTL-indexed collection under the server's
    one lock (about 2 s per 80,000 documents here), which mongod's index-driven TTL monitor does not: the
    benchmark can move it out of the way of a latency measurement (docs/benchmarks.md). ``secantusd-py``
    reads the setting from its configuration file but never applies it, so with it the server is started
    by :mod:`skolsynk_testkit.mongo_server`, which does; so is a ``cache_size`` other than its 1G (in memory,
    the cache holds all the data: the benchmark's L needs more)."""
    port = port or free_port()
    executable = shutil.which("secantusd-py") or str(Path(sys.executable).with_name("secantusd-py"))
    if not Path(executable).exists():
        raise DevStackError("secantusd-py not found: install the dev dependencies (make install)")
    log_path = log_path or Path(os.environ.get("TMPDIR", "/tmp")) / f"secantusd-{port}.log"  # noqa: S108
    command = [executable]
    extra: list[str] = []
    if ttl_sweep_seconds is not None or cache_size is not None:
        command = [sys.executable, "-m", "skolsynk_testkit.mongo_server"]
        if ttl_sweep_seconds is not None:
            extra += ["--ttl-sweep-seconds", str(float(ttl_sweep_seconds))]
        if cache_size is not None:
            extra += ["--cache-size", cache_size]
    with log_path.open("wb") as log_file:  # the child keeps its own descriptor
        process = subprocess.Popen(
            [
                *command,
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--storage-path",
                str(storage_path) if storage_path is not None else ":memory:",
                "--log-level",
                "WARNING",
                *extra,
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"mongodb://127.0.0.1:{port}/?directConnection=true"
    server = MongoWireServer(process=process, url=url, log_path=log_path)

    def up() -> bool:
        if process.poll() is not None:
            raise DevStackError(f"secantusd-py exited with {process.returncode}; see {log_path}")
        return mongo_ping(url)

    try:
        wait_until(up, timeout=timeout, what=f"the Mongo wire server on port {port}")
    except BaseException:
        server.stop()
        raise
    return server


# --- services as processes ------------------------------------------------------------------------


@dataclass
class ServiceProcess:
    """A skolsynk service started as its own process (``python -m <module>``) with its ports chosen
    by the OS (port 0) and read back from its JSON log, so parallel runs never collide."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    _ports: dict[str, int] = field(default_factory=dict)

    def logged_events(self) -> list[dict[str, Any]]:
        events = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                with contextlib.suppress(ValueError):
                    events.append(json.loads(line))
        return events

    def port_of(self, event: str, timeout: float = 60.0) -> int:
        """The port a server announced in its ``event`` log line (``health_server_started``,
        ``web_app_started``)."""
        if event not in self._ports:

            def announced() -> bool:
                self._check_alive()
                for entry in self.logged_events():
                    if entry.get("event") == event and isinstance(entry.get("port"), int):
                        self._ports[event] = entry["port"]
                        return True
                return False

            wait_until(announced, timeout=timeout, what=f"{self.name} to log {event}")
        return self._ports[event]

    @property
    def health_url(self) -> str:
        return f"http://127.0.0.1:{self.port_of('health_server_started')}"

    def get(self, path: str, timeout: float = 2.0) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(self.health_url + path, timeout=timeout) as response:  # noqa: S310
                return int(response.status), bytes(response.read())
        except urllib.error.HTTPError as error:
            return int(error.code), bytes(error.read())

    def _check_alive(self) -> None:
        if self.process.poll() is not None:
            raise DevStackError(f"{self.name} exited with {self.process.returncode}; see {self.log_path}")

    def is_ready(self) -> bool:
        self._check_alive()
        try:
            return self.get("/readyz")[0] == 200
        except OSError:
            return False

    def wait_ready(self, timeout: float = 60.0) -> None:
        self.port_of("health_server_started", timeout=timeout)
        wait_until(self.is_ready, timeout=timeout, what=f"{self.name} /readyz")

    def terminate(self, timeout: float = 60.0) -> int:
        """SIGTERM, then wait; returns the exit code (SIGKILL after ``timeout``)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        return int(self.process.returncode)


def start_service(name: str, module: str, *, env: Mapping[str, str], log_dir: Path) -> ServiceProcess:
    """Start ``python -m module`` with JSON logs and OS-chosen ports (health and, for the admin, API)."""
    log_path = log_dir / f"{name}.log"
    full_env = {
        **os.environ,
        "SKOLSYNK_HEALTH_PORT": "0",
        "SKOLSYNK_HEALTH_HOST": "127.0.0.1",
        "SKOLSYNK_ADMIN_PORT": "0",
        "SKOLSYNK_ADMIN_HOST": "127.0.0.1",
        "SKOLSYNK_EGIL_PORT": "0",
        "SKOLSYNK_EGIL_HOST": "127.0.0.1",
        "SKOLSYNK_SS12000_WEBHOOK_PORT": "0",
        "SKOLSYNK_SS12000_WEBHOOK_HOST": "127.0.0.1",
        **env,
        "SKOLSYNK_LOG_FORMAT": "json",
    }
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", module],
            env=full_env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return ServiceProcess(name=name, process=process, log_path=log_path)


# --- feeding a running system ----------------------------------------------------------------------


async def publish_messages(
    amqp_url: str, exchange: str, routing_key: str, messages: Iterable[MessageContract], *, tenant_id: str
) -> int:
    """Publish contracts (confirmed, mandatory) as a connector would; returns how many."""
    connection = await aio_pika.connect(amqp_url)
    count = 0
    async with connection:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        target = await channel.get_exchange(exchange)
        for message in messages:
            envelope = message.to_envelope(tenant_id=tenant_id, producer="devstack")
            await target.publish(
                aio_pika.Message(
                    envelope.model_dump_json().encode(),
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    message_id=str(envelope.message_id),
                    type=envelope.message_type,
                ),
                routing_key=routing_key,
            )
            count += 1
    return count


def write_vendor_catalogue(
    directory: Path,
    vendor_id: str,
    *,
    scim_base_url: str | None = None,
    api_key_env: str | None = None,
    profile: dict[str, Any] | None = None,
) -> Path:
    """A one-vendor catalogue for demos and tests: queue delivery, or EGIL SCIM push to
    ``scim_base_url`` with an API key read from ``api_key_env``. Every kind, every non-sensitive field
    that is not opt-in, unless ``profile`` (the catalogue's ``profile`` section) says otherwise."""
    directory.mkdir(parents=True, exist_ok=True)
    entry: dict[str, Any] = {
        "vendor_id": vendor_id,
        "display_name": f"{vendor_id} (demo)",
        "delivery": "queue" if scim_base_url is None else "egil_scim",
        "profile": profile or {},
    }
    if scim_base_url is not None:
        entry["scim"] = {
            "base_url": scim_base_url,
            "auth": {"api_key_env": api_key_env},
            "rate_per_second": 200,
            "burst": 50,
        }
    path = directory / f"{vendor_id}.yaml"
    path.write_text(yaml.safe_dump(entry, sort_keys=False), encoding="utf-8")
    return directory
