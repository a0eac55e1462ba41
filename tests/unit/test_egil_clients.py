"""EGIL client registry: API keys by hash, pins, certificates registered whole, pins from federation metadata,
and certificates a trusted proxy passes."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from pydantic import ValidationError

from skolsynk.connectors.sources.egil import load_sources
from skolsynk.tls import spki_sha256_pin
from skolsynk_services.egil_receiver.access import pin_of_forwarded_certificate, proxy_list
from skolsynk_services.egil_receiver.app import EgilReceiverSettings
from skolsynk_services.egil_receiver.clients import (
    ClientRegistry,
    EgilClient,
    federation_client_pins,
    hash_key,
    load_federation_pins,
)
from tests.reference import EGIL_METADATA

pytestmark = pytest.mark.unit


P1 = "A" * 43 + "="
P2 = "B" * 43 + "="


def write_clients(tmp_path: Path, clients: list[dict[str, object]]) -> Path:
    path = tmp_path / "clients.yaml"
    path.write_text(yaml.safe_dump(clients))
    return path


def test_api_keys_are_matched_by_hash_and_pins_directly(tmp_path: Path) -> None:
    path = write_clients(
        tmp_path,
        [{"tenant_id": "kommun-a", "source_id": "egil", "api_key_sha256": hash_key("secret-key"), "client_pins": [P1]}],
    )
    registry = ClientRegistry(load_sources(path))
    assert registry.by_api_key("secret-key").tenant_id == "kommun-a"  # type: ignore[union-attr]
    assert registry.by_api_key("other-key") is None
    assert registry.by_pin(P1).source_id == "egil"  # type: ignore[union-attr]
    assert registry.by_pin(P2) is None


def test_a_clients_file_is_checked_field_by_field(tmp_path: Path) -> None:
    path = write_clients(tmp_path, [{"tenant_id": "kommun-a", "source_id": "egil", "client_pins": ["p1="]}])
    with pytest.raises(ValidationError, match=r"client_pins\.0"):
        load_sources(path)


async def test_clients_are_registered_rotated_and_revoked_while_serving() -> None:
    registry = ClientRegistry([EgilClient(tenant_id="kommun-a", source_id="egil", api_key_sha256=hash_key("old"))])
    limiter = registry.limiter(registry.clients[0])
    problems = await registry.set_sources(
        [
            EgilClient(tenant_id="kommun-a", source_id="egil", api_key_sha256=hash_key("new")),
            EgilClient(tenant_id="kommun-a", source_id="ad-2", client_pins=(P1,)),
            EgilClient(tenant_id="kommun-a", source_id="nothing-yet"),
        ]
    )
    assert problems == {"kommun-a:nothing-yet": "no API key and no client certificate registered"}
    assert registry.by_api_key("old") is None
    assert registry.by_api_key("new").source_id == "egil"  # type: ignore[union-attr]
    assert registry.by_pin(P1).source_id == "ad-2"  # type: ignore[union-attr]
    assert registry.limiter(registry.by_api_key("new")) is limiter  # the same rate: its bucket is kept  # type: ignore[arg-type]
    await registry.set_sources([])
    assert registry.by_api_key("new") is None
    assert registry.by_pin(P1) is None


def test_pins_come_from_federation_metadata(tmp_path: Path) -> None:
    path = write_clients(
        tmp_path,
        [{"tenant_id": "gronkoping", "source_id": "egil", "federation_entity_id": "https://egil.gronkoping.se"}],
    )
    registry = ClientRegistry(load_sources(path), federation_pins=load_federation_pins(EGIL_METADATA))
    client = registry.by_pin("SzLHjE79PlF0YQ4uFVu0z6mnBdsbFo25TogfUV372qg=")
    assert client is not None
    assert client.tenant_id == "gronkoping"
    # The vendor's server entry has server pins, not client pins: they never let anyone in.
    assert registry.by_pin("LSL2kIUvDIw6poLb5fy7D6Beh+O61pceSeQtTHIEhs8=") is None


def test_federation_pins_only_sha256_client_pins() -> None:
    metadata = {
        "entities": [
            {
                "entity_id": "a",
                "clients": [{"pins": [{"alg": "sha256", "digest": "x="}, {"alg": "md5", "digest": "y"}]}],
            },
            {"entity_id": "b", "servers": [{"pins": [{"alg": "sha256", "digest": "z="}]}]},
        ]
    }
    assert federation_client_pins(json.loads(json.dumps(metadata))) == {"a": ("x=",)}


def certificate(*, days: int = 365) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "egil-client")])
    now = datetime.now(UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=2))
        .not_valid_after(now + timedelta(days=days))
        .sign(key, hashes.SHA256())
    )


def pem_of(cert: x509.Certificate) -> str:
    return cert.public_bytes(Encoding.PEM).decode()


async def test_a_certificate_registered_whole_counts_by_its_pin_and_is_handed_to_tls() -> None:
    """Issue 19: the certificate itself (PEM) can be registered; its pin lets the client in and the receiver's
    TLS is told of it (a trust anchor), whenever the clients change."""
    first, second = pem_of(certificate()), pem_of(certificate())
    registry = ClientRegistry([EgilClient(tenant_id="kommun-a", source_id="egil", client_certificates=(first,))])
    told: list[list[str]] = []
    registry.watch_certificates(told.append)
    assert registry.by_pin(spki_sha256_pin(first.encode())).source_id == "egil"  # type: ignore[union-attr]
    await registry.set_sources(
        [EgilClient(tenant_id="kommun-a", source_id="egil", client_certificates=(first, "\n" + second + "\n\n"))]
    )
    assert told == [[first], [first, second]]  # kept in one canonical form (stripped, one final newline)
    assert registry.by_pin(spki_sha256_pin(second.encode())) is not None


def test_registered_certificates_are_checked_by_position_never_quoted() -> None:
    good = pem_of(certificate())
    for bad in ("-----BEGIN CERTIFICATE-----\nKarin Sundberg\n-----END CERTIFICATE-----\n", good + good):
        with pytest.raises(ValidationError) as error:
            EgilClient(tenant_id="kommun-a", source_id="egil", client_certificates=(good, bad))
        [message] = [e["msg"] for e in error.value.errors()]  # what the admin and the registry show
        assert "client_certificates[1] is not" in message
        assert "Karin" not in message


async def test_a_client_requiring_certificate_and_key_is_served_only_with_both_registered() -> None:
    pin = spki_sha256_pin(pem_of(certificate()).encode())
    registry = ClientRegistry()
    problems = await registry.set_sources(
        [
            EgilClient(tenant_id="kommun-a", source_id="key-only", api_key_sha256=hash_key("k1"),
                       require_certificate_and_key=True),
            EgilClient(tenant_id="kommun-a", source_id="both", api_key_sha256=hash_key("k2"), client_pins=(pin,),
                       require_certificate_and_key=True),
        ]
    )  # fmt: skip
    assert problems == {
        "kommun-a:key-only": "a certificate and an API key are both required, but only one is registered"
    }
    assert registry.by_api_key("k1") is None
    assert registry.by_api_key("k2").source_id == "both"  # type: ignore[union-attr]


def test_a_certificate_a_proxy_passes_is_read_as_ingress_nginx_or_traefik_send_it() -> None:
    cert = certificate()
    pin = spki_sha256_pin(cert.public_bytes(Encoding.DER))
    assert pin_of_forwarded_certificate(quote(pem_of(cert))) == pin  # ingress-nginx: URL-encoded PEM
    der = base64.b64encode(cert.public_bytes(Encoding.DER)).decode()
    assert pin_of_forwarded_certificate(der) == pin  # Traefik: the PEM body without its armour
    with pytest.raises(ValueError, match="outside its validity"):
        pin_of_forwarded_certificate(quote(pem_of(certificate(days=-1))))
    for garbage in ("", "not a certificate", quote("-----BEGIN CERTIFICATE-----\nabc\n-----END CERTIFICATE-----")):
        with pytest.raises(ValueError, match="not a certificate"):
            pin_of_forwarded_certificate(garbage)


def test_trusted_proxies_are_addresses_or_networks() -> None:
    settings = EgilReceiverSettings(egil_trusted_proxies="10.0.0.0/8, 192.0.2.1,")
    assert proxy_list(settings.egil_trusted_proxies) == ["10.0.0.0/8", "192.0.2.1"]
    with pytest.raises(ValidationError, match="not an IP address or network"):
        EgilReceiverSettings(egil_trusted_proxies="10.0.0.0/8,ingress.example")


def test_the_api_key_port_needs_tls() -> None:
    with pytest.raises(ValidationError, match="egil_api_key_port needs TLS"):
        EgilReceiverSettings(egil_api_key_port=8444)
