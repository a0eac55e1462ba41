"""Composition root of the normaliser."""

from __future__ import annotations

from normaliser.handlers import handle_source_event
from skolsynk.runtime import run_service
from skolsynk.service import ServiceApp
from skolsynk.settings import ServiceSettings

SERVICE = "normaliser"


class NormaliserSettings(ServiceSettings):
    pass


def build(settings: NormaliserSettings) -> ServiceApp:
    app = ServiceApp.create(SERVICE, settings)
    app.add_consumer(app.queue_name(SERVICE, "source-events"), handle_source_event)
    return app


def main() -> None:
    run_service(SERVICE, NormaliserSettings, build)
