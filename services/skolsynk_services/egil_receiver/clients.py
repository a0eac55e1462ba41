"""Who may push: the EGIL clients, each a source of its own in the source registry (kind ``egil``, model
:class:`skolsynk.connectors.sources.egil.SourceConfig`), followed while the receiver runs
(:class:`~skolsynk.connectors.registry.RegistryFollower` calls :meth:`ClientRegistry.set_sources`): a
client registered, rotated or revoked in the admin takes effect within a poll, without a restart.

The tenant and source of a request come from its client certificate's public-key pin (mutual TLS), from
its API key (only its SHA-256 is known), or from both, which must then name the same client
(:mod:`egil_receiver.access` decides). A client is never named in the URL or the body.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from aiolimiter import AsyncLimiter

from skolsynk.connectors.sources.egil import SourceConfig as EgilClient

__all__ = ["ClientRegistry", "EgilClient", "federation_client_pins", "hash_key", "load_federation_pins"]


def federation_client_pins(metadata: dict[str, Any]) -> dict[str, tuple[str, ...]]:
    """entity_id -> SHA-256 client pins, from Skolfederation-style (Moa) metadata that has already
    been verified (the JWS signature is checked by whatever fetched it, as the EGIL client's metadata
    mode expects)."""
    pins: dict[str, tuple[str, ...]] = {}
    for entity in metadata.get("entities", []):
        found = tuple(
            pin["digest"]
            for client in entity.get("clients", [])
            for pin in client.get("pins", [])
            if pin.get("alg") == "sha256" and isinstance(pin.get("digest"), str)
        )
        if found and isinstance(entity.get("entity_id"), str):
            pins[entity["entity_id"]] = found
    return pins


def load_federation_pins(path: Path | None) -> dict[str, tuple[str, ...]]:
    return federation_client_pins(json.loads(path.read_text(encoding="utf-8"))) if path is not None else {}


def hash_key(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()


class ClientRegistry:
    """The clients the receiver serves; ``federation_pins`` (entity id -> pins, from verified federation
    metadata) add to the pins of a client with a ``federation_entity_id``."""

    def __init__(
        self, clients: Iterable[EgilClient] = (), *, federation_pins: dict[str, tuple[str, ...]] | None = None
    ) -> None:
        self.federation_pins = federation_pins or {}
        self.clients: list[EgilClient] = []
        #: Told of the registered certificates (PEM) whenever the clients change (the TLS trust anchors).
        self.certificate_listeners: list[Callable[[list[str]], None]] = []
        self._by_pin: dict[str, EgilClient] = {}
        self._limiters: dict[str, tuple[tuple[float, int], AsyncLimiter]] = {}
        self._serve(list(clients))

    def _serve(self, clients: list[EgilClient]) -> None:
        self.clients = clients
        self._by_pin = {
            pin: client
            for client in clients
            for pin in (
                *client.client_pins,
                *client.certificate_pins,
                *self.federation_pins.get(client.federation_entity_id or "", ()),
            )
        }
        limiters: dict[str, tuple[tuple[float, int], AsyncLimiter]] = {}
        for client in clients:
            shape = (client.rate_per_second, client.burst)
            kept = self._limiters.get(client.key)
            limiters[client.key] = (
                kept
                if kept is not None and kept[0] == shape
                else (shape, AsyncLimiter(client.burst, client.burst / client.rate_per_second))
            )
        self._limiters = limiters
        for listener in self.certificate_listeners:
            listener(self.certificates)

    @property
    def certificates(self) -> list[str]:
        """Every certificate (PEM) registered by a served client."""
        return [pem for client in self.clients for pem in client.client_certificates]

    def watch_certificates(self, listener: Callable[[list[str]], None]) -> None:
        """``listener(certificates)`` now and whenever the clients change."""
        self.certificate_listeners.append(listener)
        listener(self.certificates)

    async def set_sources(self, clients: Iterable[EgilClient]) -> dict[str, str]:
        """Serve exactly ``clients`` from now on (a request in flight keeps the client it was let in as);
        a client without any credential is not served and reported."""
        served: list[EgilClient] = []
        problems: dict[str, str] = {}
        for client in clients:
            problem = client.credentials_problem
            if problem is None:
                served.append(client)
            else:
                problems[client.key] = problem
        self._serve(served)
        return problems

    def by_pin(self, pin: str) -> EgilClient | None:
        return self._by_pin.get(pin)

    def by_api_key(self, api_key: str) -> EgilClient | None:
        digest = hash_key(api_key)
        for client in self.clients:
            if client.api_key_sha256 is not None and hmac.compare_digest(client.api_key_sha256, digest):
                return client
        return None

    def limiter(self, client: EgilClient) -> AsyncLimiter:
        return self._limiters[client.key][1]
