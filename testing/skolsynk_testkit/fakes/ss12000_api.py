"""A local fake of an SS 12000:2020 (OpenAPI 2.1.0) source API: what the SS 12000 puller reads from.

Built from the description in ``/work/shared/ref/ss12000-notes.md`` (sections 2, 3, 6, 7 and 9); no
third-party code. Behaviour:

* Collections ``GET {base_path}/organisations``, ``/persons``, ``/duties``, ``/groups``, ``/syllabuses``,
  ``/activities``, ``/placements`` from an in-memory data set the test fills (:meth:`FakeSs12000Api.put`,
  :meth:`FakeSs12000Api.delete`).
  Answers are the list envelope ``{"data": [...], "pageToken": "..." | null}`` in insertion order.
* Paging: ``limit`` (integer >= 1; omitted -> ``default_limit``, ``None`` = everything) and an opaque
  ``pageToken``. A ``pageToken`` combined with any parameter other than ``limit`` is a 400, as the spec
  documents; an unknown token is a 400 too. Filters are remembered with the token (no snapshot).
* Change filters ``meta.modified.after`` / ``meta.created.after`` (exclusive) and ``meta.modified.before``
  / ``meta.created.before`` (inclusive), RFC 3339; a malformed value is a 400. Other parameters are accepted
  and ignored.
* ``GET {base_path}/deletedEntities?after=...[&entities=Person...]``: the ids deleted after ``after``
  (exclusive), paged by ``limit``/``pageToken``, as ``{"data": {"persons": [...], ...}, "pageToken": ...}``
  with the activities list under the spec's misspelt key ``activitites`` (``deleted_activities_key``
  switches to ``activities``).
* Authentication (``auth``): ``"oauth2"``: ``POST {token_path}`` with form ``grant_type=client_credentials``
  and ``client_id``/``client_secret`` in the form or as HTTP Basic -> ``{"access_token", "token_type":
  "Bearer", "expires_in"}``; tokens expire after ``token_ttl_seconds`` (or at :meth:`expire_tokens`); a
  missing, unknown or expired bearer is a 401. ``"api_key"``: a static key in ``api_key_header``
  (missing: 401, wrong: 403). ``"none"``: open.
* Faults (after authentication, on the data endpoints only): :meth:`throttle` (429 with ``Retry-After``),
  :meth:`fail_next` (the next n requests answer ``status``), :meth:`fail_page` (one page of one endpoint
  fails permanently; pages are numbered from 0 within a listing).
* :attr:`requests`: every request, for assertions (no bodies, no secrets).
* :meth:`FakeSs12000Api.load_records` fills it from canonical records (e.g.
  :func:`skolsynk_testkit.synthetic.generate`), :meth:`FakeSs12000Api.apply_changes` applies a
  :class:`~skolsynk_testkit.synthetic.ChangeSet`'s changes and deletions;
  :func:`to_ss12000` is the mapping (the inverse of
  ``skolsynk.adapters.ss12000_api.from_ss12000``); what it makes is valid against the 2.1 OpenAPI for
  every record the synthetic generator makes (``tests/unit/test_fake_ss12000_schema.py``).
  :meth:`FakeSs12000Api.records` is what a full pull reads back.
"""

from __future__ import annotations

import base64
import binascii
import copy
import itertools
import re
import secrets
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Literal
from urllib.parse import unquote_plus

from aiohttp import web

from skolsynk.adapters.ss12000_api import from_ss12000
from skolsynk.contracts.source import SourceDeletion, SourceRecord
from skolsynk.domain.ss12000 import EntityKind
from skolsynk_testkit.fakes._server import FakeHttpServer, query_lists
from skolsynk_testkit.fakes.ss12000_subscriptions import FakeSubscriptions

__all__ = [
    "CALENDAR_EVENTS_REQUIRED",
    "DELETED_LIST_KEYS",
    "ENDPOINTS",
    "ENDPOINT_TYPES",
    "FakeSs12000Api",
    "RequestRecord",
    "is_mailbox",
    "to_ss12000",
]

#: The collections the fake serves.
ENDPOINTS: Final[tuple[str, ...]] = (
    "organisations", "persons", "duties", "groups", "syllabuses", "activities", "placements",
)  # fmt: skip

