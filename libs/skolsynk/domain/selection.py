"""Which entities one vendor gets from one organiser, minimised: a pure function of the organiser's
canonical state, the subscription, the vendor's profile and the day.

Rules (docs/selection.md has the prose):

* **School units**: those whose code the subscription lists and that are active today.
* **Persons**: a *student* relation is an active, not cancelled enrolment at an included unit whose
  school type and year pass the filters; a *teacher* / *other staff* relation is an active duty at an
  included unit (teaching roles make teachers); a duty at an organisation above school units (a Skola
  ...) is a relation at every included unit beneath it (``skolsynk.domain.organisation_tree``). A
  person is selected when a relation's role is in the subscription's roles, or when explicitly
  included; explicitly excluded persons never are.
  With ``single_school_unit_per_user`` only the relations of the lowest school-unit code are kept.
* **personStatus**: a person whose status is not Aktiv (Utvandrad, Avliden, or a value SS 12000 does not
  know) is in no vendor's selection, whatever else says so (an explicit include too).
* **Protected identities** (securityMarking "Sekretessmarkering" or "Skyddad folkbokföring"; a person
  whose marking the source did not give while the organiser's ``missing_marking`` is ``protected``, the
  default) follow the subscription's policy: excluded (default), pseudonymised (a vendor-specific id,
  alias names, only the login kept) or minimal (names and login only).
* **Duties** of selected staff at included units; **groups** at included units that are active and of
  an allowed type (``classes_only``: Klass only), with their active memberships of selected persons;
  **activities** at included units that have at least one selected group, with selected groups and
  teachers (duties) only; the **school-unit groups** the units refer to and the **organisation** each
  unit goes out under (the nearest Huvudman above it; the levels between are not sent). A duty at a
  level above goes out once per selected unit beneath it (:func:`duty_at_unit_id`).
* **Minimisation**: a resource carries ids, references, roles and school units, plus only the fields
  both the vendor's profile and the subscription allow.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date
from enum import StrEnum
from functools import cached_property
from typing import Any, Literal
from uuid import UUID, uuid5

from skolsynk.domain.ids import SKOLSYNK_NAMESPACE, content_hash, entity_id
from skolsynk.domain.organisation_tree import OrganisationTree
from skolsynk.domain.ss12000 import (
    TEACHING_ROLES,
    Activity,
    Duty,
    Enrolment,
    Entity,
    EntityKind,
    Group,
    GroupType,
    Organisation,
    Person,
    Placement,
    SchoolType,
    SchoolUnit,
    SchoolUnitGroup,
    Syllabus,
)
from skolsynk.domain.subscription import (
    MissingMarkingPolicy,
    ProtectedIdentityPolicy,
    Role,
    VendorProfile,
    VendorSubscription,
)

PSEUDONYM_GIVEN_NAME = "Skyddad"
PSEUDONYM_FAMILY_NAME = "Identitet"


@dataclass(frozen=True)
class StoredEntity:
    """A canonical entity of one organiser with its stable id and the source it came from."""

    id: UUID
    source_id: str
    entity: Entity

    @property
    def kind(self) -> EntityKind:
        return self.entity.kind


@dataclass
class TenantState:
    tenant_id: str
    entities: list[StoredEntity]
    #: Entities a data-quality error withholds: their vendor views are left as they are.
    withheld: set[UUID] = field(default_factory=set)
    #: The organiser's setting for persons whose source did not give their securityMarking.
    missing_marking: MissingMarkingPolicy = MissingMarkingPolicy.PROTECTED

    @cached_property
    def tree(self) -> OrganisationTree:
        """The organisation tree of these entities, built once for every subscription's projection."""
        return OrganisationTree((s.source_id, s.entity) for s in self.entities)


@dataclass(frozen=True)
class ProjectedResource:
    """One entity as one vendor receives it."""

    id: UUID
    kind: EntityKind
    resource: dict[str, Any]
    school_unit_ids: tuple[str, ...]
    school_unit_codes: tuple[str, ...]
    roles: tuple[str, ...] = ()
    source_entity_id: UUID | None = None

    @property
    def hash(self) -> str:
        return content_hash(self.resource)


