"""The source's ``/subscriptions``: where a source has a public ``webhook_url``, the puller keeps one
subscription there so the source posts a notice to the webhook (:mod:`.webhook`) as soon as its data changes.

SS 12000 (2.0 and 2.1): ``POST /subscriptions`` ``{name, target, resourceTypes: [{"resource": ...}]}`` -> ``201
{id, expires, ...}``; ``PATCH /subscriptions/{id}`` with no body renews it (the source picks the new
``expires``); ``GET`` and ``DELETE /subscriptions/{id}``; ``GET /subscriptions`` lists them (paged). A
subscription the source no longer has (it expired, or the source lost it) is a 404.

* **One per source, kept in the store** (``ss12000_sync_state``, the source's document: ``subscription`` with
  id, target, expiry and when it was made and renewed), so a restart or a second replica finds it instead of
  making another. The calls that change it are made under a short lease in the same document
  (``subscription_lease``), one replica at a time; before creating one, the puller looks through the source's
  list for a subscription to its own target (made by a run that died before storing it) and adopts it, so a
  crash between the source's answer and the store cannot leave a duplicate behind.
* **Renewed well before expiry**: at ``expires - min(renew_before, lifetime / 2)``; between renewals the
  subscription is looked at (``GET``) every ``check_seconds``. A 404 on either (the source lost it, or it
  expired while the puller was down) makes a new one at once. A source without ``PATCH`` (405, 501) has it
  renewed by replacement (a new one, then the old one deleted); one without ``GET /subscriptions/{id}`` is
  simply not looked at between renewals. A changed ``webhook_url`` gets a new
  subscription first, then the old one is deleted, so no change falls between.
* **Removed** when the source loses its ``webhook_url`` (or its webhook) or leaves the registry (removed,
  disabled, or no longer servable): ``DELETE`` (a 404 counts as done).
* **Sources without subscriptions**: a 404, 405 or 501 to ``POST /subscriptions`` means the source does not
  offer them. That is remembered in the store (with the base URL asked) and logged once; the source is asked
  again after ``recheck_seconds`` or when its base URL changes. The schedule keeps it current meanwhile.
* Both spellings the spec uses for ``resourceTypes`` are read: objects ``[{"resource": "Person"}]`` (its
  schema, what the puller sends) and plain strings (its example, with the misspelt ``Organsation``).

The notices themselves carry no authentication in the spec, and a source cannot be told to send a header:
the subscription's target is the source's **notice address**, ``webhook_url`` with a token derived from the
webhook secret appended (:func:`~skolsynk_services.ss12000_puller.webhook.notice_address`), which the
webhook accepts in place of the secret. A new secret gives a new address, so the subscription is replaced.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from pymongo.errors import DuplicateKeyError

from skolsynk.connectors.runs import aware
from skolsynk.connectors.sources.ss12000 import SourceConfig
from skolsynk.logging import get_logger
from skolsynk.storage import Database
from skolsynk.storage.connector_state import SS12000_SYNC_STATE
from skolsynk_services.ss12000_puller.client import NOT_OFFERED, Ss12000Client, Ss12000ReadError
from skolsynk_services.ss12000_puller.mapping import DELETED_TYPES, deleted_types
from skolsynk_services.ss12000_puller.metrics import Ss12000Metrics
from skolsynk_services.ss12000_puller.webhook import notice_address

if TYPE_CHECKING:
    from skolsynk_services.ss12000_puller.connector import Ss12000Connector

log = get_logger(__name__)

#: The types subscribed to: what the puller reads (EndPointsEnum values), and ``Placement`` while a subscription
#: of the organiser asks for placements (:func:`~skolsynk_services.ss12000_puller.mapping.deleted_types`). A
#: subscription stored without its types was made with these.
RESOURCE_TYPES: tuple[str, ...] = DELETED_TYPES
#: The spec's own ``POST /subscriptions`` example misspells this one.
MISSPELT: Mapping[str, str] = {"Organsation": "Organisation"}
#: How long the calls of one pass may hold the lease (a replica that dies frees it after this).
LEASE_SECONDS = 600.0
#: The shortest wait between two passes (a source granting a very short lifetime must not make a hot loop).
MIN_WAIT_SECONDS = 1.0
#: Pages of the source's subscription list looked through for one to adopt.
MAX_LIST_PAGES = 20
#: A subscription the source answered without ``expires`` is taken to last this long.
DEFAULT_LIFETIME = timedelta(days=1)
NOT_OFFERED_CODES = frozenset(f"http_{status}" for status in NOT_OFFERED)


def resource_types(raw: Any) -> list[str]:
    """A subscription's ``resourceTypes`` in either spelling (objects or strings, ``Organsation`` taken as
    ``Organisation``) as names; what is neither is left out."""
    names: list[str] = []
    for item in raw if isinstance(raw, list) else []:
        value = item.get("resource") if isinstance(item, Mapping) else item
        if isinstance(value, str):
            names.append(MISSPELT.get(value, value))
    return names


def parse_expiry(value: Any) -> datetime | None:
    """The answer's ``expires`` (RFC 3339; a zone-less time is taken as UTC); None when missing or malformed."""
    if not isinstance(value, str):
        return None
    try:
        return aware(datetime.fromisoformat(value.replace("Z", "+00:00")))
    except ValueError:
        return None


