"""One request-hardening layer for every HTTP server skolsynk runs (``ServiceApp.add_web_app`` installs it):
the admin API and UI, the EGIL receiver, the SS 12000 webhook, the Google webhook.

* **Slow or silent clients**: a connection that has not sent a whole request head within
  ``header_timeout_seconds`` (from the connection's start, or since its last answer) is closed (aiohttp's
  keep-alive timer, which also runs from the start of a connection); a body that has not fully arrived within
  ``body_timeout_seconds`` is answered 408 and the connection closed. A client that goes away mid-body is
  not a server error: it is counted as ``client_closed``, without a traceback.
* **Sizes**: a body larger than the server's (or the route's) cap is refused with 413 before it is read when
  its length is declared, and while reading otherwise (aiohttp's ``client_max_size``).
* **Connections**: at most ``max_connections`` open at once per server; one more is closed at once.

Bodies are read here, inside the metrics middleware and before any handler, so a handler's
``await request.read()`` returns what was read. JSON in the bodies is parsed by :mod:`skolsynk.json_input`
(nesting, Unicode, integer ranges). Answers say what was wrong, never what was sent.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Middleware

from skolsynk.logging import get_logger
from skolsynk.settings import HttpLimitSettings

log = get_logger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
#: Methods whose body is read (and capped, and timed) here.
BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def body_limits(settings: HttpLimitSettings, *, route_caps: Mapping[str, int] | None = None) -> Middleware:
    """The middleware: caps and times the body (``route_caps``: route template -> bytes, for routes
    that take less or more than ``max_body_bytes``)."""
    caps = dict(route_caps or {})

    @web.middleware
    async def limit_body(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method not in BODY_METHODS or not request.body_exists:
            return await handler(request)
        resource = request.match_info.route.resource
        cap = caps.get(resource.canonical if resource is not None else "", settings.max_body_bytes)
        declared = request.content_length
        if declared is not None and declared > cap:
            return _refused(413, f"the body is larger than {cap} bytes")
        try:
            async with asyncio.timeout(settings.body_timeout_seconds):
                body = await request.read()
        except TimeoutError:
            log.info("http_body_timeout", route=resource.canonical if resource is not None else None)
            return _refused(408, f"the body did not arrive within {settings.body_timeout_seconds:g} seconds")
        except web.HTTPRequestEntityTooLarge:
            return _refused(413, f"the body is larger than {cap} bytes")
        except (ConnectionResetError, OSError, asyncio.IncompleteReadError) as error:
            raise ClientClosed from error
        if len(body) > cap:
            return _refused(413, f"the body is larger than {cap} bytes")
        return await handler(request)

    return limit_body


class ClientClosed(Exception):
    """The client went away before its request was read: nobody is left to answer."""


def _refused(status: int, detail: str) -> web.Response:
    response = web.json_response(
        {"type": "about:blank", "title": web.Response(status=status).reason, "status": status, "detail": detail},
        status=status,
        content_type="application/problem+json",
    )
    response.force_close()
    return response


def runner_options(settings: HttpLimitSettings) -> dict[str, Any]:
    """``web.AppRunner`` keyword arguments: the head timeout (aiohttp's keep-alive timer runs from a
    connection's start as well as between requests)."""
    return {"keepalive_timeout": settings.header_timeout_seconds}


def bound_connections(server: web.Server, limit: int) -> None:
    """Close a new connection at once when ``limit`` are open already (``web.Server`` keeps them).

    aiohttp has no such option; the server's ``connection_made`` hook is wrapped on this one instance."""
    accept = server.connection_made

    def connection_made(handler: Any, transport: Any) -> None:
        accept(handler, transport)
        if len(server.connections) > limit:
            log.warning("http_connection_refused", reason="too_many_connections", limit=limit)
            transport.close()

    server.connection_made = connection_made  # type: ignore[method-assign]
