"""Requests that arrive through a TLS-terminating proxy (the Kubernetes ingress): the scheme, host and client
address the browser used are taken from the proxy's ``X-Forwarded-Proto``, ``X-Forwarded-Host`` and
``X-Forwarded-For`` headers, but only when the connection comes from a configured proxy address. From
anyone else the headers are ignored (a client cannot claim TLS or another address by sending them), and
the request is served as it arrived: a port-forward or a health check keeps working.

Why not aiohttp-remotes (docs/decisions.md, 22): its strict mode refuses every request whose peer is not a
listed proxy, and its filtered mode trusts the headers without checking the peer itself.
"""

from __future__ import annotations

import contextlib
import ipaddress
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Middleware

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def parse_networks(values: Iterable[str]) -> tuple[Network, ...]:
    """CIDRs or single addresses (``10.0.0.0/8``, ``127.0.0.1``); ValueError names the bad entry."""
    networks = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError:
            raise ValueError(f"not an IP address or network: {value.strip()[:60]!r}") from None
    return tuple(networks)


class TrustedProxies:
    """The proxies whose forwarded headers are believed (none: every request is taken as it arrived)."""

    def __init__(self, networks: Iterable[str] = ()) -> None:
        self.networks = parse_networks(networks)

    def trusts(self, address: str | None) -> bool:
        if not address or not self.networks:
            return False
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return False
        return any(ip in network for network in self.networks)

    def resolve(self, request: web.Request) -> web.Request:
        """The request as the browser made it, when a trusted proxy forwarded it; else unchanged. (Before
        its body is read: a request cannot be cloned after.)"""
        changes = self.forwarded(request)
        return request.clone(**changes) if changes else request

    def client_address(self, request: web.Request) -> str | None:
        """The client's address as a trusted proxy forwarded it (None: not forwarded by one), without
        cloning the request (so also after its body was read)."""
        address = self.forwarded(request).get("remote")
        return str(address) if address is not None else None

    def forwarded(self, request: web.Request) -> dict[str, Any]:
        """What a trusted proxy says of the request: ``scheme``, ``host`` and ``remote`` (the client), each only
        when given and well-formed; nothing when the peer is not a trusted proxy.

        Of a comma-separated list the last value is the one our proxy added; ``X-Forwarded-For`` is walked
        from the right past trusted proxies to the first address that is not one (the client)."""
        peer = request.transport.get_extra_info("peername") if request.transport is not None else None
        peer_address = peer[0] if isinstance(peer, tuple) and peer else None
        if not self.trusts(peer_address):
            return {}
        changes: dict[str, Any] = {}
        proto = _last(request.headers.get("X-Forwarded-Proto"))
        if proto in ("http", "https"):
            changes["scheme"] = proto
        host = _last(request.headers.get("X-Forwarded-Host"))
        if host and len(host) <= 255 and all(c.isalnum() or c in ".-:[]" for c in host):
            changes["host"] = host
        hops = [h.strip() for h in request.headers.get("X-Forwarded-For", "").split(",") if h.strip()]
        for hop in reversed(hops):
            if not self.trusts(hop):
                with contextlib.suppress(ValueError):
                    changes["remote"] = str(ipaddress.ip_address(hop))
                break
        return changes

    def middleware(self) -> Middleware:
        @web.middleware
        async def forwarded(request: web.Request, handler: Handler) -> web.StreamResponse:
            return await handler(self.resolve(request))

        return forwarded


def _last(value: str | None) -> str | None:
    if not value:
        return None
    return value.split(",")[-1].strip().lower() or None
