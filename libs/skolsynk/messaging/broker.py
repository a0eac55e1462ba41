"""The broker connection: one robust aio-pika connection per process, topology declared on connect
and again after every reconnect."""

from __future__ import annotations

import asyncio
from typing import Any

import aio_pika
from aio_pika.abc import AbstractRobustChannel, AbstractRobustConnection

from skolsynk.logging import get_logger
from skolsynk.messaging.topology import Topology, declare_topology
from skolsynk.observability import Metrics
from skolsynk.settings import BrokerSettings

log = get_logger(__name__)

#: Seconds between reconnect attempts of the robust connection.
RECONNECT_INTERVAL_SECONDS = 1.0


class Broker:
    """Owns the connection. Channels are opened by the publisher and each consumer."""

    def __init__(self, settings: BrokerSettings, topology: Topology, metrics: Metrics, *, name: str) -> None:
        self.settings = settings
        self.topology = topology
        self._metrics = metrics
        self._name = name
        self._connection: AbstractRobustConnection | None = None

    @property
    def connection(self) -> AbstractRobustConnection:
        if self._connection is None:
            raise RuntimeError("broker is not connected; call connect() first")
        return self._connection

    async def connect(self, *, timeout: float = 30.0) -> None:
        self._connection = await aio_pika.connect_robust(
            self.settings.amqp_url.get_secret_value(),
            heartbeat=self.settings.heartbeat_seconds,
            reconnect_interval=RECONNECT_INTERVAL_SECONDS,
            client_properties={"connection_name": self._name},
            timeout=timeout,
        )
        self._connection.reconnect_callbacks.add(self._on_reconnect)
        await self.declare()
        log.info("broker_connected", connection=self._name)

    async def declare(self) -> None:
        """Declare the whole topology on a short-lived channel."""
        async with self.connection.channel(publisher_confirms=False) as channel:
            await declare_topology(channel, self.topology)

    async def _on_reconnect(self, *_: Any) -> None:
        self._metrics.broker_reconnects.inc()
        log.warning("broker_reconnected", connection=self._name)
        try:
            await self.declare()
        except Exception:  # the next reconnect tries again; consumers restore on their own
            log.exception("topology_redeclare_failed")

    async def channel(self, *, confirms: bool = True, prefetch: int | None = None) -> AbstractRobustChannel:
        channel = await self.connection.channel(publisher_confirms=confirms, on_return_raises=confirms)
        assert isinstance(channel, AbstractRobustChannel)
        if prefetch is not None:
            await channel.set_qos(prefetch_count=prefetch)
        return channel

    def is_connected(self) -> bool:
        connection = self._connection
        return connection is not None and not connection.is_closed and connection.connected.is_set()

    async def wait_connected(self, timeout: float) -> None:
        async with asyncio.timeout(timeout):
            await self.connection.connected.wait()

    async def ready(self) -> bool:
        """Readiness check."""
        return self.is_connected()

    async def close(self) -> None:
        if self._connection is not None and not self._connection.is_closed:
            await self._connection.close()
        log.info("broker_closed", connection=self._name)
