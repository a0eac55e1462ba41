"""The demo's EGIL client: an organiser's EGIL client as the real EgilSCIM client behaves
(``../shared/ref/egil-scim-protocol.md``), scripted: one TLS connection with a client certificate per run,
one request at a time, its headers, and its cache. A run renders every object of the source; new ones are
POSTed, changed ones (another rendering) PUT, cached ones the source no longer has DELETEd (no Accept, a
form content type and an empty body, as libcurl sends it), in the EGIL send order (section 7): creates and
updates type by type, then deletes in reverse type order, each type in ascending id order.

The objects are the organiser's records as an EGIL client renders them from its directory: the 2018
SS 12000 SCIM bodies (``skolsynk.adapters.egil.to_egil``) of the records' projection (ids are UUIDs, as
the client requires). What skolsynk makes of them is what the receiver makes of them
(``skolsynk.adapters.egil.from_egil``), so the demo's expectation is computed from the same bodies.

Not a library: ``tools/demo.py`` imports it from this folder.
"""

from __future__ import annotations

import json
import ssl
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import aiohttp

from skolsynk.adapters.egil import EgilResourceType, egil_send_order, from_egil, is_student, to_egil
from skolsynk.contracts.source import SourceRecord
from skolsynk.domain.selection import ProjectedResource
from skolsynk_testkit.devstack import DevStackError

#: What the real client sends (captured): ``EgilSCIM/<version> (<comment>)``, SCIM media types.
USER_AGENT = "EgilSCIM/2.23.0 (Demo kommun)"
#: The answers the client takes as success (anything else ends the run: the client logs and stops).
SUCCESS = {"POST": {200, 201}, "PUT": {200, 204}, "DELETE": {200, 204}}


@dataclass(frozen=True)
class EgilObject:
    egil_type: EgilResourceType
    id: str
    body: dict[str, Any]
    student: bool

    @property
    def rendering(self) -> str:
        """What the client compares with its cache (a plain string comparison)."""
        return json.dumps(self.body, ensure_ascii=False, sort_keys=True)

    def record(self) -> SourceRecord:
        """The canonical record the EGIL receiver makes of this object."""
        return from_egil(self.egil_type, self.body)


def egil_objects(resources: Iterable[ProjectedResource]) -> dict[tuple[EgilResourceType, str], EgilObject]:
    """The objects an EGIL client renders for these resources, by (type, id)."""
    objects = {}
    for resource in resources:
        plain = json.loads(json.dumps(resource.resource, default=str))  # as it travels in a message
        egil_type, body = to_egil(plain)
        objects[(egil_type, str(resource.id))] = EgilObject(egil_type, str(resource.id), body, is_student(plain))
    return objects


class ScriptedEgilClient:
    """One organiser's EGIL client against ``base_url`` with the TLS ``context`` (client certificate and
    the CA that signed the server); its cache survives between runs, as the client's cache file does."""

    def __init__(self, base_url: str, context: ssl.SSLContext) -> None:
        self.base_url = base_url.rstrip("/")
        self.context = context
        self.cache: dict[tuple[EgilResourceType, str], EgilObject] = {}

    async def is_let_in(self) -> bool:
        """Whether the receiver knows this client's certificate yet (a GET answers 200, not 403)."""
        async with (
            self._session() as http,
            http.get("/Organisations", headers={"Accept": "application/scim+json"}) as r,
        ):
            return r.status == 200

    def _session(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(ssl=self.context, limit=1, force_close=False)  # one connection per run
        return aiohttp.ClientSession(
            base_url=self.base_url + "/", connector=connector, headers={"User-Agent": USER_AGENT}
        )

    async def run(self, objects: dict[tuple[EgilResourceType, str], EgilObject]) -> Counter[str]:
        """One run: every request the client's cache and the source call for. Counts ``POST``, ``PUT`` and
        ``DELETE`` sent; :class:`DevStackError` on an answer the client does not take as success."""
        requests: list[tuple[tuple[int, int, str], str, EgilObject]] = []
        for key, obj in objects.items():
            cached = self.cache.get(key)
            if cached is None or cached.rendering != obj.rendering:
                method = "POST" if cached is None else "PUT"
                requests.append((egil_send_order(obj.egil_type, obj.id, student=obj.student), method, obj))
        for key, cached in self.cache.items():
            if key not in objects:
                order = egil_send_order(cached.egil_type, cached.id, delete=True, student=cached.student)
                requests.append((order, "DELETE", cached))
        requests.sort(key=lambda request: request[0])
        sent: Counter[str] = Counter()
        async with self._session() as http:
            for _, method, obj in requests:
                await self._send(http, method, obj)
                sent[method] += 1
                if method == "DELETE":
                    self.cache.pop((obj.egil_type, obj.id), None)
                else:
                    self.cache[(obj.egil_type, obj.id)] = obj
        return sent

    async def _send(self, http: aiohttp.ClientSession, method: str, obj: EgilObject) -> None:
        path = obj.egil_type.endpoint if method == "POST" else f"{obj.egil_type.endpoint}/{obj.id}"
        if method == "DELETE":
            headers = {"Content-Type": "application/x-www-form-urlencoded"}
            data = b""
        else:
            headers = {"Accept": "application/scim+json", "Content-Type": "application/scim+json"}
            data = json.dumps(obj.body, ensure_ascii=False).encode()
        async with http.request(method, path, data=data, headers=headers) as response:
            await response.read()
            if response.status not in SUCCESS[method]:
                raise DevStackError(f"EGIL client: {method} {obj.egil_type.endpoint} answered {response.status}")
