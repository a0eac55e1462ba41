"""The admin web UI (issue 9): Swedish, server-rendered pages for organisers' IT admins and operators.

An aiohttp sub-application (the service mounts it at ``/ui``) on top of :class:`admin.service.AdminService`:
every page calls the service with the signed-in :class:`Principal`, so what someone may see and do is
decided in one place, for the API and the UI alike. Plain HTML forms with POST-redirect-GET, no
JavaScript at all; the sync-history chart is inline SVG drawn here.

Security:

* **sign-in**: an API token pasted into a form becomes the cookie ``skolsynk_session`` (HttpOnly,
  SameSite=Strict, Secure over TLS, path of the UI); every page but the sign-in page requires it and
  sends whoever lacks a valid one to the sign-in page;
* **CSRF**: SameSite=Strict, and every POST must carry an ``Origin`` (or, without one, a ``Referer``)
  whose host and port are the request's ``Host``, otherwise 403;
* a Content-Security-Policy that allows no scripts (the inline style carries a per-response nonce),
  no framing, no caching of pages (they hold personal data);
* source secrets are write-only: forms never echo them, pages only say "lagrad" (stored).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import secrets
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import jinja2
from aiohttp import web
from multidict import MultiDictProxy
from pydantic import ValidationError

from skolsynk.domain.quality import FindingCode, Severity
from skolsynk.domain.ss12000 import SchoolUnit
from skolsynk_services.admin import models
from skolsynk_services.admin.auth import Principal, Role, TokenStore
from skolsynk_services.admin.problems import Conflict, Forbidden, GateClosed, Invalid, NotFound, Problem, Unavailable
from skolsynk_services.admin.service import AdminService

COOKIE = "skolsynk_session"
FLASH_COOKIE = "skolsynk_flash"
TEMPLATES = Path(__file__).parent / "templates"
#: Routes that need no session.
PUBLIC_ROUTES = frozenset({"login"})
#: How many rows a page shows at most (the CSV downloads have everything).
MAX_ROWS = 500
#: What a table cell shows for "no value".
DASH = "\u2013"

try:
    LOCAL_TIME: ZoneInfo | None = ZoneInfo("Europe/Stockholm")
except ZoneInfoNotFoundError:  # pragma: no cover - a system without a time-zone database
    LOCAL_TIME = None


@dataclass(frozen=True)
class Ui:
    service: AdminService
    tokens: TokenStore
    env: jinja2.Environment


UI_KEY = web.AppKey("skolsynk_admin_ui", Ui)
#: Who is signed in (None on the sign-in page without a session).
PRINCIPAL: web.RequestKey[Principal | None] = web.RequestKey("skolsynk_principal")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# --- Swedish texts -----------------------------------------------------------------------------------

ROLE_NAMES = {Role.OPERATOR.value: "driftoperatör", Role.ORGANISER_ADMIN.value: "administratör för huvudmannen"}
PERSON_ROLES = {"student": "Elever", "teacher": "Lärare", "other_staff": "Övrig personal"}
KIND_NAMES = {
    "organisation": "Organisation",
    "school_unit_group": "Skolenhetsgrupper",
    "school_unit": "Skolenheter",
    "person": "Personer",
    "duty": "Tjänstgöringar",
    "group": "Grupper",
    "activity": "Aktiviteter",
    **PERSON_ROLES,
}
SOURCE_KINDS = {
    models.SourceKind.GOOGLE.value: (
        "Google Workspace",
        "Elever, personal och skolenheter läses från er Google Workspace-katalog med ett tjänstekonto.",
    ),
    models.SourceKind.MICROSOFT.value: (
        "Microsoft 365 (School Data Sync)",
        "Uppgifterna läses från Microsoft 365 och School Data Sync via en appregistrering i Microsoft Entra ID.",
    ),
    models.SourceKind.EGIL.value: (
        "EGIL-klient",
        "Ert elevadministrativa system skickar uppgifterna till skolsynk med en EGIL-klient. "
        "Här behövs inga inställningar: driften ger er adressen och API-nyckeln som ska anges i EGIL-klienten.",
    ),
    models.SourceKind.SS12000.value: (
        "SS 12000-API",
        "Uppgifterna hämtas från ett API enligt SS 12000:2020 (till exempel från ert elevadministrativa system).",
    ),
}


@dataclass(frozen=True)
class FormField:
    name: str
    label: str
    help: str = ""
    input_type: str = "text"


SETTING_FIELDS = {
    "domain": FormField("domain", "Domän", "Er Google Workspace-domän, till exempel skola.kommun.se."),
    "delegated_admin": FormField(
        "delegated_admin",
        "Administratörskonto",
        "E-postadressen till det administratörskonto i Google Workspace som tjänstekontot får agera som "
        "(domänövergripande delegering).",
        "email",
    ),
    "azure_tenant_id": FormField(
        "azure_tenant_id", "Katalog-ID (Directory ID)", "Finns i Microsoft Entra ID under Översikt."
    ),
    "client_id": FormField("client_id", "Klient-ID (Client ID)", "ID:t för appregistreringen eller API-klienten."),
    "base_url": FormField(
        "base_url",
        "API-adress",
        "Adressen till SS 12000-API:t, till exempel https://api.example.se/ss12000/v2.",
        "url",
    ),
}
SECRET_FIELDS = {
    "service_account_key": FormField(
        "service_account_key",
        "Tjänstekontots nyckel (JSON)",
        "Klistra in hela innehållet i nyckelfilen (JSON) som du laddade ner från Google Cloud.",
    ),
    "client_secret": FormField(
        "client_secret", "Klienthemlighet", "Själva värdet för klienthemligheten (inte dess ID)."
    ),
}

FINDINGS = {
    FindingCode.RECORD_INVALID: (
        "Posten följer inte modellen",
        "Ett obligatoriskt fält saknas eller har fel format. Posten skickas inte.",
    ),
    FindingCode.EMAIL_INVALID: ("Ogiltig e-postadress", "Adressen tas bort; personen skickas utan den."),
    FindingCode.EMAIL_MISSING: ("E-postadress saknas", "Leverantörer som kräver e-post kan inte skapa kontot."),
    FindingCode.EMAIL_DUPLICATE: (
        "Samma e-postadress som en annan person",
        "Adressen tas bort från den här personen.",
    ),
    FindingCode.EPPN_MISSING: (
        "Inloggnings-id (EPPN) saknas",
        "Leverantörer som använder EGIL kan inte skapa kontot.",
    ),
    FindingCode.EPPN_DUPLICATE: (
        "Samma inloggnings-id (EPPN) som en annan person",
        "Den här personen skickas inte.",
    ),
    FindingCode.SCHOOL_UNIT_CODE_MISSING: ("Skolenhetskod saknas", "Skolenheten skickas inte."),
    FindingCode.SCHOOL_UNIT_CODE_MALFORMED: (
        "Felaktig skolenhetskod",
        "Koden är inte 8 siffror; skolenheten skickas inte.",
    ),
    FindingCode.SCHOOL_UNIT_CODE_DUPLICATE: (
        "Samma skolenhetskod som en annan skolenhet",
        "Den här skolenheten skickas inte.",
    ),
    FindingCode.ENROLMENT_UNKNOWN_SCHOOL_UNIT: ("Inskrivning på okänd skolenhet", "Inskrivningen tas bort."),
    FindingCode.DUTY_UNKNOWN_SCHOOL_UNIT: ("Tjänstgöring på okänd skolenhet", "Tjänstgöringen skickas inte."),
    FindingCode.DUTY_UNKNOWN_PERSON: ("Tjänstgöring för okänd person", "Tjänstgöringen skickas inte."),
    FindingCode.GROUP_UNKNOWN_SCHOOL_UNIT: ("Grupp på okänd skolenhet", "Gruppen skickas inte."),
    FindingCode.GROUP_UNKNOWN_MEMBER: ("Okänd gruppmedlem", "Medlemskapet tas bort."),
    FindingCode.ACTIVITY_UNKNOWN_SCHOOL_UNIT: ("Aktivitet på okänd skolenhet", "Aktiviteten skickas inte."),
    FindingCode.ACTIVITY_UNKNOWN_REFERENCE: (
        "Aktivitet med okänd grupp eller tjänstgöring",
        "Hänvisningen tas bort.",
    ),
    FindingCode.PERSON_NO_ACTIVE_RELATION: (
        "Ingen aktiv inskrivning eller tjänstgöring",
        "Ingen leverantör får personen.",
    ),
    FindingCode.PERSON_CONFLICTING_ROLES: (
        "Både elev och personal",
        "Personen är i dag både inskriven som elev och anställd.",
    ),
    FindingCode.DATES_INVERTED: (
        "Startdatum efter slutdatum",
        "Inskrivningen, medlemskapet eller tjänstgöringen tas bort (en hel post med omvända datum skickas inte).",
    ),
    FindingCode.VALUE_UNKNOWN: (
        "Okänt värde",
        "Ett värde som SS 12000 inte känner till (till exempel en skolform) tas bort.",
    ),
    FindingCode.RUN_INCOMPLETE: (
        "Ofullständig inläsning",
        "Inläsningen från källan var ofullständig; ingenting togs bort på grund av den.",
    ),
}
SEVERITIES = {
    Severity.ERROR.value: ("Fel", "posten skickas inte"),
    Severity.WARNING.value: ("Varning", "posten skickas, felaktiga värden tas bort"),
}
RUN_STATUSES = {
    "running": "pågår",
    "ready": "inläst, bearbetas",
    "finalising": "bearbetas",
    "finalised": "klar",
}
HOLD_STATUSES = {"pending": "Väntar på beslut", "approved": "Godkänd", "discarded": "Avvisad"}
LEDGER_STATUSES = {
    "pending": "Väntar på kvitto",
    "overdue": "Försenad",
    "completed": "Klar",
    "superseded": "Ersatt (personen kom tillbaka)",
}
LEDGER_REASONS = {
    "left_source": "Borta ur källan",
    "left_selection": "Utanför leverantörens urval",
    "subscription_ended": "Prenumerationen avslutades",
    "erasure_request": "Begäran om radering",
    "objection": "Invändning",
}
RECEIPT_OUTCOMES = {
    "deleted": "Raderad hos leverantören",
    "already_absent": "Fanns inte hos leverantören",
    "queued": "Överlämnad i leverantörens kö",
    "superseded": "Ersatt",
}
ERASURE_KINDS = {"erasure": "Radering", "objection": "Invändning"}
REQUEST_STATUSES = {"active": "Gäller", "withdrawn": "Återkallad"}
POLICIES = {
    "exclude": "Skicka inte personer med skyddad identitet (rekommenderas)",
    "pseudonymise": "Skicka dem med påhittade namn och ett id som bara gäller den här leverantören",
    "minimal": "Skicka bara namn och inloggnings-id",
}
SCHOOL_YEARS = [(0, "Förskoleklass"), *((y, f"Årskurs {y}") for y in range(1, 11))]
AUDIT_ACTIONS = {
    "tenant.create": "Skapade huvudmannen",
    "token.create": "Skapade en åtkomstnyckel",
    "token.revoke": "Återkallade en åtkomstnyckel",
    "source.create": "Lade till en källa",
    "source.update": "Ändrade en källa",
    "source.delete": "Tog bort en källa",
    "source.sync": "Begärde synkronisering",
    "subscription.create": "Skapade en prenumeration",
    "subscription.update": "Ändrade en prenumeration",
    "subscription.end": "Avslutade en prenumeration",
    "subscription.review": "Markerade testrapporten som granskad",
    "subscription.go_live": "Gick live",
    "subscription.test_mode": "Tillbaka till testläge",
    "subscription.resend": "Skickade allt igen",
    "hold.approve": "Godkände spärrade borttagningar",
    "hold.discard": "Avvisade spärrade borttagningar",
    "gdpr.erasure": "Begärde radering",
    "gdpr.objection": "Registrerade en invändning",
    "gdpr.withdraw": "Återkallade en GDPR-begäran",
}
#: Tenant navigation: (section, label, route name).
NAVIGATION = [
    ("overview", "Översikt", "overview"),
    ("sources", "Källor", "sources"),
    ("quality", "Datakvalitet", "quality"),
    ("vendors", "Leverantörer", "vendors"),
    ("holds", "Spärrar", "holds"),
    ("gdpr", "GDPR", "gdpr"),
    ("log", "Logg", "log"),
    ("access", "Åtkomst", "access"),
]

#: Service messages (English, for the API) -> what the UI says. The first pattern that matches wins.
PROBLEM_TEXTS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"^this token is not allowed"), "Du har inte behörighet till den huvudmannen."),
    (re.compile(r"^only operators"), "Det får bara driftoperatörer göra."),
    (re.compile(r"^no organiser"), "Huvudmannen finns inte."),
    (re.compile(r"^no source"), "Källan finns inte."),
    (re.compile(r"^no subscription"), "Det finns ingen prenumeration för den leverantören."),
    (re.compile(r"^no vendor"), "Leverantören finns inte i katalogen."),
    (
        re.compile(r"^no pending hold"),
        "Det finns ingen spärr som väntar på beslut för den leverantören och skolenheten.",
    ),
    (re.compile(r"^no active erasure request"), "Det finns ingen gällande begäran med det id:t."),
    (re.compile(r"^no such token"), "Åtkomstnyckeln finns inte."),
    (re.compile(r"^an organiser .* exists already"), "Det finns redan en huvudman med det id:t."),
    (re.compile(r"^a source .* exists already"), "Det finns redan en källa med det id:t."),
    (
        re.compile(r"^an EGIL source pushes"),
        "En EGIL-källa skickar sina uppgifter själv: be huvudmannens EGIL-klient att skicka dem igen.",
    ),
    (
        re.compile(r"^the subscription is live: there is no test report"),
        "Prenumerationen är live; det finns ingen testrapport att granska.",
    ),
    (
        re.compile(r"^the subscription has ended"),
        "Prenumerationen är avslutad. Spara den igen för att börja om i testläge.",
    ),
    (re.compile(r"live already"), "Prenumerationen är redan live."),
    (re.compile(r"in test mode already"), "Prenumerationen är redan i testläge."),
    (
        re.compile(r"^no service is consuming"),
        "Ingen tjänst tar emot begäran just nu, så den skickades inte. Försök igen om en stund eller kontakta driften.",
    ),
    (
        re.compile(r"^this installation stores no secrets"),
        "Den här installationen lagrar inga hemligheter. Ange i stället var hemligheten finns "
        "(en hänvisning under ”Hemligheten finns någon annanstans”), eller be driften konfigurera lagring.",
    ),
]
PROBLEM_TITLES = {
    Forbidden: "Du har inte behörighet till det här.",
    NotFound: "Det du letar efter finns inte.",
    Conflict: "Det gick inte just nu.",
    Invalid: "Uppgifterna är inte giltiga.",
    GateClosed: "Prenumerationen kan inte gå live än.",
    Unavailable: "Tjänsten är tillfälligt otillgänglig.",
}


def swedish_blockers(blockers: Iterable[str], promotion: models.Promotion | None = None) -> list[str]:
    """The promotion gate's blockers in Swedish."""
    texts = []
    for blocker in blockers:
        ran = re.match(r"test mode has run ([\d.]+) of the ([\d.]+) hours required", blocker)
        if blocker.startswith("the subscription has not run in test mode"):
            texts.append("Prenumerationen har inte körts i testläge än.")
        elif ran:
            text = (
                f"Testläget har pågått i {decimal(float(ran.group(1)))} av de "
                f"{decimal(float(ran.group(2)))} timmar som krävs."
            )
            if promotion is not None and promotion.test_started_at is not None:
                ready = promotion.test_started_at + timedelta(hours=promotion.test_hours_required)
                text += f" Tidigast {when(ready)} kan prenumerationen gå live."
            texts.append(text)
        elif blocker.startswith("the test report has not been marked"):
            texts.append("Testrapporten är inte markerad som granskad.")
        else:
            texts.append(blocker)
    return texts


