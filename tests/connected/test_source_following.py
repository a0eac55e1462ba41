"""Sources come from the source registry and nowhere else: a source the organiser saves in the admin is read
by its connector, an edited URL is used by the next run, a disabled source stops being served, a source the
connector cannot serve shows why in the admin and a sync request for it is refused there, never queued to
die; an EGIL client's API key and certificates are registered, rotated and revoked in the admin and the
receiver follows; the YAML files become an idempotent import. Against the admin API, the real broker, the
Mongo wire server and the fake source APIs (SS 12000, Microsoft Graph, Google)."""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from yarl import URL

from skolsynk.cli import CliSettings, execute, import_sources, parser
from skolsynk.connectors.config import ConfigurationError
from skolsynk.connectors.sources import SS12000
from skolsynk.domain.ss12000 import EntityKind
from skolsynk.settings import ServiceSettings
from skolsynk.storage.sources import SecretBox, SourceStore
from skolsynk.tls import spki_sha256_pin
from skolsynk_services.admin.app import AdminSettings
from skolsynk_services.admin.app import build as build_admin
from skolsynk_services.admin.auth import Role
from skolsynk_services.admin.tokens import TokenStore
from skolsynk_services.egil_receiver.app import EgilReceiverSettings
from skolsynk_services.egil_receiver.app import build as build_receiver
from skolsynk_services.google_connector.app import GoogleConnectorSettings
from skolsynk_services.google_connector.app import build as build_google
from skolsynk_services.graph_connector.app import GraphConnectorSettings
from skolsynk_services.graph_connector.app import build as build_graph
from skolsynk_services.ss12000_puller.app import Ss12000ConnectorSettings
from skolsynk_services.ss12000_puller.app import build as build_ss12000
from skolsynk_testkit.fakes.google_directory import FakeGoogleDirectory, generate_service_account_key
from skolsynk_testkit.fakes.graph_education import FakeGraphEducation
from skolsynk_testkit.fakes.ss12000_api import FakeSs12000Api
from skolsynk_testkit.synthetic import organiser
from tests.connectors_harness import ConnectorTestbed, connector_settings, connector_testbed
from tests.helpers import delete_topology, wait_for

pytestmark = [pytest.mark.connected, pytest.mark.timeout(120)]

SECRETS_KEY = "2mJ3m6mCAxzGzO8Ihc4r3Vxv3Fj0vIYbVwJJmQKkV4g="  # a throwaway Fernet key for tests
TENANT = "kommun-a"
SOURCE = "ss12000-1"
CLIENT_SECRET = "client-secret-value"
UNIT = "5b1f0f8e-3c2d-4b7e-8f61-0d9a7c2e4b10"
GOOGLE_EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "google-sources.example.yaml"


class AdminApi:
    def __init__(self, base: str, session: aiohttp.ClientSession, token: str) -> None:
        self.base, self.session, self.token = base, session, token

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {self.token}"}
        async with self.session.request(method, self.base + path, json=body, headers=headers) as response:
            text = await response.text()
            return response.status, json.loads(text) if text else None


@pytest.fixture
async def testbed(settings: ServiceSettings, make_app: Any) -> AsyncIterator[ConnectorTestbed]:
    async with connector_testbed(settings, make_app) as testbed:
        await testbed.collect()
        yield testbed


@pytest.fixture
async def admin(settings: ServiceSettings) -> AsyncIterator[AdminApi]:
    admin_settings = AdminSettings.model_validate(
        {**settings.model_dump(), "admin_port": 0, "admin_host": "127.0.0.1", "admin_secrets_key": SECRETS_KEY}
    )
    app = build_admin(admin_settings)
    session = aiohttp.ClientSession()
    try:
        await app.start()
        token, _ = await TokenStore(app.db).create(role=Role.OPERATOR, subject="ops", tenant_id=None, created_by="t")
        api = AdminApi(f"http://127.0.0.1:{app.web_ports[0]}/api/v1", session, token)
        assert (await api.call("POST", "/tenants", {"tenant_id": TENANT, "display_name": "Kommun A"}))[0] == 201
        yield api
    finally:
        await session.close()
        await app.drain(1)
        await app.close()
        await delete_topology(settings.broker.amqp_url.get_secret_value(), app.topology)


