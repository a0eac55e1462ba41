"""Vendor subscriptions and vendor profiles as stored in MongoDB (collections ``subscriptions`` and
``vendor_profiles``).

The admin service writes them (issue 9); the normaliser and the dispatchers read them, the SS 12000
puller whether any asks for placements. A tenant
without a subscription sends nothing to anyone. A vendor without a stored profile gets the default
profile (every kind, every non-sensitive field).
"""

from __future__ import annotations

from datetime import UTC, datetime

from skolsynk.domain.subscription import VendorProfile, VendorSubscription
from skolsynk.storage.mongo import Database, IndexSpec

SUBSCRIPTIONS = "subscriptions"
VENDOR_PROFILES = "vendor_profiles"

INDEXES = [IndexSpec(SUBSCRIPTIONS, [("tenant_id", 1)], name="by_tenant")]


class SubscriptionStore:
    def __init__(self, db: Database) -> None:
        self.subscriptions = db[SUBSCRIPTIONS]
        self.profiles = db[VENDOR_PROFILES]

    async def save(self, subscription: VendorSubscription) -> None:
        await self.subscriptions.replace_one(
            {"_id": f"{subscription.tenant_id}:{subscription.vendor_id}"},
            {
                "tenant_id": subscription.tenant_id,
                "vendor_id": subscription.vendor_id,
                "subscription": subscription.model_dump(mode="json"),
                "updated_at": datetime.now(UTC),
            },
            upsert=True,
        )

    async def end(self, tenant_id: str, vendor_id: str, *, at: datetime | None = None) -> bool:
        """End a subscription: the next projection deletes everything the vendor holds for the tenant
        (and the GDPR service tracks each person's deletion). False if there is no such subscription."""
        subscription = await self.get(tenant_id, vendor_id)
        if subscription is None:
            return False
        if subscription.ended_at is None:
            await self.save(subscription.model_copy(update={"ended_at": at or datetime.now(UTC)}))
        return True

    async def delete(self, tenant_id: str, vendor_id: str) -> None:
        """Forget a subscription. Its vendor keeps what it was sent: use :meth:`end` to delete that first."""
        await self.subscriptions.delete_one({"_id": f"{tenant_id}:{vendor_id}"})

    async def wants_placements(self, tenant_id: str) -> bool:
        """Whether a subscription of the tenant that has not ended asks for placements (the SS 12000 puller
        reads ``/placements`` only then)."""
        doc = await self.subscriptions.find_one(
            {"tenant_id": tenant_id, "subscription.placements": True, "subscription.ended_at": None}, {"_id": 1}
        )
        return doc is not None

    async def save_profile(self, profile: VendorProfile) -> None:
        await self.profiles.replace_one(
            {"_id": profile.vendor_id}, {"profile": profile.model_dump(mode="json")}, upsert=True
        )

    async def profile(self, vendor_id: str) -> VendorProfile:
        doc = await self.profiles.find_one({"_id": vendor_id})
        return VendorProfile.model_validate(doc["profile"]) if doc else VendorProfile(vendor_id=vendor_id)

    async def profile_vendor_ids(self) -> set[str]:
        """The vendors that have a stored profile."""
        return {str(doc["_id"]) async for doc in self.profiles.find({}, {"_id": 1})}

    async def get(self, tenant_id: str, vendor_id: str) -> VendorSubscription | None:
        doc = await self.subscriptions.find_one({"_id": f"{tenant_id}:{vendor_id}"})
        return VendorSubscription.model_validate(doc["subscription"]) if doc else None

    async def for_tenant(self, tenant_id: str) -> list[tuple[VendorSubscription, VendorProfile]]:
        subscriptions = [
            VendorSubscription.model_validate(doc["subscription"])
            async for doc in self.subscriptions.find({"tenant_id": tenant_id}).sort("_id", 1)
        ]
        if not subscriptions:
            return []
        # The vendors' profiles in one read, not one per subscription (projections run this often).
        vendor_ids = sorted({s.vendor_id for s in subscriptions})
        profiles = {
            doc["_id"]: VendorProfile.model_validate(doc["profile"])
            async for doc in self.profiles.find({"_id": {"$in": vendor_ids}})
        }
        return [(s, profiles.get(s.vendor_id) or VendorProfile(vendor_id=s.vendor_id)) for s in subscriptions]

    async def tenants(self) -> list[str]:
        return sorted(await self.subscriptions.distinct("tenant_id"))

    async def tenants_of(self, vendor_id: str) -> list[str]:
        """The organisers with a subscription (live, in test mode or ended) to the vendor."""
        return sorted(await self.subscriptions.distinct("tenant_id", {"vendor_id": vendor_id}))
