"""`make demo`: skolsynk end to end on the embedded defaults.

1. Infrastructure: the local RabbitMQ (started if needed; the demo gets a vhost of its own) and the
   SecantusDB Mongo wire server (in memory).
2. A synthetic organiser (``skolsynk_testkit.synthetic``, size S: about 2,000 persons in 6 school units, with
   realistic data-quality defects; a Skola above two of them with duties at the Skola; mentors and
   syllabuses; persons without a securityMarking and persons Utvandrad or Avliden: printed per source)
   split between two sources by school unit:
   * an **SS 12000:2020 API** (``skolsynk_testkit.fakes.ss12000_api``, OAuth2, served from this process) read
     by the real ``ss12000_puller`` service;
   * an **EGIL client** (scripted, ``tools/egil_push.py``: the requests the real EgilSCIM client sends,
     one at a time over one TLS connection with its client certificate, POST/PUT/DELETE from its cache)
     pushing to the real ``egil_receiver`` service.
3. Every service as its own process: the normaliser, a dispatcher per vendor, gdpr, admin, the
   SS 12000 puller and the EGIL receiver. Three vendors:
   * ``demo-scim``: EGIL SCIM push to a fake vendor server (``skolsynk_testkit.fakes.egil_vendor``);
   * ``demo-queue``: the vendor's own queue (``vendor-feed.demo-queue``, in the vhost
     ``demo-vendor-demo-queue`` that onboarding makes for it), read by a consumer in this process with the
     vendor's own user, as the vendor would; only the compulsory schools (GR), students and teachers; its
     profile takes mentors and syllabuses (opt-in fields);
   * ``demo-test``: a subscription left in test mode: nothing is delivered, the test report is shown.
4. Onboarding through the admin API as an operator (the bootstrap token): the organiser, its two
   sources (the SS 12000 API's client secret sealed by the admin; the EGIL client's certificate
   registered, and the lines of its configuration shown; the puller and the receiver follow the source
   registry, no file), the three subscriptions, go-live for two of them (gate overridden, with a reason).
5. The first sync ("Synkronisera nu" for the SS 12000 source, a full push from the EGIL client), with
   progress, then a summary per vendor: persons and groups delivered, deletions, data-quality findings.
   What every vendor holds is checked against the normaliser's own rules computed here, and what the tree,
   the missing markings and the statuses did is shown: the Skola's staff at both its units (a duty per
   unit), the persons without a marking withheld (the organiser's default), the inactive at no vendor.
6. A change set (students move, leave and join, in both sources), an erasure request and the organiser's
   privacy setting ``missing_marking: not_protected`` (admin API), then the incremental result (the
   persons without a marking delivered now) and the deletion receipts from the erasure ledger.
7. The admin UI stays up, with its URL and an operator token, until Ctrl-C; ``--exit`` (or
   ``DEMO_EXIT=1``, what CI uses) stops instead. Every service is stopped with SIGTERM and must exit 0.

Environment: ``DEMO_EXIT=1`` (or ``--exit``); ``DEMO_SIZE`` (``S``, ``M``, ``L`` or a number of persons,
default S); ``DEMO_SEED`` (1); ``SKOLSYNK_DEMO_ADMIN_PORT`` (or ``--admin-port``: the admin UI's port, so its
URL stays the same between runs; default any free port); ``AMQP_URL`` / ``MONGODB_URL`` use an existing
broker vhost / MongoDB (the demo then creates and deletes no vhost of its own). Without ``AMQP_URL`` the demo
makes the vhost ``skolsynk-demo`` on the local broker, or ``skolsynk-demo-2``... while another run uses it,
and deletes only the vhost it made (and its own leftover from an interrupted run).
Logs of every process: ``.demo/``. rich (a dev dependency) draws the progress bars and tables when
installed; without it the demo prints plain lines.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import secrets
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit
from uuid import UUID

import aiohttp
import trustme
from bson import json_util
from cryptography.fernet import Fernet
from egil_push import EgilObject, ScriptedEgilClient, egil_objects
from pymongo import AsyncMongoClient
from scenario import ROOT, Expectation, FeedConsumer, Stack, exactly, holding, metric, wait_for

from skolsynk.adapters.egil import EgilResourceType
from skolsynk.contracts.source import SourceRecord
from skolsynk.domain.ids import entity_id
from skolsynk.domain.quality import CATALOGUE, FindingCode
from skolsynk.domain.selection import ProjectedResource
from skolsynk.domain.ss12000 import TEACHING_ROLES, DutyRole, EntityKind, Person
from skolsynk.domain.subscription import MissingMarkingPolicy, Role, VendorProfile, VendorSubscription
from skolsynk.storage.erasures import ErasureLedger
from skolsynk.tls import spki_sha256_pin
from skolsynk_services.dispatcher.onboarding import feed_queue_name
from skolsynk_testkit.devstack import DevStackError, write_vendor_catalogue
from skolsynk_testkit.fakes.ss12000_api import FakeSs12000Api
from skolsynk_testkit.synthetic import (
    ChangeSet,
    SizeSpec,
    change_set,
    generate,
    split_school_units,
    today,
)

try:  # rich is a dev dependency: the demo works without it
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table
except ImportError:  # pragma: no cover - plain output
    Console = None

LOG_DIR = ROOT / ".demo"
NAMESPACE = "demo"
DATABASE = "skolsynk_demo"
VHOST = "skolsynk-demo"
TENANT = "demo-kommun"
SS12000_SOURCE = "ss12000-api"
EGIL_SOURCE = "egil-klient"
SCIM, QUEUE, TEST = "demo-scim", "demo-queue", "demo-test"
VENDORS = (SCIM, QUEUE, TEST)
DELIVERY = {SCIM: "EGIL SCIM push", QUEUE: "vendor's queue", TEST: "test mode"}
#: The queue vendor's profile takes what vendors get only when they ask (mentors, subjects and courses).
QUEUE_PROFILE = VendorProfile(
    vendor_id=QUEUE,
    accepted_fields={
        kind: fields
        | ({"assignment_roles"} if kind is EntityKind.DUTY else set())
        | ({"syllabus"} if kind is EntityKind.ACTIVITY else set())
        for kind, fields in VendorProfile(vendor_id=QUEUE).accepted_fields.items()
    },
)
PROFILES = {QUEUE: QUEUE_PROFILE}
PHASE_TIMEOUT = 900.0


# --- output --------------------------------------------------------------------------------------------


class Screen:
    """Progress bars and tables with rich on a terminal; plain lines otherwise (CI, no rich)."""

    def __init__(self) -> None:
        self.live = Console is not None and sys.stdout.isatty()
        # Not a terminal (CI, a pipe): tables as wide as they need, no live redrawing.
        self.console = Console(highlight=False, width=None if self.live else 160) if Console is not None else None

    def say(self, text: str = "") -> None:
        if self.console is not None:
            self.console.print(text, markup=False, soft_wrap=True)
        else:
            sys.stdout.write(text + "\n")
            sys.stdout.flush()

    def table(self, title: str, columns: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
        rows = [[_cell(c) for c in row] for row in rows]
        if self.console is not None:
            table = Table(title=title, title_justify="left", show_lines=False)
            for index, column in enumerate(columns):
                table.add_column(column, justify="left" if index == 0 else "right")
            for row in rows:
                table.add_row(*row)
            self.console.print(table)
            return
        widths = [
            max(len(columns[i]), *(len(r[i]) for r in rows)) if rows else len(columns[i]) for i in range(len(columns))
        ]
        self.say(title)
        self.say(
            "  "
            + "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(columns, widths, strict=True))
            )
        )
        for row in rows:
            self.say(
                "  "
                + "  ".join(
                    c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
                )
            )

    async def track(
        self,
        rows: dict[str, int],
        read: Callable[[], dict[str, float]],
        done: Callable[[], Any],
        *,
        timeout: float = PHASE_TIMEOUT,
    ) -> float:
        """Show ``read()`` against ``rows`` (name -> total) until ``done()`` (async) holds; the seconds taken."""
        started = time.monotonic()
        if self.live:
            assert self.console is not None
            with Progress(
                TextColumn("  {task.description:<38}"),
                BarColumn(bar_width=30),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=self.console,
                transient=False,
            ) as progress:
                tasks = {name: progress.add_task(name, total=max(total, 1)) for name, total in rows.items()}

                def refresh() -> None:
                    values = read()
                    for name, task in tasks.items():
                        progress.update(task, completed=min(values.get(name, 0), rows[name]))

                async def finished() -> bool:
                    refresh()
                    return bool(await done())

                await wait_for(finished, timeout=timeout, interval=1.0, what="the sync to finish")
                for name, task in tasks.items():
                    progress.update(task, completed=rows[name])
        else:
            last = 0.0

            async def finished() -> bool:
                nonlocal last
                if time.monotonic() - last >= 5:
                    last = time.monotonic()
                    values = read()
                    parts = [f"{name} {min(values.get(name, 0), total):.0f}/{total}" for name, total in rows.items()]
                    self.say(f"    {time.monotonic() - started:5.0f}s  " + "  ".join(parts))
                return bool(await done())

            await wait_for(finished, timeout=timeout, interval=1.0, what="the sync to finish")
        return time.monotonic() - started


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:,.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


# --- the fakes ----------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass(frozen=True)
class EgilTls:
    """A private CA: the EGIL receiver's server certificate (for 127.0.0.1) and the organiser's EGIL client's
    certificate, as an organiser's PKI and skolsynk's operator would issue them."""

    ca_file: Path
    server_file: Path  # key and certificate chain
    client_file: Path  # key and certificate chain
    client_certificate: str  # PEM, what the organiser's IT admin uploads
    server_pin: str

    @classmethod
    def make(cls, directory: Path) -> EgilTls:
        directory.mkdir(parents=True, exist_ok=True)
        ca = trustme.CA()
        server = ca.issue_cert("127.0.0.1")
        client = ca.issue_cert("egil-klient.demo-kommun.example")
        tls = cls(
            directory / "ca.pem",
            directory / "egil-receiver.pem",
            directory / "egil-client.pem",
            client.cert_chain_pems[0].bytes().decode(),
            spki_sha256_pin(server.cert_chain_pems[0].bytes()),
        )
        ca.cert_pem.write_to_path(str(tls.ca_file))
        server.private_key_and_cert_chain_pem.write_to_path(str(tls.server_file))
        client.private_key_and_cert_chain_pem.write_to_path(str(tls.client_file))
        return tls

    def client_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca_file))
        context.load_cert_chain(str(self.client_file))
        return context


def start_vendor_server(keys: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    """The fake EGIL SCIM vendor server (``python -m skolsynk_testkit.fakes.egil_vendor``), one API key per tenant."""
    log_path = LOG_DIR / "fake-vendor.log"
    # One argument each: a key may start with "-" (token_urlsafe), which argparse would take for an option.
    arguments = [f"--api-key={key}={tenant}" for key, tenant in keys.items()]
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "skolsynk_testkit.fakes.egil_vendor", "--port", "0", *arguments],
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise DevStackError(f"the fake vendor server exited; see {log_path}")
        found = re.search(r"listening on (\S+)", log_path.read_text(errors="replace"))
        if found:
            return process, found.group(1).rstrip("/")
        time.sleep(0.1)
    process.kill()
    raise DevStackError("the fake vendor server did not start")


async def vendor_holds(http: aiohttp.ClientSession, base_url: str, api_key: str) -> dict[str, int]:
    """What the fake vendor's server holds per EGIL type (its GET lists)."""
    counts = {}
    for endpoint in ("SchoolUnits", "Users", "Employments", "StudentGroups", "Activities"):
        async with http.get(f"{base_url}/{endpoint}", headers={"X-API-Key": api_key}) as response:
            counts[endpoint] = int((await response.json(content_type=None))["totalResults"])
    return counts


