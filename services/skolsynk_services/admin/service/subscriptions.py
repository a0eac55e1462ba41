"""Vendors and subscriptions: what a vendor gets (school units, roles, school years ...), a preview of
who it would gain and lose before saving, and each subscription as shown with its promotion gate."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from skolsynk.domain.delivery_errors import error_text
from skolsynk.domain.selection import ProjectedResource, compare, project
from skolsynk.domain.selection_warnings import UnitPopulation, selection_warnings
from skolsynk.domain.ss12000 import EntityKind
from skolsynk.domain.subscription import VendorProfile, VendorSubscription
from skolsynk.storage import Document
from skolsynk.storage.deliveries import latest_drift_report
from skolsynk.storage.delivery_health import state_of
from skolsynk_services.admin import models
from skolsynk_services.admin.auth import Principal
from skolsynk_services.admin.problems import Invalid, NotFound
from skolsynk_services.admin.service.core import AdminCore


def promotion_of(
    subscription: VendorSubscription, lifecycle: Document, *, now: datetime, required_hours: float
) -> models.Promotion:
    """The promotion gate: live only after ``required_hours`` of test mode and a reviewed test report."""
    started = lifecycle.get("test_started_at")
    reviewed = lifecycle.get("reviewed_at")
    if started is not None and started.tzinfo is None:
        started = started.replace(tzinfo=UTC)
    if reviewed is not None and reviewed.tzinfo is None:
        reviewed = reviewed.replace(tzinfo=UTC)
    done = max((now - started).total_seconds() / 3600, 0.0) if started else 0.0
    blockers = []
    if subscription.test_mode:
        if started is None:
            blockers.append("the subscription has not run in test mode")
        elif done < required_hours:
            blockers.append(f"test mode has run {done:.1f} of the {required_hours:g} hours required")
        if reviewed is None or (started is not None and reviewed < started):
            blockers.append("the test report has not been marked as reviewed")
    return models.Promotion(
        test_mode=subscription.test_mode,
        test_started_at=started,
        test_hours_required=required_hours,
        test_hours_done=round(done, 2),
        reviewed_at=reviewed,
        reviewed_by=lifecycle.get("reviewed_by"),
        live_at=lifecycle.get("live_at"),
        can_go_live=subscription.test_mode and not blockers,
        blockers=blockers,
    )


def _label(resource: ProjectedResource) -> str:
    data = resource.resource
    if resource.kind is EntityKind.PERSON:
        return f"{data.get('given_name', '')} {data.get('family_name', '')}".strip() or str(resource.id)
    return str(data.get("display_name") or data.get("school_unit_code") or resource.id)


class SubscriptionAdmin(AdminCore):
    def vendors(self) -> list[models.Vendor]:
        return [
            models.Vendor(vendor_id=v.vendor_id, display_name=v.display_name, delivery=v.delivery.value)
            for v in sorted(self.catalogue.values(), key=lambda v: v.display_name)
        ]

    async def _subscription(self, tenant_id: str, vendor_id: str) -> VendorSubscription:
        subscription = await self.subscriptions.get(tenant_id, vendor_id)
        if subscription is None:
            raise NotFound("no subscription for that vendor")
        return subscription

    async def _view(
        self, subscription: VendorSubscription, *, warnings: list[models.SubscriptionWarning] | None = None
    ) -> models.Subscription:
        lifecycle = await self.lifecycle.get(subscription.tenant_id, subscription.vendor_id)
        vendor = self.catalogue.get(subscription.vendor_id)
        return models.Subscription(
            vendor_id=subscription.vendor_id,
            vendor_name=vendor.display_name if vendor else subscription.vendor_id,
            vendor_support=models.VendorSupportView(**vendor.support.model_dump())
            if vendor is not None and vendor.support is not None
            else None,
            subscription=subscription.model_dump(mode="json"),
            promotion=promotion_of(subscription, lifecycle, now=self.clock(), required_hours=self.promotion_hours),
            health=await self._health(subscription.tenant_id, subscription.vendor_id),
            warnings=warnings,
        )

    async def _profile(self, vendor_id: str, current: VendorSubscription | None) -> VendorProfile:
        """The profile a subscription is selected with: the stored one once the vendor has a subscription
        here, the catalogue's before."""
        return await self.subscriptions.profile(vendor_id) if current else self._vendor(vendor_id).profile

    @staticmethod
    def _warnings(
        subscription: VendorSubscription, profile: VendorProfile, populations: dict[str, UnitPopulation]
    ) -> list[models.SubscriptionWarning]:
        if subscription.ended_at is not None:
            return []
        return [models.SubscriptionWarning.of(w) for w in selection_warnings(subscription, profile, populations)]

    async def _warnings_now(self, subscription: VendorSubscription) -> list[models.SubscriptionWarning]:
        populations = await self.entities.unit_populations(subscription.tenant_id, self.clock().date())
        return self._warnings(subscription, await self.subscriptions.profile(subscription.vendor_id), populations)

    async def unit_populations(self, principal: Principal, tenant_id: str) -> dict[str, UnitPopulation]:
        """What each of the organiser's active school units has today, as counts (students by school type
        and year, staff by role, groups by type), by school-unit code: for choosing filters."""
        await self._tenant(principal, tenant_id)
        return await self.entities.unit_populations(tenant_id, self.clock().date())

    async def subscription_profile(self, principal: Principal, tenant_id: str, vendor_id: str) -> VendorProfile:
        """The profile a subscription of ``vendor_id`` is selected with (what fields the form can offer)."""
        await self._tenant(principal, tenant_id)
        return await self._profile(vendor_id, await self.subscriptions.get(tenant_id, vendor_id))

    async def _health(self, tenant_id: str, vendor_id: str) -> models.DeliveryHealthView:
        doc = await self.delivery_health.get(vendor_id, tenant_id)
        text = error_text(doc.get("last_error") if doc else None)
        drift = await latest_drift_report(self.db, vendor_id)
        backlog = await self.delivery_backlog.get(vendor_id, tenant_id)
        return models.DeliveryHealthView(
            pending=backlog.pending,
            oldest_pending_at=backlog.oldest_queued_at if backlog.pending else None,
            oldest_pending_at_least=backlog.oldest_at_least if backlog.pending else False,
            drift_checked_at=drift.get("at") if drift else None,
            drift_missing=int((drift.get("missing_by_tenant") or {}).get(tenant_id, 0)) if drift else None,
            drift_ghosts=int((drift.get("ghosts_by_tenant") or {}).get(tenant_id, 0)) if drift else None,
            state=state_of(doc, now=self.clock(), failing_after=self.delivery_failing_after),
            since=doc.get("since") if doc else None,
            last_error=doc.get("last_error") if doc else None,
            last_error_en=text.en if text else None,
            last_error_sv=text.sv if text else None,
            last_error_at=doc.get("last_error_at") if doc else None,
            last_success_at=doc.get("last_success_at") if doc else None,
        )

    async def list_subscriptions(self, principal: Principal, tenant_id: str) -> list[models.Subscription]:
        await self._tenant(principal, tenant_id)
        return [await self._view(s) for s, _ in await self.subscriptions.for_tenant(tenant_id)]

    async def get_subscription(self, principal: Principal, tenant_id: str, vendor_id: str) -> models.Subscription:
        await self._tenant(principal, tenant_id)
        subscription = await self._subscription(tenant_id, vendor_id)
        return await self._view(subscription, warnings=await self._warnings_now(subscription))

    async def vendor_history(
        self, principal: Principal, tenant_id: str, vendor_id: str | None = None
    ) -> list[Document]:
        await self._tenant(principal, tenant_id)
        return await self.history.vendor_projections(tenant_id, vendor_id)

    def _proposed(
        self, tenant_id: str, vendor_id: str, body: models.SubscriptionIn, *, test_mode: bool
    ) -> VendorSubscription:
        from pydantic import ValidationError

        given = body.model_dump(mode="json", exclude={"guard"} if body.guard is None else set())
        try:
            return VendorSubscription.model_validate(
                {"tenant_id": tenant_id, "vendor_id": vendor_id, "test_mode": test_mode, **given}
            )
        except ValidationError as error:
            raise Invalid.from_validation(error) from None

    @staticmethod
    def _carried(
        proposed: VendorSubscription, current: VendorSubscription | None, body: models.SubscriptionIn
    ) -> VendorSubscription:
        """What a change keeps of the current subscription: the persons explicitly included and excluded
        (not part of the body), and the guard unless the body sets one. A reopened (ended) subscription
        starts afresh."""
        if current is None or current.ended_at is not None:
            return proposed
        return proposed.model_copy(
            update={
                "include_persons": current.include_persons,
                "exclude_persons": current.exclude_persons,
                "guard": current.guard if body.guard is None else proposed.guard,
            }
        )

    async def preview(
        self, principal: Principal, tenant_id: str, vendor_id: str, body: models.SubscriptionIn
    ) -> models.Preview:
        """Who the vendor would get, gain and lose if ``body`` were saved; nothing is changed."""
        await self._tenant(principal, tenant_id)
        vendor = self._vendor(vendor_id)
        current = await self.subscriptions.get(tenant_id, vendor_id)
        proposed = self._proposed(tenant_id, vendor_id, body, test_mode=current.test_mode if current else True)
        proposed = self._carried(proposed, current, body)
        profile = await self.subscriptions.profile(vendor_id) if current else vendor.profile
        today: date = self.clock().date()
        missing_marking = await self.organiser_settings.missing_marking(tenant_id)
        state, _ = await self.entities.tenant_state(tenant_id, today, missing_marking=missing_marking)
        before = project(state, current, profile, today) if current is not None and current.ended_at is None else {}
        after = project(state, proposed, profile, today)
        preview = compare(before, after)
        labels = {rid: _label(r) for rid, r in {**before, **after}.items()}
        rows = [
            models.PreviewRow(school_unit_code=code, role=role, **counts)
            for (code, role), counts in sorted(preview.counts().items())
        ]
        totals: dict[str, int] = {}
        for resource in after.values():
            key = resource.roles[0] if resource.kind is EntityKind.PERSON and resource.roles else resource.kind.value
            totals[key] = totals.get(key, 0) + 1

        def entries(items: list[Any]) -> list[models.PreviewEntry]:
            return [
                models.PreviewEntry(
                    entity_id=e.id,
                    kind=e.kind.value,
                    label=labels.get(e.id, str(e.id)),
                    school_unit_codes=list(e.school_unit_codes),
                    roles=list(e.roles),
                )
                for e in items
                if e.kind is EntityKind.PERSON
            ]

        return models.Preview(
            vendor_id=vendor_id,
            totals=totals,
            rows=rows,
            added=entries(preview.added),
            removed=entries(preview.removed),
            warnings=self._warnings(proposed, profile, await self.entities.unit_populations(tenant_id, today)),
        )

    async def save_subscription(
        self, principal: Principal, tenant_id: str, vendor_id: str, body: models.SubscriptionIn
    ) -> models.Subscription:
        """Create (in test mode) or change a subscription. A change in test mode asks for a new review."""
        await self._tenant(principal, tenant_id)
        self._vendor(vendor_id)
        current = await self.subscriptions.get(tenant_id, vendor_id)
        reopened = current is not None and current.ended_at is not None
        test_mode = True if current is None or reopened else current.test_mode
        proposed = self._carried(self._proposed(tenant_id, vendor_id, body, test_mode=test_mode), current, body)
        await self.subscriptions.save(proposed)
        now = self.clock()
        if current is None or reopened:
            await self.lifecycle.test_started(tenant_id, vendor_id, now)
        elif test_mode and current != proposed:
            await self.lifecycle.review_needed(tenant_id, vendor_id)  # the reviewed report no longer applies
        await self._audit(
            principal,
            tenant_id,
            "subscription.create" if current is None else "subscription.update",
            vendor_id,
            before=current.model_dump(mode="json") if current else None,
            after=proposed.model_dump(mode="json"),
        )
        action = "subscription.create" if current is None else "subscription.update"
        await self._project(tenant_id, "subscription", by=principal, action=action, target=vendor_id)
        return await self._view(proposed, warnings=await self._warnings_now(proposed))
