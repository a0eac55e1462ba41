"""A local fake of Google Workspace's Admin SDK (Directory API v1, Reports API v1) and Google's OAuth 2.0
token endpoint: what the Google connector reads from.

Built from the description in ``/work/shared/ref/source-apis.md`` (sections 1.1-1.4, 1.6 and 5.1); no
third-party code. Behaviour:

* **Token** ``POST /token`` (form ``grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer&assertion=<JWT>``):
  the assertion must be an RS256 JWT of a registered service account (:meth:`add_service_account`), its
  signature valid against the account's public key (``kid``, when present, naming the account's key),
  ``aud`` exactly Google's ``https://oauth2.googleapis.com/token`` (the only audience Google accepts, also
  when the token is asked for at another address, as from this fake), ``exp - iat`` at most one hour and
  within a 5 minute clock skew, and every requested
  ``scope`` on the account's domain-wide-delegation allow-list. Answers ``{"access_token", "expires_in",
  "token_type": "Bearer"}``; errors as Google's: ``400 invalid_grant`` (bad signature, unknown account,
  bad ``aud``, stale or long-lived token, unknown ``sub``), ``401 unauthorized_client`` (a scope not
  allowed), ``400 unsupported_grant_type``; :meth:`fail_token` forces an error (also
  ``503 temporarily_unavailable``).
* **Bearer check** on every API call: a missing, unknown or expired token is ``401 authError``; a token
  without a scope the endpoint needs is ``403 insufficientPermissions``; a token whose ``sub`` is not an
  administrator (or that has no ``sub``) is ``403 forbidden`` "Not Authorized to access this resource/api".
* ``GET /admin/directory/v1/users``: ``customer`` (``my_customer`` or the customer id) or ``domain``
  required (else ``400 invalid``); ``maxResults`` clamped to 1..500 (default 100); opaque ``pageToken``
  tied to the other parameters (reused with different ones, unknown or expired: ``400``); ``nextPageToken``
  only when more follow; ``users`` omitted when there are none; ``projection`` ``basic`` (no
  ``customSchemas``), ``custom`` (only the schemas in ``customFieldMask``, which is then required) or
  ``full``; ``showDeleted=true`` lists deleted users with ``deletionTime``; ``orderBy``
  ``email|givenName|familyName`` with ``sortOrder``; and a subset of the search language in ``query``:
  ``orgUnitPath=`` (the OU and every OU below it; ``/`` is everyone), ``isSuspended=``, ``isArchived=``,
  ``isAdmin=``, ``email`` (``=``, ``:``, ``:prefix*``), ``givenName``/``familyName``/``name``
  (``=`` exact, ``:`` prefix), ``externalId`` and ``Schema.field`` (``=``, ``:``); clauses separated by
  spaces are ANDed; values with spaces in single quotes, ``\\'`` escapes a quote. Anything else, and
  an ``orgUnitPath`` that does not exist, is ``400 invalid``. No snapshot: a mutation between pages
  shifts what the next page holds, as on Google. A ``query`` goes through a search index that can be made
  to lag (:meth:`FakeGoogleDirectory.lag_search_index`: new and moved users missing from or misplaced in
  search results, as Google documents for up to 36 hours); a list without ``query`` is always current.
  Every user has ``emails[]`` with its primary address (``primary: true``), as Google returns it.
* ``GET /admin/directory/v1/users/{userKey}`` (id or primary address; ``projection``, ``customFieldMask``):
  one user, current (never through the search index), ``404 notFound`` when there is none.
* ``GET /admin/directory/v1/customer/{customer}/orgunits?orgUnitPath=&type=children|all|allIncludingParent``
  (not paged; ``organizationUnits`` omitted when empty), ``GET .../customer/{customer}/schemas``.
* ``GET /admin/directory/v1/groups`` (``customer``/``domain``/``userKey``, ``maxResults`` <= 200,
  ``pageToken``, ``query`` with ``email:``/``name:`` prefixes) and ``GET .../groups/{groupKey}/members``
  (``roles``, ``includeDerivedMembership`` expanding nested groups, ``maxResults`` <= 200, ``pageToken``;
  an unknown group is ``404 notFound``).
* ``POST /admin/directory/v1/users/watch?customer=…&event=add|delete|update|undelete|makeAdmin`` (push
  notifications): body ``{"id", "type": "web_hook", "address", "token", "params": {"ttl"}}``; the address
  must be HTTPS (plain HTTP only for a loopback host), a channel id is usable once (``channelIdNotUnique``),
  the lifetime is ``params.ttl`` capped at 6 hours. Answers the Channel (``resourceId``, ``resourceUri``,
  ``expiration`` in epoch milliseconds), then POSTs ``sync`` and, on every matching change made through the
  mutation helpers, the event to the address with ``X-Goog-Channel-ID``, ``X-Goog-Channel-Token``,
  ``X-Goog-Channel-Expiration``, ``X-Goog-Resource-ID``, ``X-Goog-Resource-URI``, ``X-Goog-Resource-State``
  and ``X-Goog-Message-Number``, the user (``kind``, ``id``, ``etag``, ``primaryEmail``) as the body; every
  delivery is in :attr:`FakeGoogleDirectory.notifications` (no retries). ``POST
  /admin/directory_v1/channels/stop`` with ``{"id", "resourceId"}``: ``204``, ``404 notFound`` when unknown.
* ``GET /admin/reports/v1/activity/users/{userKey}/applications/admin`` (``eventName``, ``startTime``,
  ``endTime``, ``maxResults`` <= 1000, ``pageToken``): admin audit events, newest first, in Google's item
  shape. The mutation helpers record the matching event (``MOVE_USER_TO_ORG_UNIT``, ``SUSPEND_USER``,
  ``DELETE_USER``, ...); ``event_lag_seconds`` delays their visibility.
* **Faults** (after authentication, data endpoints only), in Google's error JSON (``error.code``,
  ``error.message``, ``error.errors[0].{domain,reason,message}``, ``error.status``) and never with a
  ``Retry-After``: :meth:`fail_next` (the next n requests), :meth:`fail_every` (every n-th request: a storm),
  :meth:`fail_page` (one page of a listing, always), :meth:`quota` (more than n requests per window).
  :data:`FAULTS` names the answers: ``userRateLimitExceeded``, ``rateLimitExceeded`` and ``quotaExceeded``
  (403), ``429``, ``backendError`` (503), ``internalError`` (500), ``forbidden``, ``notAuthorized`` and
  ``insufficientPermissions`` (403).
* :attr:`requests`: every request answered, for assertions (no bodies, no tokens).

:meth:`FakeGoogleDirectory.load_organiser` fills the directory from canonical records (for example
``skolsynk_testkit.synthetic.organiser()``), in this layout (``deploy/google-sources.example.yaml`` maps it back):

* OU ``/Skolor``; per school unit ``/Skolor/{display name}`` with the description
  ``Skolenhetskod {code}`` and the sub-OUs ``Elever`` and ``Personal``;
* a person with an enrolment is a user in ``/Skolor/{unit}/Elever``, a person with a duty one in
  ``/Skolor/{unit}/Personal``, anyone else one in ``/Skolor`` (no school unit);
* ``externalIds`` holds the person's key as ``{"type": "organization", "value": key}`` (a SIS id);
* ``primaryEmail`` is the person's first e-mail address (else the first eppn); custom schema ``SS12000``
  holds ``EPPN`` (the first eppn), ``Personnummer`` (civic number), ``Arskurs`` (school year) and
  ``Skolform`` (school type of the first enrolment);
* a group is a Google group ``klass-{key}@{groups domain}`` (group type ``Klass``) or ``grupp-{key}@...``
  (other types), named by its display name, its members ``MEMBER``s; the teachers of an activity (the
  persons of its duties) are ``OWNER``s of the activity's groups. Activity names are not kept: the connector
  names an activity after its group.

Run it for the demo: ``python -m skolsynk_testkit.fakes.google_directory --key-file key.json`` writes a freshly
generated service-account key (``token_uri`` pointing at the fake) and serves a synthetic organiser.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import copy
import hashlib
import json
import os
import re
import secrets
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import formatdate
from pathlib import Path
from typing import Any, Final

import aiohttp
from aiohttp import web
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from yarl import URL

from skolsynk.contracts.source import SourceRecord
from skolsynk.domain.ss12000 import EntityKind
from skolsynk_testkit.fakes._server import FakeHttpServer, argument_parser, query_lists, serve_until_signalled

__all__ = [
    "ALL_SCOPES",
    "FAULTS",
    "GOOGLE_TOKEN_URI",
    "JWT_BEARER_GRANT",
    "SCOPE_PREFIX",
    "FakeGoogleDirectory",
    "Fault",
    "LoadedOrganiser",
    "RequestRecord",
    "generate_service_account_key",
]

GOOGLE_TOKEN_URI: Final = "https://oauth2.googleapis.com/token"  # noqa: S105 (a URL)
JWT_BEARER_GRANT: Final = "urn:ietf:params:oauth:grant-type:jwt-bearer"
SCOPE_PREFIX: Final = "https://www.googleapis.com/auth/"
DIRECTORY: Final = "/admin/directory/v1"
REPORTS: Final = "/admin/reports/v1"
MAX_TOKEN_LIFETIME_SECONDS: Final = 3600
#: Where channels.stop lives (the discovery document's path: the API name, not ``directory/v1``).
CHANNELS: Final = "/admin/directory_v1/channels"
#: users.watch events (the discovery document's enum).
WATCH_EVENTS: Final = frozenset({"add", "delete", "makeAdmin", "undelete", "update"})
#: A channel lives ``params.ttl`` seconds, 6 hours when not given and at most 6 hours here (the stricter
#: limit Google states for Admin SDK channels; the Channel schema's generic text allows up to 2 days).
WATCH_MAX_TTL_SECONDS: Final = 21600
CLOCK_SKEW_SECONDS: Final = 300

#: Scopes an endpoint accepts (any one of them is enough), without the prefix.
ENDPOINT_SCOPES: Final[dict[str, frozenset[str]]] = {
    "users": frozenset({"admin.directory.user.readonly", "admin.directory.user"}),
    "orgunits": frozenset({"admin.directory.orgunit.readonly", "admin.directory.orgunit"}),
    "schemas": frozenset({"admin.directory.userschema.readonly", "admin.directory.userschema"}),
    "groups": frozenset({"admin.directory.group.readonly", "admin.directory.group"}),
    "members": frozenset(
        {
            "admin.directory.group.member.readonly",
            "admin.directory.group.member",
            "admin.directory.group.readonly",
            "admin.directory.group",
        }
    ),
    "activities": frozenset({"admin.reports.audit.readonly"}),
}
ALL_SCOPES: Final[frozenset[str]] = frozenset(SCOPE_PREFIX + s for scopes in ENDPOINT_SCOPES.values() for s in scopes)


@dataclass(frozen=True)
class Fault:
    """One of Google's error answers."""

    status: int
    reason: str
    message: str
    domain: str = "global"
    status_text: str | None = None


