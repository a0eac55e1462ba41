"""Where a queue vendor's feed lives: a RabbitMQ vhost of the vendor's own (docs/decisions.md #23).

A user with access to a vhost can passive-declare any queue in it, whatever its permissions say, and so
learns whether the queue exists and how many messages wait in it. Each queue-mode vendor therefore reads
its feed in a vhost that holds nothing but its own feeds: there, another vendor's feed is simply not
found (NOT_FOUND, the same answer whether that vendor exists or not), and the other vhosts refuse the
vendor's user at connection (it has no permissions there).
"""

from __future__ import annotations

import re
from urllib.parse import quote, unquote, urlsplit, urlunsplit

_NAMESPACE = re.compile(r"^[a-z][a-z0-9-]{0,40}$")
_VENDOR_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


def vendor_vhost_name(namespace: str, vendor_id: str) -> str:
    """The vhost of a queue vendor's feeds: ``{namespace}-vendor-{vendor_id}`` (the namespace keeps two
    installations on one broker apart, as it does for queue names)."""
    if not _NAMESPACE.match(namespace):
        raise ValueError(f"invalid namespace {namespace!r}")
    if not _VENDOR_ID.match(vendor_id):
        raise ValueError(f"invalid vendor id {vendor_id!r}")
    return f"{namespace}-vendor-{vendor_id}"


def amqp_url_with_vhost(amqp_url: str, vhost: str) -> str:
    """``amqp_url`` (same scheme, credentials, host, port and query) pointing at ``vhost``."""
    parts = urlsplit(amqp_url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + quote(vhost, safe=""), parts.query, parts.fragment))


def amqp_user(amqp_url: str) -> str:
    """The user name in ``amqp_url`` (RabbitMQ's default ``guest`` when it names none)."""
    username = urlsplit(amqp_url).username
    return unquote(username) if username else "guest"