def school(extra_students: int = 0) -> dict[str, list[dict[str, Any]]]:
    persons = [
        {"id": f"00000000-0000-0000-0000-0000000009{n:02d}", "givenName": f"Elev{n}", "familyName": "Testsson"}
        for n in range(1 + extra_students)
    ]
    organisations = [{"id": UNIT, "displayName": "Skolan", "organisationType": "Skolenhet",
                      "schoolUnitCode": "87654321", "schoolTypes": ["GR"]}]  # fmt: skip
    return {"organisations": organisations, "persons": persons}


async def ss12000_fake(testbed: ConnectorTestbed, extra_students: int = 0) -> FakeSs12000Api:
    fake = await testbed.start_fake(FakeSs12000Api(client_secret=CLIENT_SECRET))
    for endpoint, objects in school(extra_students).items():
        for obj in objects:
            fake.put(endpoint, obj)
    return fake


def ss12000_body(fake: FakeSs12000Api, **changes: Any) -> dict[str, Any]:
    return {
        "source_id": SOURCE,
        "kind": "ss12000",
        "display_name": "Elevregistret",
        "settings": {
            "base_url": fake.base_url,
            "auth": {"kind": "oauth2", "token_url": fake.token_url, "client_id": fake.client_id},
            "page_size": 100,
        },
        "secrets": {"client_secret": CLIENT_SECRET},
        **changes,
    }


def follower_settings(settings_type: type[Any], settings: ServiceSettings, prefix: str, **extra: Any) -> Any:
    return connector_settings(
        settings_type,
        settings,
        prefix=prefix,
        **{"admin_secrets_key": SECRETS_KEY, "sources_poll_seconds": 0.2, **extra},
    )


def persons_in(testbed: ConnectorTestbed, run_id: Any) -> int:
    return sum(1 for kind, _ in testbed.collected.records(run_id) if kind is EntityKind.PERSON)


