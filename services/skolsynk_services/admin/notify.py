"""E-mail notifications to an organiser's contacts, once per episode and once more when it ends: its
deliveries to a vendor failing for longer than ``SKOLSYNK_DELIVERY_FAILING_MINUTES`` (until they work again),
and mass-deletion holds waiting for a decision (until decided).

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
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from typing import Any

import aiohttp
import aiosmtplib

from skolsynk.domain.delivery_errors import error_text
from skolsynk.domain.source_errors import hint_for
from skolsynk.logging import get_logger
from skolsynk.storage import Database
from skolsynk.storage.delivery_health import DeliveryHealth, state_of
from skolsynk.storage.erasures import ErasureLedger
from skolsynk.storage.holds import HoldStore
from skolsynk.storage.notifications import NotificationLog
from skolsynk.storage.runs import SourceRuns
from skolsynk.storage.sources import SecretBox, SourceStore
from skolsynk.storage.subscriptions import SubscriptionStore
from skolsynk.storage.vendors import CatalogueFollower
from skolsynk_services.admin.stores import LifecycleStore, TenantStore
from skolsynk_services.admin.ui.catalogue import plural, section, text
from skolsynk_services.admin.ui.texts import source_error_hint

log = get_logger(__name__)


@dataclass(frozen=True)
class Template:
    """A notification's subject and body, Swedish then English (``str.format`` fields: ``tenant``,
    ``vendor``, ``since``, ``count``, ``deletions`` and ``deletions_en`` (the count with its noun, in Swedish and in
    English: "1 deletion", "2 deletions") and the kind's own)."""

    subject: str
    sv: str
    en: str


DELIVERY_FAILING = "delivery_failing"
HOLDS_WAITING = "holds_waiting"
SOURCE_FAILING = "source_failing"
DELETIONS_OVERDUE = "deletions_overdue"
GATE_OPEN = "gate_open"
#: Episodes whose end is news worth a mail (a gate closes by going live: the admin did that themselves).
ENDS_MAILED = frozenset({"delivery_failing", "holds_waiting", "source_failing", "deletions_overdue"})


