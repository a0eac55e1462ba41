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

import re
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from yarl import URL

from skolsynk.connectors.http import (
    AccessToken,
    JsonApiClient,
    Retryable,
    SourceReadError,
    TokenCache,
    access_token,
    json_or_none,
    retry_after,
)
from skolsynk.connectors.http import RetryPolicy as RetryPolicy
from skolsynk.connectors.http import parse_retry_after as parse_retry_after
from skolsynk.connectors.sources.microsoft import SourceConfig
from skolsynk.logging import get_logger

log = get_logger(__name__)

#: A token is renewed this long before it expires (at most half its lifetime).
TOKEN_RENEW_MARGIN_SECONDS = 300.0
#: Statuses that mean "slow down / try again": Retry-After is honoured on these.
THROTTLE_STATUSES = frozenset({429, 503, 504})
#: Graph error codes of a delta token that can no longer be used: start again with a full round.
EXPIRED_DELTA_CODES = frozenset({"syncstatenotfound", "resyncrequired", "syncstateinvalid", "fullsyncrequired"})
_SAFE_CODE = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,59}$")


class GraphReadError(SourceReadError):
    """A read that failed for good (after retries, or not retryable). ``code`` is safe to log and publish."""


class DeltaExpired(Exception):
    """The delta token is no longer valid: a full resync is needed. ``location`` is Graph's fresh
    initial delta URL when it sent one (410 Gone)."""

    def __init__(self, code: str, location: str | None = None) -> None:
        self.code = code
        self.location = location
        super().__init__(code)


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


class GraphClient(JsonApiClient):
    """Graph for one tenant. Create, :meth:`start` (inside the event loop), use, :meth:`close`."""

    error_type = GraphReadError

    def __init__(
        self,
        source: SourceConfig,
        *,
        environ: Mapping[str, str] | None = None,
        request_timeout_seconds: float = 30.0,
        retry: RetryPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
        on_throttled: Callable[[int], None] | None = None,
    ) -> None:
        super().__init__(request_timeout_seconds=request_timeout_seconds, retry=retry)
        self.source = source
        self._tokens = TokenCache(renew_margin_seconds=TOKEN_RENEW_MARGIN_SECONDS, clock=clock)
        self._on_throttled = on_throttled
        self.base_url = source.graph_base_url.rstrip("/")
        self._origin = URL(self.base_url).origin()
        # Resolve the secret now, so a missing variable keeps the source from being served, not fail its first run.
        self._client_secret = source.client_secret_value(environ)

    @property
    def tokens_fetched(self) -> int:
        return self._tokens.fetched

    # ------------------------------------------------------------------------------------------
    # authentication

    async def _fetch_token(self) -> AccessToken:
        form = {
            "grant_type": "client_credentials",
            "client_id": self.source.client_id,
            "client_secret": self._client_secret,
            "scope": self.source.scope,
        }
        async with self.session.post(self.source.resolved_token_url, data=form) as response:
            if response.status == 429 or response.status >= 500:
                self._throttled(response.status)
                raise Retryable(response.status, retry_after(response))
            body = await json_or_none(response)
            if response.status != 200:
                raise GraphReadError(_token_error_code(body, response.status))
        token = access_token(body, default_lifetime=3599.0)
        if token is None:
            raise GraphReadError("token_missing")
        log.info("graph_token_fetched", tenant_id=self.source.tenant_id, expires_in=token[1])
        return token

    async def authorize(self, headers: dict[str, str], *, refused: str | None) -> str:
        token = await self._tokens.get(self._fetch_token, force=refused is not None)
        headers["Authorization"] = f"Bearer {token}"
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

    async def interpret(self, response: aiohttp.ClientResponse) -> Any:
        status = response.status
        if status == 200:
            try:
                return await response.json(content_type=None)
            except ValueError as error:
                raise GraphReadError("invalid_json") from error
        # A 401 here was refused again with a new token (InvalidAuthenticationToken).
        code = _error_code(await json_or_none(response), status)
        if status == 410:
            raise DeltaExpired(code if code != "http_410" else "gone", response.headers.get("Location"))
        if status < 500 and status != 429 and code.lower() in EXPIRED_DELTA_CODES:
            raise DeltaExpired(code)
        if status in THROTTLE_STATUSES:
            self._throttled(status)
            raise Retryable(status, retry_after(response))
        if status >= 500 or status == 408:
            raise Retryable(status, retry_after(response))
        raise GraphReadError("http_404" if status == 404 else code)

    async def get_json(
        self, path_or_link: str, params: Mapping[str, str] | None = None, *, prefer: str | None = None
    ) -> Any:
        """GET with retries; :class:`GraphReadError` (or :class:`DeltaExpired`) when it fails for good."""
        return await self.fetch_json(self.url(path_or_link), params, headers={"Prefer": prefer} if prefer else None)

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
        empty), until a page carries ``@odata.deltaLink``. No ``Prefer: odata.maxpagesize``: the education
        delta functions document no query options or preferences, so Graph chooses the page size."""
        result = DeltaRound()
        link: str = start
        query: Mapping[str, str] | None = params
        while True:
            body = await self.get_json(link, query)
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
