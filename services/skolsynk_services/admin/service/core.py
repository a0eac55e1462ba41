"""What every area of the admin service shares: the stores, the clock, the check of who asks, the audit
log and the commands sent to the other services over the broker."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from skolsynk.catalogue import VendorCatalogueEntry
from skolsynk.contracts.envelope import MessageContract
from skolsynk.contracts.vendor import ProjectionRequestedV2, ProjectionRequester
from skolsynk.messaging import Publisher, UnroutableMessage
from skolsynk.messaging.replies import ReplyInbox
from skolsynk.storage import Database, Document
from skolsynk.storage.admin import OrganiserSettings
from skolsynk.storage.delivery_backlog import DeliveryBacklog
from skolsynk.storage.delivery_health import DEFAULT_FAILING_AFTER, DeliveryHealth
from skolsynk.storage.entities import EntityReader
from skolsynk.storage.erasures import ErasureLedger, ErasureRequestStore
from skolsynk.storage.findings import FindingStore
from skolsynk.storage.history import SyncHistory
from skolsynk.storage.holds import HoldStore
from skolsynk.storage.notifications import NotificationLog
from skolsynk.storage.projection_status import ProjectionStatus
from skolsynk.storage.runs import SourceRuns
from skolsynk.storage.sources import SecretBox, SourceStore
from skolsynk.storage.subscriptions import SubscriptionStore
from skolsynk.storage.vendor_credentials import VendorCredentials
from skolsynk.storage.vendors import CatalogueFollower
from skolsynk_services.admin.accounts import AccountRuleStore, IdentityProviderStore, SignInStates
from skolsynk_services.admin.auth import DEFAULT_TOKEN_DAYS, Principal, SessionStore, TokenStore
from skolsynk_services.admin.oidc import RelyingParty
from skolsynk_services.admin.problems import NotFound, Unavailable
from skolsynk_services.admin.stores import AuditLog, ConsentStore, LifecycleStore, TenantStore

PRODUCER = "admin"


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class EgilReceiver:
    """Where organisers' EGIL clients push (what the admin tells them): the receiver's public address, its
    public-key pin and the header of API keys."""

    url: str | None = None
    server_pin: str | None = None
    api_key_header: str = "X-API-Key"


@dataclass(frozen=True)
class Exchanges:
    control: str
    gdpr: str


class AdminCore:
    """The state and the checks the use cases of every area build on."""

    def __init__(
        self,
        db: Database,
        publisher: Publisher,
        exchanges: Exchanges,
        catalogue: CatalogueFollower,
        *,
        secrets: SecretBox,
        promotion_hours: float,
        egil: EgilReceiver | None = None,
        replies: ReplyInbox | None = None,
        check_timeout_seconds: float = 20.0,
        microsoft_app_client_id: str | None = None,
        public_url: str | None = None,
        delivery_failing_after: timedelta = DEFAULT_FAILING_AFTER,
        clock: Callable[[], datetime] = utcnow,
        tokens: TokenStore | None = None,
        sessions: SessionStore | None = None,
        relying_party: RelyingParty | None = None,
    ) -> None:
        #: A pair retrying its deliveries this long is shown as failing.
        self.delivery_failing_after = delivery_failing_after
        #: The admin's address as browsers reach it (None: the request's own).
        self.public_url = public_url.rstrip("/") if public_url else None
        #: skolsynk's multi-tenant Microsoft app (admin consent); None: organisers bring their own.
        self.microsoft_app_client_id = microsoft_app_client_id
        self.egil = egil or EgilReceiver()
        #: Where the answers to source checks arrive (None: checks are unavailable).
        self.replies = replies
        self.check_timeout_seconds = check_timeout_seconds
        self.db = db
        self.publisher = publisher
        self.exchanges = exchanges
        #: The vendors not retired, as the store has them (refreshed by a poll, and at once after an edit here).
        self.catalogue = catalogue
        self.vendor_store = catalogue.store
        self.promotion_hours = promotion_hours
        self.clock = clock
        self.tenants = TenantStore(db)
        self.organiser_settings = OrganiserSettings(db)
        self.tokens = tokens or TokenStore(db, default_days=DEFAULT_TOKEN_DAYS, clock=clock)
        #: The UI's sessions (None: the service is used without the UI); revoking a token ends them.
        self.sessions = sessions
        self.sources = SourceStore(db, secrets)
        self.consents = ConsentStore(db)
        self.audit_log = AuditLog(db)
        self.lifecycle = LifecycleStore(db)
        self.subscriptions = SubscriptionStore(db)
        self.findings_store = FindingStore(db)
        self.holds_store = HoldStore(db)
        self.entities = EntityReader(db)
        self.history = SyncHistory(db)
        self.source_runs = SourceRuns(db)
        self.erasures = ErasureRequestStore(db)
        self.ledger = ErasureLedger(db)
        self.delivery_health = DeliveryHealth(db)
        self.delivery_backlog = DeliveryBacklog(db)
        self.projection_status = ProjectionStatus(db)
        self.notification_log = NotificationLog(db)
        self.credentials = VendorCredentials(db, secrets)
        self.secret_box = secrets
        #: Signing in with Microsoft or Google: the providers, the account rules, the sign-ins in flight.
        self.identity_providers = IdentityProviderStore(db)
        self.account_rules = AccountRuleStore(db)
        self.signin_states = SignInStates(db)
        self.relying_party = relying_party or RelyingParty()

    async def _tenant(self, principal: Principal, tenant_id: str) -> Document:
        principal.require_tenant(tenant_id)
        tenant = await self.tenants.get(tenant_id)
        if tenant is None:
            raise NotFound("no organiser with that id")
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
            via=principal.provider_id,
            **values,
        )

    async def _send(self, tenant_id: str, message: MessageContract, exchange: str, routing_key: str) -> uuid.UUID:
        envelope = message.to_envelope(tenant_id=tenant_id, producer=PRODUCER)
        try:
            await self.publisher.publish(envelope, exchange=exchange, routing_key=routing_key)
        except UnroutableMessage as error:
            raise Unavailable("no service is consuming this request right now; it was not sent") from error
        return envelope.message_id

    async def _project(
        self,
        tenant_id: str,
        reason: str,
        resend_vendor_id: str | None = None,
        *,
        by: Principal | None = None,
        action: str | None = None,
        target: str | None = None,
    ) -> None:
        """Ask the normaliser to project the tenant; ``by`` (with the audited ``action`` and its ``target``)
        names the admin's change that asked, so a hold the projection makes can say whose change it was."""
        requester = None
        if by is not None and action is not None:
            requester = ProjectionRequester(actor=by.subject, action=action, target=target, at=self.clock())
        # Counted before it is sent, so the test report says "computing" until a projection answers it.
        await self.projection_status.requested(tenant_id, at=self.clock())
        await self._send(
            tenant_id,
            ProjectionRequestedV2(reason=reason, resend_vendor_id=resend_vendor_id, requested_by=requester),
            self.exchanges.control,
            ProjectionRequestedV2.message_type,
        )

    def _vendor(self, vendor_id: str) -> VendorCatalogueEntry:
        vendor = self.catalogue.get(vendor_id)
        if vendor is None:
            raise NotFound("no vendor with that id in the catalogue")
        return vendor
