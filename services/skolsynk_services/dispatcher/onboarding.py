r"""Onboarding a queue-mode vendor: its vhost, its feed queue and its own RabbitMQ user.

A vendor whose catalogue entry says ``delivery: queue`` consumes its changes from one queue,
``{namespace}.vendor-feed.{vendor_id}`` (or one per organiser, ``feed_per_organiser``), as the user
``{namespace}-vendor-{vendor_id}``. skolsynk (not the vendor) declares the queue and publishes into it.

Its own vhost
-------------
The feeds live in a vhost of the vendor's own, ``{namespace}-vendor-{vendor_id}``
(:func:`skolsynk.messaging.vhosts.vendor_vhost_name`), never in the system's vhost: RabbitMQ lets any
user with access to a vhost passive-declare every queue in it, whatever its permissions say, which tells
whether a queue exists and how many messages wait in it (issue 19). In its own vhost a vendor finds
nothing but its own feeds (another vendor's feed is NOT_FOUND, whether that vendor exists or not), and
every other vhost refuses its user at connection. Onboarding creates the vhost and gives the
dispatcher's own broker user (the user of ``SKOLSYNK_AMQP_URL``) what it needs there
(:func:`dispatcher_permissions`): declaring the feeds, publishing to them, compacting them.
docs/decisions.md #23 says why a vhost per vendor, docs/vendors.md how to upgrade from feeds in the
system's vhost.

The permission model
--------------------
RabbitMQ checks three regular expressions per user and vhost against the name of the resource each
AMQP method touches:

* configure ``^$``: matches no queue or exchange name, so the vendor cannot declare (create), delete
  or bind anything. Even a server-named queue (``amq.gen-...``) is refused.
* write ``^$``: matches no exchange the vendor could publish to. The default exchange is checked
  under the name ``amq.default`` (not the empty string), so it is refused too, as are ``amq.*`` and
  skolsynk's own exchanges: the vendor cannot publish at all.
* read ``^<its feed queue, escaped>(\.organiser\.<tenant id>)?$``: anchored at both ends, so it matches
  the vendor's feed queue and its per-organiser feeds (``feed_per_organiser``) and nothing else (not
  ``<feed>.dlq``, not another vendor's feed whose name starts the same way).
  Reading allows ``basic.consume``/``basic.get`` with acks and nacks, and ``queue.purge``: the vendor
  can empty only its own feed, which is no more than consuming and acking everything.

The user has no tags, so it has no access to the management UI or HTTP API, and it has permissions
in its own vhost only. User limits bound the connections and channels it can open, so a vendor's
reconnect loop cannot exhaust the broker. Offboarding deletes the user and closes its open
connections (RabbitMQ does not close them by itself, and permissions already granted to an open
channel are not re-checked); with ``delete_feeds`` it deletes the vhost too, and the feeds with it.

How the commands run
--------------------
This module drives ``rabbitmqctl`` on the broker's host, which is what the development stack and the
tests have. The password is passed as a command-line argument, so it is briefly visible in the
process list of that host; error messages never include it. Production does not do this: it
creates the user and its permissions through the management HTTP API, or declaratively with the
RabbitMQ Messaging Topology Operator (``User`` and ``Permission`` resources, the password in a
Kubernetes Secret, and a ``Vhost`` resource), with exactly the same expressions as
:func:`vendor_permissions` and :func:`dispatcher_permissions`.
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass
from typing import Any

from aio_pika.abc import AbstractChannel, AbstractQueue

from skolsynk.messaging.vhosts import amqp_user, vendor_vhost_name

#: Deliveries of one message before the broker gives up on it (explicit: unlimited on RabbitMQ 3.x
#: otherwise). The feed queue has no dead-letter exchange, so a message that a vendor rejects or
#: crashes on this often is dropped; the vendor can ask for a full resend. A DLQ can be added later
#: with a broker policy, without redeclaring the queue.
FEED_DELIVERY_LIMIT = 20

#: Connection and channel limits of every vendor user.
VENDOR_USER_LIMITS: dict[str, int] = {"max-connections": 10, "max-channels": 100}

#: Shortest password accepted (generate them, e.g. ``secrets.token_urlsafe(32)``).
MIN_PASSWORD_LENGTH = 16

#: One ``rabbitmqctl`` call may take this long before it is killed.
RABBITMQCTL_TIMEOUT_SECONDS = 60.0

_NAMESPACE = re.compile(r"^[a-z][a-z0-9-]{0,40}$")
_VENDOR_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")

# rabbitmqctl's exit codes for "no such user" (EX_NOUSER) and "no such vhost" (EX_DATAERR).
_EXIT_NO_USER = 67
_EXIT_NO_VHOST = 65


class OnboardingError(RuntimeError):
    """A ``rabbitmqctl`` command failed (the message never contains the password)."""


@dataclass(frozen=True)
class VendorPermissions:
    """The three regular expressions of a user in a vendor's vhost."""

    configure: str
    write: str
    read: str