FAULTS: Final[dict[str, Fault]] = {
    "userRateLimitExceeded": Fault(403, "userRateLimitExceeded", "User Rate Limit Exceeded", "usageLimits"),
    "rateLimitExceeded": Fault(
        403,
        "rateLimitExceeded",
        "Quota exceeded for quota metric 'Queries' and limit 'Queries per minute per user' of service "
        "'admin.googleapis.com' for consumer 'project_number:000000000000'.",
        "usageLimits",
        "PERMISSION_DENIED",
    ),
    "quotaExceeded": Fault(403, "quotaExceeded", "Quota exceeded for concurrent requests.", "usageLimits"),
    "429": Fault(
        429, "rateLimitExceeded", "Resource has been exhausted (e.g. check quota).", "global", "RESOURCE_EXHAUSTED"
    ),
    "backendError": Fault(503, "backendError", "Service unavailable. Please try again", "global", "UNAVAILABLE"),
    "internalError": Fault(500, "internalError", "Internal error encountered.", "global", "INTERNAL"),
    "forbidden": Fault(403, "forbidden", "Not Authorized to access this resource/api", "global", "PERMISSION_DENIED"),
    "notAuthorized": Fault(
        403, "notAuthorized", "Not Authorized to access this resource/api", "global", "PERMISSION_DENIED"
    ),
    "insufficientPermissions": Fault(
        403,
        "insufficientPermissions",
        "Request had insufficient authentication scopes.",
        "global",
        "PERMISSION_DENIED",
    ),
}  # fmt: skip

#: Token endpoint errors :meth:`FakeGoogleDirectory.fail_token` can force: (status, description).
TOKEN_ERRORS: Final[dict[str, tuple[int, str]]] = {
    "invalid_grant": (400, "Invalid grant: account not found"),
    "unauthorized_client": (
        401,
        "Client is unauthorized to retrieve access tokens using this method, or client not authorized for any "
        "of the scopes requested.",
    ),
    "invalid_client": (401, "The OAuth client was not found."),
    "temporarily_unavailable": (503, "The service is temporarily unavailable."),
}


@dataclass(frozen=True)
class RequestRecord:
    """One answered request: method, path, the endpoint it belongs to, query (multi-valued), status, and
    for list pages the 0-based page number within the listing."""

    method: str
    path: str
    endpoint: str
    query: dict[str, list[str]]
    status: int
    page: int | None = None


@dataclass(frozen=True)
class NotificationRecord:
    """One push notification the fake delivered: the channel, the resource state (``sync``, ``add`` ...),
    the message number and the receiver's answer (0: it could not be reached)."""

    channel_id: str
    state: str
    message_number: int
    status: int


@dataclass
class _Channel:
    channel_id: str
    event: str
    address: str
    token: str | None
    resource_id: str
    resource_uri: str
    expires_at: float
    messages: int = 0


@dataclass
class _Account:
    client_email: str
    key_id: str | None
    public_key: rsa.RSAPublicKey
    scopes: frozenset[str] | None  # the domain-wide-delegation allow-list; None = every scope


@dataclass(frozen=True)
class _Token:
    subject: str | None
    scopes: frozenset[str]
    expires_at: float


@dataclass
class _Cursor:
    listing: str
    offset: int
    page: int
    expires_at: float


@dataclass
class _Faults:
    next_count: int = 0
    next_fault: Fault | None = None
    next_endpoints: frozenset[str] | None = None
    every: int = 0
    every_fault: Fault | None = None
    every_counter: int = 0
    pages: dict[tuple[str, int], Fault] = field(default_factory=dict)
    quota_max: int = 0
    quota_window: float = 60.0
    quota_fault: Fault | None = None
    quota_times: list[float] = field(default_factory=list)
    token_error: str | None = None
    token_error_count: int | None = None


@dataclass
class LoadedOrganiser:
    """What :meth:`FakeGoogleDirectory.load_organiser` created, by the canonical records' keys."""

    user_ids: dict[str, str] = field(default_factory=dict)
    group_ids: dict[str, str] = field(default_factory=dict)
    group_emails: dict[str, str] = field(default_factory=dict)
    unit_org_units: dict[str, str] = field(default_factory=dict)


class _BadRequest(Exception):
    def __init__(self, message: str, reason: str = "invalid", status: int = 400) -> None:
        self.message = message
        self.reason = reason
        self.status = status
        super().__init__(message)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _digits(seed: str, length: int) -> str:
    number = int.from_bytes(hashlib.sha256(seed.encode()).digest()[:12], "big")
    return str(10 ** (length - 1) + number % (9 * 10 ** (length - 1)))


def _short_id(seed: str, length: int = 15) -> str:
    alphabet = "0123456789abcdefghijklmnopqrstuvwxyz"
    number = int.from_bytes(hashlib.sha256(seed.encode()).digest()[:16], "big")
    out = ["0"]
    while len(out) < length:
        number, rest = divmod(number, len(alphabet))
        out.append(alphabet[rest])
    return "".join(out)


def _etag(value: Any) -> str:
    return '"' + _b64url(hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).digest()[:18]) + '"'


