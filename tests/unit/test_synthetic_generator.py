"""The synthetic organiser generator (``skolsynk_testkit.synthetic``): deterministic, the sizes it promises, valid
Swedish identifiers, defects at their rates (each one producing its finding in the normaliser's own
validation), the organisation tree (Skolor above school units, duties at a Skola reaching vendors at the
units beneath), persons without a securityMarking and not active (each with its effect on the selection),
mentors and syllabuses (and what a vendor that takes them gets), change sets, splitting one organiser
between sources, and feeding the source fakes."""

from __future__ import annotations

import re
import uuid
from collections import Counter, defaultdict
from datetime import date

import pytest

from skolsynk.contracts.source import SourceRecord
from skolsynk.domain.ids import entity_id
from skolsynk.domain.reconcile import missing_marking_summary, reconcile
from skolsynk.domain.selection import StoredEntity, TenantState, project
from skolsynk.domain.ss12000 import EMAIL, ENTITY_MODELS, TEACHING_ROLES, DutyRole, EntityKind, Person
from skolsynk.domain.subscription import (
    OPTIONAL_FIELDS,
    SENSITIVE_FIELDS,
    MissingMarkingPolicy,
    VendorProfile,
    VendorSubscription,
)
from skolsynk_services.normaliser.validation import RecordValidator
from skolsynk_testkit.fakes.graph_education import FakeGraphEducation
from skolsynk_testkit.fakes.ss12000_api import FakeSs12000Api, is_mailbox
from skolsynk_testkit.synthetic import (
    DEFECTS,
    SIZES,
    SKOLA_ROLES,
    Manifest,
    SizeSpec,
    change_set,
    generate,
    luhn_digit,
    split_school_units,
    stream,
)

pytestmark = pytest.mark.unit

DAY = date(2026, 11, 26)
TENANT, SOURCE = "kommun", "source"


@pytest.fixture(scope="module")
def small() -> list[SourceRecord]:
    return generate("S", seed=7)


def stored_of(records: list[SourceRecord]) -> tuple[list[StoredEntity], Counter[str]]:
    """``records`` as the normaliser stores them, and what its ingest validation reports."""
    validator = RecordValidator(TENANT, SOURCE, uuid.uuid4())
    codes: Counter[str] = Counter()
    stored = []
    for record in records:
        entity, found = validator.validate(record)
        codes.update(f.code.value for f in found)
        if entity is not None:
            stored.append(StoredEntity(entity_id(TENANT, SOURCE, record.kind, record.key), SOURCE, entity))
    return stored, codes


def findings_of(records: list[SourceRecord]) -> Counter[str]:
    """What the normaliser reports for ``records``: ingest validation, then reconcile."""
    stored, codes = stored_of(records)
    _, found = reconcile(TENANT, stored, DAY)
    codes.update(f.code.value for f in found)
    return codes


def state_of(
    records: list[SourceRecord], missing_marking: MissingMarkingPolicy = MissingMarkingPolicy.PROTECTED
) -> TenantState:
    stored, _ = stored_of(records)
    state, _ = reconcile(TENANT, stored, DAY, missing_marking=missing_marking)
    return state


def everything(
    records: list[SourceRecord], state: TenantState, profile: VendorProfile | None = None
) -> dict[uuid.UUID, dict[str, object]]:
    """What a vendor subscribing to every school unit and role gets: resource by id."""
    codes = frozenset(str(r.data["school_unit_code"]) for r in records if r.kind is EntityKind.SCHOOL_UNIT)
    subscription = VendorSubscription(tenant_id=TENANT, vendor_id="all", school_unit_codes=codes)
    projected = project(state, subscription, profile or VendorProfile(vendor_id="all"), DAY)
    return {k: v.resource for k, v in projected.items()}


def person_id(key: str) -> uuid.UUID:
    return entity_id(TENANT, SOURCE, EntityKind.PERSON, key)


def test_the_same_seed_gives_the_same_organiser_and_another_seed_another(small: list[SourceRecord]) -> None:
    assert generate("S", seed=7) == small
    other = generate("S", seed=8)
    assert {r.key for r in other}.isdisjoint({r.key for r in small})


