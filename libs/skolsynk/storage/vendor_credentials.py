"""Each (vendor, organiser) pair's own delivery credentials (``vendor_credentials``): so that two organisers
delivered to one EGIL SCIM vendor land in two tenants there, as vendor servers keep a tenant per API key or
per client certificate. One document per pair with an API key and/or a client certificate and its private
key, sealed by the installation's secrets key (``SecretBox``: never stored or returned in clear), what
kinds it holds, the certificate's public-key pin and expiry (shown; the vendor registers the pin), when
and by whom it was set. Written by the admin (operators); read by the dispatchers, which use a pair's key
and certificate for that organiser's requests (and the catalogue entry's for organisers without their
own), and pick up a new or rotated credential within their poll interval.
"""

from __future__ import annotations

import builtins
import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime

from skolsynk.storage import Database, Document, IndexSpec
from skolsynk.storage.sources import SecretBox
from skolsynk.tls import ClientIdentity

VENDOR_CREDENTIALS = "vendor_credentials"
INDEXES = [IndexSpec(VENDOR_CREDENTIALS, (("vendor_id", 1), ("tenant_id", 1)), "vendor_tenant")]


@dataclass(frozen=True)
class PairCredentials:
    """One pair's own credentials at the vendor, opened (held by the dispatcher only)."""

    api_key: str | None = None
    certificate_pem: str | None = None
    key_pem: str | None = None
    #: The pair has credentials of its own that this installation cannot open (sealed with another secrets
    #: key, or damaged): its organiser is not delivered at all until an operator sets them again, never with
    #: the catalogue entry's credentials (that would put its data in another tenant at the vendor).
    unusable: bool = False

    @property
    def identity_fingerprint(self) -> str | None:
        """A digest of the client certificate and key (to tell a rotation), None without one."""
        if not self.certificate_pem or not self.key_pem:
            return None
        return hashlib.sha256((self.certificate_pem + "\n" + self.key_pem).encode()).hexdigest()


class VendorCredentials:
    def __init__(self, db: Database, box: SecretBox) -> None:
        self.collection = db[VENDOR_CREDENTIALS]
        self.box = box

    @staticmethod
    def _id(vendor_id: str, tenant_id: str) -> str:
        return f"{vendor_id}:{tenant_id}"

    async def put(
        self,
        vendor_id: str,
        tenant_id: str,
        *,
        by: str,
        api_key: str | None = None,
        certificate_pem: str | None = None,
        key_pem: str | None = None,
        identity: ClientIdentity | None = None,
    ) -> None:
        """Set or rotate the pair's credentials: an API key, a client certificate with its key (checked by
        the caller, ``identity``), or both; what is not given stays as it was (an API key rotated keeps the
        pair's certificate). ``SecretsUnavailable`` without a secrets key."""
        if (certificate_pem is None) != (key_pem is None) or (certificate_pem is not None and identity is None):
            raise ValueError("a client certificate goes with its private key and its checked identity")
        if api_key is None and certificate_pem is None:
            raise ValueError("an API key or a client certificate is needed")
        current = await self.collection.find_one({"_id": self._id(vendor_id, tenant_id)})
        secret: dict[str, str] = {}
        if current is not None:
            try:
                secret = dict(self.box.open(str(current["sealed"])))
            except (ValueError, KeyError):
                secret = {}  # sealed with a key this installation no longer has: replaced whole
        if api_key is not None:
            secret["api_key"] = api_key
        if certificate_pem is not None and key_pem is not None:
            secret |= {"certificate_pem": certificate_pem, "key_pem": key_pem}
        elif "certificate_pem" in secret and current is not None and current.get("certificate_not_after"):
            identity = ClientIdentity(str(current["certificate_pin"]), current["certificate_not_after"])
        kinds = [k for k, held in (("api_key", "api_key"), ("client_certificate", "certificate_pem")) if held in secret]
        sealed = self.box.seal(secret)
        await self.collection.update_one(
            {"_id": self._id(vendor_id, tenant_id)},
            {
                "$set": {
                    "vendor_id": vendor_id,
                    "tenant_id": tenant_id,
                    "sealed": sealed,
                    "kinds": kinds,
                    "certificate_pin": identity.pin if identity else None,
                    "certificate_not_after": identity.not_after if identity else None,
                    "updated_at": datetime.now(UTC),
                    "updated_by": by,
                },
                "$inc": {"version": 1},
            },
            upsert=True,
        )

    async def delete(self, vendor_id: str, tenant_id: str) -> bool:
        result = await self.collection.delete_one({"_id": self._id(vendor_id, tenant_id)})
        return result.deleted_count == 1

    async def listed(self, vendor_id: str) -> builtins.list[Document]:
        """The vendor's pairs without their secrets: tenant, version, when and by whom set, and ``readable``:
        whether this installation can open them (False: sealed with another secrets key, or damaged)."""
        listed: builtins.list[Document] = []
        async for doc in self.collection.find({"vendor_id": vendor_id}).sort("tenant_id", 1):
            try:
                self.box.open(str(doc.pop("sealed", "")))
                doc["readable"] = True
            except (ValueError, KeyError, TypeError):
                doc["readable"] = False
            listed.append(doc)
        return listed

    async def credentials(self, vendor_id: str) -> dict[str, PairCredentials]:
        """tenant -> the opened credentials of the vendor's pairs (a pair this installation cannot open is
        marked ``unusable``: its organiser waits, and the admin says why)."""
        found: dict[str, PairCredentials] = {}
        async for doc in self.collection.find({"vendor_id": vendor_id}):
            try:
                secret = self.box.open(str(doc["sealed"]))
            except (ValueError, KeyError, TypeError):
                found[str(doc["tenant_id"])] = PairCredentials(unusable=True)
                continue
            found[str(doc["tenant_id"])] = PairCredentials(
                api_key=secret.get("api_key"),
                certificate_pem=secret.get("certificate_pem"),
                key_pem=secret.get("key_pem"),
            )
        return found