def swedish(problem: Problem) -> str:
    """A service error as a plain Swedish sentence for the person at the screen."""
    if isinstance(problem, GateClosed):
        return "Prenumerationen kan inte gå live än: " + " ".join(
            swedish_blockers(problem.extra.get("blockers") or [problem.detail])
        )
    for pattern, text in PROBLEM_TEXTS:
        if pattern.search(problem.detail):
            return text
    if isinstance(problem, Invalid) and problem.extra.get("errors"):
        return "Kontrollera de markerade fälten."
    title = next((t for cls, t in PROBLEM_TITLES.items() if isinstance(problem, cls)), "Det gick inte.")
    return f"{title} (Tjänstens beskrivning: {problem.detail})"


FIELD_MESSAGES = {
    "tenant_id": "Använd små bokstäver a-z, siffror och bindestreck (högst 63 tecken), till exempel kommun-a.",
    "source_id": "Använd små bokstäver a-z, siffror och bindestreck (högst 63 tecken), till exempel google-1.",
    "display_name": "Skriv ett namn (högst 200 tecken).",
    "organisation_number": "Skriv organisationsnumret som 10 siffror, till exempel 212000-0000.",
    "subject": "Skriv vem nyckeln är till, till exempel en e-postadress (högst 120 tecken).",
    "school_unit_codes": "Välj minst en skolenhet.",
    "roles": "Välj minst en roll.",
    "school_years": "Årskurserna är 0 (förskoleklass) till 10.",
    "deletion_grace_hours": "Skriv ett antal timmar mellan 0 och 2160 (90 dagar).",
    "protected_identity_policy": "Välj hur personer med skyddad identitet ska hanteras.",
    "person_id": "Välj en person i sökresultatet.",
    "vendor_ids": "Välj minst en leverantör, eller alla.",
    "reference": "Ärendenumret får vara högst 64 tecken.",
    "override_reason": "Skriv en motivering på 5-300 tecken.",
}


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
            found.setdefault("setting_" + name.split(".", 1)[1], "Måste fyllas i.")
        elif name.startswith("secrets."):
            found.setdefault("secret_" + name.split(".", 1)[1], "Måste fyllas i (eller ange var hemligheten finns).")
        else:
            found.setdefault(name or "_form", FIELD_MESSAGES.get(name, "Värdet är inte giltigt."))
    return found


