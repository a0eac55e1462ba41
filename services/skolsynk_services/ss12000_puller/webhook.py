"""The SS 12000 ``/subscriptions`` callback: ``POST /ss12000/notify/{tenant_id}/{source_id}``.

The body (``{"modifiedEntites" | "modifiedEntities": [...], "deletedEntities": bool}``, both spellings,
resource types as strings or ``{"resource": ...}`` objects) is only a trigger: it carries no ids, so the
answer to any valid notice is an incremental pull of that source. The caller must present the source's
shared secret in ``X-Skolsynk-Webhook-Secret`` or as ``Authorization: Bearer <secret>`` (missing: 401,
wrong: 403), or call the **notice address** ``POST /ss12000/notify/{tenant_id}/{source_id}/{token}`` whose
last segment is :func:`notice_token`, derived from the secret: the spec gives notices no authentication,
so the subscription the puller makes at the source names that address (a source can send no header). A
wrong token is a 403, as a wrong secret. Sources without a configured secret have no webhook.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from skolsynk.connectors.scheduling import UnknownSource
from skolsynk.json_input import UnsafeJson, parse_json
from skolsynk.logging import get_logger
from skolsynk_services.ss12000_puller.connector import Ss12000Connector

log = get_logger(__name__)

SECRET_HEADER = "X-Skolsynk-Webhook-Secret"  # noqa: S105 (a header name)
MAX_BODY_BYTES = 64 * 1024
CONNECTOR_KEY = web.AppKey("connector", Ss12000Connector)


def notice_token(secret: str, tenant_id: str, source_id: str) -> str:
    """The last segment of the source's notice address: an HMAC-SHA256 of its ids keyed by its webhook secret
    (so the secret itself never travels in a URL; a new secret gives a new address)."""
    message = f"ss12000-notice:{tenant_id}/{source_id}".encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def notice_address(webhook_url: str, secret: str, tenant_id: str, source_id: str) -> str:
    """The address the source's subscription names: ``webhook_url`` with the notice token appended."""
    return f"{webhook_url.rstrip('/')}/{notice_token(secret, tenant_id, source_id)}"


def _presented_secret(request: web.Request) -> str | None:
    value = request.headers.get(SECRET_HEADER)
    if value:
        return value
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


def _resource_types(body: Mapping[str, Any]) -> list[str] | None:
    raw = body.get("modifiedEntities", body.get("modifiedEntites", []))
    if raw is None:
        return []
    if not isinstance(raw, list):
        return None
    types: list[str] = []
    for item in raw:
        value = item.get("resource") if isinstance(item, Mapping) else item
        if not isinstance(value, str):
            return None
        types.append(value)
    return types


async def notify(request: web.Request) -> web.Response:
    """A source's change notice. Who may call is checked before anything is told about the source: no
    secret is a 401 and a wrong one a 403 whether the source exists or not, so the webhook never tells which
    organisers and sources there are (why is logged for the operator; the ids only of a source that exists)."""
    connector = request.app[CONNECTOR_KEY]
    tenant_id, source_id = request.match_info["tenant_id"], request.match_info["source_id"]
    token = request.match_info.get("token")
    presented = token if token is not None else _presented_secret(request)
    if presented is None:
        return web.json_response({"code": "unauthorized", "message": "secret missing"}, status=401)
    try:
        source = connector.source(tenant_id, source_id)
        secret = connector.webhook_secret(source)
    except UnknownSource:
        secret = None
    expected = secret if secret is None or token is None else notice_token(secret, tenant_id, source_id)
    if expected is None:
        # The path is the caller's: not logged (it may be anything), only that no such webhook exists.
        log.warning("ss12000_webhook_rejected", reason="no_such_webhook")
        return web.json_response({"code": "forbidden", "message": "secret not accepted"}, status=403)
    if not secrets.compare_digest(presented.encode(), expected.encode()):
        log.warning("ss12000_webhook_rejected", tenant_id=tenant_id, source_id=source_id, reason="wrong_secret")
        return web.json_response({"code": "forbidden", "message": "secret not accepted"}, status=403)
    try:
        body = parse_json(await request.read() or b"{}")
    except UnsafeJson as error:
        return web.json_response({"code": "invalid_json", "message": str(error)}, status=400)
    types = _resource_types(body) if isinstance(body, Mapping) else None
    deleted = body.get("deletedEntities", False) if isinstance(body, Mapping) else None
    if types is None or not isinstance(deleted, bool):
        return web.json_response({"code": "invalid_notice", "message": "not a subscription notice"}, status=400)
    log.info(
        "ss12000_webhook_notice",
        tenant_id=source.tenant_id,
        source_id=source.source_id,
        resource_types=sorted(set(types))[:20],
        deleted_entities=deleted,
    )
    connector.trigger(source, mode="incremental")
    return web.json_response({"status": "accepted"})


def make_webhook_app(connector: Ss12000Connector) -> web.Application:
    """The webhook of every source the connector serves that has a shared secret."""
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app[CONNECTOR_KEY] = connector
    app.router.add_post("/ss12000/notify/{tenant_id}/{source_id}", notify)
    app.router.add_post("/ss12000/notify/{tenant_id}/{source_id}/{token}", notify)
    return app
