"""Directory push notifications (``users.watch``) as a trigger, where the operator exposes a webhook.

Google's Directory API has no delta, and its search index can lag: skolsynk reads whole snapshots on a
schedule (``full_interval_seconds``) and, with the Reports API, early after admin events. Push
notifications are the fastest trigger Google offers
(developers.google.com/admin-sdk/directory/v1/guides/push): where the operator sets
``SKOLSYNK_GOOGLE_WEBHOOK_URL`` (an HTTPS address that reaches this connector's webhook port), every
served source with ``watch.enabled`` keeps one notification channel per event (:data:`EVENTS`) open, and a
notification triggers a full run of that source, merged with any run already waiting.

* **Channels** (``users.watch?customer=…&event=…``, body ``{"id", "type": "web_hook", "address", "token",
  "params": {"ttl"}}``): the id is a fresh UUID, the token a fresh random secret of which only the SHA-256
  is stored (``google_watch_channels``). Google answers with the channel's ``resourceId`` and
  ``expiration`` (epoch milliseconds). A channel is renewed :data:`RENEW_MARGIN_SECONDS` before it expires:
  a new one is opened first, then the old one stopped (``channels.stop``), so no change falls between. A
  channel opened for another webhook address, a duplicate, or one about to expire is replaced the same
  way. A source whose watch is turned off has its channels stopped. If opening fails (a webhook Google
  refuses, missing rights), the failure is logged with its code and tried again after
  ``failed_retry_seconds``: the schedule keeps running, so nothing is lost but speed.
* **Notifications** (``POST /google/notifications``): Google sends ``X-Goog-Channel-ID``,
  ``X-Goog-Channel-Token``, ``X-Goog-Resource-State`` (``sync`` when a channel opens, then the event) and
  the changed user as the body. The body is personal data: it is read and dropped, never logged or
  stored; the run reads the directory itself. An unknown channel or a wrong token is refused (403, the
  same answer for both); a channel of a source no longer served is acknowledged and ignored (it expires).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from aiohttp import web

from skolsynk.connectors.scheduling import UnknownSource
from skolsynk.connectors.sources.google import SourceConfig
from skolsynk.logging import get_logger
from skolsynk.storage import Database, IndexSpec
from skolsynk.storage.connector_state import GOOGLE_WATCH_CHANNELS
from skolsynk_services.google_connector.auth import GoogleReadError, attempt
from skolsynk_services.google_connector.metrics import GoogleMetrics

if TYPE_CHECKING:
    from skolsynk_services.google_connector.connector import GoogleConnector

log = get_logger(__name__)

#: The user events watched (``makeAdmin`` changes nothing skolsynk publishes).
EVENTS: tuple[str, ...] = ("add", "delete", "update", "undelete")
NOTIFY_PATH = "/google/notifications"
#: A channel is replaced this long before it expires.
RENEW_MARGIN_SECONDS = 600.0
#: How long to wait at most before looking at the channels again (and at least).
MAX_CHECK_SECONDS, MIN_CHECK_SECONDS = 3600.0, 30.0
MAX_BODY_BYTES = 64 * 1024

INDEXES = [IndexSpec(GOOGLE_WATCH_CHANNELS, (("tenant_id", 1), ("source_id", 1)), "tenant_source")]


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class WatchChannel:
    """One open notification channel (no secret: the token's hash only)."""

    channel_id: str
    tenant_id: str
    source_id: str
    event: str
    resource_id: str
    token_sha256: str
    address: str
    expires_at: datetime

    def document(self) -> dict[str, Any]:
        return {
            "_id": self.channel_id,
            "tenant_id": self.tenant_id,
            "source_id": self.source_id,
            "event": self.event,
            "resource_id": self.resource_id,
            "token_sha256": self.token_sha256,
            "address": self.address,
            "expires_at": self.expires_at,
        }

    @classmethod
    def from_document(cls, doc: dict[str, Any]) -> WatchChannel:
        expires = doc["expires_at"]
        return cls(
            channel_id=str(doc["_id"]),
            tenant_id=str(doc["tenant_id"]),
            source_id=str(doc["source_id"]),
            event=str(doc["event"]),
            resource_id=str(doc["resource_id"]),
            token_sha256=str(doc["token_sha256"]),
            address=str(doc["address"]),
            expires_at=expires if expires.tzinfo else expires.replace(tzinfo=UTC),
        )


class WatchChannelStore:
    """``google_watch_channels``: one document per open channel."""

    def __init__(self, db: Database) -> None:
        self.collection = db[GOOGLE_WATCH_CHANNELS]

    async def of_source(self, source: SourceConfig) -> list[WatchChannel]:
        cursor = self.collection.find({"tenant_id": source.tenant_id, "source_id": source.source_id})
        return [WatchChannel.from_document(doc) async for doc in cursor]

    async def get(self, channel_id: str) -> WatchChannel | None:
        doc = await self.collection.find_one({"_id": channel_id})
        return WatchChannel.from_document(doc) if doc else None

    async def save(self, channel: WatchChannel) -> None:
        await self.collection.replace_one({"_id": channel.channel_id}, channel.document(), upsert=True)

    async def delete(self, channel_id: str) -> None:
        await self.collection.delete_one({"_id": channel_id})


def _expiry(answer: dict[str, Any], fallback: datetime) -> datetime:
    """The channel's ``expiration`` (epoch milliseconds, a string); ``fallback`` when Google sent none."""
    try:
        return datetime.fromtimestamp(int(answer["expiration"]) / 1000, tz=UTC)
    except (KeyError, TypeError, ValueError, OverflowError):
        return fallback


class DirectoryWatch:
    """The channels of every watched source, and the webhook that turns notifications into runs."""

    def __init__(
        self,
        connector: GoogleConnector,
        store: WatchChannelStore,
        *,
        address: str,
        ttl_seconds: int,
        metrics: GoogleMetrics,
        clock: Callable[[], datetime],
        serving: Callable[[], Awaitable[object]] | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        """``serving`` returns once the webhook accepts requests: no channel is opened before (Google posts
        the ``sync`` message at once)."""
        self.connector = connector
        self.store = store
        self.address = address
        self.ttl_seconds = ttl_seconds
        self.metrics = metrics
        self.clock = clock
        self.serving = serving
        self.sleep = sleep

    # ------------------------------------------------------------------------------------------
    # channels

    async def open(self, source: SourceConfig, event: str) -> WatchChannel:
        """A new channel for ``event``. It is stored before Google is asked (Google posts ``sync``, and may
        post a change, before its answer arrives), without a resource id until the answer."""
        token = secrets.token_urlsafe(32)
        pending = WatchChannel(
            channel_id=str(uuid.uuid4()),
            tenant_id=source.tenant_id,
            source_id=source.source_id,
            event=event,
            resource_id="",
            token_sha256=_token_hash(token),
            address=self.address,
            expires_at=self.clock() + timedelta(seconds=self.ttl_seconds),
        )
        await self.store.save(pending)
        try:
            answer = await self.connector.clients[source.key].watch_users(
                event, channel_id=pending.channel_id, address=self.address, token=token, ttl_seconds=self.ttl_seconds
            )
            resource_id = answer.get("resourceId")
            if not isinstance(resource_id, str) or not resource_id:
                raise GoogleReadError("invalid_channel")
        except BaseException:
            self.metrics.watch_operations.labels("open", "failed").inc()
            await asyncio.shield(self.store.delete(pending.channel_id))
            raise
        channel = replace(pending, resource_id=resource_id, expires_at=_expiry(answer, pending.expires_at))
        await self.store.save(channel)
        self.metrics.watch_operations.labels("open", "ok").inc()
        log.info(
            "google_watch_channel_opened",
            tenant_id=source.tenant_id,
            source_id=source.source_id,
            watched_event=event,
            channel_id=channel.channel_id,
            expires_at=channel.expires_at.isoformat(),
        )
        return channel

    async def close(self, source: SourceConfig, channel: WatchChannel) -> None:
        """Stop the channel at Google (a failure is logged: the channel then simply expires) and forget it."""
        client = self.connector.clients.get(source.key)
        try:
            if client is not None and channel.resource_id:  # without one, Google never confirmed it
                await client.stop_channel(channel.channel_id, channel.resource_id)
            self.metrics.watch_operations.labels("stop", "ok").inc()
        except GoogleReadError as error:
            self.metrics.watch_operations.labels("stop", "failed").inc()
            log.warning(
                "google_watch_stop_failed",
                tenant_id=source.tenant_id,
                source_id=source.source_id,
                channel_id=channel.channel_id,
                code=error.qualified("channels.stop"),
            )
        await self.store.delete(channel.channel_id)

    async def refresh(self, source: SourceConfig) -> datetime:
        """Open a channel for every event that has none fit to keep, then stop what they replace; when to
        look again."""
        soon = self.clock() + timedelta(seconds=RENEW_MARGIN_SECONDS)
        kept: dict[str, WatchChannel] = {}
        replaced: list[WatchChannel] = []
        for channel in sorted(await self.store.of_source(source), key=lambda c: c.expires_at, reverse=True):
            fit = (
                channel.address == self.address
                and channel.event in EVENTS
                and channel.expires_at > soon
                and bool(channel.resource_id)  # an answer that never came (a crash while opening)
            )
            if fit and channel.event not in kept:
                kept[channel.event] = channel
            else:
                replaced.append(channel)
        for event in EVENTS:
            if event not in kept:
                kept[event] = await self.open(source, event)
        for channel in replaced:
            await self.close(source, channel)
        return min(c.expires_at for c in kept.values()) - timedelta(seconds=RENEW_MARGIN_SECONDS)

    async def keep(self, source: SourceConfig) -> None:
        """Forever (while the source is served): its channels open and renewed."""
        if self.serving is not None:
            await self.serving()
        while True:
            renew_at = await attempt(source, "google_watch_failed", "users.watch", lambda: self.refresh(source))
            if renew_at is None:
                delay = source.failed_retry_seconds
            else:
                delay = max(MIN_CHECK_SECONDS, min(MAX_CHECK_SECONDS, (renew_at - self.clock()).total_seconds()))
            await self.sleep(delay)

    async def stop_all(self, source: SourceConfig) -> None:
        """Stop every channel of ``source`` (its watch was turned off)."""
        for channel in await self.store.of_source(source):
            await self.close(source, channel)

    # ------------------------------------------------------------------------------------------
    # the webhook

    def _refused(self, reason: str) -> web.Response:
        self.metrics.watch_notifications.labels("none", "refused").inc()
        return web.json_response({"code": "forbidden", "message": reason}, status=403)

    async def notification(self, request: web.Request) -> web.Response:
        await request.read()  # the changed user: personal data, dropped unread
        channel_id = request.headers.get("X-Goog-Channel-ID", "")
        state = request.headers.get("X-Goog-Resource-State", "")
        if not channel_id or not state:
            return web.json_response(
                {"code": "invalid_notification", "message": "X-Goog-Channel-ID and X-Goog-Resource-State are required"},
                status=400,
            )
        channel = await self.store.get(channel_id)
        presented = _token_hash(request.headers.get("X-Goog-Channel-Token", ""))
        if channel is None or not hmac.compare_digest(presented, channel.token_sha256):
            log.warning("google_watch_notification_refused", channel_known=channel is not None)
            return self._refused("unknown channel or token")
        label = state if state in (*EVENTS, "sync") else "other"
        try:
            source = self.connector.source(channel.tenant_id, channel.source_id)
        except UnknownSource:
            self.metrics.watch_notifications.labels(label, "ignored").inc()
            return web.json_response({"status": "ignored"})
        if state == "sync":
            self.metrics.watch_notifications.labels(label, "sync").inc()
            return web.json_response({"status": "ok"})
        queued = self.connector.trigger(source, reason="watch")
        self.metrics.watch_notifications.labels(label, "triggered" if queued else "merged").inc()
        log.info(
            "google_watch_notification",
            tenant_id=source.tenant_id,
            source_id=source.source_id,
            state=label,
            message_number=request.headers.get("X-Goog-Message-Number", "")[:20],
            run_queued=queued,
        )
        return web.json_response({"status": "accepted"})


def make_webhook_app(watch: DirectoryWatch) -> web.Application:
    """The webhook Google posts notifications to (``NOTIFY_PATH``)."""
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app.router.add_post(NOTIFY_PATH, watch.notification)
    return app
