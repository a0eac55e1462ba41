"""Composition root of the admin service: the REST API at ``/api/v1`` (OpenAPI at
``/api/v1/openapi.json``) and the web UI at ``/ui`` on ``SKOLSYNK_ADMIN_PORT``."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from aiohttp import web
from pydantic import Field, SecretStr, field_validator

from skolsynk.logging import get_logger
from skolsynk.messaging.replies import ReplyInbox
from skolsynk.proxies import TrustedProxies, parse_networks
from skolsynk.runtime import run_service
from skolsynk.service import ServiceApp
from skolsynk.settings import CatalogueSettings
from skolsynk.storage import deliveries, entities, erasures, history
from skolsynk.storage import notifications as notification_store
from skolsynk.storage import vendors as vendor_store
from skolsynk.storage.sources import SecretBox
from skolsynk_services.admin import accounts, auth, stores
from skolsynk_services.admin.accounts import AccountRuleStore
from skolsynk_services.admin.api import make_api
from skolsynk_services.admin.auth import (
    DEFAULT_TOKEN_DAYS,
    MAX_TOKEN_DAYS,
    SessionStore,
    TokenStore,
    parse_token,
)
from skolsynk_services.admin.limits import FailureGuard, RequestRate
from skolsynk_services.admin.notify import Mailer, Notifier
from skolsynk_services.admin.oidc import RelyingParty
from skolsynk_services.admin.service import AdminService, Exchanges
from skolsynk_services.admin.service.core import EgilReceiver

SERVICE = "admin"
log = get_logger(__name__)
#: The bootstrap operator token's id and the shortest secret it may have (it opens every organiser).
BOOTSTRAP_ID = re.compile(r"^[a-z0-9]{4,32}$")
MIN_BOOTSTRAP_SECRET = 32


class AdminSettings(CatalogueSettings):
    admin_host: str = Field(default="0.0.0.0", description="Bind address of the admin API and UI.")  # noqa: S104
    admin_port: int = Field(default=8080, ge=0, le=65535, description="Port of the admin API and UI.")
    admin_secrets_key: SecretStr | None = Field(
        default=None,
        description="Fernet key (urlsafe base64, 32 bytes) that encrypts source credentials at rest; without it "
        "only secret references are accepted.",
    )
    admin_egil_url: str | None = Field(
        default=None, pattern=r"^https://", description="The EGIL receiver's address as organisers' clients reach it."
    )
    admin_egil_server_pin: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9+/]{43}=$",
        description="SHA-256 pin (base64) of the EGIL receiver's public key, for the clients' pinnedpubkey.",
    )
    admin_egil_api_key_header: str = Field(
        default="X-API-Key",
        min_length=1,
        max_length=100,
        description="The header EGIL clients send their API key in (the receiver's SKOLSYNK_EGIL_API_KEY_HEADER).",
    )
    admin_microsoft_app_client_id: str | None = Field(
        default=None,
        pattern=r"^[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$",
        description="skolsynk's multi-tenant Microsoft app (the graph-connector's SKOLSYNK_GRAPH_APP_CLIENT_ID): "
        "organisers connect Microsoft 365 by admin consent to it.",
    )
    admin_public_url: str | None = Field(
        default=None,
        pattern=r"^https?://",
        description="The admin's address as browsers reach it (the consent and sign-in redirects); default: the "
        "request's.",
    )
    admin_check_timeout_seconds: float = Field(
        default=20.0, gt=0, le=120, description="How long 'test connection' waits for the connector's answer."
    )
    admin_bootstrap_token: SecretStr | None = Field(
        default=None,
        description="An operator API token (skt_<id>.<secret>, a secret of at least 32 characters) registered once, "
        "for the first login; revoked, it stays revoked.",
    )

    @field_validator("admin_bootstrap_token")
    @classmethod
    def _strong_bootstrap_token(cls, value: SecretStr | None) -> SecretStr | None:
        parsed = parse_token(value.get_secret_value()) if value is not None else None
        if value is not None and (
            parsed is None or not BOOTSTRAP_ID.match(parsed[0]) or len(parsed[1]) < MIN_BOOTSTRAP_SECRET
        ):
            raise ValueError(
                f"must be skt_<id>.<secret>: an id of 4 to 32 lower-case letters and digits, a secret of at least "
                f"{MIN_BOOTSTRAP_SECRET} characters (generate one: python -c 'import secrets; "
                'print("skt_ops" + secrets.token_hex(4) + "." + secrets.token_urlsafe(32))\')'
            )
        return value

    admin_token_days: int = Field(
        default=DEFAULT_TOKEN_DAYS,
        ge=1,
        le=MAX_TOKEN_DAYS,
        description="How long a new API token is valid unless its creator says otherwise.",
    )
    admin_session_idle_minutes: float = Field(
        default=30.0, gt=0, le=1440, description="A UI session ends after this long without a request."
    )
    admin_session_max_hours: float = Field(
        default=12.0, gt=0, le=168, description="A UI session ends at this age, however busy."
    )
    admin_trusted_proxies: str = Field(
        default="",
        max_length=2000,
        description="Comma-separated addresses or CIDRs of the TLS-terminating proxies whose X-Forwarded-Proto, "
        "-Host and -For are believed (the ingress); empty: none.",
    )
    admin_signin_failures_per_minute: int = Field(
        default=10,
        ge=1,
        le=1000,
        description="Failed sign-ins (and failed API authentications) per client address per minute before it "
        "gets 429.",
    )
    admin_api_requests_per_second: float = Field(
        default=50.0, gt=0, le=10_000, description="API requests per token per second before it gets 429."
    )

    @field_validator("admin_trusted_proxies")
    @classmethod
    def _proxy_networks(cls, value: str) -> str:
        parse_networks(v for v in value.split(",") if v.strip())
        return value

    admin_promotion_hours: float = Field(
        default=24.0, ge=0, description="How long a subscription must run in test mode before it may go live."
    )
    smtp_host: str | None = Field(default=None, description="SMTP server for notifications; unset: no e-mail.")
    smtp_port: int = Field(default=587, ge=1, le=65535, description="SMTP port.")
    smtp_from: str = Field(default="skolsynk@localhost", description="Sender address of notifications.")
    smtp_starttls: bool = Field(default=True, description="Upgrade the SMTP connection with STARTTLS.")
    smtp_username: str | None = Field(default=None, description="SMTP user, if the server wants one.")
    smtp_password: SecretStr | None = Field(default=None, description="SMTP password.")
    notify_interval_seconds: float = Field(
        default=60.0, gt=0, le=3600, description="How often delivery health is checked for notifications."
    )
    delivery_failing_minutes: float = Field(
        default=15.0,
        gt=0,
        description="An organiser's deliveries to a vendor retrying this long are shown as failing (the alert "
        "SkolsynkDeliveryFailing uses the same 15 minutes).",
    )


def utcnow() -> datetime:
    return datetime.now(UTC)


def build(settings: AdminSettings, *, clock: Callable[[], datetime] = utcnow) -> ServiceApp:
    app = ServiceApp.create(SERVICE, settings)
    app.add_indexes([*stores.INDEXES, *auth.INDEXES, *accounts.INDEXES, *erasures.INDEXES, *history.INDEXES])
    key = settings.admin_secrets_key.get_secret_value() or None if settings.admin_secrets_key else None
    app.add_indexes(vendor_store.INDEXES)
    # The subscription reports page and count the delivery ledger on its indexes (also before a dispatcher ran).
    app.add_indexes(deliveries.INDEXES, retired=deliveries.RETIRED_INDEXES)
    # The person search reads a tenant's entities by their index (also before the normaliser ran).
    app.add_indexes(entities.INDEXES)
    catalogue = vendor_store.CatalogueFollower(
        vendor_store.VendorStore(app.db), poll_seconds=settings.vendors_poll_seconds
    )

    async def seed() -> None:
        await vendor_store.seed_catalogue(catalogue.store, settings.vendor_catalogue_dir)
        await catalogue.refresh()

    app.add_startup(seed)
    app.add_background("vendor-catalogue", catalogue.run_forever)
    replies = ReplyInbox(app.broker)
    app.add_shutdown(replies.close)
    tokens = TokenStore(app.db, default_days=settings.admin_token_days, clock=clock)
    sessions = SessionStore(
        app.db,
        tokens,
        idle=timedelta(minutes=settings.admin_session_idle_minutes),
        absolute=timedelta(hours=settings.admin_session_max_hours),
        clock=clock,
        accounts=AccountRuleStore(app.db),
    )
    relying_party = RelyingParty()  # signing in with Microsoft or Google (its HTTP client closes at shutdown)
    app.add_shutdown(relying_party.close)
    service = AdminService(
        app.db,
        app.publisher,
        Exchanges(control=app.topology.exchange("control"), gdpr=app.topology.exchange("gdpr")),
        catalogue,
        secrets=SecretBox(key),
        promotion_hours=settings.admin_promotion_hours,
        egil=EgilReceiver(
            url=settings.admin_egil_url,
            server_pin=settings.admin_egil_server_pin,
            api_key_header=settings.admin_egil_api_key_header,
        ),
        replies=replies,
        check_timeout_seconds=settings.admin_check_timeout_seconds,
        microsoft_app_client_id=settings.admin_microsoft_app_client_id,
        public_url=settings.admin_public_url,
        delivery_failing_after=timedelta(minutes=settings.delivery_failing_minutes),
        clock=clock,
        tokens=tokens,
        sessions=sessions,
        relying_party=relying_party,
    )
    mailer = (
        Mailer(
            host=settings.smtp_host,
            port=settings.smtp_port,
            sender=settings.smtp_from,
            starttls=settings.smtp_starttls,
            username=settings.smtp_username,
            password=settings.smtp_password.get_secret_value() if settings.smtp_password else None,
        )
        if settings.smtp_host
        else None
    )
    notifier = Notifier(
        app.db,
        catalogue,
        mailer=mailer,
        failing_after=timedelta(minutes=settings.delivery_failing_minutes),
        public_url=settings.admin_public_url,
        clock=clock,
        promotion_hours=settings.admin_promotion_hours,
        box=SecretBox(key),
    )
    app.extensions["notifier"] = notifier
    app.add_indexes(notification_store.INDEXES)
    app.add_background("notifications", lambda: notifier.run_forever(settings.notify_interval_seconds))
    app.extensions["service"] = service
    app.extensions["tokens"] = tokens
    app.extensions["sessions"] = sessions
    guard = FailureGuard(settings.admin_signin_failures_per_minute)
    root = web_root(service, tokens, sessions, guard=guard, rate=RequestRate(settings.admin_api_requests_per_second))
    proxies = TrustedProxies(v for v in settings.admin_trusted_proxies.split(",") if v.strip())
    app.add_web_app(root, host=settings.admin_host, port=settings.admin_port, server="admin", proxies=proxies)

    async def bootstrap() -> None:
        if settings.admin_bootstrap_token is not None:
            outcome = await tokens.register_bootstrap(settings.admin_bootstrap_token.get_secret_value())
            if outcome == "revoked":
                log.warning("bootstrap_token_revoked", hint="it stays revoked; unset SKOLSYNK_ADMIN_BOOTSTRAP_TOKEN")
            else:
                log.info("bootstrap_token_registered", outcome=outcome)

    app.add_startup(bootstrap)
    return app


def web_root(
    service: AdminService,
    tokens: TokenStore,
    sessions: SessionStore,
    *,
    guard: FailureGuard | None = None,
    rate: RequestRate | None = None,
) -> web.Application:
    from skolsynk_services.admin.openapi import document
    from skolsynk_services.admin.ui import build_ui

    guard = guard or FailureGuard(10)
    root = web.Application()
    api = make_api(service, [tokens], guard=guard, rate=rate)

    async def openapi(_request: web.Request) -> web.Response:
        return web.json_response(document())

    api.router.add_get("/openapi.json", openapi)
    root.add_subapp("/api/v1", api)
    root.add_subapp("/ui", build_ui(service, sessions, tokens, guard=guard))

    async def home(_request: web.Request) -> web.Response:
        raise web.HTTPFound("/ui/")

    root.router.add_get("/", home)
    return root


def main() -> None:
    run_service(SERVICE, AdminSettings, build)
