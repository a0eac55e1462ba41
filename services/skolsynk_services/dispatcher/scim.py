"""Pushing EGIL SCIM requests to a vendor's server, as the reference EGIL client does.

* create: ``POST /{Type}`` (the id is the externalId); a 409 means it exists: ``PUT`` instead;
* replace: ``PUT /{Type}/{id}`` with the whole object; a 404 means it is gone: ``POST`` instead;
* delete: ``DELETE /{Type}/{id}``; a 404 means it is already gone, which is what we wanted.

Authentication: mutual TLS (client certificate and key, the CA of the vendor's server, optionally
the server's public-key pin, as in Skolfederation metadata) and/or an API key header. Requests are
limited per vendor (a semaphore for concurrency, a token bucket via aiolimiter for the rate).
5xx, 429, timeouts and connection errors are retried with exponential backoff and jitter
(stamina); if the vendor stays unavailable the message goes back to the queue's retry ladder
(:class:`VendorUnavailable`). Any other 4xx is permanent (:class:`VendorRejected`): the message is
dead-lettered with the vendor's error text (scrubbed of personal data).
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from collections.abc import Mapping
from typing import Any

import aiohttp
import stamina
from aiolimiter import AsyncLimiter

from skolsynk.adapters.egil import EgilResourceType
from skolsynk.catalogue import ScimDelivery
from skolsynk.logging import get_logger, scrub
from skolsynk.messaging import PermanentError, TransientError
from skolsynk.storage.vendor_credentials import PairCredentials
from skolsynk.tls import load_client_identity, spki_sha256_pin
from skolsynk_services.dispatcher.metrics import DispatcherMetrics

log = get_logger(__name__)

MAX_VENDOR_TEXT = 300


#: The failure code of an organiser without credentials at a vendor whose entry has none of its own.
NO_CREDENTIALS = "no_credentials"
#: The organiser has credentials of its own at the vendor that cannot be used (sealed with another secrets
#: key, damaged, or a certificate TLS refuses to load): it waits, never sent with the catalogue entry's.
OWN_CREDENTIALS_UNUSABLE = "own_credentials_unusable"


class VendorUnavailable(TransientError):
    """The vendor did not answer usefully (5xx, 429, timeout, connection refused). ``code`` says which,
    without anything the vendor wrote: ``http_503``, ``http_429``, ``timeout``, ``connection``, ``tls``."""

    def __init__(self, message: str, *, code: str = "unavailable") -> None:
        super().__init__(message)
        self.code = code


def failure_code(error: BaseException) -> str:
    """A connection failure as a short code (``timeout``, ``tls``, ``connection``)."""
    if isinstance(error, TimeoutError):
        return "timeout"
    if isinstance(error, aiohttp.ClientSSLError | aiohttp.ServerFingerprintMismatch):
        return "tls"
    return "connection"


class VendorRejected(PermanentError):
    """The vendor refused the request for good (4xx other than the 404/409 we recover from)."""

    def __init__(self, status: int, text: str) -> None:
        self.status = status
        super().__init__(f"vendor answered {status}: {scrub(text)[:MAX_VENDOR_TEXT]}")


class PinMismatch(PermanentError):
    """The vendor's server certificate does not carry the pinned public key."""


def ssl_context_for(delivery: ScimDelivery, identity: PairCredentials | None = None) -> ssl.SSLContext | None:
    """The TLS context of requests to the vendor: its CA, and the client certificate of the pair
    (``identity``) or else of the catalogue entry."""
    if not delivery.base_url.startswith("https://"):
        return None
    auth = delivery.auth
    context = ssl.create_default_context(cafile=str(auth.ca_file) if auth.ca_file else None, cadata=auth.ca_pem)
    if identity is not None and identity.certificate_pem and identity.key_pem:
        load_client_identity(context, identity.certificate_pem, identity.key_pem)
    elif auth.client_cert_file and auth.client_key_file:
        context.load_cert_chain(str(auth.client_cert_file), str(auth.client_key_file))
    return context