# --- the admin API ----------------------------------------------------------------------------------------


class Admin:
    def __init__(self, http: aiohttp.ClientSession, base_url: str, token: str) -> None:
        self.http = http
        self.base = f"{base_url}/api/v1"
        self.headers = {"Authorization": f"Bearer {token}"}

    async def call(self, method: str, path: str, body: Any = None, expect: Iterable[int] = (200, 201, 202, 204)) -> Any:
        async with self.http.request(method, self.base + path, json=body, headers=self.headers) as response:
            text = await response.text()
            if response.status not in set(expect):
                raise DevStackError(f"admin API {method} {path}: {response.status} {text[:300]}")
            return None if response.status == 204 or not text else await response.json(content_type=None)


# --- the scenario ----------------------------------------------------------------------------------------


def size_of(text: str) -> str | SizeSpec:
    return SizeSpec.for_persons(int(text)) if text.isdigit() else text.upper()


def skolor_of(records: Iterable[SourceRecord]) -> dict[str, list[str]]:
    """The organiser's Skolor (organisations between the Huvudman and school units): key -> the keys of
    the school units beneath it."""
    records = list(records)
    skolor: dict[str, list[str]] = {
        r.key: [] for r in records if r.kind is EntityKind.ORGANISATION and r.data.get("organisation_type") == "Skola"
    }
    for record in records:
        if record.kind is EntityKind.SCHOOL_UNIT and record.data.get("organisation") in skolor:
            skolor[str(record.data["organisation"])].append(record.key)
    return skolor


