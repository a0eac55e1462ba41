"""A local fake of Microsoft Graph's Education API (v1.0) and of the Entra ID (Azure AD) token endpoint:
what the Microsoft 365 / School Data Sync connector reads from.

Built from the description in ``/work/shared/ref/source-apis.md`` (sections 2.1-2.5 and 5.2); no
third-party code. Behaviour:

* **Token**: ``POST /{azure_tenant_id}/oauth2/v2.0/token`` (form-encoded) with
  ``grant_type=client_credentials``, a ``scope`` ending in ``/.default`` and ``client_id`` /
  ``client_secret`` in the form (or as HTTP Basic). Answers ``{"token_type": "Bearer", "expires_in",
  "ext_expires_in", "access_token"}`` where the token is JWT-shaped (``tid``, ``roles``, ``exp``; not
  signed). Errors in Entra's shape (``error``, ``error_description`` with the AADSTS number,
  ``error_codes``, ``timestamp``, ``trace_id``, ``correlation_id``): ``invalid_client`` (AADSTS7000215,
  401), ``invalid_scope`` (AADSTS70011, 400), ``unsupported_grant_type``, unknown tenant (AADSTS90002, 400).
* **Bearer check** on every Graph request: a missing, unknown or expired token is
  ``401 InvalidAuthenticationToken`` with ``WWW-Authenticate``; a token without ``EduRoster.Read.All`` is
  ``403 Authorization_RequestDenied``; class ``members`` / ``teachers`` also need ``Member.Read.Hidden``.
* **Collections** under ``/v1.0/education``: ``schools``, ``users``, ``classes`` (and ``/{id}``), and the
  relations ``schools/{id}/users``, ``schools/{id}/classes``, ``users/{id}/schools``,
  ``users/{id}/classes``, ``classes/{id}/members``, ``classes/{id}/teachers``, ``classes/{id}/schools``.
  Answers are ``{"@odata.context", "value": [...], "@odata.nextLink"}``; the next link is an absolute URL
  with an opaque ``$skiptoken`` (the query options are remembered with the token, not repeated). Page
  size: ``$top`` (1..999, else 400), default ``default_page_size``. ``$select`` (``id`` always kept).
  An unknown id is ``404 Request_ResourceNotFound``.
* **Delta**: ``/education/{users,classes,schools}/delta`` (also ``delta()`` and ``microsoft.graph.delta``).
  A round without a token returns every object (full, ``$select`` honoured); later rounds (``$deltatoken``)
  only what changed since: a new object in full, an update with ``id`` and the changed properties only
  (merge, don't replace), a removal as ``{"id", "@removed": {"reason": "changed" | "deleted"}}`` (schools
  only, by default: Microsoft documents that class delta does not include deleted classes and promises
  only new and updated users; ``removals_in_delta`` widens it), a class
  membership change as ``members@delta`` (``{"@odata.type": "#microsoft.graph.user", "id"}``, with
  ``@removed`` for a member who left). A ``$select`` on the first request is kept in the token and, as
  Graph documents for groups, limits tracking: a change of unselected properties is not reported, and
  membership changes only when ``members`` is selected or nothing is (class delta without options
  reports "membership changes", as its documentation says). Pages hold ``delta_page_size`` entries (or ``$top`` /
  ``Prefer: odata.maxpagesize``); ``empty_delta_pages`` empty pages with a next link start every round,
  and the round ends with an empty page carrying ``@odata.deltaLink`` (``$deltatoken``).
  :attr:`replay_changes` repeats every change entry of a round (Graph may replay). Delta tokens are
  valid ``delta_token_ttl_seconds`` (7 days); an old or :meth:`expire_delta_tokens`-ed token answers
  ``400 syncStateNotFound`` or (``mode="gone"``) ``410 Gone`` with ``resyncRequired`` and a
  ``Location`` header pointing to a fresh initial delta URL.
* **Throttling and faults** (after authentication, on Graph requests only): :meth:`throttle` (429, 503 or
  504 with ``Retry-After`` as an integer, a fraction or absent, and Graph's ``TooManyRequests`` body),
  :meth:`fail_next` (the next n requests answer ``status``), :meth:`fail_page` (page n of a listing or
  delta round of one path answers ``status``, always). Errors use Graph's envelope
  ``{"error": {"code", "message", "innerError": {"date", "request-id", "client-request-id"}}}``.
* **Data**: :meth:`put_school`, :meth:`put_user`, :meth:`put_class` fill it; :meth:`update_user`,
  :meth:`remove_user`, :meth:`change_class_members`, :meth:`remove_class`, :meth:`remove_school` change it
  between rounds; :meth:`load_organiser` fills it from the canonical records of
  :func:`skolsynk_testkit.synthetic.organiser` (ids: :meth:`graph_id`).
* :attr:`requests`: every request, for assertions (no bodies, no secrets).

Run it alone with ``python -m skolsynk_testkit.fakes.graph_education --organiser-units 2``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import copy
import json
import secrets
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from typing import Any, Final, Literal
from urllib.parse import quote, unquote_plus

from aiohttp import web

from skolsynk.contracts.source import SourceRecord
from skolsynk.domain.ss12000 import EntityKind
from skolsynk_testkit.fakes._server import FakeHttpServer, argument_parser, serve_until_signalled

__all__ = ["DELTA_SUFFIXES", "RESOURCES", "FakeGraphEducation", "RequestRecord"]

#: The top-level collections (and delta-capable resources) the fake serves.
RESOURCES: Final[tuple[str, ...]] = ("schools", "users", "classes")
#: The spellings of the delta function Graph accepts.
DELTA_SUFFIXES: Final[tuple[str, ...]] = ("delta", "delta()", "microsoft.graph.delta")
#: Roles a token gets unless the fake is told otherwise.
DEFAULT_ROLES: Final[tuple[str, ...]] = ("EduRoster.Read.All", "Member.Read.Hidden")
GRAPH_SCOPE_SUFFIX: Final = "/.default"
SEVEN_DAYS: Final = 7 * 24 * 3600.0
MAX_TOP: Final = 999

ODATA_TYPES: Final[dict[str, str]] = {
    "schools": "#microsoft.graph.educationSchool",
    "users": "#microsoft.graph.educationUser",
    "classes": "#microsoft.graph.educationClass",
}
#: The fake's id namespace: Graph ids of loaded canonical records are uuid5(namespace, kind:key).
ID_NAMESPACE: Final = uuid.UUID("3b0f5a52-6c4e-4d0b-9a53-2f1f0c6c7e11")


@dataclass(frozen=True)
class RequestRecord:
    """One request the fake answered: method, path below ``/v1.0`` (or the token path), query, status,
    for pages of a listing or delta round the 0-based page number, and the ``Prefer`` header if sent."""

    method: str
    path: str
    query: dict[str, str]
    status: int
    page: int | None = None
    prefer: str | None = None

    @property
    def resource(self) -> str:
        """``users``, ``users/delta``, ``classes/{id}/members`` ... (the path below ``/education``)."""
        return self.path.removeprefix("/education/").strip("/")


@dataclass
class _Change:
    seq: int
    object_id: str
    #: ``upsert`` (new or changed properties), ``removed``, or ``members`` (class membership change).
    what: Literal["upsert", "removed", "members"]
    properties: frozenset[str] | None = None  # None: the whole object (new)
    reason: str = "deleted"
    members_added: tuple[str, ...] = ()
    members_removed: tuple[str, ...] = ()


@dataclass
class _Cursor:
    path: str
    entries: list[dict[str, Any]]
    offset: int
    page: int
    size: int
    context: str
    #: Delta rounds only: the resource, its sequence number at the start of the round, the $select,
    #: and how many empty pages are still to come before the data.
    resource: str | None = None
    end_seq: int = 0
    select: tuple[str, ...] | None = None
    empty_left: int = 0


@dataclass
class _DeltaToken:
    resource: str
    seq: int
    issued_at: float
    select: tuple[str, ...] | None
    expired: Literal["", "syncStateNotFound", "gone"] = ""


@dataclass
class _Faults:
    throttled: int = 0
    throttle_status: int = 429
    retry_after: str | None = "1"
    failing: int = 0
    failing_status: int = 503
    failing_pages: dict[tuple[str, int], int] = field(default_factory=dict)


def _now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S")


def graph_error(status: int, code: str, message: str, *, headers: Mapping[str, str] | None = None) -> web.Response:
    """A Graph error in its envelope."""
    body = {
        "error": {
            "code": code,
            "message": message,
            "innerError": {"date": _now_iso(), "request-id": str(uuid.uuid4()), "client-request-id": str(uuid.uuid4())},
        }
    }
    return web.json_response(body, status=status, headers=dict(headers or {}))


def _entra_error(status: int, error: str, aadsts: int, description: str) -> web.Response:
    return web.json_response(
        {
            "error": error,
            "error_description": f"AADSTS{aadsts}: {description}",
            "error_codes": [aadsts],
            "timestamp": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%SZ"),
            "trace_id": str(uuid.uuid4()),
            "correlation_id": str(uuid.uuid4()),
            "error_uri": f"https://login.microsoftonline.com/error?code={aadsts}",
        },
        status=status,
    )


def _b64url(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data, separators=(",", ":")).encode()).rstrip(b"=").decode()


def _select(obj: Mapping[str, Any], select: tuple[str, ...] | None) -> dict[str, Any]:
    if select is None:
        return copy.deepcopy(dict(obj))
    return {k: copy.deepcopy(v) for k, v in obj.items() if k == "id" or k in select}


def _school_year_end(today: date) -> int:
    """The calendar year in which the current school year ends (it starts in August)."""
    return today.year + 1 if today.month >= 8 else today.year


class FakeGraphEducation(FakeHttpServer[RequestRecord]):
    """Graph Education v1.0 and the Entra token endpoint on a local port; see the module docstring."""

    def __init__(
        self,
        *,
        azure_tenant_id: str = "6f1d3a4e-2b7c-4e8f-9a10-5c2d7e8f9a01",
        client_id: str = "7c2e4a10-0d3b-4b6f-8e21-9a4c5b6d7e02",
        client_secret: str = "graph-client-secret",  # noqa: S107 (a fake's credential)
        token_ttl_seconds: float = 3599.0,
        roles: Iterable[str] = DEFAULT_ROLES,
        default_page_size: int = 100,
        delta_page_size: int = 100,
        empty_delta_pages: int = 0,
        delta_token_ttl_seconds: float = SEVEN_DAYS,
        replay_changes: bool = False,
        removals_in_delta: Iterable[str] = ("schools",),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.azure_tenant_id = azure_tenant_id
        self.client_id = client_id
        self.client_secret = client_secret
        self.token_ttl_seconds = token_ttl_seconds
        self.roles = tuple(roles)
        self.default_page_size = default_page_size
        self.delta_page_size = delta_page_size
        self.empty_delta_pages = empty_delta_pages
        self.delta_token_ttl_seconds = delta_token_ttl_seconds
        self.replay_changes = replay_changes
        #: The resources whose delta reports removals (``@removed``). Microsoft documents that educationClass
        #: delta "does not include deleted classes" and promises "newly created or updated" users only, so by
        #: default only schools do; pass ("schools", "users", "classes") for the kinder behaviour.
        self.removals_in_delta = frozenset(removals_in_delta)
        self._clock = clock
        self.objects: dict[str, dict[str, dict[str, Any]]] = {r: {} for r in RESOURCES}
        self.school_users: dict[str, list[str]] = {}
        self.school_classes: dict[str, list[str]] = {}
        self.class_members: dict[str, list[str]] = {}
        self.class_teachers: dict[str, list[str]] = {}
        self.changes: dict[str, list[_Change]] = {r: [] for r in RESOURCES}
        self._seq = 0
        self.tokens_issued = 0
        self._tokens: dict[str, tuple[float, tuple[str, ...]]] = {}
        self._cursors: dict[str, _Cursor] = {}
        self._delta_tokens: dict[str, _DeltaToken] = {}
        self._faults = _Faults()

    # ------------------------------------------------------------------------------------------
    # addresses (``port`` and ``origin`` come from FakeHttpServer)

    @property
    def graph_base_url(self) -> str:
        """``http://host:port/v1.0`` (as ``https://graph.microsoft.com/v1.0``)."""
        return f"{self.origin}/v1.0"

    @property
    def token_url(self) -> str:
        return f"{self.origin}/{self.azure_tenant_id}/oauth2/v2.0/token"

    @property
    def authority(self) -> str:
        """The Entra authority host (``https://login.microsoftonline.com``): token URL = authority/tenant/..."""
        return self.origin

    # ------------------------------------------------------------------------------------------
    # data

    @staticmethod
    def graph_id(kind: EntityKind | str, key: str) -> str:
        """The Graph id :meth:`load_organiser` gives the canonical record ``(kind, key)``: persons are
        users, school units schools, groups classes."""
        return str(uuid.uuid5(ID_NAMESPACE, f"{EntityKind(kind).value}:{key}"))

    def _log(self, resource: str, change: _Change) -> None:
        self.changes[resource].append(change)

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _put(self, resource: str, obj: Mapping[str, Any]) -> str:
        stored = copy.deepcopy(dict(obj))
        object_id = stored.get("id")
        if not isinstance(object_id, str) or not object_id:
            raise ValueError("a Graph object needs a string id")
        previous = self.objects[resource].get(object_id)
        self.objects[resource][object_id] = stored
        if previous is None:
            self._log(resource, _Change(self._next_seq(), object_id, "upsert"))
        else:
            changed = frozenset(k for k in set(stored) | set(previous) if stored.get(k) != previous.get(k))
            if changed:
                self._log(resource, _Change(self._next_seq(), object_id, "upsert", changed))
        return object_id

    def put_school(self, school: Mapping[str, Any]) -> str:
        """Add or replace an educationSchool (by ``id``)."""
        school_id = self._put("schools", school)
        self.school_users.setdefault(school_id, [])
        self.school_classes.setdefault(school_id, [])
        return school_id

    def put_user(self, user: Mapping[str, Any], *, schools: Iterable[str] | None = None) -> str:
        """Add or replace an educationUser; ``schools`` (ids) replaces its school memberships. School
        membership is a relation of the school (an administrative unit): it is not a change of the user."""
        user_id = self._put("users", user)
        if schools is not None:
            wanted = list(dict.fromkeys(schools))
            for school_id, members in self.school_users.items():
                if school_id not in wanted and user_id in members:
                    members.remove(user_id)
            for school_id in wanted:
                members = self.school_users.setdefault(school_id, [])
                if user_id not in members:
                    members.append(user_id)
        return user_id

    def put_class(
        self,
        klass: Mapping[str, Any],
        *,
        schools: Iterable[str] | None = None,
        members: Iterable[str] | None = None,
        teachers: Iterable[str] | None = None,
    ) -> str:
        """Add or replace an educationClass with its schools, members and teachers (teachers, the
        group's owners, are members too)."""
        class_id = self._put("classes", klass)
        if schools is not None:
            for classes in self.school_classes.values():
                if class_id in classes:
                    classes.remove(class_id)
            for school_id in dict.fromkeys(schools):
                self.school_classes.setdefault(school_id, []).append(class_id)
        if teachers is not None:
            self.class_teachers[class_id] = list(dict.fromkeys(teachers))
        if members is not None or teachers is not None:
            wanted = list(dict.fromkeys([*(members or self.class_members.get(class_id, []))]))
            for teacher in self.class_teachers.get(class_id, []):
                if teacher not in wanted:
                    wanted.append(teacher)
            self.class_members[class_id] = wanted
        self.class_members.setdefault(class_id, [])
        self.class_teachers.setdefault(class_id, [])
        return class_id

    def update_user(self, user_id: str, **properties: Any) -> None:
        """Change some properties of a user (a delta round reports only those)."""
        user = copy.deepcopy(self.objects["users"][user_id])
        user.update(properties)
        self._put("users", user)

    def remove_user(self, user_id: str, *, reason: Literal["changed", "deleted"] = "deleted") -> None:
        """Delete a user (``deleted``: for good; ``changed``: soft-deleted, restorable): it leaves every
        school and class (without a membership change entry: the user is gone)."""
        self.objects["users"].pop(user_id)
        for members in [*self.school_users.values(), *self.class_members.values(), *self.class_teachers.values()]:
            if user_id in members:
                members.remove(user_id)
        self._log("users", _Change(self._next_seq(), user_id, "removed", reason=reason))

    def change_class_members(
        self, class_id: str, *, add: Iterable[str] = (), remove: Iterable[str] = (), teachers: Iterable[str] = ()
    ) -> None:
        """Members join (``add``, ``teachers`` also as teachers) or leave (``remove``) a class: the class
        appears in the next delta round with ``members@delta``."""
        members = self.class_members.setdefault(class_id, [])
        class_teachers = self.class_teachers.setdefault(class_id, [])
        added = [*add, *teachers]
        for user_id in added:
            if user_id not in members:
                members.append(user_id)
        for user_id in teachers:
            if user_id not in class_teachers:
                class_teachers.append(user_id)
        removed = list(remove)
        for user_id in removed:
            if user_id in members:
                members.remove(user_id)
            if user_id in class_teachers:
                class_teachers.remove(user_id)
        self._log(
            "classes",
            _Change(self._next_seq(), class_id, "members", members_added=tuple(added), members_removed=tuple(removed)),
        )

    def remove_class(self, class_id: str, *, reason: Literal["changed", "deleted"] = "deleted") -> None:
        self.objects["classes"].pop(class_id)
        self.class_members.pop(class_id, None)
        self.class_teachers.pop(class_id, None)
        for classes in self.school_classes.values():
            if class_id in classes:
                classes.remove(class_id)
        self._log("classes", _Change(self._next_seq(), class_id, "removed", reason=reason))

    def remove_school(self, school_id: str, *, reason: Literal["changed", "deleted"] = "deleted") -> None:
        self.objects["schools"].pop(school_id)
        self.school_users.pop(school_id, None)
        self.school_classes.pop(school_id, None)
        self._log("schools", _Change(self._next_seq(), school_id, "removed", reason=reason))

    def load_organiser(self, records: Iterable[SourceRecord], *, today: date | None = None) -> None:
        """Fill the fake from canonical records (e.g. :func:`skolsynk_testkit.synthetic.organiser`), as School
        Data Sync would have provisioned them: school units -> schools (``schoolNumber`` = the school-unit
        code, ``externalId`` = the key), persons with enrolments -> students (``student.grade`` = the
        school year, ``graduationYear`` for year 9), persons with duties -> teachers, groups -> classes
        (members; teachers from the activities that name the group). Ids: :meth:`graph_id`."""
        records = list(records)
        by_kind: dict[EntityKind, list[SourceRecord]] = {}
        for record in records:
            by_kind.setdefault(record.kind, []).append(record)
        year_end = _school_year_end(today or datetime.now(UTC).date())
        for record in by_kind.get(EntityKind.SCHOOL_UNIT, []):
            self.put_school(
                {
                    "id": self.graph_id(EntityKind.SCHOOL_UNIT, record.key),
                    "displayName": record.data.get("display_name"),
                    "externalId": record.key,
                    "schoolNumber": record.data.get("school_unit_code"),
                    "externalSource": "sis",
                    "externalSourceDetail": "SIS",
                }
            )
        # School Data Sync has schools only: a duty at an organisation above school units (a Skola) makes
        # its holder a teacher at each school beneath it.
        organisations = {r.key for r in by_kind.get(EntityKind.ORGANISATION, [])}
        beneath: dict[str, list[str]] = {}
        for record in by_kind.get(EntityKind.SCHOOL_UNIT, []):
            if record.data.get("organisation") is not None:
                beneath.setdefault(str(record.data["organisation"]), []).append(record.key)
        duty_persons: dict[str, str] = {}
        teacher_schools: dict[str, list[str]] = {}
        for record in by_kind.get(EntityKind.DUTY, []):
            person, unit = str(record.data["person"]), str(record.data["school_unit"])
            duty_persons[record.key] = person
            for school in beneath.get(unit, []) if unit in organisations else [unit]:
                teacher_schools.setdefault(person, []).append(self.graph_id(EntityKind.SCHOOL_UNIT, school))
        for record in by_kind.get(EntityKind.PERSON, []):
            data = record.data
            user_id = self.graph_id(EntityKind.PERSON, record.key)
            emails = [e["value"] for e in data.get("emails") or [] if isinstance(e, Mapping) and e.get("value")]
            eppn = list(data.get("eppn") or [])
            user: dict[str, Any] = {
                "id": user_id,
                "accountEnabled": True,
                "givenName": data.get("given_name"),
                "surname": data.get("family_name"),
                "middleName": data.get("middle_name"),
                "displayName": " ".join(str(n) for n in (data.get("given_name"), data.get("family_name")) if n),
                "mail": emails[0] if emails else None,
                "mailNickname": record.key,
                "userPrincipalName": eppn[0] if eppn else (emails[0] if emails else f"{record.key}@fake.example"),
                "externalSource": "sis",
                "userType": "Member",
            }
            enrolments = [e for e in data.get("enrolments") or [] if isinstance(e, Mapping)]
            if enrolments:
                year = enrolments[0].get("school_year")
                user["primaryRole"] = "student"
                user["student"] = {
                    "externalId": record.key,
                    "studentNumber": record.key,
                    "grade": str(year) if year is not None else None,
                    "graduationYear": str(year_end + 9 - int(year)) if isinstance(year, int) else None,
                    "birthDate": data.get("birth_date"),
                }
                schools = [self.graph_id(EntityKind.SCHOOL_UNIT, str(e["school_unit"])) for e in enrolments]
            elif record.key in teacher_schools:
                user["primaryRole"] = "teacher"
                user["teacher"] = {"externalId": record.key, "teacherNumber": record.key}
                schools = teacher_schools[record.key]
            else:
                user["primaryRole"] = "none"
                schools = []
            self.put_user(user, schools=schools)
        group_teachers: dict[str, list[str]] = {}
        for record in by_kind.get(EntityKind.ACTIVITY, []):
            for group in record.data.get("groups") or []:
                for duty in record.data.get("teachers") or []:
                    holder = duty_persons.get(str(duty))
                    if holder is not None:
                        group_teachers.setdefault(str(group), []).append(self.graph_id(EntityKind.PERSON, holder))
        for record in by_kind.get(EntityKind.GROUP, []):
            data = record.data
            self.put_class(
                {
                    "id": self.graph_id(EntityKind.GROUP, record.key),
                    "displayName": data.get("display_name"),
                    "mailNickname": record.key,
                    "classCode": data.get("display_name"),
                    "externalId": record.key,
                    "externalName": data.get("display_name"),
                    "externalSource": "sis",
                    "description": None,
                    "grade": None,
                    "term": {"externalId": "ht", "displayName": "HT", "startDate": data.get("start_date")},
                },
                schools=[self.graph_id(EntityKind.SCHOOL_UNIT, str(data["school_unit"]))],
                members=[
                    self.graph_id(EntityKind.PERSON, str(m["person"]))
                    for m in data.get("memberships") or []
                    if isinstance(m, Mapping)
                ],
                teachers=group_teachers.get(record.key, []),
            )

    # ------------------------------------------------------------------------------------------
    # faults and tokens

    def throttle(self, n: int, *, retry_after: str | float | None = "1", status: int = 429) -> None:
        """The next ``n`` Graph requests answer ``status`` (429, 503 or 504) with ``Retry-After:
        retry_after`` written as given (``"2"``, ``"0.25"``, ``2.128``); ``None``: no header."""
        self._faults.throttled = n
        self._faults.throttle_status = status
        self._faults.retry_after = None if retry_after is None else str(retry_after)

    def fail_next(self, n: int, status: int = 503) -> None:
        """The next ``n`` Graph requests answer ``status`` (no Retry-After)."""
        self._faults.failing = n
        self._faults.failing_status = status

    def fail_page(self, resource: str, page_number: int, status: int = 500) -> None:
        """Page ``page_number`` (0-based) of every listing or delta round of ``resource`` (``users/delta``,
        ``schools``, ``classes/{id}/members`` ...) answers ``status``, always."""
        self._faults.failing_pages[(resource.strip("/"), page_number)] = status

    def clear_faults(self) -> None:
        self._faults = _Faults()

    def expire_tokens(self) -> None:
        """Every access token issued so far is expired from now on."""
        self._tokens = {token: (float("-inf"), roles) for token, (_, roles) in self._tokens.items()}

    def expire_delta_tokens(self, mode: Literal["syncStateNotFound", "gone"] = "syncStateNotFound") -> None:
        """Every delta token issued so far is no longer valid: ``400 syncStateNotFound``, or
        (``gone``) ``410 Gone`` with a ``Location`` to start again."""
        for token in self._delta_tokens.values():
            token.expired = mode

    def issue_token(self, roles: Iterable[str] | None = None) -> str:
        """A valid access token (for tests that call the API directly)."""
        granted = tuple(self.roles if roles is None else roles)
        expires = self._clock() + self.token_ttl_seconds
        header = _b64url({"typ": "JWT", "alg": "none"})
        payload = _b64url(
            {
                "aud": "https://graph.microsoft.com",
                "tid": self.azure_tenant_id,
                "appid": self.client_id,
                "roles": list(granted),
                "exp": int(time.time() + self.token_ttl_seconds),
                "jti": secrets.token_hex(8),
            }
        )
        token = f"{header}.{payload}.{secrets.token_urlsafe(16)}"
        self._tokens[token] = (expires, granted)
        self.tokens_issued += 1
        return token

    # ------------------------------------------------------------------------------------------
    # server

    def make_app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/{tenant}/oauth2/v2.0/token", self._token)
        app.router.add_get("/v1.0/education/{path:.*}", self._graph)
        return app

    # ------------------------------------------------------------------------------------------
    # token endpoint

    def _record(self, request: web.Request, status: int, page: int | None = None) -> None:
        path = request.path.removeprefix("/v1.0")
        prefer = request.headers.get("Prefer")
        self.requests.append(RequestRecord(request.method, path, dict(request.query), status, page, prefer))

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
            client_id, client_secret = unquote_plus(user), unquote_plus(password)
        response = self._token_answer(request.match_info["tenant"], form, client_id, client_secret)
        self._record(request, response.status)
        return response

    def _token_answer(self, tenant: str, form: Mapping[str, Any], client_id: Any, client_secret: Any) -> web.Response:
        if tenant != self.azure_tenant_id:
            return _entra_error(400, "invalid_request", 90002, f"Tenant '{tenant}' not found.")
        if form.get("grant_type") != "client_credentials":
            return _entra_error(400, "unsupported_grant_type", 70003, "The app requested an unsupported grant type.")
        scope = form.get("scope")
        if not isinstance(scope, str) or not scope.endswith(GRAPH_SCOPE_SUFFIX):
            return _entra_error(400, "invalid_scope", 70011, "The provided value for scope is not valid.")
        if client_id != self.client_id:
            return _entra_error(400, "unauthorized_client", 700016, "Application not found in the directory.")
        if not isinstance(client_secret, str) or not secrets.compare_digest(client_secret, self.client_secret):
            return _entra_error(401, "invalid_client", 7000215, "Invalid client secret provided.")
        token = self.issue_token()
        ttl = int(self.token_ttl_seconds)
        return web.json_response(
            {"token_type": "Bearer", "expires_in": ttl, "ext_expires_in": ttl, "access_token": token}
        )

    # ------------------------------------------------------------------------------------------
    # Graph

    def _authorise(self, request: web.Request, needs_hidden_members: bool) -> web.Response | None:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        entry = self._tokens.get(token.strip()) if scheme.lower() == "bearer" else None
        if entry is None or entry[0] <= self._clock():
            return graph_error(
                401,
                "InvalidAuthenticationToken",
                "Access token has expired or is not yet valid.",
                headers={"WWW-Authenticate": 'Bearer realm="", error="invalid_token"'},
            )
        roles = entry[1]
        if not any(r.startswith("EduRoster.") for r in roles):
            return graph_error(403, "Authorization_RequestDenied", "Insufficient privileges to complete the operation.")
        if needs_hidden_members and "Member.Read.Hidden" not in roles:
            return graph_error(403, "Authorization_RequestDenied", "Insufficient privileges to complete the operation.")
        return None

    def _fault(self) -> web.Response | None:
        faults = self._faults
        if faults.throttled > 0:
            faults.throttled -= 1
            headers = {"Retry-After": faults.retry_after} if faults.retry_after is not None else {}
            if faults.throttle_status == 429:
                return graph_error(429, "TooManyRequests", "Please retry again later.", headers=headers)
            return graph_error(
                faults.throttle_status,
                "serviceNotAvailable",
                "The service is temporarily unavailable.",
                headers=headers,
            )
        if faults.failing > 0:
            faults.failing -= 1
            return graph_error(faults.failing_status, "generalException", "An injected failure.")
        return None

    async def _graph(self, request: web.Request) -> web.Response:
        parts = [p for p in request.match_info["path"].split("/") if p]
        needs_hidden = len(parts) == 3 and parts[0] == "classes" and parts[2] in ("members", "teachers")
        failure = self._authorise(request, needs_hidden) or self._fault()
        if failure is not None:
            self._record(request, failure.status)
            return failure
        response, page = self._route(request, parts)
        self._record(request, response.status, page)
        return response

    def _route(self, request: web.Request, parts: list[str]) -> tuple[web.Response, int | None]:
        if not parts or parts[0] not in RESOURCES:
            return graph_error(400, "BadRequest", "Resource not found for the segment."), None
        resource = parts[0]
        query = dict(request.query)
        if "$skiptoken" in query:
            return self._continue(query["$skiptoken"], "/".join(parts))
        if len(parts) == 2 and parts[1] in DELTA_SUFFIXES:
            if "$deltatoken" in query:
                return self._delta_again(request, resource, query["$deltatoken"])
            return self._delta_start(request, resource, query)
        if len(parts) == 1:
            ids = list(self.objects[resource])
            return self._list(request, "/".join(parts), resource, ids, query)
        object_id = parts[1]
        if object_id not in self.objects[resource]:
            return graph_error(404, "Request_ResourceNotFound", f"Resource '{object_id}' does not exist."), None
        if len(parts) == 2:
            obj = self.objects[resource][object_id]
            select = _parse_select(query)
            body = {"@odata.context": self._context(resource, entity=True), **_select(obj, select)}
            return web.json_response(body), None
        if len(parts) == 3:
            related = self._related(resource, object_id, parts[2])
            if related is not None:
                target, ids = related
                return self._list(request, "/".join(parts), target, ids, query)
        return graph_error(400, "BadRequest", "Resource not found for the segment."), None

    def _related(self, resource: str, object_id: str, relation: str) -> tuple[str, list[str]] | None:
        if resource == "schools" and relation in ("users", "classes"):
            table = self.school_users if relation == "users" else self.school_classes
            return relation, list(table.get(object_id, []))
        if resource == "users" and relation == "schools":
            return "schools", [s for s, users in self.school_users.items() if object_id in users]
        if resource == "users" and relation == "classes":
            return "classes", [c for c, users in self.class_members.items() if object_id in users]
        if resource == "classes" and relation in ("members", "teachers"):
            table = self.class_members if relation == "members" else self.class_teachers
            return "users", list(table.get(object_id, []))
        if resource == "classes" and relation == "schools":
            return "schools", [s for s, classes in self.school_classes.items() if object_id in classes]
        return None

    def _context(self, resource: str, *, entity: bool = False, delta: bool = False) -> str:
        base = f"{self.graph_base_url}/$metadata#education/{resource}"
        if delta:
            return (
                f"{self.graph_base_url}/$metadata#Collection({ODATA_TYPES[resource].removeprefix('#microsoft.graph.')})"
            )
        return base + ("/$entity" if entity else "")

    def _page_size(self, request: web.Request, query: Mapping[str, str], default: int) -> int | web.Response:
        if "$top" in query:
            try:
                top = int(query["$top"])
            except ValueError:
                top = 0
            if not 1 <= top <= MAX_TOP:
                return graph_error(
                    400,
                    "BadRequest",
                    f"Invalid page size specified: '{query['$top']}'. Must be between 1 and {MAX_TOP} inclusive.",
                )
            return top
        prefer = request.headers.get("Prefer", "")
        for part in prefer.split(","):
            name, _, value = part.strip().partition("=")
            if name.strip().lower() == "odata.maxpagesize" and value.strip().isdigit():
                return max(1, min(MAX_TOP, int(value.strip())))
        return default

    def _list(
        self, request: web.Request, path: str, resource: str, ids: list[str], query: Mapping[str, str]
    ) -> tuple[web.Response, int | None]:
        size = self._page_size(request, query, self.default_page_size)
        if isinstance(size, web.Response):
            return size, None
        select = _parse_select(query)
        entries = [_select(self.objects[resource][i], select) for i in ids if i in self.objects[resource]]
        cursor = _Cursor(path, entries, 0, 0, size, self._context(resource))
        return self._serve(cursor)

    def _continue(self, skiptoken: str, path: str) -> tuple[web.Response, int | None]:
        cursor = self._cursors.get(skiptoken)
        if cursor is None or cursor.path != path:
            return graph_error(400, "BadRequest", "The skip token is not valid."), None
        return self._serve(cursor)

    def _serve(self, cursor: _Cursor) -> tuple[web.Response, int | None]:
        failing = self._faults.failing_pages.get((cursor.path, cursor.page))
        if failing is not None:
            return graph_error(failing, "generalException", "An injected page failure."), cursor.page
        body: dict[str, Any] = {"@odata.context": cursor.context}
        if cursor.empty_left > 0:
            window: list[dict[str, Any]] = []
            following = replace(cursor, page=cursor.page + 1, empty_left=cursor.empty_left - 1)
        else:
            window = cursor.entries[cursor.offset : cursor.offset + cursor.size]
            following = replace(cursor, offset=cursor.offset + len(window), page=cursor.page + 1)
        body["value"] = window
        more_data = following.offset < len(following.entries) or following.empty_left > 0
        if cursor.resource is None:
            if more_data:
                body["@odata.nextLink"] = self._next_link(following)
        elif more_data or window:
            # A delta round ends with an (empty) page that carries the delta link.
            body["@odata.nextLink"] = self._next_link(following)
        else:
            body["@odata.deltaLink"] = self._delta_link(cursor)
        return web.json_response(body), cursor.page

    def _next_link(self, cursor: _Cursor) -> str:
        token = secrets.token_urlsafe(18)
        self._cursors[token] = cursor
        return f"{self.graph_base_url}/education/{cursor.path}?$skiptoken={token}"

    def _delta_link(self, cursor: _Cursor) -> str:
        assert cursor.resource is not None
        token = secrets.token_urlsafe(24)
        self._delta_tokens[token] = _DeltaToken(cursor.resource, cursor.end_seq, self._clock(), cursor.select)
        return f"{self.graph_base_url}/education/{cursor.resource}/delta?$deltatoken={token}"

    def _delta_start(
        self, request: web.Request, resource: str, query: Mapping[str, str]
    ) -> tuple[web.Response, int | None]:
        size = self._page_size(request, query, self.delta_page_size)
        if isinstance(size, web.Response):
            return size, None
        select = _parse_select(query)
        entries = [
            {"@odata.type": ODATA_TYPES[resource], **_select(obj, select)} for obj in self.objects[resource].values()
        ]
        if resource == "classes" and (select is None or "members" in select):
            for entry in entries:
                entry["members@delta"] = [
                    {"@odata.type": "#microsoft.graph.user", "id": m} for m in self.class_members.get(entry["id"], [])
                ]
        return self._serve(self._round(resource, entries, size, select))

    def _round(
        self, resource: str, entries: list[dict[str, Any]], size: int, select: tuple[str, ...] | None
    ) -> _Cursor:
        return _Cursor(
            path=f"{resource}/delta",
            entries=entries,
            offset=0,
            page=0,
            size=size,
            context=self._context(resource, delta=True),
            resource=resource,
            end_seq=self._seq,
            select=select,
            empty_left=self.empty_delta_pages,
        )

    def _delta_again(self, request: web.Request, resource: str, token_text: str) -> tuple[web.Response, int | None]:
        token = self._delta_tokens.get(token_text)
        if token is None or token.resource != resource:
            return graph_error(400, "syncStateNotFound", "The sync state could not be found."), None
        too_old = self._clock() - token.issued_at > self.delta_token_ttl_seconds
        if token.expired == "gone":
            fresh = f"{self.graph_base_url}/education/{resource}/delta"
            if token.select:
                fresh += "?$select=" + quote(",".join(token.select), safe=",")
            return graph_error(
                410, "resyncRequired", "The delta token has expired; resync required.", headers={"Location": fresh}
            ), None
        if token.expired or too_old:
            return graph_error(400, "syncStateNotFound", "The sync state generation is not found or has expired."), None
        size = self._page_size(request, {}, self.delta_page_size)
        if isinstance(size, web.Response):
            return size, None
        entries = self._changes_since(resource, token.seq, token.select)
        if self.replay_changes:
            entries = entries + copy.deepcopy(entries)
        return self._serve(self._round(resource, entries, size, token.select))

    def _changes_since(self, resource: str, seq: int, select: tuple[str, ...] | None) -> list[dict[str, Any]]:
        """One entry per changed object (in the order of their last change): the whole object when it is
        new, the changed properties when updated, a tombstone when removed; classes whose membership
        changed carry ``members@delta``."""
        pending: dict[str, list[_Change]] = {}
        for change in self.changes[resource]:
            if change.seq > seq:
                pending.setdefault(change.object_id, []).append(change)
        ordered = sorted(pending.items(), key=lambda item: item[1][-1].seq)
        entries: list[dict[str, Any]] = []
        for object_id, changes in ordered:
            last = changes[-1]
            if last.what == "removed" or object_id not in self.objects[resource]:
                if resource not in self.removals_in_delta:
                    continue  # gone without a trace in delta: a listing shows it
                entries.append(
                    {"id": object_id, "@removed": {"reason": last.reason if last.what == "removed" else "deleted"}}
                )
                continue
            obj = self.objects[resource][object_id]
            whole = any(c.what == "upsert" and c.properties is None for c in changes)
            properties: set[str] = set()
            for change in changes:
                if change.what == "upsert" and change.properties is not None:
                    properties |= change.properties
            entry: dict[str, Any] = {"@odata.type": ODATA_TYPES[resource], "id": object_id}
            if whole:
                entry.update(_select(obj, select))
            else:
                entry.update(
                    {
                        k: copy.deepcopy(obj[k])
                        for k in sorted(properties)
                        if k in obj and (select is None or k in select)
                    }
                )
            # As Graph tracks groups: a $select limits what is tracked, and membership is tracked only when
            # ``members`` is selected (or nothing is); a change of nothing tracked is not reported at all.
            tracks_members = select is None or "members" in select
            member_changes = [c for c in changes if c.what == "members"] if tracks_members else []
            if not whole and len(entry) == 2 and not member_changes:
                continue
            if member_changes:
                delta: list[dict[str, Any]] = []
                for change in member_changes:
                    delta += [{"@odata.type": "#microsoft.graph.user", "id": m} for m in change.members_added]
                    delta += [
                        {"@odata.type": "#microsoft.graph.user", "id": m, "@removed": {"reason": "deleted"}}
                        for m in change.members_removed
                    ]
                entry["members@delta"] = delta
            entries.append(entry)
        return entries


