"""HTTP client for Microsoft Graph (v1.0) of one tenant: OAuth2 client credentials against Entra ID,
opaque ``@odata.nextLink`` / ``@odata.deltaLink`` paging, and retries (stamina) of 429/503/504 (and other
5xx, timeouts, connection errors) that honour ``Retry-After`` in whole or fractional seconds (or an HTTP
date); without the header the wait is stamina's exponential backoff with jitter.

Errors leave as :class:`GraphReadError` with a short reason (``http_500``, ``invalid_client``,
``Authorization_RequestDenied``, ``timeout`` ...), never a response body: bodies may hold personal data.
An expired delta token (``syncStateNotFound``, ``resyncRequired``, ``410 Gone``) is
:class:`DeltaExpired`.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp
import stamina
from yarl import URL

from graph_connector.tenants import TenantConfig, secret
from skolsynk.logging import get_logger

log = get_logger(__name__)

#: A token is renewed this long before it expires (at most half its lifetime).
TOKEN_RENEW_MARGIN_SECONDS = 300.0
#: Statuses that mean "slow down / try again": Retry-After is honoured on these.
THROTTLE_STATUSES = frozenset({429, 503, 504})
#: Graph error codes of a delta token that can no longer be used: start again with a full round.
EXPIRED_DELTA_CODES = frozenset({"syncstatenotfound", "resyncrequired", "syncstateinvalid", "fullsyncrequired"})
_SAFE_CODE = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,59}$")


class GraphReadError(Exception):
    """A read that failed for good (after retries, or not retryable). ``code`` is safe to log and publish."""

    def __init__(self, code: str) -> None:
        self.code = code
        super().__init__(code)


class DeltaExpired(Exception):
    """The delta token is no longer valid: a full resync is needed. ``location`` is Graph's fresh
    initial delta URL when it sent one (410 Gone)."""

    def __init__(self, code: str, location: str | None = None) -> None:
        self.code = code
        self.location = location
        super().__init__(code)


class _Retryable(Exception):
    """A transient answer: retried, after ``retry_after`` seconds when the server said so."""

    def __init__(self, status: int, retry_after: float | None) -> None:
        self.status = status
        self.retry_after = retry_after
        super().__init__(f"http_{status}")


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 5
    timeout_seconds: float = 300.0
    wait_initial_seconds: float = 0.5
    wait_max_seconds: float = 30.0
    #: A Retry-After longer than this is cut to it (a request asking for an hour would stall the run).
    max_retry_after_seconds: float = 120.0


def parse_retry_after(value: str | None, *, now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> float | None:
    """``Retry-After`` as seconds: integer or fractional delta-seconds (Graph sends ``2.128``) or an
    HTTP date; ``None`` when absent or unreadable (the caller then backs off exponentially)."""
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if seconds == seconds and seconds != float("inf") else None
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now()).total_seconds())


def _error_code(body: Any, status: int) -> str:
    """Graph's ``error.code`` when it is a plain identifier, else ``http_<status>``."""
    error = body.get("error") if isinstance(body, Mapping) else None
    code = error.get("code") if isinstance(error, Mapping) else None
    if isinstance(code, str) and _SAFE_CODE.match(code):
        return code
    return f"http_{status}"


def _token_error_code(body: Any, status: int) -> str:
    """Entra's ``error`` (``invalid_client`` ...); an unknown directory is ``tenant_not_found``."""
    if isinstance(body, Mapping):
        codes = body.get("error_codes")
        if isinstance(codes, list) and 90002 in codes:
            return "tenant_not_found"
        error = body.get("error")
        if isinstance(error, str) and _SAFE_CODE.match(error):
            return error
    return f"token_http_{status}"


@dataclass
class DeltaRound:
    """Every entry of one delta round (in order, replays included) and the link for the next round."""

    entries: list[Any] = field(default_factory=list)
    delta_link: str = ""
    pages: int = 0


