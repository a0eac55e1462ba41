"""A Google Workspace source: which tenant to read, how to authenticate, and its mapping from OUs, users
and groups to SS 12000 records. It comes from the source registry (:mod:`skolsynk.connectors.sources`),
where the service-account key is sealed (``service_account.key``) or a reference (``key_env``, the
environment variable holding it, or ``key_file``, a mounted file); a sources file (``skolsynk sources
import``) names the variable or file only.

Every problem is reported with the path of the bad field (``sources[0].mapping.roles[1].org_unit: ...``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    TypeAdapter,
    ValidationError,
    model_validator,
)

from skolsynk.connectors.config import ENV_NAME, TENANT_ID, load_yaml, parse_entries, secret
from skolsynk.connectors.config import ConfigurationError as ConfigurationError
from skolsynk.contracts.source import SOURCE_ID
from skolsynk.domain.ss12000 import SCHOOL_UNIT_CODE, DutyRole, GroupType, SchoolType

EMAIL = r"^[^@\s]+@[^@\s]+\.[A-Za-z]{2,}$"
GOOGLE_TOKEN_URL = "https://oauth2.googleapis.com/token"  # noqa: S105 (a URL)
GOOGLE_API_BASE_URL = "https://admin.googleapis.com"
SCOPE_PREFIX = "https://www.googleapis.com/auth/"
#: What the service account is granted in Google Admin's domain-wide delegation (read only).
DIRECTORY_SCOPES: tuple[str, ...] = (
    SCOPE_PREFIX + "admin.directory.user.readonly",
    SCOPE_PREFIX + "admin.directory.orgunit.readonly",
    SCOPE_PREFIX + "admin.directory.group.readonly",
    SCOPE_PREFIX + "admin.directory.group.member.readonly",
)
#: Also granted when the source polls the Reports API (``reports.enabled``).
REPORTS_SCOPE = SCOPE_PREFIX + "admin.reports.audit.readonly"
#: Admin audit events that make the connector read the tenant again before the next scheduled run.
DEFAULT_TRIGGER_EVENTS: tuple[str, ...] = (
    "CREATE_USER",
    "DELETE_USER",
    "UNDELETE_USER",
    "SUSPEND_USER",
    "UNSUSPEND_USER",
    "ARCHIVE_USER",
    "UNARCHIVE_USER",
    "RENAME_USER",
    "MOVE_USER_TO_ORG_UNIT",
    "ADD_GROUP_MEMBER",
    "REMOVE_GROUP_MEMBER",
)

#: ``segment`` or ``segment[key=value]``, dot-separated: ``customSchemas.SS12000.Personnummer``,
#: ``externalIds[type=organization].value``.
_SEGMENT = r"[A-Za-z0-9_]+(?:\[[A-Za-z0-9_]+=[^\]]*\])?"
FIELD_PATH = re.compile(rf"^{_SEGMENT}(?:\.{_SEGMENT})*$")


def _regex(value: str) -> str:
    try:
        re.compile(value)
    except re.error as error:
        raise ValueError(f"not a valid regular expression ({error.msg})") from None
    return value


def _field_path(value: str) -> str:
    if not FIELD_PATH.match(value):
        raise ValueError("not a field path (dot-separated names, e.g. customSchemas.SS12000.Personnummer)")
    return value


def _org_unit_path(value: str) -> str:
    if not value.startswith("/"):
        raise ValueError("an OU path starts with '/'")
    return "/" + value.strip("/") if value.strip("/") else "/"


Regex = Annotated[str, AfterValidator(_regex)]
FieldPath = Annotated[str, AfterValidator(_field_path)]
OrgUnitPath = Annotated[str, AfterValidator(_org_unit_path)]
SchoolUnitCode = Annotated[str, Field(pattern=SCHOOL_UNIT_CODE.pattern)]


class Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


# --- mapping -----------------------------------------------------------------------------------


class OrganisationConfig(Model):
    """The organiser (huvudman) itself: Google has no record of it."""

    key: str = Field(default="organisation", min_length=1, max_length=200)
    display_name: str = Field(min_length=1, max_length=200)
    organisation_number: str | None = Field(default=None, max_length=20)
    municipality_code: str | None = Field(default=None, pattern=r"^[0-9]{4}$")


class TableUnit(Model):
    org_unit: OrgUnitPath = Field(description="The OU whose subtree is the school unit.")
    code: SchoolUnitCode
    display_name: str | None = Field(default=None, max_length=200, description="Default: the OU's name.")
    school_types: list[SchoolType] | None = Field(default=None, min_length=1, description="Default: the rule's.")


class SchoolUnitRule(Model):
    """One way of finding a user's school unit. ``from``:

    * ``org_units``: every OU whose path matches ``path_pattern`` (whole path) is a school unit, and so is
      its subtree; the code is found with ``code_pattern`` in the OU's ``name``, ``description`` or ``path``;
    * ``table``: explicit OUs and codes;
    * ``custom_field``: the user's field ``field`` holds the code (names from ``display_names``).
    """

    from_: Literal["org_units", "table", "custom_field"] = Field(alias="from")
    school_types: list[SchoolType] = Field(min_length=1, description="School types of the units (enrolments).")
    path_pattern: Regex | None = None
    code_from: Literal["name", "description", "path"] = "description"
    code_pattern: Regex = r"(?P<code>[0-9]{8})"
    units: list[TableUnit] = Field(default_factory=list)
    field: FieldPath | None = None
    display_names: dict[SchoolUnitCode, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _complete(self) -> SchoolUnitRule:
        given = self.model_fields_set
        own = {
            "org_units": {"path_pattern", "code_from", "code_pattern"},
            "table": {"units"},
            "custom_field": {"field", "display_names"},
        }
        for kind, names in own.items():
            if kind != self.from_ and names & given:
                raise ValueError(f"{', '.join(sorted(names & given))}: only for 'from: {kind}'")
        if self.from_ == "org_units" and self.path_pattern is None:
            raise ValueError("'from: org_units' needs path_pattern")
        if self.from_ == "table" and not self.units:
            raise ValueError("'from: table' needs units")
        if self.from_ == "custom_field" and self.field is None:
            raise ValueError("'from: custom_field' needs field")
        pattern = re.compile(self.code_pattern)
        if pattern.groups and "code" not in pattern.groupindex:
            raise ValueError("code_pattern: name the group holding the code (?P<code>...)")
        return self


class RoleRule(Model):
    """A user is ``role`` when their OU path matches ``org_unit`` (searched), they are a member of the group
    ``group`` (e-mail address or id, nested memberships included), or their ``field`` holds one of
    ``values`` (any value when none are given). Exactly one condition."""

    role: Literal["student", "teacher", "staff"]
    org_unit: Regex | None = None
    group: str | None = Field(default=None, min_length=1)
    field: FieldPath | None = None
    values: list[str] = Field(default_factory=list)
    duty_role: DutyRole | None = Field(default=None, description="Default: Lärare (teacher), Annan personal (staff).")

    @model_validator(mode="after")
    def _one_condition(self) -> RoleRule:
        conditions = [name for name in ("org_unit", "group", "field") if getattr(self, name) is not None]
        if len(conditions) != 1:
            raise ValueError("give exactly one of org_unit, group or field")
        if self.values and self.field is None:
            raise ValueError("values: only with field")
        if self.role == "student" and self.duty_role is not None:
            raise ValueError("duty_role: not for students")
        return self

    @property
    def effective_duty_role(self) -> DutyRole:
        if self.duty_role is not None:
            return self.duty_role
        return DutyRole.LARARE if self.role == "teacher" else DutyRole.ANNAN_PERSONAL


class GroupRule(Model):
    """Google groups that become SS 12000 groups: by ``email_pattern`` (whole, lower-cased address) or an
    explicit list of ``emails``. ``school_unit``: ``members`` (the unit most of its students belong to,
    else its teachers'), ``pattern`` (the ``code`` group of ``email_pattern``) or an 8-digit code."""

    email_pattern: Regex | None = None
    emails: list[Annotated[str, Field(pattern=EMAIL)]] = Field(default_factory=list)
    group_type: GroupType = GroupType.KLASS
    school_unit: str = "members"
    school_type: SchoolType | None = None
    activity: bool = Field(default=True, description="Also an activity taught by the group's teachers.")

    @model_validator(mode="after")
    def _complete(self) -> GroupRule:
        if (self.email_pattern is None) == (not self.emails):
            raise ValueError("give exactly one of email_pattern or emails")
        if self.school_unit not in ("members", "pattern") and not SCHOOL_UNIT_CODE.match(self.school_unit):
            raise ValueError("school_unit: 'members', 'pattern' or an 8-digit school-unit code")
        if self.school_unit == "pattern" and (
            self.email_pattern is None or "code" not in re.compile(self.email_pattern).groupindex
        ):
            raise ValueError("school_unit 'pattern' needs an email_pattern with a group (?P<code>...)")
        return self

    def matches(self, email: str) -> re.Match[str] | bool:
        address = email.lower()
        if self.email_pattern is not None:
            return re.fullmatch(self.email_pattern, address) or False
        return address in {e.lower() for e in self.emails}


class ExternalIdRule(Model):
    field: FieldPath
    context: str = Field(min_length=1, max_length=200, description="A URI naming the id space.")
    globally_unique: bool = True


class FieldsConfig(Model):
    """Where the person's attributes are in the Google user resource (field paths)."""

    given_name: FieldPath = "name.givenName"
    family_name: FieldPath = "name.familyName"
    email: FieldPath | None = "primaryEmail"
    eppn: FieldPath | None = "primaryEmail"
    civic_no: FieldPath | None = None
    security_marking: FieldPath | None = Field(
        default=None,
        description="A custom field holding the person's securityMarking (Ingen, Sekretessmarkering, Skyddad "
        "folkbokföring; a boolean field: true is protected). Set: a user without a value has an unknown marking "
        "(treated as the organiser decided). None: Google has no such attribute and every person is 'Ingen'.",
    )
    school_year: FieldPath | None = None
    school_type: FieldPath | None = None
    external_ids: list[ExternalIdRule] = Field(default_factory=list)
    user_id_context: str = Field(
        default="urn:skolsynk:google-workspace:user-id",
        min_length=1,
        max_length=200,
        description="Context URI of the Google user id, sent as an external identifier of every person.",
    )


class MappingConfig(Model):
    organisation: OrganisationConfig | None = None
    scope: list[OrgUnitPath] = Field(default_factory=lambda: ["/"], min_length=1, description="OU subtrees read.")
    school_units: list[SchoolUnitRule] = Field(min_length=1)
    roles: list[RoleRule] = Field(min_length=1)
    groups: list[GroupRule] = Field(default_factory=list)
    fields: FieldsConfig = Field(default_factory=FieldsConfig)

    def field_paths(self) -> list[str]:
        paths = [p for p in self.fields.model_dump(exclude={"external_ids", "user_id_context"}).values() if p]
        paths += [rule.field for rule in self.fields.external_ids]
        paths += [rule.field for rule in self.school_units if rule.field]
        paths += [rule.field for rule in self.roles if rule.field]
        return paths

    def custom_schemas(self) -> list[str]:
        """The custom schemas the mapping reads (``customFieldMask``)."""
        names = {p.split(".")[1] for p in self.field_paths() if p.startswith("customSchemas.") and "." in p[14:]}
        return sorted(names)

    def role_groups(self) -> list[str]:
        return [rule.group for rule in self.roles if rule.group is not None]


# --- sources -----------------------------------------------------------------------------------


class ServiceAccountConfig(Model):
    """The service account's JSON key: the content itself (sealed in the registry), in an environment
    variable, or a mounted file."""

    key: SecretStr | None = Field(default=None, description="The JSON key (from the registry).")
    key_env: str | None = Field(default=None, pattern=ENV_NAME)
    key_file: Path | None = None

    @model_validator(mode="after")
    def _one(self) -> ServiceAccountConfig:
        if [self.key, self.key_env, self.key_file].count(None) != 2:
            raise ValueError("give the service-account key once: stored (secrets), key_env or key_file")
        return self


class LeaversConfig(Model):
    """Users left out of the snapshot (and so removed by it)."""

    suspended: bool = True
    archived: bool = True


class ReportsConfig(Model):
    """Polling the Reports API (admin audit log): a relevant event triggers a full run early."""

    enabled: bool = False
    poll_interval_seconds: float = Field(default=300.0, gt=0)
    overlap_seconds: float = Field(default=900.0, ge=0, description="Re-read this long before the last poll.")
    events: list[str] = Field(default_factory=lambda: list(DEFAULT_TRIGGER_EVENTS), min_length=1)


class WatchConfig(Model):
    """Directory push notifications (``users.watch``): a user added, changed, deleted or restored triggers a
    full run within seconds. Takes effect only where the operator exposes the connector's webhook
    (``SKOLSYNK_GOOGLE_WEBHOOK_URL``); the schedule runs either way."""

    enabled: bool = True


class SourceConfig(Model):
    tenant_id: str = Field(pattern=TENANT_ID)
    source_id: str = Field(pattern=SOURCE_ID)
    customer: str = Field(default="my_customer", min_length=1, description="Customer id or my_customer.")
    domain: str | None = Field(default=None, description="Only this domain's users.")
    delegated_admin: str = Field(pattern=EMAIL, description="The administrator the service account acts as.")
    service_account: ServiceAccountConfig
    token_url: str | None = Field(default=None, pattern=r"^https?://", description="Default: the key's token_uri.")
    api_base_url: str = Field(default=GOOGLE_API_BASE_URL, pattern=r"^https?://")
    page_size: int = Field(default=500, ge=1, le=500)
    full_interval_seconds: float = Field(default=3600.0, ge=1)
    failed_retry_seconds: float = Field(default=300.0, ge=1, description="After a failed run, try again after this.")
    include_derived_membership: bool = True
    leavers: LeaversConfig = Field(default_factory=LeaversConfig)
    reports: ReportsConfig = Field(default_factory=ReportsConfig)
    watch: WatchConfig = Field(default_factory=WatchConfig)
    mapping: MappingConfig

    @property
    def key(self) -> str:
        return f"{self.tenant_id}:{self.source_id}"


_SOURCES = TypeAdapter(list[SourceConfig])


def _location(loc: tuple[int | str, ...]) -> str:
    text = "sources"
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else f".{'from' if part == 'from_' else part}"
    return text


def describe(error: ValidationError) -> str:
    """One line per problem, each naming the path of the bad field."""
    lines = []
    for problem in error.errors():
        message = str(problem.get("msg", "invalid")).removeprefix("Value error, ")
        lines.append(f"{_location(tuple(problem.get('loc', ())))}: {message}")
    return "\n".join(lines)


def parse_sources(raw: object) -> list[SourceConfig]:
    """Validate a parsed sources document (a list, or ``{"sources": [...]}``); tenant+source unique.
    :class:`ConfigurationError` names every bad field's path."""
    return parse_entries(
        raw, _SOURCES, key="sources", describe=lambda error, _: f"invalid Google sources:\n{describe(error)}"
    )


def load_sources(path: Path) -> list[SourceConfig]:
    return parse_sources(load_yaml(path, noun="sources file", not_yaml="is not YAML"))


def delegation_scopes(*, reports: bool) -> tuple[str, ...]:
    """The OAuth scopes a source's service account needs in domain-wide delegation (``reports``: the source
    polls the Reports API)."""
    return DIRECTORY_SCOPES + ((REPORTS_SCOPE,) if reports else ())


def service_account_key(source: SourceConfig, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The source's service-account key file content (never logged). :class:`ConfigurationError` names the
    variable or file, never the value."""
    config = source.service_account
    if config.key is not None:
        where = "the stored service-account key"
        text = config.key.get_secret_value()
    elif config.key_env is not None:
        where = f"the environment variable {config.key_env}"
        text = secret(config.key_env, environ)
    else:
        assert config.key_file is not None
        where = f"the key file {config.key_file}"
        try:
            text = config.key_file.read_text(encoding="utf-8")
        except OSError as error:
            raise ConfigurationError(f"cannot read {where}: {error.strerror}") from None
    try:
        key = json.loads(text)
    except ValueError:
        raise ConfigurationError(f"{where} does not hold a JSON service-account key") from None
    missing = [name for name in ("client_email", "private_key") if not isinstance(key, dict) or not key.get(name)]
    if missing:
        raise ConfigurationError(f"{where}: the service-account key lacks {', '.join(missing)}")
    return dict(key)
