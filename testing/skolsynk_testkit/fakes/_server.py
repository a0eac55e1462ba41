"""What the fakes' HTTP servers share: serving an aiohttp app on a local port, recording requests, and the
small command line that serves a fake until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from aiohttp import web

RecordT = TypeVar("RecordT")


class FakeHttpServer(Generic[RecordT]):
    """An aiohttp app (from :meth:`make_app`) on ``host:port``; ``port`` 0 picks a free port.

    ``requests`` holds what the subclass records of each request it answered (its ``RequestRecord``)."""

    def __init__(self) -> None:
        self.requests: list[RecordT] = []
        self._runner: web.AppRunner | None = None
        self._port: int | None = None
        self._host = "127.0.0.1"

    def make_app(self) -> web.Application:
        raise NotImplementedError

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the fake is not started")
        return self._port

    @property
    def origin(self) -> str:
        """``http://host:port``."""
        return f"http://{self._host}:{self.port}"

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._host = host
        self._runner = web.AppRunner(self.make_app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        sockets = getattr(site._server, "sockets", None) or []
        self._port = int(sockets[0].getsockname()[1]) if sockets else port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


def query_lists(request: web.Request) -> dict[str, list[str]]:
    """A request's query, multi-valued (every value of a repeated parameter, in order)."""
    query: dict[str, list[str]] = {}
    for key, value in request.query.items():
        query.setdefault(key, []).append(value)
    return query


def argument_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """A fake's command line: ``--host`` and ``--port`` (0 picks a free port); the fake adds its own options."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (printed at start)")
    return parser


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def serve_until_signalled(
    start: Callable[[], Awaitable[None]],
    stop: Callable[[], Awaitable[None]],
    ready: Callable[[], str],
    stopped: str | None = None,
) -> int:
    """Start a fake, print what ``ready`` returns (it may prepare the fake first; the fake is stopped if it
    fails), serve until SIGTERM/SIGINT, stop the fake and print ``stopped`` if given."""
    done = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, done.set)
    await start()
    try:
        _say(ready())
        await done.wait()
    finally:
        await stop()
        if stopped is not None:
            _say(stopped)
    return 0
