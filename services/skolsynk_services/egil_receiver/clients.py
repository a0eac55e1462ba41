"""Who may push: the EGIL clients of each organiser, from a YAML file (``SKOLSYNK_EGIL_CLIENTS_FILE``).

```yaml
- tenant_id: kommun-a
  source_id: egil-ad            # the source its data belongs to
  api_key_sha256: 9f86d08...     # sha256 hex of the API key (the key itself is never stored)
  client_pins: [ "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=" ]   # SPKI SHA-256 pins (base64)
  rate_per_second: 1000          # token bucket; a request over it waits for its turn (up to 10 s, then 429)
  burst: 100
```

The tenant of a request comes from its client certificate's public-key pin (mutual TLS) or, without
a certificate, from its API key. A client is never named in the URL or the body.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import yaml
from aiolimiter import AsyncLimiter
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter


class EgilClient(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    tenant_id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")
    source_id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")
    api_key_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    client_pins: tuple[str, ...] = ()
    federation_entity_id: str | None = Field(
        default=None, description="The client's entity in federation metadata; its client pins count too."
    )
    rate_per_second: float = Field(default=1000.0, gt=0)
    burst: int = Field(default=100, ge=1)


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


def hash_key(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()


class ClientRegistry:
    def __init__(self, clients: list[EgilClient]) -> None:
        self.clients = clients
        self._by_pin = {pin: c for c in clients for pin in c.client_pins}
        self._limiters = {id(c): AsyncLimiter(c.burst, c.burst / c.rate_per_second) for c in clients}

    @classmethod
    def from_file(cls, path: Path, *, federation_metadata: Path | None = None) -> ClientRegistry:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or []
        clients = TypeAdapter(list[EgilClient]).validate_python(data)
        if federation_metadata is not None:
            pins = federation_client_pins(json.loads(federation_metadata.read_text(encoding="utf-8")))
            clients = [
                c.model_copy(update={"client_pins": (*c.client_pins, *pins.get(c.federation_entity_id, ()))})
                if c.federation_entity_id
                else c
                for c in clients
            ]
        return cls(clients)

    def by_pin(self, pin: str) -> EgilClient | None:
        return self._by_pin.get(pin)

    def by_api_key(self, api_key: str) -> EgilClient | None:
        digest = hash_key(api_key)
        for client in self.clients:
            if client.api_key_sha256 is not None and hmac.compare_digest(client.api_key_sha256, digest):
                return client
        return None

    def limiter(self, client: EgilClient) -> AsyncLimiter:
        return self._limiters[id(client)]
