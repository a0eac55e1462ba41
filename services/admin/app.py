"""Composition root of the admin service. Skeleton: connected to broker and store, healthy; the API
and UI arrive with issue 9."""

from __future__ import annotations

from skolsynk.runtime import run_service
from skolsynk.service import ServiceApp
from skolsynk.settings import ServiceSettings

SERVICE = "admin"


class AdminSettings(ServiceSettings):
    pass


def build(settings: AdminSettings) -> ServiceApp:
    return ServiceApp.create(SERVICE, settings)


def main() -> None:
    run_service(SERVICE, AdminSettings, build)
