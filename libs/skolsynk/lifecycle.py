"""Running a service until it is told to stop, then stopping it within a known budget.

On SIGTERM or SIGINT (Kubernetes sends SIGTERM, then SIGKILL after ``terminationGracePeriodSeconds``):

1. ``/readyz`` turns 503 and stays so for ``readiness_grace_seconds`` (new traffic goes elsewhere);
2. consumers stop receiving; in-flight work has ``drain_timeout_seconds`` to finish; what is still
   running is cancelled and its message ``nack(requeue=True)``-ed back to the queue;
3. connections, background tasks and servers close within ``close_timeout_seconds``.

The sum is the shutdown budget. ``tests/unit/test_shutdown_budget.py`` asserts it (plus a margin)
fits every Deployment's ``terminationGracePeriodSeconds`` in ``deploy/k8s``.
"""

from __future__ import annotations

import asyncio
import signal
from typing import Protocol

from skolsynk.logging import get_logger
from skolsynk.settings import LifecycleSettings

log = get_logger(__name__)

#: Seconds kept free between the budget and Kubernetes' kill, for process exit and log flushing.
SHUTDOWN_MARGIN_SECONDS = 5.0


class ManagedService(Protocol):
    async def start(self) -> None: ...

    def mark_shutting_down(self) -> None: ...

    async def drain(self, timeout: float) -> None: ...

    async def close(self) -> None: ...


async def run_until_stopped(
    service: ManagedService, settings: LifecycleSettings, *, stop: asyncio.Event | None = None
) -> None:
    """Start ``service``, wait for a signal (or ``stop``), then shut down within the budget."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    received: list[str] = []

    def on_signal(sig: signal.Signals) -> None:
        if stop.is_set():
            return
        received.append(sig.name)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        try:
            await service.start()
        except BaseException:
            log.exception("service_start_failed")
            await _close(service, settings)
            raise
        log.info("service_started")
        await stop.wait()
        log.info(
            "shutdown_started",
            signal=received[0] if received else "requested",
            budget_seconds=settings.shutdown_budget_seconds,
        )
        service.mark_shutting_down()
        if settings.readiness_grace_seconds:
            await asyncio.sleep(settings.readiness_grace_seconds)
        await service.drain(settings.drain_timeout_seconds)
        await _close(service, settings)
        log.info("shutdown_complete")
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


async def _close(service: ManagedService, settings: LifecycleSettings) -> None:
    try:
        async with asyncio.timeout(settings.close_timeout_seconds):
            await service.close()
    except TimeoutError:
        log.error("close_timed_out", budget_seconds=settings.close_timeout_seconds)
