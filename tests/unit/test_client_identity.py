"""A client certificate and key given in the admin: checked to belong together, described by pin and expiry
(libs/skolsynk/tls.py)."""

from __future__ import annotations

import ssl

import pytest
import trustme
from cryptography.hazmat.primitives import serialization

from skolsynk.tls import client_identity, load_client_identity, spki_sha256_pin


@pytest.fixture
def pair() -> tuple[str, str, str]:
    cert = trustme.CA().issue_cert("kommun.skolsynk.example")
    pem = cert.cert_chain_pems[0].bytes()
    return pem.decode(), cert.private_key_pem.bytes().decode(), spki_sha256_pin(pem)


def test_a_matching_pair_gives_its_pin_and_expiry(pair: tuple[str, str, str]) -> None:
    certificate, key, pin = pair
    identity = client_identity(certificate, key)
    assert identity.pin == pin
    assert identity.not_after.tzinfo is not None


def test_a_key_of_another_certificate_is_refused(pair: tuple[str, str, str]) -> None:
    other = trustme.CA().issue_cert("annan.skolsynk.example").private_key_pem.bytes().decode()
    with pytest.raises(ValueError, match="does not belong"):
        client_identity(pair[0], other)


def test_an_encrypted_key_and_garbage_are_refused_without_quoting_them(pair: tuple[str, str, str]) -> None:
    certificate, key, _ = pair
    locked = serialization.load_pem_private_key(key.encode(), password=None).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.BestAvailableEncryption(b"x")
    )
    with pytest.raises(ValueError, match="encrypted") as error:
        client_identity(certificate, locked.decode())
    assert "PRIVATE KEY" not in str(error.value)
    with pytest.raises(ValueError, match="not a PEM certificate"):
        client_identity("inte ett certifikat", key)
    with pytest.raises(ValueError, match="not a PEM private key"):
        client_identity(certificate, "-----BEGIN PRIVATE KEY-----\nåäö\n-----END PRIVATE KEY-----\n")


def test_a_pair_held_in_memory_loads_into_a_tls_context(pair: tuple[str, str, str]) -> None:
    context = ssl.create_default_context()
    load_client_identity(context, pair[0], pair[1])  # no error: loaded (and the temporary files are gone)
