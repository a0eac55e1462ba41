"""Hypothesis against the running EGIL SCIM receiver (a real aiohttp server, a real client, registered API keys):
sequences of requests of every method, to every endpoint and to odd ones, with the real EGIL client's captured
resources (``tests/fixtures/egil``) as they are and mutated (attributes missing, added or of the wrong type,
``externalId`` in any case or not a UUID, deep nesting, lone surrogates, numbers past 64 bits, NUL bytes, bytes
that are not UTF-8, long strings, other content types), with hostile ``startIndex``, ``count``, ``filter`` and
``attributes``, from the registered client, another organiser's client, a wrong key and no key.

What must hold for every request:

* no answer is >= 500;
* an answer that refuses (4xx) stores nothing: the receiver's resources (every live document, its body and its
  write stamp ``seq``) are exactly as they were before it (read after every request; the pager's own work,
  paging and removing tombstones, changes neither);
* the store is exactly what the accepted requests alone leave: a model of them (per client, type and id in
  lower case) equals the stored bodies after every accepted write, and every answer agrees with it (201 only
  for an absent resource and 409 only for a present one, 200/404 on PUT and GET, 204/404 on DELETE, the
  ``totalResults`` of a listing), so nothing a refused request sent can hide behind a later accepted one;
* no refusal repeats a planted value (a name) that was sent.

What the pager publishes is made from the stored resources only, so a store that refused requests left alone
publishes nothing of them.

Size: ``SKOLSYNK_FUZZ_EXAMPLES`` x 4 examples (each one to four requests) at chaos size, 40 at ``make test`` size;
the inputs tried are tallied (``tests/fuzzing.py``).
"""

from __future__ import annotations

import copy
import io
import json
import re
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from hypothesis import strategies as st
from yarl import URL

from skolsynk.adapters.egil import EgilResourceType
from skolsynk.service import ServiceApp
from skolsynk.settings import ServiceSettings
from skolsynk_services.egil_receiver.app import EgilReceiverSettings
from skolsynk_services.egil_receiver.app import build as build_receiver
from skolsynk_services.egil_receiver.clients import EgilClient, hash_key
from tests import fuzzing
from tests.helpers import delete_topology
from tests.reference import EGIL_CAPTURES

pytestmark = [
    pytest.mark.connected,
    pytest.mark.fuzz,
    pytest.mark.timeout(fuzzing.timeout_seconds(240)),
    pytest.mark.queues("normaliser.source-events"),
    # The server's tasks (on the loop, in another thread) use `random` while Hypothesis draws: not the strategies.
    pytest.mark.filterwarnings("ignore:Do not use the `random` module inside strategies"),
]

#: The registered clients: (tenant, source, API key).
CLIENTS = {
    "own": ("gronkoping", "egil-ldap", "egil-fuzz-key-0123456789"),
    "other": ("kommun-b", "egil-b", "egil-fuzz-other-key-98765"),
}
WRONG_KEY = "egil-fuzz-wrong-key-00000"
#: A name planted in bodies, paths and queries: no refusal may repeat it.
PLANTED = "Karin Sundberg"
TYPES = [t.value for t in EgilResourceType]


def captured_resources() -> dict[str, list[dict[str, Any]]]:
    """Every resource the real EGIL client created or replaced in the captures, per type."""
    found: dict[str, list[dict[str, Any]]] = {t: [] for t in TYPES}
    for requests in sorted(EGIL_CAPTURES.glob("*/requests.jsonl")):
        for line in requests.read_text(encoding="utf-8").splitlines():
            captured = json.loads(line)
            endpoint = captured["path"].split("?")[0].strip("/").split("/")[0]
            if captured["method"] in ("POST", "PUT") and isinstance(captured.get("body_json"), dict):
                found[endpoint].append(captured["body_json"])
    assert all(found.values()), {t: len(v) for t, v in found.items()}
    return found


