"""The admin API's request and response bodies (exported in the OpenAPI document)."""

from __future__ import annotations

import json
import re
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from skolsynk import explain
from skolsynk.domain.quality import Finding, FindingCode, Severity
from skolsynk.domain.selection_warnings import SelectionWarning, Shortfall, WarningCause
from skolsynk.domain.ss12000 import GroupType, SchoolType
from skolsynk.domain.subscription import MassDeletionGuard, MissingMarkingPolicy, ProtectedIdentityPolicy, Role
from skolsynk_services.admin.auth import MAX_TOKEN_DAYS, token_active

ID = r"^[a-z0-9][a-z0-9-]{0,62}$"


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Me(BaseModel):
    subject: str
    role: str
    tenant_id: str | None


class TenantIn(Body):
    tenant_id: str = Field(pattern=ID, description="Short id, e.g. 'kommun-a'.")
    display_name: str = Field(min_length=1, max_length=200)
    organisation_number: str | None = Field(default=None, pattern=r"^\d{6}-?\d{4}$")


class Tenant(BaseModel):
    tenant_id: str
    display_name: str
    organisation_number: str | None
    created_at: datetime


class ContactsIn(Body):
    notify_emails: list[str] = Field(
        default_factory=list,
        max_length=10,
        description="Who is e-mailed when the organiser's deliveries to a vendor fail for longer than the "
        "threshold, and when they work again (empty: nobody).",
    )

    @field_validator("notify_emails")
    @classmethod
    def _addresses(cls, value: list[str]) -> list[str]:
        cleaned = [address.strip() for address in value if address.strip()]
        for address in cleaned:
            if not re.fullmatch(r"[^@\s]{1,64}@[^@\s]+\.[^@\s]{2,}", address) or len(address) > 254:
                raise ValueError("each address must be an e-mail address")
        return list(dict.fromkeys(cleaned))

    webhook_url: str | None = Field(
        default=None,
        max_length=500,
        description="Also POST each notification, signed, to this HTTPS address (None: no webhook). A new "
        "address gets a new signing secret, shown once in the answer.",
    )

    @field_validator("webhook_url")
    @classmethod
    def _https(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        value = value.strip()
        loopback = re.match(r"^http://(127\.0\.0\.1|localhost)(:\d+)?/", value)
        if not value.startswith("https://") and not loopback:
            raise ValueError("the webhook must be an https:// address")
        return value


class Contacts(BaseModel):
    notify_emails: list[str]
    webhook_url: str | None = None
    #: Only in the answer that set a new webhook address: the secret its notifications are signed with.
    webhook_secret: str | None = None


class PrivacyIn(Body):
    missing_marking: MissingMarkingPolicy = Field(
        description="How a person whose source does not give their securityMarking is treated by every vendor's "
        "selection: 'protected' (default: like a protected identity, the subscription's protected-identity "
        "policy applies) or 'not_protected' (like 'Ingen'; vendors still never receive 'Ingen' for them). "
        "A change projects the organiser again."
    )


class Privacy(BaseModel):
    missing_marking: MissingMarkingPolicy


class Notification(BaseModel):
    """One episode of a problem the organiser was told about (no addresses)."""

    kind: str
    subject: str
    began_at: datetime
    opened_at: datetime
    sent_at: datetime | None = None
    recipients: int | None = None
    send_error: str | None = None
    recovered_at: datetime | None = None
    recovery_sent_at: datetime | None = None
    details: dict[str, Any] = Field(default_factory=dict)


class TokenIn(Body):
    subject: str = Field(min_length=1, max_length=120, description="Who will use it (a user id).")
    role: Literal["organiser_admin", "viewer", "operator"] = Field(
        default="organiser_admin",
        description="organiser_admin: changes its organiser; viewer: reads its organiser, changes nothing; "
        "operator: every organiser and the platform (operators only).",
    )
    expires_in_days: int | None = Field(
        default=None,
        ge=1,
        le=MAX_TOKEN_DAYS,
        description="How long the token is valid; default SKOLSYNK_ADMIN_TOKEN_DAYS.",
    )


class PersonSearchIn(Body):
    q: str = Field(
        min_length=1,
        max_length=200,
        description="Words that each must be in a name, login, e-mail address or id (any order, any case).",
    )
    page: int = Field(default=1, ge=1, description="Which page of the matches (1-based).")
    size: int = Field(default=20, ge=1, le=100, description="Persons per page.")


class PersonListQuery(Body):
    page: int = Field(default=1, ge=1)
    size: int = Field(default=20, ge=1, le=100)


class PersonSummary(BaseModel):
    """A person found by a search (personal data)."""

    person_id: UUID
    source_id: str
    name: str
    login: str | None = Field(description="The first eduPersonPrincipalName.")
    email: str | None = Field(description="The first e-mail address.")
    person_status: str | None = Field(description="SS 12000 personStatus; None: a value SS 12000 does not know.")


class PersonPage(BaseModel):
    """One page of the persons a search finds, and how many it finds in all (never cut silently)."""

    persons: list[PersonSummary]
    total: int
    page: int
    size: int


#: One person from the source to every vendor (the same document ``skolsynk explain --json`` prints).
PersonExplanation = explain.PersonExplanation


class TokenCreated(BaseModel):
    token: str = Field(description="Shown once; only its hash is kept.")
    token_id: str
    role: str
    tenant_id: str | None
    subject: str
    expires_at: datetime


class TokenInfo(BaseModel):
    token_id: str
    role: str
    tenant_id: str | None
    subject: str
    created_at: datetime
    created_by: str | None = None
    expires_at: datetime | None = Field(default=None, description="None only for tokens made before expiries.")
    last_used_at: datetime | None = Field(default=None, description="To the minute; None: never used.")
    revoked_at: datetime | None
    active: bool = Field(description="Neither revoked nor expired.")

    @classmethod
    def of(cls, record: dict[str, Any], now: datetime) -> TokenInfo:
        return cls(
            token_id=record["_id"],
            role=record["role"],
            tenant_id=record["tenant_id"],
            subject=record["subject"],
            created_at=record["created_at"],
            created_by=record.get("created_by"),
            expires_at=record.get("expires_at"),
            last_used_at=record.get("last_used_at"),
            revoked_at=record["revoked_at"],
            active=token_active(record, now),
        )


class SourceKind(StrEnum):
    GOOGLE = "google"
    MICROSOFT = "microsoft"
    EGIL = "egil"
    SS12000 = "ss12000"


class SourceIn(Body):
    source_id: str = Field(pattern=ID)
    kind: SourceKind
    display_name: str = Field(min_length=1, max_length=200)
    enabled: bool = Field(default=True, description="A disabled source is kept but not read by its connector.")
    settings: dict[str, Any] = Field(
        default_factory=dict,
        description="Non-secret settings, as the kind's source model has them (JSON Schema: the component "
        "SourceSettings.<kind>), e.g. the Graph client id, or the SS 12000 base_url and auth.",
    )
    secrets: dict[str, str] = Field(
        default_factory=dict, description="Write-only: stored encrypted, never returned. Replaces by name."
    )
    secret_refs: dict[str, str] = Field(
        default_factory=dict,
        description="Secrets held elsewhere: name -> the environment variable of the connector that holds it "
        "(e.g. filled from a Kubernetes secret).",
    )

    @field_validator("settings")
    @classmethod
    def _storable(cls, value: dict[str, Any]) -> dict[str, Any]:
        """Settings are stored as they are (and copied into the audit log): keys the store reads as
        operators or paths, control characters and oversized documents are refused here, by path, never
        repeating the key."""
        stack: list[tuple[str, Any]] = [("settings", value)]
        while stack:
            path, item = stack.pop()
            if isinstance(item, dict):
                for n, (key, inner) in enumerate(item.items()):
                    if not SETTINGS_KEY.match(key):
                        raise ValueError(
                            f"{path}: key {n + 1} is not a settings name (1 to 128 characters, not starting with $, "
                            "no dots or control characters)"
                        )
                    stack.append((f"{path}.{key}", inner))
            elif isinstance(item, list):
                stack.extend((f"{path}[{n}]", inner) for n, inner in enumerate(item))
        if len(json.dumps(value, ensure_ascii=False)) > MAX_SETTINGS_CHARACTERS:
            raise ValueError(f"settings are larger than {MAX_SETTINGS_CHARACTERS} characters")
        return value


#: A settings key the store takes as a plain field name (no operator, no path, no control characters).
SETTINGS_KEY = re.compile(r"^(?!\$)[^.\x00-\x1f\x7f]{1,128}$")
#: Settings are a handful of values; a source's whole settings document stays small.
MAX_SETTINGS_CHARACTERS = 32_000


class GoogleDelegation(BaseModel):
    """What the organiser's Google admin enters in Google Admin (Security > API controls > Domain-wide
    delegation) for a Google source."""

    client_id: str | None = Field(description="The service account's client id (from its key; None: no key yet).")
    scopes: list[str] = Field(description="The OAuth scopes to grant, exactly these (read only).")
    console_url: str = "https://admin.google.com/ac/owl/domainwidedelegation"


class SourceErrorView(BaseModel):
    """An error code of the source's latest failed run, with what it means and how to fix it (English; the
    admin UI shows it in Swedish) when there is a hint for it."""

    code: str
    title: str | None = None
    fix: str | None = None
    needs_admin: bool | None = None


class SourceHealthView(BaseModel):
    """How the source's runs fare: ``unknown`` (no run finished yet), ``ok`` (the last finished run was
    complete), ``retrying`` (the latest finished runs were incomplete, since ``failing_since``: nothing is
    removed at vendors meanwhile) or ``failing`` (so for longer than the threshold: the organiser's contacts
    are told)."""

    state: Literal["unknown", "ok", "retrying", "failing"]
    failing_since: datetime | None = None
    failed_runs: int = 0
    errors: list[SourceErrorView] = Field(default_factory=list)
    reasons: list[str] = Field(default_factory=list, description="Why the latest failed run was incomplete.")
    last_complete_at: datetime | None = None
    running_since: datetime | None = None


class Source(BaseModel):
    source_id: str
    kind: SourceKind
    display_name: str
    enabled: bool
    settings: dict[str, Any]
    secrets_set: list[str] = Field(
        description="Names of the stored (encrypted) secrets; their values are never returned."
    )
    secret_refs: dict[str, str]
    problem: str | None = Field(
        default=None, description="Why the connector cannot read this version of the source (None: it reads it)."
    )
    problem_at: datetime | None = None
    delegation: GoogleDelegation | None = Field(default=None, description="Google sources: what to delegate.")
    health: SourceHealthView | None = Field(default=None, description="How the source's latest runs fare.")
    created_at: datetime
    updated_at: datetime


class EgilConnection(BaseModel):
    """What an organiser's EGIL client needs to push to this source: the lines of its configuration."""

    scim_url: str | None = Field(description="The receiver's address (scim-url); None: not configured here.")
    server_pin: str | None = Field(description="The receiver's public-key pin (pinnedpubkey = sha256//<pin>).")
    api_key_header: str
    has_api_key: bool
    client_pins: list[str]
    configuration: str = Field(description="The lines for the EGIL client's master.conf.")


class EgilApiKey(EgilConnection):
    api_key: str = Field(description="Shown once; only its SHA-256 is kept. A new key replaces the old one.")


class EgilCertificateIn(Body):
    pem: str = Field(min_length=20, max_length=20000, description="The client certificate (PEM); its key pin is kept.")


class SourceCheck(BaseModel):
    """What the connector of the source's kind found when it tried the settings (or why nobody answered)."""

    source_id: str
    ok: bool
    error_code: str | None = Field(description="e.g. token_http_401, http_503, configuration, timeout, no_answer.")
    detail: str | None = None
    counts: dict[str, int] = Field(description="persons, school_units (on the first page unless complete).")
    complete: bool
    elapsed_seconds: float


class MicrosoftConsentIn(Body):
    """A Microsoft 365 source read with skolsynk's multi-tenant app: the organiser's admin consents at
    Microsoft, and the directory (tenant) id comes back with the consent."""

    source_id: str = Field(pattern=ID)
    display_name: str = Field(min_length=1, max_length=200)


class MicrosoftConsent(BaseModel):
    consent_url: str = Field(description="Open in the browser of a Global Administrator of the organiser's tenant.")
    permissions: list[str] = Field(description="The Microsoft Graph application permissions the app asks for.")
    redirect_uri: str


class SyncIn(Body):
    mode: Literal["full", "incremental"] = "full"


class Accepted(BaseModel):
    status: Literal["accepted"] = "accepted"
    message_id: UUID | None = None


class SubscriptionIn(Body):
    """A vendor subscription as the organiser sets it (test mode is decided by the promotion gate)."""

    school_unit_codes: list[str] = Field(min_length=1)
    roles: list[Role] = Field(default_factory=lambda: list(Role))
    school_types: list[SchoolType] | None = None
    school_years: list[int] | None = None
    group_types: list[GroupType] | None = None
    placements: bool = Field(
        default=False,
        description="Also children placed at a förskola or fritidshem of the school units (SS 12000 Placement), "
        "when the vendor's profile takes placements. Off: an SS 12000 source's placements are not even read.",
    )
    fields: dict[str, list[str]] | None = Field(
        default=None,
        description="Per kind, the fields the vendor gets, narrowing what its profile accepts (the civic number "
        "and birth date only when named here); a kind left out gets what the profile accepts. None: all the "
        "profile accepts.",
    )
    protected_identity_policy: ProtectedIdentityPolicy = ProtectedIdentityPolicy.EXCLUDE
    deletion_grace_hours: float = Field(default=0.0, ge=0, le=24 * 90)
    guard: MassDeletionGuard | None = Field(
        default=None, description="The mass-deletion guard's limits. None: keep the subscription's (or the defaults)."
    )


class PreviewRow(BaseModel):
    school_unit_code: str
    role: str
    added: int
    removed: int
    changed: int


class PreviewEntry(BaseModel):
    entity_id: UUID
    kind: str
    label: str = Field(description="A display name (shown only to the organiser's own admins).")
    school_unit_codes: list[str]
    roles: list[str]


class SubscriptionWarning(BaseModel):
    """A chosen school unit where the subscription's filters select no students, no teachers or no groups
    (``missing``), and why (``cause``: the filter, or nothing there at all); computed from counts per unit
    of the organiser's data, before the person-level rules (protected identities, personStatus)."""

    school_unit_code: str
    school_unit_name: str | None = Field(description="None: the code is not an active school unit of the organiser.")
    missing: Shortfall
    cause: WarningCause
    chosen_school_types: list[SchoolType] = Field(description="The subscription's school types, when they matter.")
    chosen_school_years: list[int] = Field(description="The subscription's school years, when they matter.")
    chosen_group_types: list[GroupType] = Field(description="The subscription's group types, when they matter.")
    unit_school_types: list[SchoolType] = Field(description="The school types of the unit's students.")
    unit_school_years: list[int] = Field(description="The school years of the unit's students.")
    unit_group_types: list[GroupType] = Field(description="The types of the unit's groups.")
    message: str = Field(description="The warning in English.")

    @classmethod
    def of(cls, warning: SelectionWarning) -> SubscriptionWarning:
        return cls(
            school_unit_code=warning.school_unit_code,
            school_unit_name=warning.school_unit_name,
            missing=warning.missing,
            cause=warning.cause,
            chosen_school_types=list(warning.chosen_school_types),
            chosen_school_years=list(warning.chosen_school_years),
            chosen_group_types=list(warning.chosen_group_types),
            unit_school_types=list(warning.unit_school_types),
            unit_school_years=list(warning.unit_school_years),
            unit_group_types=list(warning.unit_group_types),
            message=warning.message,
        )


class Preview(BaseModel):
    vendor_id: str
    totals: dict[str, int]
    rows: list[PreviewRow]
    added: list[PreviewEntry]
    removed: list[PreviewEntry]
    warnings: list[SubscriptionWarning] = Field(
        default_factory=list,
        description="Chosen school units where the filters select no students, teachers or groups.",
    )


class Promotion(BaseModel):
    test_mode: bool
    test_started_at: datetime | None
    test_hours_required: float
    test_hours_done: float
    reviewed_at: datetime | None
    reviewed_by: str | None
    live_at: datetime | None
    can_go_live: bool
    blockers: list[str]


class DeliveryHealthView(BaseModel):
    """How the organiser's deliveries to the vendor fare: ``unknown`` (nothing delivered yet), ``ok``,
    ``retrying`` (the vendor cannot be reached; changes wait and are retried) or ``failing`` (retrying for
    longer than the threshold)."""

    state: Literal["unknown", "ok", "retrying", "failing"]
    since: datetime | None = None
    last_error: str | None = None
    last_error_en: str | None = None
    last_error_sv: str | None = None
    last_error_at: datetime | None = None
    last_success_at: datetime | None = None
    #: Changes queued for the vendor and not yet done with, and when the oldest of them was queued (before
    #: that, when ``oldest_pending_at_least``: a backlog longer than the batches whose times are kept).
    pending: int = 0
    oldest_pending_at: datetime | None = None
    oldest_pending_at_least: bool = False
    #: The vendor's last drift check (EGIL SCIM vendors): when, and what it found of this organiser's data
    #: (missing: delivered but gone at the vendor, resent; ghosts: deleted but still there, deleted again).
    drift_checked_at: datetime | None = None
    drift_missing: int | None = None
    drift_ghosts: int | None = None


class VendorSupportView(BaseModel):
    """The vendor's support desk (from its catalogue entry), for when deliveries fail."""

    email: str | None = None
    url: str | None = None
    phone: str | None = None


class Subscription(BaseModel):
    vendor_id: str
    vendor_name: str
    vendor_support: VendorSupportView | None = None
    subscription: dict[str, Any]
    promotion: Promotion
    health: DeliveryHealthView | None = None
    warnings: list[SubscriptionWarning] | None = Field(
        default=None,
        description="Chosen school units where the filters select no students, teachers or groups (as in the "
        "preview); given by GET and PUT of one subscription, None in lists and lifecycle actions.",
    )


class GoLiveIn(Body):
    override_reason: str | None = Field(
        default=None, min_length=5, max_length=300, description="Operators only: go live despite the gate (audited)."
    )


class HoldDecisionIn(Body):
    decision: Literal["approve", "discard"]


class HoldCause(BaseModel):
    """Why a hold's removals came: ``source`` (a run of the organiser's source: the source's data changed),
    ``change`` (an admin's change in skolsynk: who, which audited action, on what, when), ``dates`` (end
    dates in the source's data passed) or ``other`` (a projection for another reason)."""

    kind: Literal["source", "change", "dates", "other"]
    reason: str | None = Field(default=None, description="Why the projection that made the hold ran.")
    source_id: str | None = Field(default=None, description="source: the source whose run it was.")
    run_id: str | None = Field(default=None, description="source: the run.")
    mode: str | None = Field(default=None, description="source: 'full' or 'incremental'.")
    actor: str | None = Field(default=None, description="change: who made it (the audit log's actor).")
    action: str | None = Field(default=None, description="change: the audited action, e.g. 'subscription.update'.")
    target: str | None = Field(default=None, description="change: what it changed, e.g. the vendor id.")
    at: datetime | None = Field(default=None, description="When the run finished, or the change was made.")


HoldStatus = Literal["pending", "approved", "discarded"]


class Hold(BaseModel):
    """Removals of one school unit at one vendor that the mass-deletion guard keeps back."""

    vendor_id: str
    school_unit_id: str
    school_unit_codes: list[str] = Field(default_factory=list)
    status: HoldStatus
    removals: int = Field(description="How many removals are held.")
    population: int = Field(description="How many the vendor holds at the school unit.")
    created_at: datetime | None = None
    updated_at: datetime | None = None
    decided_by: str | None = None
    decided_at: datetime | None = None
    causes: list[HoldCause] = Field(default_factory=list, description="Why the removals came (the latest last).")


class HeldEntity(BaseModel):
    """One entity whose removal a hold keeps back."""

    entity_id: str = Field(description="The entity's id at the vendor.")
    source_entity_id: str = Field(description="The entity's id in skolsynk's canonical state.")
    kind: str = Field(description="person, duty, group, activity ...")
    reason: str | None = Field(
        default=None, description="Why it leaves: left_source (no longer in the source), left_selection ..."
    )
    name: str | None = Field(
        default=None,
        description="The name (roles that may see personal data only; for one gone from the source, "
        "the name it had there).",
    )


class HoldHistoryEntry(BaseModel):
    """What became of a hold: a decision, or ``resolved`` (it closed undecided: its removals no longer applied)."""

    vendor_id: str
    school_unit_id: str
    school_unit_codes: list[str] = Field(default_factory=list)
    outcome: Literal["approved", "discarded", "resolved"]
    by: str | None = Field(default=None, description="Who decided (None: resolved).")
    at: datetime
    removals: int
    population: int
    causes: list[HoldCause] = Field(default_factory=list)
    held_since: datetime | None = None


class ErasureIn(Body):
    person_id: UUID
    vendor_ids: list[str] | None = Field(default=None, description="None: every vendor.")
    kind: Literal["erasure", "objection"] = "erasure"
    reference: str | None = Field(default=None, max_length=64)


class ErasureCreated(BaseModel):
    request_id: UUID


class ReportState(StrEnum):
    """Whether a subscription's report is final."""

    COMPUTING = "computing"  # a projection is asked for or running, or the dispatcher has changes to record
    READY = "ready"  # everything asked for is computed and recorded
    NOT_COMPUTED = "not_computed"  # nothing has been computed for the subscription yet


class ReportUnitRow(BaseModel):
    school_unit_id: str | None = Field(description="None: entities at no school unit (the organisation).")
    school_unit_code: str | None = None
    display_name: str | None = None
    role: str = Field(description="student, teacher or other_staff for persons; the kind for the rest.")
    count: int


class SubscriptionReport(BaseModel):
    """What a subscription in test mode would send (the test report), with whether it is final."""

    vendor_id: str
    state: ReportState
    computing_since: datetime | None = Field(
        default=None,
        description="While computing: since when (the request, the projection's start, the oldest change).",
    )
    ready_at: datetime | None = Field(
        default=None, description="When ready: when the last projection finished or its last change was recorded."
    )
    projection: Literal["requested", "running"] | None = Field(
        default=None, description="While computing: the organiser's projection is asked for, or running."
    )
    pending: int = Field(description="Changes the vendor's dispatcher has still to record.")
    would_send: dict[str, int] = Field(
        description="Entities per kind: final when ready, the count so far while computing."
    )
    per_school_unit: list[ReportUnitRow]
    would_be_refused: dict[str, int] = Field(description="What the vendor's profile would refuse, per kind.")
    refused_per_reason: dict[str, int] = Field(
        default_factory=dict, description="What the vendor's profile would refuse, per reason code."
    )


class ReportList(StrEnum):
    """The lists of a subscription's report."""

    PERSONS = "persons"
    GROUPS = "groups"
    REFUSED = "refused"


class ReportSearchIn(Body):
    """A search of a report's list (posted, so that names never travel in a URL)."""

    q: str = Field(
        min_length=1,
        max_length=200,
        description="Every word in a name, login or e-mail address (roles that may see personal data), a group's "
        "name, or an id.",
    )
    school_unit_id: str | None = Field(default=None, max_length=64, description="Only this school unit.")
    skip: int = Field(default=0, ge=0, le=10**9)
    limit: int = Field(default=200, ge=1, le=200)


class ReportSchoolUnit(BaseModel):
    school_unit_id: str
    school_unit_code: str | None = None
    display_name: str | None = None


class ReportPerson(BaseModel):
    entity_id: str = Field(description="The id the vendor knows the person by.")
    person_id: str | None = Field(
        default=None, description="The person's own id (differs from entity_id when the vendor gets a pseudonym)."
    )
    pseudonymised: bool = False
    name: str | None = Field(default=None, description="Only for roles that may see personal data.")
    login: str | None = Field(
        default=None, description="The first eduPersonPrincipalName; only for roles that may see personal data."
    )
    roles: list[str]
    school_units: list[ReportSchoolUnit]
    at: datetime


class ReportGroup(BaseModel):
    entity_id: str
    name: str | None = None
    group_type: str | None = None
    members: int | None = Field(default=None, description="Members as the vendor gets them (None: not recorded).")
    school_units: list[ReportSchoolUnit]
    at: datetime


class ReportRefusal(BaseModel):
    entity_id: str
    kind: str
    name: str | None = Field(default=None, description="A person's only for roles that may see personal data.")
    roles: list[str] = Field(default_factory=list)
    school_units: list[ReportSchoolUnit]
    reason: str | None = Field(description="Why, as recorded (English; no personal data).")
    reason_code: str = Field(description="The reason as a code (docs/admin.md lists them).")
    at: datetime


class Vendor(BaseModel):
    vendor_id: str
    display_name: str
    delivery: str


#: A secret reference: a key of the Kubernetes Secret mounted in the dispatchers (SKOLSYNK_VENDOR_SECRETS_DIR).
SecretReference = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$")]


class VendorCredentialIn(Body):
    """An organiser's own credentials at a vendor (write-only; stored sealed): an API key, a client
    certificate with its private key (mutual TLS: the vendor registers the certificate's pin), or both.
    Each can instead be a secret reference (``*_ref``): the name of a key of the Kubernetes Secret mounted
    in the dispatchers, read there at every poll (nothing secret in the store; the admin cannot check a
    referenced certificate, the dispatcher does). What is not given stays as it was."""

    api_key: SecretStr | None = Field(default=None, description="The organiser's own API key at the vendor.")
    client_certificate_pem: str | None = Field(
        default=None, max_length=20_000, description="PEM client certificate (the first one is used)."
    )
    client_key_pem: SecretStr | None = Field(
        default=None, description="PEM private key of the client certificate, without a passphrase."
    )
    api_key_ref: SecretReference | None = Field(default=None, description="The Secret's key holding the API key.")
    client_certificate_ref: SecretReference | None = Field(
        default=None, description="The Secret's key holding the PEM client certificate."
    )
    client_key_ref: SecretReference | None = Field(
        default=None, description="The Secret's key holding the certificate's PEM private key."
    )

    @field_validator("api_key")
    @classmethod
    def _long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not 16 <= len(value.get_secret_value()) <= 512:
            raise ValueError("an API key has 16 to 512 characters")
        return value

    @field_validator("client_key_pem")
    @classmethod
    def _key_size(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) > 20_000:
            raise ValueError("a private key has at most 20000 characters")
        return value

    @model_validator(mode="after")
    def _something(self) -> VendorCredentialIn:
        if self.api_key is not None and self.api_key_ref is not None:
            raise ValueError("give api_key or api_key_ref, not both")
        by_value = (self.client_certificate_pem is not None, self.client_key_pem is not None)
        by_reference = (self.client_certificate_ref is not None, self.client_key_ref is not None)
        if any(by_value) and any(by_reference):
            raise ValueError("give the client certificate and its key as values or as references, not both")
        if by_value[0] != by_value[1]:
            raise ValueError("client_certificate_pem and client_key_pem go together")
        if by_reference[0] != by_reference[1]:
            raise ValueError("client_certificate_ref and client_key_ref go together")
        if self.api_key is None and self.api_key_ref is None and not any(by_value) and not any(by_reference):
            raise ValueError("give an api_key, or a client_certificate_pem with its client_key_pem (or references)")
        return self

    def secret_refs(self) -> dict[str, str]:
        """The references given, by the part of the credentials they name."""
        named = {"api_key": self.api_key_ref, "certificate_pem": self.client_certificate_ref,
                 "key_pem": self.client_key_ref}  # fmt: skip
        return {part: name for part, name in named.items() if name is not None}


class VendorCredential(BaseModel):
    """That an organiser has its own credentials at a vendor (never the secret): which kinds, and the
    client certificate's public-key pin (what the vendor registers) and expiry."""

    vendor_id: str
    tenant_id: str
    version: int
    kinds: list[Literal["api_key", "client_certificate"]] = Field(default_factory=list)
    certificate_pin: str | None = None
    certificate_not_after: datetime | None = None
    #: Parts kept as secret references (part -> the Secret's key), read by the dispatchers.
    secret_refs: dict[str, str] = Field(default_factory=dict)
    updated_at: datetime
    updated_by: str
    #: False when this installation cannot open them (sealed with another secrets key, or damaged): the
    #: organiser's deliveries to the vendor wait (``own_credentials_unusable``) until they are set again.
    readable: bool = True


class CatalogueVendor(BaseModel):
    """A vendor of the catalogue as operators see it: its catalogue entry (the format of
    ``deploy/vendors/*.yaml``), version, and when it was retired (if it was)."""

    vendor_id: str
    entry: dict[str, Any]
    version: int
    retired_at: datetime | None = None
    updated_at: datetime
    updated_by: str
    #: What a write did: created, updated, unchanged, retired.
    outcome: str | None = None


# --- signing in with Microsoft or Google (OpenID Connect) ----------------------------------------------


class IdentityProviderIn(Body):
    """An OpenID Connect provider the sign-in page offers (operators only)."""

    provider_id: str = Field(pattern=ID, description="Short id, e.g. 'microsoft' or 'google'.")
    display_name: str = Field(
        min_length=1, max_length=60, description="The button says 'Logga in med <display_name>', e.g. 'Microsoft'."
    )
    issuer: str = Field(
        min_length=8,
        max_length=300,
        description="Microsoft: https://login.microsoftonline.com/<tenant id>/v2.0 (one directory) or "
        ".../organizations/v2.0 (every directory); Google: https://accounts.google.com. Discovered at "
        "<issuer>/.well-known/openid-configuration.",
    )
    client_id: str = Field(min_length=1, max_length=200, description="skolsynk's application (client) id there.")
    client_secret: SecretStr = Field(
        description="The application's client secret: sealed with SKOLSYNK_ADMIN_SECRETS_KEY, never returned."
    )
    enabled: bool = Field(default=True, description="Offered on the sign-in page.")

    @field_validator("client_secret")
    @classmethod
    def _secret_size(cls, value: SecretStr) -> SecretStr:
        if not 1 <= len(value.get_secret_value()) <= 500:
            raise ValueError("a client secret is 1 to 500 characters")
        return value


class IdentityProviderUpdate(Body):
    """A change to a provider: what is given changes; the issuer stays (a new issuer is a new provider)."""

    display_name: str | None = Field(default=None, min_length=1, max_length=60)
    client_id: str | None = Field(default=None, min_length=1, max_length=200)
    client_secret: SecretStr | None = Field(default=None, description="A new client secret (absent: kept).")
    enabled: bool | None = Field(default=None, description="Disabling one ends the sessions started with it.")

    @field_validator("client_secret")
    @classmethod
    def _secret_size(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not 1 <= len(value.get_secret_value()) <= 500:
            raise ValueError("a client secret is 1 to 500 characters")
        return value


class IdentityProvider(BaseModel):
    provider_id: str
    display_name: str
    issuer: str
    kind: Literal["microsoft", "google", "oidc"]
    multi_tenant: bool = Field(description="A Microsoft issuer for every directory: e-mail and domain rules name one.")
    client_id: str
    client_secret_stored: bool = Field(description="Whether a client secret is stored (it is never returned).")
    enabled: bool
    rules: int = Field(description="How many account rules name this provider.")
    created_at: datetime
    updated_at: datetime


class AccountRuleIn(Body):
    """Which signed-in accounts get which organiser and role (operators only)."""

    provider_id: str = Field(pattern=ID, description="The identity provider the account signs in with.")
    kind: Literal["subject", "email", "domain"] = Field(
        description="subject: one account by its ID token's sub; email: one account by its e-mail address; domain: "
        "every account of an e-mail domain (Google: the Workspace domain, hd). The most specific match wins."
    )
    value: str = Field(min_length=1, max_length=255, description="The subject, e-mail address or domain.")
    directory: str | None = Field(
        default=None,
        description="A Microsoft directory (tenant id) the account must belong to; required for e-mail and domain "
        "rules of a provider for every directory.",
    )
    role: Literal["organiser_admin", "viewer", "operator"] = Field(
        description="operator only for one account (subject or e-mail), never a domain."
    )
    tenant_id: str | None = Field(default=None, pattern=ID, description="The organiser (none for an operator).")


class AccountRule(BaseModel):
    rule_id: str
    provider_id: str
    kind: Literal["subject", "email", "domain"]
    value: str
    directory: str | None
    role: str
    tenant_id: str | None
    created_by: str
    created_at: datetime


class FindingSearchIn(Body):
    """A search of the data-quality report (posted, so that names and addresses never travel in a URL)."""

    q: str = Field(
        min_length=2,
        max_length=200,
        description="Contained (any case) in the source's key or the entity id; for roles that may see personal "
        "data also in the offending value, or every word of it in the name of whom the finding is about or of "
        "a duplicate's other party.",
    )
    severity: Severity | None = None
    code: FindingCode | None = None
    school_unit_code: str | None = Field(
        default=None, max_length=20, description="Only this school unit (8 digits; '-': the findings without one)."
    )
    skip: int = Field(default=0, ge=0, description="How many matches to skip (the total is in X-Total-Count).")
    limit: int = Field(default=1000, ge=1, le=1000, description="How many to return.")


class ReportedFinding(Finding):
    """A data-quality finding as the report shows it: the stored finding (with the offending ``value``
    and, for a duplicate, ``other_entity_id``), the names joined from the entities when it is read, and
    the kind of its source (whose way of fixing it applies). For a role that may not see personal data
    (a viewer) ``value``, ``entity_name`` and ``other_name`` are null: codes, ids and counts remain."""

    entity_name: str | None = Field(
        default=None,
        description="Who or what the finding is about: a person's name (a duty's or placement's person), a "
        "school unit's, group's or activity's name; null when the record is not stored (withheld at ingest).",
    )
    other_name: str | None = Field(default=None, description="For a duplicate: the name of the other party.")
    source_kind: str | None = Field(default=None, description="The kind of the finding's source (egil, ss12000 ...).")
