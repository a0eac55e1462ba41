"""The EGIL SCIM receiver against the real broker and store: every captured request of the real
EGIL client replayed, authentication (mutual TLS pins and API keys), validation at the door, and
what reaches the normaliser."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import trustme
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from skolsynk.domain.ids import entity_id
from skolsynk.domain.ss12000 import EntityKind
from skolsynk.messaging import Outbox
from skolsynk.service import ServiceApp
from skolsynk.settings import ServiceSettings
from skolsynk_services.egil_receiver.app import EgilReceiverSettings
from skolsynk_services.egil_receiver.app import build as build_receiver
from skolsynk_services.egil_receiver.clients import EgilClient, hash_key
from skolsynk_services.normaliser.app import NormaliserSettings
from skolsynk_services.normaliser.app import build as build_normaliser
from skolsynk_testkit.fakes.egil_vendor import spki_sha256_pin
from tests.helpers import delete_topology, wait_for
from tests.reference import EGIL_CAPTURES

pytestmark = [
    pytest.mark.connected,
    pytest.mark.timeout(180),
    pytest.mark.queues("normaliser.source-events", "normaliser.projections", "gdpr.events"),
]

TENANT = "gronkoping"
SOURCE = "egil-ldap"
API_KEY = "egil-test-key-0123456789"


def pki(tmp_path: Path) -> dict[str, Any]:
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1")
    client = ca.issue_cert("egil-client.gronkoping.example")
    stranger = ca.issue_cert("stranger.example")
    files = {name: tmp_path / f"{name}.pem" for name in ("ca", "server", "client", "stranger")}
    ca.cert_pem.write_to_path(str(files["ca"]))
    server.private_key_and_cert_chain_pem.write_to_path(str(files["server"]))
    client.private_key_and_cert_chain_pem.write_to_path(str(files["client"]))
    stranger.private_key_and_cert_chain_pem.write_to_path(str(files["stranger"]))
    return {**files, "client_pin": spki_sha256_pin(client.cert_chain_pems[0].bytes())}


@contextlib.asynccontextmanager
async def running_receiver(
    settings: ServiceSettings, tmp_path: Path, **overrides: Any
) -> AsyncIterator[tuple[ServiceApp, ServiceApp, dict[str, Any]]]:
    certificates = pki(tmp_path)
    clients = [EgilClient(tenant_id=TENANT, source_id=SOURCE, api_key_sha256=hash_key(API_KEY),
                          client_pins=(certificates["client_pin"],), rate_per_second=500, burst=500)]  # fmt: skip
    base = settings.model_dump()
    receiver_app = build_receiver(
        EgilReceiverSettings.model_validate(
            {**base, "egil_port": 0, "egil_host": "127.0.0.1",
             "egil_tls_cert_file": certificates["server"], "egil_client_ca_file": certificates["ca"],
             "egil_run_idle_seconds": 0.3, "egil_page_seconds": 0.1, **overrides}
        ),
        clients=clients,
    )  # fmt: skip
    normaliser = build_normaliser(NormaliserSettings.model_validate({**base, "date_check_interval_seconds": 86400}))
    try:
        await normaliser.start()
        await receiver_app.start()
        yield receiver_app, normaliser, certificates
    finally:
        for app in (receiver_app, normaliser):
            await app.drain(2)
            await app.close()
        await delete_topology(settings.broker.amqp_url.get_secret_value(), normaliser.topology)


@pytest.fixture
async def receiver(settings: ServiceSettings, tmp_path: Path):
    async with running_receiver(settings, tmp_path) as running:
        yield running


def session_for(certificates: dict[str, Any], *, cert: str | None = "client", api_key: str | None = None):
    import ssl

    context = ssl.create_default_context(cafile=str(certificates["ca"]))
    if cert is not None:
        context.load_cert_chain(str(certificates[cert]))
    headers = {"X-API-Key": api_key} if api_key else {}
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context), headers=headers)


def url(app: ServiceApp, path: str) -> str:
    return f"https://127.0.0.1:{app.web_ports[0]}{path}"


def strict_answer(method: str, path: str, held: set[tuple[str, str]]) -> int:
    """What a strict EGIL server answers, given what it holds (the capture server's base rules)."""
    parts = path.strip("/").split("/")
    if method == "GET":
        return 200
    key = (parts[0], parts[1])
    if method == "PUT":
        return 200 if key in held else 404
    if method == "DELETE":
        if key in held:
            held.discard(key)
            return 204
        return 404
    raise AssertionError(method)


async def test_every_captured_request_of_the_real_client_is_answered_like_a_strict_server(receiver):
    receiver_app, normaliser, certificates = receiver
    held: set[tuple[str, str]] = set()
    replayed = 0
    async with session_for(certificates) as http:
        for step in sorted(p for p in EGIL_CAPTURES.iterdir() if (p / "requests.jsonl").is_file()):
            for line in (step / "requests.jsonl").read_text().splitlines():
                captured = json.loads(line)
                method, path = captured["method"], captured["path"].split("?")[0]
                headers = {k: v for k, v in captured["headers"] if k.lower() in ("content-type", "accept")}
                body = captured["body_raw"].encode() if captured.get("body_raw") else None
                if method == "POST":
                    key = (path.strip("/").split("/")[0], captured["body_json"]["externalId"])
                    expected = 409 if key in held else 201
                    held.add(key)
                else:
                    expected = strict_answer(method, path, held)
                query = captured["path"].split("?")[1] if "?" in captured["path"] else ""
                async with http.request(
                    method, url(receiver_app, path) + (f"?{query}" if query else ""), data=body, headers=headers
                ) as response:
                    text = await response.text()
                    assert response.status == expected, f"{step.name} {method} {path}: {response.status} {text}"
                    if method == "GET":
                        listing = json.loads(text)
                        assert listing["schemas"] == ["urn:ietf:params:scim:api:messages:2.0:ListResponse"]
                        assert all(r["id"] == r["externalId"] for r in listing["Resources"])
                replayed += 1
    assert replayed > 100

    # What the receiver holds reaches the normaliser as the source's state.
    users = {key for endpoint, key in held if endpoint == "Users"}

    async def normalised() -> bool:
        entities = normaliser.db["entities"]
        persons = await entities.count_documents({"tenant_id": TENANT, "kind": "person"})
        withheld = await normaliser.db["dq_findings"].count_documents(
            {"tenant_id": TENANT, "entity_kind": "person", "severity": "error", "origin": "ingest"}
        )
        return persons + withheld == len(users) and await receiver_app.outbox.pending_count() == 0

    try:
        await wait_for(normalised, timeout=60, interval=0.2, what="the pushed users in the normalised state")
    except AssertionError:
        fields = {"status": 1, "pages_received": 1, "completion.pages": 1}
        runs = await normaliser.db["runs"].find({}, fields).to_list(None)
        batches = await receiver_app.db["egil_runs"].find({}).to_list(None)
        persons = await normaliser.db["entities"].count_documents({"kind": "person"})
        raise AssertionError(f"users={len(users)} persons={persons} runs={runs} batches={batches}") from None
    findings = await normaliser.db["dq_findings"].find({"tenant_id": TENANT, "severity": "error"}).to_list(None)
    withheld = {f["source_key"] for f in findings if f["entity_kind"] == "person"}
    assert len(withheld) <= 1, [(f["code"], f["field"], f["detail"]) for f in findings]
    for key in users:
        person = entity_id(TENANT, SOURCE, EntityKind.PERSON, key.lower())
        if key.lower() not in withheld:
            assert await normaliser.db["entities"].find_one({"_id": str(person)}) is not None, key


async def test_pins_and_api_keys(receiver):
    receiver_app, _, certificates = receiver
    organisation = {
        "schemas": ["urn:scim:schemas:extension:sis:school:1.0:Organisation"],
        "externalId": "4f3d2c1b-8a9e-4b7c-9d6e-5f4a3b2c1d0e",
        "displayName": "Grönköpings kommun",
    }
    async with session_for(certificates) as http:  # the registered certificate
        async with http.post(url(receiver_app, "/Organisations"), json=organisation) as response:
            assert response.status == 201
            assert (await response.json())["id"] == organisation["externalId"]
    async with session_for(certificates, cert="stranger") as http:  # a certificate nobody registered
        async with http.get(url(receiver_app, "/Organisations")) as response:
            assert response.status == 403
    async with session_for(certificates, cert=None) as http:  # neither certificate nor key
        async with http.get(url(receiver_app, "/Organisations")) as response:
            assert response.status == 401
    async with session_for(certificates, cert=None, api_key=API_KEY) as http:
        async with http.get(url(receiver_app, "/Organisations")) as response:
            assert response.status == 200
            assert (await response.json())["totalResults"] == 1
        # An index past 64 bits is an empty page, not a 500 (issue 19).
        async with http.get(url(receiver_app, "/Organisations?startIndex=" + "9" * 30)) as response:
            assert response.status == 200
            assert (await response.json())["Resources"] == []
    async with session_for(certificates, cert=None, api_key="wrong-key-0123456789") as http:
        async with http.get(url(receiver_app, "/Organisations")) as response:
            assert response.status == 403


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (b'{"externalId": ', "malformed JSON"),
        # Hostile bodies (issue 19) that were 500s: deep nesting, a lone surrogate, a number past 64 bits.
        (b'{"externalId": ' + b"[" * 5000 + b"]" * 5000 + b"}", "nested deeper than 32 levels"),
        (b'{"externalId": "4f3d2c1b-8a9e-4b7c-9d6e-5f4a3b2c1d0e", "displayName": "\\ud800"}', "lone surrogate"),
        (b'{"externalId": "4f3d2c1b-8a9e-4b7c-9d6e-5f4a3b2c1d0e", "x": 99999999999999999999999}', "out of range"),
        (b'{"externalId": "\xff"}', "not UTF-8"),
        (
            b'{"schemas": ["urn:example:unknown"], "externalId": "4f3d2c1b-8a9e-4b7c-9d6e-5f4a3b2c1d0e"}',
            "unknown schema",
        ),
        (b'{"externalId": "not-a-uuid", "displayName": "X"}', "invalid UUID"),
        # A NUL byte in an attribute name, at any depth, was a 500 from the store (the fuzz suite found it).
        (
            b'{"externalId": "4f3d2c1b-8a9e-4b7c-9d6e-5f4a3b2c1d0e", "a": [{"Karin\\u0000Sundberg": 1}]}',
            "attribute names must not contain control characters",
        ),
        (b'{"displayName": "X"}', "externalId"),
        # Not JSON, yet read and stored (the fuzz suite found it): NaN, and a number past a float, read as infinity.
        (b'{"externalId": "4f3d2c1b-8a9e-4b7c-9d6e-5f4a3b2c1d0e", "x": NaN}', "NaN is not a JSON number"),
        (b'{"externalId": "4f3d2c1b-8a9e-4b7c-9d6e-5f4a3b2c1d0e", "x": 1e400}', "too large for a float"),
    ],
)
async def test_bad_input_is_refused_at_the_door_with_a_precise_detail(receiver, body, detail):
    receiver_app, _, certificates = receiver
    async with (
        session_for(certificates) as http,
        http.post(
            url(receiver_app, "/Organisations"), data=body, headers={"Content-Type": "application/scim+json"}
        ) as response,
    ):
        assert response.status == 400
        error = await response.json()
        assert error["schemas"] == ["urn:ietf:params:scim:api:messages:2.0:Error"]
        assert detail in error["detail"]
        assert "Karin" not in error["detail"]
    assert await receiver_app.db["egil_resources"].count_documents({}) == 0


