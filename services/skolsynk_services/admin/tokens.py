"""``python -m skolsynk_services.admin.tokens create --role operator|organiser_admin --subject WHO
[--tenant T]``: create an API token (printed once; only its hash is stored). ``revoke TOKEN_ID``. ``list [--tenant T]``.
Settings (MONGODB_URL ...) from the environment, like the service."""

from __future__ import annotations

import argparse
import asyncio
import sys

from skolsynk.storage import create_client
from skolsynk_services.admin.app import AdminSettings
from skolsynk_services.admin.auth import Role, TokenStore


async def run(args: argparse.Namespace) -> int:
    settings = AdminSettings()
    client = create_client(settings.store, app_name="admin-tokens")
    try:
        store = TokenStore(client[settings.store.mongodb_database])
        if args.command == "create":
            role = Role(args.role)
            if role is Role.ORGANISER_ADMIN and not args.tenant:
                sys.stderr.write("an organiser admin token needs --tenant\n")
                return 2
            token, record = await store.create(
                role=role, subject=args.subject, tenant_id=args.tenant if role is Role.ORGANISER_ADMIN else None,
                created_by="cli",
            )  # fmt: skip
            sys.stdout.write(f"{token}\n")
            sys.stderr.write(f"token {record['_id']} ({role.value}) created; it is shown only now\n")
        elif args.command == "revoke":
            if await store.revoke(args.token_id) is None:
                sys.stderr.write("no such active token\n")
                return 1
        else:
            for record in await store.list(args.tenant):
                revoked = " revoked" if record["revoked_at"] else ""
                sys.stdout.write(f"{record['_id']}\t{record['role']}\t{record['tenant_id'] or '-'}{revoked}\n")
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
    revoke = commands.add_parser("revoke")
    revoke.add_argument("token_id")
    listing = commands.add_parser("list")
    listing.add_argument("--tenant")
    return asyncio.run(run(parser.parse_args(argv)))


if __name__ == "__main__":
    raise SystemExit(main())
