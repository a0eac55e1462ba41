"""A chaos TCP proxy (asyncio) to put between a service and RabbitMQ, MongoDB or a vendor.

Faults, switchable at any time while connections are open:

* ``cut()``: close every open connection now (a clean FIN both ways), new ones are accepted;
* ``reset()``: abort every open connection (RST), new ones are accepted;
* ``delay(seconds)``: every chunk in both directions waits this long first;
* ``blackhole()``: keep connections open but forward nothing (and accept new ones that go nowhere),
  the way a dead network path looks; ``heal()`` ends it (and any delay);
* ``refuse()``: stop listening (connection refused) until ``heal()``.

It counts connections and bytes, so a test can check the fault really hit traffic.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from dataclasses import dataclass, field


@dataclass
class ProxyStats:
    connections: int = 0
    cuts: int = 0
    bytes_up: int = 0
    bytes_down: int = 0


@dataclass(eq=False)
class _Link:
    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


class ChaosProxy:
    def __init__(self, target_host: str, target_port: int, *, listen_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.listen_host = listen_host
        self.port = 0
        self.stats = ProxyStats()
        self._server: asyncio.Server | None = None
        self._links: set[_Link] = set()
        self._delay = 0.0
        self._flowing = asyncio.Event()
        self._flowing.set()

    @property
    def address(self) -> str:
        return f"{self.listen_host}:{self.port}"

    async def start(self) -> ChaosProxy:
        if self.port == 0:
            with socket.socket() as probe:  # keep the same port across refuse()/heal()
                probe.bind((self.listen_host, 0))
                self.port = probe.getsockname()[1]
        self._server = await asyncio.start_server(self._accept, self.listen_host, self.port, reuse_address=True)
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        self._close_all(abort=True)

    async def __aenter__(self) -> ChaosProxy:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # --- faults ---------------------------------------------------------------------------------

    @property
    def open_links(self) -> int:
        """Connections through the proxy right now."""
        return len(self._links)

    def cut(self) -> int:
        """Close every open connection; returns how many."""
        return self._close_all(abort=False)

    def reset(self) -> int:
        return self._close_all(abort=True)

    def delay(self, seconds: float) -> None:
        self._delay = seconds

    def blackhole(self) -> None:
        self._flowing.clear()

    async def refuse(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        self._close_all(abort=True)

    async def heal(self) -> None:
        self._delay = 0.0
        self._flowing.set()
        if self._server is None:
            await self.start()

    # --- plumbing -------------------------------------------------------------------------------

    def _close_all(self, *, abort: bool) -> int:
        links = list(self._links)
        for link in links:
            for writer in (link.client, link.upstream):
                transport = writer.transport
                if abort:
                    transport.abort()
                else:
                    transport.close()
            for task in link.tasks:
                task.cancel()
        self._links.clear()
        self.stats.cuts += len(links)
        return len(links)

    async def _accept(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        except OSError:
            client_writer.transport.abort()
            return
        self.stats.connections += 1
        link = _Link(client_writer, upstream_writer)
        self._links.add(link)
        link.tasks = [
            asyncio.create_task(self._pipe(client_reader, upstream_writer, up=True)),
            asyncio.create_task(self._pipe(upstream_reader, client_writer, up=False)),
        ]
        await asyncio.gather(*link.tasks, return_exceptions=True)
        self._links.discard(link)
        for writer in (client_writer, upstream_writer):
            with contextlib.suppress(Exception):
                writer.close()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, up: bool) -> None:
        try:
            while True:
                chunk = await reader.read(65536)
                if not chunk:
                    break
                await self._flowing.wait()
                if self._delay:
                    await asyncio.sleep(self._delay)
                if up:
                    self.stats.bytes_up += len(chunk)
                else:
                    self.stats.bytes_down += len(chunk)
                writer.write(chunk)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            with contextlib.suppress(Exception):
                if writer.can_write_eof():
                    writer.write_eof()
