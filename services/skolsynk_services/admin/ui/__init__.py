"""The admin web UI (issue 9): Swedish, server-rendered pages for organisers' IT admins and operators.

An aiohttp sub-application (the service mounts it at ``/ui``) on top of :class:`admin.service.AdminService`:
every page calls the service with the signed-in :class:`Principal`, so what someone may see and do is
decided in one place, for the API and the UI alike. Plain HTML forms with POST-redirect-GET, no
JavaScript at all; the sync-history chart is inline SVG drawn here.

Security:

* **sign-in**: an API token pasted into a form becomes the cookie ``skolsynk_session`` (HttpOnly,
  SameSite=Strict, Secure over TLS, path of the UI); every page but the sign-in page requires it and
  sends whoever lacks a valid one to the sign-in page;
* **CSRF**: SameSite=Strict, and every POST must carry an ``Origin`` (or, without one, a ``Referer``)
  whose host and port are the request's ``Host``, otherwise 403;
* a Content-Security-Policy that allows no scripts (the inline style carries a per-response nonce),
  no framing, no caching of pages (they hold personal data);
* source secrets are write-only: forms never echo them, pages only say "lagrad" (stored).

Modules: ``routes`` (the application: middleware, every URL and route name), ``middleware`` (security
headers, error pages, CSRF, the session), ``page`` (what every handler uses: rendering, URLs,
redirects with a one-time message), ``texts`` (the Swedish wording), ``formatting`` and ``chart``, and
``views/`` with one module per page group. The templates are in ``admin/templates``.
"""

from __future__ import annotations

from skolsynk_services.admin.ui.middleware import COOKIE
from skolsynk_services.admin.ui.routes import build_ui

__all__ = ["COOKIE", "build_ui"]