# --- formatting --------------------------------------------------------------------------------------


def when(value: Any) -> str:
    """A time as Swedes read it, in Swedish local time."""
    if value is None or value == "":
        return DASH
    if isinstance(value, str):
        text = value
        try:
            value = datetime.fromisoformat(text)
        except ValueError:
            return text
    if not isinstance(value, datetime):
        return str(value)
    moment: datetime = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    if LOCAL_TIME is not None:
        return moment.astimezone(LOCAL_TIME).strftime("%Y-%m-%d %H:%M")
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def number(value: Any) -> str:
    if value is None:
        return DASH
    if isinstance(value, float) and not value.is_integer():
        return decimal(value)
    return f"{int(value):,}".replace(",", "\u00a0")


def decimal(value: float, digits: int = 1) -> str:
    text = f"{value:.{digits}f}".replace(".", ",")
    return text[: -(digits + 1)] if text.endswith("," + "0" * digits) else text


def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = when
    env.filters["number"] = number
    env.filters["decimal"] = decimal
    env.globals.update(
        ROLE_NAMES=ROLE_NAMES,
        PERSON_ROLES=PERSON_ROLES,
        KIND_NAMES=KIND_NAMES,
        SOURCE_KINDS=SOURCE_KINDS,
        FINDINGS={code.value: text for code, text in FINDINGS.items()},
        SEVERITIES=SEVERITIES,
        RUN_STATUSES=RUN_STATUSES,
        HOLD_STATUSES=HOLD_STATUSES,
        LEDGER_STATUSES=LEDGER_STATUSES,
        LEDGER_REASONS=LEDGER_REASONS,
        RECEIPT_OUTCOMES=RECEIPT_OUTCOMES,
        ERASURE_KINDS=ERASURE_KINDS,
        REQUEST_STATUSES=REQUEST_STATUSES,
        POLICIES=POLICIES,
        SCHOOL_YEARS=SCHOOL_YEARS,
        AUDIT_ACTIONS=AUDIT_ACTIONS,
        NAVIGATION=NAVIGATION,
    )
    return env


# --- the sync-history chart --------------------------------------------------------------------------


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    fill: str
    title: str


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    left: int
    bottom: float
    top_value: int
    bars: list[Bar]
    first: str
    last: str
    summary: str
    legend: list[tuple[str, str]] = field(default_factory=list)


CHART_COLOURS = {"complete": "#2e7d32", "incomplete": "#c62828", "running": "#757575"}


def runs_chart(
    runs: Sequence[Mapping[str, Any]], *, width: int = 720, height: int = 200, limit: int = 30
) -> Chart | None:
    """Records per run, oldest on the left, as bars (green: complete, red: incomplete, grey: running)."""
    rows = list(reversed(runs[:limit]))
    if not rows:
        return None
    values = [sum(int(v) for v in (r.get("counts") or {}).values()) for r in rows]
    top = max(values) or 1
    left, right, top_margin, bottom_margin = 56, 8, 12, 28
    plot_height = height - top_margin - bottom_margin
    slot = (width - left - right) / len(rows)
    bars = []
    for index, (run, value) in enumerate(zip(rows, values, strict=True)):
        if run.get("status") != "finalised":
            state, text = "running", "pågår"
        elif run.get("complete") is False or run.get("healthy") is False:
            state, text = "incomplete", "ofullständig"
        else:
            state, text = "complete", "komplett"
        bar_height = max(plot_height * value / top, 1.0)
        duration = run.get("duration_seconds")
        seconds = f", {decimal(float(duration))} s" if duration is not None else ""
        bars.append(
            Bar(
                x=round(left + index * slot + slot * 0.15, 2),
                y=round(top_margin + plot_height - bar_height, 2),
                width=round(max(slot * 0.7, 1.0), 2),
                height=round(bar_height, 2),
                fill=CHART_COLOURS[state],
                title=f"{when(run.get('started_at'))}: {number(value)} poster{seconds}, {text}",
            )
        )
    incomplete = sum(1 for b in bars if b.fill == CHART_COLOURS["incomplete"])
    runs_text = f"{len(rows)} {'körning' if len(rows) == 1 else 'körningar'}"
    summary = (
        f"{runs_text} från {when(rows[0].get('started_at'))} till {when(rows[-1].get('started_at'))}; "
        f"mest {number(top)} poster i en körning; {incomplete} ofullständiga."
    )
    return Chart(
        width=width,
        height=height,
        left=left,
        bottom=top_margin + plot_height,
        top_value=top,
        bars=bars,
        first=when(rows[0].get("started_at")),
        last=when(rows[-1].get("started_at")),
        summary=summary,
        legend=[
            (CHART_COLOURS["complete"], "komplett"),
            (CHART_COLOURS["incomplete"], "ofullständig"),
            (CHART_COLOURS["running"], "pågår"),
        ],
    )


