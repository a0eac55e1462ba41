"""Errors of the admin service, as RFC 9457 problem details (``application/problem+json``).

Services raise :class:`Problem` subclasses; the API turns them into problem+json responses and the UI
into a readable message. Details never contain personal data or secrets."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import ValidationError

PROBLEM_TYPE_BASE = "https://skolsynk.org/problems/"


class Problem(Exception):
    status = 400
    kind = "bad-request"
    title = "Bad request"

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra

    def body(self, instance: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": PROBLEM_TYPE_BASE + self.kind,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        if instance:
            body["instance"] = instance
        return body | self.extra


class Unauthenticated(Problem):
    status, kind, title = 401, "unauthenticated", "Authentication required"


class Forbidden(Problem):
    status, kind, title = 403, "forbidden", "Not allowed"


class NotFound(Problem):
    status, kind, title = 404, "not-found", "Not found"


class Conflict(Problem):
    status, kind, title = 409, "conflict", "Conflict"


class Invalid(Problem):
    status, kind, title = 422, "invalid", "Invalid request"

    @classmethod
    def from_validation(cls, error: ValidationError) -> Invalid:
        errors = [
            {"field": ".".join(str(p) for p in e["loc"]) or "(body)", "message": e["msg"]}
            for e in error.errors(include_url=False, include_input=False)
        ]
        return cls(f"{len(errors)} field(s) are invalid", errors=errors)


class GateClosed(Problem):
    status, kind, title = 409, "promotion-gate-closed", "Not ready to go live"


class TooManyRequests(Problem):
    status, kind, title = 429, "too-many-requests", "Too many requests"

    def __init__(self, detail: str, *, retry_after: int) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class Unavailable(Problem):
    status, kind, title = 503, "unavailable", "Temporarily unavailable"


def problem_response(problem: Problem, request: web.Request | None = None) -> web.Response:
    headers = {"WWW-Authenticate": 'Bearer realm="skolsynk"'} if problem.status == 401 else None
    if isinstance(problem, TooManyRequests):
        headers = {"Retry-After": str(problem.retry_after)}
    return web.json_response(
        problem.body(request.path if request is not None else None),
        status=problem.status,
        content_type="application/problem+json",
        headers=headers,
    )