CAPTURED = captured_resources()
#: A few ids, so that creates, replacements and deletions meet the same resources.
IDS = [
    CAPTURED["Users"][0]["externalId"],
    CAPTURED["SchoolUnits"][0]["externalId"],
    "9f8e7d6c-5b4a-4f3e-9d2c-1b0a9f8e7d6c",
    "00000000-0000-4000-8000-000000000001",
]


def in_any_case(value: str) -> st.SearchStrategy[str]:
    return st.lists(st.booleans(), min_size=len(value), max_size=len(value)).map(
        lambda upper: "".join(c.upper() if u else c.lower() for c, u in zip(value, upper, strict=True))
    )


ids = st.sampled_from(IDS).flatmap(in_any_case)
hostile_text = st.one_of(
    st.text(max_size=20),
    st.sampled_from(
        ["\x00", "a\x00b", "\ud800", "x\udfff", "$where", "a.b", "$ref", PLANTED, "\u202e", "\U0001d518", "null", "🙂"]
    ),
)
hostile_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**31), max_value=2**31),
    st.integers(min_value=2**63 - 2, max_value=2**70),
    st.integers(min_value=-(2**70), max_value=-(2**63) + 1),
    st.floats(allow_nan=False, allow_infinity=False),
    hostile_text,
)
json_values = st.recursive(
    hostile_scalars,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(hostile_text, children, max_size=3),
    max_leaves=8,
)


#: A value standing for deep nesting, replaced once the body is encoded.
DEEP = "__deep__"


@st.composite
def mutated(draw: st.DrawFn, resource: dict[str, Any]) -> dict[str, Any]:
    """The resource with zero to three mutations."""
    body = copy.deepcopy(resource)
    for _ in range(draw(st.sampled_from([0, 0, 0, 1, 1, 2, 3]))):
        kind = draw(st.sampled_from(["drop", "set", "set", "nested", "deep", "id", "schemas"]))
        keys = sorted(body)
        if kind == "drop" and keys:
            body.pop(draw(st.sampled_from(keys)))
        elif kind == "set":
            body[draw(st.sampled_from(keys) if keys and draw(st.booleans()) else hostile_text)] = draw(json_values)
        elif kind == "nested":
            inner = [k for k in keys if isinstance(body[k], dict)]
            if inner:
                target = body[draw(st.sampled_from(inner))]
                target[draw(st.sampled_from(sorted(target)) if target else hostile_text)] = draw(json_values)
        elif kind == "deep":
            # Replaced by that many brackets once encoded (deeper than json.dumps goes).
            body[draw(hostile_text)] = f"{DEEP}{draw(st.sampled_from([8, 31, 33, 200, 5000]))}"
        elif kind == "id":
            body["externalId"] = draw(
                st.one_of(
                    json_values,
                    st.sampled_from(["", "not-a-uuid", PLANTED, IDS[0] + "\x00", "{" + IDS[0] + "}", IDS[0] + "0"]),
                )
            )
        else:
            body["schemas"] = draw(st.one_of(json_values, st.lists(hostile_text, max_size=3)))
    return body


@dataclass(frozen=True, repr=False)
class Call:
    method: str
    path: str  # percent-encoded
    query: str  # percent-encoded, without "?"
    client: str  # "own", "other", "wrong", "none"
    content_type: str | None
    body: bytes | None
    #: The resource (type, id) a well-formed path names, and the JSON the body is (None: not JSON).
    resource_type: str | None
    resource_id: str | None
    document: Any

    def __repr__(self) -> str:
        body = None if self.body is None else self.body[:300] + (b"..." if len(self.body) > 300 else b"")
        where = f"{self.path[:200]}?{self.query[:200]}"
        return f"Call({self.method} {where} as {self.client}, {self.content_type}: {body!r})"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:  # how Hypothesis shows a failing example
        printer.text(repr(self))


def encoded(text: str) -> str:
    """Percent-encoded, a lone surrogate as its (invalid) UTF-8 bytes."""
    return quote(text.encode("utf-8", "surrogatepass"), safe="")


