"""The admin REST API (``/api/v1``): a table of endpoints, each a thin adapter from HTTP to one
:class:`AdminService` method. The same table produces the OpenAPI document (``openapi.py``).

Every endpoint requires a bearer token; errors are ``application/problem+json``."""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from aiohttp import web
from pydantic import BaseModel, TypeAdapter, ValidationError

import skolsynk
from skolsynk.catalogue import VendorCatalogueEntry
from skolsynk.domain.quality import FindingCode, Severity
from skolsynk.json_input import UnsafeJson, parse_json
from skolsynk.logging import get_logger
from skolsynk_services.admin import models
from skolsynk_services.admin.auth import Authenticator, Principal, authenticate, bearer
from skolsynk_services.admin.limits import FailureGuard, RequestRate
from skolsynk_services.admin.problems import (
    Invalid,
    NotFound,
    Problem,
    TooManyRequests,
    Unauthenticated,
    problem_response,
)
from skolsynk_services.admin.service import AdminService
from skolsynk_services.admin.service.holds import HOLDS_PAGE
from skolsynk_services.admin.service.quality import FINDINGS_LIMIT
from skolsynk_services.admin.service.reports import REPORT_PAGE_LIMIT, SEARCH_LIMIT
from skolsynk_services.admin.service.signin import RULES_PAGE

log = get_logger(__name__)

SERVICE = web.AppKey("admin_service", AdminService)
PRINCIPAL = web.RequestKey("principal", Principal)
PREFIX = "/api/v1"
TENANT_ID = models.ID
JsonObject = dict[str, Any]


@dataclass(frozen=True)
class QueryParam:
    name: str
    description: str
    enum: type[StrEnum] | None = None
    kind: str = "string"  # "string" | "integer"


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str
    summary: str
    tag: str
    call: Callable[[web.Request, Principal, Any], Awaitable[Any]]
    body: type[BaseModel] | None = None
    response: Any = None  # a pydantic model, list[...] type, dict, or "text/csv"
    status: int = 200
    query: tuple[QueryParam, ...] = ()
    operator_only: bool = False
    #: A POST that changes nothing (a search whose terms are personal data): viewers may call it.
    read_only: bool = False
    media_type: str = "application/json"
    params: tuple[str, ...] = field(default=())
    #: A page of a longer list: the call returns :class:`Counted`, the body is the page and the header
    #: ``X-Total-Count`` the length of the whole list (``skip``/``limit`` choose the page).
    counted: bool = False


#: The header that tells a page's client how long the whole list is.
TOTAL_COUNT = "X-Total-Count"


@dataclass(frozen=True)
class Counted:
    """A page of a list (the response body) and the whole list's length (the ``X-Total-Count`` header)."""

    items: list[Any]
    total: int


def paging_params(limit: int) -> tuple[QueryParam, ...]:
    """The query parameters of a counted list: ``skip`` and ``limit`` (at most ``limit``)."""
    return (
        QueryParam(
            "skip", "How many of the list to skip (paging; the whole length is in X-Total-Count).", kind="integer"
        ),
        QueryParam("limit", f"How many to return, at most {limit} (the default).", kind="integer"),
    )


ENDPOINTS: list[Endpoint] = []


def endpoint(method: str, path: str, summary: str, tag: str, **options: Any) -> Callable[[Any], Any]:
    def register(call: Callable[[web.Request, Principal, Any], Awaitable[Any]]) -> Any:
        params = tuple(part[1:-1] for part in path.split("/") if part.startswith("{"))
        ENDPOINTS.append(Endpoint(method, path, summary, tag, call, params=params, **options))
        return call

    return register


def _service(request: web.Request) -> AdminService:
    return request.app[SERVICE]


def _query(request: web.Request, name: str, enum: type[StrEnum] | None = None) -> Any:
    value = request.query.get(name)
    if value is None or value == "":
        return None
    if enum is not None:
        try:
            return enum(value)
        except ValueError:
            raise Invalid(f"{name} must be one of {', '.join(e.value for e in enum)}") from None
    return value


def _integer(request: web.Request, name: str, default: int, maximum: int) -> int:
    """A whole-number query parameter between 0 and ``maximum``."""
    value = request.query.get(name)
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        raise Invalid(f"{name} must be a whole number") from None
    if not 0 <= number <= maximum:
        raise Invalid(f"{name} must be between 0 and {maximum}")
    return number


