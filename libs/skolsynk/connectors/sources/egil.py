"""An EGIL client as a source: the organiser's on-premises directory pushing SS 12000 (2018) over SCIM to
the EGIL receiver. Each client is a source of its own; the receiver knows it by its client certificate's
public-key pin (mutual TLS) or by its API key, of which only the SHA-256 is kept, or by both together
(``require_certificate_and_key``). None of it is a secret (a certificate is public), so all of it is plain
settings in the source registry. A certificate registered whole (``client_certificates``, PEM) counts by its
pin and is also what lets a self-signed certificate through the receiver's own TLS (it is trusted as its
own issuer; docs/egil-receiver.md).

A clients file (``skolsynk sources import egil FILE``) lists the same fields::

    - tenant_id: kommun-a
      source_id: egil-ad
      api_key_sha256: 9f86d08...      # sha256 hex of the API key (the key itself is never stored)
      client_pins: [ "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=" ]   # SPKI SHA-256 pins (base64)
      client_certificates: [ "-----BEGIN CERTIFICATE-----\n..." ]     # PEM; their pins count too
      require_certificate_and_key: false   # true: both, of this same client, on every request
      rate_per_second: 1000           # token bucket; a request over it waits for its turn
      burst: 100
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator

from skolsynk.connectors.config import TENANT_ID, load_yaml, parse_entries
from skolsynk.contracts.source import SOURCE_ID
from skolsynk.tls import spki_sha256_pin

#: A SHA-256 SubjectPublicKeyInfo pin, base64 (as curl's ``pinnedpubkey = sha256//<pin>``).
PIN = r"^[A-Za-z0-9+/]{43}=$"
#: Certificates per client at most (two or three during a rotation), and the size of one (PEM).
MAX_CLIENT_CERTIFICATES = 8
MAX_CERTIFICATE_CHARACTERS = 8000


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
    client_certificates: tuple[str, ...] = Field(
        default=(),
        max_length=MAX_CLIENT_CERTIFICATES,
        description="The client certificates themselves (PEM): their pins count, and the receiver's own TLS "
        "trusts each as its own issuer, so a self-signed certificate needs no CA.",
    )
    federation_entity_id: str | None = Field(
        default=None, description="The client's entity in federation metadata; its client pins count too."
    )
    require_certificate_and_key: bool = Field(
        default=False,
        description="Every request must carry both a registered certificate and the API key, of this client.",
    )
    rate_per_second: float = Field(default=1000.0, gt=0, description="Requests per second (token bucket).")
    burst: int = Field(default=100, ge=1, description="Requests at once above the rate.")

    @field_validator("client_certificates")
    @classmethod
    def _certificates(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        """Each one a single PEM certificate that parses (by position, never quoting it), kept stripped."""
        kept = []
        for n, pem in enumerate(value):
            text = pem.strip()
            if len(text) > MAX_CERTIFICATE_CHARACTERS or text.count("-----BEGIN") != 1:
                raise ValueError(f"client_certificates[{n}] is not one PEM certificate")
            try:
                spki_sha256_pin(text.encode("ascii"))
            except (ValueError, UnicodeEncodeError):
                raise ValueError(f"client_certificates[{n}] is not a PEM certificate") from None
            kept.append(text + "\n")
        return tuple(kept)

    @property
    def key(self) -> str:
        return f"{self.tenant_id}:{self.source_id}"

    @property
    def certificate_pins(self) -> tuple[str, ...]:
        """The pins of the registered certificates (besides ``client_pins``)."""
        return tuple(spki_sha256_pin(pem.encode("ascii")) for pem in self.client_certificates)

    @property
    def has_credentials(self) -> bool:
        return bool(self.api_key_sha256 or self.client_pins or self.client_certificates or self.federation_entity_id)

    @property
    def credentials_problem(self) -> str | None:
        """Why this client cannot be let in as registered (None: it can)."""
        has_certificate = bool(self.client_pins or self.client_certificates or self.federation_entity_id)
        if not (self.api_key_sha256 or has_certificate):
            return "no API key and no client certificate registered"
        if self.require_certificate_and_key and not (self.api_key_sha256 and has_certificate):
            return "a certificate and an API key are both required, but only one is registered"
        return None


_SOURCES = TypeAdapter(list[SourceConfig])


def parse_sources(raw: object) -> list[SourceConfig]:
    """Validate a parsed clients document (a list, or ``{"clients": [...]}``); tenant+source unique."""
    return parse_entries(raw, _SOURCES, key="clients")


def load_sources(path: Path) -> list[SourceConfig]:
    return parse_sources(load_yaml(path, noun="clients file"))
