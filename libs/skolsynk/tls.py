"""TLS helpers shared by the services that speak mutual TLS (the EGIL receiver, the dispatchers)."""

from __future__ import annotations

import base64
import hashlib

from cryptography import x509
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
