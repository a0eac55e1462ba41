"""What an organiser's admin or an operator can see and do: one method per use case, shared by the REST
API (``api.py``) and the web UI (``ui/``). Every method takes the :class:`Principal` first and checks
it; every change is written to the audit log; commands go to the other services over the broker.

One area per module, each a class on the shared :class:`AdminCore` (stores, checks, audit, commands):

* ``tenants``: organisers, API tokens, the audit log;
* ``sources``: connected sources, sync requests, the runs they made;
* ``quality``: data-quality findings, school units;
* ``holds``: held deletions: whom they affect, why, decisions and their history;
* ``subscriptions``: vendors, subscriptions, the preview, the promotion gate as shown;
* ``lifecycle``: test report, review, go-live, back to test mode, resend, end;
* ``persons``: person search, and one person from the source to every vendor (the person page);
* ``gdpr``: erasure requests and objections, the deletion ledger and its evidence;
* ``vendors``: the vendor catalogue (operators);
* ``signin``: signing in with Microsoft or Google: identity providers, account rules (operators), the sign-in.

:class:`AdminService` puts them together, plus the overview that spans them all."""

from __future__ import annotations

from typing import Any

from skolsynk_services.admin.auth import Principal
from skolsynk_services.admin.service.core import PRODUCER, AdminCore, Exchanges, utcnow
from skolsynk_services.admin.service.gdpr import GdprAdmin
from skolsynk_services.admin.service.holds import HoldsAdmin
from skolsynk_services.admin.service.lifecycle import LifecycleAdmin
from skolsynk_services.admin.service.persons import PersonAdmin
from skolsynk_services.admin.service.quality import QualityAdmin
from skolsynk_services.admin.service.signin import SignInAdmin
from skolsynk_services.admin.service.sources import PULLED_KINDS, SourceAdmin, source_view
from skolsynk_services.admin.service.subscriptions import SubscriptionAdmin, promotion_of
from skolsynk_services.admin.service.tenants import TenantAdmin
from skolsynk_services.admin.service.vendors import VendorAdmin

__all__ = [
    "PRODUCER",
    "PULLED_KINDS",
    "AdminCore",
    "AdminService",
    "Exchanges",
    "GdprAdmin",
    "HoldsAdmin",
    "LifecycleAdmin",
    "PersonAdmin",
    "QualityAdmin",
    "SignInAdmin",
    "SourceAdmin",
    "SubscriptionAdmin",
    "TenantAdmin",
    "VendorAdmin",
    "promotion_of",
    "source_view",
    "utcnow",
]


class AdminService(
    TenantAdmin,
    SourceAdmin,
    QualityAdmin,
    HoldsAdmin,
    LifecycleAdmin,
    PersonAdmin,
    GdprAdmin,
    VendorAdmin,
    SignInAdmin,
):
    """Every use case of the admin API and UI (built with :class:`AdminCore`'s arguments)."""

    async def overview(self, principal: Principal, tenant_id: str) -> dict[str, Any]:
        """The onboarding checklist and the numbers of the tenant's home page."""
        tenant = await self._tenant(principal, tenant_id)
        sources = await self.sources.list(tenant_id)
        runs = await self.history.source_runs(tenant_id, limit=30)
        subscriptions = [await self._view(s) for s, _ in await self.subscriptions.for_tenant(tenant_id)]
        summary = await self.findings_store.summary(tenant_id)
        errors = sum(v.get("error", 0) for v in summary.values())
        by_status: dict[str, int] = {}
        for (_, _, status), count in (await self.ledger.counts(tenant_id)).items():
            by_status[status] = by_status.get(status, 0) + count
        steps = {
            "source": bool(sources),
            "data": any(r.get("status") == "finalised" for r in runs),
            "subscription": bool(subscriptions),
            "test": any(s.promotion.test_started_at for s in subscriptions),
            "reviewed": any(s.promotion.reviewed_at for s in subscriptions),
            "live": any(not s.promotion.test_mode for s in subscriptions),
        }
        return {
            "tenant": tenant,
            "steps": steps,
            "sources": [await self._with_health(tenant_id, source_view(d)) for d in sources],
            "runs": runs,
            "subscriptions": subscriptions,
            "findings": {"errors": errors, "by_unit": summary},
            "entities": await self.entities.counts(tenant_id),
            "holds": len(await self.holds_store.for_tenant(tenant_id, status="pending")),
            "deletions_open": by_status.get("pending", 0) + by_status.get("overdue", 0),
            "deletions_overdue": by_status.get("overdue", 0),
        }
