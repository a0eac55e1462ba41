"""The fake SS 12000 API's ``/subscriptions`` and ``/log`` (:class:`FakeSubscriptions`, the attribute
``subscriptions`` of :class:`~skolsynk_testkit.fakes.ss12000_api.FakeSs12000Api`).

Built from the 2.1 and 2.0 OpenAPI descriptions (``/subscriptions``, ``/subscriptions/{id}``, ``/log/``) and
``/work/shared/ref/ss12000-notes.md`` sections 7, 8 and 10; no third-party code. Behaviour:

* ``POST /subscriptions`` ``{name, target, resourceTypes}`` -> ``201`` with ``id`` and ``expires`` (now plus
  ``lifetime_seconds``). ``resourceTypes`` in either of the spec's spellings: objects ``[{"resource": "Person"}]``
  (the schema) or plain strings ``["Person"]`` (the spec's example, which also misspells ``Organsation``: taken
  as ``Organisation``); the answer always has objects. Anything else is a 400.
* ``GET /subscriptions`` (paged with ``limit`` / ``pageToken``), ``GET /subscriptions/{id}``, ``PATCH
  /subscriptions/{id}`` (renew: no body, the fake picks ``expires`` = now plus ``lifetime_seconds``; a body is
  ignored) and ``DELETE /subscriptions/{id}`` (``204``). An id that is no UUID is a 400, one the fake does not
  have (never had, deleted, :meth:`FakeSubscriptions.forget`-ten or expired) a 404.
* An expired subscription is gone: no notices, 404 on every call, not listed.
* **Notices**: every change to the fake's data (``put``, ``delete``, and so ``load_records`` and
  ``apply_changes``) is noted, and shortly after (changes within :attr:`FakeSubscriptions.batch_seconds` make
  one notice, as the spec allows) every live subscription whose ``resourceTypes`` name a changed type (or any,
  for a deletion) gets ``POST <target>`` with ``{"modifiedEntites": [...], "deletedEntities": bool}`` (the
  spec's key; :attr:`FakeSubscriptions.notice_key` switches to Skolverket's ``modifiedEntities``) and the
  :attr:`FakeSubscriptions.notify_headers` (none by default: the spec defines no authentication of notices,
  which is why the puller subscribes with its notice address; a test may add what a proxy would).
  :attr:`FakeSubscriptions.notices` records each delivery.
* ``POST /log/`` (and ``/log``) a ``LogEntry`` (``message`` and ``severityLevel`` required, the enums checked)
  -> ``201``; :attr:`FakeSubscriptions.log_entries` keeps them.
* Not offered: :attr:`FakeSubscriptions.offered` / :attr:`FakeSubscriptions.log_offered` ``False`` make every
  such call answer :attr:`FakeSubscriptions.unsupported_status` (404, or 405 / 501);
  :attr:`FakeSubscriptions.renew_offered` ``False`` only the ``PATCH``.

Authentication is the fake API's (token, API key); its injected faults apply to the data endpoints only.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final

import aiohttp
from aiohttp import web

if TYPE_CHECKING:
    from skolsynk_testkit.fakes.ss12000_api import FakeSs12000Api

__all__ = ["END_POINTS", "FakeSubscription", "FakeSubscriptions", "NoticeRecord"]

#: EndPointsEnum (2.0 ``Code_ObjectType``, 2.1 ``EndPointsEnum``: the same values).
END_POINTS: Final[frozenset[str]] = frozenset(
    {
        "Absence", "AttendanceEvent", "Attendance", "Grade", "CalendarEvent", "AttendanceSchedule", "Resource",
        "Room", "Activity", "Duty", "Placement", "StudyPlan", "Programme", "Syllabus", "SchoolUnitOffering",
        "Group", "Person", "Organisation",
    }
)  # fmt: skip
#: The misspelling of the spec's own ``POST /subscriptions`` example.
MISSPELT: Final[dict[str, str]] = {"Organsation": "Organisation"}
SEVERITIES: Final = ("Info", "Warning", "Error")
#: The fake's collections as EndPointsEnum values.
COLLECTION_TYPES: Final[dict[str, str]] = {
    "organisations": "Organisation",
    "persons": "Person",
    "duties": "Duty",
    "groups": "Group",
    "syllabuses": "Syllabus",
    "activities": "Activity",
    "placements": "Placement",
}


@dataclass
class FakeSubscription:
    id: str
    name: str
    target: str
    resource_types: list[str]
    expires: datetime

    def document(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "target": self.target,
            "resourceTypes": [{"resource": t} for t in self.resource_types],
            "expires": self.expires.isoformat().replace("+00:00", "Z"),
        }


@dataclass(frozen=True)
class NoticeRecord:
    """One notice the fake posted: to which subscription, what it said, the webhook's status (0: no answer)."""

    subscription_id: str
    modified: tuple[str, ...]
    deleted: bool
    status: int


