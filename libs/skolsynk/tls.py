"""TLS helpers shared by the services that speak mutual TLS (the EGIL receiver, the dispatchers)."""

from __future__ import annotations

import base64
import hashlib
import os
import ssl
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat


def spki_sha256_pin(certificate: bytes) -> str:
    """Base64 of SHA-256 over the certificate's DER SubjectPublicKeyInfo: the public-key pin used by
    Skolfederation metadata (it survives certificate renewal with the same key). Accepts PEM (the
    first certificate) or DER."""
    if certificate.lstrip().startswith(b"-----BEGIN"):
        parsed = x509.load_pem_x509_certificate(certificate)
    else:
        parsed = x509.load_der_x509_certificate(certificate)
    spki = parsed.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(spki).digest()).decode("ascii")


def first_certificate_pem(certificate: bytes) -> str:
    """The first certificate of a PEM text (a chain, or one with comments around it), alone and in canonical
    PEM. ``ValueError`` when there is none."""
    return x509.load_pem_x509_certificate(certificate).public_bytes(Encoding.PEM).decode("ascii")


@dataclass(frozen=True)
class ClientIdentity:
    """What may be shown of a client certificate: its public-key pin and when it expires (never the key)."""

    pin: str
    not_after: datetime


def client_identity(certificate_pem: str, key_pem: str) -> ClientIdentity:
    """Check that a PEM client certificate and an unencrypted PEM private key belong together; the
    certificate's pin and expiry. ``ValueError`` says what is wrong (never quoting either)."""
    try:
        certificate = x509.load_pem_x509_certificate(certificate_pem.encode("ascii"))
    except (ValueError, UnicodeEncodeError):
        raise ValueError("the client certificate is not a PEM certificate") from None
    try:
        key = serialization.load_pem_private_key(key_pem.encode("ascii"), password=None)
    except TypeError:
        raise ValueError("the private key is encrypted: give it without a passphrase (it is stored sealed)") from None
    except (ValueError, UnicodeEncodeError):
        raise ValueError("the private key is not a PEM private key") from None
    spki = PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(Encoding.DER, spki) != certificate.public_key().public_bytes(Encoding.DER, spki):
        raise ValueError("the private key does not belong to the client certificate")
    return ClientIdentity(spki_sha256_pin(certificate_pem.encode("ascii")), certificate.not_valid_after_utc)


def load_client_identity(context: ssl.SSLContext, certificate_pem: str, key_pem: str) -> None:
    """Load a client certificate and key held in memory into ``context``. :mod:`ssl` reads them only from
    files: they are written to a private temporary directory (mode 0700) and removed right after."""
    with tempfile.TemporaryDirectory(prefix="skolsynk-identity-") as folder:
        cert_file, key_file = Path(folder) / "cert.pem", Path(folder) / "key.pem"
        for path, text in ((cert_file, certificate_pem), (key_file, key_pem)):
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "w", encoding="ascii") as handle:
                handle.write(text)
        context.load_cert_chain(str(cert_file), str(key_file))
