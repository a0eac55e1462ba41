"""Why one person is, or is not, at one vendor: a verdict (delivered, withheld, not selected, waiting,
erased) with machine reason codes and their parameters (school-unit codes and names, roles, school
types and years, statuses, times: never a name, a login or an e-mail address), for the person page,
the admin API and ``skolsynk explain``.

Pure. The selection decides with its own rules, exactly as the normaliser projects
(:func:`skolsynk.domain.selection.select_person` for why, :func:`skolsynk.domain.selection.project`
for what the vendor gets); the caller passes in what has happened since (``skolsynk.explain`` reads
it): the person's active erasure request or objection, what the vendor was last sent (the vendor
view and the delivery ledger) and a mass-deletion hold over their removal.

A verdict's first reasons say why; later ones add to it (test mode, a pseudonym, a change on its
way). Every :class:`ReasonCode` has a Swedish text in the admin UI's catalogue (a test checks it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from enum import StrEnum
from typing import Any
from uuid import UUID

from pydantic import Field

from skolsynk.domain.quality import Finding, FindingCode
from skolsynk.domain.selection import (
    PersonOutcome,
    RelationSkip,
    SkippedRelation,
    StoredEntity,
    TenantState,
    project,
    select_person,
)
from skolsynk.domain.ss12000 import EntityKind, Model, Organisation, Person, SchoolUnit
from skolsynk.domain.subscription import ProtectedIdentityPolicy, VendorProfile, VendorSubscription


class Verdict(StrEnum):
    DELIVERED = "delivered"  # the vendor has the person (in test mode: would have)
    WITHHELD = "withheld"  # selected or known, but held back (a protected identity, bad data, the vendor's format)
    NOT_SELECTED = "not_selected"  # the subscription's selection does not include the person
    WAITING = "waiting"  # a change for the vendor waits (a hold, a grace period, the next projection, the queue)
    ERASED = "erased"  # an erasure request or objection keeps the person from the vendor


class ReasonCode(StrEnum):
    """Why: one rule or one state, with its parameters in :attr:`Reason.params`."""

    # In the selection (delivered)
    SELECTED = "selected"  # roles, units
    INCLUDED = "included"  # named in the subscription's include_persons
    TEST_MODE = "test_mode"  # the subscription is in test mode: recorded, not sent
    PSEUDONYMISED = "pseudonymised"  # a protected identity sent under a pseudonym
    MINIMAL = "minimal"  # a protected identity sent with names and login only
    UPDATE_PENDING = "update_pending"  # the vendor has an older version; the next projection sends the change
    # Not in the selection
    NOT_IN_SOURCE = "not_in_source"  # no source has the person (any more)
    SUBSCRIPTION_ENDED = "subscription_ended"
    EXCLUDED = "excluded"  # named in the subscription's exclude_persons
    NOT_ACTIVE = "not_active"  # person_status
    NO_RELATION = "no_relation"  # no enrolment, duty or placement at all
    UNIT_NOT_CHOSEN = "unit_not_chosen"  # relation, role, unit, unit_code
    UNIT_NOT_ACTIVE = "unit_not_active"  # relation, role, unit, unit_code
    RELATION_NOT_ACTIVE = "relation_not_active"  # relation, role, unit, unit_code
    SCHOOL_TYPE = "school_type"  # school_type, unit, unit_code
    SCHOOL_YEAR = "school_year"  # school_year, unit, unit_code
    SCHOOL_YEAR_MISSING = "school_year_missing"  # unit, unit_code
    ROLE = "role"  # role, relation, unit, unit_code
    PLACEMENTS_NOT_ASKED = "placements_not_asked"  # unit, unit_code
    PLACEMENTS_NOT_TAKEN = "placements_not_taken"  # unit, unit_code
    PROFILE_NO_PERSONS = "profile_no_persons"  # the vendor's profile takes no persons
    # Withheld
    PROTECTED_IDENTITY = "protected_identity"  # security_marking
    MARKING_MISSING = "marking_missing"  # no securityMarking, and the organiser treats that as protected
    DUPLICATE_LOGIN = "duplicate_login"  # another person has the same login (eppn.duplicate)
    SCHOOL_UNIT_WITHHELD = "school_unit_withheld"  # an enrolment at a school unit that is itself withheld
    VENDOR_REQUIRES_LOGIN = "vendor_requires_login"  # the vendor's format needs a login the person lacks
    VENDOR_REQUIRES_FIELD = "vendor_requires_field"  # field: the vendor's format needs it
    VENDOR_REJECTED = "vendor_rejected"  # the vendor refused the person for good (the delivery ledger)
    VENDOR_KEEPS = "vendor_keeps"  # withheld: the vendor keeps what it had
    # Waiting
    HOLD = "hold"  # unit, unit_code: the removal waits for a decision on a mass-deletion hold
    HOLD_DISCARDED = "hold_discarded"  # unit, unit_code: the removal was discarded at a hold, the vendor keeps them
    GRACE_PERIOD = "grace_period"  # until: the removal waits for the subscription's deletion grace period
    REMOVAL_NEXT = "removal_next"  # the next projection sends the removal
    NOT_SENT_YET = "not_sent_yet"  # the next projection sends the person
    IN_DELIVERY = "in_delivery"  # sent to the vendor's queue, not delivered yet
    # Erased
    ERASURE_REQUEST = "erasure_request"  # requested_at
    OBJECTION = "objection"  # requested_at


#: Reasons that add to a verdict rather than give it (shown after it).
NOTES = frozenset(
    {
        ReasonCode.TEST_MODE,
        ReasonCode.PSEUDONYMISED,
        ReasonCode.MINIMAL,
        ReasonCode.UPDATE_PENDING,
        ReasonCode.VENDOR_KEEPS,
    }
)

Param = str | int | list[str] | None


class Reason(Model):
    code: ReasonCode
    params: dict[str, Param] = Field(default_factory=dict)


class VendorVerdict(Model):
    """One subscription's verdict on one person."""

    vendor_id: str
    test_mode: bool
    verdict: Verdict
    reasons: list[Reason]
    #: The id the vendor knows the person by (a pseudonym for a pseudonymised person); None: never sent.
    vendor_entity_id: UUID | None = None
    #: The rule of the selection that decided (``selection.PersonOutcome``), when the selection was asked.
    outcome: str | None = None


