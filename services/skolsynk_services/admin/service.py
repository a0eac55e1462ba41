"""What an organiser's admin or an operator can see and do: one method per use case, shared by the REST
API (``api.py``) and the web UI (``ui.py``). Every method takes the :class:`Principal` first and checks
it; every change is written to the audit log; commands go to the other services over the broker."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from skolsynk.catalogue import VendorCatalogueEntry
from skolsynk.contracts.envelope import MessageContract
from skolsynk.contracts.gdpr import ErasureRequested, ErasureWithdrawn
from skolsynk.contracts.sync import SyncRequested
from skolsynk.contracts.vendor import ProjectionRequested
from skolsynk.domain.quality import FindingCode, Severity
from skolsynk.domain.selection import ProjectedResource, compare, project
from skolsynk.domain.ss12000 import EntityKind, Person, SchoolUnit
from skolsynk.domain.subscription import VendorSubscription
from skolsynk.messaging import Publisher, UnroutableMessage, sync_request_routing_key
from skolsynk.storage import Database, Document
from skolsynk.storage.deliveries import DeliveryLedger
from skolsynk.storage.entities import EntityReader
from skolsynk.storage.erasures import ErasureLedger, ErasureRequestStore
from skolsynk.storage.findings import FindingStore
from skolsynk.storage.history import SyncHistory
from skolsynk.storage.holds import HoldStore
from skolsynk.storage.subscriptions import SubscriptionStore
from skolsynk_services.admin import models
from skolsynk_services.admin.auth import Principal, Role, TokenStore
from skolsynk_services.admin.problems import Conflict, GateClosed, Invalid, NotFound, Unavailable
from skolsynk_services.admin.stores import AuditLog, LifecycleStore, SecretBox, SourceStore, TenantStore

PRODUCER = "admin"
PULLED_KINDS = frozenset({models.SourceKind.GOOGLE, models.SourceKind.MICROSOFT, models.SourceKind.SS12000})


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Exchanges:
    control: str
    gdpr: str


def source_view(doc: Document) -> models.Source:
    """A stored source as the API shows it: secret values never leave the store."""
    return models.Source(
        source_id=doc["source_id"],
        kind=doc["kind"],
        display_name=doc["display_name"],
        settings=doc["settings"],
        secrets_set=doc.get("secret_names", []),
        secret_refs=doc.get("secret_refs", {}),
        created_at=doc["created_at"],
        updated_at=doc["updated_at"],
    )


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


class AdminService:
    def __init__(
        self,
        db: Database,
        publisher: Publisher,
        exchanges: Exchanges,
        catalogue: dict[str, VendorCatalogueEntry],
        *,
        secrets: SecretBox,
        promotion_hours: float,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.db = db
        self.publisher = publisher
        self.exchanges = exchanges
        self.catalogue = catalogue
        self.promotion_hours = promotion_hours
        self.clock = clock
        self.tenants = TenantStore(db)
        self.tokens = TokenStore(db)
        self.sources = SourceStore(db, secrets)
        self.audit_log = AuditLog(db)
        self.lifecycle = LifecycleStore(db)
        self.subscriptions = SubscriptionStore(db)
        self.findings_store = FindingStore(db)
        self.holds_store = HoldStore(db)
        self.entities = EntityReader(db)
        self.history = SyncHistory(db)
        self.erasures = ErasureRequestStore(db)
        self.ledger = ErasureLedger(db)

    # --- helpers -----------------------------------------------------------------------------------

    async def _tenant(self, principal: Principal, tenant_id: str) -> Document:
        principal.require_tenant(tenant_id)
        tenant = await self.tenants.get(tenant_id)
        if tenant is None:
            raise NotFound(f"no organiser {tenant_id!r}")
        return tenant

    async def _audit(
        self, principal: Principal, tenant_id: str | None, action: str, target: str, **values: Any
    ) -> None:
        await self.audit_log.record(
            actor=principal.subject,
            role=principal.role.value,
            tenant_id=tenant_id,
            action=action,
            target=target,
            **values,
        )

    async def _send(self, tenant_id: str, message: MessageContract, exchange: str, routing_key: str) -> uuid.UUID:
        envelope = message.to_envelope(tenant_id=tenant_id, producer=PRODUCER)
        try:
            await self.publisher.publish(envelope, exchange=exchange, routing_key=routing_key)
        except UnroutableMessage as error:
            raise Unavailable("no service is consuming this request right now; it was not sent") from error
        return envelope.message_id

    async def _project(self, tenant_id: str, reason: str, resend_vendor_id: str | None = None) -> None:
        await self._send(
            tenant_id,
            ProjectionRequested(reason=reason, resend_vendor_id=resend_vendor_id),
            self.exchanges.control,
            ProjectionRequested.message_type,
        )

    def _vendor(self, vendor_id: str) -> VendorCatalogueEntry:
        vendor = self.catalogue.get(vendor_id)
        if vendor is None:
            raise NotFound(f"no vendor {vendor_id!r} in the catalogue")
        return vendor

    # --- tenants and tokens ------------------------------------------------------------------------

    async def list_tenants(self, principal: Principal) -> list[models.Tenant]:
        docs = await self.tenants.list(None if principal.is_operator else principal.tenant_id)
        return [
            models.Tenant(
                tenant_id=d["_id"], **{k: d[k] for k in ("display_name", "organisation_number", "created_at")}
            )
            for d in docs
        ]

    async def create_tenant(self, principal: Principal, body: models.TenantIn) -> models.Tenant:
        principal.require_operator()
        doc = await self.tenants.create(body.tenant_id, body.display_name, body.organisation_number)
        if doc is None:
            raise Conflict(f"an organiser {body.tenant_id!r} exists already")
        await self._audit(principal, body.tenant_id, "tenant.create", body.tenant_id, after=body.model_dump())
        return models.Tenant(
            tenant_id=doc["_id"],
            display_name=doc["display_name"],
            organisation_number=doc["organisation_number"],
            created_at=doc["created_at"],
        )

    async def get_tenant(self, principal: Principal, tenant_id: str) -> models.Tenant:
        doc = await self._tenant(principal, tenant_id)
        return models.Tenant(
            tenant_id=doc["_id"],
            display_name=doc["display_name"],
            organisation_number=doc["organisation_number"],
            created_at=doc["created_at"],
        )

    async def create_token(self, principal: Principal, tenant_id: str, body: models.TokenIn) -> models.TokenCreated:
        await self._tenant(principal, tenant_id)
        role = Role(body.role)
        if role is Role.OPERATOR:
            principal.require_operator()
        token, record = await self.tokens.create(
            role=role,
            subject=body.subject,
            tenant_id=None if role is Role.OPERATOR else tenant_id,
            created_by=principal.subject,
        )
        await self._audit(
            principal, tenant_id, "token.create", record["_id"], after={"role": role.value, "subject": body.subject}
        )
        return models.TokenCreated(
            token=token, token_id=record["_id"], role=role.value, tenant_id=record["tenant_id"], subject=body.subject
        )

    async def list_tokens(self, principal: Principal, tenant_id: str) -> list[models.TokenInfo]:
        await self._tenant(principal, tenant_id)
        return [
            models.TokenInfo(
                token_id=d["_id"],
                role=d["role"],
                tenant_id=d["tenant_id"],
                subject=d["subject"],
                created_at=d["created_at"],
                revoked_at=d["revoked_at"],
            )
            for d in await self.tokens.list(tenant_id)
        ]

    async def revoke_token(self, principal: Principal, tenant_id: str, token_id: str) -> None:
        await self._tenant(principal, tenant_id)
        record = await self.tokens.get(token_id)
        if record is None or record["tenant_id"] != tenant_id:
            raise NotFound("no such token for this organiser")
        await self.tokens.revoke(token_id)
        await self._audit(principal, tenant_id, "token.revoke", token_id)

    # --- sources -----------------------------------------------------------------------------------

    async def list_sources(self, principal: Principal, tenant_id: str) -> list[models.Source]:
        await self._tenant(principal, tenant_id)
        return [source_view(d) for d in await self.sources.list(tenant_id)]

    async def get_source(self, principal: Principal, tenant_id: str, source_id: str) -> models.Source:
        await self._tenant(principal, tenant_id)
        doc = await self.sources.get(tenant_id, source_id)
        if doc is None:
            raise NotFound(f"no source {source_id!r}")
        return source_view(doc)

    async def save_source(
        self, principal: Principal, tenant_id: str, body: models.SourceIn, *, create: bool
    ) -> models.Source:
        await self._tenant(principal, tenant_id)
        settings_needed, secrets_needed = models.SOURCE_REQUIREMENTS[body.kind]
        current = await self.sources.get(tenant_id, body.source_id)
        have = set(body.secrets) | set(body.secret_refs) | set((current or {}).get("secret_names", []))
        missing = [f"settings.{n}" for n in settings_needed if not body.settings.get(n)]
        missing += [f"secrets.{n}" for n in secrets_needed if n not in have]
        if missing:
            raise Invalid(
                f"a {body.kind.value} source needs: {', '.join(missing)}",
                errors=[{"field": m, "message": "required"} for m in missing],
            )
        doc = await self.sources.save(
            tenant_id,
            body.source_id,
            kind=body.kind.value,
            display_name=body.display_name,
            settings=body.settings,
            secrets=body.secrets,
            secret_refs=body.secret_refs,
            create=create,
        )
        if doc is None:
            raise (
                Conflict(f"a source {body.source_id!r} exists already")
                if create
                else NotFound(f"no source {body.source_id!r}")
            )
        after = source_view(doc).model_dump(mode="json", exclude={"created_at", "updated_at"})
        before = source_view(current).model_dump(mode="json", exclude={"created_at", "updated_at"}) if current else None
        await self._audit(
            principal,
            tenant_id,
            "source.create" if create else "source.update",
            body.source_id,
            before=before,
            after=after,
        )
        return source_view(doc)

    async def delete_source(self, principal: Principal, tenant_id: str, source_id: str) -> None:
        await self._tenant(principal, tenant_id)
        current = await self.sources.get(tenant_id, source_id)
        if current is None or not await self.sources.delete(tenant_id, source_id):
            raise NotFound(f"no source {source_id!r}")
        await self._audit(
            principal, tenant_id, "source.delete", source_id, before=source_view(current).model_dump(mode="json")
        )

    async def request_sync(self, principal: Principal, tenant_id: str, source_id: str, mode: str) -> uuid.UUID:
        await self._tenant(principal, tenant_id)
        doc = await self.sources.get(tenant_id, source_id)
        if doc is None:
            raise NotFound(f"no source {source_id!r}")
        kind = models.SourceKind(doc["kind"])
        if kind not in PULLED_KINDS:
            raise Conflict("an EGIL source pushes its data: ask the organiser's EGIL client to send it")
        message_id = await self._send(
            tenant_id,
            SyncRequested(source_id=source_id, mode=mode, requested_by="admin-ui"),
            self.exchanges.control,
            sync_request_routing_key(kind.value),
        )
        await self._audit(principal, tenant_id, "source.sync", source_id, after={"mode": mode})
        return message_id

    # --- history, quality, school units ------------------------------------------------------------

    async def runs(self, principal: Principal, tenant_id: str, source_id: str | None = None) -> list[Document]:
        await self._tenant(principal, tenant_id)
        return await self.history.source_runs(tenant_id, source_id=source_id)

    async def vendor_history(
        self, principal: Principal, tenant_id: str, vendor_id: str | None = None
    ) -> list[Document]:
        await self._tenant(principal, tenant_id)
        return await self.history.vendor_projections(tenant_id, vendor_id)

    async def findings(
        self,
        principal: Principal,
        tenant_id: str,
        *,
        severity: Severity | None = None,
        code: FindingCode | None = None,
        school_unit_code: str | None = None,
        limit: int = 1000,
    ) -> list[dict[str, Any]]:
        await self._tenant(principal, tenant_id)
        found = await self.findings_store.query(
            tenant_id, severity=severity, code=code, school_unit_code=school_unit_code, limit=limit
        )
        return [f.model_dump(mode="json") for f in found]

    async def findings_csv(self, principal: Principal, tenant_id: str) -> str:
        await self._tenant(principal, tenant_id)
        return await self.findings_store.csv(tenant_id)

    async def findings_summary(self, principal: Principal, tenant_id: str) -> dict[str, dict[str, int]]:
        await self._tenant(principal, tenant_id)
        return await self.findings_store.summary(tenant_id)

    async def school_units(self, principal: Principal, tenant_id: str) -> list[dict[str, Any]]:
        """The organiser's school units as the sources have them (for choosing what a vendor gets)."""
        await self._tenant(principal, tenant_id)
        units = []
        for stored in await self.entities.load_tenant(tenant_id):
            if isinstance(stored.entity, SchoolUnit):
                unit = stored.entity
                units.append(
                    {
                        "entity_id": str(stored.id),
                        "school_unit_code": unit.school_unit_code,
                        "display_name": unit.display_name,
                        "school_types": [str(t) for t in unit.school_types],
                        "source_id": stored.source_id,
                    }
                )
        return sorted(units, key=lambda u: (u["display_name"], u["school_unit_code"]))

    async def persons(self, principal: Principal, tenant_id: str, text: str) -> list[dict[str, Any]]:
        """Find a person by name, login or e-mail (for an erasure request). Organiser-only data."""
        await self._tenant(principal, tenant_id)
        found: list[tuple[uuid.UUID, Person]] = await self.entities.find_persons(tenant_id, text)
        return [
            {"person_id": str(pid), "name": f"{p.given_name} {p.family_name}", "login": p.eppn[0] if p.eppn else None}
            for pid, p in found
        ]

    # --- vendors and subscriptions -----------------------------------------------------------------

    def vendors(self) -> list[models.Vendor]:
        return [
            models.Vendor(vendor_id=v.vendor_id, display_name=v.display_name, delivery=v.delivery.value)
            for v in sorted(self.catalogue.values(), key=lambda v: v.display_name)
        ]

    async def _subscription(self, tenant_id: str, vendor_id: str) -> VendorSubscription:
        subscription = await self.subscriptions.get(tenant_id, vendor_id)
        if subscription is None:
            raise NotFound(f"no subscription for {vendor_id!r}")
        return subscription

    async def _view(self, subscription: VendorSubscription) -> models.Subscription:
        lifecycle = await self.lifecycle.get(subscription.tenant_id, subscription.vendor_id)
        vendor = self.catalogue.get(subscription.vendor_id)
        return models.Subscription(
            vendor_id=subscription.vendor_id,
            vendor_name=vendor.display_name if vendor else subscription.vendor_id,
            subscription=subscription.model_dump(mode="json"),
            promotion=promotion_of(subscription, lifecycle, now=self.clock(), required_hours=self.promotion_hours),
        )

    async def list_subscriptions(self, principal: Principal, tenant_id: str) -> list[models.Subscription]:
        await self._tenant(principal, tenant_id)
        return [await self._view(s) for s, _ in await self.subscriptions.for_tenant(tenant_id)]

    async def get_subscription(self, principal: Principal, tenant_id: str, vendor_id: str) -> models.Subscription:
        await self._tenant(principal, tenant_id)
        return await self._view(await self._subscription(tenant_id, vendor_id))

    def _proposed(
        self, tenant_id: str, vendor_id: str, body: models.SubscriptionIn, *, test_mode: bool
    ) -> VendorSubscription:
        from pydantic import ValidationError

        try:
            return VendorSubscription.model_validate(
                {"tenant_id": tenant_id, "vendor_id": vendor_id, "test_mode": test_mode, **body.model_dump(mode="json")}
            )
        except ValidationError as error:
            raise Invalid.from_validation(error) from None

    async def preview(
        self, principal: Principal, tenant_id: str, vendor_id: str, body: models.SubscriptionIn
    ) -> models.Preview:
        """Who the vendor would get, gain and lose if ``body`` were saved; nothing is changed."""
        await self._tenant(principal, tenant_id)
        vendor = self._vendor(vendor_id)
        current = await self.subscriptions.get(tenant_id, vendor_id)
        proposed = self._proposed(tenant_id, vendor_id, body, test_mode=current.test_mode if current else True)
        profile = await self.subscriptions.profile(vendor_id) if current else vendor.profile
        today: date = self.clock().date()
        state, _ = await self.entities.tenant_state(tenant_id, today)
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
        proposed = self._proposed(tenant_id, vendor_id, body, test_mode=test_mode)
        if current is not None and not reopened:
            proposed = proposed.model_copy(
                update={
                    "include_persons": current.include_persons,
                    "exclude_persons": current.exclude_persons,
                    "guard": current.guard,
                }
            )
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
        await self._project(tenant_id, "subscription")
        return await self._view(proposed)

    async def end_subscription(self, principal: Principal, tenant_id: str, vendor_id: str) -> models.Subscription:
        """End it: everything the vendor holds for the organiser is deleted (with GDPR receipts)."""
        await self._tenant(principal, tenant_id)
        current = await self._subscription(tenant_id, vendor_id)
        await self.subscriptions.end(tenant_id, vendor_id, at=self.clock())
        await self._audit(principal, tenant_id, "subscription.end", vendor_id, before=current.model_dump(mode="json"))
        await self._project(tenant_id, "subscription-ended")
        return await self._view(await self._subscription(tenant_id, vendor_id))

    async def test_report(self, principal: Principal, tenant_id: str, vendor_id: str) -> dict[str, Any]:
        await self._tenant(principal, tenant_id)
        await self._subscription(tenant_id, vendor_id)
        return await DeliveryLedger(self.db, vendor_id).test_report(tenant_id)

    async def delivery_report_csv(self, principal: Principal, tenant_id: str, vendor_id: str) -> str:
        await self._tenant(principal, tenant_id)
        await self._subscription(tenant_id, vendor_id)
        return await DeliveryLedger(self.db, vendor_id).report_csv(tenant_id)

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
        await self._project(tenant_id, "go-live")
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
        await self._project(tenant_id, "subscription")
        return await self._view(test)

    async def resend(self, principal: Principal, tenant_id: str, vendor_id: str) -> None:
        await self._tenant(principal, tenant_id)
        await self._subscription(tenant_id, vendor_id)
        await self._project(tenant_id, "resend", resend_vendor_id=vendor_id)
        await self._audit(principal, tenant_id, "subscription.resend", vendor_id)

    # --- holds -------------------------------------------------------------------------------------

    async def holds(self, principal: Principal, tenant_id: str) -> list[Document]:
        await self._tenant(principal, tenant_id)
        return [{k: v for k, v in d.items() if k != "_id"} for d in await self.holds_store.for_tenant(tenant_id)]

    async def decide_hold(
        self, principal: Principal, tenant_id: str, vendor_id: str, school_unit_id: str, decision: str
    ) -> None:
        await self._tenant(principal, tenant_id)
        status = "approved" if decision == "approve" else "discarded"
        if not await self.holds_store.decide(tenant_id, vendor_id, school_unit_id, status, by=principal.subject):  # type: ignore[arg-type]
            raise NotFound("no pending hold for that vendor and school unit")
        await self._audit(principal, tenant_id, f"hold.{decision}", f"{vendor_id}:{school_unit_id}")
        await self._project(tenant_id, "hold-decided")

    # --- GDPR --------------------------------------------------------------------------------------

    async def erasure_requests(self, principal: Principal, tenant_id: str) -> list[Document]:
        await self._tenant(principal, tenant_id)
        return [
            {"request_id": d["_id"], **{k: v for k, v in d.items() if k != "_id"}}
            for d in await self.erasures.for_tenant(tenant_id)
        ]

    async def request_erasure(self, principal: Principal, tenant_id: str, body: models.ErasureIn) -> uuid.UUID:
        await self._tenant(principal, tenant_id)
        for vendor_id in body.vendor_ids or []:
            self._vendor(vendor_id)
        request = ErasureRequested(
            request_id=uuid.uuid4(),
            person_id=body.person_id,
            vendor_ids=body.vendor_ids,
            kind=body.kind,
            requested_by=principal.subject[:64],
            reference=body.reference,
        )
        await self._send(tenant_id, request, self.exchanges.gdpr, ErasureRequested.message_type)
        await self._audit(
            principal, tenant_id, f"gdpr.{body.kind}", str(body.person_id), after=body.model_dump(mode="json")
        )
        return request.request_id

    async def withdraw_erasure(self, principal: Principal, tenant_id: str, request_id: uuid.UUID) -> None:
        await self._tenant(principal, tenant_id)
        found = [d for d in await self.erasures.for_tenant(tenant_id, status="active") if d["_id"] == str(request_id)]
        if not found:
            raise NotFound("no active erasure request with that id")
        message = ErasureWithdrawn(request_id=request_id, withdrawn_by=principal.subject[:64])
        await self._send(tenant_id, message, self.exchanges.gdpr, ErasureWithdrawn.message_type)
        await self._audit(principal, tenant_id, "gdpr.withdraw", str(request_id))

    async def erasure_ledger(
        self, principal: Principal, tenant_id: str, *, vendor_id: str | None = None, status: str | None = None
    ) -> list[dict[str, Any]]:
        await self._tenant(principal, tenant_id)
        rows = await self.ledger.evidence(tenant_id, vendor_id=vendor_id)
        return [r for r in rows if status is None or r["status"] == status]

    async def evidence(self, principal: Principal, tenant_id: str, *, vendor_id: str | None, fmt: str) -> str:
        await self._tenant(principal, tenant_id)
        if fmt == "json":
            return await self.ledger.evidence_json(tenant_id, vendor_id=vendor_id)
        return await self.ledger.evidence_csv(tenant_id, vendor_id=vendor_id)

    # --- audit -------------------------------------------------------------------------------------

    async def audit(self, principal: Principal, tenant_id: str | None) -> list[Document]:
        if tenant_id is None:
            principal.require_operator()
        else:
            await self._tenant(principal, tenant_id)
        return await self.audit_log.entries(tenant_id)

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
            "sources": [source_view(d) for d in sources],
            "runs": runs,
            "subscriptions": subscriptions,
            "findings": {"errors": errors, "by_unit": summary},
            "entities": await self.entities.counts(tenant_id),
            "holds": len(await self.holds_store.for_tenant(tenant_id, status="pending")),
            "deletions_open": by_status.get("pending", 0) + by_status.get("overdue", 0),
            "deletions_overdue": by_status.get("overdue", 0),
        }


def since(hours: float, now: datetime | None = None) -> datetime:
    return (now or utcnow()) - timedelta(hours=hours)
