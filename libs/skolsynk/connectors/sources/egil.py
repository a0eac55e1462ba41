"""An EGIL client as a source: the organiser's on-premises directory pushing SS 12000 (2018) over SCIM to
the EGIL receiver. Each client is a source of its own; the receiver knows it by its client certificate's
public-key pin (mutual TLS) or by its API key, of which only the SHA-256 is kept. Neither is a secret, so
all of it is plain settings in the source registry.

A clients file (``skolsynk sources import egil FILE``) lists the same fields::

    - tenant_id: kommun-a
      source_id: egil-ad
      api_key_sha256: 9f86d08...      # sha256 hex of the API key (the key itself is never stored)
      client_pins: [ "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=" ]   # SPKI SHA-256 pins (base64)
      rate_per_second: 1000           # token bucket; a request over it waits for its turn
      burst: 100
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from skolsynk.connectors.config import TENANT_ID, load_yaml, parse_entries
from skolsynk.contracts.source import SOURCE_ID

#: A SHA-256 SubjectPublicKeyInfo pin, base64 (as curl's ``pinnedpubkey = sha256//<pin>``).
PIN = r"^[A-Za-z0-9+/]{43}=$"


class SourceConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    tenant_id: str = Field(pattern=TENANT_ID)
    source_id: str = Field(pattern=SOURCE_ID)
    api_key_sha256: str | None = Field(
        default=None, pattern=r"^[0-9a-f]{64}$", description="SHA-256 (hex) of the client's API key."
    )
    client_pins: tuple[Annotated[str, Field(pattern=PIN)], ...] = Field(
        default=(), description="SHA-256 pins (base64) of the client certificates' public keys."
    )
    federation_entity_id: str | None = Field(
        default=None, description="The client's entity in federation metadata; its client pins count too."
    )
    rate_per_second: float = Field(default=1000.0, gt=0, description="Requests per second (token bucket).")
    burst: int = Field(default=100, ge=1, description="Requests at once above the rate.")

    @property
    def key(self) -> str:
        return f"{self.tenant_id}:{self.source_id}"

    @property
    def has_credentials(self) -> bool:
        return bool(self.api_key_sha256 or self.client_pins or self.federation_entity_id)


_SOURCES = TypeAdapter(list[SourceConfig])


def parse_sources(raw: object) -> list[SourceConfig]:
    """Validate a parsed clients document (a list, or ``{"clients": [...]}``); tenant+source unique."""
    return parse_entries(raw, _SOURCES, key="clients")


def load_sources(path: Path) -> list[SourceConfig]:
    return parse_sources(load_yaml(path, noun="clients file"))