def pseudonym_id(tenant_id: str, vendor_id: str, person_id: UUID) -> UUID:
    return uuid5(SKOLSYNK_NAMESPACE, f"pseudonym\x1f{tenant_id}\x1f{vendor_id}\x1f{person_id}")


def duty_at_unit_id(duty_id: UUID, school_unit_id: UUID) -> UUID:
    """The id vendors see for a duty at an organisation above school units, at one school unit beneath
    it (a duty at a school unit keeps its own id): one per unit, the same on every projection."""
    return uuid5(SKOLSYNK_NAMESPACE, f"duty-at\x1f{duty_id}\x1f{school_unit_id}")


class _Index:
    def __init__(self, state: TenantState) -> None:
        self.tenant_id = state.tenant_id
        self.by_ref: dict[tuple[str, EntityKind, str], StoredEntity] = {}
        self.of_kind: dict[EntityKind, list[StoredEntity]] = defaultdict(list)
        self.duties_of: dict[tuple[str, str], list[StoredEntity]] = defaultdict(list)
        self.placements_of: dict[tuple[str, str], list[StoredEntity]] = defaultdict(list)
        for stored in state.entities:
            self.by_ref[(stored.source_id, stored.kind, stored.entity.key)] = stored
            self.of_kind[stored.kind].append(stored)
            if isinstance(stored.entity, Duty):
                self.duties_of[(stored.source_id, stored.entity.person)].append(stored)
            elif isinstance(stored.entity, Placement):
                self.placements_of[(stored.source_id, stored.entity.child)].append(stored)

    def ref(self, source_id: str, kind: EntityKind, key: str | None) -> StoredEntity | None:
        return None if key is None else self.by_ref.get((source_id, kind, key))

    def id_of(self, source_id: str, kind: EntityKind, key: str) -> UUID:
        return entity_id(self.tenant_id, source_id, kind, key)


def _pick(data: dict[str, Any], allowed: frozenset[str]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if k in allowed}


class PersonOutcome(StrEnum):
    """Whether one person is in one subscription's selection and, when not, the rule that keeps them out
    (the rules are checked in this order)."""

    #: Named in the subscription's ``exclude_persons`` (the normaliser adds the persons an active erasure
    #: request or objection suppresses at the vendor).
    EXCLUDED = "excluded"
    #: personStatus is not Aktiv.
    NOT_ACTIVE = "not_active"
    #: A protected identity, and the subscription's policy excludes them.
    PROTECTED = "protected"
    #: None of their relations counts (:attr:`PersonSelection.skipped` says why each does not).
    NO_RELATION = "no_relation"
    #: At least one relation counts.
    SELECTED = "selected"
    #: Named in ``include_persons`` while none of their relations counts.
    INCLUDED = "included"


class RelationSkip(StrEnum):
    """Why one of a person's relations (an enrolment, a duty, a placement) does not count for a subscription."""

    UNIT_NOT_CHOSEN = "unit_not_chosen"  # its school unit is not among the subscription's
    UNIT_NOT_ACTIVE = "unit_not_active"  # its school unit is chosen, but closed or not opened yet
    NOT_ACTIVE = "not_active"  # the relation's own dates (or a cancelled enrolment)
    SCHOOL_TYPE = "school_type"  # its school type is not among the subscription's
    SCHOOL_YEAR = "school_year"  # its school year is not among the subscription's (or it has none)
    ROLE = "role"  # the role it makes (student, teacher, other staff) is not among the subscription's
    PLACEMENTS_NOT_ASKED = "placements_not_asked"  # a placement, and the subscription does not ask for them
    PLACEMENTS_NOT_TAKEN = "placements_not_taken"  # a placement, and the vendor's profile does not take them
    OTHER_UNIT = "other_unit"  # one school unit per user: a unit with a lower code is kept instead


#: What a relation is: a student's enrolment, a staff member's duty, a child's placement.
RelationKind = Literal["enrolment", "duty", "placement"]