@dataclass(frozen=True)
class Subscription:
    """The source's subscription as the puller keeps it: ids and times only."""

    id: str
    target: str
    expires_at: datetime
    renewed_at: datetime
    #: What the source notifies about (``resourceTypes``).
    resource_types: tuple[str, ...] = RESOURCE_TYPES

    def renew_at(self, renew_before: timedelta) -> datetime:
        """When to renew: ``renew_before`` ahead of expiry, or halfway through a shorter lifetime."""
        lifetime = max(self.expires_at - self.renewed_at, timedelta(0))
        return self.expires_at - min(renew_before, lifetime / 2)

    def document(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "target": self.target,
            "expires_at": self.expires_at,
            "renewed_at": self.renewed_at,
            "resource_types": list(self.resource_types),
        }

    def notifies_of(self, types: tuple[str, ...]) -> bool:
        return set(self.resource_types) == set(types)

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> Subscription | None:
        doc = state.get("subscription")
        if not isinstance(doc, Mapping):
            return None
        try:
            return cls(
                id=str(doc["id"]),
                target=str(doc["target"]),
                expires_at=aware(doc["expires_at"]),
                renewed_at=aware(doc["renewed_at"]),
                resource_types=tuple(str(t) for t in doc.get("resource_types") or RESOURCE_TYPES),
            )
        except (KeyError, TypeError, AttributeError):
            return None

    @classmethod
    def from_answer(
        cls,
        answer: Any,
        *,
        target: str,
        now: datetime,
        asked: tuple[str, ...],
        fallback: datetime | None = None,
    ) -> Subscription:
        """The source's answer (a ``Subscription``; its ``resourceTypes``, or ``asked`` when it does not say);
        :class:`Ss12000ReadError` when it has no id."""
        if not isinstance(answer, Mapping) or not isinstance(answer.get("id"), str) or not answer["id"]:
            raise Ss12000ReadError("invalid_subscription")
        expires = parse_expiry(answer.get("expires")) or fallback or now + DEFAULT_LIFETIME
        types = tuple(resource_types(answer.get("resourceTypes"))) or asked
        return cls(id=answer["id"], target=target, expires_at=expires, renewed_at=now, resource_types=types)