#: Collection -> its EndPointsEnum name (``entities`` filter of ``/deletedEntities``).
ENDPOINT_TYPES: Final[dict[str, str]] = {
    "organisations": "Organisation",
    "persons": "Person",
    "duties": "Duty",
    "groups": "Group",
    "syllabuses": "Syllabus",
    "activities": "Activity",
    "placements": "Placement",
}

#: Every list of the spec's DeletedEntities ``data`` (``activitites`` is substituted by the setting).
DELETED_LIST_KEYS: Final[tuple[str, ...]] = (
    "absences", "attendanceEvents", "attendances", "grades", "calendarEvents", "attendanceSchedules",
    "resources", "rooms", "activitites", "duties", "placements", "studyPlans", "programmes", "syllabuses",
    "schoolUnitOfferings", "groups", "persons", "organisations",
)  # fmt: skip

AuthKind = Literal["oauth2", "api_key", "none"]
_CHANGE_FILTERS: Final = ("meta.created.before", "meta.created.after", "meta.modified.before", "meta.modified.after")


@dataclass(frozen=True)
class RequestRecord:
    """One request the fake answered: method, path below the base path, query (multi-valued), status,
    and for list pages the 0-based page number within the listing."""

    method: str
    path: str
    query: dict[str, list[str]]
    status: int
    page: int | None = None

    @property
    def endpoint(self) -> str:
        return self.path.strip("/").split("/")[0]


@dataclass
class _Cursor:
    endpoint: str
    filters: dict[str, list[str]]
    offset: int
    page: int


@dataclass
class _Faults:
    throttled: int = 0
    retry_after: float = 1.0
    failing: int = 0
    failing_status: int = 503
    failing_pages: dict[tuple[str, int], int] = field(default_factory=dict)
    stuck_endpoints: set[str] = field(default_factory=set)


def _parse_time(value: str) -> datetime:
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        raise ValueError("a time zone is required")
    return parsed


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"code": code, "message": message}, status=status)


#: Canonical kind -> the collection that serves it (school units are organisations of type Skolenhet).
KIND_ENDPOINTS: Final[dict[EntityKind, str]] = {
    EntityKind.ORGANISATION: "organisations",
    EntityKind.SCHOOL_UNIT: "organisations",
    EntityKind.PERSON: "persons",
    EntityKind.DUTY: "duties",
    EntityKind.GROUP: "groups",
    EntityKind.SYLLABUS: "syllabuses",
    EntityKind.ACTIVITY: "activities",
    EntityKind.PLACEMENT: "placements",
}

_DATES: Final = {"start_date": "startDate", "end_date": "endDate"}


def _present(data: Mapping[str, Any], fields: Mapping[str, str]) -> dict[str, Any]:
    """The canonical ``data``'s present (non-null) values under their SS 12000 names."""
    return {target: data[source] for source, target in fields.items() if data.get(source) is not None}


def _references(data: Mapping[str, Any], fields: Mapping[str, str]) -> dict[str, Any]:
    """The canonical ``data``'s present references as SS 12000 ObjectReferences (a missing one is left
    out: 2.1 allows no ``null`` reference)."""
    return {target: {"id": str(data[source])} for source, target in fields.items() if data.get(source) is not None}


#: An e-mail address as 2.1's ``format: email`` accepts it (RFC 5321 Mailbox), in its common form:
#: a dot-atom local part, ``@`` and a domain of host-name labels. Quoted local parts and address
#: literals are valid too but not served (nothing skolsynk makes has them).
_ATEXT: Final = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL: Final = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_MAILBOX: Final = re.compile(rf"(?=.{{1,64}}@){_ATEXT}(?:\.{_ATEXT})*@(?=.{{1,253}}\Z){_LABEL}(?:\.{_LABEL})*\Z")


def is_mailbox(value: Any) -> bool:
    """Whether ``value`` is an e-mail address 2.1 lets a source serve (``Email.value``, ``format: email``)."""
    return isinstance(value, str) and _MAILBOX.match(value) is not None