class GraphClient:
    """Graph for one tenant. Create, :meth:`start` (inside the event loop), use, :meth:`close`."""

    def __init__(
        self,
        tenant: TenantConfig,
        *,
        environ: Mapping[str, str] | None = None,
        request_timeout_seconds: float = 30.0,
        retry: RetryPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
        on_throttled: Callable[[int], None] | None = None,
    ) -> None:
        self.tenant = tenant
        self._timeout = aiohttp.ClientTimeout(total=request_timeout_seconds)
        self.retry = retry or RetryPolicy()
        self._clock = clock
        self._on_throttled = on_throttled
        self._session: aiohttp.ClientSession | None = None
        self._token: str | None = None
        self._token_renew_at = 0.0
        self._token_lock = asyncio.Lock()
        self.tokens_fetched = 0
        self.base_url = tenant.graph_base_url.rstrip("/")
        self._origin = URL(self.base_url).origin()
        # Resolve the secret now, so a missing variable fails at start-up and not at the first run.
        self._client_secret = secret(tenant.client_secret_env, environ)

    async def start(self) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout, raise_for_status=False)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> GraphClient:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("the client is not started")
        return self._session

    # ------------------------------------------------------------------------------------------
    # authentication

    async def _bearer(self, *, force: bool = False) -> str:
        async with self._token_lock:
            if not force and self._token is not None and self._clock() < self._token_renew_at:
                return self._token
            form = {
                "grant_type": "client_credentials",
                "client_id": self.tenant.client_id,
                "client_secret": self._client_secret,
                "scope": self.tenant.scope,
            }
            async with self.session.post(self.tenant.resolved_token_url, data=form) as response:
                if response.status == 429 or response.status >= 500:
                    self._throttled(response.status)
                    raise _Retryable(response.status, parse_retry_after(response.headers.get("Retry-After")))
                try:
                    body = await response.json(content_type=None)
                except ValueError:
                    body = None
                if response.status != 200:
                    raise GraphReadError(_token_error_code(body, response.status))
            token = body.get("access_token") if isinstance(body, dict) else None
            if not isinstance(token, str) or not token:
                raise GraphReadError("token_missing")
            try:
                lifetime = float(body.get("expires_in", 3599))
            except (TypeError, ValueError):
                lifetime = 3599.0
            self._token = token
            self._token_renew_at = self._clock() + max(0.0, lifetime - min(TOKEN_RENEW_MARGIN_SECONDS, lifetime / 2))
            self.tokens_fetched += 1
            log.info("graph_token_fetched", tenant_id=self.tenant.tenant_id, expires_in=lifetime)
            return token

    def _throttled(self, status: int) -> None:
        if self._on_throttled is not None and status in THROTTLE_STATUSES:
            self._on_throttled(status)

    # ------------------------------------------------------------------------------------------
    # requests

    def url(self, path_or_link: str) -> URL:
        """An absolute link (``@odata.nextLink``, ``@odata.deltaLink``) as it is, opaque; a path below the
        Graph base URL otherwise. A link to another host is refused: it would receive the token."""
        if path_or_link.startswith(("http://", "https://")):
            url = URL(path_or_link, encoded=True)
            if url.origin() != self._origin:
                raise GraphReadError("foreign_link")
            return url
        return URL(f"{self.base_url}/{path_or_link.lstrip('/')}")

    async def _get_once(self, url: URL, params: Mapping[str, str] | None, prefer: str | None) -> Any:
        refreshed = False
        while True:
            headers = {"Accept": "application/json", "Authorization": f"Bearer {await self._bearer(force=refreshed)}"}
            if prefer:
                headers["Prefer"] = prefer
            async with self.session.get(url, params=params, headers=headers) as response:
                status = response.status
                if status == 200:
                    try:
                        return await response.json(content_type=None)
                    except ValueError as error:
                        raise GraphReadError("invalid_json") from error
                try:
                    body = await response.json(content_type=None)
                except ValueError:
                    body = None
                code = _error_code(body, status)
                if status == 401 and not refreshed:
                    # InvalidAuthenticationToken: the token expired early or was revoked; a new one, once.
                    refreshed = True
                    continue
                if status == 410:
                    raise DeltaExpired(code if code != "http_410" else "gone", response.headers.get("Location"))
                if status < 500 and status != 429 and code.lower() in EXPIRED_DELTA_CODES:
                    raise DeltaExpired(code)
                if status in THROTTLE_STATUSES:
                    self._throttled(status)
                    raise _Retryable(status, parse_retry_after(response.headers.get("Retry-After")))
                if status >= 500 or status == 408:
                    raise _Retryable(status, parse_retry_after(response.headers.get("Retry-After")))
                raise GraphReadError("http_404" if status == 404 else code)

    def _backoff(self, error: Exception) -> bool | float:
        if isinstance(error, _Retryable):
            if error.retry_after is not None:
                return min(error.retry_after, self.retry.max_retry_after_seconds)
            return True
        return isinstance(error, TimeoutError | aiohttp.ClientConnectionError | aiohttp.ClientPayloadError)

    async def get_json(
        self, path_or_link: str, params: Mapping[str, str] | None = None, *, prefer: str | None = None
    ) -> Any:
        """GET with retries; :class:`GraphReadError` (or :class:`DeltaExpired`) when it fails for good."""
        url = self.url(path_or_link)
        policy = self.retry
        try:
            async for attempt in stamina.retry_context(
                on=self._backoff,
                attempts=policy.attempts,
                timeout=policy.timeout_seconds,
                wait_initial=policy.wait_initial_seconds,
                wait_max=policy.wait_max_seconds,
                wait_jitter=min(1.0, policy.wait_initial_seconds),
            ):
                with attempt:
                    return await self._get_once(url, params, prefer)
        except _Retryable as error:
            raise GraphReadError(f"http_{error.status}") from error
        except TimeoutError as error:
            raise GraphReadError("timeout") from error
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as error:
            raise GraphReadError("connection") from error
        raise AssertionError("unreachable")  # pragma: no cover

    async def get_object(self, path: str, params: Mapping[str, str] | None = None) -> dict[str, Any] | None:
        """One object; ``None`` when Graph answers 404 (it is gone)."""
        try:
            body = await self.get_json(path, params)
        except GraphReadError as error:
            if error.code == "http_404":
                return None
            raise
        if not isinstance(body, dict):
            raise GraphReadError("invalid_envelope")
        return body

    async def pages(self, path: str, params: Mapping[str, str] | None = None) -> AsyncIterator[list[Any]]:
        """The ``value`` of every page of a listing, following ``@odata.nextLink`` (absolute, opaque: the
        query options are in it, so they go with the first request only)."""
        link: str | None = path
        query: Mapping[str, str] | None = params
        while link is not None:
            body = await self.get_json(link, query)
            if not isinstance(body, dict) or not isinstance(body.get("value"), list):
                raise GraphReadError("invalid_envelope")
            yield body["value"]
            following = body.get("@odata.nextLink")
            if following is not None and not isinstance(following, str):
                raise GraphReadError("invalid_next_link")
            link, query = following, None

    async def list_all(self, path: str, params: Mapping[str, str] | None = None) -> list[Any]:
        items: list[Any] = []
        async for page in self.pages(path, params):
            items += page
        return items

    async def delta_round(self, start: str, params: Mapping[str, str] | None = None) -> DeltaRound:
        """One delta round: from ``start`` (a resource's ``/delta`` path for the initial round, with
        ``params``; or a stored ``@odata.deltaLink``), through every ``@odata.nextLink`` (pages may be
        empty), until a page carries ``@odata.deltaLink``."""
        prefer = f"odata.maxpagesize={self.tenant.page_size}"
        result = DeltaRound()
        link: str = start
        query: Mapping[str, str] | None = params
        while True:
            body = await self.get_json(link, query, prefer=prefer)
            result.pages += 1
            if not isinstance(body, dict) or not isinstance(body.get("value"), list):
                raise GraphReadError("invalid_envelope")
            result.entries += body["value"]
            delta_link, next_link = body.get("@odata.deltaLink"), body.get("@odata.nextLink")
            if isinstance(delta_link, str) and delta_link:
                result.delta_link = delta_link
                return result
            if not isinstance(next_link, str) or not next_link:
                raise GraphReadError("delta_without_link")
            link, query = next_link, None
