"""What every page handler uses: the UI's state on the application, who is signed in, the URL of a named
route, rendering a template (with its Content-Security-Policy), POST-redirect-GET with a one-time
message, downloads, and the frame of a tenant's pages."""

from __future__ import annotations

import base64
import binascii
import json
import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
from aiohttp import web

from skolsynk.connectors.sources.google import delegation_scopes
from skolsynk_services.admin.auth import Principal, SessionStore, TokenStore
from skolsynk_services.admin.limits import FailureGuard
from skolsynk_services.admin.problems import Forbidden, Problem
from skolsynk_services.admin.service import AdminService
from skolsynk_services.admin.ui.catalogue import plural, text
from skolsynk_services.admin.ui.formatting import decimal, number, when
from skolsynk_services.admin.ui.subscription_texts import filters_summary, warning_text
from skolsynk_services.admin.ui.texts import (
    AUDIT_ACTIONS,
    ERASURE_KINDS,
    FINDINGS,
    HOLD_STATUSES,
    KIND_NAMES,
    LEDGER_REASONS,
    LEDGER_STATUSES,
    NAVIGATION,
    PERSON_ROLES,
    POLICIES,
    RECEIPT_OUTCOMES,
    REQUEST_STATUSES,
    ROLE_NAMES,
    RUN_STATUSES,
    SCHOOL_YEARS,
    SEVERITIES,
    SOURCE_KINDS,
    flat_settings,
    source_error_hint,
    swedish,
)

FLASH_COOKIE = "skolsynk_flash"
#: The templates stay in the admin service's package (its package data).
TEMPLATES = Path(__file__).parent.parent / "templates"
#: How many rows a page shows at most (the CSV downloads have everything).
MAX_ROWS = 500


@dataclass(frozen=True)
class Ui:
    service: AdminService
    sessions: SessionStore
    tokens: TokenStore
    guard: FailureGuard
    env: jinja2.Environment


UI_KEY = web.AppKey("skolsynk_admin_ui", Ui)
#: Who is signed in (None on the sign-in page without a session).
PRINCIPAL: web.RequestKey[Principal | None] = web.RequestKey("skolsynk_principal")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = when
    env.filters["number"] = number
    env.filters["decimal"] = decimal
    env.globals.update(
        ROLE_NAMES=ROLE_NAMES,
        PERSON_ROLES=PERSON_ROLES,
        KIND_NAMES=KIND_NAMES,
        SOURCE_KINDS=SOURCE_KINDS,
        FINDINGS={code.value: text for code, text in FINDINGS.items()},
        SEVERITIES=SEVERITIES,
        RUN_STATUSES=RUN_STATUSES,
        HOLD_STATUSES=HOLD_STATUSES,
        LEDGER_STATUSES=LEDGER_STATUSES,
        LEDGER_REASONS=LEDGER_REASONS,
        RECEIPT_OUTCOMES=RECEIPT_OUTCOMES,
        ERASURE_KINDS=ERASURE_KINDS,
        REQUEST_STATUSES=REQUEST_STATUSES,
        POLICIES=POLICIES,
        SCHOOL_YEARS=SCHOOL_YEARS,
        AUDIT_ACTIONS=AUDIT_ACTIONS,
        NAVIGATION=NAVIGATION,
        source_error_hint=source_error_hint,
        flat_settings=flat_settings,
        GOOGLE_SCOPES=list(delegation_scopes(reports=False)),
        t=text,
        plural=plural,
        selection_warning=warning_text,
        subscription_filters=filters_summary,
    )
    return env


def ui_of(request: web.Request) -> Ui:
    return request.app[UI_KEY]


def service_of(request: web.Request) -> AdminService:
    return request.app[UI_KEY].service


def principal_of(request: web.Request) -> Principal:
    principal = request[PRINCIPAL]
    if principal is None:  # pragma: no cover - session_required lets no one through without one
        raise web.HTTPSeeOther(url(request, "login"))
    return principal


def url(request: web.Request, name: str, query: Mapping[str, Any] | None = None, **parts: Any) -> str:
    """The path of a named UI route (with the UI's prefix), optionally with a query."""
    target = request.app.router[name].url_for(**{k: str(v) for k, v in parts.items()})
    if query:
        target = target.with_query({k: str(v) for k, v in query.items() if v not in (None, "")})
    return str(target)


def cookie_path(request: web.Request) -> str:
    return url(request, "home").rstrip("/") or "/"


def _encode_flash(kind: str, text: str) -> str:
    return base64.urlsafe_b64encode(json.dumps({"k": kind, "t": text[:1500]}).encode()).decode()


def _take_flash(request: web.Request) -> dict[str, str] | None:
    raw = request.cookies.get(FLASH_COOKIE)
    if not raw:
        return None
    try:
        data = json.loads(base64.urlsafe_b64decode(raw.encode()))
        return {"kind": "error" if data["k"] == "error" else "ok", "text": str(data["t"])}
    except (ValueError, KeyError, TypeError, binascii.Error):
        return None


def see_other(request: web.Request, location: str, flash: str | None = None, *, error: bool = False) -> web.Response:
    """POST-redirect-GET, with an optional one-time message for the next page."""
    response = web.Response(status=303, headers={"Location": location})
    if flash:
        response.set_cookie(
            FLASH_COOKIE,
            _encode_flash("error" if error else "ok", flash),
            path=cookie_path(request),
            httponly=True,
            samesite="Strict",
            secure=request.secure,
        )
    return response


def refused(request: web.Request, back: str, problem: Problem) -> web.Response:
    """An action the service refused: back to the page with the reason. Not allowed at all (another
    organiser's data, an operator's action) is a 403 page instead."""
    if isinstance(problem, Forbidden):
        raise problem
    return see_other(request, back, swedish(problem), error=True)


def render(request: web.Request, template: str, *, status: int = 200, **values: Any) -> web.Response:
    ui = ui_of(request)
    nonce = secrets.token_urlsafe(16)
    flash = _take_flash(request)
    html = ui.env.get_template(template).render(
        principal=request.get(PRINCIPAL),
        flash=flash,
        nonce=nonce,
        url=lambda name, query=None, **parts: url(request, name, query, **parts),
        **values,
    )
    response = web.Response(text=html, content_type="text/html", status=status)
    response.headers["Content-Security-Policy"] = (
        f"default-src 'none'; style-src 'nonce-{nonce}'; img-src 'self' data:; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    )
    if flash is not None or FLASH_COOKIE in request.cookies:
        response.del_cookie(FLASH_COOKIE, path=cookie_path(request))
    return response


def download(text: str, filename: str, content_type: str) -> web.Response:
    response = web.Response(text=text, content_type=content_type)
    response.headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


async def tenant_frame(request: web.Request, section: str) -> dict[str, Any]:
    """What every tenant page shows in its frame; checks that the principal may see the tenant."""
    tenant_id = request.match_info["tenant"]
    tenant = await service_of(request).get_tenant(principal_of(request), tenant_id)
    return {"tenant_id": tenant_id, "tenant_name": tenant.display_name, "section": section}
