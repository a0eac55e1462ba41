"""``main()`` plumbing shared by every service's ``__main__``: settings, logging, event loop."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

from skolsynk.lifecycle import run_until_stopped
from skolsynk.logging import configure_logging, get_logger
from skolsynk.service import ServiceApp
from skolsynk.settings import ServiceSettings

SettingsT = TypeVar("SettingsT", bound=ServiceSettings)


def run_service(name: str, settings_type: type[SettingsT], build: Callable[[SettingsT], ServiceApp]) -> None:
    """Build settings from the environment (validated now, not at import), configure logging, build
    the app with ``build`` and run it until SIGTERM/SIGINT."""
    settings = settings_type()
    configure_logging(
        log_format=settings.observability.log_format, level=settings.observability.log_level, service=name
    )
    app = build(settings)
    try:
        asyncio.run(run_until_stopped(app, settings.lifecycle))
    except KeyboardInterrupt:  # a second Ctrl-C during shutdown
        get_logger(__name__).warning("shutdown_interrupted")
