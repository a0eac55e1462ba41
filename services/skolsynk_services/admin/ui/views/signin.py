"""Signing in: with an organiser's Microsoft or Google account (OpenID Connect: one button per provider an
operator has configured) or with an API token (operators' break-glass, and whoever has no account rule).
Either starts a server-side session; the cookie holds only the session's random secret. Signing out ends the
session in the store, not only in the browser.

The OpenID Connect sign-in leaves for the provider from ``oidc_start`` with a random ``state`` bound to this
browser by the cookie ``skolsynk_signin`` (HttpOnly, SameSite=Lax so that it comes back with the provider's
redirect, path of the callback only, ten minutes) and returns to ``oidc_callback``. The session cookie is
SameSite=Strict, which a browser withholds for the rest of a navigation that began at another site: the
callback therefore answers with a small page that moves on to the organiser's overview itself (a meta
refresh, a navigation of this site), instead of a redirect."""

from __future__ import annotations

import secrets

from aiohttp import web

from skolsynk_services.admin.accounts import SIGNIN_SECONDS
from skolsynk_services.admin.service.signin import SignInRefused
from skolsynk_services.admin.ui.catalogue import text
from skolsynk_services.admin.ui.middleware import COOKIE
from skolsynk_services.admin.ui.page import PRINCIPAL, cookie_path, render, see_other, service_of, ui_of, url

#: Binds a sign-in at a provider to the browser that started it.
SIGNIN_COOKIE = "skolsynk_signin"
#: The HTTP status of each way a sign-in with a provider can be refused.
REFUSED_STATUS = {"state": 400, "provider": 404, "denied": 403, "unmapped": 403, "failed": 502}


def _safe_next(request: web.Request, target: str | None) -> str:
    home = url(request, "home")
    if target and target.startswith(home) and not target.startswith("//") and "\\" not in target:
        return target
    return home


async def _login(
    request: web.Request, *, status: int = 200, next_path: str = "", error: str | None = None,
    provider_error: str | None = None,
) -> web.Response:  # fmt: skip
    """The sign-in page: a button per enabled identity provider, and the token form."""
    sessions = ui_of(request).sessions
    return render(
        request,
        "login.html",
        status=status,
        next=next_path,
        error=error,
        provider_error=provider_error,
        providers=await service_of(request).sign_in_providers(),
        idle_minutes=round(sessions.idle.total_seconds() / 60),
        max_hours=round(sessions.absolute.total_seconds() / 3600),
    )


async def login_page(request: web.Request) -> web.StreamResponse:
    if request.get(PRINCIPAL) is not None:
        return see_other(request, _safe_next(request, request.query.get("next")))
    return await _login(request, next_path=request.query.get("next", ""))


def _too_many(request: web.Request) -> int | None:
    return ui_of(request).guard.retry_after(request.remote or "unknown")


async def _slow_down(request: web.Request, wait: int) -> web.Response:
    response = await _login(request, status=429, error=text("signin.too_many", seconds=wait))
    response.headers["Retry-After"] = str(wait)
    return response


async def login(request: web.Request) -> web.StreamResponse:
    ui = ui_of(request)
    if (wait := _too_many(request)) is not None:
        return await _slow_down(request, wait)
    form = await request.post()
    token = str(form.get("token", "")).strip()[:500]
    principal = await ui.tokens.authenticate(token) if token else None
    if principal is None:
        ui.guard.failed(request.remote or "unknown")
        next_path = str(form.get("next", ""))
        return await _login(request, status=401, next_path=next_path, error=text("signin.token_unknown"))
    session = await ui.sessions.start(principal)
    response = see_other(request, _safe_next(request, str(form.get("next", ""))))
    _set_session(request, response, session)
    return response


def _set_session(request: web.Request, response: web.StreamResponse, session: str) -> None:
    # No max-age: the cookie ends with the browser; the session ends in the store (idle, age, logout).
    response.set_cookie(
        COOKIE, session, path=cookie_path(request), httponly=True, samesite="Strict", secure=request.secure
    )


def redirect_uri(request: web.Request) -> str:
    """Where providers send the browser back (registered at Microsoft and Google as the redirect URI): under
    ``SKOLSYNK_ADMIN_PUBLIC_URL`` when set, otherwise the request's own origin (as the browser sent it)."""
    base = service_of(request).public_url or str(request.url.origin()).rstrip("/")
    return base + url(request, "oidc_callback")


async def oidc_start(request: web.Request) -> web.StreamResponse:
    """Off to the provider (a GET: the sign-in page's button is a link)."""
    if request.get(PRINCIPAL) is not None:
        return see_other(request, _safe_next(request, request.query.get("next")))
    if (wait := _too_many(request)) is not None:
        return await _slow_down(request, wait)
    browser = secrets.token_urlsafe(32)
    try:
        location = await service_of(request).begin_sign_in(
            request.match_info["provider"],
            redirect_uri=redirect_uri(request),
            browser=browser,
            next_path=_safe_next(request, request.query.get("next")),
        )
    except SignInRefused as refused:
        return await _refused(request, refused)
    response = see_other(request, location)
    response.set_cookie(SIGNIN_COOKIE, browser, path=url(request, "oidc_callback"), httponly=True, samesite="Lax",
                        secure=request.secure, max_age=SIGNIN_SECONDS)  # fmt: skip
    return response


async def oidc_callback(request: web.Request) -> web.StreamResponse:
    """The provider's redirect back: a session for the mapped account, or the sign-in page saying why not."""
    if (wait := _too_many(request)) is not None:
        return await _slow_down(request, wait)
    query = request.query
    try:
        signed_in = await service_of(request).finish_sign_in(
            state=query.get("state", "")[:200],
            code=query.get("code"),
            error=query.get("error"),
            browser=request.cookies.get(SIGNIN_COOKIE),
        )
    except SignInRefused as refused:
        if refused.reason in ("state", "unmapped"):
            ui_of(request).guard.failed(request.remote or "unknown")
        response = await _refused(request, refused)
    else:
        session = await ui_of(request).sessions.start(signed_in.principal, account_subject=signed_in.account.subject)
        response = render(request, "signed_in.html", target=_safe_next(request, signed_in.next_path))
        _set_session(request, response, session)
    response.del_cookie(SIGNIN_COOKIE, path=url(request, "oidc_callback"))
    return response


async def _refused(request: web.Request, refused: SignInRefused) -> web.Response:
    message = text(f"signin.refused.{refused.reason}", provider=refused.provider or "", account=refused.account or "")
    return await _login(request, status=REFUSED_STATUS[refused.reason], provider_error=message)


async def logout(request: web.Request) -> web.StreamResponse:
    session = request.cookies.get(COOKIE)
    if session:
        await ui_of(request).sessions.end(session)
    response = see_other(request, url(request, "login"), text("signin.signed_out"))
    response.del_cookie(COOKIE, path=cookie_path(request))
    return response
