"""Signing in with an API token (it becomes the session cookie) and signing out."""

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
    return render(request, "login.html", next=request.query.get("next", ""), error=None)


async def login(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    token = str(form.get("token", "")).strip()
    principal = await ui_of(request).tokens.authenticate(token) if token else None
    if principal is None:
        return render(
            request,
            "login.html",
            status=401,
            next=str(form.get("next", "")),
            error="Nyckeln känns inte igen. Kontrollera att du har klistrat in hela nyckeln (den börjar med skt_) "
            "och att den inte har återkallats.",
        )
    response = see_other(request, _safe_next(request, str(form.get("next", ""))))
    response.set_cookie(
        COOKIE, token, path=cookie_path(request), httponly=True, samesite="Strict", secure=request.secure
    )
    return response


async def logout(request: web.Request) -> web.StreamResponse:
    response = see_other(request, url(request, "login"), "Du är utloggad.")
    response.del_cookie(COOKIE, path=cookie_path(request))
    return response
