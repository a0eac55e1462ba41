"""Issue 19, item 3: the EGIL receiver lets clients in as real EGIL clients behave, over real TLS.

- a self-signed client certificate registered whole gets through the receiver's own TLS without a CA (it
  was refused in the handshake: only certificates chaining to SKOLSYNK_EGIL_CLIENT_CA_FILE got through);
- the EGIL client always presents its certificate: an unregistered one next to a valid API key is let in by
  the key (the certificate used to win, 403); a certificate of one client and a key of another never;
- a client may require both its certificate and its key;
- behind a TLS-terminating proxy (optional_no_ca) the certificate comes in a header, believed only from a
  trusted proxy address, so a pin alone (federation metadata) suffices;
- every refusal, TLS handshakes included, is one ``egil_client_refused`` log line with the reason, the
  presented pin and the peer address (never the key) and a count of ``skolsynk_egil_refusals_total``;
- a client over its rate waits for its turn instead of failing.
"""

from __future__ import annotations

import contextlib
import ssl
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from structlog.testing import capture_logs

from skolsynk.service import ServiceApp
from skolsynk.settings import ServiceSettings
from skolsynk.tls import spki_sha256_pin
from skolsynk_services.egil_receiver import app as receiver_module
from skolsynk_services.egil_receiver.app import EgilReceiverSettings
from skolsynk_services.egil_receiver.app import build as build_receiver
from skolsynk_services.egil_receiver.clients import EgilClient, hash_key
from tests.helpers import delete_topology, wait_for

pytestmark = [
    pytest.mark.connected,
    pytest.mark.timeout(120),
    pytest.mark.queues("normaliser.source-events"),
]

TENANT = "gronkoping"


