"""Signing in with an API token (it starts a server-side session; the cookie holds only the session's
random secret) and signing out (the session ends in the store, not only in the browser)."""

from __future__ import annotations

from aiohttp import web

from skolsynk_services.admin.ui.middleware import COOKIE
from skolsynk_services.admin.ui.page import PRINCIPAL, cookie_path, render, see_other, ui_of, url


def _safe_next(request: web.Request, target: str | None) -> str:
    home = url(request, "home")
    if target and target.startswith(home) and not target.startswith("//") and "\\" not in target:
        return target
    return home


async def login_page(request: web.Request) -> web.StreamResponse:
    if request.get(PRINCIPAL) is not None:
        return see_other(request, _safe_next(request, request.query.get("next")))
    return render(request, "login.html", next=request.query.get("next", ""), error=None, **_session_terms(request))


async def login(request: web.Request) -> web.StreamResponse:
    ui = ui_of(request)
    address = request.remote or "unknown"
    wait = ui.guard.retry_after(address)
    if wait is not None:
        response = render(
            request,
            "login.html",
            **_session_terms(request),
            status=429,
            next="",
            error=f"För många misslyckade inloggningar från din adress. Vänta {wait} sekunder och försök igen.",
        )
        response.headers["Retry-After"] = str(wait)
        return response
    form = await request.post()
    token = str(form.get("token", "")).strip()[:500]
    principal = await ui.tokens.authenticate(token) if token else None
    if principal is None:
        ui.guard.failed(address)
        return render(
            request,
            "login.html",
            **_session_terms(request),
            status=401,
            next=str(form.get("next", "")),
            error="Nyckeln känns inte igen. Kontrollera att du har klistrat in hela nyckeln (den börjar med skt_) "
            "och att den varken har återkallats eller gått ut.",
        )
    session = await ui.sessions.start(principal)
    response = see_other(request, _safe_next(request, str(form.get("next", ""))))
    # No max-age: the cookie ends with the browser; the session ends in the store (idle, age, logout).
    response.set_cookie(
        COOKIE, session, path=cookie_path(request), httponly=True, samesite="Strict", secure=request.secure
    )
    return response


async def logout(request: web.Request) -> web.StreamResponse:
    session = request.cookies.get(COOKIE)
    if session:
        await ui_of(request).sessions.end(session)
    response = see_other(request, url(request, "login"), "Du är utloggad.")
    response.del_cookie(COOKIE, path=cookie_path(request))
    return response


def _session_terms(request: web.Request) -> dict[str, int]:
    """How long a session lasts, for the sign-in page."""
    sessions = ui_of(request).sessions
    return {
        "idle_minutes": round(sessions.idle.total_seconds() / 60),
        "max_hours": round(sessions.absolute.total_seconds() / 3600),
    }