async def test_a_source_saved_in_the_admin_is_followed_by_its_connector(
    settings: ServiceSettings, testbed: ConnectorTestbed, admin: AdminApi
) -> None:
    first, moved = await ss12000_fake(testbed), await ss12000_fake(testbed, extra_students=2)
    app = build_ss12000(
        follower_settings(
            Ss12000ConnectorSettings, settings, "ss12000", schedule=True,
            ss12000_webhook_host="127.0.0.1", ss12000_webhook_port=0,
        )
    )  # fmt: skip
    await testbed.start_app(app)
    connector = app.extensions["connector"]
    assert connector.sources == {}
    key = f"{TENANT}:{SOURCE}"

    # Created in the admin: the connector serves it and, as nothing has run yet, a full run is due at once.
    status, created = await admin.call("POST", f"/tenants/{TENANT}/sources", ss12000_body(first))
    assert status == 201, created
    await wait_for(lambda: len(testbed.collected.runs()) == 1, what="the first scheduled run")
    run = testbed.collected.runs()[0]
    await wait_for(lambda: testbed.collected.complete(run), what="the first run to complete")
    assert persons_in(testbed, run) == 1
    assert first.requests
    assert not moved.requests

    # The base URL edited: the next run reads the new API, without a restart.
    status, _ = await admin.call("PUT", f"/tenants/{TENANT}/sources/{SOURCE}", ss12000_body(moved, secrets={}))
    assert status == 200
    await wait_for(lambda: key in connector.sources and connector.sources[key].base_url == moved.base_url,
                   what="the connector to take the new URL")  # fmt: skip
    status, _ = await admin.call("POST", f"/tenants/{TENANT}/sources/{SOURCE}/sync", {"mode": "full"})
    assert status == 202
    await wait_for(lambda: len(testbed.collected.runs()) >= 2, what="the requested run")
    run = testbed.collected.runs()[-1]
    await wait_for(lambda: testbed.collected.complete(run), what="the requested run to complete")
    assert persons_in(testbed, run) == 3
    assert moved.requests

    # Disabled: no longer served, no schedule, and a sync request is refused by the admin (in Swedish in the UI).
    body = ss12000_body(moved, secrets={}, enabled=False)
    assert (await admin.call("PUT", f"/tenants/{TENANT}/sources/{SOURCE}", body))[0] == 200
    await wait_for(lambda: key not in connector.sources, what="the disabled source to be retired")
    assert connector._loop_tasks == {}
    status, problem = await admin.call("POST", f"/tenants/{TENANT}/sources/{SOURCE}/sync", {"mode": "full"})
    assert (status, problem["detail"]) == (409, "the source is disabled: enable it before asking for a sync")

    # Enabled with a secret the connector cannot resolve: the source shows why, a sync is refused, and it is
    # served as soon as the source is saved right.
    body = ss12000_body(moved, secrets={}, secret_refs={"client_secret": "SS12000_NOT_SET"})
    assert (await admin.call("PUT", f"/tenants/{TENANT}/sources/{SOURCE}", body))[0] == 200

    async def problem_shown() -> bool:
        return bool((await admin.call("GET", f"/tenants/{TENANT}/sources/{SOURCE}"))[1]["problem"])

    await wait_for(problem_shown, what="the connector's problem in the admin")
    status, shown = await admin.call("GET", f"/tenants/{TENANT}/sources/{SOURCE}")
    assert shown["problem"] == "the environment variable SS12000_NOT_SET is not set"
    status, problem = await admin.call("POST", f"/tenants/{TENANT}/sources/{SOURCE}/sync", {"mode": "full"})
    assert status == 409
    assert "SS12000_NOT_SET" in problem["detail"]
    body = ss12000_body(moved, secrets={"client_secret": CLIENT_SECRET}, secret_refs={})
    assert (await admin.call("PUT", f"/tenants/{TENANT}/sources/{SOURCE}", body))[0] == 200
    await wait_for(lambda: key in connector.sources, what="the repaired source to be served")
    assert (await admin.call("GET", f"/tenants/{TENANT}/sources/{SOURCE}"))[1]["problem"] is None

    # A wrong secret value: the runs fail with a reason the admin can act on, nothing else is affected.
    body = ss12000_body(moved, secrets={"client_secret": "wrong"})
    assert (await admin.call("PUT", f"/tenants/{TENANT}/sources/{SOURCE}", body))[0] == 200
    await wait_for(lambda: connector.clients.get(key) is not None and connector.clients[key]._client_secret == "wrong",
                   what="the new secret")  # fmt: skip
    runs_before = len(testbed.collected.runs())
    assert (await admin.call("POST", f"/tenants/{TENANT}/sources/{SOURCE}/sync", {"mode": "full"}))[0] == 202
    await wait_for(lambda: len(testbed.collected.runs()) > runs_before, what="the run with the wrong secret")
    run = testbed.collected.runs()[-1]
    await wait_for(lambda: testbed.collected.complete(run), what="the failed run to complete")
    completed = testbed.collected.completed(run)
    assert completed is not None
    assert not completed.healthy
    assert any("401" in code or "token" in code for code in completed.errors), completed.errors

    # Removed: retired.
    assert (await admin.call("DELETE", f"/tenants/{TENANT}/sources/{SOURCE}"))[0] == 204
    await wait_for(lambda: connector.sources == {}, what="the removed source to be retired")


async def test_a_sync_request_right_after_saving_is_served_not_dead_lettered(
    settings: ServiceSettings, testbed: ConnectorTestbed, admin: AdminApi
) -> None:
    fake = await ss12000_fake(testbed)
    app = build_ss12000(
        follower_settings(
            Ss12000ConnectorSettings, settings, "ss12000", sources_poll_seconds=60,
            ss12000_webhook_host="127.0.0.1", ss12000_webhook_port=0,
        )
    )  # fmt: skip
    await testbed.start_app(app)
    assert (await admin.call("POST", f"/tenants/{TENANT}/sources", ss12000_body(fake)))[0] == 201
    # The connector has not looked at the registry since it started (a minute between looks): the request
    # makes it look once.
    assert (await admin.call("POST", f"/tenants/{TENANT}/sources/{SOURCE}/sync", {"mode": "full"}))[0] == 202
    await wait_for(lambda: len(testbed.collected.runs()) == 1, what="the requested run")
    await wait_for(lambda: testbed.collected.complete(testbed.collected.runs()[0]), what="the run to complete")