@st.composite
def bodies(draw: st.DrawFn, resource_type: str | None, resource_id: str | None) -> tuple[bytes | None, Any]:
    """A body: a captured resource (of the path's type, mostly) mutated, as JSON or damaged; or no JSON at all."""
    shape = draw(st.sampled_from(["json"] * 8 + ["raw", "bytes", "none", "huge", "empty"]))
    if shape == "none":
        return None, None
    if shape == "empty":
        return b"", None
    if shape == "bytes":
        return draw(st.binary(max_size=64)), None
    source_type = (
        resource_type if resource_type in CAPTURED and draw(st.integers(0, 5)) else draw(st.sampled_from(TYPES))
    )
    resource = copy.deepcopy(draw(st.sampled_from(CAPTURED[source_type])))
    resource["externalId"] = resource_id if resource_id is not None and draw(st.integers(0, 3)) else draw(ids)
    document = draw(mutated(resource))
    if shape == "huge":
        document["displayName"] = "å" * draw(st.sampled_from([10_000, 150_000]))
    text = json.dumps(document, ensure_ascii=draw(st.booleans()))
    text = re.sub(f'"{DEEP}(\\d+)"', lambda m: "[" * int(m.group(1)) + "]" * int(m.group(1)), text)
    if shape == "raw":
        damage = draw(st.sampled_from(["utf8", "nul", "bigint", "surrogate", "truncate", "trailing", "nan"]))
        raw = text.encode("utf-8", "surrogatepass")
        at = draw(st.integers(min_value=0, max_value=len(raw)))
        raw = {
            "utf8": raw[:at] + b"\xff\xc3\x28" + raw[at:],
            "nul": raw.replace(b'"', b'"\x00', 1),
            "bigint": raw.replace(b"{", b'{"n": ' + b"9" * 40 + b", ", 1),
            "surrogate": raw.replace(b"{", b'{"s": "\\ud800", ', 1),
            "truncate": raw[:at],
            "trailing": raw + b" {}",
            "nan": raw.replace(b"{", b'{"f": NaN, ', 1),
        }[damage]
    else:
        raw = text.encode("utf-8", "surrogatepass")
    try:  # some damage leaves JSON (a truncation at the very end, a NaN, which the receiver refuses)
        return raw, json.loads(raw.decode("utf-8", "surrogatepass"))
    except (ValueError, RecursionError):
        return raw, None


@st.composite
def calls(draw: st.DrawFn) -> Call:
    method = draw(st.sampled_from(["GET", "GET", "POST", "POST", "POST", "PUT", "PUT", "DELETE", "PATCH", "HEAD"]))
    odd_types = ["users", "USERS", "Users.json", "..", "Schemas", "ServiceProviderConfig", "Bulk", "Me", PLANTED]
    resource_type = draw(st.sampled_from(TYPES) if draw(st.integers(0, 7)) else st.sampled_from(odd_types))
    with_id = method in ("PUT", "DELETE", "PATCH") or (method != "POST" and draw(st.booleans()))
    resource_id: str | None = None
    path = "/" + encoded(resource_type)
    if with_id:
        odd_ids = [
            "not-a-uuid",
            PLANTED,
            "\x00",
            "..",
            IDS[0] + "/x",
            "ffffffff-ffff-ffff-ffff-fffffffffffff",
            "é" * 40,
        ]
        resource_id = draw(st.one_of(ids, ids, st.sampled_from(odd_ids), st.text(max_size=12)))
        path += "/" + encoded(resource_id)
    if draw(st.integers(0, 9)) == 0:
        path = draw(st.sampled_from(["/", "//Users", "/Users/", "/%2e%2e/Users", "/Users%00", "/%FF", "/a/b/c"]))
        resource_type = resource_id = None
    query_values = st.one_of(
        st.sampled_from(["0", "-1", "1", "2", "9" * 30, "-" + "9" * 30, "1e3", "1.5", " 1", "", "٣", "1_0", "0x10"]),
        st.sampled_from([f'userName eq "{PLANTED}"', "externalId pr", "a" * 3000, "\x00"]),
        hostile_text,
    )
    parameters = draw(
        st.dictionaries(
            st.sampled_from(["startIndex", "count", "filter", "attributes", "excludedAttributes", "sortBy"]),
            query_values,
            max_size=3,
        )
    )
    query = "&".join(f"{name}={encoded(value)}" for name, value in parameters.items())
    body, document = (None, None)
    if method in ("POST", "PUT", "PATCH", "DELETE") or draw(st.integers(0, 9)) == 0:
        body, document = draw(bodies(resource_type, resource_id))
    content_type = draw(
        st.sampled_from(
            ["application/scim+json"] * 4
            + ["application/json", "text/plain", "application/x-www-form-urlencoded", "multipart/form-data", None]
        )
    )
    client = draw(st.sampled_from(["own"] * 8 + ["other", "other", "wrong", "none"]))
    return Call(method, path, query, client, content_type, body, resource_type, resource_id, document)


