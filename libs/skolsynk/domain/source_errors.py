"""Why a source run failed, in words an IT admin can act on.

Connectors report failures as short codes in ``SourceRunCompleted.errors`` (no personal data). A code
is ``{endpoint or step}:{reason}`` or just ``{reason}``; the *reason* part is looked up here so the admin
UI can show a fix hint next to each code of a failed run (on Källor; its Swedish wording is
``SOURCE_ERROR_TEXTS`` in ``skolsynk_services/admin/ui/texts.py``). Each connector owns its block.
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
    "page_token_repeated": SourceErrorHint(
        "The SS 12000 API sent the same page token twice",
        "Its paging would never end, so the run was stopped with nothing removed. Report it to the school "
        "administration system's supplier (the next page must come with a new pageToken).",
        needs_admin=True,
    ),
    "page_cap_reached": SourceErrorHint(
        "A listing of the SS 12000 API had more pages than allowed",
        "The run was stopped with nothing removed. If the organiser really is that large, the operator raises "
        "SKOLSYNK_SS12000_MAX_PAGES_PER_LISTING; otherwise the API's paging is wrong: report it to the supplier.",
        needs_admin=True,
    ),
    "run_deadline_exceeded": SourceErrorHint(
        "The run took longer than allowed",
        "The run was stopped with nothing removed; the next one starts over. If the API is this slow, ask the "
        "supplier why, or the operator raises SKOLSYNK_SS12000_RUN_DEADLINE_SECONDS.",
        needs_admin=False,
    ),
}

# --- Google Workspace connector (services/skolsynk_services/google_connector) -----------------------------------------
GOOGLE_HINTS: dict[str, SourceErrorHint] = {
    "invalid_grant": SourceErrorHint(
        "Google refused the service account's sign-in",
        "Check the delegated admin (delegated_admin must be an existing administrator's address) and the "
        "domain-wide delegation scopes in the Admin console (Security > Access and data control > API controls > "
        "Domain-wide delegation); also that the key was not deleted and the server clock is right.",
        needs_admin=True,
    ),
    "unauthorized_client": SourceErrorHint(
        "Domain-wide delegation is missing or lacks a scope",
        "In the Admin console (Security > Access and data control > API controls > Domain-wide delegation) add "
        "the service account's client id with every scope listed in docs/google-connector.md. A change can "
        "take up to 24 hours to apply.",
        needs_admin=True,
    ),
    "invalid_client": SourceErrorHint(
        "Google does not know the service account",
        "Create a new JSON key for the service account and store it where the source's key_env or key_file points.",
        needs_admin=True,
    ),
    "invalid_scope": SourceErrorHint(
        "Google refused the requested scopes", "Report this to the skolsynk operators.", needs_admin=True
    ),
    "invalid_key": SourceErrorHint(
        "The service-account key cannot be read",
        "Store the service account's JSON key file, unchanged, where key_env or key_file points.",
        needs_admin=True,
    ),
    **dict.fromkeys(
        ("forbidden", "not_authorized"),
        SourceErrorHint(
            "The delegated admin may not read the directory",
            "The service account acts as the configured delegated_admin: make that account a Workspace "
            "administrator allowed to read users, groups and organisational units (super admin, or a role with "
            "the Admin API privileges Users: Read, Groups: Read, Organizational Units: Read).",
            needs_admin=True,
        ),
    ),
    "insufficient_permissions": SourceErrorHint(
        "A scope is missing from the access token",
        "Add the missing scope (see docs/google-connector.md) to the service account's domain-wide delegation.",
        needs_admin=True,
    ),
    "auth_error": SourceErrorHint(
        "Google rejected the access token twice",
        "Retried at the next run. If it repeats, check that the service account and its key are still enabled.",
        needs_admin=False,
    ),
    **dict.fromkeys(
        ("user_rate_limit_exceeded", "rate_limit_exceeded", "quota_exceeded"),
        SourceErrorHint(
            "Google kept throttling the reads",
            "Retried at the next run. If it keeps happening, ask for a higher Admin SDK quota in the Google Cloud "
            "project of the service account, or lower SKOLSYNK_GOOGLE_MEMBERS_CONCURRENCY.",
            needs_admin=False,
        ),
    ),
    **dict.fromkeys(
        ("backend_error", "internal_error", "temporarily_unavailable", "http_500", "http_502", "http_503", "http_504"),
        SourceErrorHint("Google's Admin SDK had a server error", "Retried at the next run.", needs_admin=False),
    ),
    "not_found": SourceErrorHint(
        "Google did not find the customer or a group",
        "Check the source's customer (my_customer or the customer id) and domain.",
        needs_admin=True,
    ),
    "invalid": SourceErrorHint(
        "Google rejected a request as invalid",
        "Check that every OU in the mapping's scope exists, and the customer and domain settings.",
        needs_admin=True,
    ),
    "bad_request": SourceErrorHint(
        "Google rejected a request",
        "Check the source's customer and domain; an expired page token is retried at the next run.",
        needs_admin=True,
    ),
    "unmappable": SourceErrorHint(
        "Google returned users without an id",
        "Retried at the next run; nothing is removed meanwhile.",
        needs_admin=False,
    ),
    "timeout": SourceErrorHint("Google's Admin SDK timed out", "Retried at the next run.", needs_admin=False),
    "connection": SourceErrorHint("Google's Admin SDK is unreachable", "Retried at the next run.", needs_admin=False),
}

# --- Microsoft Graph / School Data Sync connector (services/skolsynk_services/graph_connector) ------------------------
MICROSOFT_HINTS: dict[str, SourceErrorHint] = {
    "invalid_client": SourceErrorHint(
        "Entra ID refused the app's credentials",
        "Check the app registration's client secret (it may have expired) and the client_secret_env variable.",
        needs_admin=True,
    ),
    "unauthorized_client": SourceErrorHint(
        "The app is not known in this Microsoft 365 tenant",
        "Check the client id, and that the organiser's admin has consented to the app in their tenant.",
        needs_admin=True,
    ),
    "invalid_scope": SourceErrorHint(
        "Entra ID refused the requested scope", "Use the scope https://graph.microsoft.com/.default.", needs_admin=True
    ),
    "tenant_not_found": SourceErrorHint(
        "The Microsoft 365 tenant does not exist",
        "Check azure_tenant_id: the directory (tenant) id or a verified domain of the organiser.",
        needs_admin=True,
    ),
    "invalid_request": SourceErrorHint(
        "Entra ID refused the token request", "Check azure_tenant_id, client id and token URL.", needs_admin=True
    ),
    "Authorization_RequestDenied": SourceErrorHint(
        "Microsoft Graph denied access",
        "Grant the app the application permissions EduRoster.Read.All and Member.Read.Hidden (class members) "
        "with admin consent in the organiser's tenant.",
        needs_admin=True,
    ),
    "AccessDenied": SourceErrorHint(
        "Microsoft Graph denied access",
        "Grant the app the EduRoster.Read.All application permission with admin consent.",
        needs_admin=True,
    ),
    "http_403": SourceErrorHint(
        "Microsoft Graph denied access",
        "Grant the app the EduRoster.Read.All and Member.Read.Hidden application permissions with admin consent.",
        needs_admin=True,
    ),
    "InvalidAuthenticationToken": SourceErrorHint(
        "Microsoft Graph refused a fresh token",
        "Check that the token URL and the Graph URL belong to the same cloud, and the app's tenant.",
        needs_admin=True,
    ),
    "http_401": SourceErrorHint(
        "Microsoft Graph refused a fresh token", "Check the tenant id and the app registration.", needs_admin=True
    ),
    "http_429": SourceErrorHint(
        "Microsoft Graph kept throttling", "Retried at the next run; lower the tenant's concurrency.", needs_admin=False
    ),
    "http_503": SourceErrorHint("Microsoft Graph was unavailable", "Retried at the next run.", needs_admin=False),
    "http_504": SourceErrorHint("Microsoft Graph timed out", "Retried at the next run.", needs_admin=False),
    "http_500": SourceErrorHint("Microsoft Graph failed", "Retried at the next run.", needs_admin=False),
    "timeout": SourceErrorHint("Microsoft Graph timed out", "Retried at the next run.", needs_admin=False),
    "connection": SourceErrorHint("Microsoft Graph is unreachable", "Retried at the next run.", needs_admin=False),
    "unmappable": SourceErrorHint(
        "Graph returned an object without an id",
        "Nothing was removed; the next run reads it again. Report it if it persists.",
        needs_admin=False,
    ),
    "syncStateNotFound": SourceErrorHint(
        "The delta token expired", "A full resync runs automatically.", needs_admin=False
    ),
    "resyncRequired": SourceErrorHint(
        "Graph asked for a resync", "A full resync runs automatically.", needs_admin=False
    ),
    "foreign_link": SourceErrorHint(
        "Graph returned a link to another host",
        "Check graph_base_url: it must be the host Graph's next links point to.",
        needs_admin=True,
    ),
}

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
