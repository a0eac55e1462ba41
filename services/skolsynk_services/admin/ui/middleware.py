"""The UI's middleware, outermost first: security headers on every response, service errors as Swedish
error pages, CSRF (a POST must come from a page of this origin: scheme, host and port) and the session
(the principal of the server-side session named by the cookie ``skolsynk_session``; whoever lacks a live
one is sent to the sign-in page; a viewer's POST that would change something is refused).

Behind a TLS-terminating proxy the request's scheme and host are the browser's (``skolsynk.proxies``,
``SKOLSYNK_ADMIN_TRUSTED_PROXIES``), so the origin check and the cookie's ``Secure`` flag see HTTPS."""

from __future__ import annotations

from urllib.parse import urlsplit

from aiohttp import web

from skolsynk_services.admin.problems import Problem
from skolsynk_services.admin.ui.catalogue import text
from skolsynk_services.admin.ui.page import PRINCIPAL, Handler, cookie_path, render, see_other, ui_of, url
from skolsynk_services.admin.ui.texts import swedish

COOKIE = "skolsynk_session"
#: Routes that need no session (signing in, with a token or with an identity provider).
PUBLIC_ROUTES = frozenset({"login", "oidc_start", "oidc_callback"})
#: The POSTs a viewer may make: they change nothing (signing out; the GDPR person search, the data-quality
#: report's search and its CSV, and the search of a subscription's report: POSTs so that names never travel in
#: a URL).
VIEWER_POSTS = frozenset({"logout", "gdpr", "quality", "findings_csv", "subscription_search"})


def _origin(scheme: str, netloc: str) -> tuple[str, str, int | None]:
    parts = urlsplit(f"{scheme}://{netloc}")
    try:
        port = parts.port
    except ValueError:
        return ("", "", -1)
    default = {"http": 80, "https": 443}.get(scheme)
    return (scheme, (parts.hostname or "").lower(), port if port is not None else default)


def same_origin(request: web.Request) -> bool:
    """Whether a state-changing request comes from a page of this origin: its Origin (or, when the
    browser sends none, its Referer) names the scheme, host and port the request was sent to (as the
    browser sent it: behind a trusted proxy, its forwarded scheme and host)."""
    origin = request.headers.get("Origin")
    claimed = origin if origin is not None else request.headers.get("Referer")
    if not claimed or claimed == "null":
        return False
    parts = urlsplit(claimed)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return False
    return _origin(parts.scheme, parts.netloc) == _origin(request.scheme, request.host)


@web.middleware
async def security_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    response = await handler(request)
    response.headers.setdefault("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'")
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["Cache-Control"] = "no-store"
    return response


@web.middleware
async def problems_as_pages(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A service error that reaches here (mostly on pages, GET) becomes a Swedish error page."""
    try:
        return await handler(request)
    except Problem as problem:
        return render(request, "error.html", status=problem.status, message=swedish(problem))


@web.middleware
async def csrf_protection(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.method not in ("GET", "HEAD", "OPTIONS") and not same_origin(request):
        return render(request, "error.html", status=403, message=text("problems.cross_site"))
    return await handler(request)


@web.middleware
async def session_required(request: web.Request, handler: Handler) -> web.StreamResponse:
    resource = request.match_info.route.resource
    name = resource.name if resource is not None else None
    session = request.cookies.get(COOKIE)
    principal = await ui_of(request).sessions.resume(session) if session else None
    request[PRINCIPAL] = principal
    if principal is not None and "tenant" in request.match_info:
        principal.require_tenant(request.match_info["tenant"])  # before any form is read (the service checks too)
    if principal is not None and request.method == "POST" and name not in VIEWER_POSTS:
        principal.require_change()  # a viewer's page may show a form; sending it is refused (403 page)
    if principal is not None or name in PUBLIC_ROUTES or resource is None:
        return await handler(request)
    next_path = request.path_qs if request.method == "GET" else None
    response = see_other(request, url(request, "login", {"next": next_path}))
    if session:
        response.del_cookie(COOKIE, path=cookie_path(request))
    return response