@dataclass
class Model:
    """What the accepted requests alone leave: stored body per ``_id`` (tenant:source:type:id)."""

    bodies: dict[str, Any]

    @staticmethod
    def key(client: str, resource_type: str, resource_id: str) -> str:
        tenant, source, _ = CLIENTS[client]
        return f"{tenant}:{source}:{resource_type}:{resource_id.lower()}"


@dataclass
class Receiver:
    app: ServiceApp
    http: aiohttp.ClientSession
    model: Model
    stored: dict[str, tuple[Any, Any]]
    tally: fuzzing.Target
    statuses: Counter[tuple[str, int]] = field(default_factory=Counter)

    async def live(self) -> dict[str, tuple[Any, Any]]:
        """Every live resource: ``_id`` -> (write stamp, body)."""
        documents = self.app.db["egil_resources"].find({"deleted": {"$ne": True}}, {"seq": 1, "body": 1})
        return {d["_id"]: (d["seq"], d["body"]) async for d in documents}

    async def send(self, call: Call) -> None:
        url = URL(
            f"http://127.0.0.1:{self.app.web_ports[0]}{call.path}" + (f"?{call.query}" if call.query else ""),
            encoded=True,
        )
        headers = {}
        if call.client in CLIENTS:
            headers["X-API-Key"] = CLIENTS[call.client][2]
        elif call.client == "wrong":
            headers["X-API-Key"] = WRONG_KEY
        if call.content_type is not None:
            headers["Content-Type"] = call.content_type
        # A large body is streamed (chunked, no Content-Length): the body cap is met while reading.
        data = io.BytesIO(call.body) if call.body is not None and len(call.body) > 512 * 1024 else call.body
        async with self.http.request(
            call.method, url, data=data, headers=headers, skip_auto_headers=["Content-Type"]
        ) as response:
            status, text = response.status, await response.text(errors="replace")
        self.tally.inputs += 1
        self.statuses[(call.method, status)] += 1
        if status >= 500:
            self.tally.server_errors += 1
        assert status < 500, (call, status, text)
        await self.check(call, status, text)

    async def check(self, call: Call, status: int, text: str) -> None:
        now = await self.live()
        if status >= 400:
            assert "Karin" not in text, (call, status, text)
        writes = call.method in ("POST", "PUT", "DELETE")
        if not (writes and 200 <= status < 300):
            # Refused, or a read: nothing changed, not even a write stamp.
            assert now == self.stored, (call, status, text, diff(self.stored, now))
        known_type = call.resource_type in TYPES and call.client in CLIENTS
        if not known_type:
            assert status >= 400 or call.method == "HEAD", (call, status, text)
            return
        assert call.resource_type is not None
        if call.resource_id is not None:
            key = Model.key(call.client, call.resource_type, call.resource_id)
            present = key in self.model.bodies
        if call.method == "POST" and status in (201, 409):
            assert call.resource_id is None
            document = call.document
            assert isinstance(document, dict), (call, status)
            key = Model.key(call.client, call.resource_type, document["externalId"])
            assert (status == 201) == (key not in self.model.bodies), (call, status, text)
            if status == 201:
                self.model.bodies[key] = {**document, "externalId": document["externalId"].lower()}
        elif call.method == "PUT" and status in (200, 404) and call.resource_id is not None:
            assert (status == 200) == present, (call, status, text)
            if status == 200:
                assert isinstance(call.document, dict)
                self.model.bodies[key] = {**call.document, "externalId": call.document["externalId"].lower()}
        elif call.method == "DELETE" and status in (204, 404) and call.resource_id is not None:
            assert (status == 204) == present, (call, status, text)
            if status == 204:
                del self.model.bodies[key]
        elif call.method == "GET" and call.resource_id is not None and status in (200, 404):
            assert (status == 200) == present, (call, status, text)
            if status == 200:
                answered = {k: v for k, v in json.loads(text).items() if k != "id"}
                assert answered == {k: v for k, v in self.model.bodies[key].items() if k != "id"}, (call, text)
        elif call.method == "GET" and call.resource_id is None and status == 200:
            tenant, source, _ = CLIENTS[call.client]
            prefix = f"{tenant}:{source}:{call.resource_type}:"
            assert json.loads(text)["totalResults"] == sum(1 for k in self.model.bodies if k.startswith(prefix))
        if writes and 200 <= status < 300:
            assert {k: body for k, (_, body) in now.items()} == self.model.bodies, (call, status)
        self.stored = now


