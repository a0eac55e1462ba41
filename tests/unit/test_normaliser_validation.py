"""The normaliser's validation: per-record checks at ingest (RecordValidator) and cross-record checks
over an organiser's whole state (reconcile). Neither drops anything silently; findings carry the
offending value (for the admin's report) in ``value`` alone, never a name, a civic number or a birth date."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import date
from typing import Any
from uuid import UUID

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from skolsynk.contracts.source import SourceRecord
from skolsynk.domain.ids import entity_id
from skolsynk.domain.quality import Finding, FindingCode, Severity
from skolsynk.domain.reconcile import missing_marking_summary, reconcile
from skolsynk.domain.selection import StoredEntity, TenantState, project
from skolsynk.domain.ss12000 import (
    Activity,
    Duty,
    DutyRole,
    Email,
    EmailType,
    Entity,
    EntityKind,
    Group,
    GroupType,
    Membership,
    Organisation,
    Person,
    PersonStatus,
    SchoolType,
    SchoolUnit,
    SchoolUnitGroup,
    SecurityMarking,
)
from skolsynk.domain.subscription import MissingMarkingPolicy
from skolsynk_services.normaliser.validation import RecordValidator
from tests.unit.domain_factories import (
    CODE_A,
    CODE_B,
    LAST_TERM_END,
    SOURCE,
    TENANT,
    TODAY,
    activity,
    duty,
    eid,
    enrolment,
    entities,
    entity_by_key,
    group,
    person,
    person_record,
    profile,
    record,
    school_unit,
    state,
    stored,
    subscription,
)

pytestmark = pytest.mark.unit

RUN_ID = UUID("22222222-2222-4222-8222-222222222222")
PERSON, SCHOOL_UNIT, GROUP, DUTY, ACTIVITY = (
    EntityKind.PERSON,
    EntityKind.SCHOOL_UNIT,
    EntityKind.GROUP,
    EntityKind.DUTY,
    EntityKind.ACTIVITY,
)


@pytest.fixture
def validator() -> RecordValidator:
    return RecordValidator(TENANT, SOURCE, RUN_ID)


def codes(findings: Iterable[Finding]) -> list[FindingCode]:
    return [f.code for f in findings]


# --- ingest: valid records ------------------------------------------------------------------------

VALID_RECORDS: list[tuple[SourceRecord, type[Entity]]] = [
    (person_record(), Person),
    (record(EntityKind.ORGANISATION, "org-1", display_name="Kommunen", organisation_type="Stadsdel"), Organisation),
    (record(EntityKind.SCHOOL_UNIT_GROUP, "sug-1", display_name="Norr"), SchoolUnitGroup),
    (
        record(SCHOOL_UNIT, "su-a", display_name="Skolan", school_unit_code=CODE_A, school_types=["GR", "FSK"]),
        SchoolUnit,
    ),
    (record(DUTY, "d-1", person="p-1", school_unit="su-a", role="Lärare", start_date="2024-08-15"), Duty),
    (
        record(
            GROUP,
            "g-1",
            display_name="3A",
            group_type="Klass",
            school_unit="su-a",
            school_type="GR",
            memberships=[{"person": "p-1", "start_date": "2024-08-15"}],
        ),
        Group,
    ),
    (record(ACTIVITY, "a-1", display_name="Matte", school_unit="su-a", groups=["g-1"], teachers=["d-1"]), Activity),
]


@pytest.mark.parametrize(("rec", "model"), VALID_RECORDS, ids=lambda v: getattr(v, "__name__", ""))
def test_a_valid_record_passes_without_findings(validator: RecordValidator, rec: SourceRecord, model: type) -> None:
    entity, findings = validator.validate(rec)
    assert findings == []
    assert isinstance(entity, model)
    assert entity is not None
    assert entity.key == rec.key


def test_a_valid_person_is_normalised(validator: RecordValidator) -> None:
    rec = person_record(
        emails=[{"value": "Ingrid.Lindqvist@Skola.Kommun-A.se", "type": "Skola elev"}],
        enrolments=[{"school_unit": "su-a", "school_type": "fsk", "school_year": 0}],
        security_marking=False,
    )
    entity, findings = validator.validate(rec)
    assert findings == []
    assert isinstance(entity, Person)
    assert entity.emails == [Email(value="ingrid.lindqvist@skola.kommun-a.se", type=EmailType.SKOLA_ELEV)]
    assert entity.civic_no == "201501012384"
    assert entity.enrolments[0].school_type is SchoolType.FKLASS
    assert entity.security_marking is SecurityMarking.INGEN
    assert not entity.is_protected()


def test_the_record_key_wins_over_a_key_in_the_data(validator: RecordValidator) -> None:
    data = {**person_record().data, "key": "p-other"}
    entity, _ = validator.validate(SourceRecord(kind=PERSON, key="p-7", data=data))
    assert entity is not None
    assert entity.key == "p-7"
    assert entity.kind is PERSON


# --- ingest: values dropped with a warning --------------------------------------------------------


def test_invalid_email_is_dropped_and_the_person_kept(validator: RecordValidator) -> None:
    rec = person_record(
        emails=[
            {"value": "ingrid.lindqvist@@skola", "type": "Skola elev"},
            {"value": "ingrid@privat.se", "type": "Privat"},
            "not-even-an-object",
        ]
    )
    entity, findings = validator.validate(rec)
    assert isinstance(entity, Person)
    assert [e.value for e in entity.emails] == ["ingrid@privat.se"]
    assert codes(findings) == [FindingCode.EMAIL_INVALID, FindingCode.EMAIL_INVALID]
    first = findings[0]
    assert first.severity is Severity.WARNING
    assert first.field == "emails.0.value"
    assert first.value == "ingrid.lindqvist@@skola"  # what the admin looks for in the source
    assert first.other_entity_id is None
    assert first.origin == "ingest"
    assert (first.tenant_id, first.source_id, first.run_id) == (TENANT, SOURCE, RUN_ID)
    assert first.entity_kind is PERSON
    assert first.entity_id == entity_id(TENANT, SOURCE, PERSON, "p-1")
    assert first.source_key == "p-1"
    assert findings[1].field is not None
    assert findings[1].field.startswith("emails.2")


@pytest.mark.parametrize(
    ("bad_enrolment", "code", "field"),
    [
        (
            {"school_unit": "su-a", "school_type": "GR", "start_date": "2025-06-13", "end_date": "2024-08-15"},
            FindingCode.DATES_INVERTED,
            "enrolments.0",
        ),
        ({"school_unit": "su-a", "school_type": "GRUND"}, FindingCode.VALUE_UNKNOWN, "enrolments.0.school_type"),
        ({"school_unit": "su-a", "school_type": None}, FindingCode.VALUE_UNKNOWN, "enrolments.0.school_type"),
        (
            {"school_unit": "su-a", "school_type": "GR", "school_year": 12},
            FindingCode.VALUE_UNKNOWN,
            "enrolments.0.school_year",
        ),
    ],
)
def test_bad_enrolment_is_dropped_with_a_warning(
    validator: RecordValidator, bad_enrolment: dict[str, Any], code: FindingCode, field: str
) -> None:
    good = {"school_unit": "su-b", "school_type": "KOMVUX"}
    entity, findings = validator.validate(person_record(enrolments=[bad_enrolment, good]))
    assert isinstance(entity, Person)
    assert [(e.school_unit, e.school_type) for e in entity.enrolments] == [("su-b", SchoolType.VUX)]
    assert codes(findings) == [code]
    assert findings[0].severity is Severity.WARNING
    assert findings[0].field is not None
    assert findings[0].field.startswith(field)


def test_group_with_unknown_school_type_keeps_the_group(validator: RecordValidator) -> None:
    rec = record(GROUP, "g-1", display_name="3A", group_type="Klass", school_unit="su-a", school_type="XYZ")
    entity, findings = validator.validate(rec)
    assert isinstance(entity, Group)
    assert entity.school_type is None
    assert codes(findings) == [FindingCode.VALUE_UNKNOWN]
    assert findings[0].field == "school_type"
    assert findings[0].value == "XYZ"
    assert findings[0].severity is Severity.WARNING


def test_group_membership_with_inverted_dates_is_dropped(validator: RecordValidator) -> None:
    rec = record(
        GROUP,
        "g-1",
        display_name="3A",
        group_type="Klass",
        school_unit="su-a",
        memberships=[{"person": "p-1", "start_date": "2025-01-01", "end_date": "2024-01-01"}, {"person": "p-2"}],
    )
    entity, findings = validator.validate(rec)
    assert isinstance(entity, Group)
    assert [m.person for m in entity.memberships] == ["p-2"]
    assert codes(findings) == [FindingCode.DATES_INVERTED]
    assert findings[0].severity is Severity.WARNING
    assert findings[0].field is not None
    assert findings[0].field.startswith("memberships.0")
    assert findings[0].value == "2025-01-01 > 2024-01-01"


def test_school_unit_with_unknown_school_types_keeps_the_known_ones(validator: RecordValidator) -> None:
    rec = record(SCHOOL_UNIT, "su-a", display_name="S", school_unit_code=CODE_A, school_types=["GR", "XX", "suv"])
    entity, findings = validator.validate(rec)
    assert isinstance(entity, SchoolUnit)
    assert entity.school_types == [SchoolType.GR, SchoolType.SARVUX]
    assert codes(findings) == [FindingCode.VALUE_UNKNOWN]
    assert findings[0].field == "school_types"
    assert findings[0].value == "XX"


# --- ingest: records withheld with an error -------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "code"),
    [
        ({}, FindingCode.SCHOOL_UNIT_CODE_MISSING),
        ({"school_unit_code": ""}, FindingCode.SCHOOL_UNIT_CODE_MISSING),
        ({"school_unit_code": None}, FindingCode.SCHOOL_UNIT_CODE_MISSING),
        ({"school_unit_code": "1234567"}, FindingCode.SCHOOL_UNIT_CODE_MALFORMED),
        ({"school_unit_code": "1234567a"}, FindingCode.SCHOOL_UNIT_CODE_MALFORMED),
        ({"school_unit_code": "123456789"}, FindingCode.SCHOOL_UNIT_CODE_MALFORMED),
        ({"school_unit_code": 12345678}, FindingCode.SCHOOL_UNIT_CODE_MALFORMED),
    ],
)
def test_school_unit_without_a_proper_code_is_withheld(
    validator: RecordValidator, data: dict[str, Any], code: FindingCode
) -> None:
    entity, findings = validator.validate(record(SCHOOL_UNIT, "su-x", display_name="S", **data))
    assert entity is None
    assert codes(findings) == [code]
    assert findings[0].value == (
        str(data["school_unit_code"]) if code is FindingCode.SCHOOL_UNIT_CODE_MALFORMED else None
    )
    assert findings[0].severity is Severity.ERROR
    assert findings[0].entity_id == entity_id(TENANT, SOURCE, SCHOOL_UNIT, "su-x")


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"family_name": ...}, "family_name"),
        ({"given_name": ""}, "given_name"),
        ({"given_name": "x" * 101}, "given_name"),
        ({"civic_no": "1501012384"}, "civic_no"),  # 10 digits
        ({"birth_date": "2015-13-45"}, "birth_date"),
        ({"eppn": "ingrid@kommun-a.se"}, "eppn"),
        ({"security_marking": "Hemlig"}, "security_marking"),
        # A field the kind does not have ({"shoe_size": 38}) never gets here: the source contract refuses it
        # where the record is built (tests/unit/test_source_record_fields.py).
    ],
)
def test_person_that_does_not_fit_the_model_is_withheld(
    validator: RecordValidator, changes: dict[str, Any], field: str
) -> None:
    entity, findings = validator.validate(person_record(**changes))
    assert entity is None
    assert codes(findings) == [FindingCode.RECORD_INVALID]
    assert findings[0].severity is Severity.ERROR
    assert findings[0].field == field
    assert findings[0].detail


@pytest.mark.parametrize(
    ("changes", "marking"),
    [
        ({"security_marking": ...}, None),  # not given: unknown
        ({"security_marking": None}, None),
        ({"security_marking": False}, SecurityMarking.INGEN),
        ({"security_marking": "Ingen"}, SecurityMarking.INGEN),
        ({"security_marking": True}, SecurityMarking.SKYDDAD_FOLKBOKFORING),
    ],
)
def test_a_missing_security_marking_is_stored_as_unknown_without_a_finding_per_person(
    validator: RecordValidator, changes: dict[str, Any], marking: SecurityMarking | None
) -> None:
    entity, findings = validator.validate(person_record(**changes))
    assert isinstance(entity, Person)
    assert entity.security_marking is marking
    assert entity.model_dump(mode="json")["security_marking"] == (marking.value if marking else None)
    assert findings == []  # the organiser's summary counts them (origin summary), not one finding each


@pytest.mark.parametrize(
    ("changes", "status"),
    [
        ({}, PersonStatus.AKTIV),
        ({"person_status": None}, PersonStatus.AKTIV),  # null: not given, SS 12000's default
        ({"person_status": "Avliden"}, PersonStatus.AVLIDEN),
        ({"person_status": "utvandrad "}, PersonStatus.UTVANDRAD),
    ],
)
def test_a_known_person_status_is_kept(
    validator: RecordValidator, changes: dict[str, Any], status: PersonStatus
) -> None:
    entity, findings = validator.validate(person_record(**changes))
    assert isinstance(entity, Person)
    assert entity.person_status is status
    assert findings == []


@pytest.mark.parametrize("bad", ["Utflyttad", "Död", "", 3])
def test_an_unknown_person_status_is_a_finding_and_keeps_the_person_out(validator: RecordValidator, bad: Any) -> None:
    entity, findings = validator.validate(person_record(person_status=bad))
    assert isinstance(entity, Person), "stored (not withheld: a vendor that has them must get the deletion)"
    assert entity.person_status is None
    assert not entity.active
    assert codes(findings) == [FindingCode.PERSON_STATUS_UNKNOWN]
    assert findings[0].severity is Severity.WARNING
    assert findings[0].field == "person_status"
    selected = project(state(add=[entity]), subscription(), profile(), TODAY)
    active = entity.model_copy(update={"person_status": PersonStatus.AKTIV})
    assert eid("p-1") not in selected
    assert eid("p-1") in project(state(add=[active]), subscription(), profile(), TODAY)


@pytest.mark.parametrize(
    "rec",
    [
        record(
            GROUP,
            "g-1",
            display_name="3A",
            group_type="Klass",
            school_unit="su-a",
            start_date="2025-01-01",
            end_date="2024-01-01",
        ),
        record(
            DUTY, "d-1", person="p-1", school_unit="su-a", role="Lärare", start_date="2025-01-01", end_date="2024-01-01"
        ),
        record(
            ACTIVITY, "a-1", display_name="Matte", school_unit="su-a", start_date="2025-01-01", end_date="2024-01-01"
        ),
        record(
            SCHOOL_UNIT,
            "su-a",
            display_name="S",
            school_unit_code=CODE_A,
            start_date="2025-01-01",
            end_date="2024-01-01",
        ),
    ],
    ids=lambda r: r.kind.value,
)
def test_a_whole_record_with_inverted_dates_is_withheld(validator: RecordValidator, rec: SourceRecord) -> None:
    entity, findings = validator.validate(rec)
    assert entity is None
    assert codes(findings) == [FindingCode.DATES_INVERTED]
    assert findings[0].severity is Severity.ERROR  # more than the catalogue's warning: the record is withheld
    assert findings[0].detail == "start_date is after end_date"


def test_group_with_unknown_type_and_inverted_dates_reports_both(validator: RecordValidator) -> None:
    rec = record(
        GROUP,
        "g-1",
        display_name="3A",
        group_type="Klass",
        school_unit="su-a",
        school_type="XYZ",
        start_date="2025-01-01",
        end_date="2024-01-01",
    )
    entity, findings = validator.validate(rec)
    assert entity is None
    assert codes(findings) == [FindingCode.VALUE_UNKNOWN, FindingCode.DATES_INVERTED]


@pytest.mark.parametrize(
    ("kind", "data", "field"),
    [
        (DUTY, {"person": "p-1", "school_unit": "su-a", "role": "Lärarinna"}, "role"),
        (GROUP, {"display_name": "3A", "group_type": "Klassen", "school_unit": "su-a"}, "group_type"),
        (ACTIVITY, {"display_name": "Matte"}, "school_unit"),
        # An organisation of unknown type is kept, with a finding (test_domain_organisation_tree.py).
        (EntityKind.ORGANISATION, {"organisation_type": "Skola"}, "display_name"),
    ],
)
def test_other_records_that_do_not_fit_are_withheld(
    validator: RecordValidator, kind: EntityKind, data: dict[str, Any], field: str
) -> None:
    entity, findings = validator.validate(record(kind, "k-1", **data))
    assert entity is None
    assert [(f.code, f.field) for f in findings] == [(FindingCode.RECORD_INVALID, field)]


# --- ingest: personal data only as the offending value, never a sensitive one ----------------------

PERSONAL = ["Ingrid", "Lindqvist", "ingrid.lindqvist", "201501012384", "20150101-2384", "1501012384", "2015-01-01"]

LEAKY_RECORDS = [
    person_record(emails=[{"value": "ingrid.lindqvist@@skola", "type": "Skola elev"}]),
    person_record(emails=[{"value": "ingrid.lindqvist@skola.se", "type": "Hemma"}]),
    person_record(emails=["ingrid.lindqvist@skola.se"]),
    person_record(emails="ingrid.lindqvist@skola.se"),
    person_record(civic_no="1501012384"),
    person_record(civic_no="20150101-238"),
    person_record(birth_date="2015-01-01T25:00"),
    person_record(birth_date="Ingrid"),
    person_record(eppn="ingrid.lindqvist@kommun-a.se"),
    person_record(eppn=[{"v": "ingrid.lindqvist@kommun-a.se"}]),
    person_record(family_name="Lindqvist" * 20),
    person_record(given_name=["Ingrid"]),
    person_record(middle_name={"Ingrid": "Lindqvist"}),
    person_record(external_identifiers=[{"value": "ingrid.lindqvist", "context": ""}]),
    person_record(security_marking="Ingrid"),
    person_record(enrolments=[{"school_unit": "su-a", "school_type": "Ingrid", "school_year": "Lindqvist"}]),
    person_record(enrolments="Ingrid Lindqvist"),
]


SENSITIVE = ["201501012384", "20150101-2384", "1501012384", "20150101-238", "2015-01-01", "Ingrid"]


@pytest.mark.parametrize("rec", LEAKY_RECORDS)
def test_ingest_findings_carry_personal_values_only_as_the_offending_value(
    validator: RecordValidator, rec: SourceRecord
) -> None:
    _, findings = validator.validate(rec)
    assert findings, "the record was meant to be faulty"
    text = "".join(f.model_dump_json(exclude={"value"}) for f in findings)
    for value in PERSONAL:
        assert value.lower() not in text.lower()


@pytest.mark.parametrize(
    "rec",
    [
        person_record(civic_no="1501012384"),
        person_record(civic_no="20150101-238"),
        person_record(birth_date="2015-01-01T25:00"),
        person_record(birth_date="Ingrid"),
    ],
)
def test_the_value_of_a_sensitive_field_is_never_kept(validator: RecordValidator, rec: SourceRecord) -> None:
    _, findings = validator.validate(rec)
    assert codes(findings) == [FindingCode.RECORD_INVALID]
    assert findings[0].value is None
    text = "".join(f.model_dump_json() for f in findings)
    for value in SENSITIVE:
        assert value.lower() not in text.lower()


@settings(max_examples=60)
@given(
    secret=st.from_regex(r"[A-Za-z][A-Za-z0-9. -]{5,20}", fullmatch=True),
    where=st.sampled_from(["email", "civic_no", "birth_date", "school_type", "eppn"]),
)
def test_ingest_findings_carry_random_personal_values_only_as_the_offending_value(secret: str, where: str) -> None:
    secret = "Qz" + secret.strip()
    choices: dict[str, dict[str, Any]] = {
        "email": {"emails": [{"value": f"{secret}@", "type": "Privat"}]},
        "civic_no": {"civic_no": secret},
        "birth_date": {"birth_date": secret},
        "school_type": {"enrolments": [{"school_unit": "su-a", "school_type": secret}]},
        "eppn": {"eppn": secret},
    }
    _, findings = RecordValidator(TENANT, SOURCE, RUN_ID).validate(person_record(**choices[where]))
    assert findings
    assert secret.lower() not in "".join(f.model_dump_json(exclude={"value"}) for f in findings).lower()
    if where in ("civic_no", "birth_date"):  # sensitive: not even as the offending value
        assert secret.lower() not in "".join(f.model_dump_json() for f in findings).lower()


# --- reconcile ------------------------------------------------------------------------------------


def _reconcile(st8: TenantState | None = None, today: date = TODAY) -> tuple[TenantState, list[Finding]]:
    return reconcile(TENANT, (st8 or state()).entities, today)


def found(findings: Iterable[Finding], code: FindingCode) -> list[str | None]:
    return [f.source_key for f in findings if f.code is code]


def cleaned(st8: TenantState, key: str, kind: EntityKind) -> Entity:
    return next(s.entity for s in st8.entities if s.entity.key == key and s.kind is kind)


def test_the_fixture_reconciles_with_only_relation_warnings() -> None:
    before = state()
    after, findings = _reconcile(before)
    assert after.withheld == set()
    assert sorted((f.code, f.source_key) for f in findings) == [
        (FindingCode.PERSON_NO_ACTIVE_RELATION, "stu-cancelled"),
        (FindingCode.PERSON_NO_ACTIVE_RELATION, "stu-ended"),
        (FindingCode.PERSON_NO_ACTIVE_RELATION, "stu-future"),
    ]
    assert sorted(s.id for s in after.entities) == sorted(s.id for s in before.entities)
    assert {s.id: s.entity for s in after.entities} == {s.id: s.entity for s in before.entities}
    for finding in findings:
        assert finding.origin == "reconcile"
        assert finding.tenant_id == TENANT
        assert finding.source_id == SOURCE
        assert finding.entity_id == eid(finding.source_key or "")
        assert finding.severity is Severity.WARNING


def test_duplicate_school_unit_code_withholds_the_second() -> None:
    dup = school_unit("su-z", CODE_A)
    after, findings = _reconcile(state(add=[dup]))
    assert after.withheld == {eid("su-z", SCHOOL_UNIT)}
    [finding] = [f for f in findings if f.code is FindingCode.SCHOOL_UNIT_CODE_DUPLICATE]
    assert (finding.source_key, finding.school_unit_code, finding.severity) == ("su-z", CODE_A, Severity.ERROR)
    # the code, and the unit that keeps it: what the admin needs to decide which record to correct
    assert (finding.value, finding.other_entity_id) == (CODE_A, eid("su-a", SCHOOL_UNIT))
    assert eid("su-z", SCHOOL_UNIT) not in {s.id for s in after.entities}
    assert eid("su-a", SCHOOL_UNIT) in {s.id for s in after.entities}


def test_duplicate_school_unit_code_across_sources_is_still_a_duplicate() -> None:
    other = stored(school_unit("su-a", CODE_A), source="ist-import")
    after, findings = reconcile(TENANT, [*state().entities, other], TODAY)
    assert after.withheld == {other.id}
    assert found(findings, FindingCode.SCHOOL_UNIT_CODE_DUPLICATE) == ["su-a"]


def test_references_to_a_withheld_duplicate_unit_are_not_reported_as_unknown() -> None:
    # su-0 sorts first, so the established su-a is the one withheld; its dependants exist all the same
    after, findings = _reconcile(state(add=[school_unit("su-0", CODE_A)]))
    assert eid("su-a", SCHOOL_UNIT) in after.withheld
    unknown = {
        FindingCode.ENROLMENT_UNKNOWN_SCHOOL_UNIT,
        FindingCode.DUTY_UNKNOWN_SCHOOL_UNIT,
        FindingCode.GROUP_UNKNOWN_SCHOOL_UNIT,
        FindingCode.ACTIVITY_UNKNOWN_SCHOOL_UNIT,
    }
    assert [(f.code, f.source_key) for f in findings if f.code in unknown] == []
    # and what depends on the withheld unit is withheld too, so vendors keep what they had instead
    # of losing those students because of someone else's record
    assert eid("stu-a1") in after.withheld
    assert eid("stu-a1") not in {s.id for s in after.entities}


def test_duplicate_eppn_withholds_the_second_person() -> None:
    dup = person("stu-z", enrolment("su-b", year=9), eppn=["STU-A1@kommun-a.se"])
    after, findings = _reconcile(state(add=[dup]))
    assert after.withheld == {eid("stu-z")}
    [finding] = [f for f in findings if f.code is FindingCode.EPPN_DUPLICATE]
    assert (finding.source_key, finding.field, finding.severity) == ("stu-z", "eppn", Severity.ERROR)
    assert finding.school_unit_code == CODE_B
    # the login as this person has it, and the person who keeps it (matched without regard to case)
    assert (finding.value, finding.other_entity_id) == ("STU-A1@kommun-a.se", eid("stu-a1"))
    assert eid("stu-z") not in {s.id for s in after.entities}
    assert not [f for f in findings if f.source_key == "stu-z" and f.code is not FindingCode.EPPN_DUPLICATE]


def test_duplicate_email_is_dropped_from_the_second_person() -> None:
    stu_a1 = entity_by_key("stu-a1")
    assert isinstance(stu_a1, Person)
    own = Email(value="stu-z@skola.kommun-a.se", type=EmailType.SKOLA_ELEV)
    dup = person("stu-z", enrolment("su-a"), emails=[*stu_a1.emails, own])
    after, findings = _reconcile(state(add=[dup]))
    assert after.withheld == set()
    [finding] = [f for f in findings if f.code is FindingCode.EMAIL_DUPLICATE]
    assert (finding.source_key, finding.field, finding.severity) == ("stu-z", "emails", Severity.WARNING)
    assert finding.school_unit_code == CODE_A
    assert (finding.value, finding.other_entity_id) == (stu_a1.emails[0].value, eid("stu-a1"))
    kept = cleaned(after, "stu-z", PERSON)
    assert isinstance(kept, Person)
    assert kept.emails == [own]
    assert cleaned(after, "stu-a1", PERSON) == stu_a1


def test_missing_email_and_eppn_are_warnings() -> None:
    bare = person("stu-z", enrolment("su-b", year=9), emails=[], eppn=[])
    after, findings = _reconcile(state(add=[bare]))
    assert after.withheld == set()
    mine = sorted((f.code, f.field, f.severity, f.school_unit_code) for f in findings if f.source_key == "stu-z")
    assert mine == [
        (FindingCode.EMAIL_MISSING, "emails", Severity.WARNING, CODE_B),
        (FindingCode.EPPN_MISSING, "eppn", Severity.WARNING, CODE_B),
    ]


def test_enrolment_at_an_unknown_unit_is_dropped() -> None:
    wandering = person("stu-z", enrolment("su-nowhere"), enrolment("su-b", year=9))
    after, findings = _reconcile(state(add=[wandering]))
    assert found(findings, FindingCode.ENROLMENT_UNKNOWN_SCHOOL_UNIT) == ["stu-z"]
    [unknown] = [f for f in findings if f.code is FindingCode.ENROLMENT_UNKNOWN_SCHOOL_UNIT]
    assert unknown.value == "su-nowhere"  # the reference the source has to correct
    kept = cleaned(after, "stu-z", PERSON)
    assert isinstance(kept, Person)
    assert [e.school_unit for e in kept.enrolments] == ["su-b"]
    assert FindingCode.PERSON_NO_ACTIVE_RELATION not in codes(f for f in findings if f.source_key == "stu-z")


def test_person_whose_only_enrolment_is_unknown_has_no_active_relation() -> None:
    lost = person("stu-z", enrolment("su-nowhere"))
    after, findings = _reconcile(state(add=[lost]))
    assert sorted(codes(f for f in findings if f.source_key == "stu-z")) == sorted(
        [FindingCode.ENROLMENT_UNKNOWN_SCHOOL_UNIT, FindingCode.PERSON_NO_ACTIVE_RELATION]
    )
    assert eid("stu-z") not in after.withheld


@pytest.mark.parametrize(
    ("bad_duty", "code", "unit_code"),
    [
        (duty("d-z", "tea-a", "su-nowhere"), FindingCode.DUTY_UNKNOWN_SCHOOL_UNIT, None),
        (duty("d-z", "nobody", "su-a"), FindingCode.DUTY_UNKNOWN_PERSON, CODE_A),
        (duty("d-z", "nobody", "su-nowhere"), FindingCode.DUTY_UNKNOWN_SCHOOL_UNIT, None),
    ],
)
def test_duty_with_unknown_unit_or_person_is_withheld(bad_duty: Duty, code: FindingCode, unit_code: str | None) -> None:
    after, findings = _reconcile(state(add=[bad_duty]))
    assert after.withheld == {eid("d-z", DUTY)}
    [finding] = [f for f in findings if f.source_key == "d-z"]
    assert (finding.code, finding.severity, finding.school_unit_code) == (code, Severity.ERROR, unit_code)
    assert finding.value == (bad_duty.person if code is FindingCode.DUTY_UNKNOWN_PERSON else bad_duty.school_unit)
    assert eid("d-z", DUTY) not in {s.id for s in after.entities}


def test_group_with_unknown_unit_is_withheld() -> None:
    stray = group("g-z", "su-nowhere", GroupType.KLASS, "stu-a1")
    after, findings = _reconcile(state(add=[stray]))
    assert after.withheld == {eid("g-z", GROUP)}
    assert found(findings, FindingCode.GROUP_UNKNOWN_SCHOOL_UNIT) == ["g-z"]


def test_unknown_group_members_are_dropped() -> None:
    klass = group("klass-3a", "su-a", GroupType.KLASS, "stu-a1", "ghost-1", "ghost-2", "prot-a")
    after, findings = _reconcile(state(replace=[klass]))
    [finding] = [f for f in findings if f.code is FindingCode.GROUP_UNKNOWN_MEMBER]
    assert (finding.source_key, finding.school_unit_code, finding.field) == ("klass-3a", CODE_A, "memberships")
    assert finding.detail == "2 membership(s) dropped"
    assert "ghost" not in finding.model_dump_json(exclude={"value"})
    assert finding.value == "ghost-1, ghost-2"  # the unknown persons' keys, for the admin
    kept = cleaned(after, "klass-3a", GROUP)
    assert isinstance(kept, Group)
    assert [m.person for m in kept.memberships] == ["stu-a1", "prot-a"]
    assert after.withheld == set()


def test_activity_unknown_references_are_dropped_and_unknown_unit_withheld() -> None:
    refs = activity("act-ma-3a", "su-a", ["ma-3a", "g-gone"], ["d-tea-a", "d-gone", "d-orphan"])
    orphan_duty = duty("d-orphan", "nobody", "su-a")  # withheld: its reference goes too
    stray = activity("act-z", "su-nowhere", ["ma-3a"], [])
    after, findings = _reconcile(state(replace=[refs], add=[orphan_duty, stray]))
    assert after.withheld == {eid("d-orphan", DUTY), eid("act-z", ACTIVITY)}
    assert found(findings, FindingCode.ACTIVITY_UNKNOWN_REFERENCE) == ["act-ma-3a"]
    assert found(findings, FindingCode.ACTIVITY_UNKNOWN_SCHOOL_UNIT) == ["act-z"]
    by_key = {f.source_key: f.value for f in findings}
    assert (by_key["act-ma-3a"], by_key["act-z"]) == ("g-gone, d-gone, d-orphan", "su-nowhere")
    kept = cleaned(after, "act-ma-3a", ACTIVITY)
    assert isinstance(kept, Activity)
    assert (kept.groups, kept.teachers) == (["ma-3a"], ["d-tea-a"])


def test_activity_referring_to_a_withheld_group_drops_the_reference() -> None:
    stray = group("g-z", "su-nowhere", GroupType.UNDERVISNING)
    refs = activity("act-ma-3a", "su-a", ["ma-3a", "g-z"], ["d-tea-a"])
    after, findings = _reconcile(state(replace=[refs], add=[stray]))
    kept = cleaned(after, "act-ma-3a", ACTIVITY)
    assert isinstance(kept, Activity)
    assert kept.groups == ["ma-3a"]
    assert found(findings, FindingCode.ACTIVITY_UNKNOWN_REFERENCE) == ["act-ma-3a"]


@pytest.mark.parametrize(
    ("extra_duty", "conflict"),
    [
        (duty("d-z", "stu-b2", "su-b", DutyRole.LARARASSISTENT), True),
        (
            Duty(key="d-z", person="stu-b2", school_unit="su-b", role=DutyRole.LARARASSISTENT, end_date=LAST_TERM_END),
            False,
        ),
        (duty("d-z", "stu-b2", "su-nowhere"), False),  # withheld duty: no employment
    ],
)
def test_person_enrolled_and_employed_today_has_conflicting_roles(extra_duty: Duty, conflict: bool) -> None:
    _, findings = _reconcile(state(add=[extra_duty]))
    conflicts = [f for f in findings if f.code is FindingCode.PERSON_CONFLICTING_ROLES]
    assert [f.source_key for f in conflicts] == (["stu-b2"] if conflict else [])
    if conflict:
        assert conflicts[0].school_unit_code == CODE_B
        assert conflicts[0].severity is Severity.WARNING


@pytest.mark.parametrize(
    ("today", "without_relation", "with_relation"),
    [
        (TODAY, {"stu-cancelled", "stu-ended", "stu-future"}, {"stu-a1", "stu-old", "tea-a", "prot-t"}),
        (date(2025, 1, 8), {"stu-cancelled", "stu-ended"}, {"stu-future", "stu-a1"}),  # stu-future starts
        (LAST_TERM_END, {"stu-cancelled", "stu-future", "stu-a1", "tea-a"}, {"stu-ended", "stu-old"}),  # last day
    ],
)
def test_persons_without_an_active_relation(today: date, without_relation: set[str], with_relation: set[str]) -> None:
    _, findings = _reconcile(today=today)
    keys = set(found(findings, FindingCode.PERSON_NO_ACTIVE_RELATION))
    assert without_relation <= keys
    assert not with_relation & keys
    if today == TODAY:
        assert keys == without_relation


def test_withheld_entities_are_reported_and_left_out_of_the_cleaned_state() -> None:
    broken: list[Entity] = [
        school_unit("su-z", CODE_B),
        person("stu-z", enrolment("su-a"), eppn=["stu-a2@kommun-a.se"]),
        duty("d-z", "nobody", "su-a"),
        group("g-z", "su-nowhere", GroupType.KLASS),
        activity("act-z", "su-nowhere", [], []),
    ]
    after, findings = _reconcile(state(add=broken))
    expected = {eid(e.key, e.kind) for e in broken}
    assert after.withheld == expected
    assert not expected & {s.id for s in after.entities}
    assert len(after.entities) == len(entities())
    assert after.tenant_id == TENANT
    errors = {f.entity_id for f in findings if f.severity is Severity.ERROR}
    assert errors == expected
    # the cleaned state projects as the fixture does
    assert project(after, subscription(), profile(), TODAY) == project(state(), subscription(), profile(), TODAY)


def test_reconcile_is_independent_of_input_order() -> None:
    broken: list[Entity] = [
        school_unit("su-z", CODE_A),
        person("stu-z", enrolment("su-a"), eppn=["stu-a1@kommun-a.se"]),
    ]
    forwards = reconcile(TENANT, state(add=broken).entities, TODAY)
    backwards = reconcile(TENANT, list(reversed(state(add=broken).entities)), TODAY)
    assert forwards[0].withheld == backwards[0].withheld
    assert sorted(f.model_dump_json() for f in forwards[1]) == sorted(f.model_dump_json() for f in backwards[1])


def test_reconcile_findings_carry_logins_and_addresses_only_as_the_offending_value() -> None:
    broken: list[Entity] = [
        person("stu-z", enrolment("su-nowhere"), eppn=["stu-a1@kommun-a.se"]),
        person("stu-y", emails=[Email(value="stu-a2@skola.kommun-a.se")], eppn=[]),
        person("stu-x", emails=[], civic_no="201001012380"),
        group("g-z", "su-a", GroupType.KLASS, "ghost"),
    ]
    _, findings = _reconcile(state(add=broken))
    assert findings
    everything = "".join(f.model_dump_json() for f in findings)
    outside_value = "".join(f.model_dump_json(exclude={"value"}) for f in findings)
    assert "stu-a1@kommun-a.se" in everything  # the duplicated login, for the admin's report
    for e in [*entities(), *broken]:
        if isinstance(e, Person):
            assert e.given_name not in everything  # names are joined when the report is read
            assert e.family_name not in everything
            for address in [*e.eppn, *(m.value for m in e.emails)]:
                assert address not in outside_value
            if e.civic_no:
                assert e.civic_no not in everything


def test_reconcile_of_nothing() -> None:
    after, findings = reconcile(TENANT, [], TODAY)
    assert (after.entities, after.withheld, findings) == ([], set(), [])


def test_reconcile_keeps_stored_ids_and_sources() -> None:
    other = StoredEntity(eid("stu-q", source="ist-import"), "ist-import", person("stu-q", enrolment("su-q")))
    unit = stored(school_unit("su-q", "44444444"), source="ist-import")
    after, findings = reconcile(TENANT, [*state().entities, other, unit], TODAY)
    by_id = {s.id: s for s in after.entities}
    assert by_id[other.id].source_id == "ist-import"
    assert not [f for f in findings if f.source_key == "stu-q"]  # its enrolment's unit is in its own source
    # the same key in another source does not count
    cross = StoredEntity(eid("stu-r", source="ist-import"), "ist-import", person("stu-r", enrolment("su-a")))
    _, cross_findings = reconcile(TENANT, [*state().entities, cross], TODAY)
    assert found(cross_findings, FindingCode.ENROLMENT_UNKNOWN_SCHOOL_UNIT) == ["stu-r"]


def test_group_membership_of_a_known_person_is_kept_even_when_inactive() -> None:
    klass = group("klass-3a", "su-a", GroupType.KLASS, Membership(person="stu-a2", end_date=LAST_TERM_END))
    after, findings = _reconcile(state(replace=[klass]))
    assert FindingCode.GROUP_UNKNOWN_MEMBER not in codes(findings)
    kept = cleaned(after, "klass-3a", GROUP)
    assert isinstance(kept, Group)
    assert len(kept.memberships) == 1


def test_entities_are_placed_in_their_school_units_for_the_findings_report():
    from skolsynk.domain.reconcile import school_unit_codes_by_entity
    from skolsynk.domain.selection import StoredEntity, TenantState
    from skolsynk.domain.ss12000 import Duty, Person, SchoolUnit

    def stored(entity: object) -> StoredEntity:
        return StoredEntity(uuid.uuid4(), "src", entity)  # type: ignore[arg-type]

    unit = stored(SchoolUnit(key="u1", display_name="Skolan", school_unit_code="12345678"))
    student = stored(
        Person.model_validate(
            {"key": "p1", "given_name": "A", "family_name": "B",
             "enrolments": [{"school_unit": "u1", "school_type": "GR", "school_year": 3, "start_date": "2026-08-18"}]}
        )
    )  # fmt: skip
    teacher = stored(Person(key="t1", given_name="C", family_name="D"))
    duty = stored(Duty(key="d1", person="t1", school_unit="u1", role="Lärare", start_date=date(2026, 8, 1)))
    nowhere = stored(Person(key="x1", given_name="E", family_name="F"))
    codes = school_unit_codes_by_entity(TenantState("t", [unit, student, teacher, duty, nowhere]))
    assert codes == {str(e.id): "12345678" for e in (unit, student, teacher, duty)}


# --- the summary of persons without a securityMarking ---------------------------------------------


@pytest.mark.parametrize("setting", list(MissingMarkingPolicy))
def test_persons_without_a_marking_are_summarised_per_source(setting: MissingMarkingPolicy) -> None:
    findings = missing_marking_summary(TENANT, {SOURCE: (412, 1830), "google": (0, 90), "ss12000": (1, 1)}, setting)
    assert [(f.source_id, f.code) for f in findings] == [
        (SOURCE, FindingCode.SECURITY_MARKING_MISSING),
        ("ss12000", FindingCode.SECURITY_MARKING_MISSING),
    ]
    first = findings[0]
    assert first.origin == "summary"
    assert first.severity is Severity.WARNING
    assert (first.entity_id, first.source_key, first.school_unit_code) == (None, None, None)
    assert first.detail.startswith("412 of 1830 persons have no securityMarking")
    assert ("as protected" in first.detail) is (setting is MissingMarkingPolicy.PROTECTED)


def test_reconcile_carries_the_organisers_setting_to_the_selection() -> None:
    unmarked = person("p-x", enrolment("su-a"), security_marking=None)
    for setting in MissingMarkingPolicy:
        st8, _ = reconcile(TENANT, [stored(e) for e in [*entities(), unmarked]], TODAY, missing_marking=setting)
        assert st8.missing_marking is setting
        selected = eid("p-x") in project(st8, subscription(), profile(), TODAY)
        assert selected is (setting is MissingMarkingPolicy.NOT_PROTECTED)
