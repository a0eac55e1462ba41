"""What the UI says that is not in a template, read from the Swedish catalogue (``sv.json``, see
``catalogue``): labels of roles, kinds, statuses and reasons, the source forms' fields, the data-quality
findings, the audit log's actions, the navigation, the fix hints of source-run error codes, and the
service's (English) errors, gate blockers and validation errors as Swedish sentences. The code here
keeps only the structure (which fields a form has, which English message means which text); every word
is in the catalogue."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from skolsynk.domain.quality import FindingCode
from skolsynk.domain.source_errors import HINTS_BY_SOURCE_KIND, SourceErrorHint, hint_for
from skolsynk_services.admin import models
from skolsynk_services.admin.problems import Conflict, Forbidden, GateClosed, Invalid, NotFound, Problem, Unavailable
from skolsynk_services.admin.ui.catalogue import plural, section, text
from skolsynk_services.admin.ui.formatting import decimal, number, when

ROLE_NAMES: dict[str, str] = section("roles")
PERSON_ROLES: dict[str, str] = section("person_roles")
KIND_NAMES: dict[str, str] = {**section("kinds"), **PERSON_ROLES}
#: Each source kind's name and what connecting one means, for the "add a source" list and the form's lead.
SOURCE_KINDS: dict[str, tuple[str, str]] = {
    kind: (entry["name"], entry["text"]) for kind, entry in section("source_kinds").items()
}


@dataclass(frozen=True)
class FormField:
    """One field of a source form: ``name`` is the setting's path in the kind's settings
    (``auth.token_url``) or a secret's name."""

    name: str
    label: str
    help: str = ""
    input_type: str = "text"
    required: bool = False
    #: For ``input_type="select"``: (value, label) pairs.
    options: tuple[tuple[str, str], ...] = ()


def _form_field(kind: str, name: str, input_type: str = "text", *, required: bool = False) -> FormField:
    """A source form's field: its words (label, help, the options' labels) from the catalogue's
    ``source_forms.<kind>``, its shape from here."""
    words = section("source_forms")[kind][name]
    options = tuple((str(value), str(label)) for value, label in words.get("options", {}).items())
    return FormField(name, words["label"], words.get("help", ""), input_type, required, options)


_GOOGLE_KIND, _MICROSOFT_KIND = models.SourceKind.GOOGLE.value, models.SourceKind.MICROSOFT.value
_SS12000_KIND, _EGIL_KIND = models.SourceKind.SS12000.value, models.SourceKind.EGIL.value
#: The settings each kind's form asks for (the API takes every setting of the kind's model; these are the
#: ones an IT admin sets when connecting a source, the rest keep their defaults).
SOURCE_FORMS: dict[str, tuple[FormField, ...]] = {
    _GOOGLE_KIND: (
        _form_field(_GOOGLE_KIND, "delegated_admin", "email", required=True),
        _form_field(_GOOGLE_KIND, "customer"),
        _form_field(_GOOGLE_KIND, "domain"),
        _form_field(_GOOGLE_KIND, "watch.enabled", "select"),
        _form_field(_GOOGLE_KIND, "mapping", "textarea", required=True),
    ),
    _MICROSOFT_KIND: (
        _form_field(_MICROSOFT_KIND, "azure_tenant_id", required=True),
        _form_field(_MICROSOFT_KIND, "client_id"),
    ),
    _SS12000_KIND: (
        _form_field(_SS12000_KIND, "base_url", "url", required=True),
        _form_field(_SS12000_KIND, "auth.kind", "select", required=True),
        _form_field(_SS12000_KIND, "auth.token_url", "url"),
        _form_field(_SS12000_KIND, "auth.client_id"),
        _form_field(_SS12000_KIND, "auth.scope"),
        _form_field(_SS12000_KIND, "webhook_url", "url"),
    ),
    _EGIL_KIND: (),
}
SECRET_FIELDS = {
    name: FormField(name, words["label"], words.get("help", "")) for name, words in section("secret_fields").items()
}


