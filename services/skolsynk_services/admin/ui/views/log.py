"""Logg: the audit log of one organiser, and all of it for operators."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from skolsynk_services.admin.ui.page import principal_of, render, service_of, tenant_frame
from skolsynk_services.admin.ui.paging import Paging, paged_in_store
from skolsynk_services.admin.ui.texts import AUDIT_ACTIONS


def _audit_row(entry: Mapping[str, Any]) -> dict[str, Any]:
    def dumped(value: Any) -> str | None:
        return None if value is None else json.dumps(value, ensure_ascii=False, indent=2, default=str)

    return {
        **entry,
        "label": AUDIT_ACTIONS.get(entry.get("action", ""), entry.get("action", "")),
        "before_json": dumped(entry.get("before")),
        "after_json": dumped(entry.get("after")),
    }


async def _page(request: web.Request, tenant_id: str | None) -> tuple[list[dict[str, Any]], Paging]:
    """One page of the audit log, paged and searched in the store; the search also finds the actions whose
    Swedish label contains it ("gick live")."""
    service, principal = service_of(request), principal_of(request)

    async def fetch(search: str, skip: int, limit: int) -> tuple[list[dict[str, Any]], int]:
        lowered = search.lower()
        actions = tuple(action for action, label in AUDIT_ACTIONS.items() if lowered and lowered in label.lower())
        return await service.audit_page(principal, tenant_id, search=search, actions=actions, skip=skip, limit=limit)

    entries, paging = await paged_in_store(request, fetch)
    return [_audit_row(e) for e in entries], paging


async def log(request: web.Request) -> web.StreamResponse:
    frame = await tenant_frame(request, "log")
    entries, paging = await _page(request, frame["tenant_id"])
    return render(request, "log.html", **frame, entries=entries, paging=paging, platform=False)


async def platform_log(request: web.Request) -> web.StreamResponse:
    entries, paging = await _page(request, None)
    return render(request, "log.html", entries=entries, paging=paging, platform=True)