@pytest.mark.parametrize("size", ["S", "M", pytest.param("L", marks=pytest.mark.slow)])
def test_sizes_within_five_percent(size: str) -> None:
    spec = SIZES[size]
    manifest = Manifest()
    counts: Counter[EntityKind] = Counter()
    memberships = 0
    for record in stream(size, seed=1, manifest=manifest):
        counts[record.kind] += 1
        if record.kind is EntityKind.GROUP:
            memberships += len(record.data["memberships"])
    assert counts[EntityKind.PERSON] == pytest.approx(spec.persons, rel=0.05)
    assert counts[EntityKind.SCHOOL_UNIT] == spec.school_units
    assert counts[EntityKind.GROUP] == pytest.approx(spec.groups, rel=0.05)
    assert memberships == pytest.approx(spec.memberships, rel=0.05)
    assert manifest.memberships == memberships
    assert manifest.persons == counts[EntityKind.PERSON]
    assert manifest.staff == pytest.approx(spec.persons * spec.staff_share, rel=0.05)
    assert counts[EntityKind.ACTIVITY] == counts[EntityKind.GROUP]  # one activity per class or teaching group
    assert counts[EntityKind.DUTY] > 0.9 * manifest.staff


def test_a_stream_is_lazy() -> None:
    first = next(stream("L", seed=1))  # generating L would take seconds; the first record does not
    assert first.kind is EntityKind.ORGANISATION


def test_civic_numbers_have_valid_check_digits_and_dates_and_are_unique(small: list[SourceRecord]) -> None:
    civic = [str(r.data["civic_no"]) for r in small if r.kind is EntityKind.PERSON]
    assert len(set(civic)) == len(civic)
    for number in civic:
        assert re.fullmatch(r"(19|20)\d{10}", number)
        assert int(number[-1]) == luhn_digit(number[2:11])
        date(int(number[:4]), int(number[4:6]), int(number[6:8]))  # a real day
    organisation = next(r for r in small if r.kind is EntityKind.ORGANISATION)
    digits = str(organisation.data["organisation_number"]).replace("-", "")
    assert int(digits[-1]) == luhn_digit(digits[:9])


def test_school_units_codes_classes_teaching_groups_and_staff_roles(small: list[SourceRecord]) -> None:
    codes = [str(r.data["school_unit_code"]) for r in small if r.kind is EntityKind.SCHOOL_UNIT]
    assert all(re.fullmatch(r"[0-9]{8}", c) for c in codes)
    assert len(set(codes)) == len(codes)
    types = {t for r in small if r.kind is EntityKind.SCHOOL_UNIT for t in r.data["school_types"]}
    assert {"GR", "GY"} <= types
    group_types = Counter(r.data["group_type"] for r in small if r.kind is EntityKind.GROUP)
    assert group_types["Klass"] > 0
    assert group_types["Undervisning"] > 0
    roles = Counter(r.data["role"] for r in small if r.kind is EntityKind.DUTY)
    skolor = sum(1 for r in small if r.kind is EntityKind.ORGANISATION and r.data["organisation_type"] == "Skola")
    assert roles["Rektor"] == len(codes) - skolor  # one for the two school units of a Skola
    assert roles["Lärare"] > roles["Rektor"]
    assert {"Skoladministratör", "Kurator", "Förstelärare"} <= set(roles)
    mentors = [r for r in small if r.kind is EntityKind.ACTIVITY and r.data["display_name"].startswith("Mentorstid")]
    assert len(mentors) == group_types["Klass"]
    assert all(m.data["teachers"] for m in mentors)
    years = {e["school_year"] for r in small if r.kind is EntityKind.PERSON for e in r.data["enrolments"]}
    assert set(range(10)) <= years  # förskoleklass to year 9 (and GY 1-3)


def test_every_record_fits_the_model_except_the_planted_defects(small: list[SourceRecord]) -> None:
    findings = findings_of(small)
    assert "record.invalid" not in findings
    assert "school_unit_code.malformed" not in findings
    names = {r.data.get("given_name") for r in small if r.kind is EntityKind.PERSON}
    assert "Åsa" in names or "Märta" in names or "Björn" in names or "Göran" in names  # Swedish letters
    for record in small[:50]:
        ENTITY_MODELS[record.kind].model_validate({**record.data, "key": record.key, "kind": record.kind})