async def test_school_unit_code_must_have_eight_digits(receiver):
    receiver_app, _, certificates = receiver
    unit = {
        "externalId": "9f8e7d6c-5b4a-4f3e-9d2c-1b0a9f8e7d6c",
        "displayName": "Norrskolan",
        "schoolUnitCode": "SE123456789",
    }
    async with session_for(certificates) as http:
        async with http.post(url(receiver_app, "/SchoolUnits"), json=unit) as response:
            assert response.status == 400
            assert "8 digits" in (await response.json())["detail"]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=5),
    max_leaves=12,
)


@pytest.mark.fuzz
async def test_random_bodies_never_cause_a_5xx_or_a_partial_write(receiver):
    receiver_app, _, certificates = receiver
    loop = asyncio.get_running_loop()
    async with session_for(certificates) as http:

        async def post(body: Any, endpoint: str) -> tuple[int, str]:
            async with http.post(url(receiver_app, f"/{endpoint}"), json=body) as response:
                return response.status, await response.text()

        examples = int(os.environ.get("SKOLSYNK_FUZZ_EXAMPLES", "60"))

        @hypothesis_settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck))
        @given(body=json_values, endpoint=st.sampled_from(["Users", "SchoolUnits", "StudentGroups", "Activities"]))
        def post_anything(body: Any, endpoint: str) -> None:
            # Hypothesis drives a plain function in a worker thread; the request runs on the loop.
            status, text = asyncio.run_coroutine_threadsafe(post(body, endpoint), loop).result(timeout=30)
            assert status < 500, text
            assert status in (201, 400), text

        await asyncio.to_thread(post_anything)
    # Whatever was refused left nothing behind: every stored resource is a well-formed one.
    async for document in receiver_app.db["egil_resources"].find({}):
        assert isinstance(document["body"], dict)
        assert document["resource_id"] == document["body"]["externalId"]