@dataclass
class _Changes:
    modified: set[str] = field(default_factory=set)
    deleted: bool = False


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"code": code, "message": message}, status=status)


def resource_types(raw: Any) -> list[str] | None:
    """``resourceTypes`` in either spelling as EndPointsEnum values (order kept, no repeats); None: not valid."""
    if not isinstance(raw, list) or not raw:
        return None
    types: list[str] = []
    for item in raw:
        value = item.get("resource") if isinstance(item, Mapping) else item
        value = MISSPELT.get(value, value) if isinstance(value, str) else value
        if value not in END_POINTS:
            return None
        if value not in types:
            types.append(value)
    return types


class FakeSubscriptions:
    """``/subscriptions`` and ``/log`` of one fake SS 12000 API; see the module docstring."""

    def __init__(
        self,
        api: FakeSs12000Api,
        *,
        lifetime_seconds: float = 90 * 86400.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.api = api
        self.lifetime_seconds = lifetime_seconds
        self.clock = clock
        self.offered = True
        self.log_offered = True
        #: False: ``PATCH /subscriptions/{id}`` answers :attr:`unsupported_status` (renewal not offered).
        self.renew_offered = True
        self.unsupported_status = 404
        self.notice_key = "modifiedEntites"
        self.notify_headers: dict[str, str] = {}
        self.batch_seconds = 0.05
        self.subscriptions: dict[str, FakeSubscription] = {}
        self.log_entries: list[dict[str, Any]] = []
        self.notices: list[NoticeRecord] = []
        self._changes = _Changes()
        self._sender: asyncio.Task[None] | None = None
        self._cursors: dict[str, int] = {}
        self._watch_data(api)

    # ------------------------------------------------------------------------------------------
    # what tests do

    def live(self) -> list[FakeSubscription]:
        """The subscriptions that have not expired (expired ones are dropped)."""
        now = self.clock()
        for sid in [sid for sid, s in self.subscriptions.items() if s.expires <= now]:
            del self.subscriptions[sid]
        return list(self.subscriptions.values())

    def forget(self, subscription_id: str | None = None) -> None:
        """The source loses a subscription (every one when no id is given), as after a restore of its database."""
        if subscription_id is None:
            self.subscriptions.clear()
        else:
            self.subscriptions.pop(subscription_id, None)

    def expire(self, subscription_id: str | None = None) -> None:
        """A subscription's (every one's) lifetime ends now."""
        now = self.clock()
        for sid, subscription in self.subscriptions.items():
            if subscription_id in (None, sid):
                subscription.expires = now

    def changed(self, collection: str | None = None, *, deleted: bool = False) -> None:
        """Note a change (``collection``'s type modified, or a deletion) to notify about shortly."""
        if collection is not None and collection in COLLECTION_TYPES:
            self._changes.modified.add(COLLECTION_TYPES[collection])
        self._changes.deleted |= deleted
        if not self.subscriptions:
            self._changes = _Changes()
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # outside the event loop: sent with the next change made inside it
        if self._sender is None or self._sender.done():
            self._sender = loop.create_task(self._send_soon(), name="fake-ss12000-notices")

    async def stop(self) -> None:
        if self._sender is not None:
            self._sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sender

    # ------------------------------------------------------------------------------------------
    # notices

    def _watch_data(self, api: FakeSs12000Api) -> None:
        """Every ``put`` and ``delete`` of the fake's data is a change to notify about."""
        put, delete = api.put, api.delete

        def watched_put(endpoint: str, obj: Mapping[str, Any], *, modified: datetime | None = None) -> dict[str, Any]:
            stored = put(endpoint, obj, modified=modified)
            self.changed(endpoint)
            return stored

        def watched_delete(endpoint: str, object_id: str, *, at: datetime | None = None) -> None:
            delete(endpoint, object_id, at=at)
            self.changed(deleted=True)

        setattr(api, "put", watched_put)  # noqa: B010 (an instance's method, replaced on purpose)
        setattr(api, "delete", watched_delete)  # noqa: B010

    async def _send_soon(self) -> None:
        while True:  # changes made while a notice was being sent make the next one
            await asyncio.sleep(self.batch_seconds)
            changes, self._changes = self._changes, _Changes()
            if not changes.modified and not changes.deleted:
                return
            await self.notify(sorted(changes.modified), deleted=changes.deleted)

    async def notify(self, modified: list[str], *, deleted: bool = False) -> list[NoticeRecord]:
        """Post a notice to every live subscription concerned; what was sent."""
        sent: list[NoticeRecord] = []
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
            for subscription in self.live():
                types = [t for t in modified if t in subscription.resource_types]
                if not types and not deleted:
                    continue
                body = {self.notice_key: types, "deletedEntities": deleted}
                try:
                    async with http.post(subscription.target, json=body, headers=self.notify_headers) as response:
                        status = response.status
                except (aiohttp.ClientError, TimeoutError):
                    status = 0
                record = NoticeRecord(subscription.id, tuple(types), deleted, status)
                self.notices.append(record)
                sent.append(record)
        return sent

    # ------------------------------------------------------------------------------------------
    # routes

    def add_routes(self, app: web.Application, base_path: str) -> None:
        app.router.add_get(f"{base_path}/subscriptions", self._list)
        app.router.add_post(f"{base_path}/subscriptions", self._create)
        app.router.add_get(f"{base_path}/subscriptions/{{id}}", self._get)
        app.router.add_patch(f"{base_path}/subscriptions/{{id}}", self._renew)
        app.router.add_delete(f"{base_path}/subscriptions/{{id}}", self._delete)
        app.router.add_post(f"{base_path}/log/", self._log)
        app.router.add_post(f"{base_path}/log", self._log)
        app.on_cleanup.append(self._cleanup)

    async def _cleanup(self, _app: web.Application) -> None:
        await self.stop()

    def _answer(self, request: web.Request, response: web.Response) -> web.Response:
        self.api._record(request, response.status)
        return response

    def _refused(self, request: web.Request, *, offered: bool) -> web.Response | None:
        refused = self.api._authorise(request)
        if refused is None and not offered:
            refused = _error(self.unsupported_status, "not_supported", "not offered by this source")
        return None if refused is None else self._answer(request, refused)

    def _found(self, request: web.Request) -> FakeSubscription | web.Response:
        raw = request.match_info["id"]
        try:
            uuid.UUID(raw)
        except ValueError:
            return self._answer(request, _error(400, "invalid_id", "not a UUID"))
        self.live()
        subscription = self.subscriptions.get(raw)
        if subscription is None:
            return self._answer(request, _error(404, "not_found", "no such subscription"))
        return subscription

    async def _create(self, request: web.Request) -> web.Response:
        if (refused := self._refused(request, offered=self.offered)) is not None:
            return refused
        try:
            body = await request.json()
        except ValueError:
            return self._answer(request, _error(400, "invalid_json", "the body is not JSON"))
        if not isinstance(body, Mapping):
            return self._answer(request, _error(400, "invalid_subscription", "not an object"))
        name, target, types = body.get("name"), body.get("target"), resource_types(body.get("resourceTypes"))
        if not isinstance(name, str) or not name:
            return self._answer(request, _error(400, "invalid_subscription", "name is required"))
        if not isinstance(target, str) or not target.startswith(("http://", "https://")):
            return self._answer(request, _error(400, "invalid_subscription", "target must be a URL"))
        if types is None:
            return self._answer(request, _error(400, "invalid_subscription", "resourceTypes: unknown or missing"))
        subscription = FakeSubscription(
            id=str(uuid.uuid4()),
            name=name,
            target=target,
            resource_types=types,
            expires=self.clock() + timedelta(seconds=self.lifetime_seconds),
        )
        self.subscriptions[subscription.id] = subscription
        return self._answer(request, web.json_response(subscription.document(), status=201))

    async def _list(self, request: web.Request) -> web.Response:
        if (refused := self._refused(request, offered=self.offered)) is not None:
            return refused
        try:
            limit = int(request.query.get("limit", "100"))
        except ValueError:
            limit = 0
        if limit < 1:
            return self._answer(request, _error(400, "invalid_limit", "limit must be an integer >= 1"))
        offset = 0
        if "pageToken" in request.query:
            position = self._cursors.get(request.query["pageToken"])
            if position is None:
                return self._answer(request, _error(400, "invalid_page_token", "unknown pageToken"))
            offset = position
        live = self.live()
        window = live[offset : offset + limit]
        token: str | None = None
        if offset + limit < len(live):
            token = secrets.token_urlsafe(12)
            self._cursors[token] = offset + limit
        body = {"data": [s.document() for s in window], "pageToken": token}
        return self._answer(request, web.json_response(body))

    async def _get(self, request: web.Request) -> web.Response:
        if (refused := self._refused(request, offered=self.offered)) is not None:
            return refused
        found = self._found(request)
        if isinstance(found, web.Response):
            return found
        return self._answer(request, web.json_response(found.document()))

    async def _renew(self, request: web.Request) -> web.Response:
        if (refused := self._refused(request, offered=self.offered and self.renew_offered)) is not None:
            return refused
        found = self._found(request)
        if isinstance(found, web.Response):
            return found
        found.expires = self.clock() + timedelta(seconds=self.lifetime_seconds)
        return self._answer(request, web.json_response(found.document()))

    async def _delete(self, request: web.Request) -> web.Response:
        if (refused := self._refused(request, offered=self.offered)) is not None:
            return refused
        found = self._found(request)
        if isinstance(found, web.Response):
            return found
        del self.subscriptions[found.id]
        return self._answer(request, web.Response(status=204))

    async def _log(self, request: web.Request) -> web.Response:
        if (refused := self._refused(request, offered=self.log_offered)) is not None:
            return refused
        try:
            entry = await request.json()
        except ValueError:
            return self._answer(request, _error(400, "invalid_json", "the body is not JSON"))
        if not isinstance(entry, Mapping):
            return self._answer(request, _error(400, "invalid_log_entry", "not an object"))
        if not isinstance(entry.get("message"), str) or entry.get("severityLevel") not in SEVERITIES:
            return self._answer(request, _error(400, "invalid_log_entry", "message and severityLevel are required"))
        if "resourceType" in entry and entry["resourceType"] not in END_POINTS:
            return self._answer(request, _error(400, "invalid_log_entry", "resourceType is not an EndPointsEnum"))
        if "resourceId" in entry:
            try:
                uuid.UUID(str(entry["resourceId"]))
            except ValueError:
                return self._answer(request, _error(400, "invalid_log_entry", "resourceId is not a UUID"))
        self.log_entries.append(dict(entry))
        return self._answer(request, web.Response(status=201))
