"""Who is calling, and every refusal told: which client a request is (its certificate's pin, its API key, or
both), and, when it is none, one ``egil_client_refused`` log line and one count of
``skolsynk_egil_refusals_total`` with the reason (a closed set), the presented pin and the peer's address.
Never the API key, a header's or the body's value (a pin is a hash of a public key: not personal data).

The certificate comes from the receiver's own TLS or, behind a TLS-terminating proxy that asks for client
certificates without checking them (ingress-nginx ``optional_no_ca``), from the header the proxy passes it in,
believed only from the configured proxy addresses. Either way the pin lookup decides, never a CA alone.
"""

from __future__ import annotations

import base64
import binascii
import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from urllib.parse import unquote

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from skolsynk.logging import get_logger
from skolsynk.proxies import TrustedProxies
from skolsynk.tls import spki_sha256_pin
from skolsynk_services.egil_receiver.clients import ClientRegistry, EgilClient

log = get_logger(__name__)


class Refusal(StrEnum):
    """Why a client was not let in (the ``reason`` of the log line and of the metric)."""

    NO_CREDENTIALS = "no_credentials"
    UNKNOWN_PIN = "unknown_pin"
    UNKNOWN_API_KEY = "unknown_api_key"
    CREDENTIALS_MISMATCH = "credentials_mismatch"
    CERTIFICATE_AND_KEY_REQUIRED = "certificate_and_key_required"
    UNTRUSTED_PROXY = "untrusted_proxy"
    INVALID_CERTIFICATE = "invalid_certificate"
    RATE_LIMITED = "rate_limited"
    TLS_HANDSHAKE = "tls_handshake"


#: What the client is answered (status, SCIM error detail); the TLS refusal has no answer.
ANSWERS: dict[Refusal, tuple[int, str]] = {
    Refusal.NO_CREDENTIALS: (401, "a client certificate or an API key is required"),
    Refusal.UNKNOWN_PIN: (403, "the client certificate is not registered for any organiser"),
    Refusal.UNKNOWN_API_KEY: (403, "unknown API key"),
    Refusal.CREDENTIALS_MISMATCH: (403, "the client certificate and the API key are registered for different clients"),
    Refusal.CERTIFICATE_AND_KEY_REQUIRED: (403, "this client must present both its client certificate and its API key"),
    Refusal.UNTRUSTED_PROXY: (403, "a client certificate header is only accepted from a trusted proxy"),
    Refusal.INVALID_CERTIFICATE: (403, "the client certificate cannot be read or is not valid now"),
    Refusal.RATE_LIMITED: (429, "too many requests for this organiser"),
}


def identify(registry: ClientRegistry, pin: str | None, api_key: str | None) -> EgilClient | Refusal:
    """The client a request's credentials name, or why none. A registered certificate or a registered key
    lets its client in; both presented must name the same client; a client with
    ``require_certificate_and_key`` needs both. An unknown certificate next to a valid key is let in by the key
    (the EGIL client always presents its certificate); an unknown key is refused unless a registered
    certificate already names a client that needs no key."""
    if pin is None and not api_key:
        return Refusal.NO_CREDENTIALS
    by_pin = registry.by_pin(pin) if pin is not None else None
    by_key = registry.by_api_key(api_key) if api_key else None
    if by_pin is not None and by_key is not None:
        return by_pin if by_pin.key == by_key.key else Refusal.CREDENTIALS_MISMATCH
    if api_key and by_key is None:
        if by_pin is not None and not by_pin.require_certificate_and_key:
            return by_pin
        return Refusal.UNKNOWN_API_KEY
    client = by_pin or by_key
    if client is None:
        return Refusal.UNKNOWN_PIN
    if client.require_certificate_and_key:
        return Refusal.UNKNOWN_PIN if pin is not None and by_pin is None else Refusal.CERTIFICATE_AND_KEY_REQUIRED
    return client


