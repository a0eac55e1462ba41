"""Källor: connected sources (a form per kind; secrets are write-only), "Synkronisera nu", removing a
source, and the run history with each failed run's error codes and their fix hints."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import yaml
from aiohttp import web
from multidict import MultiDictProxy
from pydantic import ValidationError

from skolsynk.connectors.sources import SOURCE_KINDS
from skolsynk_services.admin import models
from skolsynk_services.admin.problems import Conflict, Invalid, Problem
from skolsynk_services.admin.ui.catalogue import text
from skolsynk_services.admin.ui.chart import runs_chart
from skolsynk_services.admin.ui.page import principal_of, refused, render, see_other, service_of, tenant_frame, url
from skolsynk_services.admin.ui.paging import paged_in_store
from skolsynk_services.admin.ui.texts import (
    MICROSOFT_PERMISSION_TEXTS,
    SECRET_FIELDS,
    SOURCE_FORMS,
    FormField,
    check_text,
    field_errors,
    swedish,
)


def source_form_fields(kind: models.SourceKind) -> tuple[list[FormField], list[FormField]]:
    """The settings the kind's form asks for, and its secrets (every secret the kind has)."""
    secret_names = [slot.name for slot in SOURCE_KINDS[kind.value].secrets]
    return (
        list(SOURCE_FORMS[kind.value]),
        [SECRET_FIELDS.get(n, FormField(n, n)) for n in secret_names],
    )


def _path(name: str) -> tuple[str, ...]:
    return tuple(name.split("."))


def _setting(settings: Mapping[str, Any], name: str) -> Any:
    current: Any = settings
    for part in _path(name):
        if not isinstance(current, Mapping):
            return None
        current = current.get(part)
    return current


def _set_setting(settings: dict[str, Any], name: str, value: Any) -> None:
    *parents, last = _path(name)
    current = settings
    for part in parents:
        nested = current.get(part)
        if not isinstance(nested, dict):
            nested = {}
            current[part] = nested
        current = nested
    if value is None:
        current.pop(last, None)
    else:
        current[last] = value