#: The English half of each mail, by (kind, whether the episode ended); the Swedish half (subject and body)
#: is the catalogue's ``notifications.<kind>.opened`` / ``.closed``.
ENGLISH: dict[tuple[str, bool], str] = {
    ("delivery_failing", False): (
        "Deliveries from {tenant} to {vendor} have been failing since {since}.\nLast error: {error_en}\n"
        "The changes wait and are sent as soon as the vendor answers; nothing is lost.{support_en}\n"
    ),
    ("delivery_failing", True): (
        "Deliveries from {tenant} to {vendor} work again (they failed from {since}). "
        "The changes that waited have been sent.\n"
    ),
    ("source_failing", False): (
        "Reading the source {vendor} of {tenant} has been failing since {since}. Nothing is removed at vendors "
        "meanwhile, but changes in the source do not reach them.\nErrors: {codes}\n{fixes_en}"
    ),
    ("source_failing", True): "Reading the source {vendor} of {tenant} works again (it failed from {since}).\n",
    ("deletions_overdue", False): (
        "{deletions_en} of {tenant} at {vendor} were not confirmed in time (since {since}). skolsynk keeps "
        "retrying; the GDPR page has the evidence for the vendor.\n"
    ),
    (
        "deletions_overdue",
        True,
    ): "Every overdue deletion of {tenant} at {vendor} has now been confirmed by the vendor.\n",
    ("holds_waiting", False): (
        "skolsynk holds {deletions_en} of {tenant} at {vendor} since {since} (more persons than usual would "
        "be removed at once). Nothing is deleted until someone decides in skolsynk.\n"
    ),
    ("holds_waiting", True): "The held deletions of {tenant} at {vendor} (since {since}) have been decided.\n",
    ("gate_open", False): (
        "The test period of {tenant} at {vendor} is over ({since}). Review the test report if not done yet; the "
        "subscription can then go live.\n"
    ),
}
MESSAGES: dict[tuple[str, bool], Template] = {
    (kind, ended): Template(words["subject"], words["body"], english)
    for (kind, ended), english in ENGLISH.items()
    for words in [section(f"notifications.{kind}.{'closed' if ended else 'opened'}")]
}


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
        promotion_hours: float = 24.0,
        box: SecretBox | None = None,
    ) -> None:
        self.health = DeliveryHealth(db)
        self.log = NotificationLog(db)
        self.tenants = TenantStore(db)
        self.holds = HoldStore(db)
        self.runs = SourceRuns(db)
        self.box = box or SecretBox(None)
        self.erasures = ErasureLedger(db)
        self.subscriptions = SubscriptionStore(db)
        self.lifecycle = LifecycleStore(db)
        self.promotion_hours = promotion_hours
        self.sources = SourceStore(db, SecretBox(None))
        self.catalogue = catalogue
        self.mailer = mailer
        self.failing_after = failing_after
        self.public_url = public_url
        self.clock = clock

    async def check(self) -> None:
        """Open and mail the episodes of problems that began, close and mail those that ended: deliveries
        failing (per organiser and vendor) and mass-deletion holds waiting for a decision."""
        now = self.clock()
        failing: dict[tuple[str, str], tuple[datetime, dict[str, Any]]] = {}
        for doc in await self.health.all():
            if state_of(doc, now=now, failing_after=self.failing_after) == "failing":
                key = (str(doc["tenant_id"]), str(doc["vendor_id"]))
                failing[key] = (doc["since"], {"last_error": doc.get("last_error")})
        await self._episodes(DELIVERY_FAILING, failing, now)
        holds = {
            (str(d["_id"]["t"]), str(d["_id"]["v"])): (d["oldest"], {"holds": d["n"], "removals": d.get("removals", 0)})
            for d in await self.holds.pending_by_vendor()
            if isinstance(d.get("oldest"), datetime)
        }
        await self._episodes(HOLDS_WAITING, holds, now)
        sources: dict[tuple[str, str], tuple[datetime, dict[str, Any]]] = {}
        for latest in await self.runs.latest_per_source():
            tenant_id, source_id = str(latest["_id"]["t"]), str(latest["_id"]["s"])
            health = await self.runs.health(tenant_id, source_id, now=now, failing_after=self.failing_after)
            if health.state == "failing" and health.failing_since is not None:
                details = {"errors": health.errors, "source_kind": health.source_kind}
                sources[(tenant_id, source_id)] = (health.failing_since, details)
        await self._episodes(SOURCE_FAILING, sources, now)
        overdue = {
            (str(d["_id"]["t"]), str(d["_id"]["v"])): (d["oldest"], {"overdue": d["n"]})
            for d in await self.erasures.overdue_by_vendor()
            if isinstance(d.get("oldest"), datetime)
        }
        await self._episodes(DELETIONS_OVERDUE, overdue, now)
        await self._episodes(GATE_OPEN, await self._open_gates(now), now)

    async def _open_gates(self, now: datetime) -> dict[tuple[str, str], tuple[datetime, dict[str, Any]]]:
        """Subscriptions in test mode whose test period is over: they may go live once reviewed."""
        gates: dict[tuple[str, str], tuple[datetime, dict[str, Any]]] = {}
        for tenant in await self.tenants.list():
            tenant_id = str(tenant["_id"])
            for subscription, _ in await self.subscriptions.for_tenant(tenant_id):
                if not subscription.test_mode or subscription.ended_at is not None:
                    continue
                lifecycle = await self.lifecycle.get(tenant_id, subscription.vendor_id)
                started = lifecycle.get("test_started_at")
                if not isinstance(started, datetime):
                    continue
                started = started if started.tzinfo else started.replace(tzinfo=UTC)
                opened = started + timedelta(hours=self.promotion_hours)
                if opened <= now:
                    gates[(tenant_id, subscription.vendor_id)] = (
                        opened,
                        {"reviewed": bool(lifecycle.get("reviewed_at"))},
                    )
        return gates

    async def _episodes(
        self, kind: str, current: dict[tuple[str, str], tuple[datetime, dict[str, Any]]], now: datetime
    ) -> None:
        """``current``: (tenant, subject) -> (when the problem began, details) of the problems there are now."""
        open_episodes = {(d["tenant_id"], d["subject"]): d for d in await self.log.open_episodes(kind)}
        for (tenant_id, subject), (began_at, details) in current.items():
            if (tenant_id, subject) in open_episodes:
                continue
            ident = await self.log.open(tenant_id, kind, subject, began_at=began_at, at=now, details=details)
            if ident is not None:
                recipients, error = await self._mail(kind, tenant_id, subject, began_at, details, recovered=False)
                await self.log.sent(ident, at=self.clock(), recipients=recipients, error=error)
        for (tenant_id, subject), episode in open_episodes.items():
            if (tenant_id, subject) not in current and await self.log.close(episode["_id"], at=now):
                if kind not in ENDS_MAILED:
                    continue
                recipients, error = await self._mail(
                    kind, tenant_id, subject, episode["began_at"], episode.get("details") or {}, recovered=True
                )
                await self.log.recovery_sent(episode["_id"], at=self.clock(), recipients=recipients, error=error)

    async def _mail(
        self, kind: str, tenant_id: str, vendor_id: str, since: datetime, details: dict[str, Any], *, recovered: bool
    ) -> tuple[int, str | None]:
        """Mail the organiser's contacts (and post to its webhook); (how many mails, the failure's type name
        or None)."""
        tenant = await self.tenants.get(tenant_id) or {}
        await self._post(tenant, kind, vendor_id, since, recovered)
        contacts = [str(a) for a in tenant.get("notify_emails") or []]
        if self.mailer is None or not contacts:
            return 0, None
        if kind == SOURCE_FAILING:
            source = await self.sources.get(tenant_id, vendor_id) or {}
            name = str(source.get("display_name") or vendor_id)
        else:
            vendor = self.catalogue.get(vendor_id)
            name = vendor.display_name if vendor else vendor_id
            support = vendor.support if vendor is not None else None
            if support is not None:  # where the organiser turns (the vendor's desk, from its catalogue entry)
                details = {**details, "support": ", ".join(v for v in (support.email, support.phone, support.url) if v)}
        subject, body = notification_message(
            kind,
            str(tenant.get("display_name") or tenant_id),
            name,
            since,
            details,
            recovered,
        )
        if self.public_url:
            page = {HOLDS_WAITING: "holds", SOURCE_FAILING: "sources", DELETIONS_OVERDUE: "gdpr"}.get(
                kind, f"vendors/{vendor_id}"
            )
            body += f"\n{self.public_url}/ui/t/{tenant_id}/{page}\n"
        try:
            await self.mailer.send(contacts, subject, body)
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as error:
            log.warning("notification_not_sent", tenant_id=tenant_id, kind=kind, error=type(error).__name__)
            return 0, type(error).__name__
        log.info("notification_sent", tenant_id=tenant_id, kind=kind, vendor_id=vendor_id, recovered=recovered)
        return len(contacts), None

    async def _post(self, tenant: dict[str, Any], kind: str, subject: str, since: datetime, resolved: bool) -> None:
        """POST the notification to the organiser's webhook, if it has one: JSON (kind, subject, tenant, since,
        resolved), signed: ``X-Skolsynk-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">`` with
        ``X-Skolsynk-Timestamp`` (epoch seconds), so the receiver can check it and refuse replays. Failures are
        logged; the e-mail goes regardless."""
        url, sealed = tenant.get("notify_webhook_url"), tenant.get("notify_webhook_secret")
        if not url or not sealed:
            return
        try:
            secret = self.box.open(str(sealed))["webhook_secret"]
        except (ValueError, KeyError):
            log.warning("notification_webhook_secret_unavailable", tenant_id=str(tenant.get("_id")))
            return
        body = json.dumps(
            {
                "kind": kind,
                "subject": subject,
                "tenant_id": str(tenant.get("_id")),
                "since": since.isoformat(),
                "resolved": resolved,
            },
            sort_keys=True,
        ).encode()
        timestamp = str(int(time.time()))
        signature = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
        headers = {
            "Content-Type": "application/json",
            "X-Skolsynk-Timestamp": timestamp,
            "X-Skolsynk-Signature": f"sha256={signature}",
        }
        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session,
                session.post(str(url), data=body, headers=headers) as response,
            ):
                ok = response.status < 300
        except (aiohttp.ClientError, TimeoutError):
            ok = False
        log.log(20 if ok else 30, "notification_webhook_posted", tenant_id=str(tenant.get("_id")), kind=kind, ok=ok)

    async def run_forever(self, interval_seconds: float) -> None:
        while True:
            await asyncio.sleep(interval_seconds)
            try:
                await self.check()
            except Exception:  # the store is away for a moment: the next check tries again
                log.warning("notification_check_failed", exc_info=True)


