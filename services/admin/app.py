"""Composition root of the admin service. Skeleton: connected to broker and store, healthy, serving
its API port; the REST API and the web UI arrive with issue 9."""

from __future__ import annotations

from aiohttp import web
from pydantic import Field

import skolsynk
from skolsynk.runtime import run_service
from skolsynk.service import ServiceApp
from skolsynk.settings import ServiceSettings

SERVICE = "admin"


class AdminSettings(ServiceSettings):
    admin_host: str = Field(default="0.0.0.0", description="Bind address of the admin API and UI.")  # noqa: S104
    admin_port: int = Field(default=8080, ge=0, le=65535, description="Port of the admin API and UI.")


async def version(_request: web.Request) -> web.Response:
    """Public, no data: which skolsynk version answers here."""
    return web.json_response({"service": SERVICE, "version": skolsynk.__version__})


def build(settings: AdminSettings) -> ServiceApp:
    app = ServiceApp.create(SERVICE, settings)
    api = web.Application()
    api.router.add_get("/api/v1/version", version)
    app.add_web_app(api, host=settings.admin_host, port=settings.admin_port)
    return app


def main() -> None:
    run_service(SERVICE, AdminSettings, build)