def pin_of_forwarded_certificate(value: str, *, now: datetime | None = None) -> str:
    """The pin of a certificate a proxy passed in a header: URL-encoded PEM (ingress-nginx
    ``$ssl_client_escaped_cert``) or base64 DER (PEM without its armour, as Traefik passes it); the first
    certificate when several. ``ValueError`` when it cannot be read or is outside its validity (the proxy
    did not check it: ``optional_no_ca``)."""
    text = unquote(value).strip()
    try:
        if "-----BEGIN CERTIFICATE-----" in text:
            certificate = x509.load_pem_x509_certificate(text.encode("ascii"))
        else:
            first = text.split(",")[0]
            certificate = x509.load_der_x509_certificate(base64.b64decode("".join(first.split()), validate=True))
    except (ValueError, UnicodeEncodeError, binascii.Error):
        raise ValueError("not a certificate") from None
    now = now or datetime.now(UTC)
    if not certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc:
        raise ValueError("outside its validity")
    return spki_sha256_pin(certificate.public_bytes(Encoding.DER))


@functools.lru_cache(maxsize=256)
def _pin_of_peer(certificate: bytes) -> str:
    """The pin of a certificate TLS verified (DER), remembered: the EGIL client presents the same one on
    every request of a run (a key load and a hash each time otherwise)."""
    return spki_sha256_pin(certificate)


def proxy_list(value: str) -> list[str]:
    """The entries of a comma-separated list of addresses or CIDRs (as SKOLSYNK_ADMIN_TRUSTED_PROXIES)."""
    return [entry.strip() for entry in value.split(",") if entry.strip()]


@dataclass(frozen=True)
class Caller:
    """What a request presented: the pin of its certificate (None without one) and the peer's address."""

    pin: str | None
    peer: str | None


class Gate:
    """Finds a request's certificate pin (own TLS, or a trusted proxy's header) and logs and counts refusals."""

    def __init__(
        self,
        on_refused: Callable[[Refusal], None],
        *,
        certificate_header: str = "ssl-client-cert",
        trusted_proxies: Iterable[str] = (),
    ) -> None:
        self.on_refused = on_refused
        self.certificate_header = certificate_header
        self.proxies = TrustedProxies(trusted_proxies)

    def caller(self, request: web.Request) -> Caller | tuple[Caller, Refusal]:
        """The request's pin and peer, or a refusal (a certificate header from elsewhere than a trusted
        proxy, or one that cannot be read)."""
        transport = request.transport
        peername = transport.get_extra_info("peername") if transport is not None else None
        peer = str(peername[0]) if isinstance(peername, tuple | list) and peername else None
        forwarded = request.headers.get(self.certificate_header)
        if forwarded:
            if not self.proxies.trusts(peer):
                return Caller(None, peer), Refusal.UNTRUSTED_PROXY
            try:
                return Caller(pin_of_forwarded_certificate(forwarded), peer)
            except ValueError:
                return Caller(None, peer), Refusal.INVALID_CERTIFICATE
        ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
        certificate = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        return Caller(_pin_of_peer(certificate) if certificate else None, peer)

    def refuse(self, reason: Refusal, request: web.Request, caller: Caller, **ids: str | None) -> web.Response:
        """Log and count the refusal; the SCIM error the client gets. Through a trusted proxy the log also
        has the client's address as the proxy saw it (``X-Forwarded-For``, walked past trusted proxies)."""
        forwarded_for = self.proxies.client_address(request)  # the body may have been read: no clone
        self.refused(reason, pin=caller.pin, peer=caller.peer, forwarded_for=forwarded_for, **ids)
        status, detail = ANSWERS[reason]
        return web.json_response(
            {"schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"], "status": str(status), "detail": detail},
            status=status,
            content_type="application/scim+json",
        )

    def refused(self, reason: Refusal, **fields: str | None) -> None:
        self.on_refused(reason)
        log.warning("egil_client_refused", reason=reason.value, **{k: v for k, v in fields.items() if v is not None})