async def test_microsoft_and_google_sources_are_followed_too(
    settings: ServiceSettings, testbed: ConnectorTestbed, admin: AdminApi
) -> None:
    graph = await testbed.start_fake(FakeGraphEducation())
    graph.load_organiser(organiser(seed=7, school_units=1, students_per_unit=3, teachers_per_unit=1))
    key = generate_service_account_key(client_email="skolsynk@kommun-a.iam.gserviceaccount.com")
    google = await testbed.start_fake(FakeGoogleDirectory(admins=["admin@demo.skolsynk.example"]))
    google.add_service_account(key)
    google.add_user("admin@demo.skolsynk.example", "Admin", "Demo", audit=False)
    google.load_organiser(organiser(seed=3, school_units=1, students_per_unit=3, teachers_per_unit=1))
    graph_app = build_graph(follower_settings(GraphConnectorSettings, settings, "graph"))
    google_app = build_google(follower_settings(GoogleConnectorSettings, settings, "google"))
    await testbed.start_app(graph_app)
    await testbed.start_app(google_app)

    microsoft = {
        "source_id": "m365", "kind": "microsoft", "display_name": "Microsoft 365",
        "settings": {"azure_tenant_id": graph.azure_tenant_id, "client_id": graph.client_id,
                     "authority": graph.authority, "graph_base_url": graph.graph_base_url},
        "secrets": {"client_secret": graph.client_secret},
    }  # fmt: skip
    example = yaml.safe_load(GOOGLE_EXAMPLE.read_text(encoding="utf-8"))["sources"][0]
    workspace = {
        "source_id": "workspace", "kind": "google", "display_name": "Google Workspace",
        "settings": {"delegated_admin": example["delegated_admin"], "mapping": example["mapping"],
                     "api_base_url": google.base_url, "token_url": google.token_url},
        "secrets": {"service_account_key": json.dumps(key)},
    }  # fmt: skip
    for body in (microsoft, workspace):
        status, checked = await admin.call("POST", f"/tenants/{TENANT}/source-checks", body)
        assert status == 200, checked
        assert checked["ok"], checked
        assert checked["counts"]["school_units"] >= 1, checked
        assert checked["counts"]["persons"] > 3, checked
        if body["kind"] == "google":  # what the mapping makes of the first users: the preview of the mapping
            assert checked["counts"]["students"] + checked["counts"]["teachers"] > 3, checked
        status, created = await admin.call("POST", f"/tenants/{TENANT}/sources", body)
        assert status == 201, created
        assert (await admin.call("POST", f"/tenants/{TENANT}/sources/{body['source_id']}/sync", {}))[0] == 202
    # What the organiser's Google admin pastes into domain-wide delegation: the key's client id, the scopes.
    shown = (await admin.call("GET", f"/tenants/{TENANT}/sources/workspace"))[1]["delegation"]
    assert shown["client_id"] == key["client_id"]
    assert shown["scopes"] == [
        "https://www.googleapis.com/auth/admin.directory.user.readonly",
        "https://www.googleapis.com/auth/admin.directory.orgunit.readonly",
        "https://www.googleapis.com/auth/admin.directory.group.readonly",
        "https://www.googleapis.com/auth/admin.directory.group.member.readonly",
    ]
    assert (await admin.call("GET", f"/tenants/{TENANT}/sources/m365"))[1]["delegation"] is None
    await wait_for(lambda: len(testbed.collected.runs()) == 2, what="a run of each source", timeout=60)
    for run in testbed.collected.runs():
        await wait_for(lambda run=run: testbed.collected.complete(run), what="both runs to complete", timeout=60)
        completed = testbed.collected.completed(run)
        assert completed is not None
        assert completed.healthy, completed
        assert persons_in(testbed, run) > 3
    assert graph_app.extensions["registry"].problems == google_app.extensions["registry"].problems == {}