def _uuid(value: str, what: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise NotFound(f"no {what} with that id") from None


# --- identity and tenants ----------------------------------------------------------------------


@endpoint("GET", "/version", "Which skolsynk version answers", "meta", response=JsonObject)
async def version(request: web.Request, principal: Principal, _: Any) -> dict[str, str]:
    return {"service": "admin", "version": skolsynk.__version__}


@endpoint("GET", "/me", "Who the token belongs to", "meta", response=models.Me)
async def me(request: web.Request, principal: Principal, _: Any) -> models.Me:
    return models.Me(subject=principal.subject, role=principal.role.value, tenant_id=principal.tenant_id)


@endpoint("GET", "/tenants", "Organisers the token may see", "tenants", response=list[models.Tenant])
async def list_tenants(request: web.Request, principal: Principal, _: Any) -> Any:
    return await _service(request).list_tenants(principal)


@endpoint("POST", "/tenants", "Add an organiser (operators)", "tenants", body=models.TenantIn,
          response=models.Tenant, status=201, operator_only=True)  # fmt: skip
async def create_tenant(request: web.Request, principal: Principal, body: models.TenantIn) -> Any:
    return await _service(request).create_tenant(principal, body)


@endpoint("GET", "/tenants/{tenant}", "One organiser", "tenants", response=models.Tenant)
async def get_tenant(request: web.Request, principal: Principal, _: Any) -> Any:
    return await _service(request).get_tenant(principal, request.match_info["tenant"])


@endpoint(
    "GET", "/tenants/{tenant}/overview", "The onboarding checklist and key numbers", "tenants", response=JsonObject
)
async def overview(request: web.Request, principal: Principal, _: Any) -> Any:
    return await _service(request).overview(principal, request.match_info["tenant"])


@endpoint("GET", "/tenants/{tenant}/contacts", "Who is told when deliveries fail and recover", "tenants",
          response=models.Contacts)  # fmt: skip
async def get_contacts(request: web.Request, principal: Principal, _: Any) -> Any:
    return await _service(request).get_contacts(principal, request.match_info["tenant"])


@endpoint("PUT", "/tenants/{tenant}/contacts", "Set who is told when deliveries fail and recover", "tenants",
          body=models.ContactsIn, response=models.Contacts)  # fmt: skip
async def set_contacts(request: web.Request, principal: Principal, body: models.ContactsIn) -> Any:
    return await _service(request).set_contacts(principal, request.match_info["tenant"], body)


@endpoint("GET", "/tenants/{tenant}/privacy", "How persons without a securityMarking are treated", "tenants",
          response=models.Privacy)  # fmt: skip
async def get_privacy(request: web.Request, principal: Principal, _: Any) -> Any:
    return await _service(request).get_privacy(principal, request.match_info["tenant"])


@endpoint("PUT", "/tenants/{tenant}/privacy", "Set how persons without a securityMarking are treated", "tenants",
          body=models.PrivacyIn, response=models.Privacy)  # fmt: skip
async def set_privacy(request: web.Request, principal: Principal, body: models.PrivacyIn) -> Any:
    return await _service(request).set_privacy(principal, request.match_info["tenant"], body)


@endpoint("GET", "/tenants/{tenant}/notifications", "What the organiser was told (failing and recovered deliveries)",
          "tenants", response=list[models.Notification])  # fmt: skip
async def notifications(request: web.Request, principal: Principal, _: Any) -> Any:
    return await _service(request).notifications(principal, request.match_info["tenant"])


@endpoint("GET", "/tenants/{tenant}/tokens", "API tokens of the organiser (no secrets)", "tokens",
          response=list[models.TokenInfo])  # fmt: skip
async def list_tokens(request: web.Request, principal: Principal, _: Any) -> Any:
    return await _service(request).list_tokens(principal, request.match_info["tenant"])


@endpoint("POST", "/tenants/{tenant}/tokens", "Create an API token (shown once)", "tokens", body=models.TokenIn,
          response=models.TokenCreated, status=201)  # fmt: skip
async def create_token(request: web.Request, principal: Principal, body: models.TokenIn) -> Any:
    return await _service(request).create_token(principal, request.match_info["tenant"], body)


@endpoint("DELETE", "/tenants/{tenant}/tokens/{token_id}", "Revoke an API token (its UI sessions end)", "tokens",
          status=204)  # fmt: skip
async def revoke_token(request: web.Request, principal: Principal, _: Any) -> None:
    await _service(request).revoke_token(principal, request.match_info["tenant"], request.match_info["token_id"])


@endpoint("GET", "/tokens", "Every API token, operators' first (no secrets)", "tokens",
          response=list[models.TokenInfo], operator_only=True)  # fmt: skip
async def list_all_tokens(request: web.Request, principal: Principal, _: Any) -> Any:
    return await _service(request).list_tokens(principal, None)


@endpoint("POST", "/tokens", "Create an operator token (shown once)", "tokens", body=models.TokenIn,
          response=models.TokenCreated, status=201, operator_only=True)  # fmt: skip
async def create_operator_token(request: web.Request, principal: Principal, body: models.TokenIn) -> Any:
    if "role" not in body.model_fields_set:
        body = body.model_copy(update={"role": "operator"})
    return await _service(request).create_token(principal, None, body)


@endpoint("DELETE", "/tokens/{token_id}", "Revoke any API token (its UI sessions end)", "tokens", status=204,
          operator_only=True)  # fmt: skip
async def revoke_any_token(request: web.Request, principal: Principal, _: Any) -> None:
    await _service(request).revoke_token(principal, None, request.match_info["token_id"])


# --- signing in with Microsoft or Google (operators) ---------------------------------------------------


@endpoint("GET", "/identity-providers", "The OpenID Connect providers the sign-in page offers (no secrets)",
          "signin", response=list[models.IdentityProvider], operator_only=True)  # fmt: skip
async def list_identity_providers(request: web.Request, principal: Principal, _: Any) -> Any:
    return await _service(request).list_identity_providers(principal)


@endpoint("POST", "/identity-providers", "Add an identity provider (its discovery document is read first)",
          "signin", body=models.IdentityProviderIn, response=models.IdentityProvider, status=201,
          operator_only=True)  # fmt: skip
async def create_identity_provider(request: web.Request, principal: Principal, body: models.IdentityProviderIn) -> Any:
    return await _service(request).create_identity_provider(principal, body)


@endpoint("GET", "/identity-providers/{provider_id}", "One identity provider (no secret)", "signin",
          response=models.IdentityProvider, operator_only=True)  # fmt: skip
async def get_identity_provider(request: web.Request, principal: Principal, _: Any) -> Any:
    return await _service(request).get_identity_provider(principal, request.match_info["provider_id"])


@endpoint("PATCH", "/identity-providers/{provider_id}", "Change an identity provider (disabled: its sessions end)",
          "signin", body=models.IdentityProviderUpdate, response=models.IdentityProvider,
          operator_only=True)  # fmt: skip
async def update_identity_provider(
    request: web.Request, principal: Principal, body: models.IdentityProviderUpdate
) -> Any:
    return await _service(request).update_identity_provider(principal, request.match_info["provider_id"], body)


@endpoint("DELETE", "/identity-providers/{provider_id}", "Remove an identity provider, its account rules and "
          "sessions", "signin", status=204, operator_only=True)  # fmt: skip
async def delete_identity_provider(request: web.Request, principal: Principal, _: Any) -> None:
    await _service(request).delete_identity_provider(principal, request.match_info["provider_id"])


@endpoint("GET", "/account-rules", "Which signed-in accounts get which organiser and role, a page at a time",
          "signin", response=list[models.AccountRule], operator_only=True, counted=True,
          query=(QueryParam("q", "Only rules whose value, organiser or provider contains this."),
                 *paging_params(RULES_PAGE)))  # fmt: skip
async def list_account_rules(request: web.Request, principal: Principal, _: Any) -> Any:
    rules, total = await _service(request).list_account_rules(
        principal,
        search=_query(request, "q") or "",
        skip=_integer(request, "skip", 0, 10**9),
        limit=_integer(request, "limit", RULES_PAGE, RULES_PAGE) or RULES_PAGE,
    )
    return Counted(rules, total)


@endpoint("POST", "/account-rules", "Give signed-in accounts an organiser and role (the most specific rule wins)",
          "signin", body=models.AccountRuleIn, response=models.AccountRule, status=201,
          operator_only=True)  # fmt: skip
async def create_account_rule(request: web.Request, principal: Principal, body: models.AccountRuleIn) -> Any:
    return await _service(request).create_account_rule(principal, body)


@endpoint("DELETE", "/account-rules/{rule_id}", "Remove an account rule (the sessions it let in end)", "signin",
          status=204, operator_only=True)  # fmt: skip
async def delete_account_rule(request: web.Request, principal: Principal, _: Any) -> None:
    await _service(request).delete_account_rule(principal, request.match_info["rule_id"])


# --- sources and runs --------------------------------------------------------------------------


@endpoint("GET", "/tenants/{tenant}/sources", "Connected sources (secrets never returned)", "sources",
          response=list[models.Source])  # fmt: skip
async def list_sources(request: web.Request, principal: Principal, _: Any) -> Any:
    return await _service(request).list_sources(principal, request.match_info["tenant"])


@endpoint("POST", "/tenants/{tenant}/sources", "Connect a source", "sources", body=models.SourceIn,
          response=models.Source, status=201)  # fmt: skip
async def create_source(request: web.Request, principal: Principal, body: models.SourceIn) -> Any:
    return await _service(request).save_source(principal, request.match_info["tenant"], body, create=True)


@endpoint("GET", "/tenants/{tenant}/sources/{source_id}", "One source", "sources", response=models.Source)
async def get_source(request: web.Request, principal: Principal, _: Any) -> Any:
    info = request.match_info
    return await _service(request).get_source(principal, info["tenant"], info["source_id"])


@endpoint("PUT", "/tenants/{tenant}/sources/{source_id}", "Change a source (secrets replace by name)", "sources",
          body=models.SourceIn, response=models.Source)  # fmt: skip
async def update_source(request: web.Request, principal: Principal, body: models.SourceIn) -> Any:
    if body.source_id != request.match_info["source_id"]:
        raise Invalid("the source_id in the body must match the path")
    return await _service(request).save_source(principal, request.match_info["tenant"], body, create=False)


@endpoint("DELETE", "/tenants/{tenant}/sources/{source_id}", "Disconnect a source", "sources", status=204)
async def delete_source(request: web.Request, principal: Principal, _: Any) -> None:
    info = request.match_info
    await _service(request).delete_source(principal, info["tenant"], info["source_id"])


@endpoint("POST", "/tenants/{tenant}/sources/{source_id}/sync", "Read the source now", "sources",
          body=models.SyncIn, response=models.Accepted, status=202)  # fmt: skip
async def sync(request: web.Request, principal: Principal, body: models.SyncIn) -> Any:
    info = request.match_info
    message_id = await _service(request).request_sync(principal, info["tenant"], info["source_id"], body.mode)
    return models.Accepted(message_id=message_id)


@endpoint("POST", "/tenants/{tenant}/sources/{source_id}/check",
          "Test connection: the connector tries the saved source (token, first pages) and answers", "sources",
          response=models.SourceCheck)  # fmt: skip
async def check_source(request: web.Request, principal: Principal, _: Any) -> Any:
    info = request.match_info
    return await _service(request).check_source(principal, info["tenant"], info["source_id"])


@endpoint("POST", "/tenants/{tenant}/source-checks",
          "Test connection before saving: the connector tries these settings (stored secrets fill the gaps)",
          "sources", body=models.SourceIn, response=models.SourceCheck)  # fmt: skip
async def check_settings(request: web.Request, principal: Principal, body: models.SourceIn) -> Any:
    return await _service(request).check_source(principal, request.match_info["tenant"], body.source_id, body)


@endpoint("POST", "/tenants/{tenant}/microsoft-consents",
          "Connect Microsoft 365 with skolsynk's app: the admin-consent link (the source is saved on return)",
          "sources", body=models.MicrosoftConsentIn, response=models.MicrosoftConsent, status=201)  # fmt: skip
async def microsoft_consent(request: web.Request, principal: Principal, body: models.MicrosoftConsentIn) -> Any:
    service = _service(request)
    redirect_uri = service.consent_redirect_uri(str(request.url.origin()))
    return await service.start_microsoft_consent(
        principal, request.match_info["tenant"], body, redirect_uri=redirect_uri
    )


@endpoint("GET", "/tenants/{tenant}/sources/{source_id}/egil-client", "What the EGIL client's configuration needs",
          "sources", response=models.EgilConnection)  # fmt: skip
async def egil_client(request: web.Request, principal: Principal, _: Any) -> Any:
    info = request.match_info
    return await _service(request).egil_client(principal, info["tenant"], info["source_id"])


@endpoint("POST", "/tenants/{tenant}/sources/{source_id}/api-key",
          "A new API key for the EGIL client (shown once; replaces the old one)", "sources",
          response=models.EgilApiKey, status=201)  # fmt: skip
async def issue_api_key(request: web.Request, principal: Principal, _: Any) -> Any:
    info = request.match_info
    return await _service(request).issue_egil_api_key(principal, info["tenant"], info["source_id"])


@endpoint("DELETE", "/tenants/{tenant}/sources/{source_id}/api-key", "Revoke the EGIL client's API key",
          "sources", status=204)  # fmt: skip
async def revoke_api_key(request: web.Request, principal: Principal, _: Any) -> None:
    info = request.match_info
    await _service(request).revoke_egil_api_key(principal, info["tenant"], info["source_id"])


@endpoint("POST", "/tenants/{tenant}/sources/{source_id}/certificates",
          "Register an EGIL client certificate (its public-key pin is kept)", "sources",
          body=models.EgilCertificateIn, response=models.EgilConnection, status=201)  # fmt: skip
async def add_certificate(request: web.Request, principal: Principal, body: models.EgilCertificateIn) -> Any:
    info = request.match_info
    return await _service(request).add_egil_certificate(principal, info["tenant"], info["source_id"], body.pem)


@endpoint("DELETE", "/tenants/{tenant}/sources/{source_id}/certificates",
          "Remove an EGIL client certificate by its public-key pin", "sources", status=204,
          query=(QueryParam("pin", "The certificate's SHA-256 public-key pin (base64), as listed."),))  # fmt: skip
async def remove_certificate(request: web.Request, principal: Principal, _: Any) -> None:
    info = request.match_info
    pin = request.query.get("pin")
    if not pin:
        raise Invalid("give the certificate's pin", errors=[{"field": "pin", "message": "required"}])
    await _service(request).remove_egil_certificate(principal, info["tenant"], info["source_id"], pin)


@endpoint("GET", "/tenants/{tenant}/runs", "Sync history of the sources (newest first)", "history",
          response=list[JsonObject], query=(QueryParam("source_id", "Only this source."),))  # fmt: skip
async def runs(request: web.Request, principal: Principal, _: Any) -> Any:
    return await _service(request).runs(principal, request.match_info["tenant"], _query(request, "source_id"))


@endpoint("GET", "/tenants/{tenant}/vendor-history", "What each projection sent to the vendors", "history",
          response=list[JsonObject], query=(QueryParam("vendor_id", "Only this vendor."),))  # fmt: skip
async def vendor_history(request: web.Request, principal: Principal, _: Any) -> Any:
    return await _service(request).vendor_history(principal, request.match_info["tenant"], _query(request, "vendor_id"))


# --- data quality and school units ---------------------------------------------------------------

FINDING_FILTERS = (
    QueryParam("severity", "error or warning", enum=Severity),
    QueryParam("code", "A finding code (docs/data-quality.md)", enum=FindingCode),
    QueryParam("school_unit_code", "Only this school unit (8 digits; '-': the findings without one)."),
)


def _finding_filters(request: web.Request) -> dict[str, Any]:
    return {
        "severity": _query(request, "severity", Severity),
        "code": _query(request, "code", FindingCode),
        "school_unit_code": _query(request, "school_unit_code"),
    }


@endpoint("GET", "/tenants/{tenant}/findings", "Data-quality findings, a page at a time (errors first, by school unit "
          "and code), with names, the offending value and a duplicate's other party for roles that may see "
          "personal data (to search them, POST to /findings/search)", "quality", response=list[models.ReportedFinding],
          query=(*FINDING_FILTERS, *paging_params(FINDINGS_LIMIT)), counted=True)  # fmt: skip
async def findings(request: web.Request, principal: Principal, _: Any) -> Any:
    page = await _service(request).findings(
        principal,
        request.match_info["tenant"],
        **_finding_filters(request),
        skip=_integer(request, "skip", 0, 10**9),
        limit=_integer(request, "limit", FINDINGS_LIMIT, FINDINGS_LIMIT) or FINDINGS_LIMIT,
    )
    return Counted(page.findings, page.total)


@endpoint("POST", "/tenants/{tenant}/findings/search", "Search the data-quality findings by key or id, and for roles "
          "that may see personal data by name and value; POST, so that names and addresses never travel in a URL",
          "quality", body=models.FindingSearchIn, response=list[models.ReportedFinding], read_only=True,
          counted=True)  # fmt: skip
async def search_findings(request: web.Request, principal: Principal, body: models.FindingSearchIn) -> Any:
    page = await _service(request).findings(
        principal,
        request.match_info["tenant"],
        severity=body.severity,
        code=body.code,
        school_unit_code=body.school_unit_code,
        text=body.q,
        skip=body.skip,
        limit=body.limit,
    )
    return Counted(page.findings, page.total)


@endpoint("GET", "/tenants/{tenant}/findings.csv", "Data-quality findings as CSV (filtered like the list; the "
          "offending values only for roles that may see personal data)", "quality", response="text/csv",
          media_type="text/csv", query=FINDING_FILTERS)  # fmt: skip
async def findings_csv(request: web.Request, principal: Principal, _: Any) -> Any:
    return await _service(request).findings_csv(principal, request.match_info["tenant"], **_finding_filters(request))


@endpoint("GET", "/tenants/{tenant}/findings/summary", "Findings per school unit and severity", "quality",
          response=JsonObject)  # fmt: skip
async def findings_summary(request: web.Request, principal: Principal, _: Any) -> Any:
    return await _service(request).findings_summary(principal, request.match_info["tenant"])


@endpoint("GET", "/tenants/{tenant}/school-units", "The organiser's school units", "quality", response=list[JsonObject])
async def school_units(request: web.Request, principal: Principal, _: Any) -> Any:
    return await _service(request).school_units(principal, request.match_info["tenant"])


# --- persons (personal data: organiser admins and operators, never viewers) -----------------------------


@endpoint("GET", "/tenants/{tenant}/persons", "The organiser's persons by name, a page at a time (to find one, "
          "POST the words to /persons/search: search words never travel in a URL)", "persons",
          response=models.PersonPage,
          query=(QueryParam("page", "Which page (1-based; default 1).", kind="integer"),
                 QueryParam("size", "Persons per page (1-100; default 20).", kind="integer")))  # fmt: skip
async def list_persons(request: web.Request, principal: Principal, _: Any) -> Any:
    if "q" in request.query:
        raise Invalid("search words are personal data and never travel in a URL: POST them to persons/search")
    try:
        paging = models.PersonListQuery.model_validate(dict(request.query))
    except ValidationError as error:
        raise Invalid.from_validation(error) from None
    tenant_id = request.match_info["tenant"]
    return await _service(request).search_persons(principal, tenant_id, "", page=paging.page, size=paging.size)


@endpoint("POST", "/tenants/{tenant}/persons/search", "Find persons: every word in a name, login, e-mail address "
          "or id, a page at a time; POST, so that names and addresses never travel in a URL", "persons",
          body=models.PersonSearchIn, response=models.PersonPage, read_only=True)  # fmt: skip
async def persons(request: web.Request, principal: Principal, body: models.PersonSearchIn) -> Any:
    tenant_id = request.match_info["tenant"]
    return await _service(request).search_persons(principal, tenant_id, body.q, page=body.page, size=body.size)


@endpoint("GET", "/tenants/{tenant}/persons/{person_id}/explanation", "One person from the source to every "
          "vendor: source records, findings, each subscription's verdict with its reasons, deliveries, deletions "
          "and requests", "persons", response=models.PersonExplanation)  # fmt: skip
async def person_explanation(request: web.Request, principal: Principal, _: Any) -> Any:
    person_id = _uuid(request.match_info["person_id"], "person")
    return await _service(request).explain_person(principal, request.match_info["tenant"], person_id)


# --- vendors and subscriptions -------------------------------------------------------------------


@endpoint("GET", "/vendors", "The vendor catalogue", "subscriptions", response=list[models.Vendor])
async def vendors(request: web.Request, principal: Principal, _: Any) -> Any:
    return _service(request).vendors()


@endpoint("GET", "/catalogue/vendors", "Every vendor of the catalogue, retired ones too (operators)", "vendors",
          response=list[models.CatalogueVendor], operator_only=True)  # fmt: skip
async def catalogue_vendors(request: web.Request, principal: Principal, _: Any) -> Any:
    return await _service(request).catalogue_vendors(principal)


@endpoint("GET", "/catalogue/vendors/{vendor}", "One vendor of the catalogue (operators)", "vendors",
          response=models.CatalogueVendor, operator_only=True)  # fmt: skip
async def catalogue_vendor(request: web.Request, principal: Principal, _: Any) -> Any:
    return await _service(request).catalogue_vendor(principal, request.match_info["vendor"])


@endpoint("PUT", "/catalogue/vendors/{vendor}", "Add or edit a vendor; served without a restart (operators)",
          "vendors", body=VendorCatalogueEntry, response=models.CatalogueVendor, operator_only=True)  # fmt: skip
async def put_vendor(request: web.Request, principal: Principal, body: VendorCatalogueEntry) -> Any:
    return await _service(request).put_vendor(principal, request.match_info["vendor"], body)


@endpoint("DELETE", "/catalogue/vendors/{vendor}", "Retire a vendor: no longer served (operators)", "vendors",
          response=models.CatalogueVendor, operator_only=True)  # fmt: skip
async def retire_vendor(request: web.Request, principal: Principal, _: Any) -> Any:
    return await _service(request).retire_vendor(principal, request.match_info["vendor"])


@endpoint("GET", "/catalogue/vendors/{vendor}/credentials", "Organisers with their own credentials at the vendor "
          "(operators; no secrets)", "vendors", response=list[models.VendorCredential], operator_only=True)  # fmt: skip
async def vendor_credentials(request: web.Request, principal: Principal, _: Any) -> Any:
    return await _service(request).vendor_credentials(principal, request.match_info["vendor"])


@endpoint("PUT", "/catalogue/vendors/{vendor}/credentials/{tenant}", "Set or rotate an organiser's own API key at "
          "the vendor: its own tenant there (operators)", "vendors", body=models.VendorCredentialIn,
          response=list[models.VendorCredential], operator_only=True)  # fmt: skip
async def put_vendor_credential(request: web.Request, principal: Principal, body: models.VendorCredentialIn) -> Any:
    info = request.match_info
    return await _service(request).put_vendor_credential(principal, info["vendor"], info["tenant"], body)


@endpoint("DELETE", "/catalogue/vendors/{vendor}/credentials/{tenant}", "Remove an organiser's own credentials at "
          "the vendor (operators)", "vendors", status=204, operator_only=True)  # fmt: skip
async def delete_vendor_credential(request: web.Request, principal: Principal, _: Any) -> Any:
    info = request.match_info
    await _service(request).delete_vendor_credential(principal, info["vendor"], info["tenant"])


@endpoint("GET", "/tenants/{tenant}/subscriptions", "The organiser's vendor subscriptions", "subscriptions",
          response=list[models.Subscription])  # fmt: skip
async def list_subscriptions(request: web.Request, principal: Principal, _: Any) -> Any:
    return await _service(request).list_subscriptions(principal, request.match_info["tenant"])


@endpoint("GET", "/tenants/{tenant}/subscriptions/{vendor}", "One subscription and its promotion gate",
          "subscriptions", response=models.Subscription)  # fmt: skip
async def get_subscription(request: web.Request, principal: Principal, _: Any) -> Any:
    info = request.match_info
    return await _service(request).get_subscription(principal, info["tenant"], info["vendor"])


@endpoint("PUT", "/tenants/{tenant}/subscriptions/{vendor}", "Create (in test mode) or change a subscription",
          "subscriptions", body=models.SubscriptionIn, response=models.Subscription)  # fmt: skip
async def put_subscription(request: web.Request, principal: Principal, body: models.SubscriptionIn) -> Any:
    info = request.match_info
    return await _service(request).save_subscription(principal, info["tenant"], info["vendor"], body)


@endpoint("POST", "/tenants/{tenant}/subscriptions/{vendor}/preview",
          "What saving this subscription would add and remove (nothing is saved)", "subscriptions",
          body=models.SubscriptionIn, response=models.Preview)  # fmt: skip
async def preview(request: web.Request, principal: Principal, body: models.SubscriptionIn) -> Any:
    info = request.match_info
    return await _service(request).preview(principal, info["tenant"], info["vendor"], body)


@endpoint("POST", "/tenants/{tenant}/subscriptions/{vendor}/end",
          "End the subscription: everything the vendor holds for the organiser is deleted", "subscriptions",
          response=models.Subscription)  # fmt: skip
async def end_subscription(request: web.Request, principal: Principal, _: Any) -> Any:
    info = request.match_info
    return await _service(request).end_subscription(principal, info["tenant"], info["vendor"])


@endpoint("GET", "/tenants/{tenant}/subscriptions/{vendor}/test-report",
          "What test mode would send, and whether it is final (409 for a live subscription)", "subscriptions",
          response=models.SubscriptionReport)  # fmt: skip
async def vendor_test_report(request: web.Request, principal: Principal, _: Any) -> Any:
    info = request.match_info
    return await _service(request).test_report(principal, info["tenant"], info["vendor"])


REPORT_FILTERS = (
    QueryParam("school_unit_id", "Only this school unit (its entity id)."),
    *paging_params(REPORT_PAGE_LIMIT),
)


async def _report_list(
    request: web.Request, principal: Principal, which: models.ReportList, body: models.ReportSearchIn | None = None
) -> Counted:
    info = request.match_info
    if body is None:
        text, unit = "", _query(request, "school_unit_id")
        skip = _integer(request, "skip", 0, 10**9)
        limit = _integer(request, "limit", REPORT_PAGE_LIMIT, REPORT_PAGE_LIMIT) or REPORT_PAGE_LIMIT
    else:
        text, unit, skip, limit = body.q, body.school_unit_id, body.skip, body.limit
    page = await _service(request).test_report_list(
        principal, info["tenant"], info["vendor"], which, text=text, school_unit_id=unit, skip=skip, limit=limit
    )
    if page.search_cut:
        raise Invalid(f"the search finds more than {SEARCH_LIMIT} entities: narrow it")
    return Counted(page.rows, page.total)


@endpoint("GET", "/tenants/{tenant}/subscriptions/{vendor}/test-report/persons",
          "The persons test mode would send, by school unit and role, a page at a time (to search them, POST to "
          ".../persons/search)", "subscriptions", response=list[models.ReportPerson], query=REPORT_FILTERS,
          counted=True)  # fmt: skip
async def vendor_test_report_persons(request: web.Request, principal: Principal, _: Any) -> Any:
    return await _report_list(request, principal, models.ReportList.PERSONS)


@endpoint("POST", "/tenants/{tenant}/subscriptions/{vendor}/test-report/persons/search",
          "Search the persons test mode would send by name, login or e-mail address (roles that may see personal "
          "data) or id; POST, so that names never travel in a URL", "subscriptions", body=models.ReportSearchIn,
          response=list[models.ReportPerson], read_only=True, counted=True)  # fmt: skip
async def search_test_report_persons(request: web.Request, principal: Principal, body: models.ReportSearchIn) -> Any:
    return await _report_list(request, principal, models.ReportList.PERSONS, body)


@endpoint("GET", "/tenants/{tenant}/subscriptions/{vendor}/test-report/groups",
          "The groups test mode would send, by school unit, a page at a time", "subscriptions",
          response=list[models.ReportGroup], query=REPORT_FILTERS, counted=True)  # fmt: skip
async def vendor_test_report_groups(request: web.Request, principal: Principal, _: Any) -> Any:
    return await _report_list(request, principal, models.ReportList.GROUPS)


@endpoint("POST", "/tenants/{tenant}/subscriptions/{vendor}/test-report/groups/search",
          "Search the groups test mode would send by name or id", "subscriptions", body=models.ReportSearchIn,
          response=list[models.ReportGroup], read_only=True, counted=True)  # fmt: skip
async def search_test_report_groups(request: web.Request, principal: Principal, body: models.ReportSearchIn) -> Any:
    return await _report_list(request, principal, models.ReportList.GROUPS, body)


@endpoint("GET", "/tenants/{tenant}/subscriptions/{vendor}/test-report/refused",
          "What the vendor's profile would refuse and why, a page at a time", "subscriptions",
          response=list[models.ReportRefusal], query=REPORT_FILTERS, counted=True)  # fmt: skip
async def vendor_test_report_refused(request: web.Request, principal: Principal, _: Any) -> Any:
    return await _report_list(request, principal, models.ReportList.REFUSED)


@endpoint("POST", "/tenants/{tenant}/subscriptions/{vendor}/test-report/refused/search",
          "Search what the vendor's profile would refuse by name (roles that may see personal data) or id",
          "subscriptions", body=models.ReportSearchIn, response=list[models.ReportRefusal], read_only=True,
          counted=True)  # fmt: skip
async def search_test_report_refused(request: web.Request, principal: Principal, body: models.ReportSearchIn) -> Any:
    return await _report_list(request, principal, models.ReportList.REFUSED, body)


@endpoint("POST", "/tenants/{tenant}/subscriptions/{vendor}/review", "Mark the test report as reviewed",
          "subscriptions", response=models.Subscription)  # fmt: skip
async def review(request: web.Request, principal: Principal, _: Any) -> Any:
    info = request.match_info
    return await _service(request).mark_reviewed(principal, info["tenant"], info["vendor"])


@endpoint("POST", "/tenants/{tenant}/subscriptions/{vendor}/go-live",
          "Deliver for real (through the promotion gate; operators may override with a reason)", "subscriptions",
          body=models.GoLiveIn, response=models.Subscription)  # fmt: skip
async def go_live(request: web.Request, principal: Principal, body: models.GoLiveIn) -> Any:
    info = request.match_info
    return await _service(request).go_live(principal, info["tenant"], info["vendor"], body.override_reason)


@endpoint("POST", "/tenants/{tenant}/subscriptions/{vendor}/test-mode", "Back to test mode", "subscriptions",
          response=models.Subscription)  # fmt: skip
async def back_to_test(request: web.Request, principal: Principal, _: Any) -> Any:
    info = request.match_info
    return await _service(request).back_to_test(principal, info["tenant"], info["vendor"])


@endpoint("POST", "/tenants/{tenant}/subscriptions/{vendor}/resend", "Send the vendor its whole selection again",
          "subscriptions", response=models.Accepted, status=202)  # fmt: skip
async def resend(request: web.Request, principal: Principal, _: Any) -> Any:
    info = request.match_info
    await _service(request).resend(principal, info["tenant"], info["vendor"])
    return models.Accepted()


@endpoint("GET", "/tenants/{tenant}/subscriptions/{vendor}/report.csv", "The vendor's delivery report",
          "subscriptions", response="text/csv", media_type="text/csv")  # fmt: skip
async def delivery_report(request: web.Request, principal: Principal, _: Any) -> Any:
    info = request.match_info
    return await _service(request).delivery_report_csv(principal, info["tenant"], info["vendor"])


# --- holds ----------------------------------------------------------------------------------------


@endpoint("GET", "/tenants/{tenant}/holds", "Removals held by the mass-deletion guard (open holds), with their causes",
          "holds", response=list[models.Hold])  # fmt: skip
async def holds(request: web.Request, principal: Principal, _: Any) -> Any:
    return await _service(request).holds(principal, request.match_info["tenant"])


@endpoint("GET", "/tenants/{tenant}/holds/history", "What became of the holds (decisions, holds no longer needed), "
          "newest first, a page at a time", "holds", response=list[models.HoldHistoryEntry], counted=True,
          query=paging_params(HOLDS_PAGE))  # fmt: skip
async def hold_history(request: web.Request, principal: Principal, _: Any) -> Any:
    entries, total = await _service(request).hold_history(
        principal,
        request.match_info["tenant"],
        skip=_integer(request, "skip", 0, 10**9),
        limit=_integer(request, "limit", HOLDS_PAGE, HOLDS_PAGE) or HOLDS_PAGE,
    )
    return Counted(entries, total)


@endpoint("GET", "/tenants/{tenant}/holds/{vendor}/{school_unit_id}", "One hold, with its causes", "holds",
          response=models.Hold)  # fmt: skip
async def get_hold(request: web.Request, principal: Principal, _: Any) -> Any:
    info = request.match_info
    return await _service(request).hold(principal, info["tenant"], info["vendor"], info["school_unit_id"])


@endpoint("GET", "/tenants/{tenant}/holds/{vendor}/{school_unit_id}/entities", "Whom a hold affects (names for roles "
          "that may see personal data), persons first, a page at a time", "holds", response=list[models.HeldEntity],
          counted=True, query=(QueryParam("q", "Only those whose id (or, for roles that may see personal data, name, "
                                                "login or e-mail address) contains this."),
                               *paging_params(HOLDS_PAGE)))  # fmt: skip
async def held_entities(request: web.Request, principal: Principal, _: Any) -> Any:
    info = request.match_info
    entities, total = await _service(request).held_entities(
        principal,
        info["tenant"],
        info["vendor"],
        info["school_unit_id"],
        search=_query(request, "q") or "",
        skip=_integer(request, "skip", 0, 10**9),
        limit=_integer(request, "limit", HOLDS_PAGE, HOLDS_PAGE) or HOLDS_PAGE,
    )
    return Counted(entities, total)


@endpoint("POST", "/tenants/{tenant}/holds/{vendor}/{school_unit_id}", "Approve or discard held removals", "holds",
          body=models.HoldDecisionIn, status=204)  # fmt: skip
async def decide_hold(request: web.Request, principal: Principal, body: models.HoldDecisionIn) -> None:
    info = request.match_info
    await _service(request).decide_hold(
        principal, info["tenant"], info["vendor"], info["school_unit_id"], body.decision
    )


# --- GDPR -----------------------------------------------------------------------------------------


@endpoint(
    "GET", "/tenants/{tenant}/erasure-requests", "Erasure and objection requests", "gdpr", response=list[JsonObject]
)
async def erasure_requests(request: web.Request, principal: Principal, _: Any) -> Any:
    return await _service(request).erasure_requests(principal, request.match_info["tenant"])


@endpoint("POST", "/tenants/{tenant}/erasure-requests", "Erase a person at one vendor, several or all", "gdpr",
          body=models.ErasureIn, response=models.ErasureCreated, status=202)  # fmt: skip
async def request_erasure(request: web.Request, principal: Principal, body: models.ErasureIn) -> Any:
    request_id = await _service(request).request_erasure(principal, request.match_info["tenant"], body)
    return models.ErasureCreated(request_id=request_id)


@endpoint("POST", "/tenants/{tenant}/erasure-requests/{request_id}/withdraw", "Withdraw a request", "gdpr",
          response=models.Accepted, status=202)  # fmt: skip
async def withdraw_erasure(request: web.Request, principal: Principal, _: Any) -> Any:
    info = request.match_info
    await _service(request).withdraw_erasure(principal, info["tenant"], _uuid(info["request_id"], "request"))
    return models.Accepted()


@endpoint("GET", "/tenants/{tenant}/erasure-ledger", "Every deletion at every vendor, with its receipt", "gdpr",
          response=list[JsonObject], query=(QueryParam("vendor_id", "Only this vendor."),
                                      QueryParam("status", "pending, overdue, completed or superseded")))  # fmt: skip
async def erasure_ledger(request: web.Request, principal: Principal, _: Any) -> Any:
    return await _service(request).erasure_ledger(
        principal,
        request.match_info["tenant"],
        vendor_id=_query(request, "vendor_id"),
        status=_query(request, "status"),
    )


@endpoint("GET", "/tenants/{tenant}/deletions/evidence.csv", "Deletion evidence (CSV, pseudonymous)", "gdpr",
          response="text/csv", media_type="text/csv", query=(QueryParam("vendor_id", "Only this vendor."),),
          )  # fmt: skip
async def evidence_csv(request: web.Request, principal: Principal, _: Any) -> Any:
    tenant = request.match_info["tenant"]
    return await _service(request).evidence(principal, tenant, vendor_id=_query(request, "vendor_id"), fmt="csv")


@endpoint("GET", "/tenants/{tenant}/deletions/evidence.json", "Deletion evidence (JSON, pseudonymous)", "gdpr",
          response=JsonObject, query=(QueryParam("vendor_id", "Only this vendor."),))  # fmt: skip
async def evidence_json(request: web.Request, principal: Principal, _: Any) -> Any:
    tenant = request.match_info["tenant"]
    text = await _service(request).evidence(principal, tenant, vendor_id=_query(request, "vendor_id"), fmt="json")
    return json.loads(text)


# --- audit ----------------------------------------------------------------------------------------


@endpoint("GET", "/tenants/{tenant}/audit", "The organiser's audit log", "audit", response=list[JsonObject])
async def tenant_audit(request: web.Request, principal: Principal, _: Any) -> Any:
    return await _service(request).audit(principal, request.match_info["tenant"])


@endpoint("GET", "/audit", "Every admin action (operators)", "audit", response=list[JsonObject], operator_only=True)
async def audit(request: web.Request, principal: Principal, _: Any) -> Any:
    return await _service(request).audit(principal, None)


# --- plumbing -------------------------------------------------------------------------------------


def _encode(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, list):
        return [_encode(v) for v in value]
    return TypeAdapter(Any).dump_python(value, mode="json")


async def _body(request: web.Request, model: type[BaseModel] | None) -> Any:
    if model is None:
        return None
    raw = await request.read()
    if not raw:
        raw = b"{}"
    try:
        data = parse_json(raw)
    except UnsafeJson as error:
        raise Invalid(f"the body is not usable JSON: {error}") from None
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise Invalid.from_validation(error) from None


def _adapter(point: Endpoint) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handle(request: web.Request) -> web.StreamResponse:
        principal = request[PRINCIPAL]
        if "tenant" in point.params:
            if not _matches(request.match_info["tenant"]):
                raise NotFound("no organiser with that id")
            principal.require_tenant(request.match_info["tenant"])  # before reading the body
        if point.method != "GET" and not point.read_only:
            principal.require_change()
        if point.operator_only:
            principal.require_operator()
        result = await point.call(request, principal, await _body(request, point.body))
        if point.status == 204:
            return web.Response(status=204)
        if point.media_type == "text/csv":
            return web.Response(text=result, content_type="text/csv", charset="utf-8", status=point.status)
        if isinstance(result, Counted):
            response = web.json_response(_encode(result.items), status=point.status)
            response.headers[TOTAL_COUNT] = str(result.total)
            return response
        return web.json_response(_encode(result), status=point.status)

    return handle


def _matches(tenant_id: str) -> bool:
    import re

    return re.fullmatch(TENANT_ID, tenant_id) is not None


def make_api(
    service: AdminService,
    authenticators: list[Authenticator],
    *,
    guard: FailureGuard | None = None,
    rate: RequestRate | None = None,
) -> web.Application:
    """The API as an aiohttp sub-application for ``/api/v1``. ``guard`` refuses a client address after
    too many failed authentications, ``rate`` a token over its request rate (both 429 with Retry-After)."""

    @web.middleware
    async def problems(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        address = request.remote or "unknown"
        try:
            wait = guard.retry_after(address) if guard is not None else None
            if wait is not None:
                raise TooManyRequests("too many failed authentications from this address", retry_after=wait)
            try:
                principal = await authenticate(authenticators, bearer(request.headers.get("Authorization")))
            except Unauthenticated:
                if guard is not None and request.headers.get("Authorization"):
                    guard.failed(address)
                raise
            if rate is not None and not await rate.admit(principal.token_id or principal.subject):
                raise TooManyRequests("too many requests with this token; slow down", retry_after=1)
            request[PRINCIPAL] = principal
            return await handler(request)
        except Problem as problem:
            return problem_response(problem, request)
        except web.HTTPException as error:
            if error.status >= 400:
                status_problem = Problem(error.reason or "error")
                status_problem.status, status_problem.title = error.status, error.reason or "Error"
                status_problem.kind = {404: "not-found", 405: "method-not-allowed"}.get(error.status, "http-error")
                return problem_response(status_problem, request)
            raise
        except Exception:
            log.exception(
                "admin_api_error",
                path=request.match_info.route.resource.canonical if request.match_info.route.resource else None,
            )
            return problem_response(_Internal("an unexpected error; it was logged"), request)

    api = web.Application(middlewares=[problems])
    api[SERVICE] = service
    for point in ENDPOINTS:
        api.router.add_route(point.method, point.path, _adapter(point))
    return api


class _Internal(Problem):
    status, kind, title = 500, "internal", "Internal error"