def _rfc3339(when: float) -> str:
    return datetime.fromtimestamp(when, UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{int(when * 1000) % 1000:03d}Z"


def _parse_rfc3339(value: str) -> float:
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        raise ValueError("a time zone is required")
    return parsed.timestamp()


def _parent(path: str) -> str:
    return path.rsplit("/", 1)[0] or "/"


def _under(path: str, root: str) -> bool:
    """``path`` is ``root`` or below it (case-insensitive, as Google compares OU paths)."""
    path, root = path.casefold(), root.casefold().rstrip("/")
    return root == "" or path == root or path.startswith(root + "/")


def generate_service_account_key(
    *, client_email: str, token_uri: str = GOOGLE_TOKEN_URI, project_id: str = "skolsynk-fake", key_size: int = 2048
) -> dict[str, str]:
    """A fresh service-account key file's content (a throwaway RSA key, generated now: never commit one)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=key_size)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode("ascii")
    return {
        "type": "service_account",
        "project_id": project_id,
        "private_key_id": secrets.token_hex(20),
        "private_key": pem,
        "client_email": client_email,
        "client_id": _digits(client_email, 21),
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": token_uri,
    }


# --- the search language of users.list ------------------------------------------------------------

_CLAUSE = re.compile(r"\s*([A-Za-z][A-Za-z0-9_.]*)\s*(=|:)\s*('(?:[^'\\]|\\.)*'|[^\s']+)")
_BOOLEAN_FIELDS: Final = {"isSuspended": "suspended", "isArchived": "archived", "isAdmin": "isAdmin"}


def parse_query(query: str) -> list[tuple[str, str, str]]:
    """``field op value`` clauses (values unquoted); :class:`_BadRequest` for anything else."""
    clauses: list[tuple[str, str, str]] = []
    position = 0
    text = query.strip()
    while position < len(text):
        match = _CLAUSE.match(text, position)
        if match is None:
            raise _BadRequest("Invalid Input: query")
        name, operator, raw = match.groups()
        if raw.startswith("'"):
            raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
        clauses.append((name, operator, raw))
        position = match.end()
        if position < len(text) and not text[position].isspace():
            raise _BadRequest("Invalid Input: query")
    return clauses


def _text_matches(candidates: Iterable[str], operator: str, value: str) -> bool:
    wanted = value.casefold()
    for candidate in candidates:
        folded = candidate.casefold()
        if operator == "=" and folded == wanted:
            return True
        if operator == ":" and (folded.startswith(wanted.rstrip("*")) if wanted.endswith("*") else wanted in folded):
            return True
    return False


def _schema_values(user: Mapping[str, Any], schema: str, name: str) -> list[str]:
    value = (user.get("customSchemas") or {}).get(schema, {}).get(name)
    if value is None:
        return []
    items = value if isinstance(value, list) else [value]
    return [str(item.get("value") if isinstance(item, Mapping) else item) for item in items]


def _user_matches(user: Mapping[str, Any], clauses: list[tuple[str, str, str]]) -> bool:
    for name, operator, value in clauses:
        if name == "orgUnitPath":
            if operator != "=":
                raise _BadRequest("Invalid Input: orgUnitPath")
            if not _under(str(user.get("orgUnitPath", "/")), value):
                return False
        elif name in _BOOLEAN_FIELDS:
            if value.lower() not in ("true", "false"):
                raise _BadRequest(f"Invalid Input: {name}")
            if bool(user.get(_BOOLEAN_FIELDS[name], False)) != (value.lower() == "true"):
                return False
        elif name == "email":
            emails = [str(user.get("primaryEmail", ""))] + [str(e.get("address", "")) for e in user.get("emails", [])]
            if not _text_matches(emails, operator, value):
                return False
        elif name in ("givenName", "familyName", "name"):
            names = user.get("name") or {}
            candidates = [str(names.get("fullName", ""))] if name == "name" else [str(names.get(name, ""))]
            if not _text_matches(candidates, operator if operator == "=" else ":", value):
                return False
        elif name == "externalId":
            if not _text_matches((str(e.get("value", "")) for e in user.get("externalIds", [])), operator, value):
                return False
        elif "." in name:
            schema, _, field_name = name.partition(".")
            if not _text_matches(_schema_values(user, schema, field_name), operator, value):
                return False
        else:
            raise _BadRequest(f"Invalid Input: {name}")
    return True


def _google_error(fault: Fault, message: str | None = None) -> web.Response:
    text = message or fault.message
    error: dict[str, Any] = {
        "code": fault.status,
        "message": text,
        "errors": [{"message": text, "domain": fault.domain, "reason": fault.reason}],
    }
    if fault.status_text:
        error["status"] = fault.status_text
    return web.json_response({"error": error}, status=fault.status)


def _bad_request(error: _BadRequest) -> web.Response:
    status_text = {400: "INVALID_ARGUMENT", 404: "NOT_FOUND"}.get(error.status)
    return _google_error(Fault(error.status, error.reason, error.message, "global", status_text))


class FakeGoogleDirectory(FakeHttpServer[RequestRecord]):
    """Google's Directory and Reports APIs and token endpoint on a local port; see the module docstring."""

    def __init__(
        self,
        *,
        service_account_key: Mapping[str, Any] | None = None,
        admins: Iterable[str] = ("admin@demo.skolsynk.example",),
        dwd_scopes: Iterable[str] | None = None,
        customer_id: str = "C03az79cb",
        domain: str = "demo.skolsynk.example",
        token_ttl_seconds: int = 3599,
        page_token_ttl_seconds: float = 3 * 24 * 3600,
        event_lag_seconds: float = 0.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__()
        self.customer_id = customer_id
        self.domain = domain
        self.admins = {a.casefold() for a in admins}
        self.token_ttl_seconds = token_ttl_seconds
        self.page_token_ttl_seconds = page_token_ttl_seconds
        self.event_lag_seconds = event_lag_seconds
        self._clock = clock
        self.org_units: dict[str, dict[str, Any]] = {}
        self.users: dict[str, dict[str, Any]] = {}
        self.deleted_users: dict[str, dict[str, Any]] = {}
        #: The search index as it lags (:meth:`lag_search_index`): the users as a ``query`` finds them, or
        #: None when the index is current.
        self.search_index: dict[str, dict[str, Any]] | None = None
        self.groups: dict[str, dict[str, Any]] = {}
        #: group id -> member key (user or group id) -> role
        self.members: dict[str, dict[str, str]] = {}
        self.schemas: dict[str, list[str]] = {}
        self.events: list[dict[str, Any]] = []
        self.tokens_issued = 0
        #: Open users.watch channels by id, and every notification delivered through them.
        self.channels: dict[str, _Channel] = {}
        self.notifications: list[NotificationRecord] = []
        self._deliveries: set[asyncio.Task[None]] = set()
        self._push_session: aiohttp.ClientSession | None = None
        self._accounts: dict[str, _Account] = {}
        self._tokens: dict[str, _Token] = {}
        self._cursors: dict[str, _Cursor] = {}
        self._faults = _Faults()
        self._root_id = "id:" + _short_id(f"root:{customer_id}", 14)
        if service_account_key is not None:
            self.add_service_account(service_account_key, scopes=dwd_scopes)

    # ------------------------------------------------------------------------------------------
    # accounts and tokens

    def add_service_account(self, key: Mapping[str, Any], *, scopes: Iterable[str] | None = None) -> None:
        """Trust a service account (its public key, from the key file's private key) and grant it
        domain-wide delegation for ``scopes`` (full URLs; ``None``: every scope)."""
        private = serialization.load_pem_private_key(str(key["private_key"]).encode(), password=None)
        if not isinstance(private, rsa.RSAPrivateKey):
            raise ValueError("a service account key must be an RSA key")
        email = str(key["client_email"])
        self._accounts[email] = _Account(
            email,
            str(key["private_key_id"]) if key.get("private_key_id") else None,
            private.public_key(),
            frozenset(scopes) if scopes is not None else None,
        )

    def set_delegated_scopes(self, client_email: str, scopes: Iterable[str] | None) -> None:
        """Change a service account's domain-wide-delegation allow-list (the Admin console setting)."""
        self._accounts[client_email].scopes = frozenset(scopes) if scopes is not None else None

    def expire_tokens(self) -> None:
        """Every access token issued so far is expired from now on."""
        self._tokens = {t: _Token(v.subject, v.scopes, float("-inf")) for t, v in self._tokens.items()}

    def expire_page_tokens(self) -> None:
        """Every page token handed out so far is expired (Google: valid for three days)."""
        for cursor in self._cursors.values():
            cursor.expires_at = float("-inf")

    def issue_token(self, subject: str | None, scopes: Iterable[str] = ALL_SCOPES) -> str:
        """An access token (for tests that call the API directly)."""
        token = "ya29.fake-" + secrets.token_urlsafe(24)
        self._tokens[token] = _Token(
            subject.casefold() if subject else None, frozenset(scopes), self._clock() + self.token_ttl_seconds
        )
        self.tokens_issued += 1
        return token

    # ------------------------------------------------------------------------------------------
    # directory data

    def _org_unit_id(self, path: str) -> str:
        return self._root_id if path == "/" else self.org_units[path.casefold()]["orgUnitId"]

    def add_org_unit(self, path: str, *, description: str = "") -> dict[str, Any]:
        """Create an OU (and any missing parent OUs); returns it. An existing one gets ``description``."""
        path = "/" + path.strip("/")
        if path == "/":
            raise ValueError("the root OU always exists")
        existing = self.org_units.get(path.casefold())
        if existing is not None:
            if description:
                existing["description"] = description
            return existing
        parent = _parent(path)
        if parent != "/":
            self.add_org_unit(parent)
        unit: dict[str, Any] = {
            "kind": "admin#directory#orgUnit",
            "name": path.rsplit("/", 1)[1],
            "orgUnitPath": path,
            "orgUnitId": "id:" + _short_id(f"ou:{self.customer_id}:{path.casefold()}", 14),
            "parentOrgUnitPath": parent,
            "parentOrgUnitId": self._org_unit_id(parent),
        }
        if description:
            unit["description"] = description
        unit["etag"] = _etag(unit)
        self.org_units[path.casefold()] = unit
        return unit

    def define_schema(self, name: str, fields: Iterable[str]) -> None:
        """A custom user schema (for ``schemas.list`` and the ``customFieldMask`` check)."""
        self.schemas[name] = list(fields)

    def put_user(self, user: Mapping[str, Any]) -> dict[str, Any]:
        """Add or replace a user resource (by ``id``; one is made from ``primaryEmail`` when missing).
        Its ``orgUnitPath`` must exist."""
        stored = copy.deepcopy(dict(user))
        email = str(stored.get("primaryEmail") or "")
        if "@" not in email:
            raise ValueError("a user needs a primaryEmail")
        stored.setdefault("id", _digits(f"user:{email.casefold()}", 21))
        path = str(stored.setdefault("orgUnitPath", "/"))
        if path != "/" and path.casefold() not in self.org_units:
            raise ValueError("the user's orgUnitPath does not exist")
        stored.setdefault("kind", "admin#directory#user")
        stored.setdefault("customerId", self.customer_id)
        stored.setdefault("isAdmin", email.casefold() in self.admins)
        stored.setdefault("isDelegatedAdmin", False)
        stored.setdefault("suspended", False)
        stored.setdefault("archived", False)
        stored.setdefault("includeInGlobalAddressList", True)
        stored.setdefault("creationTime", _rfc3339(self._clock()))
        # Google always returns the primary address in emails[] too (with aliases and others beside it).
        stored.setdefault("emails", [{"address": email, "primary": True}])
        stored.pop("etag", None)
        stored["etag"] = _etag(stored)
        event = "update" if str(stored["id"]) in self.users else "add"
        self.users[str(stored["id"])] = stored
        self._notify(event, stored)
        return stored

    def lag_search_index(self) -> None:
        """From now on a ``users.list`` with a ``query`` sees the users as they are now: created and moved
        users do not show in (or move within) search results until :meth:`catch_up_search_index`. Google:
        "it can take up to 36 hours for a new user or a change to appear in search results". Listing by
        customer or domain without a query, and ``users.get``, always see the current state."""
        self.search_index = copy.deepcopy(self.users)

    def catch_up_search_index(self) -> None:
        self.search_index = None

    def add_user(
        self,
        primary_email: str,
        given_name: str,
        family_name: str,
        *,
        org_unit_path: str = "/",
        custom_schemas: Mapping[str, Mapping[str, Any]] | None = None,
        external_ids: Sequence[Mapping[str, str]] = (),
        user_id: str | None = None,
        audit: bool = True,
    ) -> dict[str, Any]:
        user: dict[str, Any] = {
            "primaryEmail": primary_email,
            "name": {"givenName": given_name, "familyName": family_name, "fullName": f"{given_name} {family_name}"},
            "orgUnitPath": org_unit_path,
        }
        if user_id is not None:
            user["id"] = user_id
        if custom_schemas:
            user["customSchemas"] = {k: dict(v) for k, v in custom_schemas.items()}
        if external_ids:
            user["externalIds"] = [dict(e) for e in external_ids]
        stored = self.put_user(user)
        if audit:
            self.add_event("CREATE_USER", user_email=primary_email)
        return stored

    def _user(self, key: str) -> dict[str, Any]:
        user = self.users.get(key)
        if user is None:
            user = next((u for u in self.users.values() if u["primaryEmail"].casefold() == key.casefold()), None)
        if user is None:
            raise KeyError(key)
        return user

    def _update(self, key: str, changes: Mapping[str, Any]) -> dict[str, Any]:
        user = self._user(key)
        user.update(copy.deepcopy(dict(changes)))
        user.pop("etag", None)
        user["etag"] = _etag(user)
        self._notify("update", user)
        return user

    def move_user(self, key: str, org_unit_path: str, *, audit: bool = True) -> dict[str, Any]:
        if org_unit_path != "/" and org_unit_path.casefold() not in self.org_units:
            raise ValueError("no such OU")
        old = self._user(key)["orgUnitPath"]
        user = self._update(key, {"orgUnitPath": org_unit_path})
        if audit:
            self.add_event(
                "MOVE_USER_TO_ORG_UNIT",
                user_email=user["primaryEmail"],
                parameters={"ORG_UNIT_NAME": old, "NEW_VALUE": org_unit_path},
            )
        return user

    def suspend_user(self, key: str, *, reason: str = "ADMIN", audit: bool = True) -> dict[str, Any]:
        user = self._update(key, {"suspended": True, "suspensionReason": reason})
        if audit:
            self.add_event("SUSPEND_USER", user_email=user["primaryEmail"])
        return user

    def unsuspend_user(self, key: str, *, audit: bool = True) -> dict[str, Any]:
        user = self._update(key, {"suspended": False})
        user.pop("suspensionReason", None)
        if audit:
            self.add_event("UNSUSPEND_USER", user_email=user["primaryEmail"])
        return user

    def archive_user(self, key: str, *, audit: bool = True) -> dict[str, Any]:
        user = self._update(key, {"archived": True})
        if audit:
            self.add_event("ARCHIVE_USER", user_email=user["primaryEmail"])
        return user

    def set_custom_field(self, key: str, schema: str, name: str, value: Any) -> dict[str, Any]:
        user = self._user(key)
        schemas = copy.deepcopy(user.get("customSchemas") or {})
        schemas.setdefault(schema, {})[name] = value
        return self._update(key, {"customSchemas": schemas})

    def delete_user(self, key: str, *, audit: bool = True) -> None:
        """Delete a user: gone from listings and groups, listed with ``showDeleted=true``."""
        user = self._user(key)
        del self.users[user["id"]]
        user["deletionTime"] = _rfc3339(self._clock())
        self.deleted_users[user["id"]] = user
        self._notify("delete", user)
        for members in self.members.values():
            members.pop(user["id"], None)
        if audit:
            self.add_event("DELETE_USER", user_email=user["primaryEmail"])

    def add_group(self, email: str, name: str, *, description: str = "", group_id: str | None = None) -> dict[str, Any]:
        group: dict[str, Any] = {
            "kind": "admin#directory#group",
            "id": group_id or _short_id(f"group:{email.casefold()}"),
            "email": email,
            "name": name,
            "directMembersCount": "0",
            "adminCreated": True,
        }
        if description:
            group["description"] = description
        group["etag"] = _etag(group)
        self.groups[group["id"]] = group
        self.members.setdefault(group["id"], {})
        return group

    def _group(self, key: str) -> dict[str, Any] | None:
        group = self.groups.get(key)
        if group is None:
            group = next((g for g in self.groups.values() if g["email"].casefold() == key.casefold()), None)
        return group

    def add_member(self, group_key: str, member_key: str, *, role: str = "MEMBER", audit: bool = True) -> None:
        """Make a user or a group (by id or e-mail address) a member of a group."""
        group = self._group(group_key)
        if group is None:
            raise KeyError(group_key)
        nested = self._group(member_key)
        member_id = nested["id"] if nested is not None else self._user(member_key)["id"]
        self.members[group["id"]][member_id] = role
        group["directMembersCount"] = str(len(self.members[group["id"]]))
        if audit and nested is None:
            self.add_event(
                "ADD_GROUP_MEMBER",
                user_email=self.users[member_id]["primaryEmail"],
                parameters={"GROUP_EMAIL": group["email"]},
                event_type="GROUP_SETTINGS",
            )

    def remove_member(self, group_key: str, member_key: str, *, audit: bool = True) -> None:
        group = self._group(group_key)
        if group is None:
            raise KeyError(group_key)
        nested = self._group(member_key)
        member_id = nested["id"] if nested is not None else self._user(member_key)["id"]
        self.members[group["id"]].pop(member_id, None)
        group["directMembersCount"] = str(len(self.members[group["id"]]))
        if audit and nested is None:
            self.add_event(
                "REMOVE_GROUP_MEMBER",
                user_email=self.users[member_id]["primaryEmail"],
                parameters={"GROUP_EMAIL": group["email"]},
                event_type="GROUP_SETTINGS",
            )

    def add_event(
        self,
        name: str,
        *,
        user_email: str,
        parameters: Mapping[str, str] | None = None,
        at: float | None = None,
        visible_after: float | None = None,
        event_type: str = "USER_SETTINGS",
    ) -> dict[str, Any]:
        """An admin audit event (Reports API ``applicationName=admin``)."""
        when = self._clock() if at is None else at
        params = [{"name": "USER_EMAIL", "value": user_email}] + [
            {"name": k, "value": v} for k, v in (parameters or {}).items()
        ]
        admin = next(iter(sorted(self.admins)), "admin@" + self.domain)
        item = {
            "kind": "admin#reports#activity",
            "id": {
                "time": _rfc3339(when),
                "uniqueQualifier": _digits(f"event:{len(self.events)}:{when}", 19),
                "applicationName": "admin",
                "customerId": self.customer_id,
            },
            "actor": {"email": admin, "profileId": _digits(f"user:{admin}", 21), "callerType": "USER"},
            "events": [{"type": event_type, "name": name, "parameters": params}],
        }
        item["etag"] = _etag(item)
        self.events.append({"item": item, "time": when, "visible_at": visible_after or when + self.event_lag_seconds})
        return item

    # ------------------------------------------------------------------------------------------
    # the canonical organiser

    def load_organiser(
        self,
        records: Iterable[SourceRecord],
        *,
        groups_domain: str | None = None,
        schema: str = "SS12000",
    ) -> LoadedOrganiser:
        """Fill the directory from canonical records in the layout the module docstring describes.
        No audit events are recorded for what is loaded."""
        groups_domain = groups_domain or f"grupper.{self.domain}"
        by_kind: dict[EntityKind, list[SourceRecord]] = {}
        for record in records:
            by_kind.setdefault(record.kind, []).append(record)
        loaded = LoadedOrganiser()
        self.define_schema(schema, ["EPPN", "Personnummer", "Arskurs", "Skolform"])
        self.add_org_unit("/Skolor", description="Skolenheter")
        units: dict[str, str] = {}
        for unit in by_kind.get(EntityKind.SCHOOL_UNIT, []):
            path = f"/Skolor/{str(unit.data['display_name']).replace('/', '-')}"
            self.add_org_unit(path, description=f"Skolenhetskod {unit.data['school_unit_code']}")
            self.add_org_unit(f"{path}/Elever")
            self.add_org_unit(f"{path}/Personal")
            units[unit.key] = path
        loaded.unit_org_units = dict(units)
        # A duty at an organisation above school units (a Skola): the staff member's place is the first
        # school unit beneath it.
        first_beneath: dict[str, str] = {}
        for unit in by_kind.get(EntityKind.SCHOOL_UNIT, []):
            first_beneath.setdefault(str(unit.data.get("organisation")), unit.key)
        duty_units = {
            str(d.data["person"]): first_beneath.get(str(d.data["school_unit"]), str(d.data["school_unit"]))
            for d in by_kind.get(EntityKind.DUTY, [])
        }
        persons_of_duties = {d.key: d.data["person"] for d in by_kind.get(EntityKind.DUTY, [])}
        for person in by_kind.get(EntityKind.PERSON, []):
            data = person.data
            enrolments = data.get("enrolments") or []
            eppn = (data.get("eppn") or [None])[0]
            emails = [e["value"] for e in data.get("emails") or []]
            primary = emails[0] if emails else eppn or f"{person.key}@{self.domain}"
            if enrolments and enrolments[0]["school_unit"] in units:
                path = f"{units[enrolments[0]['school_unit']]}/Elever"
            elif duty_units.get(person.key) in units:
                path = f"{units[duty_units[person.key]]}/Personal"
            else:
                path = "/Skolor"
            fields: dict[str, Any] = {}
            if eppn:
                fields["EPPN"] = eppn
            if data.get("civic_no"):
                fields["Personnummer"] = data["civic_no"]
            if enrolments and enrolments[0].get("school_year") is not None:
                fields["Arskurs"] = str(enrolments[0]["school_year"])
            if enrolments and enrolments[0].get("school_type"):
                fields["Skolform"] = enrolments[0]["school_type"]
            user = self.add_user(
                primary,
                str(data.get("given_name", "")),
                str(data.get("family_name", "")),
                org_unit_path=path,
                custom_schemas={schema: fields} if fields else None,
                external_ids=[{"type": "organization", "value": person.key}],  # the SIS id, as GCDS often sets it
                audit=False,
            )
            if len(emails) > 1:
                self._update(user["id"], {"emails": [{"address": e} for e in emails]})
            loaded.user_ids[person.key] = user["id"]
        for group in by_kind.get(EntityKind.GROUP, []):
            prefix = "klass" if group.data.get("group_type") == "Klass" else "grupp"
            local = re.sub(r"[^a-z0-9-]+", "-", group.key.lower()).strip("-")
            email = f"{prefix}-{local}@{groups_domain}"
            created = self.add_group(email, str(group.data.get("display_name", group.key)))
            loaded.group_ids[group.key] = created["id"]
            loaded.group_emails[group.key] = email
            for membership in group.data.get("memberships") or []:
                if membership["person"] in loaded.user_ids:
                    self.add_member(created["id"], loaded.user_ids[membership["person"]], audit=False)
        for activity in by_kind.get(EntityKind.ACTIVITY, []):
            teachers = [persons_of_duties.get(d) for d in activity.data.get("teachers") or []]
            for group_key in activity.data.get("groups") or []:
                for person_key in teachers:
                    if group_key in loaded.group_ids and person_key in loaded.user_ids:
                        self.add_member(
                            loaded.group_ids[group_key], loaded.user_ids[person_key], role="OWNER", audit=False
                        )
        return loaded

    # ------------------------------------------------------------------------------------------
    # faults

    @staticmethod
    def _fault(name: str | Fault) -> Fault:
        return name if isinstance(name, Fault) else FAULTS[name]

    def fail_next(
        self, n: int, fault: str | Fault = "userRateLimitExceeded", *, endpoints: Iterable[str] | None = None
    ) -> None:
        """The next ``n`` data requests (of ``endpoints``, when given) answer ``fault``."""
        self._faults.next_count = n
        self._faults.next_fault = self._fault(fault)
        self._faults.next_endpoints = frozenset(endpoints) if endpoints is not None else None

    def fail_every(self, n: int, fault: str | Fault = "userRateLimitExceeded") -> None:
        """Every ``n``-th data request answers ``fault`` (a throttling storm), until :meth:`clear_faults`."""
        self._faults.every = n
        self._faults.every_fault = self._fault(fault)
        self._faults.every_counter = 0

    def fail_page(self, endpoint: str, page: int, fault: str | Fault = "internalError") -> None:
        """Page ``page`` (0-based) of every listing of ``endpoint`` answers ``fault``, always."""
        self._faults.pages[(endpoint, page)] = self._fault(fault)

    def quota(self, max_requests: int, per_seconds: float = 60.0, fault: str | Fault = "userRateLimitExceeded") -> None:
        """More than ``max_requests`` data requests within ``per_seconds`` answer ``fault``."""
        self._faults.quota_max = max_requests
        self._faults.quota_window = per_seconds
        self._faults.quota_fault = self._fault(fault)
        self._faults.quota_times = []

    def fail_token(self, error: str = "invalid_grant", *, count: int | None = None) -> None:
        """The token endpoint answers ``error`` (see :data:`TOKEN_ERRORS`), ``count`` times or always."""
        if error not in TOKEN_ERRORS:
            raise ValueError(f"unknown token error {error!r}")
        self._faults.token_error = error
        self._faults.token_error_count = count

    def clear_faults(self) -> None:
        self._faults = _Faults()

    # ------------------------------------------------------------------------------------------
    # server (``port``, ``origin``, ``start`` and ``stop`` come from FakeHttpServer)

    @property
    def base_url(self) -> str:
        """The API root (``http://host:port``), what ``https://admin.googleapis.com`` is on Google."""
        return self.origin

    @property
    def token_url(self) -> str:
        return f"{self.base_url}/token"

    # ------------------------------------------------------------------------------------------
    # push notifications (users.watch)

    def _notify(self, event: str, user: Mapping[str, Any]) -> None:
        """Deliver ``event`` about ``user`` through every open channel watching it (in the background)."""
        now = self._clock()
        for channel in list(self.channels.values()):
            if channel.event == event and channel.expires_at > now:
                body = {k: user[k] for k in ("kind", "id", "etag", "primaryEmail") if k in user}
                self._deliver(channel, event, body)

    def _deliver(self, channel: _Channel, state: str, body: Mapping[str, Any] | None) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no event loop (a fake filled before it runs): nothing can be delivered
        channel.messages += 1
        task = loop.create_task(self._post(channel, state, channel.messages, body))
        self._deliveries.add(task)
        task.add_done_callback(self._deliveries.discard)

    async def _post(self, channel: _Channel, state: str, number: int, body: Mapping[str, Any] | None) -> None:
        if self._push_session is None:
            self._push_session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        headers = {
            "X-Goog-Channel-ID": channel.channel_id,
            "X-Goog-Channel-Expiration": formatdate(channel.expires_at, usegmt=True),
            "X-Goog-Resource-ID": channel.resource_id,
            "X-Goog-Resource-URI": channel.resource_uri,
            "X-Goog-Resource-State": state,
            "X-Goog-Message-Number": str(number),
        }
        if channel.token is not None:
            headers["X-Goog-Channel-Token"] = channel.token
        status = 0
        try:
            async with self._push_session.post(channel.address, json=body, headers=headers) as response:
                status = response.status
        except (aiohttp.ClientError, TimeoutError):
            status = 0
        self.notifications.append(NotificationRecord(channel.channel_id, state, number, status))

    async def stop(self) -> None:
        for task in list(self._deliveries):
            task.cancel()
        await asyncio.gather(*self._deliveries, return_exceptions=True)
        if self._push_session is not None:
            await self._push_session.close()
            self._push_session = None
        await super().stop()

    async def _users_watch(self, request: web.Request) -> web.Response:
        """``users.watch``: open a channel for one ``event`` of the customer's users; a ``sync`` message
        follows at once. The address must be HTTPS (plain HTTP only for a loopback host: the tests' own
        webhook); a channel id may be used once."""
        try:
            raw = await request.json()
        except ValueError:
            raw = None

        def answer() -> web.Response:
            query = request.query
            if query.get("customer") is None and query.get("domain") is None:
                raise _BadRequest("Bad Request", "badRequest")
            self._check_customer(query.get("customer"))
            event = query.get("event")
            if event not in WATCH_EVENTS:
                raise _BadRequest("Invalid value for: event")
            if not isinstance(raw, dict):
                raise _BadRequest("Invalid JSON payload received.", "parseError")
            channel_id, address, token = raw.get("id"), raw.get("address"), raw.get("token")
            if not isinstance(channel_id, str) or not channel_id or len(channel_id) > 64:
                raise _BadRequest("Invalid Input: id", "required")
            if channel_id in self.channels:
                raise _BadRequest(f"Channel id {channel_id} not unique", "channelIdNotUnique")
            if raw.get("type") != "web_hook":
                raise _BadRequest("Invalid Input: type", "invalid")
            target = URL(address) if isinstance(address, str) else None
            loopback = target is not None and target.host in ("127.0.0.1", "localhost", "::1")
            if target is None or not (target.scheme == "https" or (target.scheme == "http" and loopback)):
                raise _BadRequest("WebHook callback must be HTTPS: " + str(address)[:100], "push.webhookUrlNotHttps")
            if token is not None and (not isinstance(token, str) or len(token) > 256):
                raise _BadRequest("Invalid Input: token", "invalid")
            ttl_raw = (raw.get("params") or {}).get("ttl", WATCH_MAX_TTL_SECONDS)
            try:
                ttl = min(int(ttl_raw), WATCH_MAX_TTL_SECONDS)
            except (TypeError, ValueError):
                raise _BadRequest("Invalid Input: params.ttl", "invalid") from None
            owner = query.get("domain") or self.customer_id
            channel = _Channel(
                channel_id=channel_id,
                event=event,
                address=str(target),
                token=token,
                resource_id=_short_id(f"watch:{owner}:{event}", 27),
                resource_uri=f"https://admin.googleapis.com{DIRECTORY}/users?alt=json&customer={owner}&event={event}",
                expires_at=self._clock() + max(ttl, 1),
            )
            self.channels[channel_id] = channel
            self._deliver(channel, "sync", None)
            self._record(request, "watch", 200)
            return web.json_response(
                {
                    "kind": "api#channel",
                    "id": channel.channel_id,
                    "resourceId": channel.resource_id,
                    "resourceUri": channel.resource_uri,
                    **({"token": token} if token is not None else {}),
                    "expiration": str(int(channel.expires_at * 1000)),
                }
            )

        return await self._guarded(request, "users", answer)

    async def _channels_stop(self, request: web.Request) -> web.Response:
        """``channels.stop``: ``{"id", "resourceId"}`` of an open channel; ``204``, or ``404`` for a channel
        the fake does not know (never opened, stopped, or its resource id does not match)."""
        try:
            raw = await request.json()
        except ValueError:
            raw = None

        def answer() -> web.Response:
            if not isinstance(raw, dict):
                raise _BadRequest("Invalid JSON payload received.", "parseError")
            channel = self.channels.get(str(raw.get("id")))
            if channel is None or channel.resource_id != raw.get("resourceId"):
                raise _BadRequest(f"Channel '{raw.get('id')}' not found for project", "notFound", 404)
            del self.channels[channel.channel_id]
            self._record(request, "channels", 204)
            return web.Response(status=204)

        return await self._guarded(request, "users", answer)

    def make_app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/token", self._token)
        app.router.add_get(f"{DIRECTORY}/users", self._users)
        app.router.add_post(f"{DIRECTORY}/users/watch", self._users_watch)
        app.router.add_post(f"{CHANNELS}/stop", self._channels_stop)
        app.router.add_get(f"{DIRECTORY}/users/{{user}}", self._user_get)
        app.router.add_get(f"{DIRECTORY}/customer/{{customer}}/orgunits", self._orgunits)
        app.router.add_get(f"{DIRECTORY}/customer/{{customer}}/schemas", self._schemas)
        app.router.add_get(f"{DIRECTORY}/groups", self._groups)
        app.router.add_get(f"{DIRECTORY}/groups/{{group}}/members", self._members)
        app.router.add_get(f"{REPORTS}/activity/users/{{user}}/applications/{{application}}", self._activities)
        return app

    # ------------------------------------------------------------------------------------------
    # the token endpoint

    def _record(self, request: web.Request, endpoint: str, status: int, page: int | None = None) -> None:
        self.requests.append(RequestRecord(request.method, request.path, endpoint, query_lists(request), status, page))

    def _token_error(self, request: web.Request, error: str, description: str, status: int = 400) -> web.Response:
        self._record(request, "token", status)
        return web.json_response({"error": error, "error_description": description}, status=status)

    async def _token(self, request: web.Request) -> web.Response:
        form = await request.post()
        faults = self._faults
        if faults.token_error is not None and (faults.token_error_count is None or faults.token_error_count > 0):
            if faults.token_error_count is not None:
                faults.token_error_count -= 1
            status, description = TOKEN_ERRORS[faults.token_error]
            return self._token_error(request, faults.token_error, description, status)
        if form.get("grant_type") != JWT_BEARER_GRANT:
            return self._token_error(request, "unsupported_grant_type", "Invalid grant_type: ")
        assertion = form.get("assertion")
        if not isinstance(assertion, str) or assertion.count(".") != 2:
            return self._token_error(request, "invalid_request", "Missing required parameter: assertion")
        encoded_header, encoded_claims, encoded_signature = assertion.split(".")
        try:
            header = json.loads(_b64url_decode(encoded_header))
            claims = json.loads(_b64url_decode(encoded_claims))
            signature = _b64url_decode(encoded_signature)
        except (ValueError, binascii.Error):
            return self._token_error(request, "invalid_grant", "Invalid JWT: malformed")
        if not isinstance(header, dict) or not isinstance(claims, dict) or header.get("alg") != "RS256":
            return self._token_error(request, "invalid_grant", "Invalid JWT: unsupported algorithm")
        account = self._accounts.get(str(claims.get("iss")))
        if account is None:
            return self._token_error(request, "invalid_grant", "Invalid grant: account not found")
        try:
            if header.get("kid") is not None and header.get("kid") != account.key_id:
                raise InvalidSignature
            account.public_key.verify(
                signature, f"{encoded_header}.{encoded_claims}".encode(), padding.PKCS1v15(), hashes.SHA256()
            )
        except InvalidSignature:
            return self._token_error(request, "invalid_grant", "Invalid JWT Signature.")
        if claims.get("aud") != GOOGLE_TOKEN_URI:  # Google's one audience, wherever the token is asked for
            return self._token_error(request, "invalid_grant", "Invalid JWT: Failed audience check.")
        iat, exp, now = claims.get("iat"), claims.get("exp"), self._clock()
        if (
            not isinstance(iat, int)
            or not isinstance(exp, int)
            or exp - iat > MAX_TOKEN_LIFETIME_SECONDS
            or exp <= iat
            or iat > now + CLOCK_SKEW_SECONDS
            or exp < now - CLOCK_SKEW_SECONDS
        ):
            return self._token_error(
                request,
                "invalid_grant",
                "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. "
                "Check your iat and exp values in the JWT claim.",
            )
        scope = claims.get("scope")
        scopes = frozenset(scope.split()) if isinstance(scope, str) else frozenset()
        if not scopes:
            return self._token_error(request, "invalid_scope", "Empty or missing scope not allowed.")
        if not scopes <= ALL_SCOPES:
            return self._token_error(request, "invalid_scope", "Invalid OAuth scope or ID token audience provided.")
        subject = claims.get("sub")
        if subject is not None:
            known = {u["primaryEmail"].casefold() for u in self.users.values()} | self.admins
            if not isinstance(subject, str) or subject.casefold() not in known:
                return self._token_error(request, "invalid_grant", "Invalid email or User ID")
            if account.scopes is not None and not scopes <= account.scopes:
                return self._token_error(request, "unauthorized_client", TOKEN_ERRORS["unauthorized_client"][1], 401)
        token = self.issue_token(subject if isinstance(subject, str) else None, scopes)
        self._record(request, "token", 200)
        return web.json_response({"access_token": token, "expires_in": self.token_ttl_seconds, "token_type": "Bearer"})

    # ------------------------------------------------------------------------------------------
    # API plumbing

    def _authorise(self, request: web.Request, endpoint: str) -> web.Response | None:
        scheme, _, value = request.headers.get("Authorization", "").partition(" ")
        token = self._tokens.get(value.strip()) if scheme.lower() == "bearer" else None
        if token is None or token.expires_at <= self._clock():
            response = _google_error(Fault(401, "authError", "Invalid Credentials", "global", "UNAUTHENTICATED"))
            response.headers["WWW-Authenticate"] = 'Bearer realm="https://accounts.google.com/", error="invalid_token"'
            return response
        if not {s.removeprefix(SCOPE_PREFIX) for s in token.scopes} & ENDPOINT_SCOPES[endpoint]:
            return _google_error(FAULTS["insufficientPermissions"])
        if token.subject is None or token.subject not in self.admins:
            return _google_error(FAULTS["forbidden"])
        return None

    def _injected(self, endpoint: str) -> web.Response | None:
        faults = self._faults
        if (
            faults.next_count > 0
            and faults.next_fault is not None
            and (faults.next_endpoints is None or endpoint in faults.next_endpoints)
        ):
            faults.next_count -= 1
            return _google_error(faults.next_fault)
        if faults.every > 0 and faults.every_fault is not None:
            faults.every_counter += 1
            if faults.every_counter % faults.every == 0:
                return _google_error(faults.every_fault)
        if faults.quota_max > 0 and faults.quota_fault is not None:
            now = self._clock()
            faults.quota_times = [t for t in faults.quota_times if t > now - faults.quota_window]
            if len(faults.quota_times) >= faults.quota_max:
                return _google_error(faults.quota_fault)
            faults.quota_times.append(now)
        return None

    def _prelude(self, request: web.Request, endpoint: str) -> web.Response | None:
        failure = self._authorise(request, endpoint) or self._injected(endpoint)
        if failure is not None:
            self._record(request, endpoint, failure.status)
        return failure

    def _check_customer(self, customer: str | None) -> None:
        if customer is not None and customer not in ("my_customer", self.customer_id):
            raise _BadRequest("Bad Request", "badRequest")

    @staticmethod
    def _max_results(query: Mapping[str, str], default: int, maximum: int) -> int:
        raw = query.get("maxResults")
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise _BadRequest("Invalid value for: maxResults") from None
        return min(max(value, 1), maximum)

    def _position(self, request: web.Request, listing_of: str) -> tuple[str, int, int]:
        """(listing key, offset, page) of a list request; the listing key is the request without its
        ``pageToken`` (a token is only valid with the same parameters)."""
        params = sorted((k, v) for k, v in request.query.items() if k != "pageToken")
        listing = f"{listing_of}?{json.dumps(params)}"
        token = request.query.get("pageToken")
        if token is None:
            return listing, 0, 0
        cursor = self._cursors.get(token)
        if cursor is None or cursor.listing != listing or cursor.expires_at <= self._clock():
            raise _BadRequest("Invalid Input: pageToken", "badRequest")
        return listing, cursor.offset, cursor.page

    def _page(
        self, request: web.Request, endpoint: str, listing_of: str, items: list[Any], limit: int, key: str, kind: str
    ) -> web.Response:
        listing, offset, page = self._position(request, listing_of)
        fault = self._faults.pages.get((endpoint, page))
        if fault is not None:
            self._record(request, endpoint, fault.status, page)
            return _google_error(fault)
        window = items[offset : offset + limit]
        body: dict[str, Any] = {"kind": kind, "etag": _etag([listing, offset, len(items)])}
        if window:
            body[key] = copy.deepcopy(window)
        if offset + len(window) < len(items):
            token = secrets.token_urlsafe(32)
            expiry = self._clock() + self.page_token_ttl_seconds
            self._cursors[token] = _Cursor(listing, offset + len(window), page + 1, expiry)
            body["nextPageToken"] = token
        self._record(request, endpoint, 200, page)
        return web.json_response(body)

    async def _guarded(self, request: web.Request, endpoint: str, handler: Callable[[], web.Response]) -> web.Response:
        failure = self._prelude(request, endpoint)
        if failure is not None:
            return failure
        try:
            return handler()
        except _BadRequest as error:
            self._record(request, endpoint, error.status)
            return _bad_request(error)

    # ------------------------------------------------------------------------------------------
    # endpoints

    async def _users(self, request: web.Request) -> web.Response:
        def answer() -> web.Response:
            query = request.query
            customer, domain = query.get("customer"), query.get("domain")
            if customer is None and domain is None:
                raise _BadRequest("Bad Request", "badRequest")
            self._check_customer(customer)
            limit = self._max_results(query, 100, 500)
            clauses = parse_query(query.get("query", ""))
            for name, _, value in clauses:
                if (
                    name == "orgUnitPath"
                    and value.strip("/")
                    and ("/" + value.strip("/")).casefold() not in self.org_units
                ):
                    raise _BadRequest("Invalid Input: INVALID_OU_ID")
            deleted = query.get("showDeleted", "false").lower() == "true"
            pool = self.deleted_users if deleted else self.users
            searched = pool
            if clauses and not deleted and self.search_index is not None:
                # A query goes through the search index: a lagging index matches users as they were, and
                # does not know new ones yet (what is returned is the user as it is now).
                searched = {k: v for k, v in self.search_index.items() if k in pool}
            selected = [
                pool[k]
                for k, u in searched.items()
                if (domain is None or u["primaryEmail"].casefold().endswith("@" + domain.casefold()))
                and _user_matches(u, clauses)
            ]
            order = query.get("orderBy")
            if order is not None:
                sort_keys: dict[str, Callable[[dict[str, Any]], str]] = {
                    "email": lambda u: str(u["primaryEmail"]).casefold(),
                    "givenName": lambda u: str((u.get("name") or {}).get("givenName", "")).casefold(),
                    "familyName": lambda u: str((u.get("name") or {}).get("familyName", "")).casefold(),
                }
                if order not in sort_keys:
                    raise _BadRequest("Invalid value for: orderBy")
                selected.sort(key=sort_keys[order], reverse=query.get("sortOrder", "ASCENDING") == "DESCENDING")
            projection, mask = self._projection(query)
            shown = [self._project(u, projection, mask) for u in selected]
            return self._page(request, "users", "users", shown, limit, "users", "admin#directory#users")

        return await self._guarded(request, "users", answer)

    async def _user_get(self, request: web.Request) -> web.Response:
        """``users.get``: one user by id or primary address, straight from the directory (never
        through the search index); ``404 notFound`` when there is none."""

        def answer() -> web.Response:
            query = request.query
            projection, mask = self._projection(query)
            try:
                user = self._user(request.match_info["user"])
            except KeyError:
                raise _BadRequest("Resource Not Found: userKey", "notFound", 404) from None
            self._record(request, "users", 200)
            return web.json_response(self._project(user, projection, mask))

        return await self._guarded(request, "users", answer)

    @staticmethod
    def _projection(query: Mapping[str, str]) -> tuple[str, set[str]]:
        """``projection`` and ``customFieldMask`` of a users request, checked as Google does."""
        projection = query.get("projection", "basic")
        if projection not in ("basic", "custom", "full"):
            raise _BadRequest("Invalid value for: projection")
        mask = {s for s in query.get("customFieldMask", "").split(",") if s}
        if projection == "custom" and not mask:
            raise _BadRequest("Invalid Input: customFieldMask required for projection custom")
        return projection, mask

    @staticmethod
    def _project(user: dict[str, Any], projection: str, mask: set[str]) -> dict[str, Any]:
        if projection == "full" or "customSchemas" not in user:
            return user
        shown = {k: v for k, v in user.items() if k != "customSchemas"}
        if projection == "custom":
            kept = {k: v for k, v in user["customSchemas"].items() if k in mask}
            if kept:
                shown["customSchemas"] = kept
        return shown

    async def _orgunits(self, request: web.Request) -> web.Response:
        def answer() -> web.Response:
            self._check_customer(request.match_info["customer"])
            path = "/" + request.query.get("orgUnitPath", "/").strip("/")
            kind = request.query.get("type", "children")
            if kind not in ("children", "all", "allIncludingParent"):
                raise _BadRequest("Invalid value for: type")
            if path != "/" and path.casefold() not in self.org_units:
                raise _BadRequest("Org unit not found", "notFound", 404)
            units = sorted(self.org_units.values(), key=lambda u: u["orgUnitPath"].casefold())
            if kind == "children":
                chosen = [u for u in units if u["parentOrgUnitPath"].casefold() == path.casefold()]
            else:
                chosen = [u for u in units if _under(u["orgUnitPath"], path) and u["orgUnitPath"] != path]
                if kind == "allIncludingParent" and path != "/":
                    chosen.insert(0, self.org_units[path.casefold()])
            body: dict[str, Any] = {"kind": "admin#directory#orgUnits", "etag": _etag([path, kind, len(chosen)])}
            if chosen:
                body["organizationUnits"] = copy.deepcopy(chosen)
            self._record(request, "orgunits", 200)
            return web.json_response(body)

        return await self._guarded(request, "orgunits", answer)

    async def _schemas(self, request: web.Request) -> web.Response:
        def answer() -> web.Response:
            self._check_customer(request.match_info["customer"])
            schemas = [
                {
                    "kind": "admin#directory#schema",
                    "schemaId": _short_id(f"schema:{name}", 22),
                    "schemaName": name,
                    "displayName": name,
                    "fields": [
                        {
                            "kind": "admin#directory#schema#fieldspec",
                            "fieldName": f,
                            "fieldType": "STRING",
                            "multiValued": False,
                            "indexed": True,
                            "readAccessType": "ADMINS_AND_SELF",
                        }
                        for f in fields
                    ],
                }
                for name, fields in self.schemas.items()
            ]
            body: dict[str, Any] = {"kind": "admin#directory#schemas", "etag": _etag(schemas)}
            if schemas:
                body["schemas"] = schemas
            self._record(request, "schemas", 200)
            return web.json_response(body)

        return await self._guarded(request, "schemas", answer)

    async def _groups(self, request: web.Request) -> web.Response:
        def answer() -> web.Response:
            query = request.query
            customer, domain, user_key = query.get("customer"), query.get("domain"), query.get("userKey")
            if customer is None and domain is None and user_key is None:
                raise _BadRequest("Bad Request", "badRequest")
            if user_key is not None and customer is not None:
                raise _BadRequest("Bad Request", "badRequest")
            self._check_customer(customer)
            limit = self._max_results(query, 200, 200)
            selected = list(self.groups.values())
            if domain is not None:
                selected = [g for g in selected if g["email"].casefold().endswith("@" + domain.casefold())]
            if user_key is not None:
                try:
                    user_id = self._user(user_key)["id"]
                except KeyError:
                    raise _BadRequest("Resource Not Found: userKey", "notFound", 404) from None
                selected = [g for g in selected if user_id in self.members.get(g["id"], {})]
            for name, operator, value in parse_query(query.get("query", "")):
                if name not in ("email", "name") or operator != ":":
                    raise _BadRequest(f"Invalid Input: {name}")
                selected = [
                    g for g in selected if _text_matches([g[name]], ":", value if "*" in value else value + "*")
                ]
            if query.get("orderBy") == "email":
                selected.sort(key=lambda g: g["email"].casefold(), reverse=query.get("sortOrder") == "DESCENDING")
            return self._page(request, "groups", "groups", selected, limit, "groups", "admin#directory#groups")

        return await self._guarded(request, "groups", answer)

    def _member_entries(self, group_id: str, derived: bool, seen: set[str]) -> list[dict[str, Any]]:
        entries: list[dict[str, Any]] = []
        for member_id, role in self.members.get(group_id, {}).items():
            if member_id in self.groups:
                nested = self.groups[member_id]
                entries.append(
                    {"id": member_id, "email": nested["email"], "role": role, "type": "GROUP", "status": "ACTIVE"}
                )
                if derived and member_id not in seen:
                    seen.add(member_id)
                    entries += [e for e in self._member_entries(member_id, True, seen) if e["type"] == "USER"]
            elif member_id in self.users:
                user = self.users[member_id]
                entries.append(
                    {
                        "id": member_id,
                        "email": user["primaryEmail"],
                        "role": role,
                        "type": "USER",
                        "status": "SUSPENDED" if user.get("suspended") else "ACTIVE",
                    }
                )
        return entries

    async def _members(self, request: web.Request) -> web.Response:
        def answer() -> web.Response:
            group = self._group(request.match_info["group"])
            if group is None:
                raise _BadRequest("Resource Not Found: groupKey", "notFound", 404)
            query = request.query
            limit = self._max_results(query, 200, 200)
            derived = query.get("includeDerivedMembership", "false").lower() == "true"
            entries = self._member_entries(group["id"], derived, {group["id"]})
            unique: dict[str, dict[str, Any]] = {}
            for entry in entries:
                unique.setdefault(entry["id"], entry)
            roles = {r.strip().upper() for r in query.get("roles", "").split(",") if r.strip()}
            selected = [
                {"kind": "admin#directory#member", "etag": _etag(e), **e, "delivery_settings": "ALL_MAIL"}
                for e in unique.values()
                if not roles or e["role"] in roles
            ]
            return self._page(
                request, "members", f"members:{group['id']}", selected, limit, "members", "admin#directory#members"
            )

        return await self._guarded(request, "members", answer)

    async def _activities(self, request: web.Request) -> web.Response:
        def answer() -> web.Response:
            if request.match_info["application"] != "admin":
                raise _BadRequest("Bad Request", "badRequest")
            user_key = request.match_info["user"]
            query = request.query
            limit = self._max_results(query, 1000, 1000)
            try:
                start = _parse_rfc3339(query["startTime"]) if "startTime" in query else None
                end = _parse_rfc3339(query["endTime"]) if "endTime" in query else None
            except ValueError:
                raise _BadRequest("Invalid value for: startTime/endTime") from None
            names = {n for n in query.get("eventName", "").split(",") if n}
            now = self._clock()
            selected = []
            for event in sorted(self.events, key=lambda e: e["time"], reverse=True):
                item = event["item"]
                if event["visible_at"] > now:
                    continue
                if (start is not None and event["time"] < start) or (end is not None and event["time"] > end):
                    continue
                if names and not any(e["name"] in names for e in item["events"]):
                    continue
                emails = {p["value"].casefold() for e in item["events"] for p in e["parameters"]}
                if user_key != "all" and user_key.casefold() not in emails:
                    continue
                selected.append(item)
            return self._page(request, "activities", "activities", selected, limit, "items", "admin#reports#activities")

        return await self._guarded(request, "activities", answer)


# --- command line ------------------------------------------------------------------------------


def _argument_parser() -> argparse.ArgumentParser:
    parser = argument_parser(
        "python -m skolsynk_testkit.fakes.google_directory",
        "A fake Google Workspace Directory/Reports API and token endpoint with a synthetic organiser.",
    )
    parser.add_argument("--key-file", required=True, help="where to write the generated service-account key")
    parser.add_argument("--client-email", default="skolsynk@skolsynk-fake.iam.gserviceaccount.com")
    parser.add_argument("--admin", default="admin@demo.skolsynk.example", help="the delegated administrator")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--school-units", type=int, default=2)
    parser.add_argument("--students-per-unit", type=int, default=12)
    parser.add_argument("--teachers-per-unit", type=int, default=2)
    return parser


async def _serve(args: argparse.Namespace) -> int:
    from skolsynk_testkit.synthetic import organiser

    fake = FakeGoogleDirectory(admins=[args.admin])

    def ready() -> str:
        key = generate_service_account_key(client_email=args.client_email, token_uri=fake.token_url)
        fake.add_service_account(key)
        path = Path(args.key_file)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as out:
            out.write(json.dumps(key, indent=2))
        fake.add_user(args.admin, "Admin", "Demo", audit=False)
        loaded = fake.load_organiser(
            organiser(
                seed=args.seed,
                school_units=args.school_units,
                students_per_unit=args.students_per_unit,
                teachers_per_unit=args.teachers_per_unit,
            )
        )
        return (
            f"fake Google Directory listening on {fake.base_url} (token {fake.token_url}; "
            f"{len(loaded.user_ids)} users, {len(loaded.group_ids)} groups; key in {path})"
        )

    return await serve_until_signalled(lambda: fake.start(args.host, args.port), fake.stop, ready)


def main(argv: Sequence[str] | None = None) -> int:
    return asyncio.run(_serve(_argument_parser().parse_args(argv)))


if __name__ == "__main__":
    raise SystemExit(main())
