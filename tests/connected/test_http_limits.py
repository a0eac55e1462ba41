"""Every HTTP server a service runs is hardened the same way (skolsynk.http_limits, issue 19): slow heads
and bodies are cut off, bodies are capped (per server and per route), connections are bounded, and a
client that goes away mid-body is not a server error. Raw sockets play the slow and hostile clients."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from skolsynk.service import ServiceApp
from skolsynk.settings import HttpLimitSettings, ServiceSettings
from tests.helpers import wait_for

pytestmark = [pytest.mark.connected, pytest.mark.queues()]

LIMITS = HttpLimitSettings(header_timeout_seconds=1, body_timeout_seconds=1, max_body_bytes=2048, max_connections=5)


class Server:
    def __init__(self, app: ServiceApp, port: int, bodies: list[bytes]) -> None:
        self.app, self.port, self.bodies = app, port, bodies

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection("127.0.0.1", self.port)

    def inflight(self) -> float:
        return float(self.app.metrics.http_inflight.labels("test")._value.get())

    def requests(self, outcome: str) -> float:
        total = 0.0
        for metric in self.app.metrics.registry.collect():
            for sample in metric.samples:
                if sample.name == "skolsynk_http_requests_total" and sample.labels.get("status_class") == outcome:
                    total += sample.value
        return total


@pytest.fixture
async def server(settings: ServiceSettings) -> AsyncIterator[Server]:
    hardened = settings.model_copy(update={"http": LIMITS})
    app = ServiceApp.create("http-limits-test", hardened)
    bodies: list[bytes] = []

    async def echo(request: web.Request) -> web.Response:
        body = await request.read()
        bodies.append(body)
        return web.json_response({"received": len(body)})

    web_app = web.Application()
    web_app.router.add_post("/echo", echo)
    web_app.router.add_post("/small", echo)
    app.add_web_app(web_app, host="127.0.0.1", port=0, server="test", route_body_caps={"/small": 64})
    await app.start()
    try:
        yield Server(app, app.web_ports[0], bodies)
    finally:
        await app.drain(1)
        await app.close()


async def read_answer(reader: asyncio.StreamReader) -> bytes:
    async with asyncio.timeout(10):
        return await reader.read(4096)


async def test_a_connection_that_never_finishes_its_request_head_is_closed(server: Server) -> None:
    reader, writer = await server.connect()
    writer.write(b"POST /echo HTTP/1.1\r\nHost: x\r\n")  # ... and nothing more
    await writer.drain()
    assert await read_answer(reader) == b""  # closed by the server after the head timeout
    writer.close()
    silent_reader, silent = await server.connect()  # nothing at all: closed the same way
    assert await read_answer(silent_reader) == b""
    silent.close()


async def test_a_body_that_does_not_arrive_in_time_is_answered_408(server: Server) -> None:
    reader, writer = await server.connect()
    writer.write(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789")
    await writer.drain()
    answer = await read_answer(reader)
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert b"0123456789" not in answer  # never what was sent
    assert server.bodies == []
    writer.close()


async def test_bodies_over_the_cap_get_413_before_the_handler(server: Server) -> None:
    async with aiohttp.ClientSession() as session:
        url = f"http://127.0.0.1:{server.port}"
        async with session.post(f"{url}/echo", data=b"x" * 4096) as response:
            assert response.status == 413
            assert (await response.json(content_type=None))["detail"] == "the body is larger than 2048 bytes"

        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(8):
                yield b"y" * 1024

        async with session.post(f"{url}/echo", data=chunks()) as response:  # no length declared
            assert response.status == 413
        async with session.post(f"{url}/small", data=b"z" * 100) as response:  # the route's own cap
            assert response.status == 413
        async with session.post(f"{url}/echo", data=b"z" * 100) as response:
            assert (response.status, await response.json()) == (200, {"received": 100})
    assert server.bodies == [b"z" * 100]


async def test_connections_beyond_the_bound_are_closed_at_once(server: Server) -> None:
    held = [await server.connect() for _ in range(LIMITS.max_connections)]
    runner_server = server.app._web_runners[0].server
    assert runner_server is not None
    await wait_for(lambda: len(runner_server.connections) == LIMITS.max_connections, what="the connections held")
    reader, writer = await server.connect()
    async with asyncio.timeout(0.9):  # well before the head timeout: refused, not timed out
        assert await reader.read(4096) == b""
    for _, held_writer in held:
        held_writer.close()
    writer.close()


async def test_a_client_that_goes_away_mid_body_is_not_a_server_error(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    _, writer = await server.connect()
    writer.write(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\npartial")
    await writer.drain()
    await wait_for(lambda: server.inflight() >= 1, what="the server reading the body")
    writer.transport.abort()
    with caplog.at_level(logging.ERROR):
        await wait_for(lambda: server.requests("client_closed") >= 1, what="the request counted as client_closed")
    assert server.requests("5xx") == 0
    assert not [r for r in caplog.records if "Error handling request" in r.getMessage()]
    assert server.bodies == []


@pytest.mark.parametrize(
    "head",
    [
        b"GET /echo?q=Karin+Sundberg" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",  # a line too long
        b"GET /echo HTTP/1.1\r\nHost: x\r\nX-Name: Karin Sundberg\x00\r\n\r\n",  # a NUL byte in a header
        b"GET /echo HTTP/1.1\r\nHost: x\r\nX-Name: Karin Sundberg" + b"a" * 9000 + b"\r\n\r\n",  # a header too long
    ],
)
async def test_a_request_that_cannot_be_read_is_a_400_that_repeats_nothing(
    server: Server, head: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    """aiohttp's own answer quoted the request (the receiver fuzz found it: a query string came back in the 400)
    and logged it with a traceback."""
    caplog.set_level(logging.DEBUG)
    reader, writer = await server.connect()
    writer.write(head)
    await writer.drain()
    answer = await read_answer(reader)
    writer.close()
    assert answer.split(b" ")[1] == b"400", answer  # HTTP/1.0 when even the request line could not be read
    assert b"Karin" not in answer
    assert "Karin" not in caplog.text
