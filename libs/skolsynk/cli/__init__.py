"""``skolsynk``: the operator's command line for everyday tasks. Settings come from the same environment
variables as the services (``AMQP_URL``, ``MONGODB_URL``, ``MONGODB_DATABASE``, ``SKOLSYNK_NAMESPACE``,
the vendor catalogue from the store).

=============================================  ===============================================================
``skolsynk status [--tenant T]``               sources' latest runs, work queues (depth, consumers, DLQ),
                                               vendors' delivery ledgers, pending holds, overdue deletions
``skolsynk sync TENANT KIND SOURCE [--mode]``  ask a pulling connector (google, microsoft, ss12000) to read a source now
``skolsynk dlq list QUEUE [--limit N]``        the dead letters of a work queue, with their failure reasons
``skolsynk dlq replay QUEUE [--filter-reason   move dead letters back to the work queue (all, those whose
TEXT] [--limit N] [--dry-run]``                failure matches TEXT, at most N), with progress
``skolsynk resend TENANT VENDOR``              send a vendor the tenant's whole current selection again
``skolsynk holds TENANT [--history N]``       the tenant's mass-deletion holds, their causes and decisions
``skolsynk overdue TENANT``                    the tenant's deletions past their deadline
``skolsynk explain TENANT PERSON``             why a person is (not) at each vendor: their records, findings,
                                               every subscription's verdict with its reasons, deliveries,
                                               deletions and requests (PERSON: id, login or e-mail address)
``skolsynk sources import KIND FILE``          put a sources file's sources (egil, google, microsoft, ss12000) in
                                               the source registry; idempotent, for GitOps
``skolsynk vendors import DIR [--dry-run]``     put a folder of vendor catalogue files (``deploy/vendors``) in the
                                               store: create, update, leave alone; a retired vendor stays retired
``skolsynk vendors list``                      the vendor catalogue in the store, retired vendors too
=============================================  ===============================================================

``QUEUE`` is a work queue's name with or without the namespace (``normaliser.source-events``,
``skolsynk.dispatcher.ne``) or its DLQ's name. ``--json`` prints the result as JSON for scripts.
Exit status: 0 done, 1 failed (the reason on standard error), 2 wrong usage.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

import aio_pika
import aiormq.exceptions
from aio_pika.abc import AbstractConnection
from aio_pika.exceptions import CONNECTION_EXCEPTIONS
from pydantic import Field, SecretStr
from pymongo.errors import PyMongoError

from skolsynk.catalogue import CatalogueError, DeliveryMode, load_catalogue
from skolsynk.cli import explained, output, queues, state
from skolsynk.connectors.config import ConfigurationError, load_yaml
from skolsynk.connectors.sources import SOURCE_KINDS, SourceKind
from skolsynk.contracts.sync import SyncRequested
from skolsynk.contracts.vendor import ProjectionRequested
from skolsynk.explain import PersonExplainer
from skolsynk.logging import configure_logging
from skolsynk.messaging import (
    Broker,
    Publisher,
    UnroutableMessage,
    skolsynk_topology,
    sync_request_routing_key,
    topology_for,
)
from skolsynk.messaging.vhosts import amqp_url_with_vhost, vendor_vhost_name
from skolsynk.observability import Metrics
from skolsynk.settings import ServiceSettings
from skolsynk.storage import Database, MongoClient, create_client
from skolsynk.storage.admin import ADMIN_TENANTS
from skolsynk.storage.sources import SecretBox, SecretsUnavailable, SourceStore
from skolsynk.storage.subscriptions import SubscriptionStore
from skolsynk.storage.vendors import VendorStore

PRODUCER = "skolsynk-cli"
#: Connector kinds that take sync requests from a queue. The SS 12000 puller runs on its schedule and
#: its webhook; EGIL clients push.
SYNC_KINDS = ("google", "microsoft", "ss12000")
#: Connector kinds whose sync-request queues ``status`` shows.
STATUS_CONNECTOR_KINDS = SYNC_KINDS


class CliSettings(ServiceSettings):
    admin_secrets_key: SecretStr | None = Field(
        default=None, description="The installation's key of sealed source secrets (kept when a source is updated)."
    )
    delivery_failing_minutes: float = Field(
        default=15.0, gt=0, description="Deliveries retrying this long are shown as failing (as in the admin)."
    )


class CommandError(Exception):
    """A failure to report in one line (exit status 1)."""


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog="skolsynk", description="skolsynk operator commands (settings from the environment, as the services)."
    )
    commands = root.add_subparsers(dest="command", required=True, metavar="COMMAND")

    status = commands.add_parser("status", help="sources, queues, vendors, holds and overdue deletions")
    status.add_argument("--tenant", help="only this tenant's sources")
    status.add_argument("--json", action="store_true", help="print JSON")

    sync = commands.add_parser("sync", help="ask a connector to read a source now")
    sync.add_argument("tenant")
    sync.add_argument("source_kind", metavar="SOURCE_KIND", choices=SYNC_KINDS, help=" or ".join(SYNC_KINDS))
    sync.add_argument("source_id", metavar="SOURCE_ID")
    sync.add_argument("--mode", choices=("full", "incremental"), default="full")

    dlq = commands.add_parser("dlq", help="list or replay a work queue's dead letters")
    dlq_commands = dlq.add_subparsers(dest="dlq_command", required=True, metavar="ACTION")
    dlq_list = dlq_commands.add_parser("list", help="show the dead letters (the DLQ is left as it is)")
    dlq_list.add_argument("queue", metavar="QUEUE")
    dlq_list.add_argument("--limit", type=int, default=50, help="show at most N (default 50)")
    dlq_list.add_argument("--json", action="store_true", help="print JSON")
    replay = dlq_commands.add_parser("replay", help="move dead letters back to their work queue")
    replay.add_argument("queue", metavar="QUEUE")
    replay.add_argument("--filter-reason", metavar="TEXT", help="only those whose failure reason or type contains TEXT")
    replay.add_argument("--limit", type=int, help="replay at most N")
    replay.add_argument("--dry-run", action="store_true", help="count what would be replayed, move nothing")

    resend = commands.add_parser("resend", help="send a vendor the tenant's whole current selection again")
    resend.add_argument("tenant")
    resend.add_argument("vendor")

    holds = commands.add_parser("holds", help="the tenant's mass-deletion holds, their causes and decisions")
    holds.add_argument("tenant")
    holds.add_argument("--history", type=int, default=20, metavar="N", help="the latest N decisions (default 20)")
    holds.add_argument("--json", action="store_true", help="print JSON")

    overdue = commands.add_parser("overdue", help="the tenant's deletions past their deadline")
    overdue.add_argument("tenant")
    overdue.add_argument("--json", action="store_true", help="print JSON")

    explain = commands.add_parser("explain", help="why a person is, or is not, at each vendor")
    explain.add_argument("tenant")
    explain.add_argument("person", metavar="PERSON", help="the person's id, login or e-mail address")
    explain.add_argument("--json", action="store_true", help="print JSON")

    sources = commands.add_parser("sources", help="the source registry")
    sources_commands = sources.add_subparsers(dest="sources_command", required=True, metavar="ACTION")
    sources_import = sources_commands.add_parser(
        "import", help="create or update the sources of a sources file (secrets as variable names only)"
    )
    sources_import.add_argument(
        "source_kind", metavar="KIND", choices=sorted(SOURCE_KINDS), help=", ".join(sorted(SOURCE_KINDS))
    )
    sources_import.add_argument("file", metavar="FILE", type=Path)
    sources_import.add_argument("--dry-run", action="store_true", help="check the file and say what would change")
    vendors = commands.add_parser("vendors", help="the vendor catalogue")
    vendors_commands = vendors.add_subparsers(dest="vendors_command", required=True, metavar="ACTION")
    vendors_import = vendors_commands.add_parser(
        "import", help="create or update the vendors of a folder of catalogue files (secrets as variable names only)"
    )
    vendors_import.add_argument("folder", metavar="DIR", type=Path)
    vendors_import.add_argument("--dry-run", action="store_true", help="check the files and say what would change")
    vendors_list = vendors_commands.add_parser("list", help="every vendor of the catalogue in the store")
    vendors_list.add_argument("--json", action="store_true", help="print JSON")
    return root


class Operator:
    """Connections opened when first needed, closed together."""

    def __init__(self, settings: CliSettings, *, out: TextIO, err: TextIO) -> None:
        self.settings = settings
        self.out = out
        self.err = err
        self._mongo: MongoClient | None = None
        self._amqp: AbstractConnection | None = None

    @property
    def namespace(self) -> str:
        return self.settings.broker.namespace

    @property
    def db(self) -> Database:
        if self._mongo is None:
            self._mongo = create_client(self.settings.store, app_name=PRODUCER)
        return self._mongo[self.settings.store.mongodb_database]

    async def amqp(self) -> AbstractConnection:
        if self._amqp is None:
            self._amqp = await aio_pika.connect(
                self.settings.broker.amqp_url.get_secret_value(), client_properties={"connection_name": PRODUCER}
            )
        return self._amqp

    async def feed_stats(self, vendor_id: str, feeds: list[str]) -> list[queues.QueueStats]:
        """A queue vendor's feeds, in its own vhost; all missing when that vhost is (not onboarded yet)."""
        vhost = vendor_vhost_name(self.namespace, vendor_id)
        url = amqp_url_with_vhost(self.settings.broker.amqp_url.get_secret_value(), vhost)
        try:
            connection = await aio_pika.connect(url, client_properties={"connection_name": PRODUCER})
        except (*CONNECTION_EXCEPTIONS, aiormq.exceptions.AMQPError):
            return [queues.QueueStats(feed, exists=False) for feed in feeds]
        async with connection:
            return await queues.queue_stats(connection, feeds)

    async def close(self) -> None:
        if self._amqp is not None:
            await self._amqp.close()
        if self._mongo is not None:
            await self._mongo.close()

    @asynccontextmanager
    async def publisher(self, connector_kinds: tuple[str, ...] = ()) -> AsyncIterator[tuple[Publisher, Broker]]:
        """A confirming publisher on the system topology (declared first, as every service does)."""
        broker_settings = self.settings.broker
        topology = topology_for(broker_settings, connector_kinds=connector_kinds)
        metrics = Metrics()
        broker = Broker(broker_settings, topology, metrics, name=PRODUCER)
        await broker.connect(timeout=30)
        publisher = Publisher(broker, metrics, timeout_seconds=broker_settings.publish_timeout_seconds)
        try:
            await publisher.start()
            yield publisher, broker
        finally:
            await publisher.close()
            await broker.close()

    async def vendor_ids(self) -> dict[str, DeliveryMode | None]:
        """The catalogue's vendors (in the store) and their delivery modes."""
        return {vendor_id: entry.delivery for vendor_id, entry in (await VendorStore(self.db).active()).items()}

    def write_json(self, value: Any) -> None:
        self.out.write(json.dumps(value, indent=2, default=_json_default, ensure_ascii=False) + "\n")

    # -- commands ------------------------------------------------------------------------------------

    async def import_sources(self, kind: str, path: Path, *, dry_run: bool) -> int:
        key = self.settings.admin_secrets_key
        box = SecretBox(key.get_secret_value() or None if key else None)
        outcomes = await import_sources(self.db, box, SOURCE_KINDS[kind], path, dry_run=dry_run)
        output.table(["SOURCE", "WOULD BE" if dry_run else "OUTCOME"], outcomes, out=self.out)
        counts = {o: sum(1 for _, x in outcomes if x == o) for o in ("created", "updated", "unchanged")}
        self.out.write(", ".join(f"{n} {o}" for o, n in counts.items()) + "\n")
        return 0

    async def import_vendors(self, folder: Path, *, dry_run: bool) -> int:
        try:
            if not folder.is_dir():  # noqa: ASYNC240 (a command line: nothing else runs meanwhile)
                raise CommandError(f"{folder}: not a folder of vendor catalogue files")
            entries = list(load_catalogue(folder).values())
        except CatalogueError as error:
            raise CommandError(str(error)) from None
        store = VendorStore(self.db)
        if dry_run:
            outcomes: dict[str, str] = {}
            for entry in entries:
                current = await store.get(entry.vendor_id)
                if current is None:
                    outcomes[entry.vendor_id] = "created"
                elif not current.active:
                    outcomes[entry.vendor_id] = "retired"
                else:
                    same = current.entry.model_dump(mode="json") == entry.model_dump(mode="json")
                    outcomes[entry.vendor_id] = "unchanged" if same else "updated"
        else:
            outcomes = dict(await store.import_entries(entries, by="skolsynk vendors import"))
        output.table(["VENDOR", "WOULD BE" if dry_run else "OUTCOME"], sorted(outcomes.items()), out=self.out)
        counts = {
            o: sum(1 for x in outcomes.values() if x == o) for o in ("created", "updated", "unchanged", "retired")
        }
        self.out.write(", ".join(f"{n} {o}" for o, n in counts.items() if n or o != "retired") + "\n")
        return 0

    async def list_vendors(self, *, as_json: bool) -> int:
        vendors = await VendorStore(self.db).all()
        rows = [
            {
                "vendor": v.entry.vendor_id,
                "name": v.entry.display_name,
                "delivery": v.entry.delivery.value,
                "version": v.version,
                "retired_at": v.retired_at,
            }
            for v in vendors
        ]
        if as_json:
            self.write_json(rows)
            return 0
        output.table(
            ["VENDOR", "NAME", "DELIVERY", "VERSION", "RETIRED"],
            [(r["vendor"], r["name"], r["delivery"], r["version"], r["retired_at"] or "") for r in rows],
            out=self.out,
        )
        return 0

    async def status(self, tenant_id: str | None, *, as_json: bool) -> int:
        failing_after = timedelta(minutes=self.settings.delivery_failing_minutes)
        runs = await state.latest_runs(self.db, tenant_id, failing_after=failing_after)
        deliveries = await state.delivery_counts(self.db)
        holds = await state.pending_holds(self.db)
        overdue = await state.overdue_counts(self.db)
        profiles = await SubscriptionStore(self.db).profile_vendor_ids()
        catalogue = await self.vendor_ids()
        vendors = sorted(set(catalogue) | profiles | {v for v, _ in deliveries})
        topology = skolsynk_topology(self.namespace, vendor_ids=vendors, connector_kinds=STATUS_CONNECTOR_KINDS)
        names = [name for spec in topology.queues for name in (spec.name, spec.dead_letter_queue)]
        # Each queue vendor's feeds, in the vendor's own vhost (docs/decisions.md #23).
        feeds_of = {v: [f"{self.namespace}.vendor-feed.{v}"] for v in vendors if catalogue.get(v) is DeliveryMode.QUEUE}
        # A queue vendor with a feed per organiser (catalogue feed_per_organiser): each organiser's feed too.
        for vendor_id, entry in sorted((await VendorStore(self.db).active()).items()):
            if entry.delivery is DeliveryMode.QUEUE and entry.feed_per_organiser:
                feeds_of.setdefault(vendor_id, []).extend(
                    f"{self.namespace}.vendor-feed.{vendor_id}.organiser.{t}"
                    for t in await SubscriptionStore(self.db).tenants_of(vendor_id)
                )
        feeds = [feed for vendor_feeds in feeds_of.values() for feed in vendor_feeds]
        stats = {s.name: s for s in await queues.queue_stats(await self.amqp(), names)}
        for vendor_id, vendor_feeds in feeds_of.items():
            stats |= {s.name: s for s in await self.feed_stats(vendor_id, vendor_feeds)}
        queue_rows = [
            {
                "queue": spec.name,
                "exists": stats[spec.name].exists,
                "ready": stats[spec.name].messages,
                "consumers": stats[spec.name].consumers,
                "dead_letters": stats[spec.dead_letter_queue].messages
                if stats[spec.dead_letter_queue].exists
                else None,
            }
            for spec in topology.queues
        ] + [
            {
                "queue": name,
                "exists": stats[name].exists,
                "ready": stats[name].messages,
                "consumers": stats[name].consumers,
                "dead_letters": None,
            }
            for name in feeds
        ]
        statuses = ("delivered", "test", "test_rejected", "rejected")
        vendor_rows = [
            {"vendor": v, **{s: deliveries.get((v, s), 0) for s in statuses}}
            for v in vendors
            if any(deliveries.get((v, s)) for s in statuses) or v in profiles
        ]
        health = await state.delivery_health(self.db, tenant_id, now=datetime.now(UTC), failing_after=failing_after)
        if as_json:
            self.write_json(
                {
                    "sources": [asdict(r) for r in runs],
                    "queues": queue_rows,
                    "vendors": vendor_rows,
                    "delivery_states": [asdict(h) for h in health],
                    "holds_pending": [asdict(h) for h in holds],
                    "deletions_overdue": [
                        {"tenant_id": t, "vendor_id": v, "overdue": n} for (t, v), n in sorted(overdue.items())
                    ],
                }
            )
            return 0
        now = datetime.now(UTC)
        self.out.write("Sources (latest run each)\n")
        output.table(
            (
                "tenant",
                "source",
                "kind",
                "mode",
                "status",
                "started",
                "finalised",
                "complete",
                "why not",
                "health",
                "last complete",
            ),
            [
                (
                    r.tenant_id,
                    r.source_id,
                    r.source_kind,
                    r.mode,
                    r.status,
                    output.age(r.started_at, now=now) + " ago",
                    r.finalised_at,
                    r.complete,
                    "; ".join(r.reasons)[:80] or None,
                    r.health
                    + (f" since {output.age(r.failing_since, now=now)} ago" if r.failing_since else "")
                    + (f" ({', '.join(r.errors)})" if r.errors else ""),
                    output.age(r.last_complete_at, now=now) + " ago" if r.last_complete_at else None,
                )
                for r in runs
            ],
            out=self.out,
        )
        self.out.write("\nQueues\n")
        output.table(
            ("queue", "ready", "consumers", "dead letters"),
            [
                (
                    q["queue"],
                    q["ready"] if q["exists"] else "(absent)",
                    q["consumers"] if q["exists"] else None,
                    q["dead_letters"],
                )
                for q in queue_rows
            ],
            out=self.out,
        )
        self.out.write("\nVendors (delivery ledger entries, every tenant)\n")
        output.table(("vendor", *statuses), [tuple(row.values()) for row in vendor_rows], out=self.out)
        self.out.write("\nDelivery health (each tenant and vendor; failing: retrying past the threshold)\n")
        output.table(
            ("tenant", "vendor", "state", "since", "last error", "last success", "pending", "oldest pending"),
            [
                (
                    h.tenant_id,
                    h.vendor_id,
                    h.state,
                    output.age(h.since, now=now) + " ago" if h.since else None,
                    f"{h.last_error} ({output.age(h.last_error_at, now=now)} ago)" if h.last_error else None,
                    output.age(h.last_success_at, now=now) + " ago" if h.last_success_at else None,
                    h.pending,
                    (">" if h.oldest_pending_at_least else "") + output.age(h.oldest_pending_at, now=now) + " ago"
                    if h.oldest_pending_at
                    else None,
                )
                for h in health
            ],
            out=self.out,
        )
        self.out.write("\nHolds pending\n")
        output.table(
            ("tenant", "vendor", "holds", "removals", "oldest"),
            [(h.tenant_id, h.vendor_id, h.holds, h.removals, output.age(h.oldest, now=now)) for h in holds],
            out=self.out,
        )
        self.out.write("\nDeletions overdue\n")
        output.table(
            ("tenant", "vendor", "overdue"), [(t, v, n) for (t, v), n in sorted(overdue.items())], out=self.out
        )
        return 0

    async def sync(self, tenant_id: str, kind: str, source_id: str, mode: str) -> int:
        request = SyncRequested(
            source_id=source_id, mode="incremental" if mode == "incremental" else "full", requested_by="operator"
        )
        envelope = request.to_envelope(tenant_id=tenant_id, producer=PRODUCER)
        async with self.publisher(connector_kinds=(kind,)) as (publisher, broker):
            await publisher.publish(
                envelope, exchange=broker.topology.exchange("control"), routing_key=sync_request_routing_key(kind)
            )
        self.out.write(
            f"sync requested: {tenant_id} {kind} {source_id} ({request.mode}), message {envelope.message_id}\n"
        )
        return 0

    async def resend(self, tenant_id: str, vendor_id: str) -> int:
        if await SubscriptionStore(self.db).get(tenant_id, vendor_id) is None:
            raise CommandError(f"tenant {tenant_id!r} has no subscription to vendor {vendor_id!r}")
        request = ProjectionRequested(reason="resend", resend_vendor_id=vendor_id)
        envelope = request.to_envelope(tenant_id=tenant_id, producer=PRODUCER)
        async with self.publisher() as (publisher, broker):
            await publisher.publish(
                envelope, exchange=broker.topology.exchange("control"), routing_key=ProjectionRequested.message_type
            )
        self.out.write(f"full resend requested: {tenant_id} to {vendor_id}, message {envelope.message_id}\n")
        return 0

    async def dlq_list(self, queue: str, *, limit: int, as_json: bool) -> int:
        work_queue, dlq = queues.resolve(self.namespace, queue)
        total, letters = await queues.list_dead_letters(await self.amqp(), dlq, limit=limit)
        if as_json:
            self.write_json({"queue": work_queue, "dlq": dlq, "total": total, "messages": [asdict(d) for d in letters]})
            return 0
        shown = f", the first {len(letters)}" if total > len(letters) else ""
        self.out.write(f"{dlq}: {total} dead letter(s){shown}\n")
        output.table(
            ("message id", "type", "tenant", "attempt", "failed at", "failure"),
            [
                (
                    d.message_id,
                    d.message_type,
                    d.tenant_id,
                    d.attempt,
                    d.failed_at,
                    f"{d.failure_type or '?'}: {d.reason or ''}"[:120],
                )
                for d in letters
            ],
            out=self.out,
        )
        return 0

    async def dlq_replay(self, queue: str, *, reason_filter: str | None, limit: int | None, dry_run: bool) -> int:
        work_queue, dlq = queues.resolve(self.namespace, queue)
        progress = output.Progress("examined", None, stream=self.err)
        result = await queues.replay_dead_letters(
            await self.amqp(),
            work_queue,
            dlq,
            reason_filter=reason_filter,
            limit=limit,
            dry_run=dry_run,
            progress=progress,
        )
        verb = "would replay" if dry_run else "replayed"
        self.out.write(
            f"{verb} {result.replayed} of {result.examined} examined to {work_queue}; {result.kept} left in {dlq}\n"
        )
        return 0

    async def holds(self, tenant_id: str, *, as_json: bool, history: int = 20) -> int:
        docs = await state.tenant_holds(self.db, tenant_id)
        decisions = await state.hold_history(self.db, tenant_id, limit=history)
        rows = [
            {
                "vendor_id": d.get("vendor_id"),
                "school_unit_id": d.get("school_unit_id"),
                "school_unit_codes": d.get("school_unit_codes", []),
                "status": d.get("status"),
                "removals": d.get("removals"),
                "population": d.get("population"),
                "created_at": d.get("created_at"),
                "updated_at": d.get("updated_at"),
                "decided_by": d.get("decided_by"),
                "causes": d.get("causes", []),
            }
            for d in docs
        ]
        if as_json:
            self.write_json({"tenant_id": tenant_id, "holds": rows, "history": decisions})
            return 0
        self.out.write(f"Holds of {tenant_id}\n")
        output.table(
            ("vendor", "school unit", "codes", "status", "removals", "of", "waiting", "cause"),
            [
                (
                    r["vendor_id"],
                    r["school_unit_id"],
                    " ".join(r["school_unit_codes"]) or None,
                    r["status"],
                    r["removals"],
                    r["population"],
                    output.age(r["created_at"]),
                    state.hold_cause(r["causes"]),
                )
                for r in rows
            ],
            out=self.out,
        )
        self.out.write(f"\nDecisions (the latest {history}, newest first)\n")
        output.table(
            ("when", "vendor", "school unit", "outcome", "by", "removals", "of", "cause"),
            [
                (
                    output.age(e.get("at")),
                    e.get("vendor_id"),
                    e.get("school_unit_id"),
                    e.get("outcome"),
                    e.get("by"),
                    e.get("removals"),
                    e.get("population"),
                    state.hold_cause(e.get("causes", [])),
                )
                for e in decisions
            ],
            out=self.out,
        )
        return 0

    async def overdue(self, tenant_id: str, *, as_json: bool) -> int:
        docs = await state.overdue_deletions(self.db, tenant_id)
        rows = [
            {
                "vendor_id": d.get("vendor_id"),
                "person_id": d.get("person_id"),
                "vendor_entity_id": d.get("vendor_entity_id"),
                "version": d.get("version"),
                "reason": d.get("reason"),
                "requested_at": d.get("requested_at"),
                "retries": d.get("retries", 0),
            }
            for d in docs
        ]
        if as_json:
            self.write_json({"tenant_id": tenant_id, "overdue": rows})
            return 0
        self.out.write(f"Deletions overdue for {tenant_id} (pseudonymous person ids)\n")
        output.table(
            ("vendor", "person id", "reason", "requested", "overdue for", "retries"),
            [
                (
                    r["vendor_id"],
                    r["person_id"],
                    r["reason"],
                    r["requested_at"],
                    output.age(r["requested_at"]),
                    r["retries"],
                )
                for r in rows
            ],
            out=self.out,
        )
        return 0

    async def explain(self, tenant_id: str, person: str, *, as_json: bool) -> int:
        explainer = PersonExplainer(self.db)
        found = await explainer.resolve(tenant_id, person)
        if len(found) > 1:
            raise CommandError(f"{len(found)} persons have that login or address: {', '.join(map(str, found))}")
        explanation = await explainer.explain(tenant_id, found[0]) if found else None
        if explanation is None:
            raise CommandError(f"{tenant_id} has no person with that id, login or e-mail address")
        if as_json:
            self.write_json(explanation.model_dump(mode="json"))
            return 0
        explained.write_text(explanation, out=self.out)
        return 0