def units_of(records: Iterable[SourceRecord]) -> dict[str, set[str]]:
    """Source key -> the school-unit codes it belongs to (for attributing findings to vendors); a duty at
    a Skola belongs to every school unit beneath it."""
    records = list(records)
    codes = {r.key: str(r.data["school_unit_code"]) for r in records if r.kind is EntityKind.SCHOOL_UNIT}
    skolor = skolor_of(records)
    found: dict[str, set[str]] = defaultdict(set)
    for record in records:
        if record.kind is EntityKind.PERSON:
            found[record.key] |= {
                codes[e["school_unit"]] for e in record.data.get("enrolments") or [] if e["school_unit"] in codes
            }
        elif record.kind is EntityKind.DUTY:
            place = str(record.data.get("school_unit"))
            places = {codes[u] for u in skolor.get(place, [place]) if u in codes}
            found[record.key] |= places
            found[str(record.data["person"])] |= places
        elif record.kind in (EntityKind.GROUP, EntityKind.ACTIVITY) and record.data.get("school_unit") in codes:
            found[record.key].add(codes[record.data["school_unit"]])
        elif record.kind is EntityKind.SCHOOL_UNIT:
            found[record.key].add(codes[record.key])
    return found


def describe_organiser(records: list[SourceRecord], parts: dict[str, list[SourceRecord]]) -> list[str]:
    """The organisation tree, the duties at a Skola, and the persons without a securityMarking and not
    active, per source (no personal data)."""
    names = {
        r.key: str(r.data["display_name"])
        for r in records
        if r.kind in (EntityKind.ORGANISATION, EntityKind.SCHOOL_UNIT)
    }
    huvudman = next(
        r for r in records if r.kind is EntityKind.ORGANISATION and r.data.get("organisation_type") == "Huvudman"
    )
    skolor = skolor_of(records)
    source_of = {r.key: source for source, part in parts.items() for r in part if r.kind is EntityKind.SCHOOL_UNIT}
    direct = sum(1 for r in records if r.kind is EntityKind.SCHOOL_UNIT and r.data.get("organisation") == huvudman.key)
    lines = [
        f"the tree: Huvudman {names[huvudman.key]}; "
        + "; ".join(
            f"Skola {names[s]} above {' and '.join(names[u] for u in units)} (source {source_of[units[0]]})"
            for s, units in skolor.items()
        )
        + f"; {direct} school units directly under the Huvudman"
    ]
    at_skola = Counter(
        str(r.data["role"]) for r in records if r.kind is EntityKind.DUTY and r.data["school_unit"] in skolor
    )
    if at_skola:
        lines.append(
            "duties at a Skola (for every school unit beneath it, none at the units): "
            + ", ".join(f"{role} {n}" for role, n in sorted(at_skola.items()))
        )
    mentors = sum(len(r.data.get("assignment_roles") or []) for r in records if r.kind is EntityKind.DUTY)
    syllabuses = [r for r in records if r.kind is EntityKind.SYLLABUS]
    if mentors or syllabuses:
        taught = sum(1 for r in records if r.kind is EntityKind.ACTIVITY and r.data.get("syllabus"))
        lines.append(
            f"mentors: {mentors} classes (a duty's assignment role Mentor); {len(syllabuses)} syllabuses "
            f"(subjects and courses), referred to by {taught} activities"
        )
    unmarked = {
        source: sum(1 for r in part if r.kind is EntityKind.PERSON and "security_marking" not in r.data)
        for source, part in parts.items()
    }
    statuses = {
        source: Counter(
            str(r.data["person_status"])
            for r in part
            if r.kind is EntityKind.PERSON and r.data.get("person_status", "Aktiv") != "Aktiv"
        )
        for source, part in parts.items()
    }
    lines.append(
        f"persons without a securityMarking: {sum(unmarked.values())} ("
        + ", ".join(f"{source} {n}" for source, n in unmarked.items())
        + "); not active: "
        + ", ".join(
            f"{source} " + (", ".join(f"{status} {n}" for status, n in sorted(c.items())) or "none")
            for source, c in statuses.items()
        )
        + " (the EGIL client does not push them: SS 12000:2018 has no personStatus)"
    )
    return lines


def persons_where(expectation: Expectation, wanted: Callable[[Person], bool]) -> set[UUID]:
    """Ids of the persons of ``expectation`` (as the normaliser stores them) that ``wanted`` picks."""
    return {s.id for s in expectation.state.entities if isinstance(s.entity, Person) and wanted(s.entity)}


