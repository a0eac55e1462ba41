"""HTTP client for one SS 12000 source API: authentication (OAuth2 client credentials or a static API
key), paging with ``pageToken`` (filters on the first request only), and retries of 429, 5xx,
timeouts and connection errors with exponential backoff that honours ``Retry-After`` (stamina; the session,
the token cache and the retries are :mod:`skolsynk.connectors.http`'s).

Errors leave as :class:`Ss12000ReadError` with a short code (``http_503``, ``timeout``, ...), never with
a response body: bodies may contain personal data.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import AsyncIterator, Callable, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote_plus

import aiohttp

from skolsynk.connectors.http import (
    AccessToken,
    JsonApiClient,
    Retryable,
    SourceReadError,
    TokenCache,
    access_token,
    retry_after,
)
from skolsynk.connectors.http import RetryPolicy as RetryPolicy
from skolsynk.connectors.sources.ss12000 import SourceConfig
from skolsynk.logging import get_logger

log = get_logger(__name__)

#: The code of a run that went past its deadline (every listing not yet read fails with it).
RUN_DEADLINE_EXCEEDED = "run_deadline_exceeded"

#: What a source answers for a call it does not offer (``/subscriptions``, ``/log/``): never retried.
NOT_OFFERED: frozenset[int] = frozenset({404, 405, 501})

#: A token is renewed this long before it expires (at most half its lifetime).
TOKEN_RENEW_MARGIN_SECONDS = 60.0


class Ss12000ReadError(SourceReadError):
    """A read that failed for good (after retries, or not retryable). ``code`` is safe to log and publish."""


def basic_auth(user: str, password: str) -> str:
    """An HTTP Basic ``Authorization`` value (RFC 6749 2.3.1: both parts form-encoded first)."""
    pair = f"{quote_plus(user)}:{quote_plus(password)}".encode()
    return "Basic " + base64.b64encode(pair).decode("ascii")


def format_time(value: datetime) -> str:
    """RFC 3339 in UTC with ``Z`` (no ``+`` that a query string could turn into a space)."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Ss12000Client(JsonApiClient):
    """One source's API. Create, :meth:`start` (inside the event loop), use, :meth:`close`."""

    error_type = Ss12000ReadError

    def __init__(
        self,
        source: SourceConfig,
        *,
        environ: Mapping[str, str] | None = None,
        request_timeout_seconds: float = 30.0,
        retry: RetryPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(request_timeout_seconds=request_timeout_seconds, retry=retry)
        self.source = source
        self._tokens = TokenCache(renew_margin_seconds=TOKEN_RENEW_MARGIN_SECONDS, clock=clock)
        # Resolve secrets now, so a missing variable keeps the source from being served, not fail its first run.
        auth = source.auth
        self._client_secret = auth.client_secret_value(environ) if auth.kind == "oauth2" else None
        self._api_key = auth.api_key_value(environ) if auth.kind == "api_key" else None
        #: The shared secret of the source's webhook; None: the source has no webhook.
        self.webhook_secret = source.webhook_secret_value(environ)

    @property
    def tokens_fetched(self) -> int:
        return self._tokens.fetched

    # ------------------------------------------------------------------------------------------
    # authentication

    async def _fetch_token(self) -> AccessToken:
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
                raise Retryable(response.status, retry_after(response))
            if response.status != 200:
                raise Ss12000ReadError(f"token_http_{response.status}")
            try:
                body = await response.json(content_type=None)
            except ValueError as error:
                raise Ss12000ReadError("token_invalid_json") from error
        token = access_token(body, default_lifetime=3600.0)
        if token is None:
            raise Ss12000ReadError("token_missing")
        log.info("ss12000_token_fetched", source_id=self.source.source_id, expires_in=token[1])
        return token

    async def authorize(self, headers: dict[str, str], *, refused: str | None) -> str | None:
        auth = self.source.auth
        if auth.kind == "oauth2":
            token = await self._tokens.get(self._fetch_token, force=refused is not None)
            headers["Authorization"] = f"Bearer {token}"
            return token
        if auth.kind == "api_key":
            assert self._api_key is not None
            headers[auth.api_key_header] = self._api_key
        return None

    # ------------------------------------------------------------------------------------------
    # requests

    async def interpret(self, response: aiohttp.ClientResponse) -> Any:
        if response.status in NOT_OFFERED:
            raise Ss12000ReadError(f"http_{response.status}")  # not a passing fault: the source has no such call
        if response.status == 429 or response.status >= 500:
            raise Retryable(response.status, retry_after(response))
        if response.status == 408:
            raise Retryable(response.status, None)
        if response.status not in (200, 201, 204):
            raise Ss12000ReadError(f"http_{response.status}")
        if response.status == 204 or not await response.read():
            return None  # a write without an answer (DELETE, POST /log/)
        try:
            return await response.json(content_type=None)
        except ValueError as error:
            raise Ss12000ReadError("invalid_json") from error

    async def get_json(self, path: str, params: list[tuple[str, str]]) -> Any:
        """GET ``{base_url}/{path}`` with retries; :class:`Ss12000ReadError` when it fails for good."""
        return await self.fetch_json(f"{self.source.base_url.rstrip('/')}/{path.lstrip('/')}", params)

    async def send(self, method: str, path: str, body: Any = None, *, repeat: bool = True) -> Any:
        """``method`` (POST, PATCH, DELETE) ``{base_url}/{path}`` with ``body`` as JSON; the answer's JSON, None
        for an empty one. ``repeat=False`` sends once (a POST whose repetition would create a second
        subscription or log entry); :class:`Ss12000ReadError` when it fails."""
        url = f"{self.source.base_url.rstrip('/')}/{path.lstrip('/')}"
        if repeat:
            return await self.fetch_json(url, method=method, body=body)
        try:
            async with asyncio.timeout(self.retry.timeout_seconds):
                return await self._send_once(method, url, None, {}, body)
        except Retryable as error:
            raise self.exhausted(error) from error
        except TimeoutError as error:
            raise Ss12000ReadError("timeout") from error
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as error:
            raise Ss12000ReadError("connection") from error

    async def pages(
        self,
        path: str,
        filters: Mapping[str, str | list[str]] | None = None,
        *,
        max_pages: int | None = None,
        deadline: float | None = None,
    ) -> AsyncIterator[Any]:
        """The ``data`` of every page of a listing: the filters go with the first request only, then
        only ``pageToken`` and ``limit``. A listing always ends: a page token the source already gave
        (``page_token_repeated``: it would loop for ever), more than ``max_pages`` pages
        (``page_cap_reached``) or the run's ``deadline`` passed (``run_deadline_exceeded``, a
        :func:`time.monotonic` instant) fail it."""
        limit = str(self.source.page_size)
        params: list[tuple[str, str]] = [("limit", limit)]
        for name, value in (filters or {}).items():
            for item in [value] if isinstance(value, str) else value:
                params.append((name, item))
        seen: set[str] = set()
        fetched = 0
        while True:
            if deadline is not None and time.monotonic() > deadline:
                raise Ss12000ReadError(RUN_DEADLINE_EXCEEDED)
            if max_pages is not None and fetched >= max_pages:
                raise Ss12000ReadError("page_cap_reached")
            body = await self.get_json(path, params)
            fetched += 1
            if not isinstance(body, dict) or "data" not in body:
                raise Ss12000ReadError("invalid_envelope")
            yield body["data"]
            token = body.get("pageToken")
            if token is None or token == "":
                return
            if not isinstance(token, str):
                raise Ss12000ReadError("invalid_page_token")
            if token in seen:
                raise Ss12000ReadError("page_token_repeated")
            seen.add(token)
            params = [("pageToken", token), ("limit", limit)]
