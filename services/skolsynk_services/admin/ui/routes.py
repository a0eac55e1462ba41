"""The UI as an aiohttp sub-application: its middleware, and every page's URL and route name (the names
that ``url(...)`` and the templates use)."""

from __future__ import annotations

from aiohttp import web

from skolsynk_services.admin.auth import SessionStore, TokenStore
from skolsynk_services.admin.limits import FailureGuard
from skolsynk_services.admin.service import AdminService
from skolsynk_services.admin.ui.middleware import csrf_protection, problems_as_pages, security_headers, session_required
from skolsynk_services.admin.ui.page import UI_KEY, Handler, Ui, environment
from skolsynk_services.admin.ui.views import (
    access,
    catalogue,
    gdpr,
    holds,
    identity,
    lifecycle,
    log,
    overview,
    persons,
    quality,
    signin,
    sources,
    subscriptions,
    tenants,
)


def build_ui(
    service: AdminService, sessions: SessionStore, tokens: TokenStore, *, guard: FailureGuard | None = None
) -> web.Application:
    """The UI as a sub-application; mount it with ``app.add_subapp("/ui", build_ui(...))``. ``guard`` counts
    failed sign-ins per client address (shared with the API's failed authentications)."""
    app = web.Application(middlewares=[security_headers, problems_as_pages, csrf_protection, session_required])
    app[UI_KEY] = Ui(service, sessions, tokens, guard or FailureGuard(10), environment())

    def route(path: str, name: str, get: Handler | None = None, post: Handler | None = None) -> None:
        resource = app.router.add_resource(path, name=name)
        if get is not None:
            resource.add_route("GET", get)
        if post is not None:
            resource.add_route("POST", post)

    tenant = "/t/{tenant}"
    route("/", "home", get=tenants.home)
    route("/login", "login", get=signin.login_page, post=signin.login)
    route("/login/oidc/callback", "oidc_callback", get=signin.oidc_callback)
    route("/login/oidc/{provider}", "oidc_start", get=signin.oidc_start)
    route("/logout", "logout", post=signin.logout)
    route("/tenants", "tenants", post=tenants.create_tenant)
    route("/log", "platform_log", get=log.platform_log)
    route("/catalogue", "catalogue", get=catalogue.catalogue, post=catalogue.catalogue_save)
    route("/catalogue/{vendor}", "catalogue_edit", get=catalogue.catalogue_edit)
    route("/catalogue/{vendor}/retire", "catalogue_retire", post=catalogue.catalogue_retire)
    route("/catalogue/{vendor}/credentials", "credential_save", post=catalogue.credential_save)
    route("/catalogue/{vendor}/credentials/{tenant}/delete", "credential_delete", post=catalogue.credential_delete)
    route(tenant + "/", "overview", get=overview.overview)
    route(tenant + "/contacts", "contacts", post=overview.contacts_save)
    route(tenant + "/privacy", "privacy", post=overview.privacy_save)
    route(tenant + "/sources", "sources", get=sources.sources)
    route(tenant + "/sources/new", "source_new", get=sources.source_new, post=sources.source_save)
    route(tenant + "/sources/consent", "microsoft_consent", post=sources.microsoft_consent)
    route("/consent/microsoft", "microsoft_consent_done", get=sources.microsoft_consent_done)
    route(tenant + "/sources/{source}/edit", "source_edit", get=sources.source_edit, post=sources.source_save)
    route(tenant + "/sources/{source}/sync", "source_sync", post=sources.source_sync)
    route(tenant + "/sources/{source}/check", "source_check", post=sources.source_check)
    route(tenant + "/sources/{source}/delete", "source_delete", post=sources.source_delete)
    route(tenant + "/sources/{source}/egil", "egil_client", get=sources.egil_client)
    route(tenant + "/sources/{source}/egil/api-key", "egil_api_key", post=sources.egil_api_key)
    route(tenant + "/sources/{source}/egil/api-key/revoke", "egil_api_key_revoke", post=sources.egil_api_key_revoke)
    route(tenant + "/sources/{source}/egil/certificates", "egil_certificate", post=sources.egil_certificate)
    route(
        tenant + "/sources/{source}/egil/certificates/remove",
        "egil_certificate_remove",
        post=sources.egil_certificate_remove,
    )
    route(tenant + "/quality", "quality", get=quality.quality, post=quality.quality_search)
    route(tenant + "/findings.csv", "findings_csv", get=quality.findings_csv, post=quality.findings_csv)
    route(tenant + "/persons", "persons", get=persons.persons, post=persons.persons_search)
    route(tenant + "/persons/{person_id}", "person", get=persons.person)
    route(tenant + "/vendors", "vendors", get=subscriptions.vendors)
    route(
        tenant + "/vendors/new",
        "subscription_new",
        get=subscriptions.subscription_new,
        post=subscriptions.subscription_post,
    )
    route(tenant + "/vendors/{vendor}", "subscription", get=lifecycle.subscription_page)
    route(tenant + "/vendors/{vendor}/search", "subscription_search", post=lifecycle.subscription_page)
    route(
        tenant + "/vendors/{vendor}/edit",
        "subscription_edit",
        get=subscriptions.subscription_edit,
        post=subscriptions.subscription_post,
    )
    route(tenant + "/vendors/{vendor}/review", "subscription_review", post=lifecycle.mark_reviewed)
    route(tenant + "/vendors/{vendor}/go-live", "subscription_go_live", post=lifecycle.go_live)
    route(tenant + "/vendors/{vendor}/test-mode", "subscription_test_mode", post=lifecycle.back_to_test)
    route(
        tenant + "/vendors/{vendor}/end", "subscription_end", get=lifecycle.end_confirm, post=lifecycle.end_subscription
    )
    route(tenant + "/vendors/{vendor}/report.csv", "delivery_report", get=lifecycle.delivery_report)
    route(tenant + "/holds", "holds", get=holds.holds, post=holds.decide_hold)
    route(tenant + "/holds/{vendor}/{unit}", "hold", get=holds.hold)
    route(tenant + "/gdpr", "gdpr", get=gdpr.gdpr, post=gdpr.gdpr_search)
    route(tenant + "/gdpr/requests", "erasure_requests", post=gdpr.request_erasure)
    route(tenant + "/gdpr/requests/{request_id}/withdraw", "erasure_withdraw", post=gdpr.withdraw_erasure)
    route(tenant + "/gdpr/evidence.{format:csv|json}", "evidence", get=gdpr.evidence)
    route(tenant + "/log", "log", get=log.log)
    route(tenant + "/access", "access", get=access.access, post=access.create_token)
    route(tenant + "/access/{token}/revoke", "token_revoke", post=access.revoke_token)
    route("/operators", "operators", get=access.operators, post=access.create_operator_token)
    route("/operators/{token}/revoke", "operator_token_revoke", post=access.revoke_any_token)
    route("/identity", "identity", get=identity.identity)
    route("/identity/providers", "identity_provider_create", post=identity.provider_create)
    route(
        "/identity/providers/{provider}", "identity_provider", get=identity.provider_edit, post=identity.provider_save
    )
    route("/identity/providers/{provider}/delete", "identity_provider_delete", post=identity.provider_delete)
    route("/identity/rules", "account_rule_create", post=identity.rule_create)
    route("/identity/rules/{rule}/delete", "account_rule_delete", post=identity.rule_delete)
    return app