def test_each_defect_produces_its_finding_at_roughly_its_rate() -> None:
    spec = SizeSpec.for_persons(4_000)
    manifest = Manifest()
    records = list(stream(spec, seed=3, manifest=manifest))
    persons = manifest.persons
    rates = {
        "email.invalid": spec.invalid_email_rate,
        "email.duplicate": spec.duplicate_email_rate,
        "eppn.duplicate": spec.duplicate_eppn_rate,
        "enrolment.unknown_school_unit": spec.unknown_unit_rate * manifest.students / persons,
        "person.no_active_relation": spec.no_placement_rate,
    }
    assert set(rates) == set(DEFECTS)
    for defect, rate in rates.items():
        planted = manifest.defects[defect]
        assert planted == pytest.approx(rate * persons, rel=0.5, abs=4), defect
    findings = findings_of(records)
    for defect in DEFECTS:
        # a defect can hide another (a withheld duplicate login is not checked for its e-mail address)
        assert findings[defect] == pytest.approx(manifest.defects[defect], rel=0.1, abs=2), defect
    assert findings["email.missing"] >= manifest.defects["email.invalid"]  # the bad address was the only one


def test_a_change_set_moves_removes_and_adds_students(small: list[SourceRecord]) -> None:
    changes = change_set(small, seed=2, moves=0.01, leavers=0.01, joiners=0.01, on=DAY)
    assert changes == change_set(small, seed=2, moves=0.01, leavers=0.01, joiners=0.01, on=DAY)
    assert len(changes.moved) == pytest.approx(18, abs=3)
    assert len(changes.left) == pytest.approx(18, abs=1)
    assert len(changes.joined) == pytest.approx(18, abs=1)
    assert not (changes.moved & changes.left)
    before = {r.key: r for r in small}
    after = {r.key: r for r in changes.records}
    assert changes.left.isdisjoint(after)
    assert changes.joined.isdisjoint(before)
    assert {d.key for d in changes.deleted} == changes.left
    members = {m["person"] for r in changes.records if r.kind is EntityKind.GROUP for m in r.data["memberships"]}
    assert changes.left.isdisjoint(members)
    assert changes.joined <= members
    class_units = {
        m["person"]: r.data["school_unit"]
        for r in changes.records
        if r.kind is EntityKind.GROUP and r.data["group_type"] == "Klass"
        for m in r.data["memberships"]
    }
    for key in changes.moved:
        old, new = before[key].data["enrolments"][0], after[key].data["enrolments"][0]
        assert new["school_unit"] != old["school_unit"]
        assert new["school_year"] == old["school_year"]
        assert new["start_date"] == DAY.isoformat()
        assert class_units[key] == new["school_unit"]
    changed = {r.key for r in changes.changed}
    assert changed == {k for k, r in after.items() if before.get(k) != r}
    findings = findings_of(changes.records)
    assert findings["group.unknown_member"] == 0


def test_split_between_sources_keeps_every_reference_inside_its_part(small: list[SourceRecord]) -> None:
    parts = split_school_units(small, 2)
    units = [{r.key for r in part if r.kind is EntityKind.SCHOOL_UNIT} for part in parts]
    assert all(units)
    assert units[0].isdisjoint(units[1])
    persons = [{r.key for r in part if r.kind is EntityKind.PERSON} for part in parts]
    assert persons[0].isdisjoint(persons[1])
    assert len(persons[0] | persons[1]) == sum(1 for r in small if r.kind is EntityKind.PERSON)
    # A Skola goes with its school units (and the duties at it); the Huvudman to every part.
    skolor = {r.key for r in small if r.kind is EntityKind.ORGANISATION and r.data["organisation_type"] == "Skola"}
    assert skolor
    for skola in skolor:
        holding = [i for i, part in enumerate(parts) if any(r.key == skola for r in part)]
        units_beneath = [
            i for i, part in enumerate(parts) for r in part
            if r.kind is EntityKind.SCHOOL_UNIT and r.data["organisation"] == skola
        ]  # fmt: skip
        assert holding == sorted(set(units_beneath))
    whole = findings_of(small)
    for part in parts:
        found = findings_of(part)
        for code in ("duty.unknown_person", "duty.unknown_school_unit", "group.unknown_member",
                     "group.unknown_school_unit", "activity.unknown_school_unit", "duty.unresolved_organisation",
                     "organisation.type_unknown"):  # fmt: skip
            assert found[code] == 0, code
        assert found["activity.unknown_reference"] <= whole["activity.unknown_reference"] + 1