#: ``Activity.calendarEventsRequired`` is required in 2.1 and the canonical model has no such field: the
#: fake serves no calendar events, so none are required.
CALENDAR_EVENTS_REQUIRED: Final = False


def to_ss12000(record: SourceRecord) -> tuple[str, dict[str, Any]]:
    """A canonical record as the SS 12000 2.1 object a source API would serve, and its collection: the
    inverse of :func:`skolsynk.adapters.ss12000_api.from_ss12000` (organisation -> its ``organisationType``,
    ``Huvudman`` when it has none, under its ``parent``; school unit -> ``Skolenhet`` under its
    organisation, persons with ``civicNo``, e-mails and enrolments, duties with their assignment roles, groups
    with memberships, syllabuses, activities with groups, teachers (with their assignment dates) and syllabus,
    placements).

    What it makes is valid against the 2.1 OpenAPI for every record the synthetic generator makes
    (``tests/unit/test_fake_ss12000_schema.py`` checks it): a missing reference is left out, never
    ``null``; ``Activity.calendarEventsRequired``, which the canonical model lacks, is
    :data:`CALENDAR_EVENTS_REQUIRED`; a syllabus without ``official`` is served as not official (a syllabus
    needs a school type and a placement a start date to be valid: the generator gives them); an e-mail
    address that is not one (:func:`is_mailbox`, the generator's ``email.invalid`` defect) is left out, as a
    source that keeps to the schema cannot serve it. Other values are not validated, so any other defect
    reaches the puller and the normaliser as it is; to serve an object 2.1 does not allow,
    :meth:`FakeSs12000Api.put` it."""
    data, kind = record.data, record.kind
    obj: dict[str, Any] = {"id": record.key}
    if kind is EntityKind.ORGANISATION:
        obj |= {"organisationType": data.get("organisation_type") or "Huvudman"}
        obj |= _present(
            data,
            {
                "display_name": "displayName",
                "organisation_number": "organisationNumber",
                "organisation_code": "organisationCode",
                "municipality_code": "municipalityCode",
            },
        )
        obj |= _references(data, {"parent": "parentOrganisation"})
    elif kind is EntityKind.SCHOOL_UNIT:
        obj |= {"organisationType": "Skolenhet", "schoolTypes": list(data.get("school_types") or [])}
        obj |= _present(
            data,
            {
                "display_name": "displayName",
                "school_unit_code": "schoolUnitCode",
                "municipality_code": "municipalityCode",
                **_DATES,
            },
        )
        obj |= _references(data, {"organisation": "parentOrganisation"})
    elif kind is EntityKind.PERSON:
        obj |= _present(
            data,
            {
                "given_name": "givenName",
                "family_name": "familyName",
                "middle_name": "middleName",
                "birth_date": "birthDate",
                "security_marking": "securityMarking",
                "person_status": "personStatus",
            },
        )
        obj["eduPersonPrincipalNames"] = list(data.get("eppn") or [])
        obj["emails"] = [
            _present(e, {"value": "value", "type": "type"})
            for e in data.get("emails") or []
            if is_mailbox(e.get("value"))
        ]
        if data.get("civic_no") is not None:
            obj["civicNo"] = {"value": data["civic_no"], "nationality": "SE"}
        obj["externalIdentifiers"] = [
            _present(i, {"value": "value", "context": "context", "globally_unique": "globallyUnique"})
            for i in data.get("external_identifiers") or []
        ]
        obj["enrolments"] = [
            {
                **_references(e, {"school_unit": "enroledAt"}),
                **_present(
                    e,
                    {
                        "school_type": "schoolType",
                        "school_year": "schoolYear",
                        "cancelled": "cancelled",
                        "programme_code": "educationCode",
                        **_DATES,
                    },
                ),
            }
            for e in data.get("enrolments") or []
        ]
    elif kind is EntityKind.DUTY:
        obj |= _references(data, {"person": "person", "school_unit": "dutyAt"})
        obj |= _present(data, {"role": "dutyRole", "signature": "signature", **_DATES})
        if data.get("assignment_roles"):
            obj["assignmentRole"] = [
                {
                    **_references(r, {"group": "group"}),
                    **_present(r, {"assignment_role_type": "assignmentRoleType", **_DATES}),
                }
                for r in data["assignment_roles"]
            ]
    elif kind is EntityKind.GROUP:
        obj |= _present(
            data, {"display_name": "displayName", "group_type": "groupType", "school_type": "schoolType", **_DATES}
        )
        obj |= _references(data, {"school_unit": "organisation"})
        obj["groupMemberships"] = [
            {**_references(m, {"person": "person"}), **_present(m, _DATES)} for m in data.get("memberships") or []
        ]
    elif kind is EntityKind.ACTIVITY:
        obj |= _present(data, {"display_name": "displayName", **_DATES})
        obj["calendarEventsRequired"] = CALENDAR_EVENTS_REQUIRED
        obj |= _references(data, {"school_unit": "organisation"})
        obj["groups"] = [{"id": str(g)} for g in data.get("groups") or []]
        dates = {a.get("duty"): _present(a, _DATES) for a in data.get("teacher_assignments") or []}
        obj["teachers"] = [{"duty": {"id": str(t)}, **dates.get(t, {})} for t in data.get("teachers") or []]
        obj |= _references(data, {"syllabus": "syllabus"})
    elif kind is EntityKind.SYLLABUS:
        # official is required in 2.1 and optional in the model: absent, the subject is not one of Skolverket's.
        obj["official"] = bool(data.get("official"))
        obj |= _present(
            data,
            {
                "subject_name": "subjectName",
                "subject_code": "subjectCode",
                "subject_designation": "subjectDesignation",
                "course_code": "courseCode",
                "course_name": "courseName",
                "school_type": "schoolType",
            },
        )
    elif kind is EntityKind.PLACEMENT:
        obj |= _references(data, {"child": "child", "school_unit": "placedAt", "group": "group"})
        obj |= _present(data, {"school_type": "schoolType", **_DATES})
    else:
        raise ValueError(f"SS 12000 has no collection for {kind.value}")
    return KIND_ENDPOINTS[kind], obj