def pupil(external_id: str, number: int) -> dict[str, Any]:
    return {
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User", "urn:scim:schemas:extension:sis:school:1.0:User"],
        "externalId": external_id,
        "userName": f"elev{number}@gronkoping.se",
        "displayName": f"Elev{number} Testsson",
        "name": {"familyName": "Testsson", "givenName": f"Elev{number}"},
        "urn:scim:schemas:extension:sis:school:1.0:User": {
            "enrolments": [{"value": "9f8e7d6c-5b4a-4f3e-9d2c-1b0a9f8e7d6c", "schoolYear": 7, "schoolType": "GR"}]
        },
    }


async def test_a_long_initial_sync_with_a_pause_only_at_the_end_is_one_run(settings, tmp_path):
    """The client pushes one object at a time and pauses only when its run is over: however long
    that takes, it is one run (one projection), and its pages reach the normaliser while it goes on."""
    idle = 4.0  # the pause that ends the run; far longer than the wait in the middle below
    organisation = "4f3d2c1b-8a9e-4b7c-9d6e-5f4a3b2c1d0e"
    pushes = [
        ("/Organisations", {"externalId": organisation, "displayName": "Grönköpings kommun"}),
        (
            "/SchoolUnits",
            {
                "externalId": "9f8e7d6c-5b4a-4f3e-9d2c-1b0a9f8e7d6c",
                "displayName": "Norrskolan",
                "schoolUnitCode": "29384756",
                "organisation": {"value": organisation},
            },
        ),
        *[("/Users", pupil(str(uuid.UUID(int=n + 1)), n)) for n in range(40)],
    ]
    overrides = {"egil_run_idle_seconds": idle, "egil_page_seconds": 0.05, "egil_page_size": 5}
    async with running_receiver(settings, tmp_path, **overrides) as (receiver_app, normaliser, certificates):
        outbox = receiver_app.db["outbox"]

        async def sent(message_type: str) -> int:
            documents = await outbox.find({"sent_at": {"$ne": None}}).to_list(None)
            messages = [m for d in documents for m in Outbox.messages_of(d)]
            return sum(1 for m in messages if m["envelope"]["message_type"] == message_type)

        async with session_for(certificates) as http:
            for number, (endpoint, body) in enumerate(pushes):
                async with http.post(url(receiver_app, endpoint), json=body) as response:
                    assert response.status == 201, await response.text()
                if number == len(pushes) // 2:
                    # Halfway: pages are already on their way to the normaliser, the run still open.
                    async def first_pages_sent() -> bool:
                        return await sent("source.records") >= 2

                    await wait_for(first_pages_sent, timeout=idle - 1, what="pages sent while the client pushes")
                    assert await sent("source.run.completed") == 0
                    assert await receiver_app.db["egil_runs"].count_documents({"status": "open"}) == 1

        async def normalised() -> bool:
            persons = await normaliser.db["entities"].count_documents({"tenant_id": TENANT, "kind": "person"})
            return persons == 40 and await sent("source.run.completed") == 1

        await wait_for(normalised, timeout=60, interval=0.2, what="the whole sync projected")
        runs = await receiver_app.db["egil_runs"].find({}).to_list(None)
        assert [run["status"] for run in runs] == ["closed"]
        envelopes = [
            m["envelope"] async for entry in outbox.find({}).sort("created_at", 1) for m in Outbox.messages_of(entry)
        ]
        assert [e["message_type"] for e in envelopes].count("source.run.started") == 1
        pages = [e["payload"] for e in envelopes if e["message_type"] == "source.records"]
        completed = next(e["payload"] for e in envelopes if e["message_type"] == "source.run.completed")
        assert completed["pages"] == len(pages) >= 42 // 5
        assert sorted(p["page"] for p in pages) == list(range(len(pages)))
        # Once sent, a page keeps its run and number but not the records (personal data) it carried: the
        # normaliser got them all (one run, 40 persons above).
        assert all("records" not in p for p in pages)
        assert await normaliser.db["entities"].count_documents({"tenant_id": TENANT}) == len(pushes)
        assert await normaliser.db["runs"].count_documents({"source_id": SOURCE}) == 1