def test_the_ss12000_fake_serves_the_organiser_and_the_puller_mapping_reads_it_back(
    small: list[SourceRecord],
) -> None:
    fake = FakeSs12000Api(auth="none")
    counts = fake.load_records(small)
    assert counts["persons"] == sum(1 for r in small if r.kind is EntityKind.PERSON)
    back = {(r.kind, r.key): r.data for r in fake.records()}
    assert len(back) == len(small)
    served_types = Counter(str(o["organisationType"]) for o in fake.data["organisations"].values())
    assert served_types == {"Huvudman": 1, "Skola": 1, "Skolenhet": SIZES["S"].school_units}
    persons_served = fake.data["persons"].values()
    assert 0 < sum(1 for p in persons_served if "securityMarking" not in p) < 0.02 * len(persons_served)
    assert {p.get("personStatus", "Aktiv") for p in persons_served} == {"Aktiv", "Utvandrad", "Avliden"}
    dropped = 0
    for record in small:
        expected = dict(record.data)
        if record.kind is EntityKind.PERSON:
            expected.setdefault("external_identifiers", [])
            # What 2.1 cannot carry: an e-mail address that is not one (the normaliser drops it anyway).
            expected["emails"] = [e for e in record.data["emails"] if is_mailbox(e["value"])]
            dropped += len(record.data["emails"]) - len(expected["emails"])
            assert not any(EMAIL.match(e["value"]) for e in record.data["emails"] if e not in expected["emails"])
        assert back[(record.kind, record.key)] == expected, record.kind
    assert dropped > 0
    changes = change_set(small, seed=1, on=DAY)
    fake.apply_changes(changes.changed, changes.deleted)
    assert {d[2] for d in fake.deletions} == changes.left
    assert set(fake.data["persons"]) == {r.key for r in changes.records if r.kind is EntityKind.PERSON}


def test_the_graph_fake_loads_the_same_organiser(small: list[SourceRecord]) -> None:
    fake = FakeGraphEducation()
    fake.load_organiser(small, today=DAY)
    assert len(fake.objects["schools"]) == SIZES["S"].school_units
    assert len(fake.objects["users"]) == SIZES["S"].persons
    # School Data Sync has no Skola: staff whose duty is at one are members of every school beneath it.
    skola = next(r for r in small if r.kind is EntityKind.ORGANISATION and r.data["organisation_type"] == "Skola")
    beneath = {
        fake.graph_id(EntityKind.SCHOOL_UNIT, r.key)
        for r in small
        if r.kind is EntityKind.SCHOOL_UNIT and r.data["organisation"] == skola.key
    }
    rektor = next(r for r in small if r.kind is EntityKind.DUTY and r.data["school_unit"] == skola.key)
    user = fake.graph_id(EntityKind.PERSON, str(rektor.data["person"]))
    assert {school for school, members in fake.school_users.items() if user in members} == beneath
    assert fake.graph_id(EntityKind.SCHOOL_UNIT, skola.key) not in fake.school_users
    assert len(fake.objects["classes"]) == sum(1 for r in small if r.kind is EntityKind.GROUP)


def test_the_organisation_tree_has_skolor_above_school_units_with_duties_at_both_levels() -> None:
    manifest = Manifest()
    records = list(stream("M", seed=1, manifest=manifest))
    organisations = {r.key: r for r in records if r.kind is EntityKind.ORGANISATION}
    huvudman = [k for k, r in organisations.items() if r.data["organisation_type"] == "Huvudman"]
    assert len(huvudman) == 1
    skolor = {k: r for k, r in organisations.items() if r.data["organisation_type"] == "Skola"}
    assert len(skolor) == manifest.skolor >= 5
    assert all(r.data["parent"] == huvudman[0] for r in skolor.values())
    units = [r for r in records if r.kind is EntityKind.SCHOOL_UNIT]
    beneath = Counter(str(r.data["organisation"]) for r in units)
    assert set(beneath) == set(skolor) | set(huvudman)  # some units under a Skola, the others directly
    for key, skola in skolor.items():
        names = sorted(str(r.data["display_name"]) for r in units if r.data["organisation"] == key)
        assert names == [f"{skola.data['display_name']} 7-9", f"{skola.data['display_name']} F-6"]
    at_skola = Counter(r.data["role"] for r in records if r.kind is EntityKind.DUTY and r.data["school_unit"] in skolor)
    assert at_skola == manifest.skola_duties
    assert set(at_skola) == set(SKOLA_ROLES)
    assert at_skola["Rektor"] == len(skolor)  # one rektor per Skola, none at its units
    rektors_at_units = Counter(
        str(r.data["school_unit"]) for r in records if r.kind is EntityKind.DUTY and r.data["role"] == "Rektor"
    )
    assert all(rektors_at_units[str(u.key)] == 0 for u in units if u.data["organisation"] in skolor)
    at_units = {r.data["role"] for r in records if r.kind is EntityKind.DUTY and r.data["school_unit"] not in skolor}
    assert {"Rektor", "Kurator", "Skolsköterska", "Lärare"} <= at_units  # units directly under the Huvudman