@dataclass(frozen=True)
class SkippedRelation:
    """One relation that does not count, and why (ids, keys and codes: no personal data)."""

    skip: RelationSkip
    relation: RelationKind
    role: Role
    source_id: str
    #: The source key of where the relation is: a school unit, or an organisation above school units.
    school_unit: str
    school_type: SchoolType | None = None
    school_year: int | None = None


@dataclass(frozen=True)
class PersonSelection:
    """One person's outcome in one subscription's selection: the relations that count (role, school
    unit, the enrolment or the stored duty or placement) and, when asked for, those that do not."""

    outcome: PersonOutcome
    protected: bool
    relations: tuple[tuple[Role, StoredEntity, Any], ...] = ()
    skipped: tuple[SkippedRelation, ...] = ()

    @property
    def selected(self) -> bool:
        return self.outcome in (PersonOutcome.SELECTED, PersonOutcome.INCLUDED)


def _relation_kind(via: Any) -> RelationKind:
    if isinstance(via, Enrolment):
        return "enrolment"
    assert isinstance(via, StoredEntity)
    return "duty" if isinstance(via.entity, Duty) else "placement"


class _Persons:
    """The person rules of one subscription's selection, shared by :func:`project` and
    :func:`select_person` so that an explanation can never disagree with what is delivered."""

    def __init__(
        self,
        state: TenantState,
        index: _Index,
        subscription: VendorSubscription,
        profile: VendorProfile,
        today: date,
    ) -> None:
        self.state = state
        self.index = index
        self.tree = state.tree
        self.subscription = subscription
        self.profile = profile
        self.today = today
        # Children's placements count only when the subscription asks for them and the vendor takes them.
        self.placements_wanted = subscription.placements and "placements" in subscription.allowed_fields(
            EntityKind.PERSON, profile
        )
        #: The chosen school units that are active today, by (source, key).
        self.units: dict[tuple[str, str], StoredEntity] = {}
        for stored in index.of_kind[EntityKind.SCHOOL_UNIT]:
            unit = stored.entity
            assert isinstance(unit, SchoolUnit)
            if unit.school_unit_code in subscription.school_unit_codes and unit.active_on(today):
                self.units[(stored.source_id, unit.key)] = stored

    def _unit_skip(self, source_id: str, key: str) -> RelationSkip:
        """Why a place is not among the selection's units: not chosen, or chosen but not active today."""
        unit = self.index.ref(source_id, EntityKind.SCHOOL_UNIT, key)
        if unit is not None and _code(unit) in self.subscription.school_unit_codes:
            return RelationSkip.UNIT_NOT_ACTIVE
        return RelationSkip.UNIT_NOT_CHOSEN

    def _placement_skip(self) -> RelationSkip:
        """Why no placement counts: the vendor's profile does not take them, or the subscription does not ask."""
        taken = "placements" in self.profile.accepted_fields.get(EntityKind.PERSON, frozenset())
        if self.subscription.placements and not taken:
            return RelationSkip.PLACEMENTS_NOT_TAKEN
        return RelationSkip.PLACEMENTS_NOT_ASKED

    def select(self, stored: StoredEntity, *, why: bool = False) -> PersonSelection:
        """The person's outcome; ``why`` also records every relation that does not count (the person page)."""
        person = stored.entity
        assert isinstance(person, Person)
        subscription, today, source = self.subscription, self.today, stored.source_id
        types, years = subscription.school_types, subscription.school_years
        protected = person.is_protected(unknown_is_protected=self.state.missing_marking.unknown_is_protected)
        if str(stored.id) in subscription.exclude_persons:
            return PersonSelection(PersonOutcome.EXCLUDED, protected)
        if not person.active:
            return PersonSelection(PersonOutcome.NOT_ACTIVE, protected)
        if protected and subscription.protected_identity_policy is ProtectedIdentityPolicy.EXCLUDE:
            return PersonSelection(PersonOutcome.PROTECTED, protected)
        # Each relation that does not count is recorded (with why) only when asked: projections skip it.
        skipped: list[SkippedRelation] | None = [] if why else None
        relations: list[tuple[Role, StoredEntity, Any]] = []
        for enrolment in person.enrolments:
            unit_stored = self.units.get((source, enrolment.school_unit))
            if (
                unit_stored is not None
                and enrolment.active_on(today)
                and (types is None or enrolment.school_type in types)
                and (years is None or enrolment.school_year in years)
            ):
                relations.append((Role.STUDENT, unit_stored, enrolment))
                continue
            if skipped is not None:
                if unit_stored is None:
                    skip = self._unit_skip(source, enrolment.school_unit)
                elif not enrolment.active_on(today):
                    skip = RelationSkip.NOT_ACTIVE
                else:
                    wrong_type = types is not None and enrolment.school_type not in types
                    skip = RelationSkip.SCHOOL_TYPE if wrong_type else RelationSkip.SCHOOL_YEAR
                skipped.append(
                    SkippedRelation(
                        skip,
                        "enrolment",
                        Role.STUDENT,
                        source,
                        enrolment.school_unit,
                        enrolment.school_type,
                        enrolment.school_year,
                    )
                )
        placements = self.index.placements_of.get((source, person.key), [])
        for placement_stored in placements if self.placements_wanted or skipped is not None else []:
            placement = placement_stored.entity
            assert isinstance(placement, Placement)
            unit_stored = self.units.get((source, placement.school_unit))
            if (
                self.placements_wanted
                and unit_stored is not None
                and placement.active_on(today)
                and (types is None or placement.school_type in types)
            ):
                relations.append((Role.STUDENT, unit_stored, placement_stored))
                continue
            if skipped is not None:
                if not self.placements_wanted:
                    skip = self._placement_skip()
                elif unit_stored is None:
                    skip = self._unit_skip(source, placement.school_unit)
                else:
                    skip = RelationSkip.SCHOOL_TYPE if placement.active_on(today) else RelationSkip.NOT_ACTIVE
                skipped.append(
                    SkippedRelation(
                        skip, "placement", Role.STUDENT, source, placement.school_unit, placement.school_type
                    )
                )
        for duty_stored in self.index.duties_of.get((source, person.key), []):
            duty = duty_stored.entity
            assert isinstance(duty, Duty)
            role = Role.TEACHER if duty.role in TEACHING_ROLES else Role.OTHER_STAFF
            if not duty.active_on(today):
                if skipped is not None:
                    skipped.append(SkippedRelation(RelationSkip.NOT_ACTIVE, "duty", role, source, duty.school_unit))
                continue
            # A duty at an organisation above school units is a relation at every school unit beneath it.
            for unit_key in self.tree.units_beneath(source, duty.school_unit):
                unit_stored = self.units.get((source, unit_key))
                if unit_stored is not None:
                    relations.append((role, unit_stored, duty_stored))
                elif skipped is not None:
                    skipped.append(SkippedRelation(self._unit_skip(source, unit_key), "duty", role, source, unit_key))
        if skipped is not None:
            skipped += [
                SkippedRelation(RelationSkip.ROLE, _relation_kind(via), role, source, unit.entity.key)
                for role, unit, via in relations
                if role not in subscription.roles
            ]
        relations = [r for r in relations if r[0] in subscription.roles]
        explicitly_included = str(stored.id) in subscription.include_persons
        if not relations and not explicitly_included:
            return PersonSelection(PersonOutcome.NO_RELATION, protected, skipped=tuple(skipped or ()))
        if self.profile.single_school_unit_per_user and relations:
            first = min(_code(r[1]) for r in relations)
            if skipped is not None:
                skipped += [
                    SkippedRelation(RelationSkip.OTHER_UNIT, _relation_kind(via), role, source, unit.entity.key)
                    for role, unit, via in relations
                    if _code(unit) != first
                ]
            relations = [r for r in relations if _code(r[1]) == first]
        outcome = PersonOutcome.SELECTED if relations else PersonOutcome.INCLUDED
        return PersonSelection(outcome, protected, tuple(relations), tuple(skipped or ()))


