"""The Google sources file: the example parses; every invalid configuration is refused with a message
naming the path of the bad field; keys come from the environment or a file and never show up in errors."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from skolsynk.connectors.sources.google import (
    ConfigurationError,
    MappingConfig,
    load_sources,
    parse_sources,
    service_account_key,
)
from skolsynk.domain.ss12000 import DutyRole

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "deploy" / "google-sources.example.yaml"


def minimal(**overrides: Any) -> dict[str, Any]:
    source: dict[str, Any] = {
        "tenant_id": "kommun-a",
        "source_id": "google",
        "delegated_admin": "admin@kommun-a.se",
        "service_account": {"key_env": "GOOGLE_KEY"},
        "mapping": {
            "school_units": [{"from": "org_units", "path_pattern": "/Skolor/[^/]+", "school_types": ["GR"]}],
            "roles": [{"role": "student", "org_unit": "/Elever"}],
        },
    }
    source.update(overrides)
    return source


def with_mapping(**changes: Any) -> dict[str, Any]:
    source = minimal()
    source["mapping"] = {**source["mapping"], **changes}
    return source


def test_the_example_file_parses_and_matches_the_fake_layout() -> None:
    [source] = load_sources(EXAMPLE)
    assert source.key == "demo-kommun:google-workspace"
    assert source.page_size == 500
    assert source.full_interval_seconds == 3600
    assert source.leavers.suspended
    assert source.leavers.archived
    assert source.reports.enabled
    assert "MOVE_USER_TO_ORG_UNIT" in source.reports.events
    mapping = source.mapping
    assert mapping.scope == ["/Skolor"]
    assert mapping.custom_schemas() == ["SS12000"]
    assert mapping.roles[1].effective_duty_role is DutyRole.LARARE
    assert mapping.groups[0].matches("klass-unit-0-1@grupper.demo.skolsynk.example")
    assert not mapping.groups[0].matches("larare@demo.skolsynk.example")


def test_defaults() -> None:
    [source] = parse_sources({"sources": [minimal()]})
    assert source.customer == "my_customer"
    assert source.api_base_url == "https://admin.googleapis.com"
    assert source.token_url is None
    assert source.full_interval_seconds == 3600
    assert source.mapping.scope == ["/"]
    assert source.mapping.fields.eppn == "primaryEmail"
    assert source.mapping.custom_schemas() == []
    assert parse_sources(None) == []
    assert parse_sources([]) == []


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (
            with_mapping(roles=[{"role": "student", "org_unit": "/Elever("}]),
            "sources[0].mapping.roles[0].org_unit: not a valid regular expression",
        ),
        (
            with_mapping(roles=[{"role": "teacher", "org_unit": "/P", "group": "larare@kommun-a.se"}]),
            "sources[0].mapping.roles[0]: give exactly one of org_unit, group or field",
        ),
        (
            with_mapping(roles=[{"role": "pupil", "org_unit": "/Elever"}]),
            "sources[0].mapping.roles[0].role: Input should be 'student', 'teacher' or 'staff'",
        ),
        (
            with_mapping(roles=[{"role": "student", "org_unit": "/E", "duty_role": "Lärare"}]),
            "sources[0].mapping.roles[0]: duty_role: not for students",
        ),
        (
            with_mapping(roles=[{"role": "staff", "org_unit": "/P", "duty_role": "Vaktmästare"}]),
            "sources[0].mapping.roles[0].duty_role: Input should be",
        ),
        (
            with_mapping(roles=[]),
            "sources[0].mapping.roles: List should have at least 1 item",
        ),
        (
            with_mapping(school_units=[{"from": "org_units", "school_types": ["GR"]}]),
            "sources[0].mapping.school_units[0]: 'from: org_units' needs path_pattern",
        ),
        (
            with_mapping(school_units=[{"from": "table", "school_types": ["GR"], "path_pattern": "/x"}]),
            "sources[0].mapping.school_units[0]: path_pattern: only for 'from: org_units'",
        ),
        (
            with_mapping(
                school_units=[{"from": "table", "school_types": ["GR"], "units": [{"org_unit": "/A", "code": "1234"}]}]
            ),
            "sources[0].mapping.school_units[0].units[0].code: String should match pattern",
        ),
        (
            with_mapping(
                school_units=[
                    {"from": "table", "school_types": ["GR"], "units": [{"org_unit": "A", "code": "12345678"}]}
                ]
            ),
            "sources[0].mapping.school_units[0].units[0].org_unit: an OU path starts with '/'",
        ),
        (
            with_mapping(school_units=[{"from": "org_units", "path_pattern": "/S/[^/]+", "school_types": ["XX"]}]),
            "sources[0].mapping.school_units[0].school_types[0]: Input should be",
        ),
        (
            with_mapping(
                school_units=[
                    {"from": "org_units", "path_pattern": "/S", "code_pattern": "([0-9]{8})", "school_types": ["GR"]}
                ]
            ),
            "sources[0].mapping.school_units[0]: code_pattern: name the group holding the code",
        ),
        (
            with_mapping(school_units=[{"from": "somewhere", "school_types": ["GR"]}]),
            "sources[0].mapping.school_units[0].from: Input should be 'org_units', 'table' or 'custom_field'",
        ),
        (
            with_mapping(groups=[{"email_pattern": "klass-.*", "school_unit": "pattern"}]),
            "sources[0].mapping.groups[0]: school_unit 'pattern' needs an email_pattern with a group (?P<code>...)",
        ),
        (
            with_mapping(groups=[{"email_pattern": "klass-.*", "emails": ["a@b.se"]}]),
            "sources[0].mapping.groups[0]: give exactly one of email_pattern or emails",
        ),
        (
            with_mapping(groups=[{"emails": ["a@b.se"], "school_unit": "Norrskolan"}]),
            "sources[0].mapping.groups[0]: school_unit: 'members', 'pattern' or an 8-digit school-unit code",
        ),
        (
            with_mapping(groups=[{"emails": ["a@b.se"], "group_type": "Kurs"}]),
            "sources[0].mapping.groups[0].group_type: Input should be",
        ),
        (
            with_mapping(fields={"givenname": "name.givenName"}),
            "sources[0].mapping.fields.givenname: Extra inputs are not permitted",
        ),
        (
            with_mapping(fields={"civic_no": "customSchemas..Personnummer"}),
            "sources[0].mapping.fields.civic_no: not a field path",
        ),
        (
            with_mapping(scope=["Skolor"]),
            "sources[0].mapping.scope[0]: an OU path starts with '/'",
        ),
        (
            minimal(service_account={"key_env": "A", "key_file": "/k.json"}),
            "sources[0].service_account: give the service-account key once: stored (secrets), key_env or key_file",
        ),
        (
            minimal(service_account={"key_env": "NOT A NAME"}),
            "sources[0].service_account.key_env: String should match pattern",
        ),
        (minimal(page_size=1000), "sources[0].page_size: Input should be less than or equal to 500"),
        (minimal(delegated_admin="admin"), "sources[0].delegated_admin: String should match pattern"),
        (minimal(tenant_id="Kommun A"), "sources[0].tenant_id: String should match pattern"),
        (minimal(mapping=None), "sources[0].mapping: Input should be a valid dictionary"),
        ({k: v for k, v in minimal().items() if k != "mapping"}, "sources[0].mapping: Field required"),
    ],
)
def test_invalid_configurations_name_the_bad_field(source: dict[str, Any], expected: str) -> None:
    with pytest.raises(ConfigurationError) as raised:
        parse_sources([source])
    assert expected in str(raised.value), str(raised.value)


def test_every_problem_is_listed_and_the_second_source_is_named() -> None:
    second = with_mapping(roles=[{"role": "student", "org_unit": "["}])
    second["source_id"] = "google-2"
    second["page_size"] = 0
    with pytest.raises(ConfigurationError) as raised:
        parse_sources([minimal(), second])
    lines = str(raised.value).splitlines()
    assert lines[0] == "invalid Google sources:"
    assert sorted(lines[1:]) == [
        "sources[1].mapping.roles[0].org_unit: not a valid regular expression (unterminated character set)",
        "sources[1].page_size: Input should be greater than or equal to 1",
    ]


def test_duplicate_sources_and_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="sources listed twice: kommun-a:google"):
        parse_sources([minimal(), minimal()])
    with pytest.raises(ConfigurationError, match="cannot read the sources file"):
        load_sources(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("sources:\n  - tenant_id: [unclosed\n", encoding="utf-8")
    with pytest.raises(ConfigurationError, match=r"is not YAML \(line [0-9]+\)"):
        load_sources(broken)


def test_the_example_round_trips_through_yaml(tmp_path: Path) -> None:
    raw = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    changed = copy.deepcopy(raw)
    changed["sources"][0]["mapping"]["roles"][0]["org_unit"] = "("
    path = tmp_path / "sources.yaml"
    path.write_text(yaml.safe_dump(changed, allow_unicode=True), encoding="utf-8")
    with pytest.raises(ConfigurationError, match=r"sources\[0\]\.mapping\.roles\[0\]\.org_unit"):
        load_sources(path)


def test_custom_schemas_for_the_field_mask() -> None:
    mapping = MappingConfig.model_validate(
        {
            "school_units": [{"from": "custom_field", "field": "customSchemas.Skola.Kod", "school_types": ["GY"]}],
            "roles": [
                {"role": "teacher", "field": "customSchemas.Roll.Typ", "values": ["Lärare"]},
                {"role": "student", "org_unit": "/Elever"},
            ],
            "fields": {
                "civic_no": "customSchemas.SS12000.Personnummer",
                "external_ids": [{"field": "externalIds[type=organization].value", "context": "urn:x"}],
            },
        }
    )
    assert mapping.custom_schemas() == ["Roll", "SS12000", "Skola"]


def test_service_account_key_from_the_environment_or_a_file(tmp_path: Path) -> None:
    key = {"type": "service_account", "client_email": "sa@p.iam.gserviceaccount.com", "private_key": "SECRET-PEM"}
    [source] = parse_sources([minimal()])
    assert service_account_key(source, {"GOOGLE_KEY": json.dumps(key)}) == key
    with pytest.raises(ConfigurationError, match="the environment variable GOOGLE_KEY is not set"):
        service_account_key(source, {})
    with pytest.raises(ConfigurationError) as raised:
        service_account_key(source, {"GOOGLE_KEY": "SECRET-PEM not json"})
    assert "SECRET" not in str(raised.value)
    assert "does not hold a JSON service-account key" in str(raised.value)
    with pytest.raises(ConfigurationError, match="lacks private_key"):
        service_account_key(source, {"GOOGLE_KEY": json.dumps({"client_email": "x@y.se"})})
    path = tmp_path / "key.json"
    path.write_text(json.dumps(key), encoding="utf-8")
    [from_file] = parse_sources([minimal(service_account={"key_file": str(path)})])
    assert service_account_key(from_file, {}) == key
    [missing] = parse_sources([minimal(service_account={"key_file": str(tmp_path / "nope.json")})])
    with pytest.raises(ConfigurationError, match="cannot read the key file"):
        service_account_key(missing, {})