async def test_the_yaml_import_is_idempotent_and_checked_before_anything_is_written(
    settings: ServiceSettings, make_app: Any, tmp_path: Path
) -> None:
    app = make_app("cli-test")
    await app.start()
    db = app.db
    await db["admin_tenants"].insert_one({"_id": TENANT, "display_name": "Kommun A"})
    entries = [
        {"tenant_id": TENANT, "source_id": source_id, "base_url": f"https://{source_id}.example/v2",
         "auth": {"kind": "oauth2", "token_url": "https://idp.example/token", "client_id": "skolsynk",
                  "client_secret_env": "SS_SECRET"}}
        for source_id in ("api-1", "api-2")
    ]  # fmt: skip
    path = tmp_path / "ss12000-sources.yaml"
    path.write_text(yaml.safe_dump({"sources": entries}), encoding="utf-8")
    box = SecretBox(None)
    assert await import_sources(db, box, SS12000, path) == [
        (f"{TENANT}:api-1", "created"),
        (f"{TENANT}:api-2", "created"),
    ]
    store = SourceStore(db, box)
    versions = await store.versions("ss12000")
    assert await import_sources(db, box, SS12000, path) == [
        (f"{TENANT}:api-1", "unchanged"),
        (f"{TENANT}:api-2", "unchanged"),
    ]
    assert await store.versions("ss12000") == versions  # nothing rewritten: connectors see no change
    stored = await store.get(TENANT, "api-1")
    assert stored is not None
    assert stored["secret_refs"] == {"client_secret": "SS_SECRET"}
    assert stored["sealed"] is None
    assert SS12000.from_registry(stored, {}).auth.client_secret_env == "SS_SECRET"

    entries[1]["base_url"] = "https://moved.example/v2"
    path.write_text(yaml.safe_dump(entries), encoding="utf-8")
    assert await import_sources(db, box, SS12000, path, dry_run=True) == [
        (f"{TENANT}:api-1", "unchanged"),
        (f"{TENANT}:api-2", "updated"),
    ]
    assert await store.versions("ss12000") == versions
    out, err = io.StringIO(), io.StringIO()
    cli_settings = CliSettings.model_validate(settings.model_dump())
    assert (
        await execute(parser().parse_args(["sources", "import", "ss12000", str(path)]), cli_settings, out=out, err=err)
        == 0
    )
    assert "0 created, 1 updated, 1 unchanged" in out.getvalue()
    assert (await store.versions("ss12000"))[f"{TENANT}:api-2"] == versions[f"{TENANT}:api-2"] + 1

    # A tenant the admin does not know, or a secret's value in the file: nothing is written.
    bad = [{**entries[0], "tenant_id": "okand-kommun"}, {**entries[0], "source_id": "api-3"}]
    path.write_text(yaml.safe_dump(bad), encoding="utf-8")
    with pytest.raises(ConfigurationError, match="no such organiser: okand-kommun"):
        await import_sources(db, box, SS12000, path)
    leaked = [{**entries[0], "auth": {**entries[0]["auth"], "client_secret": "plain-secret"}}]
    path.write_text(yaml.safe_dump(leaked), encoding="utf-8")
    with pytest.raises(ConfigurationError, match="names the variable, never the secret") as raised:
        await import_sources(db, box, SS12000, path)
    assert "plain-secret" not in str(raised.value)
    assert sorted(await store.versions("ss12000")) == [f"{TENANT}:api-1", f"{TENANT}:api-2"]
    out, err = io.StringIO(), io.StringIO()
    assert (
        await execute(parser().parse_args(["sources", "import", "ss12000", str(path)]), cli_settings, out=out, err=err)
        == 1
    )
    assert "names the variable, never the secret" in err.getvalue()


