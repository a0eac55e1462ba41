"""Källor: connected sources (a form per kind; secrets are write-only), "Synkronisera nu", removing a
source, and the run history with each failed run's error codes and their fix hints."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from multidict import MultiDictProxy
from pydantic import ValidationError

from skolsynk_services.admin import models
from skolsynk_services.admin.problems import Conflict, Invalid, Problem
from skolsynk_services.admin.ui.chart import runs_chart
from skolsynk_services.admin.ui.page import principal_of, refused, render, see_other, service_of, tenant_frame, url
from skolsynk_services.admin.ui.texts import SECRET_FIELDS, SETTING_FIELDS, FormField, field_errors, swedish


def source_form_fields(kind: models.SourceKind) -> tuple[list[FormField], list[FormField]]:
    settings, secret_names = models.SOURCE_REQUIREMENTS[kind]
    return (
        [SETTING_FIELDS.get(n, FormField(n, n)) for n in settings],
        [SECRET_FIELDS.get(n, FormField(n, n)) for n in secret_names],
    )


def _kind(value: str | None) -> models.SourceKind | None:
    try:
        return models.SourceKind(value) if value else None
    except ValueError:
        return None


async def sources(request: web.Request) -> web.StreamResponse:
    frame = await tenant_frame(request, "sources")
    principal, service = principal_of(request), service_of(request)
    listed = await service.list_sources(principal, frame["tenant_id"])
    runs = await service.runs(principal, frame["tenant_id"])
    return render(request, "sources.html", **frame, sources=listed, runs=runs, chart=runs_chart(runs))


def _source_form_values(form: MultiDictProxy[Any], kind: models.SourceKind) -> dict[str, str]:
    """What the admin typed, minus the secrets (never echoed back)."""
    settings, _ = source_form_fields(kind)
    values = {k: str(form.get(k, "")).strip() for k in ("source_id", "display_name")}
    for setting in settings:
        values[f"setting_{setting.name}"] = str(form.get(f"setting_{setting.name}", "")).strip()
    for name in models.SOURCE_REQUIREMENTS[kind][1]:
        values[f"ref_{name}"] = str(form.get(f"ref_{name}", "")).strip()
    return values


def _source_body(
    form: MultiDictProxy[Any], kind: models.SourceKind, source_id: str, current: models.Source | None
) -> dict[str, Any]:
    settings_fields, secret_fields = source_form_fields(kind)
    settings: dict[str, Any] = dict(current.settings) if current else {}
    for setting in settings_fields:
        value = str(form.get(f"setting_{setting.name}", "")).strip()
        if value:
            settings[setting.name] = value
        else:
            settings.pop(setting.name, None)
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
    return {
        "source_id": source_id,
        "kind": kind.value,
        "display_name": str(form.get("display_name", "")).strip(),
        "settings": settings,
        "secrets": secrets_given,
        "secret_refs": refs,
    }


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
    )


async def source_new(request: web.Request) -> web.StreamResponse:
    frame = await tenant_frame(request, "sources")
    kind = _kind(request.query.get("kind"))
    if kind is None:
        return see_other(request, url(request, "sources", tenant=frame["tenant_id"]))
    default_id = f"{kind.value}-1"
    return _render_source_form(request, frame, kind, None, {"source_id": default_id, "display_name": ""})


async def source_edit(request: web.Request) -> web.StreamResponse:
    frame = await tenant_frame(request, "sources")
    current = await service_of(request).get_source(
        principal_of(request), frame["tenant_id"], request.match_info["source"]
    )
    values = {"source_id": current.source_id, "display_name": current.display_name}
    values |= {f"setting_{k}": str(v) for k, v in current.settings.items()}
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
        return see_other(request, url(request, "sources", tenant=tenant_id), "Välj en typ av källa.", error=True)
    source_id = current.source_id if current else str(form.get("source_id", "")).strip()
    values = _source_form_values(form, kind)
    values["source_id"] = source_id
    data = _source_body(form, kind, source_id, current)
    settings_needed, secrets_needed = models.SOURCE_REQUIREMENTS[kind]
    have = set(data["secrets"]) | set(data["secret_refs"]) | set(current.secrets_set if current else [])
    missing = [{"field": f"settings.{n}"} for n in settings_needed if not data["settings"].get(n)]
    missing += [{"field": f"secrets.{n}"} for n in secrets_needed if n not in have]
    try:
        body = models.SourceIn.model_validate(data)
        if missing:  # the service checks the same; all errors at once reads better than one after the other
            raise Invalid("required settings are missing", errors=missing)
        saved = await service.save_source(principal, tenant_id, body, create=current is None)
    except ValidationError as invalid:
        return _render_source_form(
            request,
            frame,
            kind,
            current,
            values,
            errors=field_errors([*invalid.errors(), *missing]),
            error="Kontrollera de markerade fälten.",
            status=422,
        )
    except Problem as problem:
        errors = field_errors(problem.extra.get("errors") or [])
        if isinstance(problem, Conflict) and current is None:
            errors["source_id"] = swedish(problem)
        return _render_source_form(
            request, frame, kind, current, values, errors=errors, error=swedish(problem), status=problem.status
        )
    hint = (
        " Tryck på ”Synkronisera nu” för att läsa in uppgifterna."
        if saved.kind is not models.SourceKind.EGIL
        else " Uppgifterna kommer när huvudmannens EGIL-klient skickar dem."
    )
    return see_other(
        request, url(request, "sources", tenant=tenant_id), f"Källan {saved.display_name} är sparad.{hint}"
    )


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
        "Synkroniseringen är begärd. Den syns i körhistoriken nedan när källan har börjat skicka uppgifter.",
    )


async def source_delete(request: web.Request) -> web.StreamResponse:
    tenant_id, source_id = request.match_info["tenant"], request.match_info["source"]
    back = url(request, "sources", tenant=tenant_id)
    form = await request.post()
    if form.get("confirm") != "yes":
        return see_other(request, back, "Kryssa i rutan för att bekräfta att källan ska tas bort.", error=True)
    try:
        await service_of(request).delete_source(principal_of(request), tenant_id, source_id)
    except Problem as problem:
        return refused(request, back, problem)
    return see_other(request, back, "Källan är borttagen.")