def _code(stored: StoredEntity) -> str:
    unit = stored.entity
    assert isinstance(unit, SchoolUnit)
    return unit.school_unit_code


def select_person(
    state: TenantState, subscription: VendorSubscription, profile: VendorProfile, today: date, person_id: UUID
) -> PersonSelection | None:
    """Whether the person ``person_id`` is in ``subscription``'s selection today, with every relation of
    theirs that does not count and why: the rules :func:`project` applies (the person page,
    ``skolsynk.domain.verdicts``). None: the person is not in ``state`` (unknown, or withheld)."""
    index = _Index(state)
    stored = next((s for s in index.of_kind[EntityKind.PERSON] if s.id == person_id), None)
    if stored is None:
        return None
    return _Persons(state, index, subscription, profile, today).select(stored, why=True)


def project(
    state: TenantState, subscription: VendorSubscription, profile: VendorProfile, today: date
) -> dict[UUID, ProjectedResource]:
    """Everything ``subscription``'s vendor should hold today, by the id the vendor sees."""
    index = _Index(state)
    tree = state.tree
    out: dict[UUID, ProjectedResource] = {}
    allowed = {kind: subscription.allowed_fields(kind, profile) for kind in EntityKind}
    persons = _Persons(state, index, subscription, profile, today)
    # School units: the chosen ones that are active today.
    units = persons.units

    def unit_of(source_id: str, key: str) -> StoredEntity | None:
        return units.get((source_id, key))

    def code_of(stored: StoredEntity) -> str:
        unit = stored.entity
        assert isinstance(unit, SchoolUnit)
        return unit.school_unit_code

    # Persons
    unit_stored: StoredEntity | None
    person_ids: dict[tuple[str, str], UUID] = {}  # (source, key) -> id the vendor sees
    person_units: dict[tuple[str, str], set[str]] = {}  # (source, key) -> the units kept for them
    pseudonymised: set[tuple[str, str]] = set()
    selected_staff_duties: list[tuple[StoredEntity, StoredEntity]] = []  # (duty, unit)
    for stored in index.of_kind[EntityKind.PERSON]:
        person = stored.entity
        assert isinstance(person, Person)
        selection = persons.select(stored)
        if not selection.selected:
            continue
        relations = list(selection.relations)
        protected = selection.protected
        policy = subscription.protected_identity_policy
        emitted_id = stored.id
        data: dict[str, Any] = person.model_dump(mode="json", exclude={"kind", "key", "enrolments", "person_status"})
        data["enrolments"] = [
            {
                "school_unit_id": str(unit_stored.id),
                "school_unit_code": code_of(unit_stored),
                **enrolment.model_dump(mode="json", exclude={"school_unit", "cancelled"}),
            }
            for role, unit_stored, enrolment in relations
            if isinstance(enrolment, Enrolment)
        ]
        data["placements"] = [
            {
                "id": str(placement_stored.id),
                "school_unit_id": str(unit_stored.id),
                "school_unit_code": code_of(unit_stored),
                "group_id": None
                if placement_stored.entity.group is None
                else str(index.id_of(stored.source_id, EntityKind.GROUP, placement_stored.entity.group)),
                **placement_stored.entity.model_dump(mode="json", include={"school_type", "start_date", "end_date"}),
            }
            for _, unit_stored, placement_stored in relations
            if isinstance(placement_stored, StoredEntity) and isinstance(placement_stored.entity, Placement)
        ]
        person_allowed = allowed[EntityKind.PERSON]
        if protected and policy is ProtectedIdentityPolicy.PSEUDONYMISE:
            emitted_id = pseudonym_id(state.tenant_id, subscription.vendor_id, stored.id)
            data = {
                "given_name": PSEUDONYM_GIVEN_NAME,
                "family_name": PSEUDONYM_FAMILY_NAME,
                "eppn": person.eppn[:1],
                "enrolments": data["enrolments"],
                "placements": data["placements"],
            }
        elif protected and policy is ProtectedIdentityPolicy.MINIMAL:
            person_allowed = person_allowed & frozenset(
                {"given_name", "family_name", "eppn", "enrolments", "placements"}
            )
        person_ids[(stored.source_id, person.key)] = emitted_id
        if emitted_id != stored.id:
            pseudonymised.add((stored.source_id, person.key))
        unit_ids = sorted({str(r[1].id) for r in relations})
        person_units[(stored.source_id, person.key)] = set(unit_ids)
        codes = sorted({code_of(r[1]) for r in relations})
        roles = sorted({r[0].value for r in relations})
        resource = {
            "id": str(emitted_id),
            "kind": EntityKind.PERSON.value,
            "roles": roles,
            "school_unit_ids": unit_ids,
            **_pick(data, person_allowed),
        }
        out[emitted_id] = ProjectedResource(
            emitted_id, EntityKind.PERSON, resource, tuple(unit_ids), tuple(codes), tuple(roles), stored.id
        )
        selected_staff_duties += [(r[2], r[1]) for r in relations if r[0] is not Role.STUDENT]

    # Duties (a pseudonymised person's duties get vendor-specific ids and no signature, which
    # would otherwise link the pseudonym to the real person)
    duty_ids: dict[tuple[str, str], dict[str, UUID]] = defaultdict(dict)  # (source, key) -> unit key -> id
    mentoring: list[tuple[dict[str, Any], StoredEntity, StoredEntity]] = []  # (resource, duty, unit)
    if EntityKind.DUTY in profile.kinds:
        for duty_stored, unit_stored in selected_staff_duties:
            duty = duty_stored.entity
            assert isinstance(duty, Duty)
            hidden = (duty_stored.source_id, duty.person) in pseudonymised
            at_unit = duty.school_unit == unit_stored.entity.key
            duty_own = duty_stored.id if at_unit else duty_at_unit_id(duty_stored.id, unit_stored.id)
            duty_emitted = pseudonym_id(state.tenant_id, subscription.vendor_id, duty_own) if hidden else duty_own
            duty_ids[(duty_stored.source_id, duty.key)][unit_stored.entity.key] = duty_emitted
            duty_allowed = allowed[EntityKind.DUTY] - {"signature"} if hidden else allowed[EntityKind.DUTY]
            resource = {
                "id": str(duty_emitted),
                "kind": EntityKind.DUTY.value,
                "person_id": str(person_ids[(duty_stored.source_id, duty.person)]),
                "school_unit_id": str(unit_stored.id),
                **_pick(duty.model_dump(mode="json"), duty_allowed),
            }
            if "assignment_roles" in duty_allowed:
                mentoring.append((resource, duty_stored, unit_stored))  # resolved once the groups are known
            out[duty_emitted] = ProjectedResource(
                duty_emitted,
                EntityKind.DUTY,
                resource,
                (str(unit_stored.id),),
                (code_of(unit_stored),),
                source_entity_id=duty_stored.id,
            )

    # Groups
    group_types = subscription.group_types
    selected_groups: dict[tuple[str, str], str] = {}  # (source, key) -> the unit's key
    if EntityKind.GROUP in profile.kinds:
        for stored in index.of_kind[EntityKind.GROUP]:
            group = stored.entity
            assert isinstance(group, Group)
            unit_stored = unit_of(stored.source_id, group.school_unit)
            if unit_stored is None or not group.active_on(today):
                continue
            if profile.classes_only and group.group_type is not GroupType.KLASS:
                continue
            if group_types is not None and group.group_type not in group_types:
                continue
            members = sorted(
                {
                    str(person_ids[(stored.source_id, m.person)])
                    for m in group.memberships
                    if m.active_on(today)
                    and (stored.source_id, m.person) in person_ids
                    and (
                        not profile.single_school_unit_per_user
                        or str(unit_stored.id) in person_units[(stored.source_id, m.person)]
                        or not person_units[(stored.source_id, m.person)]
                    )
                }
            )
            selected_groups[(stored.source_id, group.key)] = group.school_unit
            resource = {
                "id": str(stored.id),
                "kind": EntityKind.GROUP.value,
                "school_unit_id": str(unit_stored.id),
                "member_ids": members,
                **_pick(group.model_dump(mode="json"), allowed[EntityKind.GROUP]),
            }
            out[stored.id] = ProjectedResource(
                stored.id, EntityKind.GROUP, resource, (str(unit_stored.id),), (code_of(unit_stored),)
            )

    # A duty's assignment roles (the mentor of a class ...): active ones towards groups the vendor gets,
    # at the unit the duty goes out at.
    for resource, duty_stored, unit_stored in mentoring:
        duty = duty_stored.entity
        assert isinstance(duty, Duty)
        resource["assignment_roles"] = [
            {
                "group_id": str(index.id_of(duty_stored.source_id, EntityKind.GROUP, role.group)),
                **role.model_dump(mode="json", include={"assignment_role_type", "start_date", "end_date"}),
            }
            for role in duty.assignment_roles
            if role.active_on(today)
            and selected_groups.get((duty_stored.source_id, role.group)) == unit_stored.entity.key
        ]

    # Activities
    if EntityKind.ACTIVITY in profile.kinds:
        for stored in index.of_kind[EntityKind.ACTIVITY]:
            activity = stored.entity
            assert isinstance(activity, Activity)
            unit_stored = unit_of(stored.source_id, activity.school_unit)
            if unit_stored is None or not activity.active_on(today):
                continue
            groups = sorted(
                str(index.id_of(stored.source_id, EntityKind.GROUP, g))
                for g in activity.groups
                if (stored.source_id, g) in selected_groups
            )
            if not groups:
                continue
            # A teacher's duty at the activity's unit; a duty elsewhere as it is delivered (one id). A
            # teacher counts while their assignment to the activity is active.
            teaching = [
                (t, duty_id)
                for t in activity.teachers
                if activity.teaching_on(t, today)
                for unit_key, duty_id in duty_ids.get((stored.source_id, t), {}).items()
                if unit_key == activity.school_unit or activity.school_unit not in duty_ids[(stored.source_id, t)]
            ]
            activity_allowed = allowed[EntityKind.ACTIVITY]
            resource = {
                "id": str(stored.id),
                "kind": EntityKind.ACTIVITY.value,
                "school_unit_id": str(unit_stored.id),
                "group_ids": groups,
                "teacher_duty_ids": sorted(str(duty_id) for _, duty_id in teaching),
                **_pick(activity.model_dump(mode="json"), activity_allowed),
            }
            if "teacher_assignments" in activity_allowed:
                dated = {a.duty: a for a in activity.teacher_assignments}
                resource["teacher_assignments"] = sorted(
                    (
                        {
                            "duty_id": str(duty_id),
                            **dated[t].model_dump(mode="json", include={"start_date", "end_date"}),
                        }
                        for t, duty_id in teaching
                        if t in dated
                    ),
                    key=lambda a: a["duty_id"],
                )
            if "syllabus" in activity_allowed:
                resource["syllabus"] = _syllabus(index.ref(stored.source_id, EntityKind.SYLLABUS, activity.syllabus))
            out[stored.id] = ProjectedResource(
                stored.id, EntityKind.ACTIVITY, resource, (str(unit_stored.id),), (code_of(unit_stored),)
            )

    # School units and what they refer to: the organisation a unit is delivered under is the nearest
    # Huvudman above it (the levels between are not delivered).
    for unit_stored in units.values():
        unit = unit_stored.entity
        assert isinstance(unit, SchoolUnit)
        references: dict[str, str | None] = {"organisation_id": None, "school_unit_group_id": None}
        for kind, key, name in (
            (EntityKind.ORGANISATION, tree.huvudman(unit_stored.source_id, unit), "organisation_id"),
            (EntityKind.SCHOOL_UNIT_GROUP, unit.school_unit_group, "school_unit_group_id"),
        ):
            parent = index.ref(unit_stored.source_id, kind, key)
            if parent is None or kind not in profile.kinds:
                continue
            references[name] = str(parent.id)
            if parent.id not in out:
                out[parent.id] = _parent_resource(parent, allowed[kind])
        if EntityKind.SCHOOL_UNIT in profile.kinds:
            resource = {
                "id": str(unit_stored.id),
                "kind": EntityKind.SCHOOL_UNIT.value,
                **references,
                **_pick(unit.model_dump(mode="json"), allowed[EntityKind.SCHOOL_UNIT]),
            }
            out[unit_stored.id] = ProjectedResource(
                unit_stored.id, EntityKind.SCHOOL_UNIT, resource, (str(unit_stored.id),), (unit.school_unit_code,)
            )
    return {k: v for k, v in out.items() if v.kind in profile.kinds}