# --- requests, responses, sessions -------------------------------------------------------------------


def _ui(request: web.Request) -> Ui:
    return request.app[UI_KEY]


def _service(request: web.Request) -> AdminService:
    return request.app[UI_KEY].service


def _principal(request: web.Request) -> Principal:
    principal = request[PRINCIPAL]
    if principal is None:  # pragma: no cover - session_required lets no one through without one
        raise web.HTTPSeeOther(url(request, "login"))
    return principal


def url(request: web.Request, name: str, query: Mapping[str, Any] | None = None, **parts: Any) -> str:
    """The path of a named UI route (with the UI's prefix), optionally with a query."""
    target = request.app.router[name].url_for(**{k: str(v) for k, v in parts.items()})
    if query:
        target = target.with_query({k: str(v) for k, v in query.items() if v not in (None, "")})
    return str(target)


def _cookie_path(request: web.Request) -> str:
    return url(request, "home").rstrip("/") or "/"


def _encode_flash(kind: str, text: str) -> str:
    return base64.urlsafe_b64encode(json.dumps({"k": kind, "t": text[:1500]}).encode()).decode()


def _take_flash(request: web.Request) -> dict[str, str] | None:
    raw = request.cookies.get(FLASH_COOKIE)
    if not raw:
        return None
    try:
        data = json.loads(base64.urlsafe_b64decode(raw.encode()))
        return {"kind": "error" if data["k"] == "error" else "ok", "text": str(data["t"])}
    except (ValueError, KeyError, TypeError, binascii.Error):
        return None


def see_other(request: web.Request, location: str, flash: str | None = None, *, error: bool = False) -> web.Response:
    """POST-redirect-GET, with an optional one-time message for the next page."""
    response = web.Response(status=303, headers={"Location": location})
    if flash:
        response.set_cookie(
            FLASH_COOKIE,
            _encode_flash("error" if error else "ok", flash),
            path=_cookie_path(request),
            httponly=True,
            samesite="Strict",
            secure=request.secure,
        )
    return response


def refused(request: web.Request, back: str, problem: Problem) -> web.Response:
    """An action the service refused: back to the page with the reason. Not allowed at all (another
    organiser's data, an operator's action) is a 403 page instead."""
    if isinstance(problem, Forbidden):
        raise problem
    return see_other(request, back, swedish(problem), error=True)