@dataclass(frozen=True)
class AtVendor:
    """What the vendor was last sent of the person (the normaliser's vendor view) and what its dispatcher
    last recorded for that version or an earlier one (the delivery ledger)."""

    entity_id: UUID
    present: bool
    version: int
    hash: str | None = None
    removal_pending_since: datetime | None = None
    delivered_version: int | None = None
    #: ``delivered``, ``test``, ``test_rejected`` or ``rejected``.
    delivered_status: str | None = None


@dataclass(frozen=True)
class HeldRemoval:
    """The person's removal waits in a mass-deletion hold of one school unit (``pending``) or was discarded there."""

    school_unit_code: str | None
    status: str


#: The vendor's format check: given the resource the vendor would get, the field it cannot take (None: fine).
FormatCheck = Callable[[dict[str, Any]], str | None]
#: The field of the EGIL format that carries the login.
LOGIN_FIELD = "userName"


def judge(
    state: TenantState,
    findings: Iterable[Finding],
    person_id: UUID,
    subscription: VendorSubscription,
    profile: VendorProfile,
    today: date,
    *,
    suppression: str | None = None,
    at_vendor: AtVendor | None = None,
    held: HeldRemoval | None = None,
    format_check: FormatCheck | None = None,
) -> VendorVerdict:
    """The verdict of ``subscription`` on the person ``person_id`` today. ``state`` and ``findings`` are what
    ``reconcile`` made of (at least) the person's neighbourhood; ``suppression`` is the kind of the person's
    active request at this vendor (``erasure`` or ``objection``), ``at_vendor`` and ``held`` what the vendor
    holds and whether a hold keeps its removal, ``format_check`` the vendor's format (EGIL's needs a login)."""
    names = _Places(state)
    verdict = _Judgement(subscription, at_vendor, held, names)
    stored = next((s for s in state.entities if s.id == person_id and isinstance(s.entity, Person)), None)
    if suppression is not None:
        code = ReasonCode.OBJECTION if suppression == "objection" else ReasonCode.ERASURE_REQUEST
        return verdict.out(Verdict.ERASED, [Reason(code=code)], immediate=True)
    if person_id in state.withheld:
        duplicate = any(f.entity_id == person_id and f.code is FindingCode.EPPN_DUPLICATE for f in findings)
        code = ReasonCode.DUPLICATE_LOGIN if duplicate else ReasonCode.SCHOOL_UNIT_WITHHELD
        return verdict.kept(Reason(code=code))
    if stored is None:
        return verdict.out(Verdict.NOT_SELECTED, [Reason(code=ReasonCode.NOT_IN_SOURCE)])
    if subscription.ended_at is not None:
        return verdict.out(Verdict.NOT_SELECTED, [Reason(code=ReasonCode.SUBSCRIPTION_ENDED)], immediate=True)
    selection = select_person(state, subscription, profile, today, person_id)
    assert selection is not None
    assert isinstance(stored.entity, Person)
    verdict.outcome = selection.outcome.value
    if not selection.selected:
        return verdict.out(*_not_selected(selection.outcome, selection.skipped, stored.entity, state, names))
    if EntityKind.PERSON not in profile.kinds:
        return verdict.out(Verdict.NOT_SELECTED, [Reason(code=ReasonCode.PROFILE_NO_PERSONS)])
    resource = next(
        r
        for r in project(state, subscription, profile, today).values()
        if r.kind is EntityKind.PERSON and (r.source_entity_id or r.id) == person_id
    )
    reasons = [
        Reason(code=ReasonCode.SELECTED, params={"roles": list(resource.roles), "units": names.units(resource)})
        if selection.outcome is PersonOutcome.SELECTED
        else Reason(code=ReasonCode.INCLUDED)
    ]
    if selection.protected and subscription.protected_identity_policy is ProtectedIdentityPolicy.PSEUDONYMISE:
        reasons.append(Reason(code=ReasonCode.PSEUDONYMISED))
    elif selection.protected and subscription.protected_identity_policy is ProtectedIdentityPolicy.MINIMAL:
        reasons.append(Reason(code=ReasonCode.MINIMAL))
    refused = format_check(resource.resource) if format_check is not None else None
    return verdict.selected(resource.id, resource.hash, reasons, refused)