class PinnedConnector(aiohttp.TCPConnector):
    """Checks the vendor's server certificate against the configured public-key pin on every new
    connection, before any request is sent on it (CA verification still applies)."""

    def __init__(self, *, pin: str | None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._pin = pin

    async def _wrap_create_connection(self, *args: Any, **kwargs: Any) -> Any:
        transport, protocol = await super()._wrap_create_connection(*args, **kwargs)
        if self._pin is not None:
            ssl_object = transport.get_extra_info("ssl_object")
            der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
            if der is None or spki_sha256_pin(der) != self._pin:
                transport.close()
                raise PinMismatch("the vendor's server certificate does not match the configured public-key pin")
        return transport, protocol


class EgilScimClient:
    def __init__(
        self,
        delivery: ScimDelivery,
        *,
        api_key: str | None,
        retry_timeout_seconds: float = 20.0,
        metrics: DispatcherMetrics | None = None,
        vendor_id: str = "unknown",
    ) -> None:
        self.metrics = metrics
        self.vendor_id = vendor_id
        self.delivery = delivery
        self._api_key = api_key
        self._retry_timeout = retry_timeout_seconds
        #: tenant -> its own API key at this vendor (``vendor_credentials``; refreshed by the vendor pool).
        self.tenant_keys: dict[str, str] = {}
        #: tenant -> (fingerprint of its own client certificate, the session that presents it).
        self._tenant_sessions: dict[str, tuple[str, aiohttp.ClientSession]] = {}
        #: Sessions of rotated or removed certificates, closed once their requests can have ended.
        self._retired: list[tuple[float, aiohttp.ClientSession]] = []
        #: Organisers whose own credentials cannot be used: nothing is sent for them.
        self.unusable_tenants: set[str] = set()
        self._limiter = AsyncLimiter(delivery.burst, delivery.burst / delivery.rate_per_second)
        self._slots = asyncio.Semaphore(delivery.concurrency)
        self._session: aiohttp.ClientSession | None = None

    def _new_session(self, identity: PairCredentials | None = None) -> aiohttp.ClientSession:
        """A session to the vendor: the catalogue entry's API key and certificate, or (``identity``) a
        pair's own certificate, without the catalogue entry's key (the certificate names the tenant)."""
        headers = {"Content-Type": "application/scim+json", "Accept": "application/scim+json"}
        if self._api_key is not None and identity is None:
            headers[self.delivery.auth.api_key_header] = self._api_key
        return aiohttp.ClientSession(
            base_url=self.delivery.base_url.rstrip("/") + "/",
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=self.delivery.timeout_seconds),
            connector=PinnedConnector(
                pin=self.delivery.auth.server_pin_sha256,
                ssl=ssl_context_for(self.delivery, identity) or False,
                limit=self.delivery.concurrency,
            ),
        )

    async def start(self) -> None:
        self._session = self._new_session()

    def _has_own_credentials(self, tenant_id: str | None) -> bool:
        return tenant_id is not None and (tenant_id in self.tenant_keys or tenant_id in self._tenant_sessions)

    @property
    def own_tenants(self) -> set[str]:
        """The organisers with credentials of their own at this vendor (a tenant of their own there), those
        whose credentials cannot be used included."""
        return set(self.tenant_keys) | set(self._tenant_sessions) | self.unusable_tenants

    async def use_credentials(self, credentials: Mapping[str, PairCredentials]) -> None:
        """The organisers' own credentials at this vendor (``vendor_credentials``): API keys go in each
        request's header; a pair with its own client certificate gets its own session (TLS presents the
        certificate per connection). A rotated certificate gets a new session; the old one is closed once
        its requests can have ended."""
        self.tenant_keys = {t: c.api_key for t, c in credentials.items() if c.api_key}
        unusable = {t for t, c in credentials.items() if c.unusable}
        now = time.monotonic()
        for tenant, (fingerprint, session) in list(self._tenant_sessions.items()):
            wanted = credentials.get(tenant)
            if wanted is None or wanted.identity_fingerprint != fingerprint:
                del self._tenant_sessions[tenant]
                self._retired.append((now, session))
        for tenant, wanted in credentials.items():
            own = wanted.identity_fingerprint
            if own is None or tenant in self._tenant_sessions:
                continue
            try:
                self._tenant_sessions[tenant] = (own, self._new_session(wanted))
            except (ssl.SSLError, ValueError):
                unusable.add(tenant)  # TLS refuses the certificate or key: logged below, once
        for tenant in sorted(unusable - self.unusable_tenants):
            log.warning("pair_credentials_unusable", tenant_id=tenant, vendor_id=self.vendor_id)
        self.unusable_tenants = unusable
        grace = self.delivery.timeout_seconds + 5
        for retired_at, session in [r for r in self._retired if now - r[0] > grace]:
            self._retired.remove((retired_at, session))
            await session.close()

    async def close(self) -> None:
        sessions = [s for _, s in self._tenant_sessions.values()] + [s for _, s in self._retired]
        self._tenant_sessions.clear()
        self._retired.clear()
        if self._session is not None:
            sessions.append(self._session)
            self._session = None
        for session in sessions:
            await session.close()

    def _headers(self, tenant_id: str | None) -> dict[str, str] | None:
        """The organiser's own API key, where the pair has one (:attr:`tenant_keys`): its data lands in its
        own tenant at the vendor. Otherwise the session's (the catalogue entry's key)."""
        key = self.tenant_keys.get(tenant_id) if tenant_id is not None else None
        return {self.delivery.auth.api_key_header: key} if key else None

    async def _once(
        self, method: str, path: str, body: dict[str, Any] | None, tenant_id: str | None = None
    ) -> tuple[int, str]:
        if self._session is None:
            raise RuntimeError("the SCIM client is not started")
        own = self._tenant_sessions.get(tenant_id) if tenant_id is not None else None
        session = own[1] if own is not None else self._session
        async with self._slots, self._limiter:
            started = time.monotonic()
            try:
                async with session.request(
                    method,
                    path,
                    data=json.dumps(body).encode() if body is not None else None,
                    headers=self._headers(tenant_id),
                ) as response:
                    text = await response.text()
                    status = response.status
            except (aiohttp.ClientConnectionError, TimeoutError) as error:
                self._observe(method, "error", started)
                raise VendorUnavailable(
                    f"{method} {path.split('/')[0]}: {type(error).__name__}", code=failure_code(error)
                ) from error
            self._observe(method, f"{status // 100}xx", started)
        if status == 429 or status >= 500:
            raise VendorUnavailable(f"{method} {path.split('/')[0]}: vendor answered {status}", code=f"http_{status}")
        return status, text

    def _observe(self, method: str, status_class: str, started: float) -> None:
        if self.metrics is not None:
            self.metrics.vendor_requests.labels(self.vendor_id, method, status_class).inc()
            self.metrics.vendor_request_seconds.labels(self.vendor_id, method).observe(time.monotonic() - started)

    async def _request(
        self, method: str, path: str, body: dict[str, Any] | None = None, tenant_id: str | None = None
    ) -> tuple[int, str]:
        if tenant_id is not None and tenant_id in self.unusable_tenants:
            # Its own credentials exist but cannot be used: never fall back to the catalogue entry's (its data
            # would land in another tenant at the vendor). Its changes wait until an operator sets them again.
            raise VendorUnavailable(
                f"{method} {path.split('/')[0]}: own credentials unusable", code=OWN_CREDENTIALS_UNUSABLE
            )
        if not self.delivery.auth.shared_credential and not self._has_own_credentials(tenant_id):
            # The vendor's entry has no credential of its own and this organiser none yet: nothing to send
            # with (not retried here). Its changes wait on the retry ladder until an operator sets them.
            raise VendorUnavailable(f"{method} {path.split('/')[0]}: no credentials", code=NO_CREDENTIALS)
        async for attempt in stamina.retry_context(
            on=VendorUnavailable, attempts=None, timeout=self._retry_timeout, wait_initial=0.2, wait_max=5.0
        ):
            with attempt:
                return await self._once(method, path, body, tenant_id)
        raise AssertionError("unreachable")  # pragma: no cover

    async def upsert(
        self,
        egil_type: EgilResourceType,
        resource_id: str,
        body: dict[str, Any],
        *,
        exists: bool,
        tenant_id: str | None = None,
    ) -> str:
        """Create or replace (as ``tenant_id``'s pair where it has its own key); "created" or "replaced"."""
        collection, item = egil_type.endpoint, f"{egil_type.endpoint}/{resource_id}"
        if exists:
            status, text = await self._request("PUT", item, body, tenant_id)
            if status == 404:
                status, text = await self._request("POST", collection, body, tenant_id)
                return self._expect(status, text, {201, 200}, "created")
            return self._expect(status, text, {200, 204}, "replaced")
        status, text = await self._request("POST", collection, body, tenant_id)
        if status == 409:
            status, text = await self._request("PUT", item, body, tenant_id)
            return self._expect(status, text, {200, 204}, "replaced")
        return self._expect(status, text, {201, 200}, "created")

    async def delete(self, egil_type: EgilResourceType, resource_id: str, *, tenant_id: str | None = None) -> str:
        status, text = await self._request("DELETE", f"{egil_type.endpoint}/{resource_id}", None, tenant_id)
        if status == 404:
            return "absent"
        return self._expect(status, text, {200, 204}, "deleted")

    async def list_ids(self, egil_type: EgilResourceType, *, tenant_id: str | None = None) -> set[str]:
        """Every id the vendor holds of a type (``GET /{Type}``), following ``startIndex`` as the
        reference client does; a server that ignores it (and answers everything at once) ends the
        paging when a page brings nothing new."""
        ids: set[str] = set()
        start = 1
        while True:
            path = egil_type.endpoint if start == 1 else f"{egil_type.endpoint}?startIndex={start}"
            status, text = await self._request("GET", path, None, tenant_id)
            if status != 200:
                raise VendorRejected(status, text)
            try:
                page = json.loads(text)
                resources = page.get("Resources") or []
                total = int(page.get("totalResults", len(resources)))
                found = {str(r["id"] if "id" in r else r["externalId"]) for r in resources}
            except (ValueError, TypeError, KeyError, AttributeError) as error:
                raise VendorRejected(status, f"the {egil_type.endpoint} list is not a SCIM ListResponse") from error
            new = found - ids
            ids |= found
            if not new or len(ids) >= total:
                return ids
            start = len(ids) + 1

    @staticmethod
    def _expect(status: int, text: str, ok: set[int], outcome: str) -> str:
        if status in ok:
            return outcome
        raise VendorRejected(status, text)