def setting_label(kind: str | None, path: str) -> str:
    """A setting's name as the IT admin reads it: its form field's label, else the catalogue's name for
    it (``settings_table.names``), else its path."""
    field = next((f for f in SOURCE_FORMS.get(kind or "", ()) if f.name == path), None)
    if field is not None:
        return field.label
    return str(section("settings_table.names").get(path, path))


def _setting_value(kind: str | None, path: str, value: Any) -> str:
    field = next((f for f in SOURCE_FORMS.get(kind or "", ()) if f.name == path), None)
    shown = ("true" if value else "false") if isinstance(value, bool) else str(value)
    if field is not None and field.options:
        return dict(field.options).get(shown, shown)
    if isinstance(value, bool):
        return text("settings_table.yes") if value else text("settings_table.no")
    return shown


def flat_settings(settings: Mapping[str, Any], kind: str | None = None, prefix: str = "") -> list[tuple[str, str]]:
    """A source's settings as ``(name, value)`` lines for a table, named in Swedish (:func:`setting_label`;
    a select's value by its option's label): nested settings by their dotted path, a list of plain values
    joined, a longer structure (a mapping's rules) by its size."""
    lines: list[tuple[str, str]] = []
    for key, value in settings.items():
        path = f"{prefix}{key}"
        if path == "api_key_sha256":
            lines.append((text("settings_table.api_key"), text("settings_table.present")))
        elif path == "client_certificates" and isinstance(value, list):
            # their pins are on the EGIL client's page
            lines.append((text("settings_table.client_certificates"), str(len(value))))
        elif isinstance(value, Mapping) and path != "mapping":
            lines += flat_settings(value, kind, path + ".")
        elif isinstance(value, list) and all(isinstance(v, str | int | float) for v in value):
            lines.append((setting_label(kind, path), ", ".join(str(v) for v in value)))
        elif isinstance(value, Mapping | list):
            lines.append((setting_label(kind, path), plural("settings_table_parts", len(value))))
        else:
            lines.append((setting_label(kind, path), _setting_value(kind, path, value)))
    return lines


#: The Microsoft Graph application permissions skolsynk's app asks for, as the organiser's admin reads them.
MICROSOFT_PERMISSION_TEXTS: dict[str, str] = section("microsoft_permissions")

FINDINGS = {code: (section(f"findings.{code}")["title"], section(f"findings.{code}")["effect"]) for code in FindingCode}
SEVERITIES: dict[str, tuple[str, str]] = {
    severity: (entry["label"], entry["effect"]) for severity, entry in section("severities").items()
}
RUN_STATUSES: dict[str, str] = section("run_statuses")
HOLD_STATUSES: dict[str, str] = section("hold_statuses")
LEDGER_STATUSES: dict[str, str] = section("ledger_statuses")
LEDGER_REASONS: dict[str, str] = section("ledger_reasons")
RECEIPT_OUTCOMES: dict[str, str] = section("receipt_outcomes")
ERASURE_KINDS: dict[str, str] = section("erasure_kinds")
REQUEST_STATUSES: dict[str, str] = section("request_statuses")
POLICIES: dict[str, str] = section("policies")
#: The organiser's choice for persons whose source does not say whether they have a protected identity.
MISSING_MARKING: dict[str, str] = section("missing_marking")
SCHOOL_YEARS = [
    (0, text("school_years.preschool_class")),
    *((year, text("school_years.year", year=year)) for year in range(1, 11)),
]
AUDIT_ACTIONS: dict[str, str] = section("audit_actions")
#: Tenant navigation: (section, label, route name), in the catalogue's order.
NAVIGATION = [(key, entry["label"], entry["route"]) for key, entry in section("navigation").items()]