def render(request: web.Request, template: str, *, status: int = 200, **values: Any) -> web.Response:
    ui = _ui(request)
    nonce = secrets.token_urlsafe(16)
    flash = _take_flash(request)
    html = ui.env.get_template(template).render(
        principal=request.get(PRINCIPAL),
        flash=flash,
        nonce=nonce,
        url=lambda name, query=None, **parts: url(request, name, query, **parts),
        **values,
    )
    response = web.Response(text=html, content_type="text/html", status=status)
    response.headers["Content-Security-Policy"] = (
        f"default-src 'none'; style-src 'nonce-{nonce}'; img-src 'self' data:; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    )
    if flash is not None or FLASH_COOKIE in request.cookies:
        response.del_cookie(FLASH_COOKIE, path=_cookie_path(request))
    return response


def download(text: str, filename: str, content_type: str) -> web.Response:
    response = web.Response(text=text, content_type=content_type)
    response.headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


def _authority(scheme: str, netloc: str) -> tuple[str, int | None]:
    parts = urlsplit(f"{scheme}://{netloc}")
    try:
        port = parts.port
    except ValueError:
        return ("", -1)
    default = {"http": 80, "https": 443}.get(scheme)
    return ((parts.hostname or "").lower(), port if port is not None else default)


def same_origin(request: web.Request) -> bool:
    """Whether a state-changing request comes from a page of this host: its Origin (or, when the
    browser sends none, its Referer) names the host and port the request was sent to."""
    origin = request.headers.get("Origin")
    claimed = origin if origin is not None else request.headers.get("Referer")
    if not claimed or claimed == "null":
        return False
    parts = urlsplit(claimed)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return False
    return _authority(parts.scheme, parts.netloc) == _authority(request.scheme, request.host)


@web.middleware
async def security_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    response = await handler(request)
    response.headers.setdefault("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'")
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["Cache-Control"] = "no-store"
    return response


@web.middleware
async def problems_as_pages(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A service error that reaches here (mostly on pages, GET) becomes a Swedish error page."""
    try:
        return await handler(request)
    except Problem as problem:
        return render(request, "error.html", status=problem.status, message=swedish(problem))


@web.middleware
async def csrf_protection(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.method not in ("GET", "HEAD", "OPTIONS") and not same_origin(request):
        return render(
            request,
            "error.html",
            status=403,
            message="Begäran stoppades eftersom den inte kom från en sida i skolsynk. "
            "Gå tillbaka, ladda om sidan och försök igen.",
        )
    return await handler(request)


@web.middleware
async def session_required(request: web.Request, handler: Handler) -> web.StreamResponse:
    resource = request.match_info.route.resource
    name = resource.name if resource is not None else None
    token = request.cookies.get(COOKIE)
    principal = await _ui(request).tokens.authenticate(token) if token else None
    request[PRINCIPAL] = principal
    if principal is not None and "tenant" in request.match_info:
        principal.require_tenant(request.match_info["tenant"])  # before any form is read (the service checks too)
    if principal is not None or name in PUBLIC_ROUTES or resource is None:
        return await handler(request)
    next_path = request.path_qs if request.method == "GET" else None
    response = see_other(request, url(request, "login", {"next": next_path}))
    if token:
        response.del_cookie(COOKIE, path=_cookie_path(request))
    return response


# --- sign-in -----------------------------------------------------------------------------------------


def _safe_next(request: web.Request, target: str | None) -> str:
    home = url(request, "home")
    if target and target.startswith(home) and not target.startswith("//") and "\\" not in target:
        return target
    return home


async def login_page(request: web.Request) -> web.StreamResponse:
    if request.get(PRINCIPAL) is not None:
        return see_other(request, _safe_next(request, request.query.get("next")))
    return render(request, "login.html", next=request.query.get("next", ""), error=None)


async def login(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    token = str(form.get("token", "")).strip()
    principal = await _ui(request).tokens.authenticate(token) if token else None
    if principal is None:
        return render(
            request,
            "login.html",
            status=401,
            next=str(form.get("next", "")),
            error="Nyckeln känns inte igen. Kontrollera att du har klistrat in hela nyckeln (den börjar med skt_) "
            "och att den inte har återkallats.",
        )
    response = see_other(request, _safe_next(request, str(form.get("next", ""))))
    response.set_cookie(
        COOKIE, token, path=_cookie_path(request), httponly=True, samesite="Strict", secure=request.secure
    )
    return response


async def logout(request: web.Request) -> web.StreamResponse:
    response = see_other(request, url(request, "login"), "Du är utloggad.")
    response.del_cookie(COOKIE, path=_cookie_path(request))
    return response


# --- operators' start page ---------------------------------------------------------------------------


async def home(request: web.Request) -> web.StreamResponse:
    principal = _principal(request)
    if not principal.is_operator and principal.tenant_id:
        return see_other(request, url(request, "overview", tenant=principal.tenant_id))
    tenants = await _service(request).list_tenants(principal)
    return render(request, "tenants.html", tenants=tenants, form={}, errors={}, error=None)


async def create_tenant(request: web.Request) -> web.StreamResponse:
    principal = _principal(request)
    service = _service(request)
    form = await request.post()
    values = {k: str(form.get(k, "")).strip() for k in ("tenant_id", "display_name", "organisation_number")}
    errors: dict[str, str] = {}
    error = None
    status = 422
    try:
        body = models.TenantIn.model_validate({**values, "organisation_number": values["organisation_number"] or None})
        tenant = await service.create_tenant(principal, body)
    except ValidationError as invalid:
        errors = field_errors(invalid.errors())
        error = "Kontrollera de markerade fälten."
    except Problem as problem:
        error, status = swedish(problem), problem.status
        if isinstance(problem, Conflict):
            errors = {"tenant_id": error}
    else:
        return see_other(
            request,
            url(request, "overview", tenant=tenant.tenant_id),
            f"Huvudmannen {tenant.display_name} är skapad. Börja med att koppla en källa.",
        )
    tenants = await service.list_tenants(principal)
    return render(request, "tenants.html", status=status, tenants=tenants, form=values, errors=errors, error=error)


async def platform_log(request: web.Request) -> web.StreamResponse:
    entries = await _service(request).audit(_principal(request), None)
    return render(request, "log.html", entries=[_audit_row(e) for e in entries], platform=True)


# --- tenant pages ------------------------------------------------------------------------------------


async def _page(request: web.Request, section: str) -> dict[str, Any]:
    """What every tenant page shows in its frame; checks that the principal may see the tenant."""
    tenant_id = request.match_info["tenant"]
    tenant = await _service(request).get_tenant(_principal(request), tenant_id)
    return {"tenant_id": tenant_id, "tenant_name": tenant.display_name, "section": section}


def _status(subscription: models.Subscription) -> str:
    if subscription.subscription.get("ended_at"):
        return "Avslutad"
    return "Testläge" if subscription.promotion.test_mode else "Live"


async def overview(request: web.Request) -> web.StreamResponse:
    frame = await _page(request, "overview")
    tenant_id = frame["tenant_id"]
    data = await _service(request).overview(_principal(request), tenant_id)
    steps_done = data["steps"]
    subscriptions: list[models.Subscription] = data["subscriptions"]
    first = next((s for s in subscriptions if not s.subscription.get("ended_at")), None)
    report = url(request, "subscription", tenant=tenant_id, vendor=first.vendor_id) if first else None
    hours = decimal(_service(request).promotion_hours)
    steps = [
        (
            "source",
            "Koppla en källa",
            "Ange varifrån elever, personal och skolenheter hämtas: Google Workspace, Microsoft 365, "
            "en EGIL-klient eller ett SS 12000-API.",
            url(request, "sources", tenant=tenant_id),
        ),
        (
            "data",
            "Datakvalitet",
            "När den första inläsningen är klar: läs rapporten om brister i uppgifterna och rätta dem i källan.",
            url(request, "quality", tenant=tenant_id),
        ),
        (
            "subscription",
            "Välj leverantörer och skolenheter",
            "Välj vilka läromedelsleverantörer som ska få uppgifter, och för vilka skolenheter och roller.",
            url(request, "vendors", tenant=tenant_id),
        ),
        (
            "test",
            "Testläge",
            "En ny prenumeration börjar i testläge: skolsynk räknar fram vad leverantören skulle få, "
            "men skickar ingenting.",
            url(request, "vendors", tenant=tenant_id),
        ),
        (
            "reviewed",
            "Granska testrapporten",
            "Kontrollera i testrapporten att rätt elever och lärare kommer med, och markera den som granskad.",
            report or url(request, "vendors", tenant=tenant_id),
        ),
        (
            "live",
            "Gå live",
            f"När testläget har pågått i minst {hours} timmar och rapporten är granskad kan du gå live: "
            "då skickas uppgifterna på riktigt.",
            report or url(request, "vendors", tenant=tenant_id),
        ),
    ]
    checklist = [
        {"key": key, "title": title, "text": text, "href": href, "done": bool(steps_done.get(key))}
        for key, title, text, href in steps
    ]
    next_step = next((s["key"] for s in checklist if not s["done"]), None)
    return render(
        request,
        "overview.html",
        **frame,
        data=data,
        checklist=checklist,
        next_step=next_step,
        subscriptions=[(s, _status(s)) for s in subscriptions],
        chart=runs_chart(data["runs"]),
    )


# --- sources -----------------------------------------------------------------------------------------


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
    frame = await _page(request, "sources")
    principal, service = _principal(request), _service(request)
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
    frame = await _page(request, "sources")
    kind = _kind(request.query.get("kind"))
    if kind is None:
        return see_other(request, url(request, "sources", tenant=frame["tenant_id"]))
    default_id = f"{kind.value}-1"
    return _render_source_form(request, frame, kind, None, {"source_id": default_id, "display_name": ""})


async def source_edit(request: web.Request) -> web.StreamResponse:
    frame = await _page(request, "sources")
    current = await _service(request).get_source(_principal(request), frame["tenant_id"], request.match_info["source"])
    values = {"source_id": current.source_id, "display_name": current.display_name}
    values |= {f"setting_{k}": str(v) for k, v in current.settings.items()}
    values |= {f"ref_{k}": v for k, v in current.secret_refs.items()}
    return _render_source_form(request, frame, current.kind, current, values)


async def source_save(request: web.Request) -> web.StreamResponse:
    frame = await _page(request, "sources")
    principal, service = _principal(request), _service(request)
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
        await _service(request).request_sync(_principal(request), tenant_id, source_id, "full")
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
        await _service(request).delete_source(_principal(request), tenant_id, source_id)
    except Problem as problem:
        return refused(request, back, problem)
    return see_other(request, back, "Källan är borttagen.")


# --- data quality ------------------------------------------------------------------------------------


def _enum_or_none(cls: type[Severity] | type[FindingCode], value: str | None) -> Any:
    try:
        return cls(value) if value else None
    except ValueError:
        return None


async def quality(request: web.Request) -> web.StreamResponse:
    frame = await _page(request, "quality")
    principal, service = _principal(request), _service(request)
    tenant_id = frame["tenant_id"]
    query = request.query
    severity = _enum_or_none(Severity, query.get("severity"))
    code = _enum_or_none(FindingCode, query.get("code"))
    unit = query.get("school_unit") or None
    found = await service.findings(
        principal, tenant_id, severity=severity, code=code, school_unit_code=unit, limit=MAX_ROWS + 1
    )
    summary = await service.findings_summary(principal, tenant_id)
    units = await service.school_units(principal, tenant_id)
    names = {u["school_unit_code"]: u["display_name"] for u in units}
    rows = []
    for unit_code, counts in summary.items():
        codes = sorted(((c, n) for c, n in counts.items() if c not in SEVERITIES), key=lambda item: (-item[1], item[0]))
        rows.append(
            {
                "code": unit_code,
                "name": names.get(unit_code),
                "errors": counts.get("error", 0),
                "warnings": counts.get("warning", 0),
                "codes": codes,
            }
        )
    return render(
        request,
        "quality.html",
        **frame,
        filters={"severity": severity.value if severity else "", "code": code.value if code else "", "unit": unit},
        findings=found[:MAX_ROWS],
        truncated=len(found) > MAX_ROWS,
        summary=rows,
        unit_names=names,
        unit_codes=sorted(set(names) | {c for c in summary if c != "-"}),
        codes=[c.value for c in FindingCode],
    )


async def findings_csv(request: web.Request) -> web.StreamResponse:
    tenant_id = request.match_info["tenant"]
    text = await _service(request).findings_csv(_principal(request), tenant_id)
    return download(text, f"datakvalitet-{tenant_id}.csv", "text/csv")


# --- vendors and subscriptions -----------------------------------------------------------------------


async def vendors(request: web.Request) -> web.StreamResponse:
    frame = await _page(request, "vendors")
    principal, service = _principal(request), _service(request)
    subscriptions = await service.list_subscriptions(principal, frame["tenant_id"])
    history = await service.vendor_history(principal, frame["tenant_id"])
    names = {v.vendor_id: v.display_name for v in service.vendors()}
    return render(
        request,
        "vendors.html",
        **frame,
        subscriptions=[(s, _status(s), swedish_blockers(s.promotion.blockers, s.promotion)) for s in subscriptions],
        history=history[:30],
        vendor_names=names,
    )


def _subscription_values(form: Mapping[str, Any] | MultiDictProxy[Any]) -> dict[str, Any]:
    getall = form.getall if isinstance(form, MultiDictProxy) else (lambda key, default: form.get(key, default))
    return {
        "vendor_id": str(form.get("vendor_id", "")).strip(),
        "school_unit_codes": [str(v) for v in getall("school_unit_codes", [])],
        "roles": [str(v) for v in getall("roles", [])],
        "school_years": [str(v) for v in getall("school_years", [])],
        "protected_identity_policy": str(form.get("protected_identity_policy", "exclude")),
        "deletion_grace_hours": str(form.get("deletion_grace_hours", "0")).strip(),
    }


def _values_of(subscription: models.Subscription) -> dict[str, Any]:
    stored = subscription.subscription
    grace = float(stored.get("deletion_grace_hours") or 0)
    return {
        "vendor_id": subscription.vendor_id,
        "school_unit_codes": list(stored.get("school_unit_codes") or []),
        "roles": list(stored.get("roles") or []),
        "school_years": [str(y) for y in stored.get("school_years") or []],
        "protected_identity_policy": stored.get("protected_identity_policy") or "exclude",
        "deletion_grace_hours": decimal(grace),
    }


def _subscription_body(values: dict[str, Any], current: models.Subscription | None) -> models.SubscriptionIn:
    """The form as the service's body; what the form does not show (school types, group types, fields)
    is kept from the current subscription."""
    grace = values["deletion_grace_hours"].replace(",", ".") or "0"
    data: dict[str, Any] = {
        "school_unit_codes": values["school_unit_codes"],
        "roles": values["roles"],
        "school_years": [int(y) for y in values["school_years"] if y.isdigit()] or None,
        "protected_identity_policy": values["protected_identity_policy"],
        "deletion_grace_hours": grace,
    }
    if current is not None:
        stored = current.subscription
        data |= {k: stored.get(k) for k in ("school_types", "group_types", "fields")}
    return models.SubscriptionIn.model_validate(data)


async def _render_subscription_form(
    request: web.Request,
    frame: dict[str, Any],
    current: models.Subscription | None,
    values: dict[str, Any],
    *,
    preview: models.Preview | None = None,
    errors: dict[str, str] | None = None,
    error: str | None = None,
    status: int = 200,
) -> web.Response:
    principal, service = _principal(request), _service(request)
    units = await service.school_units(principal, frame["tenant_id"])
    existing = {s.vendor_id for s in await service.list_subscriptions(principal, frame["tenant_id"])}
    return render(
        request,
        "subscription_form.html",
        status=status,
        **frame,
        current=current,
        vendors=service.vendors(),
        existing=existing,
        units=units,
        unit_names={u["school_unit_code"]: f"{u['display_name']} ({u['school_unit_code']})" for u in units}
        | {"-": "Utan skolenhet"},
        values=values,
        preview=preview,
        errors=errors or {},
        error=error,
        max_rows=MAX_ROWS,
    )


async def subscription_new(request: web.Request) -> web.StreamResponse:
    frame = await _page(request, "vendors")
    values = _subscription_values({"vendor_id": request.query.get("vendor_id", ""), "roles": list(PERSON_ROLES)})
    return await _render_subscription_form(request, frame, None, values)


async def subscription_edit(request: web.Request) -> web.StreamResponse:
    frame = await _page(request, "vendors")
    current = await _service(request).get_subscription(
        _principal(request), frame["tenant_id"], request.match_info["vendor"]
    )
    return await _render_subscription_form(request, frame, current, _values_of(current))


async def subscription_post(request: web.Request) -> web.StreamResponse:
    """Preview (nothing is saved) or save a new or changed subscription."""
    frame = await _page(request, "vendors")
    principal, service = _principal(request), _service(request)
    tenant_id = frame["tenant_id"]
    form = await request.post()
    values = _subscription_values(form)
    vendor_id = request.match_info.get("vendor")
    current = await service.get_subscription(principal, tenant_id, vendor_id) if vendor_id else None
    if current is not None:
        values["vendor_id"] = current.vendor_id
    errors: dict[str, str] = {}
    if not values["vendor_id"]:
        errors["vendor_id"] = "Välj en leverantör."
    if not values["roles"]:
        errors["roles"] = FIELD_MESSAGES["roles"]
    if current is None and values["vendor_id"]:
        try:
            other = await service.get_subscription(principal, tenant_id, values["vendor_id"])
        except NotFound:
            other = None
        if other is not None and not other.subscription.get("ended_at"):
            errors["vendor_id"] = (
                f"Det finns redan en prenumeration för {other.vendor_name}. Ändra den i stället (under Leverantörer)."
            )
    body = None
    try:
        body = _subscription_body(values, current)
    except ValidationError as invalid:
        errors = field_errors(invalid.errors()) | errors
    if errors or body is None:
        return await _render_subscription_form(
            request, frame, current, values, errors=errors, error="Kontrollera de markerade fälten.", status=422
        )
    try:
        if form.get("action") == "save":
            await service.save_subscription(principal, tenant_id, values["vendor_id"], body)
        else:
            preview = await service.preview(principal, tenant_id, values["vendor_id"], body)
            return await _render_subscription_form(request, frame, current, values, preview=preview)
    except Problem as problem:
        return await _render_subscription_form(
            request,
            frame,
            current,
            values,
            errors=field_errors(problem.extra.get("errors") or []),
            error=swedish(problem),
            status=problem.status,
        )
    hours = decimal(service.promotion_hours)
    message = (
        "Prenumerationen är sparad och i testläge: skolsynk räknar fram vad leverantören skulle få, men skickar "
        f"ingenting. Granska testrapporten nedan; du kan gå live när testläget har pågått i {hours} timmar."
        if current is None or current.promotion.test_mode or current.subscription.get("ended_at")
        else "Ändringen är sparad och skickas till leverantören."
    )
    return see_other(request, url(request, "subscription", tenant=tenant_id, vendor=values["vendor_id"]), message)


async def _unit_labels(request: web.Request, tenant_id: str) -> dict[str, str]:
    """School unit id -> "name (code)" for reports that name school units by id. Authorised by
    ``school_units``; the ids come from the canonical state until ``school_units`` returns them."""
    service = _service(request)
    units = await service.school_units(_principal(request), tenant_id)
    if all("entity_id" in u for u in units):
        return {str(u["entity_id"]): f"{u['display_name']} ({u['school_unit_code']})" for u in units}
    return {
        str(stored.id): f"{stored.entity.display_name} ({stored.entity.school_unit_code})"
        for stored in await service.entities.load_tenant(tenant_id)
        if isinstance(stored.entity, SchoolUnit)
    }


async def subscription_page(request: web.Request) -> web.StreamResponse:
    """The test report and the way to going live."""
    frame = await _page(request, "vendors")
    principal, service = _principal(request), _service(request)
    tenant_id, vendor_id = frame["tenant_id"], request.match_info["vendor"]
    subscription = await service.get_subscription(principal, tenant_id, vendor_id)
    report = await service.test_report(principal, tenant_id, vendor_id)
    history = await service.vendor_history(principal, tenant_id, vendor_id)
    labels = await _unit_labels(request, tenant_id)
    per_unit = []
    for key, count in report.get("per_school_unit_and_role", {}).items():
        unit, _, role = key.partition("|")
        per_unit.append(
            {
                "unit": "Utan skolenhet" if unit == "-" else labels.get(unit, unit),
                "role": KIND_NAMES.get(role, role),
                "count": count,
            }
        )
    per_unit.sort(key=lambda r: (r["unit"], r["role"]))
    promotion = subscription.promotion
    return render(
        request,
        "subscription.html",
        **frame,
        subscription=subscription,
        state=_status(subscription),
        blockers=swedish_blockers(promotion.blockers, promotion),
        report=report,
        per_unit=per_unit,
        history=history[:20],
    )


async def _subscription_action(
    request: web.Request, action: Callable[[AdminService, Principal, str, str], Awaitable[Any]], done: str
) -> web.StreamResponse:
    tenant_id, vendor_id = request.match_info["tenant"], request.match_info["vendor"]
    back = url(request, "subscription", tenant=tenant_id, vendor=vendor_id)
    try:
        await action(_service(request), _principal(request), tenant_id, vendor_id)
    except Problem as problem:
        return refused(request, back, problem)
    return see_other(request, back, done)


async def mark_reviewed(request: web.Request) -> web.StreamResponse:
    return await _subscription_action(
        request, lambda s, p, t, v: s.mark_reviewed(p, t, v), "Testrapporten är markerad som granskad."
    )


async def back_to_test(request: web.Request) -> web.StreamResponse:
    return await _subscription_action(
        request,
        lambda s, p, t, v: s.back_to_test(p, t, v),
        "Prenumerationen är tillbaka i testläge: ingenting skickas till leverantören förrän den går live igen. "
        "Det leverantören redan har ligger kvar.",
    )


async def go_live(request: web.Request) -> web.StreamResponse:
    tenant_id, vendor_id = request.match_info["tenant"], request.match_info["vendor"]
    back = url(request, "subscription", tenant=tenant_id, vendor=vendor_id)
    form = await request.post()
    reason: str | None = None
    if "override" in form:
        reason = str(form.get("override_reason", "")).strip()
        try:
            reason = models.GoLiveIn(override_reason=reason).override_reason
        except ValidationError:
            return see_other(request, back, FIELD_MESSAGES["override_reason"], error=True)
    try:
        await _service(request).go_live(_principal(request), tenant_id, vendor_id, reason)
    except Problem as problem:
        return refused(request, back, problem)
    return see_other(
        request, back, "Prenumerationen är live. Leverantören får nu uppgifterna, och ändringar skickas löpande."
    )


async def end_confirm(request: web.Request) -> web.StreamResponse:
    frame = await _page(request, "vendors")
    subscription = await _service(request).get_subscription(
        _principal(request), frame["tenant_id"], request.match_info["vendor"]
    )
    return render(request, "subscription_end.html", **frame, subscription=subscription)


async def end_subscription(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    if form.get("confirm") != "yes":
        tenant_id, vendor_id = request.match_info["tenant"], request.match_info["vendor"]
        return see_other(
            request,
            url(request, "subscription_end", tenant=tenant_id, vendor=vendor_id),
            "Kryssa i rutan för att bekräfta att prenumerationen ska avslutas.",
            error=True,
        )
    return await _subscription_action(
        request,
        lambda s, p, t, v: s.end_subscription(p, t, v),
        "Prenumerationen är avslutad. Allt leverantören har fått raderas nu hos leverantören; "
        "raderingarna och kvittona syns under GDPR.",
    )


async def delivery_report(request: web.Request) -> web.StreamResponse:
    tenant_id, vendor_id = request.match_info["tenant"], request.match_info["vendor"]
    text = await _service(request).delivery_report_csv(_principal(request), tenant_id, vendor_id)
    return download(text, f"leveransrapport-{tenant_id}-{vendor_id}.csv", "text/csv")


# --- holds -------------------------------------------------------------------------------------------


async def holds(request: web.Request) -> web.StreamResponse:
    frame = await _page(request, "holds")
    principal, service = _principal(request), _service(request)
    found = await service.holds(principal, frame["tenant_id"])
    units = await service.school_units(principal, frame["tenant_id"])
    names = {u["school_unit_code"]: u["display_name"] for u in units}
    vendor_names = {v.vendor_id: v.display_name for v in service.vendors()}
    return render(request, "holds.html", **frame, holds=found, unit_names=names, vendor_names=vendor_names)


async def decide_hold(request: web.Request) -> web.StreamResponse:
    tenant_id = request.match_info["tenant"]
    back = url(request, "holds", tenant=tenant_id)
    form = await request.post()
    decision = str(form.get("decision", ""))
    if decision not in ("approve", "discard"):
        return see_other(request, back, "Välj att godkänna eller avvisa.", error=True)
    try:
        await _service(request).decide_hold(
            _principal(request),
            tenant_id,
            str(form.get("vendor_id", "")),
            str(form.get("school_unit_id", "")),
            decision,
        )
    except Problem as problem:
        return refused(request, back, problem)
    text = (
        "Borttagningarna är godkända och skickas till leverantören vid nästa beräkning."
        if decision == "approve"
        else "Borttagningarna är avvisade: de skickas inte. Rätta uppgifterna i källan."
    )
    return see_other(request, back, text)


# --- GDPR --------------------------------------------------------------------------------------------


async def gdpr(request: web.Request) -> web.StreamResponse:
    frame = await _page(request, "gdpr")
    principal, service = _principal(request), _service(request)
    tenant_id = frame["tenant_id"]
    query = request.query
    text = query.get("q", "").strip()
    persons = await service.persons(principal, tenant_id, text) if text else []
    chosen = query.get("person")
    selected = next((p for p in persons if p["person_id"] == chosen), None)
    if selected is None and chosen:
        try:
            selected = {"person_id": str(uuid.UUID(chosen)), "name": None, "login": None}
        except ValueError:
            selected = None
    requests = await service.erasure_requests(principal, tenant_id)
    ledger = await service.erasure_ledger(principal, tenant_id)
    counts: dict[str, dict[str, int]] = {}
    for row in ledger:
        counts.setdefault(row["vendor_id"], {}).setdefault(row["status"], 0)
        counts[row["vendor_id"]][row["status"]] += 1
    vendor_filter = query.get("vendor") or ""
    status_filter = query.get("status") or ""
    shown = [
        r
        for r in ledger
        if (not vendor_filter or r["vendor_id"] == vendor_filter)
        and (not status_filter or r["status"] == status_filter)
    ]
    vendor_names = {v.vendor_id: v.display_name for v in service.vendors()}
    return render(
        request,
        "gdpr.html",
        **frame,
        q=text,
        persons=persons,
        selected=selected,
        requests=sorted(requests, key=lambda r: (r.get("status") != "active", str(r.get("requested_at")))),
        ledger=shown[-MAX_ROWS:],
        truncated=len(shown) > MAX_ROWS,
        counts=counts,
        vendors=service.vendors(),
        vendor_names=vendor_names,
        filters={"vendor": vendor_filter, "status": status_filter},
    )


async def request_erasure(request: web.Request) -> web.StreamResponse:
    tenant_id = request.match_info["tenant"]
    back = url(request, "gdpr", tenant=tenant_id)
    form = await request.post()
    if form.get("confirm") != "yes":
        return see_other(
            request,
            url(request, "gdpr", {"person": form.get("person_id", "")}, tenant=tenant_id),
            "Kryssa i rutan för att bekräfta att det är rätt person.",
            error=True,
        )
    everyone = form.get("scope", "all") == "all"
    data = {
        "person_id": str(form.get("person_id", "")),
        "kind": str(form.get("kind", "erasure")),
        "vendor_ids": None if everyone else [str(v) for v in form.getall("vendor_ids", [])],
        "reference": str(form.get("reference", "")).strip() or None,
    }
    if not everyone and not data["vendor_ids"]:
        return see_other(request, back, FIELD_MESSAGES["vendor_ids"], error=True)
    try:
        body = models.ErasureIn.model_validate(data)
        await _service(request).request_erasure(_principal(request), tenant_id, body)
    except ValidationError as invalid:
        return see_other(request, back, " ".join(field_errors(invalid.errors()).values()), error=True)
    except Problem as problem:
        return refused(request, back, problem)
    kind = "Invändningen" if body.kind == "objection" else "Begäran om radering"
    return see_other(
        request,
        back,
        f"{kind} är skickad. Personen tas bort hos leverantörerna och skickas inte igen så länge begäran gäller. "
        "Begäran syns i listan nedan när GDPR-tjänsten har tagit emot den (normalt inom några sekunder).",
    )


async def withdraw_erasure(request: web.Request) -> web.StreamResponse:
    tenant_id = request.match_info["tenant"]
    back = url(request, "gdpr", tenant=tenant_id)
    try:
        request_id = uuid.UUID(request.match_info["request_id"])
        await _service(request).withdraw_erasure(_principal(request), tenant_id, request_id)
    except ValueError:
        return see_other(request, back, "Begäran finns inte.", error=True)
    except Problem as problem:
        return refused(request, back, problem)
    return see_other(
        request,
        back,
        "Begäran är återkallad. Om personen fortfarande finns i källan och hör till urvalet skickas hen igen.",
    )


async def evidence(request: web.Request) -> web.StreamResponse:
    tenant_id = request.match_info["tenant"]
    fmt = request.match_info["format"]
    vendor_id = request.query.get("vendor") or None
    text = await _service(request).evidence(_principal(request), tenant_id, vendor_id=vendor_id, fmt=fmt)
    name = f"raderingar-{tenant_id}{'-' + vendor_id if vendor_id else ''}.{fmt}"
    return download(text, name, "application/json" if fmt == "json" else "text/csv")


# --- audit log and access ----------------------------------------------------------------------------


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
    frame = await _page(request, "log")
    entries = await _service(request).audit(_principal(request), frame["tenant_id"])
    return render(request, "log.html", **frame, entries=[_audit_row(e) for e in entries], platform=False)


async def access(request: web.Request) -> web.StreamResponse:
    frame = await _page(request, "access")
    tokens = await _service(request).list_tokens(_principal(request), frame["tenant_id"])
    return render(request, "access.html", **frame, tokens=tokens, created=None, form={}, errors={}, error=None)


async def create_token(request: web.Request) -> web.StreamResponse:
    """A new token is shown once, on the page that answers the POST (never in a redirect or cookie)."""
    frame = await _page(request, "access")
    principal, service = _principal(request), _service(request)
    form = await request.post()
    values = {"subject": str(form.get("subject", "")).strip(), "role": str(form.get("role", "organiser_admin"))}
    created = None
    errors: dict[str, str] = {}
    error = None
    status = 200
    try:
        created = await service.create_token(principal, frame["tenant_id"], models.TokenIn.model_validate(values))
    except ValidationError as invalid:
        errors, error, status = field_errors(invalid.errors()), "Kontrollera de markerade fälten.", 422
    except Problem as problem:
        error, status = swedish(problem), problem.status
    tokens = await service.list_tokens(principal, frame["tenant_id"])
    return render(
        request,
        "access.html",
        status=status,
        **frame,
        tokens=tokens,
        created=created,
        form={} if created else values,
        errors=errors,
        error=error,
    )


async def revoke_token(request: web.Request) -> web.StreamResponse:
    tenant_id = request.match_info["tenant"]
    back = url(request, "access", tenant=tenant_id)
    try:
        await _service(request).revoke_token(_principal(request), tenant_id, request.match_info["token"])
    except Problem as problem:
        return refused(request, back, problem)
    return see_other(request, back, "Nyckeln är återkallad och fungerar inte längre.")


# --- the application ---------------------------------------------------------------------------------


def build_ui(service: AdminService, tokens: TokenStore) -> web.Application:
    """The UI as a sub-application; mount it with ``app.add_subapp("/ui", build_ui(...))``."""
    app = web.Application(middlewares=[security_headers, problems_as_pages, csrf_protection, session_required])
    app[UI_KEY] = Ui(service, tokens, environment())

    def route(path: str, name: str, get: Handler | None = None, post: Handler | None = None) -> None:
        resource = app.router.add_resource(path, name=name)
        if get is not None:
            resource.add_route("GET", get)
        if post is not None:
            resource.add_route("POST", post)

    tenant = "/t/{tenant}"
    route("/", "home", get=home)
    route("/login", "login", get=login_page, post=login)
    route("/logout", "logout", post=logout)
    route("/tenants", "tenants", post=create_tenant)
    route("/log", "platform_log", get=platform_log)
    route(tenant + "/", "overview", get=overview)
    route(tenant + "/sources", "sources", get=sources)
    route(tenant + "/sources/new", "source_new", get=source_new, post=source_save)
    route(tenant + "/sources/{source}/edit", "source_edit", get=source_edit, post=source_save)
    route(tenant + "/sources/{source}/sync", "source_sync", post=source_sync)
    route(tenant + "/sources/{source}/delete", "source_delete", post=source_delete)
    route(tenant + "/quality", "quality", get=quality)
    route(tenant + "/findings.csv", "findings_csv", get=findings_csv)
    route(tenant + "/vendors", "vendors", get=vendors)
    route(tenant + "/vendors/new", "subscription_new", get=subscription_new, post=subscription_post)
    route(tenant + "/vendors/{vendor}", "subscription", get=subscription_page)
    route(tenant + "/vendors/{vendor}/edit", "subscription_edit", get=subscription_edit, post=subscription_post)
    route(tenant + "/vendors/{vendor}/review", "subscription_review", post=mark_reviewed)
    route(tenant + "/vendors/{vendor}/go-live", "subscription_go_live", post=go_live)
    route(tenant + "/vendors/{vendor}/test-mode", "subscription_test_mode", post=back_to_test)
    route(tenant + "/vendors/{vendor}/end", "subscription_end", get=end_confirm, post=end_subscription)
    route(tenant + "/vendors/{vendor}/report.csv", "delivery_report", get=delivery_report)
    route(tenant + "/holds", "holds", get=holds, post=decide_hold)
    route(tenant + "/gdpr", "gdpr", get=gdpr)
    route(tenant + "/gdpr/requests", "erasure_requests", post=request_erasure)
    route(tenant + "/gdpr/requests/{request_id}/withdraw", "erasure_withdraw", post=withdraw_erasure)
    route(tenant + "/gdpr/evidence.{format:csv|json}", "evidence", get=evidence)
    route(tenant + "/log", "log", get=log)
    route(tenant + "/access", "access", get=access, post=create_token)
    route(tenant + "/access/{token}/revoke", "token_revoke", post=revoke_token)
    return app
