"""``python -m skolsynk_services.admin.tokens create --role operator|organiser_admin|viewer --subject WHO
[--tenant T] [--days N]``: create an API token (printed once; only its hash is stored). ``revoke TOKEN_ID`` (its UI
sessions end too). ``list [--tenant T]`` (with expiry and last use). The same is in the admin API and UI
(``/api/v1/tokens``, the operators' page "Nycklar"). Settings (MONGODB_URL ...) from the environment, like the
service."""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import UTC, datetime, timedelta

from skolsynk.storage import create_client
from skolsynk_services.admin.app import AdminSettings
from skolsynk_services.admin.auth import Role, SessionStore, TokenStore, token_active


async def run(args: argparse.Namespace) -> int:
    settings = AdminSettings()
    client = create_client(settings.store, app_name="admin-tokens")
    try:
        db = client[settings.store.mongodb_database]
        store = TokenStore(db, default_days=settings.admin_token_days)
        if args.command == "create":
            role = Role(args.role)
            if role is not Role.OPERATOR and not args.tenant:
                sys.stderr.write(f"an {role.value} token needs --tenant\n")
                return 2
            token, record = await store.create(
                role=role, subject=args.subject, tenant_id=args.tenant if role is not Role.OPERATOR else None,
                created_by="cli", days=args.days,
            )  # fmt: skip
            sys.stdout.write(f"{token}\n")
            sys.stderr.write(
                f"token {record['_id']} ({role.value}) created, valid until {record['expires_at']:%Y-%m-%d %H:%M} "
                "UTC; it is shown only now\n"
            )
        elif args.command == "revoke":
            revoked = await store.revoke(args.token_id)
            hours = timedelta(hours=settings.admin_session_max_hours)
            await SessionStore(db, store, idle=hours, absolute=hours).end_for_token(args.token_id)
            if revoked is None:
                sys.stderr.write("no such active token\n")
                return 1
        else:
            now = datetime.now(UTC)
            for record in await store.list(args.tenant):
                state = "revoked" if record["revoked_at"] else "active" if token_active(record, now) else "expired"
                expires = f"{record['expires_at']:%Y-%m-%d}" if record.get("expires_at") else "-"
                used = f"{record['last_used_at']:%Y-%m-%d %H:%M}" if record.get("last_used_at") else "never"
                sys.stdout.write(
                    f"{record['_id']}\t{record['role']}\t{record['tenant_id'] or '-'}\t{state}\t"
                    f"expires {expires}\tused {used}\n"
                )
        return 0
    finally:
        await client.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m skolsynk_services.admin.tokens")
    commands = parser.add_subparsers(dest="command", required=True)
    create = commands.add_parser("create")
    create.add_argument("--role", choices=[r.value for r in Role], required=True)
    create.add_argument("--subject", required=True, help="who will use it (a user id)")
    create.add_argument("--tenant")
    create.add_argument("--days", type=int, choices=range(1, 366), metavar="1-365", help="valid this many days")
    revoke = commands.add_parser("revoke")
    revoke.add_argument("token_id")
    listing = commands.add_parser("list")
    listing.add_argument("--tenant")
    return asyncio.run(run(parser.parse_args(argv)))


if __name__ == "__main__":
    raise SystemExit(main())