#: Service messages (English, for the API) -> the key of what the UI says (``problems.<key>``). The first
#: pattern that matches wins.
PROBLEM_PATTERNS: list[tuple[str, str]] = [
    (r"^this token is not allowed", "not_your_organiser"),
    (r"^only operators", "operators_only"),
    (r"^this token may only read", "read_only"),
    (r"^this token may not see personal data", "no_personal_data"),
    (r"^no such token", "no_such_token"),
    (r"^no organiser", "no_organiser"),
    (r"^no source", "no_source"),
    (r"^no subscription", "no_subscription"),
    (r"^no vendor", "no_vendor"),
    (r"^a client certificate needs", "certificate_needs_https"),
    (r"^the client certificate is not", "certificate_not_pem"),
    (r"^the private key is encrypted", "private_key_encrypted"),
    (r"^the private key is not", "private_key_not_pem"),
    (r"^the private key does not belong", "private_key_mismatch"),
    (r"^no pending hold", "no_pending_hold"),
    (r"^no active erasure request", "no_active_erasure_request"),
    (r"^an organiser .* exists already", "organiser_exists"),
    (r"^a source .* exists already", "source_exists"),
    (r"^the source .* is of another kind", "source_of_another_kind"),
    (r"^consent was not given at Microsoft", "consent_not_given"),
    (r"^the consent link has expired", "consent_link_expired"),
    (r"^this installation has no multi-tenant Microsoft app", "no_microsoft_app"),
    (r"^only an EGIL source has", "only_egil_has_keys"),
    (r"^the source is disabled", "source_disabled"),
    (r"^an EGIL source pushes", "egil_pushes"),
    (r"^the subscription is live: there is no test report", "live_no_test_report"),
    (r"^the subscription has ended", "subscription_ended"),
    (r"live already", "live_already"),
    (r"in test mode already", "test_mode_already"),
    (r"^no service is consuming", "no_consumer"),
    (r"^this installation stores no secrets", "no_secret_storage"),
]
PROBLEM_TEXTS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(pattern), text(f"problems.{key}")) for pattern, key in PROBLEM_PATTERNS
]
PROBLEM_TITLES = {
    Forbidden: text("problem_titles.forbidden"),
    NotFound: text("problem_titles.not_found"),
    Conflict: text("problem_titles.conflict"),
    Invalid: text("problem_titles.invalid"),
    GateClosed: text("problem_titles.gate_closed"),
    Unavailable: text("problem_titles.unavailable"),
}


def swedish_blockers(blockers: Iterable[str], promotion: models.Promotion | None = None) -> list[str]:
    """The promotion gate's blockers in Swedish."""
    texts = []
    for blocker in blockers:
        ran = re.match(r"test mode has run ([\d.]+) of the ([\d.]+) hours required", blocker)
        if blocker.startswith("the subscription has not run in test mode"):
            texts.append(text("blockers.not_run"))
        elif ran:
            hours = text("blockers.hours", ran=decimal(float(ran.group(1))), required=decimal(float(ran.group(2))))
            if promotion is not None and promotion.test_started_at is not None:
                ready = promotion.test_started_at + timedelta(hours=promotion.test_hours_required)
                hours += " " + text("blockers.earliest", when=when(ready))
            texts.append(hours)
        elif blocker.startswith("the test report has not been marked"):
            texts.append(text("blockers.not_reviewed"))
        else:
            texts.append(blocker)
    return texts


def swedish(problem: Problem) -> str:
    """A service error as a plain Swedish sentence for the person at the screen."""
    if isinstance(problem, GateClosed):
        blockers = swedish_blockers(problem.extra.get("blockers") or [problem.detail])
        return text("problems.gate_closed", blockers=" ".join(blockers))
    for pattern, sentence in PROBLEM_TEXTS:
        if pattern.search(problem.detail):
            return sentence
    if problem.detail.startswith("the connector cannot read the source: "):
        reason = problem.detail.removeprefix("the connector cannot read the source: ")
        return text("problems.cannot_read_source", reason=reason)
    if isinstance(problem, Invalid) and problem.extra.get("errors"):
        return text("problems.check_fields")
    title = next((t for cls, t in PROBLEM_TITLES.items() if isinstance(problem, cls)), text("problem_titles.other"))
    return text("problems.service_said", title=title, detail=problem.detail)


