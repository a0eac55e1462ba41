"""The admin service's own collections. Only the admin service reads and writes them, with the queries
and indexes beside its code (``services/skolsynk_services/admin``); the names are kept here with every
other collection's.

* ``admin_tenants``: organisers;
* ``admin_tokens``: API tokens (SHA-256 of the secret), their expiry and last use;
* ``admin_sessions``: signed-in UI sessions (SHA-256 of the cookie's secret), ended by logout, idle or age;
* ``admin_audit``: who changed what, when, from what to what;
* ``subscription_lifecycle``: per subscription, test mode since, review, go-live, gate overrides;
* ``admin_consents``: Microsoft admin consents in flight (the state sent, for which organiser and source).
"""

from __future__ import annotations

ADMIN_TENANTS = "admin_tenants"
ADMIN_TOKENS = "admin_tokens"
ADMIN_SESSIONS = "admin_sessions"
ADMIN_AUDIT = "admin_audit"
SUBSCRIPTION_LIFECYCLE = "subscription_lifecycle"
ADMIN_CONSENTS = "admin_consents"