def _parse_select(query: Mapping[str, str]) -> tuple[str, ...] | None:
    raw = query.get("$select")
    if not raw:
        return None
    return tuple(p.strip() for p in raw.split(",") if p.strip())


# ----------------------------------------------------------------------------------------------
# command line


def _argument_parser() -> argparse.ArgumentParser:
    parser = argument_parser(
        "python -m skolsynk_testkit.fakes.graph_education",
        "A fake Microsoft Graph Education API and Entra token endpoint. Serves until SIGTERM/SIGINT.",
    )
    parser.add_argument("--azure-tenant-id", default="6f1d3a4e-2b7c-4e8f-9a10-5c2d7e8f9a01")
    parser.add_argument("--client-id", default="7c2e4a10-0d3b-4b6f-8e21-9a4c5b6d7e02")
    parser.add_argument("--client-secret", default="graph-client-secret")
    parser.add_argument("--organiser-units", type=int, default=0, help="load a synthetic organiser of N school units")
    parser.add_argument("--students-per-unit", type=int, default=12)
    parser.add_argument("--seed", type=int, default=1)
    return parser


async def _serve(args: argparse.Namespace) -> int:
    fake = FakeGraphEducation(
        azure_tenant_id=args.azure_tenant_id, client_id=args.client_id, client_secret=args.client_secret
    )
    if args.organiser_units > 0:
        from skolsynk_testkit.synthetic import organiser

        fake.load_organiser(
            organiser(seed=args.seed, school_units=args.organiser_units, students_per_unit=args.students_per_unit)
        )

    def ready() -> str:
        counts = ", ".join(f"{len(objects)} {resource}" for resource, objects in fake.objects.items())
        return f"fake Graph Education listening on {fake.graph_base_url} (token URL {fake.token_url}; {counts})"

    return await serve_until_signalled(
        lambda: fake.start(args.host, args.port), fake.stop, ready, "fake Graph Education stopped"
    )


def main(argv: Sequence[str] | None = None) -> int:
    return asyncio.run(_serve(_argument_parser().parse_args(argv)))


if __name__ == "__main__":
    raise SystemExit(main())
