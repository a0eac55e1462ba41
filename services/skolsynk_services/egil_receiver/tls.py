"""The receiver's own TLS: which client certificates get through the handshake, and every handshake it
refuses told.

Python's :mod:`ssl` has no verification callback: a client certificate gets through only if it chains to a
trust anchor of the serving context. So besides the client CA bundle (``SKOLSYNK_EGIL_CLIENT_CA_FILE``), each
certificate registered whole with a client (``client_certificates``) is loaded as a trust anchor of its own
(partial chains allowed, so a CA-issued leaf counts too, and a self-signed one needs no CA). Anchors are only
ever added while serving (OpenSSL cannot remove one); one that is no longer registered still gets through the
handshake and is then refused by the pin lookup, which is the authority (:mod:`egil_receiver.access`).

Client certificates are asked for (``CERT_OPTIONAL``: a client without one may use its API key) once there is
something to check them against (a CA bundle or a registered certificate); until then none is asked for, so
an API-key client that always presents a certificate (the EGIL client does) is not refused by the handshake.

An API-key client that presents a certificate this context cannot check (the EGIL client always presents
one once asked) is refused by the handshake; ``SKOLSYNK_EGIL_API_KEY_PORT`` serves the same endpoints on a
second port whose context asks for none (as Windermere's API-key listener), for such clients.

A refused handshake never reaches aiohttp (and asyncio reports it only in debug mode): the context's
``sslobject_class`` watches the handshake and reports the refusal with OpenSSL's reason. Which address it came
from is not known there (the TLS object works on memory buffers; asyncio keeps the connection to itself).
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Iterable
from pathlib import Path

from skolsynk.logging import get_logger

log = get_logger(__name__)

#: Errors that only mean "more bytes are needed": the handshake goes on.
_AGAIN = (ssl.SSLWantReadError, ssl.SSLWantWriteError, ssl.SSLSyscallError)


def handshake_error(error: ssl.SSLError) -> str:
    """OpenSSL's words for a refused handshake (fixed texts, never a value the client sent)."""
    message = getattr(error, "verify_message", None)
    return str(message or error.reason or type(error).__name__)


def server_context(
    cert_file: Path, key_file: Path | None, *, on_refused: Callable[[ssl.SSLError], None]
) -> ssl.SSLContext:
    """A server context (TLS 1.2 at least) that asks for no client certificate and reports every refused
    handshake to ``on_refused``."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(cert_file), str(key_file) if key_file else None)

    class WatchedSSLObject(ssl.SSLObject):
        def do_handshake(self) -> None:
            try:
                super().do_handshake()
            except _AGAIN:
                raise
            except ssl.SSLError as error:
                on_refused(error)
                raise

    context.sslobject_class = WatchedSSLObject
    return context


class ClientTrust:
    """The serving context and what it trusts; :meth:`update` with the registered certificates (PEM)."""

    def __init__(
        self,
        cert_file: Path,
        key_file: Path | None,
        *,
        client_ca_file: Path | None,
        on_refused: Callable[[ssl.SSLError], None],
    ) -> None:
        context = server_context(cert_file, key_file, on_refused=on_refused)
        context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
        if client_ca_file is not None:
            context.load_verify_locations(cafile=str(client_ca_file))
        self.context = context
        self.has_ca = client_ca_file is not None
        self._anchors: set[str] = set()
        self._registered = False
        self._apply_mode()

    def _apply_mode(self) -> None:
        asks = self.has_ca or self._registered
        self.context.verify_mode = ssl.CERT_OPTIONAL if asks else ssl.CERT_NONE

    def update(self, certificates: Iterable[str]) -> None:
        """Trust these registered certificates from the next handshake on."""
        current = list(dict.fromkeys(certificates))
        for pem in current:
            if pem in self._anchors:
                continue
            try:
                self.context.load_verify_locations(cadata=pem)
            except (ssl.SSLError, ValueError):  # checked when registered; never a reason to stop serving
                log.warning("egil_client_certificate_not_loaded")
                continue
            self._anchors.add(pem)
        self._registered = bool(current)
        self._apply_mode()
