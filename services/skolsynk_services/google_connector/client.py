"""HTTP client for one tenant's Admin SDK: Directory API v1 (``orgunits.list``, ``users.list``,
``groups.list``, ``members.list``) and Reports API v1 (``activities.list``), with domain-wide delegation.

Google signals throttling with 403 (``userRateLimitExceeded``, ``rateLimitExceeded``, ``quotaExceeded``) or
429, in the reason of ``error.errors[0]``, and sends no ``Retry-After``: those, 5xx answers, timeouts and
connection errors are retried with exponential backoff and jitter (stamina). Any other 4xx is final; a 401
fetches a new token once. Errors leave as :class:`GoogleReadError` with a short code (``forbidden``,
``user_rate_limit_exceeded``, ``http_500``, ``timeout`` ...), never with a response body.
"""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import aiohttp

from skolsynk.connectors import http
from skolsynk.connectors.http import JsonApiClient, json_or_none
from skolsynk.connectors.sources.google import SourceConfig
from skolsynk.logging import get_logger
from skolsynk_services.google_connector.auth import DelegatedCredentials, GoogleReadError, Retryable

log = get_logger(__name__)

DIRECTORY = "/admin/directory/v1"
REPORTS = "/admin/reports/v1"
#: channels.stop lives under the API's own name, not ``directory/v1`` (the discovery document's path).
CHANNELS = "/admin/directory_v1/channels"
#: ``error.errors[0].reason`` values that mean "slow down" (Google: retry with exponential backoff).
THROTTLING_REASONS = frozenset({"userRateLimitExceeded", "rateLimitExceeded", "quotaExceeded"})
GROUPS_PAGE_SIZE = 200
MEMBERS_PAGE_SIZE = 200
ACTIVITIES_PAGE_SIZE = 1000


@dataclass(frozen=True)
class RetryPolicy(http.RetryPolicy):
    """Google's advice: exponential backoff from a second up to 64 seconds (Google sends no ``Retry-After``)."""

    attempts: int = 8
    timeout_seconds: float = 300.0
    wait_initial_seconds: float = 1.0
    wait_max_seconds: float = 64.0


def snake(reason: str) -> str:
    """``userRateLimitExceeded`` -> ``user_rate_limit_exceeded`` (kept to letters, digits, underscores)."""
    text = re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", reason).lower()
    return re.sub(r"[^a-z0-9_]+", "_", text).strip("_")[:40] or "unknown"


def error_reason(body: object) -> str | None:
    """``error.errors[0].reason`` of a Google error body (``None`` when it has none)."""
    error = body.get("error") if isinstance(body, Mapping) else None
    errors = error.get("errors") if isinstance(error, Mapping) else None
    first = errors[0] if isinstance(errors, list) and errors else None
    reason = first.get("reason") if isinstance(first, Mapping) else None
    return reason if isinstance(reason, str) and reason else None


