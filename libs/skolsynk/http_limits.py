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
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.typedefs import Middleware
from aiohttp.web_protocol import RequestHandler

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
    """Close a new connection at once when ``limit`` are open already (``web.Server`` keeps them), and answer
    a request that cannot be read without repeating it (:class:`QuietRequestHandler`).

    aiohttp has no such option; the server's ``connection_made`` hook is wrapped on this one instance, and the
    instance made a :class:`QuietServer` (the factory of its connections' handlers)."""
    server.__class__ = QuietServer
    accept = server.connection_made

    def connection_made(handler: Any, transport: Any) -> None:
        accept(handler, transport)
        if len(server.connections) > limit:
            log.warning("http_connection_refused", reason="too_many_connections", limit=limit)
            transport.close()

    server.connection_made = connection_made  # type: ignore[method-assign]


class QuietRequestHandler(RequestHandler):
    """aiohttp answers a request it cannot parse (a request line or header longer than 8190 bytes, a control
    character in a header, a malformed head) with a 400 whose text is the parser's message, which quotes the
    request (query strings, header values: what was sent), and logs that with a traceback. Here such a request
    is answered with its status and a fixed text, and logged with the kind of reason only. (A 500 keeps
    aiohttp's answer, which repeats nothing.)"""

    def handle_error(
        self, request: web.BaseRequest, status: int = 500, exc: BaseException | None = None, message: str | None = None
    ) -> web.StreamResponse:
        if status >= 500 or not isinstance(exc, HttpProcessingError):
            return super().handle_error(request, status, exc, message)
        log.info("http_request_unreadable", status=status, reason=type(exc).__name__)
        response = web.Response(status=status, text=f"{status}: the request could not be read")
        response.force_close()
        return response


class QuietServer(web.Server):
    """A ``web.Server`` whose connections are handled by :class:`QuietRequestHandler`."""

    def __call__(self) -> RequestHandler:
        return QuietRequestHandler(self, loop=self._loop, **self._kwargs)
