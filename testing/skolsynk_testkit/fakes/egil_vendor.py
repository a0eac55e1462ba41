"""A local fake of a vendor's EGIL SCIM server: what skolsynk's dispatcher pushes to.

It behaves like the reference receiving server, Sambruk's Windermere v1.3.1, as described in
``/work/shared/ref/egil-scim-protocol.md`` (sections 2-11). Nothing here is taken from Windermere's
code; the behaviour is rebuilt from that description.

Wire behaviour (defaults; the keyword arguments of :class:`FakeEgilVendor` switch the documented
alternatives):

* Collections ``/Organisations``, ``/SchoolUnitGroups``, ``/SchoolUnits``, ``/Users``, ``/Employments``,
  ``/StudentGroups``, ``/Activities`` below an optional ``base_path`` (Windermere has none).
* ``POST /{Type}``: 201, id = body ``externalId``; 409 ``object <id> already exists`` when the id exists
  (SQL backends; ``backend="file"`` overwrites silently and answers 201).
* ``PUT /{Type}/{id}``: full replace, 200; 404 ``couldn't find object <id>`` when unknown. A URL id that
  differs from the body ``externalId`` is answered 400 (Windermere answers a silent 200 no-op; pass
  ``put_id_mismatch="reference"`` for that). ``PUT /{Type}`` without an id takes the id from the body
  (Windermere's compatibility mode).
* ``DELETE /{Type}/{id}``: 204 with an empty body; 404 when unknown; ``DELETE /{Type}``: 400.
* ``GET /{Type}``: the unpaged full list, ``{"schemas": [ListResponse], "totalResults": N, "Resources":
  [...]}`` with ``"id"`` = externalId added, query parameters ignored, sent as ``text/plain`` (Windermere's
  lists are content-sniffed). The SQL backend lists what it persisted (``civicNo``, ``securityMarking``,
  ``userRelations``, enrolment ``schoolType``/``programCode``, group ``schoolType``, ``parentActivity``,
  ``schemas`` and unknown attributes are gone; references come back with ``"$ref": ""``).
* ``GET /{Type}/{id}`` is broken as in Windermere: 500 ``failed to read unknown type: <id>`` (file
  backend: 200 with an empty list). ``single_get=True`` makes it a working read (200 or 404).
* POST/PUT bodies must be ``application/scim+json`` or ``application/json`` (else 415), strict JSON,
  one object, with Go-strict types (``"schoolYear": "7"`` is a 400) and the attributes Windermere
  requires (``missing required attribute displayName``); ``externalId`` must match the case-insensitive
  UUID pattern (``invalid UUID: ...``) and ``schoolUnitCode`` the unanchored ``[0-9]{8}``
  (``invalid school unit code: 123``; ``SE123456789`` passes). Ids are case-sensitive strings.
* Errors are Go ``http.Error`` bodies: ``text/plain; charset=utf-8``, one line (parse errors are
  ``Failed to parse resource:\\n<detail>``). ``error_format="scim"`` sends SCIM error JSON instead
  (``{"schemas": [...Error], "status": "400", "detail": ...}``).
* Unknown paths: 404 ``404 page not found``; PATCH and other methods: 501 ``Not implemented``.
* No referential integrity and no cascading deletes; every reference to an object the tenant does not
  hold is recorded in :attr:`FakeEgilVendor.dangling_references`, every reference a DELETE leaves behind
  in :attr:`FakeEgilVendor.orphaned_references`.
* Tenants: the client certificate's SPKI pin (mTLS, ``client_pins``; unknown pin: 403 ``failed to find
  client pin (<pin>) in metadata``), else the API key header (``api_keys``; absent: 403 ``No API key``,
  unknown: 403 ``Invalid API key``), else ``default_tenant`` when neither is configured. Data is kept per
  ``(tenant, type, id)``.

Run it for the demo with ``python -m skolsynk_testkit.fakes.egil_vendor --port N --api-key KEY=TENANT``.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import random
import re
import ssl
import sys
import time
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Literal, NamedTuple, TextIO

from aiohttp import web

from skolsynk.logging import get_logger
from skolsynk.tls import spki_sha256_pin
from skolsynk_testkit.fakes._server import argument_parser, serve_until_signalled

log = get_logger(__name__)

__all__ = [
    "ENDPOINTS",
    "DanglingReference",
    "FakeEgilVendor",
    "Faults",
    "RequestRecord",
    "main",
    "server_ssl_context",
    "spki_sha256_pin",
]

#: The EGIL collections, in the default send order (Users holds both students and teachers).
ENDPOINTS: tuple[str, ...] = (
    "Organisations",
    "SchoolUnitGroups",
    "SchoolUnits",
    "Users",
    "Employments",
    "StudentGroups",
    "Activities",
)

LIST_RESPONSE_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:ListResponse"
ERROR_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:Error"
USER_EXTENSION = "urn:scim:schemas:extension:sis:school:1.0:User"

Backend = Literal["sql", "file"]
ErrorFormat = Literal["text", "scim"]
PutIdMismatch = Literal["reject", "reference"]

_SCIM_MEDIA_TYPES = frozenset({"application/scim+json", "application/json"})
_UUID = re.compile(r"[a-f0-9]{8}-[a-f0-9]{4}-[a-f0-9]{4}-[a-f0-9]{4}-[a-f0-9]{12}", re.IGNORECASE)
_SCHOOL_UNIT_CODE = re.compile(r"[0-9]{8}")  # unanchored, as in the reference server
_INT64 = (-(2**63), 2**63 - 1)
_TEXT_PLAIN = "text/plain; charset=utf-8"
_SCIM_JSON = "application/scim+json"


# --------------------------------------------------------------------------------------------------
# Pins and TLS


def server_ssl_context(certfile: str, keyfile: str | None = None, client_ca: str | None = None) -> ssl.SSLContext:
    """A server context like Windermere's listeners: TLS 1.2 minimum; with ``client_ca`` (a PEM bundle of
    trusted client issuers) a client certificate is required and verified, as on its mTLS listener."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(certfile, keyfile)
    if client_ca is not None:
        context.load_verify_locations(cafile=client_ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


# --------------------------------------------------------------------------------------------------
# The SS 12000:2018 (EGIL) types as Windermere parses them: Go struct fields, their JSON types, which
# attributes are required, which the SQL backend persists.


@dataclass(frozen=True, slots=True)
class _Field:
    json: str
    kind: Literal["string", "int", "bool", "struct"]
    go_type: str
    struct: _Struct | None = None
    many: bool = False
    pointer: bool = False
    omitempty: bool = False
    persisted: bool = True  # kept by the SQL backend (listed by GET)
    marshal: bool = True  # part of the object re-marshalled by the SQL backend
    blank: bool = False  # re-marshalled as "" by the SQL backend (reference "$ref")
    ref_to: str | None = None  # the collection an object with a "value" refers to


@dataclass(frozen=True, slots=True)
class _Struct:
    go_name: str
    fields: tuple[_Field, ...]
    required: tuple[str, ...] = ()
    custom: bool = False  # has its own UnmarshalJSON: required check and its own error scope

    def lookup(self, key: str) -> _Field | None:
        for candidate in self.fields:
            if candidate.json == key:
                return candidate
        folded = key.casefold()  # Go's encoding/json also matches field names case-insensitively
        for candidate in self.fields:
            if candidate.json.casefold() == folded:
                return candidate
        return None


def _string(name: str, **options: Any) -> _Field:
    return _Field(name, "string", "string", **options)


_REFERENCE = _Struct(
    "SCIMReference",
    (_string("value"), _string("$ref", blank=True)),
)


def _ref(name: str, to: str, **options: Any) -> _Field:
    go_type = "ss12000v1.SCIMReference"
    if options.get("many"):
        go_type = "[]" + go_type
    return _Field(name, "struct", go_type, struct=_REFERENCE, ref_to=to, **options)


_NAME = _Struct(
    "SCIMName",
    (_string("familyName", omitempty=True), _string("givenName", omitempty=True)),
    required=("familyName", "givenName"),
    custom=True,
)
_EMAIL = _Struct("SCIMEmail", (_string("value", omitempty=True), _string("type", omitempty=True)))
_ENROLMENT = _Struct(
    "Enrolment",
    (
        _string("value"),
        _string("$ref", blank=True),
        _Field("schoolYear", "int", "int", pointer=True, omitempty=True),
        _string("schoolType", pointer=True, omitempty=True, persisted=False),
        _string("programCode", pointer=True, omitempty=True, persisted=False),
    ),
    required=("value",),
    custom=True,
)
_USER_RELATION = _Struct(
    "UserRelation",
    (
        _string("value"),
        _string("$ref", blank=True),
        _string("relationType"),
        _string("displayName", pointer=True, omitempty=True),
    ),
    required=("value", "relationType"),
    custom=True,
)
_USER_EXTENSION = _Struct(
    "UserExtension",
    (
        _Field(
            "enrolments",
            "struct",
            "[]ss12000v1.Enrolment",
            struct=_ENROLMENT,
            many=True,
            omitempty=True,
            ref_to="SchoolUnits",
        ),
        _string("civicNo", pointer=True, omitempty=True, persisted=False),
        _Field("securityMarking", "bool", "bool", pointer=True, omitempty=True, persisted=False),
        _Field(
            "userRelations",
            "struct",
            "[]ss12000v1.UserRelation",
            struct=_USER_RELATION,
            many=True,
            omitempty=True,
            persisted=False,
            ref_to="Users",
        ),
    ),
)

_SCHEMAS: dict[str, _Struct] = {
    "Organisations": _Struct(
        "Organisation",
        (_string("externalId"), _string("displayName")),
        required=("externalId", "displayName"),
        custom=True,
    ),
    "SchoolUnitGroups": _Struct(
        "SchoolUnitGroup",
        (_string("externalId"), _string("displayName")),
        required=("externalId", "displayName"),
        custom=True,
    ),
    "SchoolUnits": _Struct(
        "SchoolUnit",
        (
            _string("externalId"),
            _string("schoolUnitCode"),
            _string("displayName"),
            _ref("organisation", "Organisations", pointer=True),
            _ref("schoolUnitGroup", "SchoolUnitGroups", pointer=True),
            _Field("schoolTypes", "string", "[]string", many=True),
            _string("municipalityCode", pointer=True),
        ),
        required=("externalId", "displayName", "schoolUnitCode"),
        custom=True,
    ),
    "Users": _Struct(
        "User",
        (
            _string("externalId"),
            _string("userName"),
            _Field("name", "struct", "ss12000v1.SCIMName", struct=_NAME),
            _string("displayName"),
            _Field("emails", "struct", "[]ss12000v1.SCIMEmail", struct=_EMAIL, many=True),
            _Field(USER_EXTENSION, "struct", "ss12000v1.UserExtension", struct=_USER_EXTENSION),
        ),
        required=("externalId", "userName", "name", "displayName"),
        custom=True,
    ),
    "Employments": _Struct(
        "Employment",
        (
            _string("externalId"),
            _ref("employedAt", "SchoolUnits"),
            _ref("user", "Users"),
            _string("employmentRole"),
            _string("signature"),
        ),
        required=("externalId", "employedAt", "user", "employmentRole"),
        custom=True,
    ),
    "StudentGroups": _Struct(
        "StudentGroup",
        (
            _string("externalId"),
            _string("displayName"),
            _ref("owner", "SchoolUnits"),
            _string("studentGroupType", pointer=True),
            _ref("studentMemberships", "Users", many=True),
            _string("schoolType", pointer=True, persisted=False),
        ),
        required=("externalId", "displayName", "owner"),
        custom=True,
    ),
    "Activities": _Struct(
        "ActivityJSON",
        (
            _string("externalId"),
            _string("displayName"),
            _ref("owner", "SchoolUnits"),
            # the old EGIL clients' single "group"; folded into "groups" after parsing
            _Field("group", "struct", "*ss12000v1.SCIMReference", struct=_REFERENCE, pointer=True, marshal=False),
            _ref("groups", "StudentGroups", many=True),
            _ref("teachers", "Employments", many=True),
            _ref("parentActivity", "Activities", many=True, persisted=False),
        ),
        required=("externalId", "displayName", "owner"),
        custom=True,
    ),
}


class _ParseError(Exception):
    """What Windermere's parser reports (answered ``400 Failed to parse resource:\\n<message>``)."""


def _json_kind(value: object) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


class _Scope:
    """One Go ``json.Unmarshal`` call: type errors are remembered (the first one wins) while decoding goes
    on; a nested UnmarshalJSON's error ends the decoding at once."""

    def __init__(self, struct: _Struct) -> None:
        self.struct = struct
        self.first_error: str | None = None

    def type_error(self, what: str, path: str, go_type: str) -> None:
        if self.first_error is None:
            self.first_error = (
                f"json: cannot unmarshal {what} into Go struct field {self.struct.go_name}.{path} of type {go_type}"
            )


def _zero(spec: _Field) -> Any:
    if spec.many or spec.pointer:
        return None
    if spec.kind == "string":
        return ""
    if spec.kind == "int":
        return 0
    if spec.kind == "bool":
        return False
    assert spec.struct is not None
    return {f.json: _zero(f) for f in spec.struct.fields}


def _decode_custom(struct: _Struct, value: object) -> dict[str, Any]:
    if value is None:
        value = {}  # UnmarshalJSON("null"): nothing present, so the first required attribute is missing
    if not isinstance(value, dict):
        raise _ParseError(f"json: cannot unmarshal {_json_kind(value)} into Go value of type map[string]interface {{}}")
    for name in struct.required:
        if name not in value:
            raise _ParseError(f"missing required attribute {name}")
    scope = _Scope(struct)
    decoded = _decode_fields(struct, value, scope, "")
    if scope.first_error is not None:
        raise _ParseError(scope.first_error)
    return decoded


def _decode_fields(struct: _Struct, value: dict[str, Any], scope: _Scope, prefix: str) -> dict[str, Any]:
    decoded = {f.json: _zero(f) for f in struct.fields}
    for key, item in value.items():
        spec = struct.lookup(key)
        if spec is not None:
            decoded[spec.json] = _decode_value(spec, item, scope, prefix + spec.json)
    return decoded


def _decode_value(spec: _Field, value: object, scope: _Scope, path: str) -> Any:
    if spec.many:
        if value is None:
            return None  # a null list is a nil slice
        if not isinstance(value, list):
            scope.type_error(_json_kind(value), path, spec.go_type)
            return None
        return [_decode_single(spec, item, scope, path) for item in value]
    return _decode_single(spec, value, scope, path)


def _decode_single(spec: _Field, value: object, scope: _Scope, path: str) -> Any:
    element_type = spec.go_type.removeprefix("[]").removeprefix("*")
    if spec.kind == "struct":
        assert spec.struct is not None
        if spec.struct.custom:
            return _decode_custom(spec.struct, value)
        if value is None:
            return None if spec.pointer else _zero(_Field(spec.json, "struct", spec.go_type, struct=spec.struct))
        if not isinstance(value, dict):
            scope.type_error(_json_kind(value), path, element_type)
            return _zero(spec)
        return _decode_fields(spec.struct, value, scope, path + ".")
    if value is None:
        return None if spec.pointer else _zero(_Field(spec.json, spec.kind, spec.go_type))
    if spec.kind == "string":
        if isinstance(value, str):
            return value
    elif spec.kind == "bool":
        if isinstance(value, bool):
            return value
    elif isinstance(value, int) and not isinstance(value, bool):
        if _INT64[0] <= value <= _INT64[1]:
            return value
        scope.type_error(f"number {value}", path, element_type)
        return _zero(spec)
    elif isinstance(value, float):
        scope.type_error(f"number {value!r}", path, element_type)
        return _zero(spec)
    scope.type_error(_json_kind(value), path, element_type)
    return _zero(spec)


def _marshal_struct(struct: _Struct, decoded: Mapping[str, Any], *, persisted_only: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for spec in struct.fields:
        if not spec.marshal or (persisted_only and not spec.persisted):
            continue
        value = "" if spec.blank else decoded.get(spec.json)
        if spec.omitempty and _is_empty(spec, value):
            continue
        out[spec.json] = _marshal_value(spec, value, persisted_only=persisted_only)
    return out


def _marshal_value(spec: _Field, value: Any, *, persisted_only: bool) -> Any:
    if value is None or spec.struct is None:
        return value
    if spec.many:
        return [_marshal_struct(spec.struct, item, persisted_only=persisted_only) for item in value]
    return _marshal_struct(spec.struct, value, persisted_only=persisted_only)


def _is_empty(spec: _Field, value: Any) -> bool:
    if spec.pointer:
        return value is None
    if spec.many:
        return not value
    return value is None or value == "" or (value is False) or (value == 0 and not isinstance(value, bool))


def _references(struct: _Struct, decoded: Mapping[str, Any]) -> Iterator[tuple[str, str, str]]:
    """(attribute, referenced collection, referenced id) for every reference in a parsed object."""
    for spec in struct.fields:
        value = decoded.get(spec.json)
        if value is None or spec.struct is None:
            continue
        items = value if spec.many else [value]
        for item in items:
            if spec.ref_to is not None:
                referenced = item.get("value")
                if isinstance(referenced, str) and referenced:
                    yield spec.json, spec.ref_to, referenced
            else:
                yield from _references(spec.struct, item)


_GO_SYNTAX_CONTEXT = {
    "Expecting value": "looking for beginning of value",
    "Expecting property name enclosed in double quotes": "looking for beginning of object key string",
    "Expecting ':' delimiter": "after object key",
    "Expecting ',' delimiter": "after object key:value pair",
    "Extra data": "after top-level value",
    "Invalid control character at": "in string literal",
    "Invalid \\escape": "in string escape code",
    "Invalid \\uXXXX escape": "in string escape code",
}


def _go_quote_char(char: str) -> str:
    if char == "'":
        return "'\\''"
    if char == '"':
        return "'\"'"
    return "'" + json.dumps(char, ensure_ascii=False)[1:-1] + "'"


def _reject_constant(name: str) -> Any:
    raise _ParseError(f"invalid character {_go_quote_char(name.lstrip('-')[0])} looking for beginning of value")


def _strict_json(text: str) -> Any:
    """Parse like Go's encoding/json (no NaN/Infinity); syntax errors carry Go's wording."""
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as error:
        rest = error.doc[error.pos :]
        if not rest.strip() or error.msg.startswith("Unterminated string"):
            raise _ParseError("unexpected end of JSON input") from None
        context = _GO_SYNTAX_CONTEXT.get(error.msg, "looking for beginning of value")
        raise _ParseError(f"invalid character {_go_quote_char(rest[0])} {context}") from None


def _lenient_json(raw: bytes) -> Any:
    if not raw.strip():
        return None
    try:
        return json.loads(raw.decode("utf-8", "replace"))
    except ValueError:
        return None


def _go_json(value: Any, *, sort_keys: bool = False) -> str:
    """JSON as Go's json.Marshal writes it: compact, HTML characters escaped."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=sort_keys)
    for char, escaped in (
        ("<", "\\u003c"),
        (">", "\\u003e"),
        ("&", "\\u0026"),
        ("\u2028", "\\u2028"),
        ("\u2029", "\\u2029"),
    ):
        text = text.replace(char, escaped)
    return text


def _parse_resource(
    resource_type: str, text: str, *, validate_uuid: bool, validate_code: bool
) -> tuple[Any, dict[str, Any]]:
    """The raw JSON value and the parsed object, or :class:`_ParseError`."""
    value = _strict_json(text)
    parsed = _decode_custom(_SCHEMAS[resource_type], value)
    if resource_type == "Activities" and parsed.get("group") is not None:
        parsed["groups"] = [parsed["group"]]
    if validate_uuid and not _UUID.fullmatch(parsed["externalId"]):
        raise _ParseError(f"invalid UUID: {parsed['externalId']}")
    if validate_code and resource_type == "SchoolUnits" and not _SCHOOL_UNIT_CODE.search(parsed["schoolUnitCode"]):
        raise _ParseError(f"invalid school unit code: {parsed['schoolUnitCode']}")
    return value, parsed


# --------------------------------------------------------------------------------------------------
# Records


class DanglingReference(NamedTuple):
    """A reference between objects of one tenant: ``type``/``id`` name the referring object, ``attribute``
    its attribute (``owner``, ``studentMemberships``, ``enrolments``, ``teachers``, ...), ``referenced_id``
    the object it points at. Compares equal to a plain 4-tuple."""

    type: str
    id: str
    attribute: str
    referenced_id: str


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One request as the fake saw it (appended when it has been answered)."""

    seq: int
    method: str
    path: str  # the URL path as sent (base path included), without the query
    query: str
    status: int
    tenant: str | None  # None when the credentials were absent or unknown
    resource_type: str | None = None
    resource_id: str | None = None
    body: Any = None  # the request body parsed as JSON, None when empty or not JSON
    content_type: str | None = None
    detail: str | None = None  # the error message sent, None on success
    fault: str | None = None  # the fault that answered: fail_next, throttle, fail_matching, error_rate, reject, delay
    dangling: tuple[DanglingReference, ...] = ()
    orphaned: tuple[DanglingReference, ...] = ()
    duration: float = 0.0


@dataclass(frozen=True, slots=True)
class _Reply:
    status: int
    body: bytes = b""
    content_type: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    detail: str | None = None
    fault: str | None = None


@dataclass(slots=True)
class _Stored:
    raw: bytes  # the request body exactly as received
    body: dict[str, Any]  # ... parsed as JSON
    parsed: dict[str, Any]  # ... as the Go types hold it


@dataclass(slots=True)
class _RequestState:
    tenant: str | None = None
    resource_type: str | None = None
    resource_id: str | None = None
    dangling: tuple[DanglingReference, ...] = ()
    orphaned: tuple[DanglingReference, ...] = ()


# --------------------------------------------------------------------------------------------------
# Fault injection


@dataclass(slots=True)
class _Matcher:
    method: str
    path_prefix: str
    status: int
    remaining: int | None
    detail: str | None


class Faults:
    """Failures to inject (``vendor.faults``), evaluated for every request in this order: ``delay`` (when
    before processing), ``fail_next``, ``throttle``, ``fail_matching``, ``error_rate`` (these answer even
    requests with bad credentials); then authentication, the waiting ``rate_limit`` and normal
    processing, during which ``reject`` answers for its resource id. A request answered by a fault
    changes nothing, and its :class:`RequestRecord` names the fault."""

    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        """Remove every fault (the vendor behaves normally again)."""
        self._fail_queue: deque[tuple[int, str | None]] = deque()
        self._throttle_left = 0
        self._retry_after = 1
        self._matchers: list[_Matcher] = []
        self._error_fraction = 0.0
        self._error_status = 500
        self._rng = random.Random(0)  # noqa: S311 - reproducible test faults, not security
        self._delay = 0.0
        self._delay_after = False
        self._rejections: dict[str, tuple[int, str]] = {}
        self._rate: float | None = None
        self._burst = 1
        self._buckets: dict[str | None, tuple[float, float]] = {}

    def fail_next(self, n: int, status: int = 503, *, detail: str | None = None) -> None:
        """Answer the next ``n`` requests with ``status`` (queued after failures already pending)."""
        _check_count(n)
        self._fail_queue.extend([(status, detail)] * n)

    def error_rate(self, fraction: float, status: int = 500, seed: int = 0) -> None:
        """Answer each request with ``status`` with probability ``fraction``; the same seed and the same
        request sequence give the same failures. ``fraction=0`` turns it off."""
        if not 0.0 <= fraction <= 1.0:
            raise ValueError("fraction must be between 0 and 1")
        self._error_fraction = fraction
        self._error_status = status
        self._rng = random.Random(seed)  # noqa: S311 - reproducible test faults, not security

    def delay(self, seconds: float, *, after_processing: bool = False) -> None:
        """Make every request take ``seconds`` longer (a slow vendor). By default the wait comes before
        the request is processed, and a request whose client gave up (closed the connection) meanwhile is
        dropped unprocessed (recorded with status 499). With ``after_processing=True`` the request is
        processed (and stored) first and only the answer is late, so a client that times out has still
        changed the vendor's data. ``delay(0)`` turns it off."""
        if seconds < 0:
            raise ValueError("seconds must not be negative")
        self._delay = seconds
        self._delay_after = after_processing

    def reject(self, resource_id: str, status: int = 422, detail: str = "rejected by the vendor") -> None:
        """Answer every POST/PUT/DELETE of ``resource_id`` (URL id or body externalId, case-sensitive)
        with ``status`` and ``detail``, until :meth:`clear` or :meth:`accept`."""
        self._rejections[resource_id] = (status, detail)

    def accept(self, resource_id: str) -> None:
        """Undo :meth:`reject` for one id."""
        self._rejections.pop(resource_id, None)

    def throttle(self, n: int, retry_after: int = 1) -> None:
        """Answer the next ``n`` requests with 429 and ``Retry-After: <retry_after>``."""
        _check_count(n)
        self._throttle_left += n
        self._retry_after = retry_after

    def fail_matching(
        self, method: str, path_prefix: str, status: int, *, times: int | None = 1, detail: str | None = None
    ) -> None:
        """Answer requests whose method is ``method`` and whose path below the base path starts with
        ``path_prefix`` (e.g. ``"PUT", "/Users/"``) with ``status`` without processing them, ``times``
        times (``None``: every time). Also for wrong success codes: ``status=204`` on a PUT."""
        if times is not None:
            _check_count(times)
        self._matchers.append(_Matcher(method.upper(), path_prefix, status, times, detail))

    def rate_limit(self, per_second: float | None, burst: int = 1) -> None:
        """Windermere's optional limiter: a token bucket per tenant; requests over the rate *wait* for a
        token (latency, not errors). ``None`` turns it off."""
        if per_second is not None and per_second <= 0:
            raise ValueError("per_second must be positive")
        self._rate = per_second
        self._burst = max(1, burst)
        self._buckets.clear()

    # -- used by the server

    def _rejection(self, ids: Sequence[str | None]) -> tuple[int, str] | None:
        for resource_id in ids:
            if resource_id is not None and resource_id in self._rejections:
                return self._rejections[resource_id]
        return None

    def _rate_wait(self, tenant: str | None, now: float) -> float:
        if self._rate is None:
            return 0.0
        tokens, last = self._buckets.get(tenant, (float(self._burst), now))
        tokens = min(float(self._burst), tokens + (now - last) * self._rate) - 1.0
        self._buckets[tenant] = (tokens, now)
        return max(0.0, -tokens / self._rate)

    def _short_circuit(
        self, method: str, relative_path: str
    ) -> tuple[str, int, str | None, tuple[tuple[str, str], ...]] | None:
        if self._fail_queue:
            status, detail = self._fail_queue.popleft()
            return "fail_next", status, detail, ()
        if self._throttle_left > 0:
            self._throttle_left -= 1
            return "throttle", 429, None, (("Retry-After", str(self._retry_after)),)
        for matcher in self._matchers:
            if matcher.method == method and relative_path.startswith(matcher.path_prefix):
                if matcher.remaining is not None:
                    if matcher.remaining <= 0:
                        continue
                    matcher.remaining -= 1
                return "fail_matching", matcher.status, matcher.detail, ()
        if self._error_fraction > 0 and self._rng.random() < self._error_fraction:
            return "error_rate", self._error_status, None, ()
        return None


def _check_count(n: int) -> None:
    if n < 0:
        raise ValueError("the count must not be negative")


# --------------------------------------------------------------------------------------------------
# The server


class FakeEgilVendor:
    """A vendor's EGIL SCIM server (Windermere-like) on a local port. See the module docstring for the
    wire behaviour.

    ``api_keys`` maps API key -> tenant (sent in ``api_key_header``); ``client_pins`` maps a client
    certificate's SPKI pin (:func:`spki_sha256_pin`) -> tenant and is used when the connection carries a
    client certificate (start with an ``ssl_context`` that requires one, see :func:`server_ssl_context`).
    With neither, every request belongs to ``default_tenant``. Both dicts may be changed while running.
    """

    def __init__(
        self,
        *,
        api_keys: Mapping[str, str] | None = None,
        client_pins: Mapping[str, str] | None = None,
        api_key_header: str = "X-API-Key",
        base_path: str = "",
        backend: Backend = "sql",
        error_format: ErrorFormat = "text",
        no_key_status: int = 403,
        single_get: bool = False,
        put_id_mismatch: PutIdMismatch = "reject",
        validate_uuid: bool = True,
        validate_school_unit_code: bool = True,
        default_tenant: str = "default",
        access_log: TextIO | None = None,
    ) -> None:
        if backend not in ("sql", "file"):
            raise ValueError(f"unknown backend {backend!r}")
        if error_format not in ("text", "scim"):
            raise ValueError(f"unknown error format {error_format!r}")
        if put_id_mismatch not in ("reject", "reference"):
            raise ValueError(f"unknown put_id_mismatch {put_id_mismatch!r}")
        self.api_keys: dict[str, str] = dict(api_keys or {})
        self.client_pins: dict[str, str] = dict(client_pins or {})
        self.api_key_header = api_key_header
        self.base_path = "/" + base_path.strip("/") if base_path.strip("/") else ""
        self.backend: Backend = backend
        self.error_format: ErrorFormat = error_format
        self.no_key_status = no_key_status
        self.single_get = single_get
        self.put_id_mismatch: PutIdMismatch = put_id_mismatch
        self.validate_uuid = validate_uuid
        self.validate_school_unit_code = validate_school_unit_code
        self.default_tenant = default_tenant
        self.access_log = access_log

        self.faults = Faults()
        #: Every request answered, in order.
        self.requests: list[RequestRecord] = []
        #: References to objects the tenant did not hold when the referring object was stored.
        self.dangling_references: list[DanglingReference] = []
        #: References left pointing at an object a DELETE removed (``referenced_id`` = the deleted id).
        self.orphaned_references: list[DanglingReference] = []

        self._data: dict[str, dict[str, dict[str, _Stored]]] = {}
        self._pin_cache: dict[bytes, str] = {}
        self._runner: web.AppRunner | None = None
        self._listener: asyncio.Server | None = None
        self._stopped_listeners: list[asyncio.Server] = []
        self._host = "127.0.0.1"
        self._port = 0
        self._ssl_context: ssl.SSLContext | None = None
        self._closing: asyncio.Event | None = None
        self._answered: asyncio.Condition | None = None
        self._seq = 0

    # -- lifecycle

    async def start(self, host: str = "127.0.0.1", port: int = 0, *, ssl_context: ssl.SSLContext | None = None) -> None:
        """Listen on ``host:port`` (0: a free port; see :attr:`port` and :attr:`base_url`), over TLS when
        ``ssl_context`` is given."""
        if self._runner is not None:
            raise RuntimeError("the fake vendor is already started")
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
        await runner.setup()
        self._runner = runner
        self._host, self._port, self._ssl_context = host, port, ssl_context
        self._closing = asyncio.Event()
        self._answered = asyncio.Condition()
        try:
            await self._listen()
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        """Stop listening, close every connection and release the port. The data is kept."""
        if self._closing is not None:
            self._closing.set()
        if self._listener is not None:
            self._listener.close()
            self._stopped_listeners.append(self._listener)
            self._listener = None
        await self._wait_stopped_listeners()
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    def down(self) -> None:
        """Simulate an outage: stop listening and drop every open connection. Requests get connection
        refused until :meth:`up`. The data is kept."""
        if self._listener is None:
            return
        self._listener.close()
        self._stopped_listeners.append(self._listener)
        self._listener = None
        server = self._runner.server if self._runner is not None else None
        for connection in server.connections if server is not None else []:
            connection.force_close()

    async def up(self) -> None:
        """Listen again, on the same port, after :meth:`down`."""
        if self._runner is None:
            raise RuntimeError("the fake vendor is not started")
        if self._listener is None:
            await self._wait_stopped_listeners()
            await self._listen()

    @property
    def is_up(self) -> bool:
        return self._listener is not None

    async def __aenter__(self) -> FakeEgilVendor:
        if self._runner is None:
            await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.stop()

    async def _listen(self) -> None:
        assert self._runner is not None
        assert self._runner.server is not None
        loop = asyncio.get_running_loop()
        self._listener = await loop.create_server(
            self._runner.server, self._host, self._port, ssl=self._ssl_context, reuse_address=True
        )
        self._port = self._listener.sockets[0].getsockname()[1]

    async def _wait_stopped_listeners(self) -> None:
        while self._stopped_listeners:
            listener = self._stopped_listeners.pop()
            try:
                async with asyncio.timeout(2.0):
                    await listener.wait_closed()
            except TimeoutError:
                log.warning("fake_egil_vendor_listener_close_timeout")

    @property
    def host(self) -> str:
        return self._host

    @property
    def port(self) -> int:
        """The bound port (the requested one before :meth:`start`)."""
        return self._port

    @property
    def base_url(self) -> str:
        """``http(s)://host:port`` plus the base path, without a trailing slash."""
        scheme = "https" if self._ssl_context is not None else "http"
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"{scheme}://{host}:{self._port}{self.base_path}"

    # -- inspection and set-up

    def resources(self, tenant: str, resource_type: str) -> dict[str, dict[str, Any]]:
        """What the vendor holds for one tenant and collection (e.g. ``"Users"``): id -> the JSON object
        as last POSTed/PUT (a copy; no ``id`` added, nothing dropped)."""
        _check_type(resource_type)
        collection = self._data.get(tenant, {}).get(resource_type, {})
        return {resource_id: copy.deepcopy(stored.body) for resource_id, stored in collection.items()}

    async def wait_for_requests(self, count: int, *, timeout: float = 5.0) -> list[RequestRecord]:
        """Wait until at least ``count`` requests have been answered in total (``TimeoutError`` after
        ``timeout`` seconds) and return a copy of :attr:`requests`."""
        if len(self.requests) < count:
            answered = self._answered
            if answered is None:
                raise RuntimeError("the fake vendor is not started")
            async with asyncio.timeout(timeout), answered:
                await answered.wait_for(lambda: len(self.requests) >= count)
        return list(self.requests)

    def tenants(self) -> list[str]:
        """Tenants that hold at least one object."""
        return sorted(t for t, collections in self._data.items() if any(collections.values()))

    def seed(self, tenant: str, resource_type: str, body: Mapping[str, Any]) -> str:
        """Store an object directly (as if POSTed earlier; overwrites; not logged, no reference check).
        Raises ``ValueError`` when the reference server would reject the body. Returns its id."""
        _check_type(resource_type)
        raw = json.dumps(dict(body), ensure_ascii=False).encode()
        try:
            value, parsed = self._parse(resource_type, raw)
        except _ParseError as error:
            raise ValueError(str(error)) from None
        self._collection(tenant, resource_type)[parsed["externalId"]] = _Stored(raw, value, parsed)
        return str(parsed["externalId"])

    def forget(self, tenant: str, resource_type: str, resource_id: str) -> bool:
        """Drop one object silently (vendor-side data loss). True when it existed."""
        _check_type(resource_type)
        return self._data.get(tenant, {}).get(resource_type, {}).pop(resource_id, None) is not None

    def clear(self, tenant: str | None = None) -> None:
        """Wipe one tenant's objects, or everything (Windermere's in-process ``Clear``)."""
        if tenant is None:
            self._data.clear()
        else:
            self._data.pop(tenant, None)

    # -- request handling

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        started = time.monotonic()
        state = _RequestState()
        raw = await request.read()
        try:
            reply = await self._process(request, raw, state)
        except Exception:  # the fake must answer, and the test must see it
            log.exception("fake_egil_vendor_error", method=request.method, path=request.path)
            reply = self._error(500, "internal error in the fake vendor")
        self._seq += 1
        record = RequestRecord(
            seq=self._seq,
            method=request.method,
            path=request.path,
            query=request.query_string,
            status=reply.status,
            tenant=state.tenant,
            resource_type=state.resource_type,
            resource_id=state.resource_id,
            body=_lenient_json(raw),
            content_type=request.headers.get("Content-Type"),
            detail=reply.detail,
            fault=reply.fault,
            dangling=state.dangling,
            orphaned=state.orphaned,
            duration=time.monotonic() - started,
        )
        self.requests.append(record)
        if self._answered is not None:
            async with self._answered:
                self._answered.notify_all()
        if self.access_log is not None:
            self._write_access_log(request, record)
        response = web.Response(status=reply.status, body=reply.body or None)
        if reply.content_type is not None:
            response.headers["Content-Type"] = reply.content_type
        for name, value in reply.headers:
            response.headers[name] = value
        return response

    def _write_access_log(self, request: web.Request, record: RequestRecord) -> None:
        assert self.access_log is not None
        uri = request.path_qs
        extra = f" fault={record.fault}" if record.fault else ""
        self.access_log.write(
            f"{request.remote or '-'} {record.tenant or '-'} {record.method} {uri} {record.status} "
            f"{record.duration * 1000:.1f}ms{extra}\n"
        )
        self.access_log.flush()

    async def _process(self, request: web.Request, raw: bytes, state: _RequestState) -> _Reply:
        tenant, auth_error = self._authenticate(request)
        state.tenant = tenant
        faults = self.faults
        if faults._delay > 0 and not faults._delay_after:
            await self._sleep(faults._delay)
            if request.transport is None or request.transport.is_closing():
                return _Reply(499, detail="the client closed the connection during the injected delay", fault="delay")
        relative = self._relative_path(request.path)
        fault = faults._short_circuit(request.method, relative if relative is not None else request.path)
        if fault is not None:
            name, status, detail, headers = fault
            return self._error(status, detail or _phrase(status), fault=name, headers=headers)
        if auth_error is not None:
            return auth_error
        wait = faults._rate_wait(tenant, asyncio.get_running_loop().time())
        if wait > 0:
            await self._sleep(wait)
        assert tenant is not None
        if relative is None:
            reply = self._not_found()
        else:
            reply = self._route(request.method, relative, request.headers.get("Content-Type"), raw, tenant, state)
        if faults._delay > 0 and faults._delay_after:
            await self._sleep(faults._delay)
        return reply

    async def _sleep(self, seconds: float) -> None:
        """Sleep, but wake up when the vendor stops (so stop() never waits for injected delays)."""
        closing = self._closing
        if closing is None or closing.is_set():
            return
        try:
            async with asyncio.timeout(seconds):
                await closing.wait()
        except TimeoutError:
            pass

    def _authenticate(self, request: web.Request) -> tuple[str | None, _Reply | None]:
        certificate = _peer_certificate(request)
        if self.client_pins and certificate is not None:
            pin = self._pin_cache.get(certificate)
            if pin is None:
                pin = self._pin_cache[certificate] = spki_sha256_pin(certificate)
            tenant = self.client_pins.get(pin)
            if tenant is None:
                return None, self._error(403, f"failed to find client pin ({pin}) in metadata")
            return tenant, None
        if self.api_keys:
            key = request.headers.get(self.api_key_header, "")
            if not key:
                return None, self._error(self.no_key_status, "No API key")
            tenant = self.api_keys.get(key)
            if tenant is None:
                return None, self._error(403, "Invalid API key")
            return tenant, None
        if self.client_pins:
            return None, self._error(403, "no client certificate")
        return self.default_tenant, None

    def _relative_path(self, path: str) -> str | None:
        if not self.base_path:
            return path
        if path == self.base_path:
            return "/"
        if path.startswith(self.base_path + "/"):
            return path[len(self.base_path) :]
        return None

    def _route(
        self, method: str, relative: str, content_type: str | None, raw: bytes, tenant: str, state: _RequestState
    ) -> _Reply:
        segments = relative.split("/")[1:]
        if not segments or segments[0] not in ENDPOINTS:
            return self._not_found()
        if method == "PUT" and len(segments) == 1:
            # Windermere's compatibility mode: PUT /Type takes the id from the body's id or externalId
            resource_id, problem = _compatibility_id(raw)
            if problem is not None:
                return self._error(400, problem)
            segments = [segments[0], resource_id]
        if method in ("POST", "PUT"):
            media_type = (content_type or "").split(";", 1)[0].strip().lower()
            if media_type not in _SCIM_MEDIA_TYPES:
                return self._error(415, f'Bad media type: got "{content_type or ""}" (SCIM uses application/scim+json)')
        if method == "POST":
            return self._create(tenant, segments[-1], raw, state)
        if method == "PUT":
            return self._replace(tenant, segments[-2], segments[-1], raw, state)
        if method == "DELETE":
            if len(segments) < 2:
                return self._error(400, "Failed to get resource type and ID from URL")
            return self._delete(tenant, segments[-2], segments[-1], state)
        if method == "GET":
            return self._get(tenant, segments, state)
        return self._error(501, "Not implemented")

    def _create(self, tenant: str, resource_type: str, raw: bytes, state: _RequestState) -> _Reply:
        state.resource_type = resource_type
        state.resource_id = _body_external_id(raw)
        if resource_type not in ENDPOINTS:
            return self._error(500, f"unrecognized resource type {resource_type}")
        rejected = self._rejected(state.resource_id)
        if rejected is not None:
            return rejected
        if self.backend == "file":
            problem = _file_backend_id_problem(raw)
            if problem is not None:
                return self._error(500, problem)
        try:
            value, parsed = self._parse(resource_type, raw)
        except _ParseError as error:
            return self._error(400, f"Failed to parse resource:\n{error}")
        resource_id: str = parsed["externalId"]
        collection = self._collection(tenant, resource_type)
        if resource_id in collection and self.backend == "sql":
            return self._error(409, f"object {resource_id} already exists", scim_type="uniqueness")
        state.dangling = self._check_references(tenant, resource_type, resource_id, parsed)
        collection[resource_id] = _Stored(raw, value, parsed)
        return self._resource_reply(201, resource_type, raw, parsed)

    def _replace(self, tenant: str, resource_type: str, resource_id: str, raw: bytes, state: _RequestState) -> _Reply:
        state.resource_type, state.resource_id = resource_type, resource_id
        if resource_type not in ENDPOINTS:
            return self._error(500, f"unrecognized resource type {resource_type}")
        rejected = self._rejected(resource_id, _body_external_id(raw))
        if rejected is not None:
            return rejected
        try:
            value, parsed = self._parse(resource_type, raw)
        except _ParseError as error:
            return self._error(400, f"Failed to parse resource:\n{error}")
        body_id: str = parsed["externalId"]
        if body_id != resource_id and self.put_id_mismatch == "reject":
            return self._error(400, f"externalId {body_id} in the body does not match the id {resource_id} in the URL")
        collection = self._collection(tenant, resource_type)
        if resource_id not in collection:
            return self._error(404, self._missing_message(resource_id))
        stored = _Stored(raw, value, parsed)
        if body_id == resource_id or self.backend == "file":
            # the file backend stores the body under the URL id, even when the body says otherwise
            state.dangling = self._check_references(tenant, resource_type, resource_id, parsed)
            collection[resource_id] = stored
        elif body_id in collection:
            # SQL: existence checked with the URL id, the update addressed by the body's id
            state.dangling = self._check_references(tenant, resource_type, body_id, parsed)
            collection[body_id] = stored
        return self._resource_reply(200, resource_type, raw, parsed)

    def _delete(self, tenant: str, resource_type: str, resource_id: str, state: _RequestState) -> _Reply:
        state.resource_type, state.resource_id = resource_type, resource_id
        if resource_type not in ENDPOINTS and self.backend == "sql":
            return self._error(500, f"unrecognized resource type {resource_type}")
        rejected = self._rejected(resource_id)
        if rejected is not None:
            return rejected
        collection = self._data.get(tenant, {}).get(resource_type, {})
        if resource_id not in collection:
            return self._error(404, self._missing_message(resource_id))
        del collection[resource_id]
        state.orphaned = self._find_orphans(tenant, resource_type, resource_id)
        return _Reply(204)

    def _get(self, tenant: str, segments: list[str], state: _RequestState) -> _Reply:
        if self.single_get and len(segments) == 2:
            resource_type, resource_id = segments
            state.resource_type, state.resource_id = resource_type, resource_id
            stored = self._data.get(tenant, {}).get(resource_type, {}).get(resource_id)
            if stored is None:
                return self._error(404, self._missing_message(resource_id))
            item = self._listed(resource_type, resource_id, stored)
            return _Reply(200, _go_json(item, sort_keys=True).encode(), _SCIM_JSON)
        resource_type = segments[-1]
        state.resource_type = resource_type
        if resource_type not in ENDPOINTS:
            if self.backend == "sql":
                return self._error(500, f"failed to read unknown type: {resource_type}")
            return self._list_reply([])  # the file backend lists an unknown type as empty
        collection = self._data.get(tenant, {}).get(resource_type, {})
        items = [self._listed(resource_type, rid, collection[rid]) for rid in sorted(collection)]
        return self._list_reply(items)

    def _list_reply(self, items: list[dict[str, Any]]) -> _Reply:
        resources = ",".join(_go_json(item, sort_keys=True) for item in items)
        body = f'{{"schemas":["{LIST_RESPONSE_SCHEMA}"],"totalResults":{len(items)},"Resources":[{resources}]}}'
        return _Reply(200, body.encode("utf-8", "replace"), _TEXT_PLAIN)

    def _listed(self, resource_type: str, resource_id: str, stored: _Stored) -> dict[str, Any]:
        if self.backend == "file":
            item = dict(stored.body)
        else:
            item = _marshal_struct(_SCHEMAS[resource_type], stored.parsed, persisted_only=True)
        item["id"] = resource_id
        return item

    def _resource_reply(self, status: int, resource_type: str, raw: bytes, parsed: dict[str, Any]) -> _Reply:
        if self.backend == "file":
            return _Reply(status, raw, _SCIM_JSON)  # the body echoed byte for byte
        body = _go_json(_marshal_struct(_SCHEMAS[resource_type], parsed, persisted_only=False))
        return _Reply(status, body.encode("utf-8", "replace"), _SCIM_JSON)

    def _parse(self, resource_type: str, raw: bytes) -> tuple[dict[str, Any], dict[str, Any]]:
        value, parsed = _parse_resource(
            resource_type,
            raw.decode("utf-8", "replace"),
            validate_uuid=self.validate_uuid,
            validate_code=self.validate_school_unit_code,
        )
        return value, parsed

    def _rejected(self, *ids: str | None) -> _Reply | None:
        rejection = self.faults._rejection(ids)
        if rejection is None:
            return None
        status, detail = rejection
        return self._error(status, detail, fault="reject")

    def _missing_message(self, resource_id: str) -> str:
        if self.backend == "file":
            return f"Resource missing: {resource_id}"
        return f"couldn't find object {resource_id}"

    def _collection(self, tenant: str, resource_type: str) -> dict[str, _Stored]:
        return self._data.setdefault(tenant, {}).setdefault(resource_type, {})

    def _check_references(
        self, tenant: str, resource_type: str, resource_id: str, parsed: Mapping[str, Any]
    ) -> tuple[DanglingReference, ...]:
        held = self._data.get(tenant, {})
        dangling = tuple(
            DanglingReference(resource_type, resource_id, attribute, referenced)
            for attribute, target, referenced in _references(_SCHEMAS[resource_type], parsed)
            if referenced not in held.get(target, {})
        )
        self.dangling_references.extend(dangling)
        return dangling

    def _find_orphans(self, tenant: str, deleted_type: str, deleted_id: str) -> tuple[DanglingReference, ...]:
        orphans: list[DanglingReference] = []
        for resource_type, collection in self._data.get(tenant, {}).items():
            for resource_id, stored in collection.items():
                for attribute, target, referenced in _references(_SCHEMAS[resource_type], stored.parsed):
                    if target == deleted_type and referenced == deleted_id:
                        orphans.append(DanglingReference(resource_type, resource_id, attribute, deleted_id))
        self.orphaned_references.extend(orphans)
        return tuple(orphans)

    def _not_found(self) -> _Reply:
        return self._error(404, "404 page not found")

    def _error(
        self,
        status: int,
        message: str,
        *,
        fault: str | None = None,
        headers: tuple[tuple[str, str], ...] = (),
        scim_type: str | None = None,
    ) -> _Reply:
        if self.error_format == "scim":
            document: dict[str, Any] = {"schemas": [ERROR_SCHEMA], "status": str(status), "detail": message}
            if scim_type is not None:
                document["scimType"] = scim_type
            body = json.dumps(document, ensure_ascii=False).encode()
            return _Reply(status, body, _SCIM_JSON, headers, message, fault)
        # Go's http.Error: plain text, one line, nosniff
        headers = (*headers, ("X-Content-Type-Options", "nosniff"))
        return _Reply(status, (message + "\n").encode(), _TEXT_PLAIN, headers, message, fault)


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "injected failure"


def _check_type(resource_type: str) -> None:
    if resource_type not in ENDPOINTS:
        raise ValueError(f"unknown resource type {resource_type!r}; one of {', '.join(ENDPOINTS)}")


def _peer_certificate(request: web.Request) -> bytes | None:
    transport = request.transport
    if transport is None:
        return None
    ssl_object = transport.get_extra_info("ssl_object")
    if not isinstance(ssl_object, ssl.SSLObject | ssl.SSLSocket):
        return None
    return ssl_object.getpeercert(binary_form=True)


def _body_external_id(raw: bytes) -> str | None:
    body = _lenient_json(raw)
    if isinstance(body, dict) and isinstance(body.get("externalId"), str):
        return str(body["externalId"])
    return None


def _file_backend_id_problem(raw: bytes) -> str | None:
    """The file backend takes the id from the raw JSON before parsing; its errors are 500s."""
    try:
        value = _strict_json(raw.decode("utf-8", "replace"))
    except _ParseError as error:
        return str(error)
    if not isinstance(value, dict) or "externalId" not in value:
        return "Missing externalId in resource"
    if not isinstance(value["externalId"], str):
        return "externalId has invalid type"
    return None


def _compatibility_id(raw: bytes) -> tuple[str, str | None]:
    try:
        value = _strict_json(raw.decode("utf-8", "replace"))
    except _ParseError:
        value = _INVALID
    if value is not None and (
        not isinstance(value, dict)
        or not isinstance(value.get("id", ""), str)
        or not isinstance(value.get("externalId", ""), str)
    ):
        return "", "Failed to parse body (also invalid PUT to resource type)"
    body = value or {}
    resource_id = str(body.get("id") or body.get("externalId") or "")
    if not resource_id:
        return "", "Invalid PUT to resource type didn't include id or externalId in body"
    return resource_id, None


_INVALID = object()


# --------------------------------------------------------------------------------------------------
# Command line (the demo)


def _pairs(values: Sequence[str], option: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for value in values:
        key, separator, tenant = value.rpartition("=")  # keys and pins may end in "=" (base64)
        if not separator or not key or not tenant:
            raise SystemExit(f"{option} wants KEY=TENANT, got {value!r}")
        pairs[key] = tenant
    return pairs


def _argument_parser() -> argparse.ArgumentParser:
    parser = argument_parser(
        "python -m skolsynk_testkit.fakes.egil_vendor",
        "A fake vendor EGIL SCIM server (Windermere-like) for the demo. Serves until SIGTERM/SIGINT.",
    )
    parser.add_argument("--api-key", action="append", default=[], metavar="KEY=TENANT", help="repeatable")
    parser.add_argument("--api-key-header", default="X-API-Key")
    parser.add_argument("--base-path", default="", help="e.g. /scim (Windermere has none)")
    parser.add_argument("--backend", choices=("sql", "file"), default="sql")
    parser.add_argument("--error-format", choices=("text", "scim"), default="text")
    parser.add_argument("--tls-cert", help="server certificate chain (PEM); enables HTTPS")
    parser.add_argument("--tls-key", help="server key (PEM), if not in --tls-cert")
    parser.add_argument("--client-ca", help="trusted client issuers (PEM); requires a client certificate")
    parser.add_argument("--client-pin", action="append", default=[], metavar="PIN=TENANT", help="repeatable")
    return parser


async def _serve(args: argparse.Namespace) -> int:
    vendor = FakeEgilVendor(
        api_keys=_pairs(args.api_key, "--api-key"),
        client_pins=_pairs(args.client_pin, "--client-pin"),
        api_key_header=args.api_key_header,
        base_path=args.base_path,
        backend=args.backend,
        error_format=args.error_format,
        access_log=sys.stdout,
    )
    context = server_ssl_context(args.tls_cert, args.tls_key, args.client_ca) if args.tls_cert else None

    def ready() -> str:
        tenants = sorted({*vendor.api_keys.values(), *vendor.client_pins.values()}) or [vendor.default_tenant]
        return (
            f"fake EGIL vendor listening on {vendor.base_url} (backend {vendor.backend}, tenants {', '.join(tenants)})"
        )

    return await serve_until_signalled(
        lambda: vendor.start(args.host, args.port, ssl_context=context), vendor.stop, ready, "fake EGIL vendor stopped"
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = _argument_parser().parse_args(argv)
    if args.client_ca and not args.tls_cert:
        raise SystemExit("--client-ca needs --tls-cert")
    return asyncio.run(_serve(args))


if __name__ == "__main__":
    raise SystemExit(main())
