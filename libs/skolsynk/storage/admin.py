"""The admin service's own collections. Only the admin service writes them, with the queries and indexes
beside its code (``services/skolsynk_services/admin``); the names are kept here with every other
collection's. One thing of them is read by another service, through :class:`OrganiserSettings`: the
normaliser reads an organiser's selection setting (``missing_marking``) at every projection.

* ``admin_tenants``: organisers (with their settings);
* ``admin_tokens``: API tokens (SHA-256 of the secret), their expiry and last use;
* ``admin_sessions``: signed-in UI sessions (SHA-256 of the cookie's secret), ended by logout, idle or age;
* ``admin_audit``: who changed what, when, from what to what;
* ``subscription_lifecycle``: per subscription, test mode since, review, go-live, gate overrides;
* ``admin_consents``: Microsoft admin consents in flight (the state sent, for which organiser and source);
* ``admin_identity_providers``: the OpenID Connect providers (Microsoft, Google) the UI offers for signing in,
  their client secrets sealed;
* ``admin_account_rules``: which signed-in accounts (by subject, e-mail or domain, per provider) get which
  organiser and role;
* ``admin_signin_states``: OpenID Connect sign-ins in flight (state, nonce and PKCE verifier, for 10 minutes).
"""

from __future__ import annotations

from skolsynk.domain.subscription import MissingMarkingPolicy
from skolsynk.storage.mongo import Database

ADMIN_TENANTS = "admin_tenants"
ADMIN_TOKENS = "admin_tokens"
ADMIN_SESSIONS = "admin_sessions"
ADMIN_AUDIT = "admin_audit"
SUBSCRIPTION_LIFECYCLE = "subscription_lifecycle"
ADMIN_CONSENTS = "admin_consents"
ADMIN_IDENTITY_PROVIDERS = "admin_identity_providers"
ADMIN_ACCOUNT_RULES = "admin_account_rules"
ADMIN_SIGNIN_STATES = "admin_signin_states"


#: The field of an organiser's document that holds its :class:`MissingMarkingPolicy`.
MISSING_MARKING_FIELD = "missing_marking"


class OrganiserSettings:
    """An organiser's settings that change what vendors receive: written by the admin, read by the
    normaliser at every projection (so a change needs no restart, only a projection)."""

    def __init__(self, db: Database) -> None:
        self.collection = db[ADMIN_TENANTS]

    async def missing_marking(self, tenant_id: str) -> MissingMarkingPolicy:
        """How persons without a securityMarking are treated; ``protected`` when the organiser never chose
        (or is not in the admin at all)."""
        doc = await self.collection.find_one({"_id": tenant_id}, {MISSING_MARKING_FIELD: 1})
        try:
            return MissingMarkingPolicy((doc or {}).get(MISSING_MARKING_FIELD) or MissingMarkingPolicy.PROTECTED)
        except ValueError:  # a value this version does not know: the safe one
            return MissingMarkingPolicy.PROTECTED

    async def set_missing_marking(self, tenant_id: str, policy: MissingMarkingPolicy) -> bool:
        """Store the organiser's choice; False when the organiser does not exist."""
        result = await self.collection.update_one({"_id": tenant_id}, {"$set": {MISSING_MARKING_FIELD: policy.value}})
        return result.matched_count == 1