def test_staff_at_a_skola_reach_vendors_at_every_school_unit_beneath_it(small: list[SourceRecord]) -> None:
    """The normaliser places every member of staff, teachers included: one whose only duty is at a Skola at
    both of its school units (a duty per unit), and teaching activities at both."""
    skolor = {r.key for r in small if r.kind is EntityKind.ORGANISATION and r.data["organisation_type"] == "Skola"}
    units_beneath: dict[str, set[str]] = defaultdict(set)  # organisation key -> the ids of the units beneath
    for r in small:
        if r.kind is EntityKind.SCHOOL_UNIT:
            units_beneath[str(r.data["organisation"])].add(str(entity_id(TENANT, SOURCE, r.kind, r.key)))
    stored, _ = stored_of(small)
    persons = {s.entity.key: s.entity for s in stored if isinstance(s.entity, Person)}
    state = state_of(small)
    withheld = {str(i) for i in state.withheld}
    delivered = everything(small, state)
    duties = [r for r in small if r.kind is EntityKind.DUTY]
    skola_teachers = set()
    for duty in duties:
        person = persons[duty.data["person"]]
        if not person.active or person.is_protected() or str(person_id(person.key)) in withheld:
            assert person_id(person.key) not in delivered
            continue
        resource = delivered[person_id(person.key)]
        teaching = DutyRole(duty.data["role"]) in TEACHING_ROLES
        assert ("teacher" if teaching else "other_staff") in resource["roles"]  # type: ignore[operator]
        if duty.data["school_unit"] in skolor:
            assert resource["school_unit_ids"] == sorted(units_beneath[duty.data["school_unit"]])
            if teaching:
                skola_teachers.add(str(person_id(person.key)))
    assert skola_teachers  # teachers whose only duty is at the Skola
    delivered_duties = [r for r in delivered.values() if r["kind"] == "duty" and r["person_id"] in skola_teachers]
    assert len(delivered_duties) == 2 * len(skola_teachers)  # one per school unit beneath the Skola
    taught = {t for r in delivered.values() if r["kind"] == "activity" for t in r["teacher_duty_ids"]}  # type: ignore[attr-defined]
    at_units = {d["school_unit_id"] for d in delivered_duties if d["id"] in taught}
    assert len(at_units) == 2  # they teach at both school units


def test_persons_without_a_marking_and_not_active_at_their_rates_and_kept_out_of_the_selection() -> None:
    spec = SizeSpec.for_persons(4_000)
    manifest = Manifest()
    records = list(stream(spec, seed=3, manifest=manifest))
    assert manifest.unmarked == pytest.approx(spec.missing_marking_rate * manifest.persons, rel=0.5, abs=4)
    assert sum(manifest.inactive.values()) == pytest.approx(spec.inactive_rate * manifest.persons, rel=0.5, abs=4)
    assert manifest.inactive["Utvandrad"] > 0
    stored, _ = stored_of(records)
    persons = [s for s in stored if isinstance(s.entity, Person)]
    unmarked = {s.id for s in persons if isinstance(s.entity, Person) and not s.entity.marking_known}
    inactive = {s.id for s in persons if isinstance(s.entity, Person) and not s.entity.active}
    assert len(unmarked) == manifest.unmarked
    assert len(inactive) == sum(manifest.inactive.values())
    assert findings_of(records)["person_status.unknown"] == 0
    # By default a person without a marking is protected (excluded); the organiser can decide otherwise.
    default = everything(records, state_of(records))
    assert not (unmarked | inactive) & set(default)
    not_protected = everything(records, state_of(records, MissingMarkingPolicy.NOT_PROTECTED))
    reached = unmarked & set(not_protected)
    assert len(reached) >= 0.9 * len(unmarked - inactive)  # those placed (a few have no relation)
    assert all(not_protected[i]["security_marking"] is None for i in reached)  # never "Ingen"
    assert not inactive & set(not_protected)
    summary = missing_marking_summary(TENANT, {SOURCE: (len(unmarked), len(persons))}, MissingMarkingPolicy.PROTECTED)
    assert [f.code.value for f in summary] == ["security_marking.missing"]


