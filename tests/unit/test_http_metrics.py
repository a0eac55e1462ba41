"""RED metrics of the services' HTTP APIs: counted by route template, method and status class."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from skolsynk.observability import UNMATCHED_ROUTE, Metrics, http_metrics_middleware, status_class
from skolsynk.service import ServiceApp
from skolsynk.settings import ServiceSettings

pytestmark = pytest.mark.unit


async def _user(request: web.Request) -> web.Response:
    if request.match_info["id"] == "missing":
        raise web.HTTPNotFound(text="no such user")
    return web.json_response({"id": request.match_info["id"]})


async def _boom(_request: web.Request) -> web.Response:
    raise RuntimeError("handler bug")


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
async def base_url(metrics: Metrics) -> AsyncIterator[str]:
    app = web.Application(middlewares=[http_metrics_middleware(metrics, server="scim")])
    app.router.add_get("/Users/{id}", _user)
    app.router.add_post("/boom", _boom)
    runner = web.AppRunner(app, access_log=None)
    try:
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def _count(metrics: Metrics, route: str, method: str, status: str) -> float | None:
    return metrics.registry.get_sample_value(
        "skolsynk_http_requests_total", {"server": "scim", "route": route, "method": method, "status_class": status}
    )


async def test_requests_are_counted_by_route_template_not_by_path(metrics: Metrics, base_url: str) -> None:
    async with aiohttp.ClientSession() as http:
        for user in ("a1", "b2", "c3"):
            async with http.get(f"{base_url}/Users/{user}") as response:
                assert response.status == 200
        async with http.get(f"{base_url}/Users/missing") as response:
            assert response.status == 404
        async with http.post(f"{base_url}/boom") as response:
            assert response.status == 500
        async with http.get(f"{base_url}/not/a/route/lena.larsson@example.se") as response:
            assert response.status == 404

    assert _count(metrics, "/Users/{id}", "GET", "2xx") == 3
    assert _count(metrics, "/Users/{id}", "GET", "4xx") == 1
    assert _count(metrics, "/boom", "POST", "5xx") == 1
    assert _count(metrics, UNMATCHED_ROUTE, "GET", "4xx") == 1
    duration = metrics.registry.get_sample_value(
        "skolsynk_http_request_seconds_count", {"server": "scim", "route": "/Users/{id}", "method": "GET"}
    )
    assert duration == 4
    exposed = "\n".join(
        f"{s.name} {s.labels}" for family in metrics.registry.collect() for s in family.samples
    )  # what /metrics would show
    assert "lena.larsson" not in exposed
    assert "a1" not in exposed
    assert metrics.registry.get_sample_value("skolsynk_http_requests_inflight", {"server": "scim"}) == 0


@pytest.mark.parametrize(("status", "label"), [(200, "2xx"), (204, "2xx"), (301, "3xx"), (429, "4xx"), (503, "5xx")])
def test_status_class(status: int, label: str) -> None:
    assert status_class(status) == label


async def test_service_app_installs_the_middleware_on_every_web_app() -> None:
    app = ServiceApp.create("test", ServiceSettings())
    try:
        api = web.Application()
        app.add_web_app(api, host="127.0.0.1", port=0, server="api")
        # The metrics outermost, then the request limits (skolsynk.http_limits).
        assert [m.__qualname__.split(".")[0] for m in api.middlewares] == ["http_metrics_middleware", "body_limits"]
    finally:
        await app.mongo.close()