async def import_sources(
    db: Database, box: SecretBox, kind: SourceKind, path: Path, *, dry_run: bool = False
) -> list[tuple[str, str]]:
    """The sources of a sources file put in the registry: ``(tenant:source, outcome)`` in file order, the
    outcome ``created``, ``updated`` or ``unchanged`` (with ``dry_run``, what it would be). The whole file is
    checked before anything is written; a tenant the admin does not know is an error."""
    entries = kind.parse(load_yaml(path, noun="sources file"))
    prepared = []
    for entry in entries:
        try:
            settings, refs = kind.to_registry(entry)
        except ValueError as error:
            raise ConfigurationError(f"{path}: {entry.key}: {error}") from None
        prepared.append((entry, settings, refs))
    tenants = {str(doc["_id"]) async for doc in db[ADMIN_TENANTS].find({}, {"_id": 1})}
    unknown = sorted({entry.tenant_id for entry, _, _ in prepared} - tenants)
    if unknown:
        raise ConfigurationError(f"{path}: no such organiser: {', '.join(unknown)} (create it in the admin first)")
    store = SourceStore(db, box)
    outcomes = []
    for entry, settings, refs in prepared:
        try:
            outcome = await store.put(
                entry.tenant_id,
                entry.source_id,
                kind=kind.name,
                display_name=entry.source_id,
                settings=settings,
                secret_refs=refs,
                dry_run=dry_run,
            )
        except ValueError as error:
            raise ConfigurationError(str(error)) from None
        outcomes.append((entry.key, outcome))
    return outcomes


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