def test_classes_have_mentors_and_teaching_has_syllabuses_which_a_vendor_that_takes_them_gets(
    small: list[SourceRecord],
) -> None:
    groups = {r.key: r for r in small if r.kind is EntityKind.GROUP}
    classes = {k for k, r in groups.items() if r.data["group_type"] == "Klass"}
    duties = {r.key: r for r in small if r.kind is EntityKind.DUTY}
    mentored = Counter(
        a["group"]
        for d in duties.values()
        for a in d.data.get("assignment_roles") or []
        if a["assignment_role_type"] == "Mentor"
    )
    assert set(mentored) <= classes
    assert max(mentored.values()) == 1  # one mentor per class
    assert len(mentored) >= 0.8 * len(classes)  # not a Skola's teacher from its other unit (their duty is there)
    above = {r.key: r.data["organisation"] for r in small if r.kind is EntityKind.SCHOOL_UNIT}
    for duty in duties.values():
        for role in duty.data.get("assignment_roles") or []:
            unit = groups[role["group"]].data["school_unit"]
            assert duty.data["school_unit"] in (unit, above[unit])  # the class's unit, or the Skola above it
    mentor_of = {a["group"]: d.key for d in duties.values() for a in d.data.get("assignment_roles") or []}
    for activity in (
        r for r in small if r.kind is EntityKind.ACTIVITY and r.data["display_name"].startswith("Mentorstid")
    ):
        group = activity.data["groups"][0]
        if group in mentor_of:
            assert activity.data["teachers"] == [mentor_of[group]]  # the mentor has the class's Mentorstid
    syllabuses = {r.key: r for r in small if r.kind is EntityKind.SYLLABUS}
    teaching = [
        r
        for r in small
        if r.kind is EntityKind.ACTIVITY and groups[r.data["groups"][0]].data["group_type"] == "Undervisning"
    ]
    with_syllabus = [a for a in teaching if a.data.get("syllabus")]
    assert with_syllabus
    assert all(a.data["syllabus"] in syllabuses for a in with_syllabus)
    assert all("förskoleklass" in a.data["display_name"] for a in teaching if not a.data.get("syllabus"))
    for activity in with_syllabus:
        syllabus = syllabuses[activity.data["syllabus"]].data
        name = syllabus.get("course_name") or syllabus["subject_name"]
        assert activity.data["display_name"].startswith(name)
        assert (syllabus["school_type"] == "GY") == bool(syllabus.get("course_code"))
    assert findings_of(small)["activity.unknown_reference"] == 0
    # Opt-in fields: a vendor gets mentors and syllabuses only when its profile takes them.
    state = state_of(small)
    assert not any(r.get("assignment_roles") or r.get("syllabus") for r in everything(small, state).values())
    takes_all = VendorProfile(
        vendor_id="all", accepted_fields={k: v - SENSITIVE_FIELDS for k, v in OPTIONAL_FIELDS.items()}
    )
    delivered = everything(small, state, takes_all)
    delivered_mentors = [a for r in delivered.values() if r["kind"] == "duty" for a in r.get("assignment_roles") or []]  # type: ignore[attr-defined]
    assert {a["group_id"] for a in delivered_mentors} <= {str(i) for i, r in delivered.items() if r["kind"] == "group"}
    assert len(delivered_mentors) >= 0.8 * len(mentored)
    subjects = {
        r["syllabus"]["subject_name"] for r in delivered.values() if r["kind"] == "activity" and r.get("syllabus")
    }  # type: ignore[index]
    assert {"Matematik", "Svenska", "Engelska"} <= subjects
