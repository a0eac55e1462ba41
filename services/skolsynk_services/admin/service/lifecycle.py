"""A subscription's way to going live and out again: the test report and its review, the promotion gate
(an operator may override it, audited), back to test mode, resending everything, and the end."""

from __future__ import annotations

from skolsynk_services.admin import models
from skolsynk_services.admin.auth import Principal
from skolsynk_services.admin.problems import Conflict, GateClosed
from skolsynk_services.admin.service.reports import ReportAdmin


class LifecycleAdmin(ReportAdmin):
    """The test report and the delivery report are :class:`ReportAdmin`'s."""

    async def mark_reviewed(self, principal: Principal, tenant_id: str, vendor_id: str) -> models.Subscription:
        await self._tenant(principal, tenant_id)
        subscription = await self._subscription(tenant_id, vendor_id)
        if not subscription.test_mode:
            raise Conflict("the subscription is live: there is no test report to review")
        await self.lifecycle.reviewed(tenant_id, vendor_id, by=principal.subject, at=self.clock())
        await self._audit(principal, tenant_id, "subscription.review", vendor_id)
        return await self._view(subscription)

    async def go_live(
        self, principal: Principal, tenant_id: str, vendor_id: str, override_reason: str | None = None
    ) -> models.Subscription:
        """Deliver for real. Only through the promotion gate, unless an operator overrides it (audited)."""
        await self._tenant(principal, tenant_id)
        subscription = await self._subscription(tenant_id, vendor_id)
        if subscription.ended_at is not None:
            raise Conflict("the subscription has ended; save it again to start over in test mode")
        if not subscription.test_mode:
            raise Conflict("the subscription is live already")
        gate = (await self._view(subscription)).promotion
        if override_reason is not None:
            principal.require_operator()
        elif not gate.can_go_live:
            raise GateClosed("; ".join(gate.blockers), blockers=gate.blockers)
        live = subscription.model_copy(update={"test_mode": False})
        await self.subscriptions.save(live)
        await self.lifecycle.went_live(
            tenant_id, vendor_id, by=principal.subject, at=self.clock(), override=override_reason
        )
        await self._audit(
            principal,
            tenant_id,
            "subscription.go_live",
            vendor_id,
            before={"test_mode": True},
            after={"test_mode": False},
            note=f"gate overridden: {override_reason}" if override_reason else None,
        )
        await self._project(tenant_id, "go-live", by=principal, action="subscription.go_live", target=vendor_id)
        return await self._view(live)

    async def back_to_test(self, principal: Principal, tenant_id: str, vendor_id: str) -> models.Subscription:
        """Stop delivering and record again (what the vendor has stays until changes or the end)."""
        await self._tenant(principal, tenant_id)
        subscription = await self._subscription(tenant_id, vendor_id)
        if subscription.test_mode:
            raise Conflict("the subscription is in test mode already")
        test = subscription.model_copy(update={"test_mode": True})
        await self.subscriptions.save(test)
        await self.lifecycle.test_started(tenant_id, vendor_id, self.clock())
        await self._audit(
            principal,
            tenant_id,
            "subscription.test_mode",
            vendor_id,
            before={"test_mode": False},
            after={"test_mode": True},
        )
        await self._project(tenant_id, "subscription", by=principal, action="subscription.test_mode", target=vendor_id)
        return await self._view(test)

    async def resend(self, principal: Principal, tenant_id: str, vendor_id: str) -> None:
        await self._tenant(principal, tenant_id)
        await self._subscription(tenant_id, vendor_id)
        await self._project(
            tenant_id,
            "resend",
            resend_vendor_id=vendor_id,
            by=principal,
            action="subscription.resend",
            target=vendor_id,
        )
        await self._audit(principal, tenant_id, "subscription.resend", vendor_id)

    async def end_subscription(self, principal: Principal, tenant_id: str, vendor_id: str) -> models.Subscription:
        """End it: everything the vendor holds for the organiser is deleted (with GDPR receipts)."""
        await self._tenant(principal, tenant_id)
        current = await self._subscription(tenant_id, vendor_id)
        await self.subscriptions.end(tenant_id, vendor_id, at=self.clock())
        await self._audit(principal, tenant_id, "subscription.end", vendor_id, before=current.model_dump(mode="json"))
        await self._project(tenant_id, "subscription-ended", by=principal, action="subscription.end", target=vendor_id)
        return await self._view(await self._subscription(tenant_id, vendor_id))
