"""Logg: the audit log of one organiser, and all of it for operators."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from skolsynk_services.admin.ui.page import principal_of, render, service_of, tenant_frame
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


async def log(request: web.Request) -> web.StreamResponse:
    frame = await tenant_frame(request, "log")
    entries = await service_of(request).audit(principal_of(request), frame["tenant_id"])
    return render(request, "log.html", **frame, entries=[_audit_row(e) for e in entries], platform=False)


async def platform_log(request: web.Request) -> web.StreamResponse:
    entries = await service_of(request).audit(principal_of(request), None)
    return render(request, "log.html", entries=[_audit_row(e) for e in entries], platform=True)
