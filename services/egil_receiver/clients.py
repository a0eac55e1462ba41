"""Who may push: the EGIL clients of each organiser, from a YAML file (``SKOLSYNK_EGIL_CLIENTS_FILE``).

```yaml
- tenant_id: kommun-a
  source_id: egil-ad            # the source its data belongs to
  api_key_sha256: 9f86d08...     # sha256 hex of the API key (the key itself is never stored)
  client_pins: [ "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=" ]   # SPKI SHA-256 pins (base64)
  rate_per_second: 50
```

The tenant of a request comes from its client certificate's public-key pin (mutual TLS) or, without
a certificate, from its API key. A client is never named in the URL or the body.
"""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

import yaml
from aiolimiter import AsyncLimiter
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter


class EgilClient(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    tenant_id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")
    source_id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")
    api_key_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    client_pins: tuple[str, ...] = ()
    rate_per_second: float = Field(default=50.0, gt=0)
    burst: int = Field(default=100, ge=1)


def hash_key(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()


class ClientRegistry:
    def __init__(self, clients: list[EgilClient]) -> None:
        self.clients = clients
        self._by_pin = {pin: c for c in clients for pin in c.client_pins}
        self._limiters = {id(c): AsyncLimiter(c.burst, c.burst / c.rate_per_second) for c in clients}

    @classmethod
    def from_file(cls, path: Path) -> ClientRegistry:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or []
        return cls(TypeAdapter(list[EgilClient]).validate_python(data))

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
