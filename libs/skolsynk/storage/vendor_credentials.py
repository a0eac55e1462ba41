"""Each (vendor, organiser) pair's own delivery credentials (``vendor_credentials``): so that two organisers
delivered to one EGIL SCIM vendor land in two tenants there, as vendor servers keep a tenant per API key.
One document per pair with the API key sealed by the installation's secrets key (``SecretBox``: never
stored or returned in clear), when and by whom it was set. Written by the admin (operators); read by the
dispatchers, which use a pair's key for that organiser's requests (and the catalogue entry's key for
organisers without one), and pick up a new or rotated key within their poll interval.
"""

from __future__ import annotations

import builtins
from datetime import UTC, datetime

from skolsynk.storage import Database, Document, IndexSpec
from skolsynk.storage.sources import SecretBox

VENDOR_CREDENTIALS = "vendor_credentials"
INDEXES = [IndexSpec(VENDOR_CREDENTIALS, (("vendor_id", 1), ("tenant_id", 1)), "vendor_tenant")]


class VendorCredentials:
    def __init__(self, db: Database, box: SecretBox) -> None:
        self.collection = db[VENDOR_CREDENTIALS]
        self.box = box

    @staticmethod
    def _id(vendor_id: str, tenant_id: str) -> str:
        return f"{vendor_id}:{tenant_id}"

    async def put(self, vendor_id: str, tenant_id: str, *, api_key: str, by: str) -> None:
        """Set or rotate the pair's API key (sealed; ``SecretsUnavailable`` without a secrets key)."""
        sealed = self.box.seal({"api_key": api_key})
        await self.collection.update_one(
            {"_id": self._id(vendor_id, tenant_id)},
            {
                "$set": {
                    "vendor_id": vendor_id,
                    "tenant_id": tenant_id,
                    "sealed": sealed,
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
        """The vendor's pairs without their secrets: tenant, version, when and by whom set."""
        cursor = self.collection.find({"vendor_id": vendor_id}, {"sealed": 0}).sort("tenant_id", 1)
        return [doc async for doc in cursor]

    async def api_keys(self, vendor_id: str) -> dict[str, str]:
        """tenant -> API key of the vendor's pairs (opened; a key this installation cannot open is left out)."""
        keys: dict[str, str] = {}
        async for doc in self.collection.find({"vendor_id": vendor_id}):
            try:
                keys[str(doc["tenant_id"])] = self.box.open(str(doc["sealed"]))["api_key"]
            except (ValueError, KeyError):
                continue
        return keys
