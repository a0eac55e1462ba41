"""`make bench`'s HTTP peers and bare clients: a private CA (so every HTTP hop is HTTPS, as in production),
the fake EGIL SCIM vendor server as its own process, a bare aiohttp client pushing SCIM bodies with a given
concurrency, and a one-at-a-time EGIL client (one kept-alive TLS connection, the headers the real EgilSCIM
client sends, ``../shared/ref/egil-scim-protocol.md`` section 3).

Not a library: ``tools/bench.py`` imports it from this folder.
"""

from __future__ import annotations

import asyncio
import json
import re
import ssl
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import trustme

from skolsynk.adapters.egil import EgilResourceType, egil_send_order, is_student, to_egil
from skolsynk.domain.selection import ProjectedResource
from skolsynk_testkit.devstack import DevStackError

#: What the real client sends (captured): ``EgilSCIM/<version> (<comment>)``, SCIM media types.
EGIL_CLIENT_HEADERS = {
    "User-Agent": "EgilSCIM/2.23.0 (skolsynk bench)",
    "Accept": "application/scim+json",
    "Content-Type": "application/scim+json",
}


@dataclass
class Pki:
    ca_file: Path
    server_file: Path  # key and certificate chain for 127.0.0.1

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))


def make_pki(directory: Path) -> Pki:
    directory.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1")
    pki = Pki(directory / "ca.pem", directory / "server.pem")
    ca.cert_pem.write_to_path(str(pki.ca_file))
    server.private_key_and_cert_chain_pem.write_to_path(str(pki.server_file))
    return pki


def egil_bodies(resources: Iterable[ProjectedResource]) -> list[tuple[EgilResourceType, str, dict[str, Any]]]:
    """(type, id, body) of each resource as a vendor's EGIL server receives it, in the EGIL send order."""
    found = []
    for resource in resources:
        plain = json.loads(json.dumps(resource.resource, default=str))  # as it travels in a message
        egil_type, body = to_egil(plain)
        found.append(
            (egil_type, str(resource.id), body, egil_send_order(egil_type, resource.id, student=is_student(plain)))
        )
    found.sort(key=lambda item: item[3])
    return [(t, i, b) for t, i, b, _ in found]


# --- the fake vendor server ---------------------------------------------------------------------------


@dataclass
class VendorServer:
    process: subprocess.Popen[bytes]
    base_url: str
    log_path: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def start_vendor_server(log_dir: Path, keys: dict[str, str], pki: Pki) -> VendorServer:
    """``python -m skolsynk_testkit.fakes.egil_vendor`` over HTTPS, one API key per (fake) tenant."""
    log_path = log_dir / "fake-egil-vendor.log"
    # One argument each: a generated key may start with "-", which argparse would take for an option.
    arguments = [f"--api-key={key}={tenant}" for key, tenant in keys.items()]
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "skolsynk_testkit.fakes.egil_vendor",
                "--port",
                "0",
                "--tls-cert",
                str(pki.server_file),
                *arguments,
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise DevStackError(f"the fake vendor server exited; see {log_path}")
        found = re.search(r"listening on (\S+)", log_path.read_text(errors="replace"))
        if found:
            return VendorServer(process, found.group(1).rstrip("/"), log_path)
        time.sleep(0.1)
    process.kill()
    raise DevStackError("the fake vendor server did not start")


async def vendor_ids(http: aiohttp.ClientSession, base_url: str, api_key: str) -> dict[str, set[str]]:
    """What the fake vendor holds for the key's tenant: endpoint -> ids (its unpaged GET lists)."""
    held: dict[str, set[str]] = {}
    for egil_type in EgilResourceType:
        async with http.get(f"{base_url}/{egil_type.endpoint}", headers={"X-API-Key": api_key}) as response:
            body = json.loads(await response.text())
            held[egil_type.endpoint] = {str(r["id"]) for r in body.get("Resources") or []}
    return held


def expected_ids(resources: Iterable[ProjectedResource]) -> dict[str, set[str]]:
    held: dict[str, set[str]] = {t.endpoint: set() for t in EgilResourceType}
    for resource in resources:
        held[EgilResourceType.for_kind(resource.kind).endpoint].add(str(resource.id))
    return held


# --- bare clients -------------------------------------------------------------------------------------


async def bare_scim_push(
    base_url: str,
    api_key: str,
    bodies: Sequence[tuple[EgilResourceType, str, dict[str, Any]]],
    *,
    concurrency: int,
    context: ssl.SSLContext,
) -> dict[str, Any]:
    """POST every body with ``concurrency`` requests in flight over a pooled aiohttp session, in send order
    (each request starts when a slot frees): what a client that does nothing but push reaches."""
    statuses: Counter[int] = Counter()
    connector = aiohttp.TCPConnector(ssl=context, limit=concurrency)
    headers = {"Content-Type": "application/scim+json", "Accept": "application/scim+json", "X-API-Key": api_key}
    queue: asyncio.Queue[tuple[EgilResourceType, str, dict[str, Any]]] = asyncio.Queue()
    for item in bodies:
        queue.put_nowait(item)
    async with aiohttp.ClientSession(base_url=base_url.rstrip("/") + "/", headers=headers, connector=connector) as http:

        async def worker() -> None:
            while not queue.empty():
                egil_type, _, body = queue.get_nowait()
                async with http.post(egil_type.endpoint, data=json.dumps(body).encode()) as response:
                    await response.read()
                    statuses[response.status] += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return {
        "requests": len(bodies),
        "concurrency": concurrency,
        "seconds": elapsed,
        "requests_per_s": len(bodies) / elapsed,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
    }


async def egil_client(
    base_url: str,
    api_key: str,
    bodies: Sequence[tuple[EgilResourceType, str, dict[str, Any]]],
    *,
    context: ssl.SSLContext | None,
) -> dict[str, Any]:
    """The EGIL client's pace: one request at a time, each sent when the previous one was answered, over one
    kept-alive connection (a pool of one), with the client's own headers; POST of each body."""
    statuses: Counter[int] = Counter()
    latencies: list[float] = []
    connector = aiohttp.TCPConnector(ssl=context if context is not None else False, limit=1, force_close=False)
    headers = {**EGIL_CLIENT_HEADERS, "X-API-Key": api_key}
    async with aiohttp.ClientSession(base_url=base_url.rstrip("/") + "/", headers=headers, connector=connector) as http:
        started = time.perf_counter()
        for egil_type, _, body in bodies:
            sent = time.perf_counter()
            async with http.post(egil_type.endpoint, data=json.dumps(body, ensure_ascii=False).encode()) as response:
                await response.read()
                statuses[response.status] += 1
            latencies.append(time.perf_counter() - sent)
        elapsed = time.perf_counter() - started
    latencies.sort()

    def at(share: float) -> float:
        return latencies[min(len(latencies) - 1, round(share * (len(latencies) - 1)))] if latencies else float("nan")

    return {
        "requests": len(bodies),
        "seconds": elapsed,
        "requests_per_s": len(bodies) / elapsed if elapsed else float("nan"),
        "latency_p50_ms": at(0.5) * 1000,
        "latency_p99_ms": at(0.99) * 1000,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
    }