def _syllabus(stored: StoredEntity | None) -> dict[str, Any] | None:
    """An activity's subject or course as vendors get it: the syllabus's id and fields."""
    if stored is None:
        return None
    syllabus = stored.entity
    assert isinstance(syllabus, Syllabus)
    return {"id": str(stored.id), **syllabus.model_dump(mode="json", exclude={"kind", "key"})}


def _parent_resource(parent: StoredEntity, allowed: frozenset[str]) -> ProjectedResource:
    entity = parent.entity
    assert isinstance(entity, Organisation | SchoolUnitGroup)
    resource = {"id": str(parent.id), "kind": entity.kind.value, **_pick(entity.model_dump(mode="json"), allowed)}
    return ProjectedResource(parent.id, entity.kind, resource, (), ())


# --- previews ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PreviewEntry:
    id: UUID
    kind: EntityKind
    school_unit_codes: tuple[str, ...]
    roles: tuple[str, ...]


@dataclass
class SubscriptionPreview:
    """What a proposed subscription change would do for its vendor."""

    added: list[PreviewEntry] = field(default_factory=list)
    removed: list[PreviewEntry] = field(default_factory=list)
    changed: list[PreviewEntry] = field(default_factory=list)

    def counts(self) -> dict[tuple[str, str], dict[str, int]]:
        """(school unit code, role or kind) -> {"added": n, "removed": n, "changed": n}."""
        table: dict[tuple[str, str], dict[str, int]] = defaultdict(lambda: {"added": 0, "removed": 0, "changed": 0})
        for name, entries in (("added", self.added), ("removed", self.removed), ("changed", self.changed)):
            for entry in entries:
                labels = entry.roles or (entry.kind.value,)
                for code in entry.school_unit_codes or ("-",):
                    for label in labels:
                        table[(code, label)][name] += 1
        return dict(table)