async def test_an_egil_client_is_registered_rotated_and_revoked_in_the_admin_without_a_restart(
    settings: ServiceSettings, testbed: ConnectorTestbed, admin: AdminApi
) -> None:
    receiver = build_receiver(
        EgilReceiverSettings.model_validate(
            {**settings.model_dump(), "egil_port": 0, "egil_host": "127.0.0.1", "sources_poll_seconds": 0.2}
        )
    )
    await testbed.start_app(receiver)
    scim = f"http://127.0.0.1:{receiver.web_ports[0]}"

    async def status_with(key: str) -> int:
        async with aiohttp.ClientSession() as session, session.get(f"{scim}/Users", headers={"X-API-Key": key}) as r:
            return r.status

    body = {"source_id": "egil-ad", "kind": "egil", "display_name": "EGIL-klienten"}
    assert (await admin.call("POST", f"/tenants/{TENANT}/sources", body))[0] == 201
    # Without a key or a certificate the receiver cannot let it in, and the admin says so.
    await wait_for(lambda: f"{TENANT}:egil-ad" in receiver.extensions["registry"].problems, what="the problem")
    status, shown = await admin.call("GET", f"/tenants/{TENANT}/sources/egil-ad")
    assert shown["problem"] == "no API key and no client certificate registered"

    status, issued = await admin.call("POST", f"/tenants/{TENANT}/sources/egil-ad/api-key")
    assert status == 201
    first = issued["api_key"]
    assert f"http-auth-key-value = {first}" in issued["configuration"]

    async def let_in(key: str) -> bool:
        return await status_with(key) == 200

    async def refused(key: str) -> bool:
        return await status_with(key) == 403

    await wait_for(lambda: let_in(first), what="the client to be let in with its key")
    assert (await admin.call("GET", f"/tenants/{TENANT}/sources/egil-ad"))[1]["problem"] is None
    shown = await admin.call("GET", f"/tenants/{TENANT}/sources/egil-ad/egil-client")
    assert first not in json.dumps(shown)  # shown once, never again
    assert shown[1]["has_api_key"] is True

    status, rotated = await admin.call("POST", f"/tenants/{TENANT}/sources/egil-ad/api-key")
    second = rotated["api_key"]
    await wait_for(lambda: let_in(second), what="the rotated key to be let in")
    assert await refused(first)

    assert (await admin.call("DELETE", f"/tenants/{TENANT}/sources/egil-ad/api-key"))[0] == 204
    await wait_for(lambda: refused(second), what="the revoked key to be refused")

    # A certificate: its public-key pin is what the receiver knows the client by, and the certificate itself
    # (the first of a chain) is what lets a self-signed one through the receiver's own TLS without a CA.
    certificate = client_certificate_pem()
    status, connection = await admin.call(
        "POST",
        f"/tenants/{TENANT}/sources/egil-ad/certificates",
        {"pem": "a comment\n" + certificate.decode() + client_certificate_pem().decode()},
    )
    assert status == 201
    [pin] = connection["client_pins"]
    assert pin == spki_sha256_pin(certificate)
    await wait_for(lambda: receiver.extensions["clients"].by_pin(pin) is not None, what="the pin to be known")
    assert receiver.extensions["clients"].certificates == [certificate.decode()]
    status, _ = await admin.call("DELETE", f"/tenants/{TENANT}/sources/egil-ad/certificates?pin={quote(pin)}")
    assert status == 204
    await wait_for(lambda: receiver.extensions["clients"].by_pin(pin) is None, what="the removed pin to go")
    assert receiver.extensions["clients"].certificates == []
    assert (await admin.call("DELETE", f"/tenants/{TENANT}/sources/egil-ad/certificates?pin={quote(pin)}"))[0] == 404
    status, connection = await admin.call(
        "POST", f"/tenants/{TENANT}/sources/egil-ad/certificates", {"pem": certificate.decode()}
    )
    assert status == 201
    status, problem = await admin.call(
        "POST", f"/tenants/{TENANT}/sources/egil-ad/certificates", {"pem": "-----BEGIN CERTIFICATE-----\nnope"}
    )
    assert (status, problem["errors"]) == (422, [{"field": "pem", "message": "not a PEM certificate"}])
    assert (await admin.call("DELETE", f"/tenants/{TENANT}/sources/egil-ad"))[0] == 204
    await wait_for(lambda: receiver.extensions["clients"].by_pin(pin) is None, what="the removed client to go")