async def execute(args: argparse.Namespace, settings: CliSettings, *, out: TextIO, err: TextIO) -> int:
    operator = Operator(settings, out=out, err=err)
    try:
        if args.command == "status":
            return await operator.status(args.tenant, as_json=args.json)
        if args.command == "sync":
            return await operator.sync(args.tenant, args.source_kind, args.source_id, args.mode)
        if args.command == "resend":
            return await operator.resend(args.tenant, args.vendor)
        if args.command == "holds":
            return await operator.holds(args.tenant, as_json=args.json, history=args.history)
        if args.command == "overdue":
            return await operator.overdue(args.tenant, as_json=args.json)
        if args.command == "explain":
            return await operator.explain(args.tenant, args.person, as_json=args.json)
        if args.command == "sources":
            return await operator.import_sources(args.source_kind, args.file, dry_run=args.dry_run)
        if args.command == "vendors" and args.vendors_command == "import":
            return await operator.import_vendors(args.folder, dry_run=args.dry_run)
        if args.command == "vendors":
            return await operator.list_vendors(as_json=args.json)
        if args.dlq_command == "list":
            return await operator.dlq_list(args.queue, limit=args.limit, as_json=args.json)
        return await operator.dlq_replay(
            args.queue, reason_filter=args.filter_reason, limit=args.limit, dry_run=args.dry_run
        )
    except (CommandError, queues.QueueNotFound, ConfigurationError, SecretsUnavailable) as error:
        err.write(f"skolsynk {args.command}: {error}\n")
        return 1
    except UnroutableMessage as error:
        err.write(f"skolsynk {args.command}: nothing consumes this request ({error})\n")
        return 1
    except (*CONNECTION_EXCEPTIONS, OSError) as error:
        err.write(f"skolsynk {args.command}: cannot reach RabbitMQ ({type(error).__name__}: {error})\n")
        return 1
    except PyMongoError as error:
        err.write(f"skolsynk {args.command}: MongoDB failed ({type(error).__name__}: {str(error)[:200]})\n")
        return 1
    finally:
        await operator.close()


def main(argv: list[str] | None = None) -> int:
    """The ``skolsynk`` entry point. Warnings and errors are logged to standard error, so standard
    output is only the command's result."""
    args = parser().parse_args(argv)
    configure_logging(log_format="console", level="WARNING", stream=sys.stderr)
    return asyncio.run(execute(args, CliSettings(), out=sys.stdout, err=sys.stderr))