def _shown(field: FormField, value: Any) -> str:
    """A stored setting as its form field shows it (a mapping as YAML)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if field.input_type == "textarea":
        return yaml.safe_dump(value, allow_unicode=True, sort_keys=False)
    return str(value)


def _on_form(errors: dict[str, str], fields: list[FormField]) -> dict[str, str]:
    """Errors of nested settings (``setting_mapping.roles.0.org_unit``) on the form field that holds them."""
    names = sorted((f.name for f in fields), key=len, reverse=True)
    placed: dict[str, str] = {}
    for key, message in errors.items():
        if key.startswith("setting_"):
            path = key.removeprefix("setting_")
            holder = next((n for n in names if path == n or path.startswith(n + ".")), None)
            if holder is None:
                placed.setdefault("_form", text("sources.setting_error", path=path, message=message))
                continue
            if holder != path:
                message = f"{path.removeprefix(holder + '.')}: {message}"
            placed.setdefault("setting_" + holder, message)
        else:
            placed.setdefault(key, message)
    return placed


def _kind(value: str | None) -> models.SourceKind | None:
    try:
        return models.SourceKind(value) if value else None
    except ValueError:
        return None


async def sources(request: web.Request) -> web.StreamResponse:
    frame = await tenant_frame(request, "sources")
    principal, service = principal_of(request), service_of(request)
    tenant_id = frame["tenant_id"]
    listed = await service.list_sources(principal, tenant_id)
    latest: dict[str, Any] = {}
    for source in listed:
        last, _ = await service.runs_page(principal, tenant_id, source_id=source.source_id, limit=1)
        if last:
            latest[source.source_id] = last[0]
    recent, _ = await service.runs_page(principal, tenant_id, limit=30)

    async def fetch(search: str, skip: int, limit: int) -> tuple[list[dict[str, Any]], int]:
        return await service.runs_page(principal, tenant_id, search=search, skip=skip, limit=limit)

    runs, paging = await paged_in_store(request, fetch)
    return render(request, "sources.html", **frame, sources=listed, runs=runs, paging=paging, latest=latest,
                  chart=runs_chart(recent))  # fmt: skip


def _source_form_values(form: MultiDictProxy[Any], kind: models.SourceKind) -> dict[str, str]:
    """What the admin typed, minus the secrets (never echoed back)."""
    settings, secret_fields = source_form_fields(kind)
    values = {k: str(form.get(k, "")).strip() for k in ("source_id", "display_name")}
    values["enabled"] = "on" if form.get("enabled") else ""
    for setting in settings:
        values[f"setting_{setting.name}"] = str(form.get(f"setting_{setting.name}", "")).strip()
    for secret in secret_fields:
        values[f"ref_{secret.name}"] = str(form.get(f"ref_{secret.name}", "")).strip()
    return values


def _source_body(
    form: MultiDictProxy[Any], kind: models.SourceKind, source_id: str, current: models.Source | None
) -> tuple[dict[str, Any], dict[str, str]]:
    """The API body the form stands for, and the errors of fields that cannot be read (a mapping that is
    not YAML)."""
    settings_fields, secret_fields = source_form_fields(kind)
    settings: dict[str, Any] = copy.deepcopy(current.settings) if current else {}
    unreadable: dict[str, str] = {}
    for setting in settings_fields:
        value: Any = str(form.get(f"setting_{setting.name}", "")).strip() or None
        if value is not None and setting.input_type == "textarea":
            try:
                value = yaml.safe_load(value)
            except yaml.YAMLError:
                unreadable[f"setting_{setting.name}"] = text("sources.yaml_invalid")
                continue
            if not isinstance(value, dict):
                unreadable[f"setting_{setting.name}"] = text("sources.yaml_not_a_mapping")
                continue
        _set_setting(settings, setting.name, value)
    secrets_given: dict[str, str] = {}
    refs = dict(current.secret_refs) if current else {}
    for secret in secret_fields:
        value = str(form.get(f"secret_{secret.name}", "")).strip()
        reference = str(form.get(f"ref_{secret.name}", "")).strip()
        if value:
            secrets_given[secret.name] = value
            refs.pop(secret.name, None)  # a value typed in replaces a reference
        elif reference:
            refs[secret.name] = reference
        else:
            refs.pop(secret.name, None)
    body = {
        "source_id": source_id,
        "kind": kind.value,
        "display_name": str(form.get("display_name", "")).strip(),
        "enabled": bool(form.get("enabled")),
        "settings": settings,
        "secrets": secrets_given,
        "secret_refs": refs,
    }
    return body, unreadable


def _render_source_form(
    request: web.Request,
    frame: dict[str, Any],
    kind: models.SourceKind,
    current: models.Source | None,
    values: dict[str, str],
    *,
    errors: dict[str, str] | None = None,
    error: str | None = None,
    status: int = 200,
    check: str | None = None,
    check_ok: bool = False,
    typed_secrets: bool = False,
) -> web.Response:
    settings, secret_fields = source_form_fields(kind)
    return render(
        request,
        "source_form.html",
        status=status,
        **frame,
        kind=kind.value,
        current=current,
        settings=settings,
        secret_fields=secret_fields,
        values=values,
        errors=errors or {},
        error=error,
        check=check,
        check_ok=check_ok,
        typed_secrets=typed_secrets,
        microsoft_app=service_of(request).microsoft_app_client_id is not None,
        permissions=MICROSOFT_PERMISSION_TEXTS,
    )


async def source_new(request: web.Request) -> web.StreamResponse:
    frame = await tenant_frame(request, "sources")
    kind = _kind(request.query.get("kind"))
    if kind is None:
        return see_other(request, url(request, "sources", tenant=frame["tenant_id"]))
    default_id = f"{kind.value}-1"
    return _render_source_form(
        request, frame, kind, None, {"source_id": default_id, "display_name": "", "enabled": "on"}
    )


async def source_edit(request: web.Request) -> web.StreamResponse:
    frame = await tenant_frame(request, "sources")
    current = await service_of(request).get_source(
        principal_of(request), frame["tenant_id"], request.match_info["source"]
    )
    settings, _ = source_form_fields(current.kind)
    values = {
        "source_id": current.source_id,
        "display_name": current.display_name,
        "enabled": "on" if current.enabled else "",
    }
    values |= {f"setting_{f.name}": _shown(f, _setting(current.settings, f.name)) for f in settings}
    values |= {f"ref_{k}": v for k, v in current.secret_refs.items()}
    return _render_source_form(request, frame, current.kind, current, values)


async def source_save(request: web.Request) -> web.StreamResponse:
    frame = await tenant_frame(request, "sources")
    principal, service = principal_of(request), service_of(request)
    tenant_id = frame["tenant_id"]
    form = await request.post()
    existing = request.match_info.get("source")
    current = await service.get_source(principal, tenant_id, existing) if existing else None
    kind = current.kind if current else _kind(str(form.get("kind", "")))
    if kind is None:
        return see_other(request, url(request, "sources", tenant=tenant_id), text("sources.choose_kind"), error=True)
    source_id = current.source_id if current else str(form.get("source_id", "")).strip()
    values = _source_form_values(form, kind)
    values["source_id"] = source_id
    data, unreadable = _source_body(form, kind, source_id, current)
    fields, _ = source_form_fields(kind)
    stored = set(current.secrets_set) if current else set()
    # The service checks the same; all errors at once reads better than one after the other.
    missing = [
        {"field": p.field, "message": p.message}
        for p in SOURCE_KINDS[kind.value].problems(
            data["settings"],
            secret_names=(stored | set(data["secrets"])) - set(data["secret_refs"]),
            secret_refs=data["secret_refs"],
        )
    ]
    try:
        body = models.SourceIn.model_validate(data)
        if missing or unreadable:
            raise Invalid("the source is not complete", errors=missing)
        if form.get("action") == "check":
            result = await service.check_source(principal, tenant_id, source_id, body)
            return _render_source_form(request, frame, kind, current, values, check=check_text(result, kind.value),
                                       check_ok=result.ok, typed_secrets=bool(data["secrets"]))  # fmt: skip
        saved = await service.save_source(principal, tenant_id, body, create=current is None)
    except ValidationError as invalid:
        return _render_source_form(
            request,
            frame,
            kind,
            current,
            values,
            errors=_on_form(unreadable | field_errors([*invalid.errors(), *missing]), fields),
            error=text("forms.check_fields"),
            status=422,
        )
    except Problem as problem:
        errors = _on_form(unreadable | field_errors(problem.extra.get("errors") or []), fields)
        if isinstance(problem, Conflict) and current is None:
            errors["source_id"] = swedish(problem)
        return _render_source_form(
            request, frame, kind, current, values, errors=errors, error=swedish(problem), status=problem.status
        )
    after = "disabled" if not saved.enabled else "egil" if saved.kind is models.SourceKind.EGIL else "reading"
    saved_text = text("sources.saved", name=saved.display_name, next=text(f"sources.saved_next.{after}"))
    return see_other(request, url(request, "sources", tenant=tenant_id), saved_text)


async def source_sync(request: web.Request) -> web.StreamResponse:
    tenant_id, source_id = request.match_info["tenant"], request.match_info["source"]
    back = url(request, "sources", tenant=tenant_id)
    try:
        await service_of(request).request_sync(principal_of(request), tenant_id, source_id, "full")
    except Problem as problem:
        return refused(request, back, problem)
    return see_other(
        request,
        back,
        text("sources.sync_requested"),
    )


async def source_check(request: web.Request) -> web.StreamResponse:
    tenant_id, source_id = request.match_info["tenant"], request.match_info["source"]
    back = url(request, "sources", tenant=tenant_id)
    service, principal = service_of(request), principal_of(request)
    try:
        source = await service.get_source(principal, tenant_id, source_id)
        result = await service.check_source(principal, tenant_id, source_id)
    except Problem as problem:
        return refused(request, back, problem)
    return see_other(
        request,
        back,
        text("sources.checked", name=source.display_name, result=check_text(result, source.kind.value)),
        error=not result.ok,
    )


async def source_delete(request: web.Request) -> web.StreamResponse:
    tenant_id, source_id = request.match_info["tenant"], request.match_info["source"]
    back = url(request, "sources", tenant=tenant_id)
    form = await request.post()
    if form.get("confirm") != "yes":
        return see_other(request, back, text("sources.confirm_delete"), error=True)
    try:
        await service_of(request).delete_source(principal_of(request), tenant_id, source_id)
    except Problem as problem:
        return refused(request, back, problem)
    return see_other(request, back, text("sources.deleted"))


# --- EGIL clients: the API key (shown once), certificates, the lines for the client's configuration ------


async def _egil_page(
    request: web.Request,
    *,
    api_key: str | None = None,
    connection: models.EgilConnection | None = None,
    errors: dict[str, str] | None = None,
    status: int = 200,
) -> web.Response:
    frame = await tenant_frame(request, "sources")
    principal, service = principal_of(request), service_of(request)
    source_id = request.match_info["source"]
    source = await service.get_source(principal, frame["tenant_id"], source_id)
    if connection is None:
        connection = await service.egil_client(principal, frame["tenant_id"], source_id)
    return render(
        request,
        "egil_client.html",
        status=status,
        **frame,
        source=source,
        connection=connection,
        api_key=api_key,
        errors=errors or {},
    )


async def egil_client(request: web.Request) -> web.StreamResponse:
    try:
        return await _egil_page(request)
    except Conflict as problem:
        return refused(request, url(request, "sources", tenant=request.match_info["tenant"]), problem)


async def egil_api_key(request: web.Request) -> web.StreamResponse:
    """A new key, shown on this response only (never in a redirect, a cookie or a log)."""
    tenant_id, source_id = request.match_info["tenant"], request.match_info["source"]
    try:
        issued = await service_of(request).issue_egil_api_key(principal_of(request), tenant_id, source_id)
    except Problem as problem:
        return refused(request, url(request, "sources", tenant=tenant_id), problem)
    response = await _egil_page(request, api_key=issued.api_key, connection=issued)
    response.headers["Cache-Control"] = "no-store"
    return response


async def egil_api_key_revoke(request: web.Request) -> web.StreamResponse:
    tenant_id, source_id = request.match_info["tenant"], request.match_info["source"]
    back = url(request, "egil_client", tenant=tenant_id, source=source_id)
    try:
        await service_of(request).revoke_egil_api_key(principal_of(request), tenant_id, source_id)
    except Problem as problem:
        return refused(request, back, problem)
    return see_other(request, back, text("sources.api_key_revoked"))


async def egil_certificate(request: web.Request) -> web.StreamResponse:
    tenant_id, source_id = request.match_info["tenant"], request.match_info["source"]
    form = await request.post()
    try:
        await service_of(request).add_egil_certificate(
            principal_of(request), tenant_id, source_id, str(form.get("pem", ""))
        )
    except Invalid:
        return await _egil_page(request, errors={"pem": text("sources.certificate_not_pem")}, status=422)
    except Problem as problem:
        return refused(request, url(request, "sources", tenant=tenant_id), problem)
    return see_other(
        request,
        url(request, "egil_client", tenant=tenant_id, source=source_id),
        text("sources.certificate_registered"),
    )


async def egil_certificate_remove(request: web.Request) -> web.StreamResponse:
    tenant_id, source_id = request.match_info["tenant"], request.match_info["source"]
    back = url(request, "egil_client", tenant=tenant_id, source=source_id)
    form = await request.post()
    try:
        await service_of(request).remove_egil_certificate(
            principal_of(request), tenant_id, source_id, str(form.get("pin", ""))
        )
    except Problem as problem:
        return refused(request, back, problem)
    return see_other(request, back, text("sources.certificate_removed"))


# --- Microsoft 365 through skolsynk's app: admin consent at Microsoft, then back here -----------------


async def microsoft_consent(request: web.Request) -> web.StreamResponse:
    """Off to Microsoft's admin-consent page (the source is saved when Microsoft sends the admin back)."""
    tenant_id = request.match_info["tenant"]
    form = await request.post()
    back = url(request, "source_new", {"kind": "microsoft"}, tenant=tenant_id)
    service = service_of(request)
    try:
        body = models.MicrosoftConsentIn.model_validate(
            {
                "source_id": str(form.get("source_id", "")).strip(),
                "display_name": str(form.get("display_name", "")).strip(),
            }
        )
        consent = await service.start_microsoft_consent(
            principal_of(request), tenant_id, body, redirect_uri=service.consent_redirect_uri(str(request.url.origin()))
        )
    except ValidationError:
        return see_other(request, back, text("sources.consent_form_invalid"), error=True)
    except Problem as problem:
        return refused(request, back, problem)
    raise web.HTTPSeeOther(consent.consent_url)


async def microsoft_consent_done(request: web.Request) -> web.StreamResponse:
    """Microsoft's redirect after the consent (``tenant``, ``admin_consent``, ``state``; or ``error``)."""
    query = request.query
    service, principal = service_of(request), principal_of(request)
    try:
        tenant_id, source = await service.finish_microsoft_consent(
            principal,
            query.get("state", ""),
            azure_tenant_id=query.get("tenant"),
            consented=query.get("admin_consent", "").lower() == "true",
            error=query.get("error"),
        )
    except Problem as problem:
        tenant = principal.tenant_id
        back = url(request, "sources", tenant=tenant) if tenant else url(request, "home")
        return refused(request, back, problem)
    return see_other(
        request,
        url(request, "sources", tenant=tenant_id),
        text("sources.consent_done", name=source.display_name),
    )
