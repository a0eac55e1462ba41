"""Why a source run failed, in words an IT admin can act on.

Connectors report failures as short codes in ``SourceRunCompleted.errors`` (no personal data). A code
is ``{endpoint or step}:{reason}`` or just ``{reason}``; the *reason* part is looked up here so the admin
UI and the operator CLI can show a fix hint next to a failed run. Each connector owns its block.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SourceErrorHint:
    title: str
    fix: str
    #: True when retrying later cannot help until someone changes configuration or permissions.
    needs_admin: bool


# --- SS 12000 puller -------------------------------------------------------------------------------
SS12000_HINTS: dict[str, SourceErrorHint] = {
    "token_not_configured": SourceErrorHint(
        "No credentials for the SS 12000 API", "Configure the source's client id and secret.", needs_admin=True
    ),
    "token_http_401": SourceErrorHint(
        "The SS 12000 API refused the credentials",
        "Check the client id and secret with the school administration system's supplier.",
        needs_admin=True,
    ),
    "http_403": SourceErrorHint(
        "The SS 12000 API denied access", "Ask the supplier to grant the client read access.", needs_admin=True
    ),
    "timeout": SourceErrorHint("The SS 12000 API timed out", "Retried at the next run.", needs_admin=False),
    "connection": SourceErrorHint("The SS 12000 API is unreachable", "Retried next run.", needs_admin=False),
}

# --- Google Workspace connector (services/google_connector) -----------------------------------------
GOOGLE_HINTS: dict[str, SourceErrorHint] = {}

# --- Microsoft Graph / School Data Sync connector (services/graph_connector) ------------------------
MICROSOFT_HINTS: dict[str, SourceErrorHint] = {}

HINTS_BY_SOURCE_KIND: dict[str, dict[str, SourceErrorHint]] = {
    "ss12000": SS12000_HINTS,
    "google": GOOGLE_HINTS,
    "microsoft": MICROSOFT_HINTS,
}


def hint_for(source_kind: str, code: str) -> SourceErrorHint | None:
    """The hint for one error code of a run (``users:quota_exceeded`` is looked up as ``quota_exceeded``)."""
    hints = HINTS_BY_SOURCE_KIND.get(source_kind, {})
    reason = code.rsplit(":", 1)[-1]
    return hints.get(code) or hints.get(reason)