class FakeSs12000Api(FakeHttpServer[RequestRecord]):
    """An SS 12000 2.1 source API on a local port; see the module docstring."""

    def __init__(
        self,
        *,
        base_path: str = "/v2.0",
        auth: AuthKind = "oauth2",
        client_id: str = "skolsynk",
        client_secret: str = "client-secret",  # noqa: S107 (a fake's credential)
        token_path: str = "/token",  # noqa: S107 (a path)
        token_ttl_seconds: float = 3600.0,
        api_key: str = "api-key",
        api_key_header: str = "X-API-Key",
        default_limit: int | None = None,
        deleted_activities_key: Literal["activitites", "activities"] = "activitites",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.base_path = "/" + base_path.strip("/") if base_path.strip("/") else ""
        self.auth = auth
        self.client_id = client_id
        self.client_secret = client_secret
        self.token_path = token_path
        self.token_ttl_seconds = token_ttl_seconds
        self.api_key = api_key
        self.api_key_header = api_key_header
        self.default_limit = default_limit
        self.deleted_activities_key = deleted_activities_key
        self._clock = clock
        self.data: dict[str, dict[str, dict[str, Any]]] = {endpoint: {} for endpoint in ENDPOINTS}
        self.deletions: list[tuple[datetime, str, str]] = []
        self.tokens_issued = 0
        self._tokens: dict[str, float] = {}
        self._cursors: dict[str, _Cursor] = {}
        self._faults = _Faults()
        #: ``/subscriptions`` and ``/log`` (:mod:`skolsynk_testkit.fakes.ss12000_subscriptions`).
        self.subscriptions = FakeSubscriptions(self)

    # ------------------------------------------------------------------------------------------
    # data

    def put(self, endpoint: str, obj: Mapping[str, Any], *, modified: datetime | None = None) -> dict[str, Any]:
        """Add or replace an object (by ``id``). ``modified`` sets ``meta.modified`` (and ``meta.created``
        when the object has none); without it an object lacking ``meta`` gets the current time."""
        if endpoint not in self.data:
            raise ValueError(f"unknown endpoint {endpoint!r}")
        stored = copy.deepcopy(dict(obj))
        object_id = stored.get("id")
        if not isinstance(object_id, str):
            raise ValueError("an SS 12000 object needs a string id")
        meta = stored.get("meta")
        meta = dict(meta) if isinstance(meta, Mapping) else {}
        stamp = (modified or datetime.now(UTC)).isoformat()
        if modified is not None or "modified" not in meta:
            meta["modified"] = stamp
        meta.setdefault("created", meta["modified"])
        stored["meta"] = meta
        self.data[endpoint][object_id] = stored
        return stored

    def put_many(self, endpoint: str, objects: Iterable[Mapping[str, Any]]) -> None:
        for obj in objects:
            self.put(endpoint, obj)

    def delete(self, endpoint: str, object_id: str, *, at: datetime | None = None) -> None:
        """Remove an object and record its deletion for ``/deletedEntities``."""
        self.data[endpoint].pop(object_id, None)
        self.deletions.append((at or datetime.now(UTC), endpoint, object_id))

    def load_records(self, records: Iterable[SourceRecord], *, modified: datetime | None = None) -> dict[str, int]:
        """Add canonical records (:func:`to_ss12000`); returns how many objects each collection got."""
        counts: dict[str, int] = {}
        stamp = modified or datetime.now(UTC)
        for record in records:
            endpoint, obj = to_ss12000(record)
            self.put(endpoint, obj, modified=stamp)
            counts[endpoint] = counts.get(endpoint, 0) + 1
        return counts

    def apply_changes(
        self, changed: Iterable[SourceRecord], deleted: Iterable[SourceDeletion], *, at: datetime | None = None
    ) -> None:
        """What a source system does between two reads: new or changed objects (``meta.modified`` = ``at``,
        default now) and deletions (listed by ``/deletedEntities``)."""
        stamp = at or datetime.now(UTC)
        self.load_records(changed, modified=stamp)
        for deletion in deleted:
            self.delete(KIND_ENDPOINTS[deletion.kind], deletion.key, at=stamp)

    def records(self) -> list[SourceRecord]:
        """What a full pull reads from the fake now: every object it serves, through the puller's mapping
        (:func:`~skolsynk.adapters.ss12000_api.from_ss12000`). The records loaded, less what 2.1 cannot
        carry (see :func:`to_ss12000`)."""
        return [
            record
            for endpoint in ENDPOINTS
            for obj in self.data[endpoint].values()
            for record in from_ss12000(endpoint, obj)
        ]

    # ------------------------------------------------------------------------------------------
    # faults

    def throttle(self, n: int, retry_after: float = 1.0) -> None:
        """The next ``n`` data requests answer 429 with ``Retry-After: retry_after``."""
        self._faults.throttled = n
        self._faults.retry_after = retry_after

    def fail_next(self, n: int, status: int = 503) -> None:
        """The next ``n`` data requests answer ``status``."""
        self._faults.failing = n
        self._faults.failing_status = status

    def fail_page(self, endpoint: str, page_number: int, status: int = 500) -> None:
        """Page ``page_number`` (0-based) of every listing of ``endpoint`` answers ``status``, always."""
        self._faults.failing_pages[(endpoint, page_number)] = status

    def stick_page_token(self, endpoint: str) -> None:
        """Listings of ``endpoint`` answer every page with the same ``pageToken`` (the literal
        ``"pageToken"``, as the spec's own example answer), which leads back to the same page: a client
        that follows any token loops for ever."""
        self._faults.stuck_endpoints.add(endpoint)

    def clear_faults(self) -> None:
        self._faults = _Faults()

    def expire_tokens(self) -> None:
        """Every token issued so far is expired from now on."""
        self._tokens = dict.fromkeys(self._tokens, float("-inf"))

    def issue_token(self) -> str:
        """A valid bearer token (for tests that call the API directly)."""
        token = secrets.token_urlsafe(24)
        self._tokens[token] = self._clock() + self.token_ttl_seconds
        self.tokens_issued += 1
        return token

    # ------------------------------------------------------------------------------------------
    # server (``port``, ``origin``, ``start`` and ``stop`` come from FakeHttpServer)

    @property
    def base_url(self) -> str:
        """The API's base URL (``http://host:port/v2.0``)."""
        return self.origin + self.base_path

    @property
    def token_url(self) -> str:
        return self.origin + self.token_path

    def make_app(self) -> web.Application:
        app = web.Application()
        app.router.add_post(self.token_path, self._token)
        for endpoint in ENDPOINTS:
            app.router.add_get(f"{self.base_path}/{endpoint}", self._list)
        app.router.add_get(f"{self.base_path}/deletedEntities", self._deleted)
        self.subscriptions.add_routes(app, self.base_path)
        return app

    # ------------------------------------------------------------------------------------------
    # handlers

    def _record(self, request: web.Request, status: int, page: int | None = None) -> None:
        path = request.path[len(self.base_path) :] if request.path.startswith(self.base_path) else request.path
        self.requests.append(RequestRecord(request.method, path, query_lists(request), status, page))

    async def _token(self, request: web.Request) -> web.Response:
        form = await request.post()
        client_id, client_secret = form.get("client_id"), form.get("client_secret")
        header = request.headers.get("Authorization", "")
        if header.lower().startswith("basic "):
            try:
                decoded = base64.b64decode(header[6:].strip(), validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                decoded = ""
            user, _, password = decoded.partition(":")
            client_id, client_secret = unquote_plus(user), unquote_plus(password)  # RFC 6749 2.3.1
        if self.auth != "oauth2":
            self._record(request, 404)
            return _error(404, "not_found", "no token endpoint")
        if form.get("grant_type") != "client_credentials":
            self._record(request, 400)
            return web.json_response({"error": "unsupported_grant_type"}, status=400)
        if client_id != self.client_id or client_secret != self.client_secret:
            self._record(request, 401)
            return web.json_response({"error": "invalid_client"}, status=401)
        token = self.issue_token()
        self._record(request, 200)
        return web.json_response(
            {"access_token": token, "token_type": "Bearer", "expires_in": int(self.token_ttl_seconds)}
        )

    def _authorise(self, request: web.Request) -> web.Response | None:
        if self.auth == "none":
            return None
        if self.auth == "api_key":
            key = request.headers.get(self.api_key_header)
            if key is None:
                return _error(401, "unauthorized", "API key missing")
            if not secrets.compare_digest(key, self.api_key):
                return _error(403, "forbidden", "API key not accepted")
            return None
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        expiry = self._tokens.get(token.strip()) if scheme.lower() == "bearer" else None
        if expiry is None or expiry <= self._clock():
            response = _error(401, "unauthorized", "bearer token missing, unknown or expired")
            response.headers["WWW-Authenticate"] = 'Bearer error="invalid_token"'
            return response
        return None

    def _fault(self) -> web.Response | None:
        faults = self._faults
        if faults.throttled > 0:
            faults.throttled -= 1
            response = _error(429, "too_many_requests", "slow down")
            response.headers["Retry-After"] = f"{faults.retry_after:g}"
            return response
        if faults.failing > 0:
            faults.failing -= 1
            return _error(faults.failing_status, "injected", "injected failure")
        return None

    def _prelude(self, request: web.Request) -> web.Response | None:
        """Authentication, then injected faults."""
        return self._authorise(request) or self._fault()

    def _cursor(self, request: web.Request, endpoint: str) -> tuple[_Cursor, int | None] | web.Response:
        """The listing position (new or from the page token) and the page size, or a 400."""
        query: dict[str, list[str]] = {}
        for key, value in request.query.items():
            query.setdefault(key, []).append(value)
        limit: int | None = self.default_limit
        if "limit" in query:
            try:
                limit = int(query["limit"][0])
            except ValueError:
                limit = 0
            if limit < 1:
                return _error(400, "invalid_limit", "limit must be an integer >= 1")
        if "pageToken" in query:
            others = sorted(set(query) - {"pageToken", "limit"})
            if others:
                return _error(400, "filter_with_page_token", "pageToken cannot be combined with other filters")
            cursor = self._cursors.get(query["pageToken"][0])
            if cursor is None or cursor.endpoint != endpoint:
                return _error(400, "invalid_page_token", "unknown pageToken")
            return cursor, limit
        filters = {k: v for k, v in query.items() if k != "limit"}
        return _Cursor(endpoint, filters, 0, 0), limit

    def _next_token(self, cursor: _Cursor, taken: int, total: int) -> str | None:
        if cursor.endpoint in self._faults.stuck_endpoints:
            self._cursors["pageToken"] = cursor  # the same position again, for ever
            return "pageToken"
        if cursor.offset + taken >= total:
            return None
        token = secrets.token_urlsafe(12)
        self._cursors[token] = _Cursor(cursor.endpoint, cursor.filters, cursor.offset + taken, cursor.page + 1)
        return token

    @staticmethod
    def _matches(obj: Mapping[str, Any], bounds: list[tuple[str, str, datetime]]) -> bool:
        meta = obj.get("meta") or {}
        for attribute, direction, bound in bounds:
            raw = meta.get(attribute)
            if not isinstance(raw, str):
                return False
            stamp = _parse_time(raw)
            if direction == "after" and not stamp > bound:
                return False
            if direction == "before" and not stamp <= bound:
                return False
        return True

    async def _list(self, request: web.Request) -> web.Response:
        endpoint = request.path.rsplit("/", 1)[-1]
        failure = self._prelude(request)
        if failure is not None:
            self._record(request, failure.status)
            return failure
        position = self._cursor(request, endpoint)
        if isinstance(position, web.Response):
            self._record(request, position.status)
            return position
        cursor, limit = position
        status = self._faults.failing_pages.get((endpoint, cursor.page))
        if status is not None:
            self._record(request, status, cursor.page)
            return _error(status, "injected", "injected page failure")
        bounds: list[tuple[str, str, datetime]] = []
        for name in _CHANGE_FILTERS:
            if name in cursor.filters:
                _, attribute, direction = name.split(".")
                try:
                    bounds.append((attribute, direction, _parse_time(cursor.filters[name][0])))
                except ValueError:
                    self._record(request, 400)
                    return _error(400, "invalid_filter", f"{name} is not an RFC 3339 date-time")
        objects = self.data[endpoint].values()
        if bounds:
            selected = [obj for obj in objects if self._matches(obj, bounds)]
            window = selected[cursor.offset :] if limit is None else selected[cursor.offset : cursor.offset + limit]
            total = len(selected)
        else:  # no filter: slice without copying the collection (large organisers, the benchmark)
            end = None if limit is None else cursor.offset + limit
            window, total = list(itertools.islice(objects, cursor.offset, end)), len(objects)
        token = self._next_token(cursor, len(window), total)
        self._record(request, 200, cursor.page)
        return web.json_response({"data": copy.deepcopy(window), "pageToken": token})

    async def _deleted(self, request: web.Request) -> web.Response:
        failure = self._prelude(request)
        if failure is not None:
            self._record(request, failure.status)
            return failure
        position = self._cursor(request, "deletedEntities")
        if isinstance(position, web.Response):
            self._record(request, position.status)
            return position
        cursor, limit = position
        status = self._faults.failing_pages.get(("deletedEntities", cursor.page))
        if status is not None:
            self._record(request, status, cursor.page)
            return _error(status, "injected", "injected page failure")
        after: datetime | None = None
        if "after" in cursor.filters:
            try:
                after = _parse_time(cursor.filters["after"][0])
            except ValueError:
                self._record(request, 400)
                return _error(400, "invalid_filter", "after is not an RFC 3339 date-time")
        wanted = set(cursor.filters.get("entities", [])) or set(ENDPOINT_TYPES.values())
        selected = [
            (endpoint, object_id)
            for at, endpoint, object_id in sorted(self.deletions, key=lambda d: d[0])
            if (after is None or at > after) and ENDPOINT_TYPES.get(endpoint) in wanted
        ]
        window = selected[cursor.offset :] if limit is None else selected[cursor.offset : cursor.offset + limit]
        keys = [self.deleted_activities_key if k == "activitites" else k for k in DELETED_LIST_KEYS]
        data: dict[str, list[str]] = {key: [] for key in keys}
        for endpoint, object_id in window:
            key = self.deleted_activities_key if endpoint == "activities" else endpoint
            data[key].append(object_id)
        token = self._next_token(cursor, len(window), len(selected))
        self._record(request, 200, cursor.page)
        return web.json_response({"data": data, "pageToken": token})