FIELD_MESSAGES: dict[str, str] = section("field_messages")


def field_errors(errors: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """Validation errors (pydantic's or the service's ``errors``) as form field -> Swedish message.
    Service fields such as ``settings.domain`` become the form's ``setting_domain``."""
    found: dict[str, str] = {}
    for error in errors:
        location = error.get("loc")
        name = str(location[0]) if location else str(error.get("field", ""))
        if name in ("settings", "secrets") and location and len(location) > 1:
            name = f"{name}.{location[1]}"
        if name.startswith("settings."):
            message = str(error.get("message") or error.get("msg") or "required")
            found.setdefault(
                "setting_" + name.split(".", 1)[1],
                text("field_errors.required")
                if message in ("required", "Field required")
                else text("field_errors.not_accepted", message=message),
            )
        elif name.startswith("secrets."):
            found.setdefault("secret_" + name.split(".", 1)[1], text("field_errors.secret_required"))
        else:
            found.setdefault(name or "_form", FIELD_MESSAGES.get(name, text("field_errors.invalid")))
    return found


def subscription_state(subscription: models.Subscription) -> str:
    if subscription.subscription.get("ended_at"):
        return text("subscription_states.ended")
    return text("subscription_states.test") if subscription.promotion.test_mode else text("subscription_states.live")


# --- why a source run failed -------------------------------------------------------------------------


@dataclass(frozen=True)
class SourceErrorText:
    """The fix hint of one error code of a source run, as the UI shows it."""

    title: str
    fix: str
    #: True when retrying later cannot help until someone changes configuration or permissions.
    needs_admin: bool


#: The connectors' hints (``skolsynk.domain.source_errors``, English) in Swedish, from the catalogue's
#: ``source_errors.<kind>.<reason>`` (one entry serves every reason with the same hint). A hint missing
#: there is shown in English.
SOURCE_ERROR_TEXTS: dict[SourceErrorHint, tuple[str, str]] = {
    HINTS_BY_SOURCE_KIND[kind][reason]: (entry["title"], entry["fix"])
    for kind, reasons in section("source_errors").items()
    for reason, entry in reasons.items()
}


def source_error_hint(source_kind: str | None, code: str) -> SourceErrorText | None:
    """What an error code of a source run means and how to fix it, in Swedish when there is a translation
    (``users:quota_exceeded`` is looked up as ``quota_exceeded``); None for a code without a hint."""
    hint = hint_for(source_kind or "", code)
    if hint is None:
        return None
    title, fix = SOURCE_ERROR_TEXTS.get(hint, (hint.title, hint.fix))
    return SourceErrorText(title, fix, hint.needs_admin)


def check_text(result: models.SourceCheck, source_kind: str) -> str:
    """What a "test connection" found, as a sentence for the IT admin."""
    if result.ok:
        found = {
            "units": plural("school_units", result.counts.get("school_units", 0)),
            "persons": plural("persons", result.counts.get("persons", 0)),
        }
        sentence = text("check.works" if result.complete else "check.works_first_page", **found)
        if "students" in result.counts:  # a mapping's preview (Google)
            c = result.counts
            sentence += " " + text(
                "check.mapping",
                students=plural("check_students", c["students"]),
                teachers=plural("check_teachers", c["teachers"]),
                staff=text("check.staff", n=number(c.get("staff", 0))),
                without_role=number(c.get("without_role", 0)),
                without_unit=number(c.get("without_school_unit", 0)),
            )
        return sentence
    code = result.error_code or ""
    if code == "no_answer":
        return text("check.no_answer")
    if code == "timeout":
        return text("check.timeout")
    if code in ("configuration", "settings_invalid"):
        return text("check.settings", detail=result.detail)
    hint = source_error_hint(source_kind, code)
    if hint is not None:
        return text("check.fails", title=hint.title, fix=hint.fix)
    return text("check.fails_code", code=code)