def format_time(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


class GoogleClient(JsonApiClient):
    """One source's Google APIs. Create, :meth:`start` (inside the event loop), use, :meth:`close`."""

    error_type = GoogleReadError

    def __init__(
        self,
        source: SourceConfig,
        credentials: DelegatedCredentials,
        *,
        request_timeout_seconds: float = 30.0,
        retry: http.RetryPolicy | None = None,
        on_throttled: Callable[[str], None] | None = None,
    ) -> None:
        super().__init__(request_timeout_seconds=request_timeout_seconds, retry=retry or RetryPolicy())
        self.source = source
        self.credentials = credentials
        self._on_throttled = on_throttled

    # ------------------------------------------------------------------------------------------
    # requests

    async def authorize(self, headers: dict[str, str], *, refused: str | None) -> str:
        if refused is not None:
            self.credentials.invalidate(refused)
        token = await self.credentials.token(self.session)
        headers["Authorization"] = f"Bearer {token}"
        return token

    async def interpret(self, response: aiohttp.ClientResponse) -> dict[str, Any]:
        if response.status == 204:  # channels.stop: no content
            return {}
        body = await json_or_none(response)
        if response.status == 200:
            if not isinstance(body, dict):
                raise GoogleReadError("invalid_json")
            return body
        reason = error_reason(body)
        if response.status == 401:  # refused again with a new token
            raise GoogleReadError("auth_error", permanent=True)
        if response.status == 429 or (response.status == 403 and reason in THROTTLING_REASONS):
            code = snake(reason) if reason else "rate_limit_exceeded"
            if self._on_throttled is not None:
                self._on_throttled(code)
            raise Retryable(response.status, code, throttled=True)
        if response.status >= 500:
            raise Retryable(response.status, snake(reason) if reason else f"http_{response.status}")
        code = snake(reason) if reason else f"http_{response.status}"
        raise GoogleReadError(code, permanent=response.status in (400, 401, 403, 404))

    def exhausted(self, error: http.Retryable) -> Exception:
        if isinstance(error, Retryable):
            return GoogleReadError(error.code, step=error.step)
        return super().exhausted(error)

    async def get_json(self, path: str, params: Mapping[str, str]) -> dict[str, Any]:
        """GET ``{api_base_url}{path}`` with retries; :class:`GoogleReadError` when it fails for good."""
        body: dict[str, Any] = await self.fetch_json(self.source.api_base_url.rstrip("/") + path, params)
        return body

    async def pages(
        self, path: str, params: Mapping[str, str], items: str
    ) -> AsyncGenerator[list[dict[str, Any]], None]:
        """The ``items`` of every page (an absent key is an empty page: Google omits empty arrays),
        following ``nextPageToken`` until a page has none."""
        query = dict(params)
        while True:
            body = await self.get_json(path, query)
            values = body.get(items, [])
            if not isinstance(values, list) or not all(isinstance(v, dict) for v in values):
                raise GoogleReadError("invalid_envelope")
            yield values
            token = body.get("nextPageToken")
            if not token:
                return
            if not isinstance(token, str):
                raise GoogleReadError("invalid_page_token")
            query = {**params, "pageToken": token}

    # ------------------------------------------------------------------------------------------
    # endpoints

    def _owner(self) -> dict[str, str]:
        return {"domain": self.source.domain} if self.source.domain else {"customer": self.source.customer}

    async def org_units(self) -> list[dict[str, Any]]:
        """Every OU (``orgunits.list type=all``; not paged)."""
        body = await self.get_json(
            f"{DIRECTORY}/customer/{self.source.customer}/orgunits", {"orgUnitPath": "/", "type": "all"}
        )
        units = body.get("organizationUnits", [])
        if not isinstance(units, list) or not all(isinstance(u, dict) for u in units):
            raise GoogleReadError("invalid_envelope")
        return units

    def users(
        self, *, query: str | None, projection: str, custom_field_mask: list[str]
    ) -> AsyncGenerator[list[dict[str, Any]], None]:
        params = {**self._owner(), "maxResults": str(self.source.page_size), "projection": projection}
        if custom_field_mask:
            params["customFieldMask"] = ",".join(custom_field_mask)
        if query:
            params["query"] = query
        return self.pages(f"{DIRECTORY}/users", params, "users")

    async def user(self, user_key: str, *, projection: str, custom_field_mask: list[str]) -> dict[str, Any] | None:
        """``users.get``: one user as the directory has it now (not through the search index); None when
        Google answers 404 (deleted)."""
        params = {"projection": projection}
        if custom_field_mask:
            params["customFieldMask"] = ",".join(custom_field_mask)
        try:
            return await self.get_json(f"{DIRECTORY}/users/{quote(user_key, safe='@')}", params)
        except GoogleReadError as error:
            if error.code == "not_found":
                return None
            raise

    async def groups(self) -> list[dict[str, Any]]:
        params = {**self._owner(), "maxResults": str(GROUPS_PAGE_SIZE)}
        return [group async for page in self.pages(f"{DIRECTORY}/groups", params, "groups") for group in page]

    async def members(self, group_id: str) -> list[dict[str, Any]]:
        params = {"maxResults": str(MEMBERS_PAGE_SIZE)}
        if self.source.include_derived_membership:
            params["includeDerivedMembership"] = "true"
        path = f"{DIRECTORY}/groups/{group_id}/members"
        return [member async for page in self.pages(path, params, "members") for member in page]

    async def admin_activities(self, start: datetime, end: datetime) -> list[dict[str, Any]]:
        """Admin audit events between ``start`` and ``end`` (``activities.list``, application ``admin``)."""
        params = {
            "startTime": format_time(start),
            "endTime": format_time(end),
            "maxResults": str(ACTIVITIES_PAGE_SIZE),
        }
        if self.source.customer != "my_customer":
            params["customerId"] = self.source.customer
        path = f"{REPORTS}/activity/users/all/applications/admin"
        return [item async for page in self.pages(path, params, "items") for item in page]

    # ------------------------------------------------------------------------------------------
    # push notifications (users.watch)

    async def watch_users(
        self, event: str, *, channel_id: str, address: str, token: str, ttl_seconds: int
    ) -> dict[str, Any]:
        """``users.watch`` for one ``event`` (``add``, ``delete``, ``update``, ``undelete``): Google posts a
        notification to ``address`` on every such change of the customer's users, carrying ``token``. The
        answer is the Channel (``resourceId``, ``expiration`` in epoch milliseconds). A repeated attempt
        reuses ``channel_id``, so a retry never opens a second channel."""
        channel = {
            "id": channel_id,
            "type": "web_hook",
            "address": address,
            "token": token,
            "params": {"ttl": str(ttl_seconds)},
        }
        body: dict[str, Any] = await self.fetch_json(
            self.source.api_base_url.rstrip("/") + f"{DIRECTORY}/users/watch",
            {**self._owner(), "event": event},
            method="POST",
            body=channel,
        )
        return body

    async def stop_channel(self, channel_id: str, resource_id: str) -> None:
        """``channels.stop``: no more notifications through this channel (a channel Google no longer knows,
        ``not_found``, is stopped already)."""
        try:
            await self.fetch_json(
                self.source.api_base_url.rstrip("/") + f"{CHANNELS}/stop",
                method="POST",
                body={"id": channel_id, "resourceId": resource_id},
            )
        except GoogleReadError as error:
            if error.code != "not_found":
                raise