@dataclass
class _Judgement:
    """Turns what the selection decided into a verdict, given what the vendor holds."""

    subscription: VendorSubscription
    at_vendor: AtVendor | None
    held_removal: HeldRemoval | None
    places: _Places
    outcome: str | None = None

    @property
    def present(self) -> bool:
        return self.at_vendor is not None and self.at_vendor.present

    def _verdict(self, verdict: Verdict, reasons: list[Reason], entity_id: UUID | None = None) -> VendorVerdict:
        if self.subscription.test_mode:
            reasons = [*reasons, Reason(code=ReasonCode.TEST_MODE)]
        unique = list({(r.code, repr(sorted(r.params.items()))): r for r in reasons}.values())
        return VendorVerdict(
            vendor_id=self.subscription.vendor_id,
            test_mode=self.subscription.test_mode,
            verdict=verdict,
            reasons=unique,
            vendor_entity_id=entity_id or (self.at_vendor.entity_id if self.at_vendor else None),
            outcome=self.outcome,
        )

    def kept(self, reason: Reason) -> VendorVerdict:
        """Withheld for the data's quality: the vendor keeps whatever it has (the normaliser sends nothing)."""
        notes = [Reason(code=ReasonCode.VENDOR_KEEPS)] if self.present else []
        return self._verdict(Verdict.WITHHELD, [reason, *notes])

    def out(self, verdict: Verdict, reasons: list[Reason], *, immediate: bool = False) -> VendorVerdict:
        """The vendor should not have the person; while it still does, its removal waits for a hold, a grace
        period (never when ``immediate``: erasure requests, objections, ended subscriptions) or the next
        projection."""
        if self.at_vendor is None or not self.at_vendor.present:
            return self._verdict(verdict, reasons)
        removal = self.held_removal
        if removal is not None:
            code = ReasonCode.HOLD if removal.status == "pending" else ReasonCode.HOLD_DISCARDED
            unit = self.places.by_code(removal.school_unit_code) or removal.school_unit_code
            hold = Reason(code=code, params={"unit": unit, "unit_code": removal.school_unit_code})
            return self._verdict(Verdict.WAITING, [hold, *reasons])
        since = self.at_vendor.removal_pending_since
        grace = timedelta(hours=self.subscription.deletion_grace_hours)
        if since is not None and grace and not immediate:
            until = Reason(code=ReasonCode.GRACE_PERIOD, params={"until": (since + grace).isoformat()})
            return self._verdict(Verdict.WAITING, [until, *reasons])
        return self._verdict(Verdict.WAITING, [Reason(code=ReasonCode.REMOVAL_NEXT), *reasons])

    def selected(
        self, entity_id: UUID, resource_hash: str, reasons: list[Reason], refused: str | None
    ) -> VendorVerdict:
        """The vendor should have the person: whether it has them, or what they wait for."""
        if refused is not None:
            login = refused == LOGIN_FIELD
            code = ReasonCode.VENDOR_REQUIRES_LOGIN if login else ReasonCode.VENDOR_REQUIRES_FIELD
            params: dict[str, Param] = {} if login else {"field": refused}
            return self._verdict(Verdict.WITHHELD, [Reason(code=code, params=params), *reasons], entity_id)
        view = self.at_vendor
        if view is None or not view.present or view.entity_id != entity_id:
            return self._verdict(Verdict.WAITING, [Reason(code=ReasonCode.NOT_SENT_YET), *reasons], entity_id)
        if view.delivered_status in ("rejected", "test_rejected") and view.delivered_version == view.version:
            return self._verdict(Verdict.WITHHELD, [Reason(code=ReasonCode.VENDOR_REJECTED), *reasons], entity_id)
        if view.delivered_version is None or view.delivered_version < view.version:
            return self._verdict(Verdict.WAITING, [Reason(code=ReasonCode.IN_DELIVERY), *reasons], entity_id)
        if view.hash is not None and view.hash != resource_hash:
            reasons = [*reasons, Reason(code=ReasonCode.UPDATE_PENDING)]
        return self._verdict(Verdict.DELIVERED, reasons, entity_id)