def _check_names(namespace: str, vendor_id: str) -> None:
    if not _NAMESPACE.match(namespace):
        raise ValueError(f"invalid namespace {namespace!r}")
    if not _VENDOR_ID.match(vendor_id):
        raise ValueError(f"invalid vendor id {vendor_id!r}")


#: Between a vendor's feed and an organiser's id in the name of a per-organiser feed (catalogue
#: ``feed_per_organiser``): a word no queue suffix of skolsynk's uses (``.dlq``, ``.retry.N``).
ORGANISER_INFIX = "organiser"
_TENANT_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


def feed_queue_name(namespace: str, vendor_id: str, tenant_id: str | None = None) -> str:
    """The queue the vendor consumes: its one feed, or (``tenant_id``) the feed of one organiser."""
    _check_names(namespace, vendor_id)
    if tenant_id is None:
        return f"{namespace}.vendor-feed.{vendor_id}"
    if not _TENANT_ID.match(tenant_id):
        raise ValueError(f"invalid tenant id {tenant_id!r}")
    return f"{namespace}.vendor-feed.{vendor_id}.{ORGANISER_INFIX}.{tenant_id}"


def vendor_user_name(namespace: str, vendor_id: str) -> str:
    """The vendor's RabbitMQ user name."""
    _check_names(namespace, vendor_id)
    return f"{namespace}-vendor-{vendor_id}"


def vendor_vhost(namespace: str, vendor_id: str) -> str:
    """The vendor's own vhost, where its feeds live."""
    return vendor_vhost_name(namespace, vendor_id)


def _feeds_pattern(namespace: str, vendor_id: str) -> str:
    """The vendor's feed and its per-organiser feeds, anchored at both ends."""
    feed = re.escape(feed_queue_name(namespace, vendor_id))
    organisers = rf"(\.{ORGANISER_INFIX}\.[a-z0-9][a-z0-9-]{{0,62}})?"
    return f"^{feed}{organisers}$"


def vendor_permissions(namespace: str, vendor_id: str) -> VendorPermissions:
    """Declare nothing, publish nothing, read only the feed queue and the vendor's per-organiser feeds
    (see the module docstring): the same whether the catalogue gives it one feed or one per organiser, so
    switching needs no new permissions."""
    return VendorPermissions(configure="^$", write="^$", read=_feeds_pattern(namespace, vendor_id))


def dispatcher_permissions(namespace: str, vendor_id: str) -> VendorPermissions:
    """The dispatcher's user in the vendor's vhost: declare the vendor's feeds (configure), publish to them
    through the default exchange (write ``amq.default``), and take messages out of an unread feed when
    compacting it (read). Nothing else: no other queue or exchange."""
    feeds = _feeds_pattern(namespace, vendor_id)
    return VendorPermissions(configure=feeds, write=r"^amq\.default$", read=feeds)


def feed_queue_arguments() -> dict[str, Any]:
    """Arguments of every feed queue. Changing them later makes the declare fail with
    PRECONDITION_FAILED: change them with a broker policy, never in place."""
    return {"x-queue-type": "quorum", "x-delivery-limit": FEED_DELIVERY_LIMIT}


async def declare_feed_queue(
    channel: AbstractChannel, namespace: str, vendor_id: str, tenant_id: str | None = None
) -> AbstractQueue:
    """Declare (idempotently) the vendor's feed queue (or one organiser's): a durable quorum queue.
    skolsynk declares it on its own channel; the vendor cannot."""
    return await channel.declare_queue(
        feed_queue_name(namespace, vendor_id, tenant_id), durable=True, arguments=feed_queue_arguments()
    )


async def prepare_vendor_vhost(namespace: str, vendor_id: str, *, dispatcher_user: str) -> str:
    """Create the vendor's vhost (idempotent) and give the dispatcher's broker user
    :func:`dispatcher_permissions` there; returns the vhost. Until this has run, the dispatcher holds the
    vendor's deliveries (delivery state ``feed_vhost_missing``) and loses none."""
    vhost = vendor_vhost(namespace, vendor_id)
    if not dispatcher_user:
        raise ValueError("the dispatcher's broker user is required")
    allowed = dispatcher_permissions(namespace, vendor_id)
    await _run("add_vhost", "--", vhost)
    await _run("set_permissions", "-p", vhost, "--", dispatcher_user, allowed.configure, allowed.write, allowed.read)
    return vhost


async def delete_vendor_vhost(namespace: str, vendor_id: str) -> None:
    """Delete the vendor's vhost, and with it its feeds and whatever waits in them. Idempotent."""
    vhost = vendor_vhost(namespace, vendor_id)
    deleted, error = await _rabbitmqctl("delete_vhost", "--", vhost)
    if deleted not in (0, _EXIT_NO_VHOST):
        raise OnboardingError(f"rabbitmqctl delete_vhost {vhost} failed: {error}")