def diff(before: dict[str, Any], after: dict[str, Any]) -> dict[str, list[str]]:
    return {
        "added": sorted(set(after) - set(before)),
        "removed": sorted(set(before) - set(after)),
        "changed": sorted(k for k in set(before) & set(after) if before[k] != after[k]),
    }


def organisation(body: bytes, *, method: str = "POST", path: str = "/Organisations", query: str = "") -> Call:
    return Call(method, path, query, "own", "application/scim+json", body, "Organisations", None, None)


#: What the fuzzing found, pinned (a 500; a NaN or infinity accepted and stored), and the hostile inputs of issue 19.
FOUND = [
    organisation(b'{"externalId": "' + IDS[2].encode() + b'", "displayName": "X", "a": [{"b\\u0000c": 1}]}'),
    organisation(b'{"externalId": "' + IDS[2].encode() + b'", "x": ' + b"[" * 5000 + b"]" * 5000 + b"}"),
    organisation(b'{"externalId": "' + IDS[2].encode() + b'", "displayName": "\\ud800"}'),
    organisation(b"", method="GET", query="startIndex=" + "9" * 30),
    organisation(b'{"externalId": "' + IDS[2].encode() + b'", "displayName": "X", "f": NaN}'),  # stored, not JSON
    organisation(b'{"externalId": "' + IDS[2].encode() + b'", "displayName": "X", "f": 1e400}'),
    # A request line past aiohttp's 8190 bytes: its 400 quoted the query (a planted name) back.
    organisation(b"", method="GET", query="filter=" + quote(PLANTED) + "a" * 9000),
]


@pytest.fixture
async def receiver(settings: ServiceSettings) -> AsyncIterator[Receiver]:
    clients = [
        EgilClient(tenant_id=tenant, source_id=source, api_key_sha256=hash_key(key), rate_per_second=100_000,
                   burst=100_000)
        for tenant, source, key in CLIENTS.values()
    ]  # fmt: skip
    app = build_receiver(
        EgilReceiverSettings.model_validate(
            {**settings.model_dump(), "egil_port": 0, "egil_host": "127.0.0.1", "egil_run_idle_seconds": 0.5,
             "egil_page_seconds": 0.2}
        ),
        clients=clients,
    )  # fmt: skip
    try:
        await app.start()
        async with aiohttp.ClientSession(auto_decompress=False) as http:
            yield Receiver(app, http, Model({}), {}, fuzzing.TALLY.target("EGIL receiver"))
    finally:
        await app.drain(2)
        await app.close()
        await delete_topology(settings.broker.amqp_url.get_secret_value(), app.topology)


async def test_generated_requests_never_get_a_server_error_nor_store_what_was_refused(receiver: Receiver):
    await fuzzing.send_generated_sequences(receiver.send, calls(), FOUND, target=receiver.tally, default_examples=40)
    print("answers (method, status): count", sorted(receiver.statuses.items()))