class Demo:
    def __init__(
        self, screen: Screen, *, size: str | SizeSpec, seed: int, exit_at_end: bool, admin_port: int = 0
    ) -> None:
        self.admin_port = admin_port
        self.screen = screen
        self.size = size
        self.seed = seed
        self.exit_at_end = exit_at_end
        self.day = today()
        self.stack: Stack | None = None
        self.vendor_server: subprocess.Popen[bytes] | None = None
        self.subscriptions: dict[str, VendorSubscription] = {}
        self.ss12000: FakeSs12000Api | None = None
        self.egil_client: ScriptedEgilClient | None = None
        self.egil_certificate = ""

    # -- helpers --

    def egil_objects(self, records: list[SourceRecord]) -> dict[tuple[EgilResourceType, str], EgilObject]:
        """What the organiser's EGIL client renders from its directory (these records): every object of
        every school unit, as SS 12000 (2018) SCIM bodies with UUIDs."""
        codes = frozenset(str(r.data["school_unit_code"]) for r in records if r.kind is EntityKind.SCHOOL_UNIT)
        everything = VendorSubscription(
            tenant_id=TENANT, vendor_id="egil-client", school_unit_codes=codes, test_mode=False
        )
        # Its directory has a few persons without a securityMarking: sent without the attribute.
        directory = Expectation(
            TENANT, {EGIL_SOURCE: records}, self.day, missing_marking=MissingMarkingPolicy.NOT_PROTECTED
        )
        return egil_objects(directory.desired(everything).values())

    def acked(self, vendor: str) -> float:
        assert self.stack is not None
        queue = f"{self.stack.namespace}.dispatcher.{vendor}"
        return metric(
            self.stack.services[f"dispatcher-{vendor}"], "skolsynk_messages_consumed_total", queue=queue, outcome="ack"
        )

    async def settle(
        self,
        mongo: AsyncMongoClient[dict[str, Any]],
        expected: dict[str, dict[UUID, ProjectedResource]],
        feed: FeedConsumer,
        changes: dict[str, int],
        extra_done: Callable[[], Any] | None = None,
    ) -> float:
        """Progress until every vendor holds exactly ``expected`` (and the queue vendor's consumer got it)."""
        assert self.stack is not None
        stack = self.stack
        base = {v: self.acked(v) for v in VENDORS}
        base_feed = feed.received
        rows = {f"{v} ({DELIVERY[v]})": max(changes[v], 1) for v in VENDORS}
        checked = {"at": 0.0, "quiet": ""}

        def read() -> dict[str, float]:
            values = {}
            for vendor in VENDORS:
                done = feed.received - base_feed if vendor == QUEUE else self.acked(vendor) - base[vendor]
                values[f"{vendor} ({DELIVERY[vendor]})"] = done
            return values

        async def done() -> bool:
            # The ledger is read only when the dispatchers are quiet (the Mongo wire server is the bottleneck).
            quiet = repr([self.acked(v) for v in VENDORS] + [feed.received])
            if quiet != checked["quiet"] or time.monotonic() - checked["at"] < 3:
                checked["quiet"] = quiet
                return False
            checked["at"] = time.monotonic()
            if not exactly(feed, expected[QUEUE]):
                return False
            for vendor in VENDORS:
                state = await holding(mongo, stack.database, TENANT, vendor, expected[vendor], test_mode=vendor == TEST)
                if not state.exact:
                    return False
            return extra_done is None or bool(await extra_done())

        return await self.screen.track(rows, read, done)

    # -- the run --

    async def run(self) -> int:
        screen = self.screen
        started = time.monotonic()
        screen.say(
            "skolsynk demo: a synthetic organiser from two sources to three vendors, every service as its own process"
        )
        self.stack = stack = await asyncio.to_thread(
            Stack.start, log_dir=LOG_DIR, namespace=NAMESPACE, database=DATABASE, vhost=VHOST
        )
        broker = urlsplit(stack.amqp_url)
        vhost = unquote(broker.path[1:]) if len(broker.path) > 1 else "/"
        store = "the Mongo wire server (secantusd-py, in memory)" if stack.mongo is not None else "MONGODB_URL"
        screen.say(
            f"  [1/7] infrastructure: RabbitMQ at {broker.hostname}:{broker.port or 5672}, vhost {vhost}"
            f" ({'made for this run' if stack.vhost else 'from AMQP_URL'}), and {store}"
        )
        records = generate(self.size, seed=self.seed)
        part_a, part_b = split_school_units(records, 2)
        organisation = next(r for r in records if r.kind is EntityKind.ORGANISATION)
        counts = Counter(r.kind.value for r in records)
        screen.say(
            f"  [2/7] the organiser: {organisation.data['display_name']}, {counts['person']:,} persons, "
            f"{counts['school_unit']} school units, {counts['group']:,} groups (seed {self.seed})"
        )
        for line in describe_organiser(records, {SS12000_SOURCE: part_a, EGIL_SOURCE: part_b}):
            screen.say(f"        {line}")
        ss12000 = FakeSs12000Api(auth="oauth2", client_id="skolsynk-demo", client_secret=secrets.token_urlsafe(16))
        await ss12000.start()
        self.ss12000 = ss12000
        ss12000.load_records(part_a, modified=datetime.now(UTC) - timedelta(hours=1))
        units_a = sum(1 for r in part_a if r.kind is EntityKind.SCHOOL_UNIT)
        units_b = sum(1 for r in part_b if r.kind is EntityKind.SCHOOL_UNIT)
        screen.say(
            f"        an SS 12000 API (fake, OAuth2) on {ss12000.base_url}: {units_a} school units, "
            f"{sum(1 for r in part_a if r.kind is EntityKind.PERSON):,} persons"
        )
        screen.say(
            f"        an EGIL client (scripted, sends what EgilSCIM sends, over HTTPS with a client certificate "
            f"to the EGIL receiver): {units_b} school units, "
            f"{sum(1 for r in part_b if r.kind is EntityKind.PERSON):,} persons"
        )
        keys = {vendor: secrets.token_urlsafe(24) for vendor in (SCIM, TEST)}
        self.vendor_server, vendor_url = await asyncio.to_thread(
            start_vendor_server, {keys[SCIM]: TENANT, keys[TEST]: f"{TENANT}-test"}
        )
        screen.say(f"        a vendor's EGIL SCIM server (fake, like the reference server) on {vendor_url}")
        catalogue = LOG_DIR / "vendors"
        for old in catalogue.glob("*.yaml"):
            old.unlink()
        write_vendor_catalogue(catalogue, SCIM, scim_base_url=vendor_url, api_key_env="DEMO_SCIM_KEY")
        write_vendor_catalogue(
            catalogue,
            QUEUE,
            profile={
                "accepted_fields": {
                    kind.value: sorted(fields) for kind, fields in QUEUE_PROFILE.accepted_fields.items()
                }
            },
        )
        write_vendor_catalogue(catalogue, TEST, scim_base_url=vendor_url, api_key_env="DEMO_TEST_KEY")
        # The EGIL receiver serves TLS with client certificates; the organiser's EGIL client has one.
        egil_tls = EgilTls.make(LOG_DIR / "pki")
        egil_port = free_port()
        egil_url = f"https://127.0.0.1:{egil_port}"
        self.egil_client = ScriptedEgilClient(egil_url, egil_tls.client_context())
        self.egil_certificate = egil_tls.client_certificate
        operator_token = f"skt_demo{secrets.token_hex(4)}.{secrets.token_urlsafe(24)}"
        stack.env |= {
            "SKOLSYNK_VENDOR_CATALOGUE_DIR": str(catalogue),
            "DEMO_SCIM_KEY": keys[SCIM],
            "DEMO_TEST_KEY": keys[TEST],
            # The installation's key: the admin seals the sources' credentials with it, the connectors open them.
            "SKOLSYNK_ADMIN_SECRETS_KEY": Fernet.generate_key().decode(),
            "SKOLSYNK_SOURCES_POLL_SECONDS": "1",
        }
        # The queue vendor is onboarded as an operator does it: a vhost of its own for its feed, a user of its own.
        feed_url = await stack.onboard_queue_vendor(QUEUE)
        screen.say(f"        {QUEUE} onboarded: its feed in a broker vhost of its own, read with its own user")
        screen.say("  [3/7] services, each its own process (python -m <service>) ...")
        if self.admin_port and not port_free(self.admin_port):
            raise DevStackError(f"the admin's port {self.admin_port} (SKOLSYNK_DEMO_ADMIN_PORT) is in use")
        launch = time.monotonic()
        # A projection of a whole organiser outlasts the default 60 s handler budget on the wire server.
        stack.start_service("normaliser", "skolsynk_services.normaliser", SKOLSYNK_HANDLER_TIMEOUT_SECONDS="900")
        for vendor in VENDORS:
            stack.start_service(f"dispatcher-{vendor}", "skolsynk_services.dispatcher", SKOLSYNK_VENDOR_ID=vendor)
        stack.start_service("gdpr", "skolsynk_services.gdpr")
        stack.start_service(
            "admin",
            "skolsynk_services.admin",
            SKOLSYNK_ADMIN_BOOTSTRAP_TOKEN=operator_token,
            SKOLSYNK_ADMIN_PORT=str(self.admin_port),
            SKOLSYNK_ADMIN_EGIL_URL=egil_url,
            SKOLSYNK_ADMIN_EGIL_SERVER_PIN=egil_tls.server_pin,
        )
        stack.start_service(
            "egil-receiver",
            "skolsynk_services.egil_receiver",
            SKOLSYNK_EGIL_HOST="127.0.0.1",
            SKOLSYNK_EGIL_PORT=str(egil_port),
            SKOLSYNK_EGIL_TLS_CERT_FILE=str(egil_tls.server_file),
            SKOLSYNK_EGIL_TLS_KEY_FILE=str(egil_tls.server_file),
            SKOLSYNK_EGIL_CLIENT_CA_FILE=str(egil_tls.ca_file),
        )
        stack.start_service(
            "ss12000-puller",
            "skolsynk_services.ss12000_puller",
            SKOLSYNK_SS12000_SCHEDULE="false",
            SKOLSYNK_SS12000_OVERLAP_SECONDS="2",
        )
        for service in stack.services.values():
            await asyncio.to_thread(service.wait_ready, 120)
        screen.say(
            f"        {len(stack.services)} services ready in {time.monotonic() - launch:.1f}s: "
            + ", ".join(stack.services)
        )
        admin_port = await asyncio.to_thread(stack.services["admin"].port_of, "web_app_started")
        admin_url = f"http://127.0.0.1:{admin_port}"
        mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(stack.mongo_url)
        feed = FeedConsumer(feed_url, feed_queue_name(stack.namespace, QUEUE))  # as the vendor reads it
        await feed.start()
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http:
                admin = Admin(http, admin_url, operator_token)
                await self.onboard(admin, organisation, records)
                objects_b = self.egil_objects(part_b)
                records_b = [obj.record() for obj in objects_b.values()]
                # Each source as its fake serves it (the SS 12000 fake leaves out what 2.1 cannot carry).
                expectation = Expectation(TENANT, {SS12000_SOURCE: ss12000.records(), EGIL_SOURCE: records_b}, self.day)
                expected = {v: expectation.desired(s, PROFILES.get(v)) for v, s in self.subscriptions.items()}
                await self.first_sync(
                    admin,
                    http,
                    mongo,
                    feed,
                    (part_a, records_b),
                    objects_b,
                    expectation,
                    expected,
                    vendor_url,
                    keys[SCIM],
                )
                before = expected
                changed_a = change_set(part_a, seed=self.seed, on=self.day)
                changed_b = change_set(part_b, seed=self.seed + 1, on=self.day)
                await self.changes(
                    admin, http, mongo, feed, ss12000, changed_a, changed_b, before, vendor_url, keys[SCIM]
                )
                await self.privacy(mongo, part_a + part_b, changed_a.records + changed_b.records)
                screen.say("  [7/7] the admin UI")
                screen.say(f"        {admin_url}/ui/   (operator token: {operator_token})")
                screen.say(f"        API: {admin_url}/api/v1/tenants/{TENANT}/overview   logs: {LOG_DIR}/")
                if not self.exit_at_end:
                    screen.say("        running until Ctrl-C (DEMO_EXIT=1 or --exit stops here instead) ...")
                    stop = asyncio.Event()
                    loop = asyncio.get_running_loop()
                    for signum in (signal.SIGINT, signal.SIGTERM):
                        loop.add_signal_handler(signum, stop.set)
                    await stop.wait()
        finally:
            await feed.close()
            await mongo.close()
            await ss12000.stop()
        screen.say("  stopping the services with SIGTERM (drain, then close) ...")
        codes = await asyncio.to_thread(stack.stop_services)
        failed = {name: code for name, code in codes.items() if code != 0}
        screen.say("        " + ", ".join(f"{name} exit {code}" for name, code in codes.items()))
        if failed:
            screen.say(f"demo FAILED: {len(failed)} service(s) did not exit cleanly: {failed}; logs in {LOG_DIR}/")
            return 1
        screen.say(f"demo OK in {time.monotonic() - started:.0f}s")
        return 0

    async def onboard(self, admin: Admin, organisation: SourceRecord, records: list[SourceRecord]) -> None:
        screen = self.screen
        screen.say("  [4/7] onboarding through the admin API (as an operator)")
        assert self.ss12000 is not None
        await admin.call(
            "POST",
            "/tenants",
            {
                "tenant_id": TENANT,
                "display_name": organisation.data["display_name"],
                "organisation_number": organisation.data["organisation_number"],
            },
        )
        await admin.call(
            "POST",
            f"/tenants/{TENANT}/sources",
            {
                "source_id": SS12000_SOURCE,
                "kind": "ss12000",
                "display_name": "Elevregister (SS 12000 API)",
                "settings": {
                    "base_url": self.ss12000.base_url,
                    "auth": {
                        "kind": "oauth2",
                        "token_url": self.ss12000.token_url,
                        "client_id": self.ss12000.client_id,
                    },
                    "page_size": 500,
                },
                "secrets": {"client_secret": self.ss12000.client_secret},  # sealed by the admin
            },
        )
        await admin.call(
            "POST",
            f"/tenants/{TENANT}/sources",
            {"source_id": EGIL_SOURCE, "kind": "egil", "display_name": "Personalsystem (EGIL-klient)"},
        )
        connection = await admin.call(
            "POST", f"/tenants/{TENANT}/sources/{EGIL_SOURCE}/certificates", {"pem": self.egil_certificate}
        )
        screen.say("        the EGIL client's certificate registered (its public-key pin); its configuration:")
        for line in connection["configuration"].splitlines():
            if not line.startswith("#"):
                screen.say(f"          {line}")
        await wait_for(self.egil_client.is_let_in, timeout=30, what="the EGIL receiver to know the client")
        all_codes = sorted(str(r.data["school_unit_code"]) for r in records if r.kind is EntityKind.SCHOOL_UNIT)
        gr_codes = sorted(
            str(r.data["school_unit_code"])
            for r in records
            if r.kind is EntityKind.SCHOOL_UNIT and "GR" in r.data["school_types"]
        )
        plans = {
            SCIM: {"school_unit_codes": all_codes},
            QUEUE: {"school_unit_codes": gr_codes, "roles": [Role.STUDENT.value, Role.TEACHER.value]},
            TEST: {"school_unit_codes": all_codes[:1]},
        }
        for vendor, plan in plans.items():
            await admin.call("PUT", f"/tenants/{TENANT}/subscriptions/{vendor}", plan)
            self.subscriptions[vendor] = VendorSubscription.model_validate(
                {"tenant_id": TENANT, "vendor_id": vendor, "test_mode": vendor == TEST, **plan}
            )
        for vendor in (SCIM, QUEUE):
            await admin.call(
                "POST",
                f"/tenants/{TENANT}/subscriptions/{vendor}/go-live",
                {"override_reason": "demo: the 24 h in test mode are shown by the demo-test subscription"},
            )
        screen.say(
            f"        organiser {TENANT}; sources {SS12000_SOURCE} (ss12000), {EGIL_SOURCE} (egil); "
            f"{SCIM} and {QUEUE} live (gate overridden, audited), {TEST} in test mode"
        )

    async def first_sync(
        self,
        admin: Admin,
        http: aiohttp.ClientSession,
        mongo: AsyncMongoClient[dict[str, Any]],
        feed: FeedConsumer,
        parts: tuple[list[SourceRecord], list[SourceRecord]],
        objects_b: dict[tuple[EgilResourceType, str], EgilObject],
        expectation: Expectation,
        expected: dict[str, dict[UUID, ProjectedResource]],
        vendor_url: str,
        scim_key: str,
    ) -> None:
        assert self.stack is not None
        screen = self.screen
        part_a, part_b = parts
        records = part_a + [r for r in part_b if r.kind is not EntityKind.ORGANISATION]
        screen.say("  [5/7] first sync: 'Synkronisera nu' for the SS 12000 source, the EGIL client's first run")
        await admin.call("POST", f"/tenants/{TENANT}/sources/{SS12000_SOURCE}/sync", {"mode": "full"})
        pushing = time.monotonic()
        sent = await self.egil_client.run(objects_b)
        screen.say(
            f"        the EGIL client pushed {sent['POST']:,} objects over HTTPS with its client certificate "
            f"in {time.monotonic() - pushing:.0f}s, one request at a time"
        )
        took = await self.settle(
            mongo,
            expected,
            feed,
            {v: len(expected[v]) for v in VENDORS},
        )
        changes = sum(len(e) for e in expected.values())
        screen.say(
            f"        every vendor holds exactly what the normaliser's rules select: {len(records):,} source records, "
            f"{changes:,} vendor changes in {took:.0f}s ({changes / took:,.0f} changes/s)"
        )
        await self.summary(admin, http, mongo, feed, expectation, expected, vendor_url, scim_key, records)
        self.tree_and_markings(expectation, expected, part_a)

    def tree_and_markings(
        self,
        expectation: Expectation,
        expected: dict[str, dict[UUID, ProjectedResource]],
        part_a: list[SourceRecord],
    ) -> None:
        """What the organisation tree, the missing markings and the statuses did to the selection (every
        vendor holds exactly ``expected``: the settle phase checked it)."""
        skolor = skolor_of(part_a)
        skola_duties = {
            entity_id(TENANT, SS12000_SOURCE, EntityKind.DUTY, r.key): str(r.data["role"])
            for r in part_a
            if r.kind is EntityKind.DUTY and r.data["school_unit"] in skolor
        }
        if skolor:
            # A duty at a Skola reaches a vendor as one duty per school unit beneath it (its own ids).
            delivered = [r for r in expected[SCIM].values() if r.source_entity_id in skola_duties]
            staff = {r.resource["person_id"] for r in delivered}
            teachers = {
                r.resource["person_id"]
                for r in delivered
                if r.source_entity_id is not None and DutyRole(skola_duties[r.source_entity_id]) in TEACHING_ROLES
            }
            if not teachers:
                raise DevStackError("no teacher with a duty at a Skola reached a vendor")
            self.screen.say(
                f"        the Skola's {len(staff)} staff ({len(teachers)} teachers) reach {SCIM} at the "
                f"{sum(len(u) for u in skolor.values())} school units beneath it: {len(delivered)} duties, one per unit"
            )
        # Mentors and syllabuses are opt-in: the queue vendor's profile takes them, the default does not.
        for vendor in (QUEUE, SCIM):
            held = expected[vendor].values()
            mentors = sum(len(r.resource.get("assignment_roles") or []) for r in held)
            subjects = Counter(r.resource["syllabus"].get("subject_code") for r in held if r.resource.get("syllabus"))
            takes = "its profile takes mentors and syllabuses" if vendor in PROFILES else "the default profile: neither"
            self.screen.say(
                f"        {vendor} ({takes}): "
                f"{mentors} mentor assignments, {sum(subjects.values())} activities with their subject or course "
                f"({len(subjects)} subject codes)"
            )
        if not any(r.resource.get("syllabus") for r in expected[QUEUE].values()) and any(
            r.kind is EntityKind.SYLLABUS for r in part_a
        ):
            raise DevStackError(f"{QUEUE} was to get no syllabus")
        unmarked = persons_where(expectation, lambda p: not p.marking_known)
        inactive = persons_where(expectation, lambda p: not p.active)
        for vendor, resources in expected.items():
            if (unmarked | inactive) & {r.source_entity_id or r.id for r in resources.values()}:
                raise DevStackError(f"{vendor} was to get a person without a securityMarking or not active")
        self.screen.say(
            f"        {len(unmarked)} persons without a securityMarking are withheld from every vendor (the "
            f"organiser's missing_marking: protected, the default; finding security_marking.missing per source), "
            f"and the {len(inactive)} not active (Utvandrad, Avliden) that skolsynk has are at no vendor"
        )

    async def summary(
        self,
        admin: Admin,
        http: aiohttp.ClientSession,
        mongo: AsyncMongoClient[dict[str, Any]],
        feed: FeedConsumer,
        expectation: Expectation,
        expected: dict[str, dict[UUID, ProjectedResource]],
        vendor_url: str,
        scim_key: str,
        records: list[SourceRecord],
    ) -> None:
        assert self.stack is not None
        rows = []
        for vendor in VENDORS:
            state = await holding(
                mongo, self.stack.database, TENANT, vendor, expected[vendor], test_mode=vendor == TEST
            )
            status = {"test", "test_rejected"} if vendor == TEST else {"delivered"}
            live = [e for e in state.entries if e["status"] in status and e["operation"] == "upsert"]
            deletes = sum(1 for e in state.entries if e["operation"] == "delete")
            by_kind = Counter(e["kind"] for e in live)
            roles = Counter(e["roles"][0] for e in live if e["kind"] == "person" and e["roles"])
            rows.append(
                [
                    vendor,
                    DELIVERY[vendor],
                    by_kind["person"],
                    roles["student"],
                    roles["teacher"],
                    roles["other_staff"],
                    by_kind["group"],
                    by_kind["activity"],
                    by_kind["school_unit"],
                    deletes,
                ]
            )
        self.screen.table(
            "  per vendor (test mode: what would be sent)",
            [
                "vendor",
                "delivery",
                "persons",
                "students",
                "teachers",
                "other staff",
                "groups",
                "activities",
                "units",
                "deletions",
            ],
            rows,
        )
        held = await vendor_holds(http, vendor_url, scim_key)
        self.screen.say(
            f"        the fake SCIM vendor server holds: {held['Users']:,} users, "
            f"{held['StudentGroups']:,} student groups, {held['Activities']:,} activities, "
            f"{held['Employments']:,} employments"
        )
        kinds = Counter(kind for kind in feed.held.values())
        self.screen.say(
            f"        the {QUEUE} consumer read {feed.received:,} messages and holds {kinds['person']:,} persons, "
            f"{kinds['group']:,} groups"
        )
        report = await admin.call("GET", f"/tenants/{TENANT}/subscriptions/{TEST}/test-report")
        would = report.get("would_send", {})
        refused = sum(report.get("would_be_refused", {}).values())
        self.screen.say(
            f"        {TEST} test report ({report.get('state')}): would send {would.get('person', 0):,} persons, "
            f"{would.get('group', 0):,} groups; {refused} would be refused"
        )
        await self.findings(admin, expectation, records)

    async def findings(self, admin: Admin, expectation: Expectation, records: list[SourceRecord]) -> None:
        found = await admin.call("GET", f"/tenants/{TENANT}/findings")
        units = units_of(records)
        per_code: dict[str, Counter[str]] = defaultdict(Counter)
        for finding in found:
            code = finding["code"]
            per_code[code]["organiser"] += 1
            codes = (
                {finding["school_unit_code"]}
                if finding.get("school_unit_code")
                else units.get(finding.get("source_key") or "", set())
            )
            for vendor, subscription in self.subscriptions.items():
                if codes & subscription.school_unit_codes:
                    per_code[code][vendor] += 1
        rows = [
            [code, CATALOGUE[FindingCode(code)][0].value, c["organiser"], *(c[v] for v in VENDORS)]
            for code, c in sorted(per_code.items(), key=lambda item: (-item[1]["organiser"], item[0]))
        ]
        self.screen.table(
            "  data-quality findings (admin API; per vendor: those in its school units)",
            ["code", "severity", "organiser", *VENDORS],
            rows,
        )
        local = Counter(f.code.value for f in expectation.findings)
        served = Counter({code: c["organiser"] for code, c in per_code.items()})
        if local != served:
            self.screen.say(
                f"        note: findings differ from the local computation: {dict(local - served)} "
                f"not served, {dict(served - local)} not expected"
            )

    async def changes(
        self,
        admin: Admin,
        http: aiohttp.ClientSession,
        mongo: AsyncMongoClient[dict[str, Any]],
        feed: FeedConsumer,
        ss12000: FakeSs12000Api,
        changed_a: ChangeSet,
        changed_b: ChangeSet,
        before: dict[str, dict[UUID, ProjectedResource]],
        vendor_url: str,
        scim_key: str,
    ) -> None:
        assert self.stack is not None
        screen = self.screen
        moved = len(changed_a.moved) + len(changed_b.moved)
        left = len(changed_a.left) + len(changed_b.left)
        joined = len(changed_a.joined) + len(changed_b.joined)
        # The erasure: a student who stays, delivered to both live vendors.
        staying = sorted(
            r.key
            for r in changed_a.records
            if r.kind is EntityKind.PERSON
            and r.key not in changed_a.moved
            and r.key not in changed_a.joined
            and all(entity_id(TENANT, SS12000_SOURCE, EntityKind.PERSON, r.key) in before[v] for v in (SCIM, QUEUE))
        )
        erased = entity_id(TENANT, SS12000_SOURCE, EntityKind.PERSON, staying[0])
        screen.say(
            f"  [6/7] changes: {moved} students move, {left} leave, {joined} join (both sources); "
            f"an erasure request for one person at every vendor; the organiser's privacy setting"
        )
        ss12000.apply_changes(changed_a.changed, changed_a.deleted)
        phase_start = datetime.now(UTC)
        # The organiser knows its sources leave out only unprotected persons' markings, and says so.
        await admin.call("PUT", f"/tenants/{TENANT}/privacy", {"missing_marking": "not_protected"})
        screen.say(
            "        PUT /privacy missing_marking=not_protected: persons without a securityMarking are not protected "
            "identities for this organiser (audited as tenant.privacy; the organiser is projected again)"
        )
        await admin.call("POST", f"/tenants/{TENANT}/sources/{SS12000_SOURCE}/sync", {"mode": "incremental"})
        objects_b = self.egil_objects(changed_b.records)
        sent = await self.egil_client.run(objects_b)
        screen.say(
            f"        the EGIL client's next run: {sent['POST']} POST, {sent['PUT']} PUT, {sent['DELETE']} DELETE "
            "(what changed since its cache)"
        )
        request = await admin.call(
            "POST",
            f"/tenants/{TENANT}/erasure-requests",
            {"person_id": str(erased), "vendor_ids": None, "reference": "DEMO-2026-1"},
        )
        screen.say(f"        erasure request {request['request_id']} for person {erased} (admin API, all vendors)")
        records_b = [obj.record() for obj in objects_b.values()]
        expectation = Expectation(
            TENANT,
            {SS12000_SOURCE: ss12000.records(), EGIL_SOURCE: records_b},
            self.day,
            missing_marking=MissingMarkingPolicy.NOT_PROTECTED,
        )
        after = {
            v: expectation.desired(s, PROFILES.get(v), excluded=[str(erased)]) for v, s in self.subscriptions.items()
        }
        # An entity withheld now (a joiner of one source taking the login of a person of the other, say) keeps
        # what its vendors had: the normaliser leaves a withheld entity's vendor copies as they are.
        withheld = {str(i) for i in expectation.state.withheld}
        kept = 0
        for vendor in VENDORS:
            for key, resource in before[vendor].items():
                if key not in after[vendor] and str(resource.source_entity_id or key) in withheld:
                    after[vendor][key] = resource
                    kept += 1
        if kept:
            screen.say(f"        {kept} vendor copies of entities withheld since the first sync are left as they are")
        plan: dict[str, dict[str, int]] = {}
        for vendor in VENDORS:
            old, new = before[vendor], after[vendor]
            upserts = sum(1 for k, r in new.items() if k not in old or old[k].hash != r.hash)
            deletes = sum(1 for k in old if k not in new)
            person_deletes = sum(1 for k, r in old.items() if k not in new and r.kind is EntityKind.PERSON)
            plan[vendor] = {"upserts": upserts, "deletes": deletes, "person_deletes": person_deletes}
        receipts_expected = sum(plan[v]["person_deletes"] for v in (SCIM, QUEUE))
        ledger = ErasureLedger(mongo[self.stack.database])

        async def receipts_in() -> bool:
            rows = await ledger.evidence(TENANT)
            return len(rows) >= receipts_expected and all(r["status"] == "completed" for r in rows)

        took = await self.settle(
            mongo,
            after,
            feed,
            {v: plan[v]["upserts"] + plan[v]["deletes"] for v in VENDORS},
            extra_done=receipts_in,
        )
        screen.say(f"        the changes reached every vendor, receipts included, in {took:.0f}s")
        unmarked = persons_where(expectation, lambda p: not p.marking_known)
        now_delivered = {v: len(unmarked & set(after[v])) for v in VENDORS}
        inactive = persons_where(expectation, lambda p: not p.active)
        if any(inactive & set(resources) for resources in after.values()):
            raise DevStackError("a person not active was to reach a vendor")
        if not now_delivered[SCIM]:
            raise DevStackError(
                "no person without a securityMarking reached a vendor after missing_marking=not_protected"
            )
        screen.say(
            f"        {len(unmarked)} persons without a securityMarking, withheld until now, are delivered: "
            + ", ".join(f"{v} {n}" for v, n in now_delivered.items())
            + " (with no securityMarking, never 'Ingen'); the persons not active stay at no vendor"
        )
        rows = []
        for vendor in VENDORS:
            state = await holding(mongo, self.stack.database, TENANT, vendor, after[vendor], test_mode=vendor == TEST)
            recent = [e for e in state.entries if _aware(e["at"]) >= phase_start]
            ops = Counter((e["kind"], e["operation"]) for e in recent)
            rows.append(
                [
                    vendor,
                    DELIVERY[vendor],
                    ops[("person", "upsert")],
                    ops[("person", "delete")],
                    ops[("group", "upsert")],
                    sum(n for (_, op), n in ops.items() if op == "delete"),
                    sum(1 for r in after[vendor].values() if r.kind is EntityKind.PERSON),
                ]
            )
        screen.table(
            "  the incremental result (per vendor, this change only)",
            ["vendor", "delivery", "persons upserted", "persons deleted", "groups updated", "deletions", "persons now"],
            rows,
        )
        held = await vendor_holds(http, vendor_url, scim_key)
        screen.say(f"        the fake SCIM vendor server now holds {held['Users']:,} users")
        evidence = await ledger.evidence(TENANT)
        summary = Counter((r["vendor_id"], r["reason"], r["status"], r["outcome"]) for r in evidence)
        screen.table(
            "  deletion receipts (erasure ledger, pseudonymous)",
            ["vendor", "reason", "status", "receipt", "deletions"],
            [[*key, n] for key, n in sorted(summary.items(), key=lambda item: tuple(str(p) for p in item[0]))],
        )
        for row in [r for r in evidence if r["reason"] == "erasure_request"]:
            screen.say(
                f"        {row['vendor_id']}: person {row['person_id']} requested {row['requested_at'][:19]}, "
                f"receipt '{row['outcome']}' at {(row['delivered_at'] or '')[:19]}"
            )
        screen.say(
            f"        (python -m skolsynk_services.gdpr.cli evidence --tenant {TENANT} exports the same as CSV or JSON)"
        )

    async def privacy(
        self, mongo: AsyncMongoClient[dict[str, Any]], before: list[SourceRecord], after: list[SourceRecord]
    ) -> None:
        """Every leaver deleted at a live vendor is purged (a tombstone), and no civic number or login of any
        leaver is left in any collection of the store (docs/gdpr.md)."""
        assert self.stack is not None
        db = mongo[self.stack.database]
        deleted = {r["person_id"] for r in await ErasureLedger(db).evidence(TENANT) if r["reason"] == "left_source"}

        async def purged() -> bool:
            return await db["gdpr_tombstones"].count_documents({"person_id": {"$in": sorted(deleted)}}) == len(deleted)

        await wait_for(purged, timeout=60, interval=0.5, what="every leaver's purge")
        staying = {r.key for r in after if r.kind is EntityKind.PERSON}
        kept = {str(value) for r in after if r.kind is EntityKind.PERSON for value in _identifying(r)}
        needles = {
            str(value)
            for r in before
            if r.kind is EntityKind.PERSON and r.key not in staying
            for value in _identifying(r)
        } - kept  # a value a staying person shares (a duplicate the data-quality report names) is theirs too
        found: dict[str, int] = {}
        for name in await db.list_collection_names():
            text = json_util.dumps(await db[name].find().to_list(None))
            hits = sum(1 for needle in needles if needle in text)
            if hits:
                found[name] = hits
        if found:
            raise DevStackError(f"personal data of persons who left is still in {found}")
        self.screen.say(
            f"        privacy: {len(deleted)} leavers purged (tombstones); none of the {len(needles)} civic numbers "
            "and logins of the persons who left is in any collection"
        )