class SubscriptionStore:
    """The subscription fields of the sources' documents in ``ss12000_sync_state`` (with the run state)."""

    def __init__(self, db: Database) -> None:
        self.collection = db[SS12000_SYNC_STATE]

    @staticmethod
    def _ids(source: SourceConfig) -> dict[str, Any]:
        return {"tenant_id": source.tenant_id, "source_id": source.source_id}

    async def get(self, source: SourceConfig) -> dict[str, Any]:
        return await self.collection.find_one({"_id": source.key}) or {}

    async def save(self, source: SourceConfig, subscription: Subscription) -> None:
        await self.collection.update_one(
            {"_id": source.key},
            {
                "$set": {**self._ids(source), "subscription": subscription.document()},
                "$unset": {"subscriptions_not_offered": ""},
            },
            upsert=True,
        )

    async def forget(self, source: SourceConfig, subscription_id: str) -> None:
        await self.collection.update_one(
            {"_id": source.key, "subscription.id": subscription_id}, {"$unset": {"subscription": ""}}
        )

    async def not_offered(self, source: SourceConfig, what: str, *, at: datetime) -> None:
        """Remember that the source answered ``what`` (``subscriptions``, ``log``) as not offered."""
        marker = {"at": at, "base_url": source.base_url}
        await self.collection.update_one(
            {"_id": source.key}, {"$set": {**self._ids(source), f"{what}_not_offered": marker}}, upsert=True
        )

    async def offered(self, source: SourceConfig, what: str) -> None:
        await self.collection.update_one({"_id": source.key}, {"$unset": {f"{what}_not_offered": ""}})

    async def claim(self, source: SourceConfig, owner: str, *, now: datetime, seconds: float = LEASE_SECONDS) -> bool:
        """The lease on changing the source's subscription, for ``owner``: False while another holds it."""
        lease = {"owner": owner, "until": now + timedelta(seconds=seconds)}
        free = {"$or": [{"subscription_lease.until": {"$lt": now}}, {"subscription_lease.owner": owner},
                        {"subscription_lease": {"$exists": False}}]}  # fmt: skip
        result = await self.collection.update_one(
            {"_id": source.key, **free}, {"$set": {**self._ids(source), "subscription_lease": lease}}
        )
        if result.matched_count:
            return True
        if await self.collection.find_one({"_id": source.key}, {"_id": 1}) is not None:
            return False  # held by another
        try:  # no document yet: the first to insert it holds the lease
            await self.collection.insert_one({"_id": source.key, **self._ids(source), "subscription_lease": lease})
        except DuplicateKeyError:
            return False  # another replica was first
        return True

    async def release(self, source: SourceConfig, owner: str) -> None:
        await self.collection.update_one(
            {"_id": source.key, "subscription_lease.owner": owner}, {"$unset": {"subscription_lease": ""}}
        )


def not_offered_recently(
    state: Mapping[str, Any], what: str, source: SourceConfig, now: datetime, recheck: timedelta
) -> datetime | None:
    """When to ask again, if the source answered ``what`` as not offered (at its current base URL) less than
    ``recheck`` ago; None: ask."""
    marker = state.get(f"{what}_not_offered")
    if not isinstance(marker, Mapping) or marker.get("base_url") != source.base_url:
        return None
    at = marker.get("at")
    if not isinstance(at, datetime):
        return None
    again = aware(at) + recheck
    return again if again > now else None


