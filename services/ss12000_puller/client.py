"""HTTP client for one SS 12000 source API: authentication (OAuth2 client credentials or a static API
key), paging with ``pageToken`` (filters on the first request only), and retries of 429, 5xx,
timeouts and connection errors with exponential backoff that honours ``Retry-After`` (stamina).

Errors leave as :class:`Ss12000ReadError` with a short code (``http_503``, ``timeout``, ...), never with
a response body: bodies may contain personal data.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote_plus

import aiohttp
import stamina

from skolsynk.logging import get_logger
from ss12000_puller.sources import SourceConfig, secret

log = get_logger(__name__)

#: A token is renewed this long before it expires (at most half its lifetime).
TOKEN_RENEW_MARGIN_SECONDS = 60.0


class Ss12000ReadError(Exception):
    """A read that failed for good (after retries, or not retryable). ``code`` is safe to log and publish."""

    def __init__(self, code: str) -> None:
        self.code = code
        super().__init__(code)


class _Retryable(Exception):
    """A transient answer (429, 5xx): retried, after ``retry_after`` seconds when the server said so."""

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
    #: A Retry-After longer than this is cut to it (a source asking for an hour would stall the run).
    max_retry_after_seconds: float = 120.0


def parse_retry_after(value: str | None, *, now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> float | None:
    """``Retry-After`` as seconds: delta-seconds or an HTTP date; ``None`` when absent or unreadable."""
    if not value:
        return None
    text = value.strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now()).total_seconds())


def basic_auth(user: str, password: str) -> str:
    """An HTTP Basic ``Authorization`` value (RFC 6749 2.3.1: both parts form-encoded first)."""
    pair = f"{quote_plus(user)}:{quote_plus(password)}".encode()
    return "Basic " + base64.b64encode(pair).decode("ascii")


def format_time(value: datetime) -> str:
    """RFC 3339 in UTC with ``Z`` (no ``+`` that a query string could turn into a space)."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Ss12000Client:
    """One source's API. Create, :meth:`start` (inside the event loop), use, :meth:`close`."""

    def __init__(
        self,
        source: SourceConfig,
        *,
        environ: Mapping[str, str] | None = None,
        request_timeout_seconds: float = 30.0,
        retry: RetryPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.source = source
        self._environ = environ
        self._timeout = aiohttp.ClientTimeout(total=request_timeout_seconds)
        self.retry = retry or RetryPolicy()
        self._clock = clock
        self._session: aiohttp.ClientSession | None = None
        self._token: str | None = None
        self._token_renew_at = 0.0
        self._token_lock = asyncio.Lock()
        self.tokens_fetched = 0
        # Resolve secrets now, so a missing variable fails at start-up and not at the first run.
        auth = source.auth
        self._client_secret = secret(auth.client_secret_env, environ) if auth.kind == "oauth2" else None
        self._api_key = secret(auth.api_key_env, environ) if auth.kind == "api_key" else None

    async def start(self) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout, raise_for_status=False)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> Ss12000Client:
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
            auth = self.source.auth
            if auth.token_url is None or auth.client_id is None or self._client_secret is None:
                raise Ss12000ReadError("token_not_configured")
            form = {"grant_type": "client_credentials"}
            if auth.scope:
                form["scope"] = auth.scope
            async with self.session.post(
                auth.token_url, data=form, headers={"Authorization": basic_auth(auth.client_id, self._client_secret)}
            ) as response:
                if response.status == 429 or response.status >= 500:
                    raise _Retryable(response.status, parse_retry_after(response.headers.get("Retry-After")))
                if response.status != 200:
                    raise Ss12000ReadError(f"token_http_{response.status}")
                try:
                    body = await response.json(content_type=None)
                except ValueError as error:
                    raise Ss12000ReadError("token_invalid_json") from error
            token = body.get("access_token") if isinstance(body, dict) else None
            if not isinstance(token, str) or not token:
                raise Ss12000ReadError("token_missing")
            try:
                lifetime = float(body.get("expires_in", 3600))
            except (TypeError, ValueError):
                lifetime = 3600.0
            self._token = token
            self._token_renew_at = self._clock() + max(0.0, lifetime - min(TOKEN_RENEW_MARGIN_SECONDS, lifetime / 2))
            self.tokens_fetched += 1
            log.info("ss12000_token_fetched", source_id=self.source.source_id, expires_in=lifetime)
            return token

    async def _headers(self, *, force_token: bool = False) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        auth = self.source.auth
        if auth.kind == "oauth2":
            headers["Authorization"] = f"Bearer {await self._bearer(force=force_token)}"
        elif auth.kind == "api_key":
            assert self._api_key is not None
            headers[auth.api_key_header] = self._api_key
        return headers

    # ------------------------------------------------------------------------------------------
    # requests

    async def _get_once(self, url: str, params: list[tuple[str, str]]) -> Any:
        refreshed = False
        while True:
            headers = await self._headers(force_token=refreshed)
            async with self.session.get(url, params=params, headers=headers) as response:
                if response.status == 401 and self.source.auth.kind == "oauth2" and not refreshed:
                    # The token expired early or was revoked: fetch a new one, once.
                    refreshed = True
                    continue
                if response.status == 429 or response.status >= 500:
                    raise _Retryable(response.status, parse_retry_after(response.headers.get("Retry-After")))
                if response.status == 408:
                    raise _Retryable(response.status, None)
                if response.status != 200:
                    raise Ss12000ReadError(f"http_{response.status}")
                try:
                    return await response.json(content_type=None)
                except ValueError as error:
                    raise Ss12000ReadError("invalid_json") from error

    def _backoff(self, error: Exception) -> bool | float:
        if isinstance(error, _Retryable):
            if error.retry_after is not None:
                return min(error.retry_after, self.retry.max_retry_after_seconds)
            return True
        return isinstance(error, TimeoutError | aiohttp.ClientConnectionError | aiohttp.ClientPayloadError)

    async def get_json(self, path: str, params: list[tuple[str, str]]) -> Any:
        """GET ``{base_url}/{path}`` with retries; :class:`Ss12000ReadError` when it fails for good."""
        url = f"{self.source.base_url.rstrip('/')}/{path.lstrip('/')}"
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
                    return await self._get_once(url, params)
        except _Retryable as error:
            raise Ss12000ReadError(f"http_{error.status}") from error
        except TimeoutError as error:
            raise Ss12000ReadError("timeout") from error
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as error:
            raise Ss12000ReadError("connection") from error
        raise AssertionError("unreachable")  # pragma: no cover

    async def pages(self, path: str, filters: Mapping[str, str | list[str]] | None = None) -> AsyncIterator[Any]:
        """The ``data`` of every page of a listing: the filters go with the first request only, then
        only ``pageToken`` and ``limit``."""
        limit = str(self.source.page_size)
        params: list[tuple[str, str]] = [("limit", limit)]
        for name, value in (filters or {}).items():
            for item in [value] if isinstance(value, str) else value:
                params.append((name, item))
        while True:
            body = await self.get_json(path, params)
            if not isinstance(body, dict) or "data" not in body:
                raise Ss12000ReadError("invalid_envelope")
            yield body["data"]
            token = body.get("pageToken")
            if token is None or token == "":
                return
            if not isinstance(token, str):
                raise Ss12000ReadError("invalid_page_token")
            params = [("pageToken", token), ("limit", limit)]