def _identifying(record: SourceRecord) -> list[str]:
    """A person's values that identify them alone: civic number and logins."""
    values = [str(v) for v in record.data.get("eppn") or []]
    if record.data.get("civic_no"):
        values.append(str(record.data["civic_no"]))
    return values


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--exit", action="store_true", help="stop at the end instead of keeping the admin UI up")
    parser.add_argument("--size", default=os.environ.get("DEMO_SIZE", "S"), help="S, M, L or a number of persons")
    parser.add_argument("--seed", type=int, default=int(os.environ.get("DEMO_SEED", "1")))
    parser.add_argument(
        "--admin-port",
        type=int,
        default=int(os.environ.get("SKOLSYNK_DEMO_ADMIN_PORT", "0")),
        help="the admin UI's port (SKOLSYNK_DEMO_ADMIN_PORT; default: any free port)",
    )
    args = parser.parse_args(argv)
    exit_at_end = args.exit or os.environ.get("DEMO_EXIT", "") not in ("", "0", "false")
    LOG_DIR.mkdir(exist_ok=True)
    screen = Screen()
    demo = Demo(screen, size=size_of(args.size), seed=args.seed, exit_at_end=exit_at_end, admin_port=args.admin_port)
    try:
        return asyncio.run(demo.run())
    except DevStackError as error:
        screen.say(f"demo FAILED: {error}; logs in {LOG_DIR}/")
        return 1
    except KeyboardInterrupt:
        screen.say("interrupted")
        return 130
    finally:
        if demo.vendor_server is not None:
            demo.vendor_server.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                demo.vendor_server.wait(timeout=10)
        if demo.stack is not None:
            demo.stack.close()


if __name__ == "__main__":
    raise SystemExit(main())
