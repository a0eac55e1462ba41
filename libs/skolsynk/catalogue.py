"""The vendor catalogue: one YAML file per vendor (``deploy/vendors/<vendor>.yaml``) says how the
vendor receives data and what it can take. Adding a vendor is adding a file; no code changes.

Secrets are never in the catalogue: it names the environment variables (or mounted files) that hold
them, so Kubernetes Secrets or a vault fill them in.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

import yaml
from cryptography import x509
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from skolsynk.domain.subscription import VendorProfile


class DeliveryMode(StrEnum):
    EGIL_SCIM = "egil_scim"  # skolsynk pushes EGIL SCIM requests to the vendor's server
    QUEUE = "queue"  # the vendor consumes its own queue on skolsynk's RabbitMQ


class ScimAuth(BaseModel):
    """How the dispatcher authenticates to the vendor's SCIM server: mutual TLS (client certificate,
    the server's CA, optionally the server's public-key pin) and/or an API key header. Without a client
    certificate or an API key here, only organisers with credentials of their own at the vendor (set in
    the admin) are delivered to; the others' changes wait (``no_credentials``) until they get them."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    client_cert_file: Path | None = Field(default=None, description="PEM client certificate (mTLS).")
    client_key_file: Path | None = Field(default=None, description="PEM private key of the client certificate.")
    ca_file: Path | None = Field(default=None, description="PEM CA bundle that signs the vendor's server certificate.")
    ca_pem: str | None = Field(
        default=None,
        max_length=100_000,
        description="The same CA bundle given inline (PEM; what an operator pastes in the admin: no file needed).",
    )
    server_pin_sha256: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9+/]{43}=$",
        description="Base64 SHA-256 of the server certificate's public key (SPKI), as in Skolfederation metadata.",
    )
    api_key_env: str | None = Field(
        default=None, pattern=r"^[A-Z][A-Z0-9_]*$", description="Environment variable holding the API key."
    )
    api_key_header: str = "X-API-Key"

    @model_validator(mode="after")
    def _complete(self) -> ScimAuth:
        if (self.client_cert_file is None) != (self.client_key_file is None):
            raise ValueError("client_cert_file and client_key_file go together")
        if self.ca_file is not None and self.ca_pem is not None:
            raise ValueError("give the CA as ca_file or as ca_pem, not both")
        if self.ca_pem is not None:
            try:
                x509.load_pem_x509_certificates(self.ca_pem.encode("ascii"))
            except (ValueError, UnicodeEncodeError):
                raise ValueError("ca_pem is not a PEM certificate bundle") from None
        return self

    @property
    def shared_credential(self) -> bool:
        """Whether the entry has a credential of its own for organisers without one (a key or certificate)."""
        return self.api_key_env is not None or self.client_cert_file is not None


class ScimDelivery(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    base_url: str = Field(pattern=r"^https?://", description="The vendor's SCIM base URL (…/Users is below it).")
    auth: ScimAuth
    concurrency: int = Field(default=4, ge=1, le=64, description="Requests in flight at once.")
    rate_per_second: float = Field(default=10.0, gt=0, description="Token bucket: sustained requests per second.")
    burst: int = Field(default=10, ge=1, description="Token bucket size.")
    timeout_seconds: float = Field(default=30.0, gt=0)


class VendorSupport(BaseModel):
    """Where an organiser's admin turns when deliveries to the vendor fail (the vendor's support desk, not a
    person: no personal data)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    email: str | None = Field(default=None, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$", max_length=200)
    url: str | None = Field(default=None, pattern=r"^https?://", max_length=500)
    phone: str | None = Field(default=None, pattern=r"^\+?[0-9 ()-]{5,30}$")


class VendorCatalogueEntry(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    vendor_id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")
    display_name: str = Field(min_length=1, max_length=100)
    delivery: DeliveryMode
    scim: ScimDelivery | None = None
    feed_retention_hours: float = Field(
        default=24.0,
        gt=0,
        le=24 * 90,
        description="Queue vendors: a message left unread in the feed this long expires (its personal data "
        "leaves the broker); the vendor then needs a resend. Default: the deletion deadline.",
    )
    support: VendorSupport | None = Field(
        default=None, description="The vendor's support desk, shown to organisers when deliveries fail."
    )
    feed_per_organiser: bool = Field(
        default=False,
        description="Queue vendors: a feed queue per organiser ({namespace}.vendor-feed.{vendor}.organiser."
        "{tenant}) instead of one for all, so the vendor can read (and be behind on) each organiser on its own. "
        "Every message names its organiser in the envelope's tenant_id either way.",
    )
    profile: VendorProfile

    @model_validator(mode="before")
    @classmethod
    def _profile_names_vendor(cls, data: object) -> object:
        if isinstance(data, dict) and isinstance(data.get("profile"), dict):
            data["profile"] = {"vendor_id": data.get("vendor_id"), **data["profile"]}
        return data

    @model_validator(mode="after")
    def _mode_has_settings(self) -> VendorCatalogueEntry:
        if self.delivery is DeliveryMode.EGIL_SCIM and self.scim is None:
            raise ValueError("delivery egil_scim needs a scim section")
        if self.profile.vendor_id != self.vendor_id:
            raise ValueError("the profile belongs to another vendor")
        return self


class CatalogueError(ValueError):
    """A catalogue file that cannot be used; the message names the file and the problem."""


def load_entry(path: Path) -> VendorCatalogueEntry:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        entry = VendorCatalogueEntry.model_validate(data)
    except (OSError, yaml.YAMLError) as error:
        raise CatalogueError(f"{path.name}: cannot read: {error}") from error
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '(file)'}: {e['msg']}" for e in error.errors())
        raise CatalogueError(f"{path.name}: {problems}") from error
    if path.stem != entry.vendor_id:
        raise CatalogueError(f"{path.name}: the file must be named after its vendor_id ({entry.vendor_id}.yaml)")
    return entry


def load_catalogue(directory: Path) -> dict[str, VendorCatalogueEntry]:
    """Every ``*.yaml`` in ``directory``, by vendor id."""
    return {entry.vendor_id: entry for entry in (load_entry(p) for p in sorted(directory.glob("*.yaml")))}