def _entry(resource: ProjectedResource) -> PreviewEntry:
    return PreviewEntry(resource.id, resource.kind, resource.school_unit_codes, resource.roles)


def compare(before: dict[UUID, ProjectedResource], after: dict[UUID, ProjectedResource]) -> SubscriptionPreview:
    preview = SubscriptionPreview()
    for resource_id, resource in after.items():
        old = before.get(resource_id)
        if old is None:
            preview.added.append(_entry(resource))
        elif old.hash != resource.hash:
            preview.changed.append(_entry(resource))
    preview.removed = [_entry(r) for rid, r in before.items() if rid not in after]
    for entries in (preview.added, preview.removed, preview.changed):
        entries.sort(key=lambda e: (e.kind.value, str(e.id)))
    return preview


def preview_subscription_change(
    state: TenantState,
    current: VendorSubscription | None,
    proposed: VendorSubscription,
    profile: VendorProfile,
    today: date,
) -> SubscriptionPreview:
    """What saving ``proposed`` instead of ``current`` would add, remove and change for the vendor,
    computed without applying anything."""
    before = project(state, current, profile, today) if current is not None else {}
    return compare(before, project(state, proposed, profile, today))


def entities_by_kind(resources: Iterable[ProjectedResource]) -> dict[EntityKind, int]:
    counts: dict[EntityKind, int] = defaultdict(int)
    for resource in resources:
        counts[resource.kind] += 1
    return dict(counts)