def notification_message(
    kind: str, tenant: str, vendor: str, since: datetime, details: dict[str, Any], recovered: bool
) -> tuple[str, str]:
    """The subject and the body (Swedish, then English) of a notification, from :data:`MESSAGES`."""
    values: dict[str, Any] = {"tenant": tenant, "vendor": vendor, "since": _when(since), "count": 0}
    if kind == DELIVERY_FAILING:
        error = error_text(details.get("last_error"))
        values |= {
            "error_sv": error.sv if error else text("notifications.unknown_error"),
            "error_en": error.en if error else "unknown",
        }
        desk = str(details.get("support") or "")
        values |= {
            "support_sv": " " + text("notifications.support", desk=desk) if desk else "",
            "support_en": f" The vendor's support: {desk}." if desk else "",
        }
    elif kind == SOURCE_FAILING:
        codes = [str(c) for c in details.get("errors") or []]
        source_kind = str(details.get("source_kind") or "")
        swedish = [h for h in (source_error_hint(source_kind, c) for c in codes) if h is not None]
        english = [h for h in (hint_for(source_kind, c) for c in codes) if h is not None]
        values |= {
            "codes": ", ".join(codes) or "-",
            "fixes_sv": "".join(f"- {h.title}: {h.fix}\n" for h in swedish),
            "fixes_en": "".join(f"- {h.title}: {h.fix}\n" for h in english),
        }
    elif kind == DELETIONS_OVERDUE:
        values["count"] = int(details.get("overdue") or 0)
    elif kind == HOLDS_WAITING:
        values["count"] = int(details.get("removals") or 0)
    elif kind == GATE_OPEN:
        values["review"] = text("notifications.reviewed" if details.get("reviewed") else "notifications.review_first")
    values["deletions"] = plural("notifications_deletions", values["count"])
    values["deletions_en"] = f"{values['count']} deletion{'' if values['count'] == 1 else 's'}"
    template = MESSAGES[(kind, recovered)]
    return template.subject.format(**values), (template.sv + "\n---\n" + template.en).format(**values)