async def onboard_vendor(namespace: str, vendor_id: str, password: str, *, dispatcher_user: str) -> None:
    """Create the vendor's vhost (:func:`prepare_vendor_vhost`, for ``dispatcher_user``), create the
    vendor's user (or set a new password if it exists), strip any tags, and give it the feed-only
    permissions in its vhost and the user limits. Idempotent: running it again rotates the password.
    The feed queues themselves are declared by the dispatcher (:func:`declare_feed_queue`)."""
    user = vendor_user_name(namespace, vendor_id)
    permissions = vendor_permissions(namespace, vendor_id)
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ValueError(f"the password must have at least {MIN_PASSWORD_LENGTH} characters")
    vhost = await prepare_vendor_vhost(namespace, vendor_id, dispatcher_user=dispatcher_user)

    # "--" ends the options: a password or name starting with "-" is taken as an argument.
    added, error = await _rabbitmqctl("add_user", "--", user, password, secret=password)
    if added != 0:
        changed, _ = await _rabbitmqctl("change_password", "--", user, password, secret=password)
        if changed != 0:
            raise OnboardingError(f"rabbitmqctl add_user {user} failed: {error}")
    await _run("set_user_tags", "--", user)  # no tags: no management access
    await _run("set_permissions", "-p", vhost, "--", user, permissions.configure, permissions.write, permissions.read)
    await _run("set_user_limits", "--", user, json.dumps(VENDOR_USER_LIMITS))


async def offboard_vendor(namespace: str, vendor_id: str, *, delete_feeds: bool = False) -> None:
    """Delete the vendor's user and close its open connections. Idempotent: an unknown user is
    fine. The vhost, its feeds and their messages are left to the operator, unless ``delete_feeds``."""
    user = vendor_user_name(namespace, vendor_id)
    deleted, error = await _rabbitmqctl("delete_user", "--", user)
    if deleted not in (0, _EXIT_NO_USER):
        raise OnboardingError(f"rabbitmqctl delete_user {user} failed: {error}")
    await _run("close_all_user_connections", "--", user, "vendor offboarded")
    if delete_feeds:
        await delete_vendor_vhost(namespace, vendor_id)


async def _run(*args: str) -> None:
    code, error = await _rabbitmqctl(*args)
    if code != 0:
        raise OnboardingError(f"rabbitmqctl {args[0]} failed: {error}")


async def _rabbitmqctl(*args: str, secret: str | None = None) -> tuple[int, str]:
    """Run ``rabbitmqctl -q``; returns the exit code and its error output (``secret`` masked)."""
    process = await asyncio.create_subprocess_exec(
        "rabbitmqctl",
        "-q",
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), RABBITMQCTL_TIMEOUT_SECONDS)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise OnboardingError(
            f"rabbitmqctl {args[0]} did not finish within {RABBITMQCTL_TIMEOUT_SECONDS:.0f}s"
        ) from None
    code = process.returncode
    output = (stderr or stdout).decode(errors="replace").strip()
    if secret:
        output = output.replace(secret, "***")
    return (code if code is not None else -1), output


def main(argv: list[str] | None = None) -> int:
    """``python -m skolsynk_services.dispatcher.onboarding onboard|offboard VENDOR [--namespace NS]
    [--dispatcher-user USER] [--password-env VAR] [--delete-feeds]``: the operator's command (the password is
    read from an environment variable, never from the command line). The dispatcher's user defaults to the
    user of ``SKOLSYNK_AMQP_URL`` (or ``AMQP_URL``)."""
    import argparse
    import os
    import sys

    parser = argparse.ArgumentParser(prog="python -m skolsynk_services.dispatcher.onboarding")
    parser.add_argument("action", choices=["onboard", "offboard"])
    parser.add_argument("vendor_id")
    parser.add_argument("--namespace", default=os.environ.get("SKOLSYNK_NAMESPACE", "skolsynk"))
    amqp_url = os.environ.get("SKOLSYNK_AMQP_URL") or os.environ.get("AMQP_URL") or ""
    parser.add_argument("--dispatcher-user", default=amqp_user(amqp_url) if amqp_url else "guest")
    parser.add_argument("--password-env", default="SKOLSYNK_VENDOR_PASSWORD")
    parser.add_argument("--delete-feeds", action="store_true", help="offboard: delete the vendor's vhost and feeds")
    args = parser.parse_args(argv)
    if args.action == "offboard":
        asyncio.run(offboard_vendor(args.namespace, args.vendor_id, delete_feeds=args.delete_feeds))
        return 0
    password = os.environ.get(args.password_env, "")
    if not password:
        sys.stderr.write(f"set the vendor's password in the environment variable {args.password_env}\n")
        return 2
    asyncio.run(onboard_vendor(args.namespace, args.vendor_id, password, dispatcher_user=args.dispatcher_user))
    sys.stdout.write(
        f"{vendor_user_name(args.namespace, args.vendor_id)} may now read "
        f"{feed_queue_name(args.namespace, args.vendor_id)} in the vhost "
        f"{vendor_vhost(args.namespace, args.vendor_id)} and nothing else\n"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
