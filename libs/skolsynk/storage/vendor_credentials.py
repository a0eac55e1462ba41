"""Each (vendor, organiser) pair's own delivery credentials (``vendor_credentials``): so that two organisers
delivered to one EGIL SCIM vendor land in two tenants there, as vendor servers keep a tenant per API key or
per client certificate. One document per pair with an API key and/or a client certificate and its private
key, sealed by the installation's secrets key (``SecretBox``: never stored or returned in clear), what
kinds it holds, the certificate's public-key pin and expiry (shown; the vendor registers the pin), when
and by whom it was set. Instead of a value, each of the three can be a **secret reference**: the name of a
key of the Kubernetes Secret mounted in the dispatchers (``SKOLSYNK_VENDOR_SECRETS_DIR``: each key a file),
read at every poll, so that a rotated Secret is used without a restart and nothing secret is in the store.
Written by the admin (operators); read by the dispatchers, which use a pair's key
and certificate for that organiser's requests (and the catalogue entry's for organisers without their
own), and pick up a new or rotated credential within their poll interval.
"""

from __future__ import annotations

import builtins
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from skolsynk.storage import Database, Document, IndexSpec
from skolsynk.storage.sources import SecretBox
from skolsynk.tls import ClientIdentity

VENDOR_CREDENTIALS = "vendor_credentials"
INDEXES = [IndexSpec(VENDOR_CREDENTIALS, (("vendor_id", 1), ("tenant_id", 1)), "vendor_tenant")]

#: What a pair's credentials hold, by the name of each part (sealed values and references alike).
PARTS = ("api_key", "certificate_pem", "key_pem")
#: A secret reference: a key of a Kubernetes Secret (the file of that name in the mounted folder).
SECRET_REFERENCE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$")


def read_secret_reference(directory: Path | None, name: str) -> str | None:
    """The value a secret reference names (the file's text, surrounding whitespace removed), ``None`` when
    there is no such folder or file, or it cannot be read or is empty."""
    if directory is None or not SECRET_REFERENCE.match(name):
        return None
    try:
        text = (directory / name).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return text or None


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
        refs: Mapping[str, str] | None = None,
    ) -> None:
        """Set or rotate the pair's credentials: an API key, a client certificate with its key (checked by
        the caller, ``identity``), or both, each as a value (sealed) or as a secret reference (``refs``:
        part -> the Secret's key, one of :data:`PARTS`); what is not given stays as it was (an API key
        rotated keeps the pair's certificate). ``SecretsUnavailable`` for values without a secrets key."""
        refs = dict(refs or {})
        if set(refs) - set(PARTS) or not all(SECRET_REFERENCE.match(name) for name in refs.values()):
            raise ValueError("a secret reference names a key of the mounted Secret")
        given = {"api_key": api_key, "certificate_pem": certificate_pem, "key_pem": key_pem}
        values = {part: value for part, value in given.items() if value is not None}
        if set(values) & set(refs):
            raise ValueError("a part is given as a value or as a reference, not both")
        certificate = {"certificate_pem", "key_pem"}
        if len(certificate & (set(values) | set(refs))) == 1:
            raise ValueError("a client certificate goes with its private key")
        if certificate <= set(values) and identity is None:
            raise ValueError("a client certificate given as a value needs its checked identity")
        if not values and not refs:
            raise ValueError("an API key or a client certificate is needed")
        current = await self.collection.find_one({"_id": self._id(vendor_id, tenant_id)})
        secret: dict[str, str] = {}
        held_refs: dict[str, str] = {}
        if current is not None:
            held_refs = {str(k): str(v) for k, v in (current.get("secret_refs") or {}).items()}
            if current.get("sealed"):
                try:
                    secret = dict(self.box.open(str(current["sealed"])))
                except (ValueError, KeyError, TypeError):
                    secret = {}  # sealed with a key this installation no longer has: replaced whole
        for part, value in values.items():
            secret[part] = value
            held_refs.pop(part, None)
        for part, name in refs.items():
            held_refs[part] = name
            secret.pop(part, None)
        if certificate & set(values | refs):
            pin = identity.pin if identity is not None and certificate <= set(values) else None
            not_after = identity.not_after if identity is not None and certificate <= set(values) else None
        else:  # the certificate (if any) stays as it was
            pin = current.get("certificate_pin") if current is not None else None
            not_after = current.get("certificate_not_after") if current is not None else None
        held = set(secret) | set(held_refs)
        kinds = [k for k, part in (("api_key", "api_key"), ("client_certificate", "certificate_pem")) if part in held]
        sealed = self.box.seal(secret) if secret else None
        await self.collection.update_one(
            {"_id": self._id(vendor_id, tenant_id)},
            {
                "$set": {
                    "vendor_id": vendor_id,
                    "tenant_id": tenant_id,
                    "sealed": sealed,
                    "secret_refs": held_refs,
                    "kinds": kinds,
                    "certificate_pin": pin,
                    "certificate_not_after": not_after,
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
            sealed = doc.pop("sealed", None)
            try:
                if sealed:
                    self.box.open(str(sealed))
                doc["readable"] = True
            except (ValueError, KeyError, TypeError):
                doc["readable"] = False
            listed.append(doc)
        return listed

    async def credentials(self, vendor_id: str, *, secrets_dir: Path | None = None) -> dict[str, PairCredentials]:
        """tenant -> the opened credentials of the vendor's pairs, secret references read from
        ``secrets_dir`` (the mounted Secret). A pair this installation cannot open, or whose reference
        names nothing readable, is marked ``unusable``: its organiser waits, and the admin says why."""
        found: dict[str, PairCredentials] = {}
        async for doc in self.collection.find({"vendor_id": vendor_id}):
            tenant_id = str(doc["tenant_id"])
            try:
                secret = dict(self.box.open(str(doc["sealed"]))) if doc.get("sealed") else {}
            except (ValueError, KeyError, TypeError):
                found[tenant_id] = PairCredentials(unusable=True)
                continue
            for part, name in (doc.get("secret_refs") or {}).items():
                value = read_secret_reference(secrets_dir, str(name))
                if value is None or part not in PARTS:
                    found[tenant_id] = PairCredentials(unusable=True)
                    break
                secret[str(part)] = value
            else:
                found[tenant_id] = PairCredentials(
                    api_key=secret.get("api_key"),
                    certificate_pem=secret.get("certificate_pem"),
                    key_pem=secret.get("key_pem"),
                )
        return found