class _Places:
    """School units and organisations of the state by source key and by code: their names and codes for a
    reason's parameters."""

    def __init__(self, state: TenantState) -> None:
        self.by_key: dict[tuple[str, str], StoredEntity] = {}
        self.codes: dict[str, str] = {}
        self.ids: dict[str, tuple[str, str]] = {}
        for stored in state.entities:
            entity = stored.entity
            if isinstance(entity, SchoolUnit | Organisation):
                self.by_key[(stored.source_id, entity.key)] = stored
            if isinstance(entity, SchoolUnit):
                self.codes[entity.school_unit_code] = entity.display_name
                self.ids[str(stored.id)] = (entity.school_unit_code, entity.display_name)

    def params(self, source_id: str, key: str) -> dict[str, Param]:
        stored = self.by_key.get((source_id, key))
        if stored is None:
            return {"unit": None, "unit_code": None}
        entity = stored.entity
        code = entity.school_unit_code if isinstance(entity, SchoolUnit) else None
        name = entity.display_name if isinstance(entity, SchoolUnit | Organisation) else None
        return {"unit": name or code, "unit_code": code}

    def by_code(self, code: str | None) -> str | None:
        return None if code is None else self.codes.get(code)

    def units(self, resource: Any) -> list[str]:
        """The names of the school units a projected resource is at, by code."""
        return [name for _, name in sorted(self.ids[i] for i in resource.school_unit_ids if i in self.ids)]


_SKIPS: dict[RelationSkip, ReasonCode] = {
    RelationSkip.UNIT_NOT_CHOSEN: ReasonCode.UNIT_NOT_CHOSEN,
    RelationSkip.UNIT_NOT_ACTIVE: ReasonCode.UNIT_NOT_ACTIVE,
    RelationSkip.NOT_ACTIVE: ReasonCode.RELATION_NOT_ACTIVE,
    RelationSkip.SCHOOL_TYPE: ReasonCode.SCHOOL_TYPE,
    RelationSkip.SCHOOL_YEAR: ReasonCode.SCHOOL_YEAR,
    RelationSkip.ROLE: ReasonCode.ROLE,
    RelationSkip.PLACEMENTS_NOT_ASKED: ReasonCode.PLACEMENTS_NOT_ASKED,
    RelationSkip.PLACEMENTS_NOT_TAKEN: ReasonCode.PLACEMENTS_NOT_TAKEN,
}


def _skip_reason(skip: SkippedRelation, names: _Places) -> Reason | None:
    """The reason a relation does not count (None: it does not keep the person out)."""
    code = _SKIPS.get(skip.skip)
    if code is None:
        return None
    if code is ReasonCode.SCHOOL_YEAR and skip.school_year is None:
        code = ReasonCode.SCHOOL_YEAR_MISSING
    params: dict[str, Param] = {
        "relation": skip.relation,
        "role": skip.role.value,
        **names.params(skip.source_id, skip.school_unit),
    }
    if code is ReasonCode.SCHOOL_TYPE:
        params["school_type"] = None if skip.school_type is None else skip.school_type.value
    if code is ReasonCode.SCHOOL_YEAR:
        params["school_year"] = skip.school_year
    return Reason(code=code, params=params)


def _not_selected(
    outcome: PersonOutcome,
    skipped: Iterable[SkippedRelation],
    person: Person,
    state: TenantState,
    names: _Places,
) -> tuple[Verdict, list[Reason]]:
    if outcome is PersonOutcome.EXCLUDED:
        return Verdict.NOT_SELECTED, [Reason(code=ReasonCode.EXCLUDED)]
    if outcome is PersonOutcome.NOT_ACTIVE:
        status = None if person.person_status is None else person.person_status.value
        return Verdict.NOT_SELECTED, [Reason(code=ReasonCode.NOT_ACTIVE, params={"person_status": status})]
    if outcome is PersonOutcome.PROTECTED:
        if person.security_marking is None:
            return Verdict.WITHHELD, [Reason(code=ReasonCode.MARKING_MISSING)]
        marking = person.security_marking.value
        return Verdict.WITHHELD, [Reason(code=ReasonCode.PROTECTED_IDENTITY, params={"security_marking": marking})]
    reasons = [r for s in skipped if (r := _skip_reason(s, names)) is not None]
    return Verdict.NOT_SELECTED, reasons or [Reason(code=ReasonCode.NO_RELATION)]