def client_certificate_pem() -> bytes:
    """A self-signed client certificate (only its public key matters here)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "egil-client")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM)


async def test_test_connection_is_answered_by_the_connector_itself_before_and_after_saving(
    settings: ServiceSettings, testbed: ConnectorTestbed, admin: AdminApi
) -> None:
    fake = await ss12000_fake(testbed, extra_students=2)
    # No connector of the kind yet: the admin says so at once, nothing is queued.
    status, problem = await admin.call("POST", f"/tenants/{TENANT}/source-checks", ss12000_body(fake))
    assert status == 503, problem
    app = build_ss12000(
        follower_settings(
            Ss12000ConnectorSettings, settings, "ss12000", ss12000_webhook_host="127.0.0.1", ss12000_webhook_port=0
        )
    )
    await testbed.start_app(app)

    # Before saving: the settings typed in, tried by the connector (token, first pages), counts back.
    status, checked = await admin.call("POST", f"/tenants/{TENANT}/source-checks", ss12000_body(fake))
    assert status == 200, checked
    assert (checked["ok"], checked["counts"], checked["complete"]) == (True, {"school_units": 1, "persons": 3}, True)
    # A wrong secret: the token endpoint's refusal, as a code the page explains.
    status, checked = await admin.call(
        "POST", f"/tenants/{TENANT}/source-checks", ss12000_body(fake, secrets={"client_secret": "wrong"})
    )
    assert (status, checked["ok"]) == (200, False)
    assert "401" in checked["error_code"], checked
    # A reference to a variable the connector does not have.
    body = ss12000_body(fake, secrets={}, secret_refs={"client_secret": "SS12000_NOT_SET"})
    status, checked = await admin.call("POST", f"/tenants/{TENANT}/source-checks", body)
    assert (checked["ok"], checked["error_code"]) == (False, "configuration")
    assert checked["detail"] == "the environment variable SS12000_NOT_SET is not set"
    # Settings the kind refuses never leave the admin.
    bad = ss12000_body(fake, settings={"base_url": "ftp://x", "auth": {"kind": "none"}})
    assert (await admin.call("POST", f"/tenants/{TENANT}/source-checks", bad))[0] == 422

    # After saving: the stored source (its sealed secret opened by the connector).
    assert (await admin.call("POST", f"/tenants/{TENANT}/sources", ss12000_body(fake)))[0] == 201
    status, checked = await admin.call("POST", f"/tenants/{TENANT}/sources/{SOURCE}/check")
    assert (status, checked["ok"], checked["counts"]["persons"]) == (200, True, 3)
    # An edit checked before it is saved keeps the stored secret for what the form leaves empty.
    moved = await ss12000_fake(testbed)
    status, checked = await admin.call("POST", f"/tenants/{TENANT}/source-checks", ss12000_body(moved, secrets={}))
    assert (checked["ok"], checked["counts"]["persons"]) == (True, 1)
    assert testbed.collected.runs() == []  # a check is not a run: nothing reached the normaliser


async def test_microsoft_365_is_connected_by_admin_consent_to_skolsynks_app(
    settings: ServiceSettings, testbed: ConnectorTestbed
) -> None:
    graph = await testbed.start_fake(FakeGraphEducation())
    graph.load_organiser(organiser(seed=5, school_units=1, students_per_unit=3, teachers_per_unit=1))
    admin_app = build_admin(
        AdminSettings.model_validate(
            {**settings.model_dump(), "admin_port": 0, "admin_host": "127.0.0.1", "admin_secrets_key": SECRETS_KEY,
             "admin_microsoft_app_client_id": graph.client_id}
        )
    )  # fmt: skip
    await testbed.start_app(admin_app)
    token, _ = await TokenStore(admin_app.db).create(role=Role.OPERATOR, subject="ops", tenant_id=None, created_by="t")
    base = f"http://127.0.0.1:{admin_app.web_ports[0]}"
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:  # cookies for 127.0.0.1
        api = AdminApi(base + "/api/v1", http, token)
        assert (await api.call("POST", "/tenants", {"tenant_id": TENANT, "display_name": "Kommun A"}))[0] == 201
        # The link to Microsoft's admin consent, for skolsynk's app, back to the admin UI.
        status, consent = await api.call(
            "POST", f"/tenants/{TENANT}/microsoft-consents", {"source_id": "m365", "display_name": "Microsoft 365"}
        )
        assert status == 201, consent
        link = URL(consent["consent_url"])
        assert str(link.with_query(None)) == "https://login.microsoftonline.com/organizations/v2.0/adminconsent"
        assert link.query["client_id"] == graph.client_id
        assert link.query["redirect_uri"] == consent["redirect_uri"] == f"{base}/ui/consent/microsoft"
        assert consent["permissions"] == ["EduRoster.Read.All", "Member.Read.Hidden"]
        state = link.query["state"]

        # The organiser's admin consents at Microsoft, which sends the browser back (signed in to the admin).
        login = await http.post(
            f"{base}/ui/login", data={"token": token}, headers={"Origin": base}, allow_redirects=False
        )
        assert login.status == 303
        # The form offers it first, with the permissions in Swedish; its button leads to Microsoft.
        page = await (await http.get(f"{base}/ui/t/{TENANT}/sources/new", params={"kind": "microsoft"})).text()
        assert "Godkänn i Microsoft Entra" in page
        assert "<code>Member.Read.Hidden</code>: se vilka som är medlemmar i klasserna" in page
        started = await http.post(
            f"{base}/ui/t/{TENANT}/sources/consent",
            data={"display_name": "Microsoft 365", "source_id": "m365"},
            headers={"Origin": base},
            allow_redirects=False,
        )
        assert started.status == 303
        assert started.headers["Location"].startswith("https://login.microsoftonline.com/organizations/v2.0/")
        back = f"{base}/ui/consent/microsoft"
        refused = await http.get(back, params={"error": "access_denied", "state": state})
        assert "Godkännandet gjordes inte i Microsoft" in await refused.text()
        status, _ = await api.call("GET", f"/tenants/{TENANT}/sources/m365")
        assert status == 404  # nothing saved without consent; the state is used up
        _, consent = await api.call(
            "POST", f"/tenants/{TENANT}/microsoft-consents", {"source_id": "m365", "display_name": "Microsoft 365"}
        )
        state = URL(consent["consent_url"]).query["state"]
        done = await http.get(
            back,
            params={"tenant": graph.azure_tenant_id, "admin_consent": "True", "state": state},
            allow_redirects=True,
        )
        assert "Microsoft 365 är godkänt för skolsynk och källan Microsoft 365 är sparad." in await done.text()
        again = await http.get(
            back,
            params={"tenant": graph.azure_tenant_id, "admin_consent": "True", "state": state},
            allow_redirects=True,
        )
        assert "har gått ut eller redan använts" in await again.text()

        status, source = await api.call("GET", f"/tenants/{TENANT}/sources/m365")
        assert source["settings"] == {"azure_tenant_id": graph.azure_tenant_id}
        assert source["secrets_set"] == []  # no client id or secret of its own: skolsynk's app reads
        # (The fake Graph stands in for Microsoft's hosts.)
        hosts = {"authority": graph.authority, "graph_base_url": graph.graph_base_url}
        body = {"source_id": "m365", "kind": "microsoft", "display_name": "Microsoft 365",
                "settings": {**source["settings"], **hosts}}  # fmt: skip
        assert (await api.call("PUT", f"/tenants/{TENANT}/sources/m365", body))[0] == 200

        connector = build_graph(
            follower_settings(GraphConnectorSettings, settings, "graph", graph_app_client_id=graph.client_id,
                              graph_app_client_secret=graph.client_secret)
        )  # fmt: skip
        await testbed.start_app(connector)
        status, checked = await api.call("POST", f"/tenants/{TENANT}/sources/m365/check")
        assert checked["ok"], checked
        assert (await api.call("POST", f"/tenants/{TENANT}/sources/m365/sync", {}))[0] == 202
        await wait_for(lambda: len(testbed.collected.runs()) == 1, what="the run with skolsynk's app")
        run = testbed.collected.runs()[0]
        await wait_for(lambda: testbed.collected.complete(run), what="the run to complete")
        completed = testbed.collected.completed(run)
        assert completed is not None
        assert completed.healthy, completed
