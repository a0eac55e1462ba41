"""Composition root of a vendor dispatcher (``SKOLSYNK_VENDOR_ID`` selects the vendor)."""

from __future__ import annotations

from pydantic import Field

from dispatcher.handlers import handle_vendor_change
from skolsynk.runtime import run_service
from skolsynk.service import ServiceApp
from skolsynk.settings import ServiceSettings

SERVICE = "dispatcher"


class DispatcherSettings(ServiceSettings):
    vendor_id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$", description="The vendor this dispatcher serves.")


def build(settings: DispatcherSettings) -> ServiceApp:
    app = ServiceApp.create(f"{SERVICE}-{settings.vendor_id}", settings, vendor_ids=[settings.vendor_id])
    app.add_consumer(app.queue_name(SERVICE, settings.vendor_id), handle_vendor_change)
    return app


def main() -> None:
    run_service(SERVICE, DispatcherSettings, build)