def self_signed(tmp_path: Path, name: str, *, days: int = 365) -> dict[str, Any]:
    """A self-signed client certificate as Skolfederation members make them: its PEM, its pin, and a file
    with key and certificate for the client."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    pem = certificate.public_bytes(serialization.Encoding.PEM).decode()
    path = tmp_path / f"{name}.pem"
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    path.write_text(key_pem + pem)
    return {"pem": pem, "pin": spki_sha256_pin(pem.encode()), "file": path}


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, Any]:
    server_ca, client_ca = trustme.CA(), trustme.CA()
    server = server_ca.issue_cert("127.0.0.1")
    issued = client_ca.issue_cert("egil.gronkoping.example")  # chains to the client CA, registered nowhere
    files = {name: tmp_path / f"{name}.pem" for name in ("server_ca", "client_ca", "server", "issued")}
    server_ca.cert_pem.write_to_path(str(files["server_ca"]))
    client_ca.cert_pem.write_to_path(str(files["client_ca"]))
    server.private_key_and_cert_chain_pem.write_to_path(str(files["server"]))
    issued.private_key_and_cert_chain_pem.write_to_path(str(files["issued"]))
    return {
        **files,
        "issued_pin": spki_sha256_pin(issued.cert_chain_pems[0].bytes()),
        **{name: self_signed(tmp_path, name) for name in ("alpha", "both", "pinned", "stranger", "later")},
    }


@contextlib.asynccontextmanager
async def serving(settings: ServiceSettings, pki: dict[str, Any], clients: list[EgilClient], **overrides: Any):
    app = build_receiver(
        EgilReceiverSettings.model_validate(
            {**settings.model_dump(), "egil_port": 0, "egil_host": "127.0.0.1",
             "egil_tls_cert_file": pki["server"], **overrides}
        ),
        clients=clients,
    )  # fmt: skip
    try:
        await app.start()
        yield app
    finally:
        await app.drain(2)
        await app.close()
        await delete_topology(settings.broker.amqp_url.get_secret_value(), app.topology)


def session(pki: dict[str, Any], cert: Path | None = None, *, headers: dict[str, str] | None = None):
    context = ssl.create_default_context(cafile=str(pki["server_ca"]))
    if cert is not None:
        context.load_cert_chain(str(cert))
    connector = aiohttp.TCPConnector(ssl=context, force_close=True)
    return aiohttp.ClientSession(connector=connector, headers=headers or {})


async def status(app: ServiceApp, http: aiohttp.ClientSession, *, port: int = 0) -> int:
    async with http.get(f"https://127.0.0.1:{app.web_ports[port]}/Organisations") as response:
        return response.status


async def handshake_refused(app: ServiceApp, http: aiohttp.ClientSession) -> bool:
    try:
        await status(app, http)
    except (aiohttp.ClientError, ssl.SSLError, ConnectionError):
        return True
    return False


def refusals(app: ServiceApp, reason: str) -> float:
    return app.metrics.registry.get_sample_value("skolsynk_egil_refusals_total", {"reason": reason}) or 0.0


@contextlib.contextmanager
def refusal_log() -> Iterator[list[dict[str, Any]]]:
    with capture_logs() as events:
        refused: list[dict[str, Any]] = []
        yield refused
    refused.extend(e for e in events if e["event"] == "egil_client_refused")


def client(source_id: str, **fields: Any) -> EgilClient:
    return EgilClient(tenant_id=TENANT, source_id=source_id, **fields)


async def test_a_self_signed_certificate_registered_whole_gets_in_without_a_ca(settings, pki) -> None:
    clients = [client("alpha", client_certificates=(pki["alpha"]["pem"],))]
    async with serving(settings, pki, clients) as app:
        async with session(pki, pki["alpha"]["file"]) as http:
            assert await status(app, http) == 200
        # A certificate nobody registered is refused by the handshake: logged and counted, with OpenSSL's reason.
        with refusal_log() as refused:
            async with session(pki, pki["stranger"]["file"]) as http:
                assert await handshake_refused(app, http)
        # (aiohttp tries a GET twice when the server hangs up: one line per handshake)
        assert {(r["reason"], r["tls_error"].replace("-", " ")) for r in refused} == {
            ("tls_handshake", "self signed certificate")  # (OpenSSL 1.1 wrote it without the hyphen)
        }
        assert refusals(app, "tls_handshake") == len(refused)

        # Registered while serving (the admin's certificate form): trusted from the next connection on.
        registry = app.extensions["clients"]
        later = client("later", client_certificates=(pki["later"]["pem"],))
        assert await registry.set_sources([*clients, later]) == {}
        async with session(pki, pki["later"]["file"]) as http:
            assert await status(app, http) == 200
        # Removed: the handshake may still pass (OpenSSL keeps the anchor), the pin lookup refuses it.
        await registry.set_sources(clients)
        with refusal_log() as refused:
            async with session(pki, pki["later"]["file"]) as http:
                assert await status(app, http) == 403
        assert [(r["reason"], r["pin"], r["peer"]) for r in refused] == [
            ("unknown_pin", pki["later"]["pin"], "127.0.0.1")
        ]


async def test_an_api_key_client_is_not_refused_for_the_certificate_it_always_presents(settings, pki) -> None:
    """No CA and no registered certificate: no certificate is asked for, whatever the client holds."""
    clients = [client("keyed", api_key_sha256=hash_key("key-of-keyed-0123456789"))]
    async with serving(settings, pki, clients) as app:
        headers = {"X-API-Key": "key-of-keyed-0123456789"}
        async with session(pki, pki["stranger"]["file"], headers=headers) as http:
            assert await status(app, http) == 200


async def test_certificates_and_keys_combine_per_client(settings, pki) -> None:
    key_a, key_b, key_c = "key-of-alpha-0123456789", "key-of-keyed-0123456789", "key-of-both-0123456789"
    clients = [
        client("alpha", client_certificates=(pki["alpha"]["pem"],), api_key_sha256=hash_key(key_a)),
        client("keyed", api_key_sha256=hash_key(key_b)),
        client("both", client_certificates=(pki["both"]["pem"],), api_key_sha256=hash_key(key_c),
               require_certificate_and_key=True),
    ]  # fmt: skip
    async with serving(settings, pki, clients, egil_client_ca_file=pki["client_ca"]) as app:
        cases = [
            # (certificate, key, status, refusal)
            ("issued", key_b, 200, None),  # an unregistered certificate (valid chain) next to a valid key
            ("issued", None, 403, "unknown_pin"),
            ("alpha", None, 200, None),
            ("alpha", key_a, 200, None),
            ("alpha", key_b, 403, "credentials_mismatch"),  # never X's certificate with Y's key
            ("alpha", "wrong-key-0123456789", 200, None),  # a registered certificate needing no key is enough
            (None, None, 401, "no_credentials"),
            (None, "wrong-key-0123456789", 403, "unknown_api_key"),
            ("both", key_c, 200, None),
            ("both", None, 403, "certificate_and_key_required"),
            (None, key_c, 403, "certificate_and_key_required"),
            ("issued", key_c, 403, "unknown_pin"),
            ("both", key_a, 403, "credentials_mismatch"),
            ("both", "wrong-key-0123456789", 403, "unknown_api_key"),
        ]
        for certificate, key, expected, reason in cases:
            cert_file = None if certificate is None else pki["issued"] if certificate == "issued" else None
            cert_file = cert_file or (pki[certificate]["file"] if certificate not in (None, "issued") else None)
            with refusal_log() as refused:
                async with session(pki, cert_file, headers={"X-API-Key": key} if key else None) as http:
                    assert await status(app, http) == expected, (certificate, key)
            assert [r["reason"] for r in refused] == ([reason] if reason else []), (certificate, key)
            for line in refused:
                assert line["peer"] == "127.0.0.1"
                pins = {None: None, "issued": pki["issued_pin"]}
                assert line.get("pin") == (pins[certificate] if certificate in pins else pki[certificate]["pin"])
                assert not any(key and key in str(value) for value in line.values())  # never the key
        for reason in ("unknown_pin", "credentials_mismatch", "no_credentials", "unknown_api_key"):
            assert refusals(app, reason) >= 1, reason
        assert refusals(app, "certificate_and_key_required") == 2


async def test_the_api_key_port_asks_for_no_certificate(settings, pki) -> None:
    """Once the main port asks for certificates, an API-key client whose certificate it cannot check is refused
    by the handshake there; on SKOLSYNK_EGIL_API_KEY_PORT it is never asked for one (as Windermere's API-key
    listener), so its key lets it in. A client that needs both cannot use that port."""
    key, both_key = "key-of-keyed-0123456789", "key-of-both-0123456789"
    clients = [
        client("alpha", client_certificates=(pki["alpha"]["pem"],)),  # so the main port asks for certificates
        client("keyed", api_key_sha256=hash_key(key)),
        client("both", client_certificates=(pki["both"]["pem"],), api_key_sha256=hash_key(both_key),
               require_certificate_and_key=True),
    ]  # fmt: skip
    async with serving(settings, pki, clients, egil_api_key_port=0) as app:
        async with session(pki, pki["stranger"]["file"], headers={"X-API-Key": key}) as http:
            assert await handshake_refused(app, http)
        async with session(pki, pki["stranger"]["file"], headers={"X-API-Key": key}) as http:
            assert await status(app, http, port=1) == 200
        with refusal_log() as refused:
            async with session(pki, pki["both"]["file"], headers={"X-API-Key": both_key}) as http:
                assert await status(app, http, port=1) == 403
        assert [(r["reason"], r.get("pin")) for r in refused] == [("certificate_and_key_required", None)]


async def test_behind_a_tls_proxy_a_registered_pin_is_enough(settings, pki) -> None:
    """ingress-nginx with auth-tls-verify-client: optional_no_ca passes the certificate, URL-encoded, in
    ssl-client-cert; the pin (as federation metadata gives it) decides, from a trusted proxy only."""
    clients = [client("pinned", client_pins=(pki["pinned"]["pin"],))]
    forwarded = {"ssl-client-cert": quote(pki["pinned"]["pem"]), "X-Forwarded-For": "198.51.100.7"}
    async with serving(settings, pki, clients, egil_trusted_proxies="127.0.0.1") as app:  # we are the proxy
        async with session(pki, headers=forwarded) as http:
            assert await status(app, http) == 200
        with refusal_log() as refused:
            stranger = {"ssl-client-cert": quote(pki["stranger"]["pem"]), "X-Forwarded-For": "198.51.100.8"}
            async with session(pki, headers=stranger) as http:
                assert await status(app, http) == 403
            async with session(pki, headers={"ssl-client-cert": "not%20a%20certificate"}) as http:
                assert await status(app, http) == 403
            async with session(pki, headers=stranger) as http:  # a push with a body: refused, not a 500
                url = f"https://127.0.0.1:{app.web_ports[0]}/Organisations"
                async with http.post(url, json={"externalId": "x"}) as response:
                    assert response.status == 403
        assert [(r["reason"], r.get("pin"), r["peer"], r.get("forwarded_for")) for r in refused] == [
            ("unknown_pin", pki["stranger"]["pin"], "127.0.0.1", "198.51.100.8"),
            ("invalid_certificate", None, "127.0.0.1", None),
            ("unknown_pin", pki["stranger"]["pin"], "127.0.0.1", "198.51.100.8"),
        ]
    async with serving(settings, pki, clients, egil_trusted_proxies="192.0.2.1") as app:  # we are not
        with refusal_log() as refused:
            async with session(pki, headers=forwarded) as http:
                assert await status(app, http) == 403
        assert [(r["reason"], r.get("pin"), r["peer"], r.get("forwarded_for")) for r in refused] == [
            ("untrusted_proxy", None, "127.0.0.1", None)
        ]
        assert refusals(app, "untrusted_proxy") == 1


async def test_a_client_over_its_rate_waits_for_its_turn(settings, pki, monkeypatch) -> None:
    """The EGIL client sends one request at a time and never retries within a run: over its rate it is
    slowed down, not refused (a 429 cost the object until the next run)."""
    key = "key-of-paced-0123456789"
    clients = [client("paced", api_key_sha256=hash_key(key), rate_per_second=5, burst=1)]
    async with serving(settings, pki, clients) as app:
        async with session(pki, headers={"X-API-Key": key}) as http:
            started = time.monotonic()
            answers = [await status(app, http) for _ in range(6)]
            elapsed = time.monotonic() - started
        assert answers == [200] * 6
        assert elapsed >= 0.8  # five waits of 0.2 s: paced
        assert refusals(app, "rate_limited") == 0

        # Only a wait beyond the bound is refused, and that is told.
        monkeypatch.setattr(receiver_module, "RATE_LIMIT_WAIT_SECONDS", 0.05)
        with refusal_log() as refused:
            async with session(pki, headers={"X-API-Key": key}) as http:
                answers = [await status(app, http) for _ in range(3)]
        assert 429 in answers
        assert {(r["reason"], r["tenant_id"], r["source_id"]) for r in refused} == {("rate_limited", TENANT, "paced")}
        await wait_for(lambda: refusals(app, "rate_limited") == len(refused), what="every 429 counted")