class SubscriptionKeeper:
    """The subscription of every served source that has a ``webhook_url``."""

    def __init__(
        self,
        connector: Ss12000Connector,
        store: SubscriptionStore,
        metrics: Ss12000Metrics,
        *,
        renew_before_seconds: float,
        check_seconds: float,
        recheck_seconds: float,
        serving: Callable[[], Awaitable[object]] | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        """``serving`` returns once the webhook accepts requests: nothing is subscribed before."""
        self.connector = connector
        self.store = store
        self.metrics = metrics
        self.renew_before = timedelta(seconds=renew_before_seconds)
        self.check_seconds = check_seconds
        self.recheck = timedelta(seconds=recheck_seconds)
        self.serving = serving
        self.sleep = sleep
        self.owner = str(uuid.uuid4())

    def _now(self) -> datetime:
        return self.connector.clock()

    # ------------------------------------------------------------------------------------------
    # the loop

    async def keep(self, source: SourceConfig) -> None:
        """For as long as ``source`` is served: its subscription made, checked and renewed (or removed, when
        it has no ``webhook_url`` any more)."""
        if self.serving is not None:
            await self.serving()
        while True:
            wait = await self.attempt(source)
            if wait is None:
                return
            await self.sleep(wait)

    async def attempt(self, source: SourceConfig) -> float | None:
        """One pass (:meth:`maintain`); a failure is logged with its code and tried again later."""
        try:
            return await self.maintain(source)
        except asyncio.CancelledError:
            raise
        except Ss12000ReadError as error:
            log.warning(
                "ss12000_subscription_failed", tenant_id=source.tenant_id, source_id=source.source_id, code=error.code
            )
        except Exception:
            log.exception("ss12000_subscription_failed", tenant_id=source.tenant_id, source_id=source.source_id)
        return max(MIN_WAIT_SECONDS, min(self.check_seconds, 300.0))

    async def maintain(self, source: SourceConfig) -> float | None:
        """Bring the source's subscription to what its settings say; seconds until the next look (None: nothing
        more to do for this source)."""
        if source.webhook_url is None and Subscription.from_state(await self.store.get(source)) is None:
            return None  # no subscription wanted, none to remove
        if not await self.store.claim(source, self.owner, now=self._now()):
            return max(MIN_WAIT_SECONDS, min(self.check_seconds, 60.0))  # another replica is at it
        try:
            return await self._maintain(source, self.connector.clients[source.key])
        finally:
            await asyncio.shield(self.store.release(source, self.owner))

    async def _maintain(self, source: SourceConfig, client: Ss12000Client) -> float | None:
        state = await self.store.get(source)
        stored = Subscription.from_state(state)
        secret = client.webhook_secret
        target = (
            notice_address(source.webhook_url, secret, source.tenant_id, source.source_id)
            if source.webhook_url is not None and secret
            else None
        )
        if target is None:
            if stored is not None:
                await self._delete(source, client, stored)
            return None
        now = self._now()
        again = not_offered_recently(state, "subscriptions", source, now, self.recheck)
        if again is not None:
            return max(MIN_WAIT_SECONDS, (again - now).total_seconds())
        wanted = await self._wanted_types(source)
        if stored is not None and (stored.target != target or not stored.notifies_of(wanted)):
            reason = "target" if stored.target != target else "resource_types"
            stored = await self._replace(source, client, stored, target, wanted, reason=reason, adopt=True)
        elif stored is None:
            stored = await self._create(source, client, target, wanted)
        else:
            stored = await self._renew_or_check(source, client, stored)
        if stored is None:  # not offered
            return self.recheck.total_seconds()
        until_renewal = (stored.renew_at(self.renew_before) - self._now()).total_seconds()
        return max(MIN_WAIT_SECONDS, min(self.check_seconds, until_renewal))

    async def _wanted_types(self, source: SourceConfig) -> tuple[str, ...]:
        """What the subscription should notify of: what the puller reads, placements only while a subscription
        of the organiser asks for them (asked at every pass, as every run asks)."""
        wanted = self.connector.placements_wanted
        return deleted_types(placements=wanted is not None and await wanted(source.tenant_id))

    # ------------------------------------------------------------------------------------------
    # calls

    def _count(self, operation: str, outcome: str) -> None:
        self.metrics.subscription_operations.labels(operation, outcome).inc()

    async def _create(
        self,
        source: SourceConfig,
        client: Ss12000Client,
        target: str,
        types: tuple[str, ...],
        *,
        adopt: bool = True,
    ) -> Subscription | None:
        """A subscription to ``target`` of ``types``: one the source already has for both (adopted, unless
        ``adopt`` is False), or a new one; None when the source does not offer subscriptions (remembered)."""
        adopted = await self._adopt(source, client, target, types) if adopt else None
        if adopted is not None:
            return adopted
        body = {
            "name": f"skolsynk {source.source_id}",
            "target": target,
            "resourceTypes": [{"resource": name} for name in types],
        }
        now = self._now()
        try:
            answer = await client.send("POST", "subscriptions", body, repeat=False)  # a repeat would make two
        except Ss12000ReadError as error:
            if error.code in NOT_OFFERED_CODES:
                await self.store.not_offered(source, "subscriptions", at=now)
                self._count("create", "not_offered")
                log.info(
                    "ss12000_subscriptions_not_offered",
                    tenant_id=source.tenant_id,
                    source_id=source.source_id,
                    code=error.code,
                    ask_again_in_seconds=self.recheck.total_seconds(),
                )
                return None
            self._count("create", "failed")
            raise
        subscription = Subscription.from_answer(answer, target=target, now=now, asked=types)
        await self.store.save(source, subscription)
        self._count("create", "ok")
        log.info(
            "ss12000_subscription_created",
            tenant_id=source.tenant_id,
            source_id=source.source_id,
            subscription_id=subscription.id,
            expires_at=subscription.expires_at.isoformat(),
        )
        return subscription

    async def _adopt(
        self, source: SourceConfig, client: Ss12000Client, target: str, types: tuple[str, ...]
    ) -> Subscription | None:
        """The source's subscriptions to ``target`` of ``types`` (left by a pass that died before storing its
        answer; one that lists no types is taken to have them): the latest-expiring one is kept and stored, the
        others deleted. Nothing when the list cannot be read."""
        found: list[Subscription] = []
        now = self._now()
        try:
            async for data in client.pages("subscriptions", max_pages=MAX_LIST_PAGES):
                for item in data if isinstance(data, list) else []:
                    if isinstance(item, Mapping) and item.get("target") == target:
                        try:
                            candidate = Subscription.from_answer(item, target=target, now=now, asked=types)
                        except Ss12000ReadError:
                            continue
                        if candidate.notifies_of(types):
                            found.append(candidate)
        except Ss12000ReadError as error:
            log.info(
                "ss12000_subscription_list_unread", tenant_id=source.tenant_id, source_id=source.source_id,
                code=error.code,
            )  # fmt: skip
            return None
        if not found:
            return None
        found.sort(key=lambda s: s.expires_at, reverse=True)
        kept, extra = found[0], found[1:]
        await self.store.save(source, kept)
        self._count("adopt", "ok")
        log.info(
            "ss12000_subscription_adopted",
            tenant_id=source.tenant_id,
            source_id=source.source_id,
            subscription_id=kept.id,
            duplicates=len(extra),
        )
        for duplicate in extra:
            await self._delete(source, client, duplicate, keep_stored=True)
        return kept

    async def _renew_or_check(
        self, source: SourceConfig, client: Ss12000Client, stored: Subscription
    ) -> Subscription | None:
        """Renew when it is time, else look that the source still has it; a new one when it does not."""
        now = self._now()
        renewing = now >= stored.renew_at(self.renew_before)
        operation = "renew" if renewing else "check"
        try:
            if renewing:  # the spec's PATCH has no body: the source picks the new expiry
                answer = await client.send("PATCH", f"subscriptions/{stored.id}")
            else:
                answer = await client.get_json(f"subscriptions/{stored.id}", [])
        except Ss12000ReadError as error:
            if error.code in NOT_OFFERED_CODES - {"http_404"}:
                return await self._without(source, client, stored, operation=operation, code=error.code)
            if error.code != "http_404":
                self._count(operation, "failed")
                raise
            self._count(operation, "lost")
            log.warning(
                "ss12000_subscription_lost",
                tenant_id=source.tenant_id,
                source_id=source.source_id,
                subscription_id=stored.id,
                expired=stored.expires_at <= now,
            )
            await self.store.forget(source, stored.id)
            return await self._create(source, client, stored.target, stored.resource_types)
        if renewing:
            lifetime = max(stored.expires_at - stored.renewed_at, timedelta(seconds=MIN_WAIT_SECONDS))
            answered = Subscription.from_answer(
                answer, target=stored.target, now=now, asked=stored.resource_types, fallback=now + lifetime
            )
            renewed = dataclasses.replace(stored, expires_at=answered.expires_at, renewed_at=now)
        else:  # the source's word on the expiry counts (it may have shortened it)
            expires = parse_expiry(answer.get("expires") if isinstance(answer, Mapping) else None)
            renewed = stored if expires is None else dataclasses.replace(stored, expires_at=expires)
        if renewed != stored:
            await self.store.save(source, renewed)
        self._count(operation, "ok")
        if renewing:
            log.info(
                "ss12000_subscription_renewed",
                tenant_id=source.tenant_id,
                source_id=source.source_id,
                subscription_id=stored.id,
                expires_at=renewed.expires_at.isoformat(),
            )
        return renewed

    async def _without(
        self, source: SourceConfig, client: Ss12000Client, stored: Subscription, *, operation: str, code: str
    ) -> Subscription | None:
        """The source offers subscriptions but not this call (405/501). Without ``GET /subscriptions/{id}`` the
        stored one is taken as it is (the renewal finds out whether the source still has it); without ``PATCH``
        it is renewed by replacement: a new one first, then the old one deleted."""
        self._count(operation, "not_offered")
        if operation == "check":
            return stored
        return await self._replace(
            source,
            client,
            stored,
            stored.target,
            stored.resource_types,
            reason="renew_not_offered",
            adopt=False,
            code=code,
        )

    async def _replace(
        self,
        source: SourceConfig,
        client: Ss12000Client,
        stored: Subscription,
        target: str,
        types: tuple[str, ...],
        *,
        reason: str,
        adopt: bool,
        code: str | None = None,
    ) -> Subscription | None:
        """A new subscription first, then the old one deleted, so no change falls between. ``adopt``: whether one
        found in the source's list will do (not for a renewal by replacement: that would be the old one)."""
        replacement = await self._create(source, client, target, types, adopt=adopt)
        if replacement is not None:
            await self._delete(source, client, stored, keep_stored=True)
            log.info(
                "ss12000_subscription_replaced",
                tenant_id=source.tenant_id,
                source_id=source.source_id,
                subscription_id=replacement.id,
                replaced=stored.id,
                reason=reason,
                code=code,
            )
        return replacement

    async def _delete(
        self, source: SourceConfig, client: Ss12000Client, subscription: Subscription, *, keep_stored: bool = False
    ) -> None:
        """Delete it at the source (a 404: gone already) and, unless ``keep_stored``, from the store."""
        try:
            await client.send("DELETE", f"subscriptions/{subscription.id}")
        except Ss12000ReadError as error:
            if error.code != "http_404":
                self._count("delete", "failed")
                raise
        self._count("delete", "ok")
        if not keep_stored:
            await self.store.forget(source, subscription.id)
        log.info(
            "ss12000_subscription_deleted",
            tenant_id=source.tenant_id,
            source_id=source.source_id,
            subscription_id=subscription.id,
        )

    async def remove(self, source: SourceConfig, *, timeout_seconds: float = 30.0) -> None:
        """The source leaves the registry: delete its subscription at the source (logged when that fails: it
        then expires there). Called while its client is still open."""
        client = self.connector.clients.get(source.key)
        if client is None or Subscription.from_state(await self.store.get(source)) is None:
            return
        try:
            async with asyncio.timeout(timeout_seconds):
                if not await self.store.claim(source, self.owner, now=self._now()):
                    return  # another replica is at it
                try:
                    stored = Subscription.from_state(await self.store.get(source))
                    if stored is not None:
                        await self._delete(source, client, stored)
                finally:
                    await asyncio.shield(self.store.release(source, self.owner))
        except (Ss12000ReadError, TimeoutError) as error:
            log.warning(
                "ss12000_subscription_delete_failed",
                tenant_id=source.tenant_id,
                source_id=source.source_id,
                code=getattr(error, "code", "timeout"),
            )
