"""E-mail notifications to an organiser's contacts: when its deliveries to a vendor have been failing for
longer than ``SKOLSYNK_DELIVERY_FAILING_MINUTES``, once per episode, and once more when they work again.

Every ``SKOLSYNK_NOTIFY_INTERVAL_SECONDS`` the admin compares each (organiser, vendor) pair's delivery
health (``delivery_health``) with the open episodes (``notifications``): a failing pair without one opens
it and mails the organiser's contacts (``notify_emails`` of the organiser); a pair that is fine again closes
its episode and mails the recovery. An episode is keyed by the moment the failures began, so admin replicas
checking at once open it once, and a restart sends nothing twice. Without ``SKOLSYNK_SMTP_HOST`` (or
without contacts) the episodes are still recorded and listed in the UI. Mails carry no personal data:
the organiser, the vendor, since when, and the error in Swedish and English.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.message import EmailMessage

import aiosmtplib

from skolsynk.domain.delivery_errors import error_text
from skolsynk.logging import get_logger
from skolsynk.storage import Database
from skolsynk.storage.delivery_health import DeliveryHealth, state_of
from skolsynk.storage.notifications import NotificationLog
from skolsynk.storage.vendors import CatalogueFollower
from skolsynk_services.admin.stores import TenantStore

log = get_logger(__name__)

DELIVERY_FAILING = "delivery_failing"


@dataclass(frozen=True)
class Mailer:
    """Sends plain-text mail through the operator's SMTP server (aiosmtplib)."""

    host: str
    port: int
    sender: str
    starttls: bool = True
    username: str | None = None
    password: str | None = None
    timeout_seconds: float = 30.0

    async def send(self, to: list[str], subject: str, body: str) -> None:
        message = EmailMessage()
        message["From"] = self.sender
        message["To"] = ", ".join(to)
        message["Subject"] = subject
        message.set_content(body)
        await aiosmtplib.send(
            message,
            hostname=self.host,
            port=self.port,
            start_tls=self.starttls,
            username=self.username,
            password=self.password,
            timeout=self.timeout_seconds,
        )


def _when(value: datetime) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC")


class Notifier:
    def __init__(
        self,
        db: Database,
        catalogue: CatalogueFollower,
        *,
        mailer: Mailer | None,
        failing_after: timedelta,
        public_url: str | None,
        clock: Callable[[], datetime],
    ) -> None:
        self.health = DeliveryHealth(db)
        self.log = NotificationLog(db)
        self.tenants = TenantStore(db)
        self.catalogue = catalogue
        self.mailer = mailer
        self.failing_after = failing_after
        self.public_url = public_url
        self.clock = clock

    async def check(self) -> None:
        """Open and mail the episodes of pairs that became failing, close and mail those that recovered."""
        now = self.clock()
        open_episodes = {(d["tenant_id"], d["subject"]): d for d in await self.log.open_episodes(DELIVERY_FAILING)}
        for doc in await self.health.all():
            tenant_id, vendor_id = str(doc["tenant_id"]), str(doc["vendor_id"])
            state = state_of(doc, now=now, failing_after=self.failing_after)
            episode = open_episodes.get((tenant_id, vendor_id))
            if state == "failing" and episode is None:
                since = doc["since"]
                ident = await self.log.open(
                    tenant_id,
                    DELIVERY_FAILING,
                    vendor_id,
                    began_at=since,
                    at=now,
                    details={"last_error": doc.get("last_error")},
                )
                if ident is not None:
                    recipients, error = await self._mail(tenant_id, vendor_id, since, doc.get("last_error"), False)
                    await self.log.sent(ident, at=self.clock(), recipients=recipients, error=error)
            elif state == "ok" and episode is not None and await self.log.close(episode["_id"], at=now):
                recipients, error = await self._mail(tenant_id, vendor_id, episode["began_at"], None, True)
                await self.log.recovery_sent(episode["_id"], at=self.clock(), recipients=recipients, error=error)

    async def _mail(
        self, tenant_id: str, vendor_id: str, since: datetime, code: str | None, recovered: bool
    ) -> tuple[int, str | None]:
        """Mail the organiser's contacts; (how many, the failure's type name or None)."""
        tenant = await self.tenants.get(tenant_id) or {}
        contacts = [str(a) for a in tenant.get("notify_emails") or []]
        if self.mailer is None or not contacts:
            return 0, None
        vendor = self.catalogue.get(vendor_id)
        vendor_name = vendor.display_name if vendor else vendor_id
        tenant_name = str(tenant.get("display_name") or tenant_id)
        page = f"{self.public_url}/ui/t/{tenant_id}/vendors/{vendor_id}" if self.public_url else None
        if recovered:
            subject = f"skolsynk: leveranserna till {vendor_name} fungerar igen"
            body = (
                f"Leveranserna från {tenant_name} till {vendor_name} fungerar igen (de misslyckades från "
                f"{_when(since)}). Ändringarna som väntade har skickats.\n"
                + (f"\n{page}\n" if page else "")
                + f"\n---\nDeliveries from {tenant_name} to {vendor_name} work again (they failed from {_when(since)})."
                " The changes that waited have been sent.\n"
            )
        else:
            text = error_text(code)
            subject = f"skolsynk: leveranserna till {vendor_name} misslyckas"
            body = (
                f"Leveranserna från {tenant_name} till {vendor_name} har misslyckats sedan {_when(since)}.\n"
                f"Senaste felet: {text.sv if text else 'okänt'}\n"
                "Ändringarna väntar och skickas automatiskt när leverantören svarar igen; inget går förlorat. "
                "Kontakta leverantören om felet består.\n"
                + (f"\n{page}\n" if page else "")
                + f"\n---\nDeliveries from {tenant_name} to {vendor_name} have been failing since {_when(since)}.\n"
                f"Last error: {text.en if text else 'unknown'}\n"
                "The changes wait and are sent as soon as the vendor answers; nothing is lost.\n"
            )
        try:
            await self.mailer.send(contacts, subject, body)
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as error:
            log.warning("notification_not_sent", tenant_id=tenant_id, vendor_id=vendor_id, error=type(error).__name__)
            return 0, type(error).__name__
        log.info("notification_sent", tenant_id=tenant_id, vendor_id=vendor_id, recovered=recovered)
        return len(contacts), None

    async def run_forever(self, interval_seconds: float) -> None:
        while True:
            await asyncio.sleep(interval_seconds)
            try:
                await self.check()
            except Exception:  # the store is away for a moment: the next check tries again
                log.warning("notification_check_failed", exc_info=True)