async def test_an_id_in_upper_and_lower_case_is_one_object(receiver):
    """Issue 19: "ABC..." and "abc..." were two objects at the receiver and one in the normaliser, so deleting
    one deleted the person at vendors while the other still answered 200. Ids are compared lower-case
    everywhere; an id in the URL that is not a UUID is a 400."""
    receiver_app, _, certificates = receiver
    upper = "9F8E7D6C-5B4A-4F3E-9D2C-1B0A9F8E7D6C"
    body = {"externalId": upper, "displayName": "Norrskolan AB"}
    async with session_for(certificates) as http:
        async with http.post(url(receiver_app, "/Organisations"), json=body) as response:
            assert response.status == 201, await response.text()
        lower = {**body, "externalId": upper.lower()}
        async with http.post(url(receiver_app, "/Organisations"), json=lower) as response:
            assert response.status == 409  # the same object
        async with http.get(url(receiver_app, f"/Organisations/{upper.lower()}")) as response:
            assert response.status == 200
            assert (await response.json())["externalId"] == upper.lower()
        async with http.delete(url(receiver_app, f"/Organisations/{upper}")) as response:
            assert response.status == 204
        async with http.get(url(receiver_app, f"/Organisations/{upper.lower()}")) as response:
            assert response.status == 404
        async with http.get(url(receiver_app, "/Organisations/Karin%20Sundberg")) as response:
            assert response.status == 400
            assert "Karin" not in (await response.json())["detail"]
