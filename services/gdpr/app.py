"""Composition root of the GDPR service."""

from __future__ import annotations

from gdpr.handlers import handle_gdpr_event
from skolsynk.runtime import run_service
from skolsynk.service import ServiceApp
from skolsynk.settings import ServiceSettings

SERVICE = "gdpr"


class GdprSettings(ServiceSettings):
    pass


def build(settings: GdprSettings) -> ServiceApp:
    app = ServiceApp.create(SERVICE, settings)
    app.add_consumer(app.queue_name(SERVICE, "events"), handle_gdpr_event)
    return app


def main() -> None:
    run_service(SERVICE, GdprSettings, build)
