"""The base of a connector's JSON API client: the aiohttp session, a cached bearer token, one GET retried
with stamina (exponential backoff with jitter, or the server's ``Retry-After``), and failures turned into a
short code that is safe to log and publish (``http_503``, ``timeout``, ``connection`` ...), never a response
body: bodies may hold personal data.

A connector's client subclasses :class:`JsonApiClient` and says what is its own: how to authenticate
(:meth:`JsonApiClient.authorize`) and what an answer means (:meth:`JsonApiClient.interpret`: which statuses
are transient, which error codes the API sends). A 401 renews the bearer token once, for every client.
"""

from __future__ import annotations

import asyncio
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, ClassVar, Self

import aiohttp
import stamina
from yarl import URL

#: Query parameters as aiohttp takes them: a mapping, or pairs when a name repeats.
Params = Mapping[str, str] | Sequence[tuple[str, str]] | None
#: A token endpoint's answer: the access token and its lifetime in seconds.
AccessToken = tuple[str, float]


class SourceReadError(Exception):
    """A read that failed for good (after retries, or not retryable). ``code`` is safe to log and publish."""

    def __init__(self, code: str) -> None:
        self.code = code
        super().__init__(code)


class Retryable(Exception):
    """A transient answer (throttling, 5xx, 408): retried, after ``retry_after`` seconds when the server
    said so, else with exponential backoff."""

    def __init__(self, status: int, retry_after: float | None = None, *, message: str | None = None) -> None:
        self.status = status
        self.retry_after = retry_after
        super().__init__(message or f"http_{status}")


@dataclass(frozen=True)
class RetryPolicy:
    """How one request is retried (stamina): attempts, the budget of all of them, the backoff."""

    attempts: int = 5
    timeout_seconds: float = 300.0
    wait_initial_seconds: float = 0.5
    wait_max_seconds: float = 30.0
    #: A Retry-After longer than this is cut to it (a source asking for an hour would stall the run).
    max_retry_after_seconds: float = 120.0


def parse_retry_after(value: str | None, *, now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> float | None:
    """``Retry-After`` as seconds: integer or fractional delta-seconds (Graph sends ``2.128``) or an HTTP
    date; ``None`` when absent or unreadable (the caller then backs off exponentially)."""
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


def retry_after(response: aiohttp.ClientResponse) -> float | None:
    """The response's ``Retry-After`` in seconds (:func:`parse_retry_after`)."""
    return parse_retry_after(response.headers.get("Retry-After"))


async def json_or_none(response: aiohttp.ClientResponse) -> Any:
    """The body as JSON whatever the content type; ``None`` when it is not JSON."""
    try:
        return await response.json(content_type=None)
    except ValueError:
        return None


def access_token(body: Any, *, default_lifetime: float) -> AccessToken | None:
    """``access_token`` and ``expires_in`` (seconds; a number or a numeric string) of a token endpoint's
    answer; ``default_lifetime`` when the lifetime is absent or unreadable; ``None`` without a token."""
    token = body.get("access_token") if isinstance(body, dict) else None
    if not isinstance(token, str) or not token:
        return None
    try:
        lifetime = float(body.get("expires_in", default_lifetime))
    except (TypeError, ValueError):
        lifetime = default_lifetime
    return token, lifetime


class TokenCache:
    """One access token, reused until ``renew_margin_seconds`` (at most half its lifetime) before it expires.
    One fetch at a time: callers waiting meanwhile get the token it fetched."""

    def __init__(self, *, renew_margin_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.renew_margin_seconds = renew_margin_seconds
        self._clock = clock
        self._token: str | None = None
        self._renew_at = 0.0
        self._lock = asyncio.Lock()
        #: Tokens fetched so far.
        self.fetched = 0

    async def get(self, fetch: Callable[[], Awaitable[AccessToken]], *, force: bool = False) -> str:
        """The cached token, or a new one from ``fetch`` (always a new one when ``force``)."""
        async with self._lock:
            if not force and self._token is not None and self._clock() < self._renew_at:
                return self._token
            token, lifetime = await fetch()
            self._token = token
            self._renew_at = self._clock() + max(0.0, lifetime - min(self.renew_margin_seconds, lifetime / 2))
            self.fetched += 1
            return token

    def invalidate(self, token: str) -> None:
        """The API refused ``token``: the next :meth:`get` fetches a new one (unless one was fetched since)."""
        if self._token == token:
            self._token = None


class JsonApiClient(ABC):
    """One source's API over one aiohttp session. Create, :meth:`start` (inside the event loop), use,
    :meth:`close` (or ``async with``)."""

    #: What a failed read raises: the connector's own :class:`SourceReadError`.
    error_type: ClassVar[type[SourceReadError]] = SourceReadError

    def __init__(self, *, request_timeout_seconds: float = 30.0, retry: RetryPolicy | None = None) -> None:
        self._timeout = aiohttp.ClientTimeout(total=request_timeout_seconds)
        self.retry = retry or RetryPolicy()
        self._session: aiohttp.ClientSession | None = None
        #: Requests sent (every attempt).
        self.requests = 0

    async def start(self) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout, raise_for_status=False)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> Self:
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
    # what a connector says

    async def authorize(self, headers: dict[str, str], *, refused: str | None) -> str | None:
        """Put the credentials into ``headers``; return the bearer token used, or ``None`` when there is
        none to renew (a 401 is then final). ``refused`` is the token a 401 just refused: get another."""
        return None

    @abstractmethod
    async def interpret(self, response: aiohttp.ClientResponse) -> Any:
        """The body of a good answer; raise :class:`Retryable` for a transient one and :attr:`error_type`
        for any other. A 401 arrives here only when renewing the token did not help."""

    def exhausted(self, error: Retryable) -> Exception:
        """The error a transient answer becomes when the retries are used up."""
        return self.error_type(f"http_{error.status}")

    # ------------------------------------------------------------------------------------------
    # requests

    async def _send_once(
        self, method: str, url: str | URL, params: Params, headers: Mapping[str, str], body: Any
    ) -> Any:
        refused: str | None = None
        while True:
            sent = {"Accept": "application/json", **headers}
            token = await self.authorize(sent, refused=refused)
            self.requests += 1
            async with self.session.request(method, url, params=params, headers=sent, json=body) as response:
                if response.status == 401 and token is not None and refused is None:
                    # The token expired early or was revoked: a new one, once.
                    refused = token
                    continue
                return await self.interpret(response)

    def _backoff(self, error: Exception) -> bool | float:
        if isinstance(error, Retryable):
            if error.retry_after is not None:
                return min(error.retry_after, self.retry.max_retry_after_seconds)
            return True
        return isinstance(error, TimeoutError | aiohttp.ClientConnectionError | aiohttp.ClientPayloadError)

    async def fetch_json(
        self,
        url: str | URL,
        params: Params = None,
        *,
        headers: Mapping[str, str] | None = None,
        method: str = "GET",
        body: Any = None,
    ) -> Any:
        """``method`` (GET unless said; ``body`` sent as JSON) ``url`` with retries; :attr:`error_type` (or what
        :meth:`interpret` raises) when it fails for good. Only requests that are safe to repeat may be
        retried: a POST here is one whose repetition does no harm (its effect is keyed by the caller)."""
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
                    return await self._send_once(method, url, params, headers or {}, body)
        except Retryable as error:
            raise self.exhausted(error) from error
        except TimeoutError as error:
            raise self.error_type("timeout") from error
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as error:
            raise self.error_type("connection") from error
        raise AssertionError("unreachable")  # pragma: no cover
