"""The UI's Swedish wording that is not in a template: labels of roles, kinds, statuses and reasons, the
source forms' fields, the data-quality findings, the audit log's actions, the navigation, the fix hints
of source-run error codes, and the service's (English) errors, gate blockers and validation errors as
Swedish sentences."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from skolsynk.domain.quality import FindingCode, Severity
from skolsynk.domain.source_errors import GOOGLE_HINTS, MICROSOFT_HINTS, SS12000_HINTS, SourceErrorHint, hint_for
from skolsynk_services.admin import models
from skolsynk_services.admin.auth import Role
from skolsynk_services.admin.problems import Conflict, Forbidden, GateClosed, Invalid, NotFound, Problem, Unavailable
from skolsynk_services.admin.ui.catalogue import section
from skolsynk_services.admin.ui.formatting import decimal, number, when

ROLE_NAMES = {
    Role.OPERATOR.value: "driftoperatör",
    Role.ORGANISER_ADMIN.value: "administratör för huvudmannen",
    Role.VIEWER.value: "läsbehörighet för huvudmannen",
}
PERSON_ROLES = {"student": "Elever", "teacher": "Lärare", "other_staff": "Övrig personal"}
KIND_NAMES = {
    "organisation": "Organisation",
    "school_unit_group": "Skolenhetsgrupper",
    "school_unit": "Skolenheter",
    "person": "Personer",
    "duty": "Tjänstgöringar",
    "group": "Grupper",
    "syllabus": "Ämnen och kurser",
    "activity": "Aktiviteter",
    "placement": "Placeringar",
    **PERSON_ROLES,
}
SOURCE_KINDS = {
    models.SourceKind.GOOGLE.value: (
        "Google Workspace",
        "Elever, personal och skolenheter läses från er Google Workspace-katalog med ett tjänstekonto.",
    ),
    models.SourceKind.MICROSOFT.value: (
        "Microsoft 365 (School Data Sync)",
        "Uppgifterna läses från Microsoft 365 och School Data Sync via en appregistrering i Microsoft Entra ID. "
        "Skolorna måste finnas som administrativa enheter i Microsoft Entra (att skapa dem är ett val i School "
        "Data Sync): utan dem hittas inga skolor och ingen person kan placeras.",
    ),
    models.SourceKind.EGIL.value: (
        "EGIL-klient",
        "Ert elevadministrativa system skickar uppgifterna till skolsynk med en EGIL-klient. När källan är sparad "
        "skapar du en API-nyckel eller registrerar klientens certifikat; sidan visar raderna för EGIL-klientens "
        "inställningar. Varje EGIL-klient är en egen källa.",
    ),
    models.SourceKind.SS12000.value: (
        "SS 12000-API",
        "Uppgifterna hämtas från ett API enligt SS 12000:2020 (till exempel från ert elevadministrativa system).",
    ),
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


#: The settings each kind's form asks for (the API takes every setting of the kind's model; these are the
#: ones an IT admin sets when connecting a source, the rest keep their defaults).
SOURCE_FORMS: dict[str, tuple[FormField, ...]] = {
    models.SourceKind.GOOGLE.value: (
        FormField(
            "delegated_admin",
            "Administratörskonto",
            "E-postadressen till det administratörskonto i Google Workspace som tjänstekontot får agera som "
            "(domänövergripande delegering).",
            "email",
            required=True,
        ),
        FormField("customer", "Kund-id", "Lämna tomt för my_customer (den domän tjänstekontot tillhör)."),
        FormField("domain", "Domän", "Bara användare i den här domänen, till exempel skola.kommun.se (valfritt)."),
        FormField(
            "watch.enabled",
            "Direktaviseringar från Google",
            "Google meddelar skolsynk inom sekunder när en användare läggs till, ändras eller tas bort, så att "
            "ändringen når leverantörerna direkt. Gäller där driften har öppnat skolsynks webbkrok mot Google; "
            "annars, och om du stänger av det, läses katalogen enligt schemat.",
            "select",
            options=(("true", "På"), ("false", "Av")),
        ),
        FormField(
            "mapping",
            "Mappning (YAML)",
            "Hur organisationsenheter, användare och grupper blir skolenheter, roller och grupper: se "
            "deploy/google-sources.example.yaml (delen under mapping:).",
            "textarea",
            required=True,
        ),
    ),
    models.SourceKind.MICROSOFT.value: (
        FormField(
            "azure_tenant_id",
            "Katalog-ID (Directory ID)",
            "Finns i Microsoft Entra ID under Översikt.",
            required=True,
        ),
        FormField(
            "client_id",
            "Klient-ID (Client ID)",
            "ID:t för er egen appregistrering. Lämna tomt om ni godkänner skolsynks app (ovan) i stället.",
        ),
    ),
    models.SourceKind.SS12000.value: (
        FormField(
            "base_url",
            "API-adress",
            "Adressen till SS 12000-API:t, till exempel https://api.example.se/ss12000v2-api/v2.0.",
            "url",
            required=True,
        ),
        FormField(
            "auth.kind",
            "Inloggning",
            "Hur skolsynk loggar in mot API:t.",
            "select",
            required=True,
            options=(("oauth2", "OAuth2 (klient-id och hemlighet)"), ("api_key", "API-nyckel"), ("none", "Ingen")),
        ),
        FormField("auth.token_url", "Token-adress", "OAuth2: adressen där skolsynk hämtar sin åtkomsttoken.", "url"),
        FormField("auth.client_id", "Klient-ID", "OAuth2: API-klientens id."),
        FormField("auth.scope", "Scope", "OAuth2: det scope som API:t kräver (valfritt)."),
        FormField(
            "webhook_url",
            "Publik webhook-adress (valfri)",
            "Om API:t kan meddela ändringar: adressen där det når skolsynks webhook för den här källan "
            "(…/ss12000/notify/organisation/källa, bakom er proxy som lägger till hemligheten). skolsynk "
            "registrerar, förnyar och tar bort prenumerationen själv. Kräver hemligheten för webhook.",
            "url",
        ),
    ),
    models.SourceKind.EGIL.value: (),
}
SECRET_FIELDS = {
    "service_account_key": FormField(
        "service_account_key",
        "Tjänstekontots nyckel (JSON)",
        "Klistra in hela innehållet i nyckelfilen (JSON) som du laddade ner från Google Cloud.",
    ),
    "client_secret": FormField(
        "client_secret",
        "Klienthemlighet",
        "Själva värdet för klienthemligheten (inte dess ID). Behövs inte med skolsynks app.",
    ),
    "api_key": FormField("api_key", "API-nyckel", "Om API:t använder API-nyckel i stället för OAuth2."),
    "webhook_secret": FormField(
        "webhook_secret",
        "Hemlighet för webhook (valfri)",
        "Om API:t meddelar ändringar: den delade hemlighet som notiserna skickas med.",
    ),
}


def flat_settings(settings: Mapping[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    """A source's settings as ``(path, value)`` lines for a table: nested settings by their dotted path, a
    list of plain values joined, a longer structure (a mapping's rules) by its size."""
    lines: list[tuple[str, str]] = []
    for key, value in settings.items():
        path = f"{prefix}{key}"
        if path == "api_key_sha256":
            lines.append(("API-nyckel", "finns"))
        elif path == "client_certificates" and isinstance(value, list):
            lines.append(("Klientcertifikat", str(len(value))))  # their pins are on the EGIL client's page
        elif isinstance(value, Mapping) and path != "mapping":
            lines += flat_settings(value, path + ".")
        elif isinstance(value, list) and all(isinstance(v, str | int | float) for v in value):
            lines.append((path, ", ".join(str(v) for v in value)))
        elif isinstance(value, Mapping | list):
            lines.append((path, f"({len(value)} delar)"))
        else:
            lines.append((path, str(value)))
    return lines


#: The Microsoft Graph application permissions skolsynk's app asks for, as the organiser's admin reads them.
MICROSOFT_PERMISSION_TEXTS = {
    "EduRoster.Read.All": "läsa elever, lärare, klasser och skolor i School Data Sync",
    "Member.Read.Hidden": "se vilka som är medlemmar i klasserna (klassgrupper döljer sina medlemmar)",
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
    FindingCode.ORGANISATION_TYPE_UNKNOWN: (
        "Organisation utan känd organisationstyp",
        "Organisationen behålls som en nivå av okänd typ, aldrig som skolenhet.",
    ),
    FindingCode.ENROLMENT_UNKNOWN_SCHOOL_UNIT: ("Inskrivning på okänd skolenhet", "Inskrivningen tas bort."),
    FindingCode.ENROLMENT_UNRESOLVED_ORGANISATION: (
        "Inskrivning på en organisation ovanför skolenheterna",
        "Den har ingen eller flera skolenheter under sig; inskrivningen tas bort.",
    ),
    FindingCode.DUTY_UNKNOWN_SCHOOL_UNIT: ("Tjänstgöring på okänd skolenhet", "Tjänstgöringen skickas inte."),
    FindingCode.DUTY_UNRESOLVED_ORGANISATION: (
        "Tjänstgöring på en organisation utan skolenheter",
        "Ingen skolenhet finns under den; tjänstgöringen skickas inte.",
    ),
    FindingCode.DUTY_UNKNOWN_PERSON: ("Tjänstgöring för okänd person", "Tjänstgöringen skickas inte."),
    FindingCode.DUTY_UNKNOWN_GROUP: (
        "Uppdrag för en okänd grupp (till exempel mentor)",
        "Uppdraget tas bort; tjänstgöringen skickas ändå.",
    ),
    FindingCode.GROUP_UNKNOWN_SCHOOL_UNIT: ("Grupp på okänd skolenhet", "Gruppen skickas inte."),
    FindingCode.GROUP_UNRESOLVED_ORGANISATION: (
        "Grupp på en organisation ovanför skolenheterna",
        "Den har ingen eller flera skolenheter under sig; gruppen skickas inte.",
    ),
    FindingCode.GROUP_UNKNOWN_MEMBER: ("Okänd gruppmedlem", "Medlemskapet tas bort."),
    FindingCode.ACTIVITY_UNKNOWN_SCHOOL_UNIT: ("Aktivitet på okänd skolenhet", "Aktiviteten skickas inte."),
    FindingCode.ACTIVITY_UNRESOLVED_ORGANISATION: (
        "Aktivitet på en organisation ovanför skolenheterna",
        "Den har ingen eller flera skolenheter under sig; aktiviteten skickas inte.",
    ),
    FindingCode.ACTIVITY_UNKNOWN_REFERENCE: (
        "Aktivitet med okänd grupp eller tjänstgöring",
        "Hänvisningen tas bort.",
    ),
    FindingCode.PLACEMENT_UNKNOWN_CHILD: ("Placering för okänt barn", "Placeringen skickas inte."),
    FindingCode.PLACEMENT_UNKNOWN_SCHOOL_UNIT: ("Placering på okänd skolenhet", "Placeringen skickas inte."),
    FindingCode.PLACEMENT_UNRESOLVED_ORGANISATION: (
        "Placering på en organisation ovanför skolenheterna",
        "Den har ingen eller flera skolenheter under sig; placeringen skickas inte.",
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
    FindingCode.PERSON_STATUS_UNKNOWN: (
        "Okänd personstatus",
        "Personens status (personStatus) är inte Aktiv, Utvandrad eller Avliden. Personen behandlas som inte "
        "aktiv och skickas inte till någon leverantör. Rätta statusen i källan.",
    ),
    FindingCode.SECURITY_MARKING_MISSING: (
        "Skyddsmarkering saknas",
        "Källan anger inte skyddsmarkering (securityMarking) för de här personerna. Som standard behandlas de som "
        "personer med skyddad identitet och skickas enligt prenumerationens regel för skyddade personer (normalt "
        "inte alls). Rätta det i källan: för en EGIL-klient, lägg till securityMarking i mallen för användare; för "
        "ett SS 12000-API, ge skolsynks klient behörighet att läsa securityMarking; för Google Workspace, ange "
        "fältet under mapping.fields.security_marking. Vet ni att källan saknar personer med skyddad identitet kan "
        "ni i stället välja att behandla dem som utan skyddsmarkering (Översikt, Skyddade personuppgifter).",
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
#: The organiser's choice for persons whose source does not say whether they have a protected identity.
MISSING_MARKING = {
    "protected": "Behandla dem som personer med skyddad identitet (rekommenderas)",
    "not_protected": "Behandla dem som personer utan skyddsmarkering",
}
SCHOOL_YEARS = [(0, "Förskoleklass"), *((y, f"Årskurs {y}") for y in range(1, 11))]
AUDIT_ACTIONS: dict[str, str] = section("audit_actions")
#: Tenant navigation: (section, label, route name), in the catalogue's order.
NAVIGATION = [(key, entry["label"], entry["route"]) for key, entry in section("navigation").items()]

#: Service messages (English, for the API) -> what the UI says. The first pattern that matches wins.
PROBLEM_TEXTS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"^this token is not allowed"), "Du har inte behörighet till den huvudmannen."),
    (re.compile(r"^only operators"), "Det får bara driftoperatörer göra."),
    (re.compile(r"^this token may only read"), "Du har bara läsbehörighet och kan inte ändra något här."),
    (
        re.compile(r"^this token may not see personal data"),
        "Du har läsbehörighet och ser inte namn, e-postadresser eller inloggningar.",
    ),
    (re.compile(r"^no such token"), "Nyckeln finns inte."),
    (re.compile(r"^no organiser"), "Huvudmannen finns inte."),
    (re.compile(r"^no source"), "Källan finns inte."),
    (re.compile(r"^no subscription"), "Det finns ingen prenumeration för den leverantören."),
    (re.compile(r"^no vendor"), "Leverantören finns inte i katalogen."),
    (re.compile(r"^a client certificate needs"), "Klientcertifikat går bara till en EGIL SCIM-leverantör över https."),
    (re.compile(r"^the client certificate is not"), "Klientcertifikatet är inte ett PEM-certifikat."),
    (re.compile(r"^the private key is encrypted"), "Den privata nyckeln är krypterad: ange den utan lösenord."),
    (re.compile(r"^the private key is not"), "Den privata nyckeln är inte en PEM-nyckel."),
    (re.compile(r"^the private key does not belong"), "Den privata nyckeln hör inte till certifikatet."),
    (
        re.compile(r"^no pending hold"),
        "Det finns ingen spärr som väntar på beslut för den leverantören och skolenheten.",
    ),
    (re.compile(r"^no active erasure request"), "Det finns ingen gällande begäran med det id:t."),
    (re.compile(r"^no such token"), "Åtkomstnyckeln finns inte."),
    (re.compile(r"^an organiser .* exists already"), "Det finns redan en huvudman med det id:t."),
    (re.compile(r"^a source .* exists already"), "Det finns redan en källa med det id:t."),
    (re.compile(r"^the source .* is of another kind"), "Det finns redan en källa av en annan typ med det id:t."),
    (
        re.compile(r"^consent was not given at Microsoft"),
        "Godkännandet gjordes inte i Microsoft. Det måste göras av en global administratör (eller en "
        "administratör för privilegierade roller) i er Microsoft Entra-katalog: be hen öppna länken och godkänna.",
    ),
    (
        re.compile(r"^the consent link has expired"),
        "Länken till godkännandet har gått ut eller redan använts. Starta godkännandet igen.",
    ),
    (
        re.compile(r"^this installation has no multi-tenant Microsoft app"),
        "Den här installationen har ingen gemensam Microsoft-app: koppla källan med en egen appregistrering.",
    ),
    (
        re.compile(r"^only an EGIL source has"),
        "Bara en EGIL-källa har API-nyckel och klientcertifikat.",
    ),
    (
        re.compile(r"^the source is disabled"),
        "Källan är avstängd. Slå på den (Ändra, kryssa i Aktiv) innan du begär en synkronisering.",
    ),
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
    if problem.detail.startswith("the connector cannot read the source: "):
        reason = problem.detail.removeprefix("the connector cannot read the source: ")
        return f"Kopplingen kan inte läsa källan: {reason}. Rätta källans inställningar och spara den igen."
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
    "expires_in_days": "Skriv hur många dagar nyckeln ska gälla, 1 till 365.",
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
            message = str(error.get("message") or error.get("msg") or "required")
            found.setdefault(
                "setting_" + name.split(".", 1)[1],
                "Måste fyllas i." if message in ("required", "Field required") else f"Värdet godtas inte: {message}.",
            )
        elif name.startswith("secrets."):
            found.setdefault("secret_" + name.split(".", 1)[1], "Måste fyllas i (eller ange var hemligheten finns).")
        else:
            found.setdefault(name or "_form", FIELD_MESSAGES.get(name, "Värdet är inte giltigt."))
    return found


def subscription_state(subscription: models.Subscription) -> str:
    if subscription.subscription.get("ended_at"):
        return "Avslutad"
    return "Testläge" if subscription.promotion.test_mode else "Live"


# --- why a source run failed -------------------------------------------------------------------------


@dataclass(frozen=True)
class SourceErrorText:
    """The fix hint of one error code of a source run, as the UI shows it."""

    title: str
    fix: str
    #: True when retrying later cannot help until someone changes configuration or permissions.
    needs_admin: bool


_SS12000, _GOOGLE, _MICROSOFT = SS12000_HINTS, GOOGLE_HINTS, MICROSOFT_HINTS
_RETRIED = "Försöks igen vid nästa körning."
_CONSOLE = "(Security > Access and data control > API controls > Domain-wide delegation)"
#: The connectors' hints (``skolsynk.domain.source_errors``, English) in Swedish. A hint missing here is
#: shown in English.
SOURCE_ERROR_TEXTS: dict[SourceErrorHint, tuple[str, str]] = {
    # SS 12000 API
    _SS12000["token_not_configured"]: (
        "Inloggningsuppgifter till SS 12000-API:t saknas",
        "Ange källans klient-id och klienthemlighet.",
    ),
    _SS12000["token_http_401"]: (
        "SS 12000-API:t godtog inte inloggningsuppgifterna",
        "Kontrollera klient-id och klienthemlighet med leverantören av det elevadministrativa systemet.",
    ),
    _SS12000["http_403"]: ("SS 12000-API:t nekade åtkomst", "Be leverantören ge klienten läsbehörighet."),
    _SS12000["timeout"]: ("SS 12000-API:t svarade inte i tid", _RETRIED),
    _SS12000["connection"]: ("SS 12000-API:t går inte att nå", _RETRIED),
    _SS12000["page_token_repeated"]: (
        "SS 12000-API:t skickade samma sidmarkör (pageToken) två gånger",
        "Bläddringen skulle aldrig ta slut, så körningen stoppades utan att något togs bort. Meddela leverantören "
        "av det elevadministrativa systemet: nästa sida ska komma med en ny pageToken.",
    ),
    _SS12000["page_cap_reached"]: (
        "En lista i SS 12000-API:t hade fler sidor än tillåtet",
        "Körningen stoppades utan att något togs bort. Är huvudmannen verkligen så stor höjer driftoperatören "
        "gränsen; annars bläddrar API:t fel: meddela leverantören.",
    ),
    _SS12000["run_deadline_exceeded"]: (
        "Körningen tog längre tid än tillåtet",
        "Körningen stoppades utan att något togs bort; nästa körning börjar om. Fråga leverantören varför API:t "
        "är så långsamt, eller be driftoperatören höja tidsgränsen.",
    ),
    # Google Workspace
    _GOOGLE["invalid_grant"]: (
        "Google godtog inte tjänstekontots inloggning",
        "Kontrollera administratörskontot (delegated_admin måste vara adressen till en befintlig administratör) "
        f"och omfattningarna (scopes) för domänövergripande delegering i Googles administratörskonsol {_CONSOLE}; "
        "kontrollera också att nyckeln inte har tagits bort och att serverns klocka går rätt.",
    ),
    _GOOGLE["unauthorized_client"]: (
        "Domänövergripande delegering saknas eller saknar en omfattning (scope)",
        f"Lägg i administratörskonsolen {_CONSOLE} till tjänstekontots klient-id med alla omfattningar som står i "
        "docs/google-connector.md. Det kan ta upp till 24 timmar innan en ändring gäller.",
    ),
    _GOOGLE["invalid_client"]: (
        "Google känner inte till tjänstekontot",
        "Skapa en ny JSON-nyckel för tjänstekontot och lagra den där källans key_env eller key_file pekar.",
    ),
    _GOOGLE["invalid_scope"]: (
        "Google godtog inte de begärda omfattningarna (scopes)",
        "Rapportera det till driften av skolsynk.",
    ),
    _GOOGLE["invalid_key"]: (
        "Tjänstekontots nyckel går inte att läsa",
        "Lagra tjänstekontots JSON-nyckelfil, oförändrad, där key_env eller key_file pekar.",
    ),
    _GOOGLE["forbidden"]: (
        "Administratörskontot får inte läsa katalogen",
        "Tjänstekontot agerar som det angivna administratörskontot (delegated_admin): gör det kontot till "
        "administratör i Google Workspace med rätt att läsa användare, grupper och organisationsenheter "
        "(superadministratör, eller en roll med Admin API-behörigheterna Users: Read, Groups: Read, "
        "Organizational Units: Read).",
    ),
    _GOOGLE["insufficient_permissions"]: (
        "En omfattning (scope) saknas i åtkomsttoken",
        "Lägg till den omfattning som saknas (se docs/google-connector.md) i tjänstekontots domänövergripande "
        "delegering.",
    ),
    _GOOGLE["auth_error"]: (
        "Google avvisade åtkomsttoken två gånger",
        f"{_RETRIED} Om det upprepas: kontrollera att tjänstekontot och dess nyckel fortfarande är aktiva.",
    ),
    _GOOGLE["quota_exceeded"]: (
        "Google begränsade läsningarna gång på gång",
        f"{_RETRIED} Om det fortsätter: begär en högre kvot för Admin SDK i tjänstekontots Google Cloud-projekt, "
        "eller sänk SKOLSYNK_GOOGLE_MEMBERS_CONCURRENCY.",
    ),
    _GOOGLE["backend_error"]: ("Googles Admin SDK fick ett serverfel", _RETRIED),
    _GOOGLE["not_found"]: (
        "Google hittade inte kunden eller en grupp",
        "Kontrollera källans kund (my_customer eller kund-id:t) och domän.",
    ),
    _GOOGLE["invalid"]: (
        "Google avvisade en begäran som ogiltig",
        "Kontrollera att varje organisationsenhet (OU) i mappningens omfattning finns, och inställningarna för "
        "kund och domän.",
    ),
    _GOOGLE["bad_request"]: (
        "Google avvisade en begäran",
        "Kontrollera källans kund och domän; en sidtoken som har gått ut försöks igen vid nästa körning.",
    ),
    _GOOGLE["unmappable"]: (
        "Google returnerade användare utan id",
        "Försöks igen vid nästa körning; ingenting tas bort under tiden.",
    ),
    _GOOGLE["timeout"]: ("Googles Admin SDK svarade inte i tid", _RETRIED),
    _GOOGLE["connection"]: ("Googles Admin SDK går inte att nå", _RETRIED),
    # Microsoft 365 / School Data Sync (Graph)
    _MICROSOFT["invalid_client"]: (
        "Entra ID godtog inte appens inloggningsuppgifter",
        "Kontrollera appregistreringens klienthemlighet (den kan ha gått ut) och variabeln client_secret_env.",
    ),
    _MICROSOFT["unauthorized_client"]: (
        "Appen är okänd i huvudmannens Microsoft 365-klientorganisation",
        "Kontrollera klient-id:t, och att huvudmannens administratör har godkänt appen i sin klientorganisation.",
    ),
    _MICROSOFT["invalid_scope"]: (
        "Entra ID godtog inte den begärda omfattningen (scope)",
        "Använd omfattningen https://graph.microsoft.com/.default.",
    ),
    _MICROSOFT["tenant_not_found"]: (
        "Microsoft 365-klientorganisationen finns inte",
        "Kontrollera azure_tenant_id: katalog-id:t (Directory ID) eller en verifierad domän hos huvudmannen.",
    ),
    _MICROSOFT["invalid_request"]: (
        "Entra ID avvisade begäran om en token",
        "Kontrollera azure_tenant_id, klient-id:t och tokenadressen.",
    ),
    _MICROSOFT["Authorization_RequestDenied"]: (
        "Microsoft Graph nekade åtkomst",
        "Ge appen programbehörigheterna EduRoster.Read.All och Member.Read.Hidden (klassernas medlemmar) "
        "med administratörsgodkännande i huvudmannens klientorganisation.",
    ),
    _MICROSOFT["AccessDenied"]: (
        "Microsoft Graph nekade åtkomst",
        "Ge appen programbehörigheten EduRoster.Read.All med administratörsgodkännande.",
    ),
    _MICROSOFT["http_403"]: (
        "Microsoft Graph nekade åtkomst",
        "Ge appen programbehörigheterna EduRoster.Read.All och Member.Read.Hidden med administratörsgodkännande.",
    ),
    _MICROSOFT["InvalidAuthenticationToken"]: (
        "Microsoft Graph avvisade en ny token",
        "Kontrollera att tokenadressen och Graph-adressen hör till samma moln, och appens klientorganisation.",
    ),
    _MICROSOFT["http_401"]: (
        "Microsoft Graph avvisade en ny token",
        "Kontrollera katalog-id:t (azure_tenant_id) och appregistreringen.",
    ),
    _MICROSOFT["http_429"]: (
        "Microsoft Graph begränsade anropen gång på gång",
        f"{_RETRIED} Sänk antalet samtidiga anrop för huvudmannen.",
    ),
    _MICROSOFT["http_503"]: ("Microsoft Graph var inte tillgängligt", _RETRIED),
    _MICROSOFT["http_504"]: ("Microsoft Graph svarade inte i tid", _RETRIED),
    _MICROSOFT["http_500"]: ("Microsoft Graph fick ett fel", _RETRIED),
    _MICROSOFT["timeout"]: ("Microsoft Graph svarade inte i tid", _RETRIED),
    _MICROSOFT["connection"]: ("Microsoft Graph går inte att nå", _RETRIED),
    _MICROSOFT["unmappable"]: (
        "Graph returnerade ett objekt utan id",
        "Ingenting togs bort; nästa körning läser det igen. Rapportera det om det fortsätter.",
    ),
    _MICROSOFT["syncStateNotFound"]: (
        "Ändringstoken (delta) har gått ut",
        "En fullständig omläsning görs automatiskt.",
    ),
    _MICROSOFT["resyncRequired"]: ("Graph begärde en omläsning", "En fullständig omläsning görs automatiskt."),
    _MICROSOFT["foreign_link"]: (
        "Graph returnerade en länk till en annan värd",
        "Kontrollera graph_base_url: det måste vara den värd som Graphs nästa-länkar pekar på.",
    ),
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
        units = result.counts.get("school_units", 0)
        persons = result.counts.get("persons", 0)
        found = (
            f"{number(units)} {'skolenhet' if units == 1 else 'skolenheter'} och "
            f"{number(persons)} {'person' if persons == 1 else 'personer'}"
        )
        scope = "" if result.complete else " på första sidan"
        text = f"Anslutningen fungerar: källan svarade med {found}{scope}."
        if "students" in result.counts:  # a mapping's preview (Google)
            c = result.counts
            text += (
                f" Enligt mappningen: {number(c['students'])} elever, {number(c['teachers'])} lärare, "
                f"{number(c.get('staff', 0))} övrig personal; {number(c.get('without_role', 0))} utan roll och "
                f"{number(c.get('without_school_unit', 0))} utan skolenhet (de läses inte in)."
            )
        return text
    code = result.error_code or ""
    if code == "no_answer":
        return "Kopplingen svarade inte i tid. Försök igen om en stund; fortsätter det, kontakta driften."
    if code == "timeout":
        return "Källan svarade inte i tid. Kontrollera adressen och att källan är nåbar."
    if code in ("configuration", "settings_invalid"):
        return f"Inställningarna går inte att använda: {result.detail}."
    hint = source_error_hint(source_kind, code)
    if hint is not None:
        return f"Anslutningen fungerar inte: {hint.title}. {hint.fix}"
    return f"Anslutningen fungerar inte (felkod {code})."
