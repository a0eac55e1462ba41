"""``python -m skolsynk_services.gdpr.cli``: the GDPR service's operator commands (settings from the environment, like
the service).

* ``evidence --tenant T [--vendor V] [--format csv|json] [--since D] [--until D] [--output FILE]``:
  the deletions with their receipts, pseudonymous, for the organiser's GDPR records;
* ``erase --tenant T --person ID [--vendor V ...] [--objection] [--reference REF] --by WHO``: an
  erasure (or objection) request; prints its id;
* ``withdraw --tenant T --request ID --by WHO``: lift a request.

The admin API offers the same to organisers; this is for operators and scripts.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

from skolsynk.contracts.envelope import MessageContract
from skolsynk.contracts.gdpr import ErasureRequested, ErasureWithdrawn
from skolsynk.logging import configure_logging
from skolsynk.service import ServiceApp
from skolsynk.storage import create_client
from skolsynk.storage.erasures import ErasureLedger
from skolsynk_services.gdpr.app import GdprSettings


def _when(value: str) -> datetime:
    moment = datetime.fromisoformat(value)
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog="python -m skolsynk_services.gdpr.cli", description="GDPR evidence and erasure requests."
    )
    commands = root.add_subparsers(dest="command", required=True)
    evidence = commands.add_parser("evidence", help="export the deletions with their receipts")
    evidence.add_argument("--tenant", required=True)
    evidence.add_argument("--vendor")
    evidence.add_argument("--format", choices=["csv", "json"], default="csv")
    evidence.add_argument("--since", type=_when, help="requested at or after (ISO 8601)")
    evidence.add_argument("--until", type=_when, help="requested before (ISO 8601)")
    evidence.add_argument("--output", type=Path, help="write here instead of standard output")
    erase = commands.add_parser("erase", help="erase a person at one vendor, several, or all")
    erase.add_argument("--tenant", required=True)
    erase.add_argument("--person", required=True, type=uuid.UUID, help="the person's id in skolsynk")
    erase.add_argument("--vendor", action="append", help="repeat for several; none: every vendor")
    erase.add_argument("--objection", action="store_true", help="an objection (article 21), not an erasure")
    erase.add_argument("--reference", help="the organiser's case number")
    erase.add_argument("--by", required=True, help="who asks (an id, not a name)")
    withdraw = commands.add_parser("withdraw", help="withdraw an erasure or objection request")
    withdraw.add_argument("--tenant", required=True)
    withdraw.add_argument("--request", required=True, type=uuid.UUID)
    withdraw.add_argument("--by", required=True)
    return root


async def export_evidence(settings: GdprSettings, args: argparse.Namespace) -> str:
    client = create_client(settings.store, app_name="gdpr-cli")
    try:
        ledger = ErasureLedger(client[settings.store.mongodb_database])
        window = {"since": args.since, "until": args.until}
        if args.format == "json":
            return await ledger.evidence_json(args.tenant, vendor_id=args.vendor, **window)
        return await ledger.evidence_csv(args.tenant, vendor_id=args.vendor, **window)
    finally:
        await client.close()


async def send(settings: GdprSettings, tenant_id: str, message: MessageContract) -> None:
    """Publish one request on the ``gdpr`` exchange (confirmed)."""
    app = ServiceApp.create("gdpr-cli", settings)
    await app.broker.connect()
    await app.publisher.start()
    try:
        await app.publisher.publish(
            message.to_envelope(tenant_id=tenant_id, producer="gdpr-cli"),
            exchange=app.topology.exchange("gdpr"),
            routing_key=message.message_type,
        )
    finally:
        await app.publisher.close()
        await app.broker.close()
        await app.mongo.close()


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    settings = GdprSettings()
    if args.command == "evidence":
        text = asyncio.run(export_evidence(settings, args))
        if args.output is not None:
            args.output.write_text(text, encoding="utf-8")
        else:
            sys.stdout.write(text)
        return 0
    if args.command == "erase":
        request = ErasureRequested(
            request_id=uuid.uuid4(),
            person_id=args.person,
            vendor_ids=args.vendor,
            kind="objection" if args.objection else "erasure",
            requested_by=args.by,
            reference=args.reference,
        )
        asyncio.run(send(settings, args.tenant, request))
        sys.stdout.write(f"{request.request_id}\n")
        return 0
    asyncio.run(send(settings, args.tenant, ErasureWithdrawn(request_id=args.request, withdrawn_by=args.by)))
    return 0


def run() -> int:
    """The command line: warnings and errors are logged to stderr, so stdout is only the output."""
    configure_logging(log_format="console", level="WARNING", stream=sys.stderr)
    return main()


if __name__ == "__main__":
    raise SystemExit(run())
