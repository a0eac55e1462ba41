"""A subscription's report, from the delivery ledger: what its vendor would get in test mode (the test
report) or has (live), whether that is final or still being computed, the persons and groups per school
unit a page at a time (searchable), and what the vendor's profile refuses and why.

*Final* is read from what the services keep: the organiser's projection asked for, running or done
(``projection_status``) and the changes the vendor's dispatcher has still to record (``delivery_backlog``).
The ledger holds ids, kinds, school units and roles only: names, logins and group types are joined a page
at a time from the canonical entities, and only for roles that may see personal data (a group's name is
the organiser's, not a person's: everyone sees it)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from skolsynk.domain.selection import pseudonym_id
from skolsynk.domain.ss12000 import VENDOR_KINDS, EntityKind
from skolsynk.domain.subscription import VendorSubscription
from skolsynk.storage import Document
from skolsynk.storage.deliveries import DeliveryLedger, LedgerSummary
from skolsynk.storage.vendor_views import VendorViews
from skolsynk_services.admin import models
from skolsynk_services.admin.auth import Principal
from skolsynk_services.admin.problems import Conflict
from skolsynk_services.admin.service.subscriptions import SubscriptionAdmin

#: The most rows one page of a report's list has.
REPORT_PAGE_LIMIT = 200
#: The most entities a search of a report's list looks among (more: the page says the search was cut).
SEARCH_LIMIT = 2000

#: Why a vendor's profile refuses an entity, by the EGIL attribute the dispatcher could not fill (its
#: ``EgilMappingError``): a stable code per reason, which the UI says in Swedish.
FIELD_REASONS: dict[str, str] = {
    "userName": "no_login",
    "name.givenName": "no_given_name",
    "name.familyName": "no_family_name",
    "displayName": "no_name",
    "schoolUnitCode": "no_school_unit_code",
    "employmentRole": "no_role",
    "externalId": "bad_id",
}
#: Every reason code: the attributes' above, then the rest (docs/admin.md lists them).
REASON_CODES = (
    *FIELD_REASONS.values(),
    "bad_email",
    "bad_reference",
    "reference_refused",
    "vendor_refused",
    "other",
)
_INDEXED = re.compile(r"\[\d+\]")


def reason_code(reason: str | None) -> str:
    """The code of a refusal's recorded reason: ``"<EGIL attribute>: <problem>"`` when the profile cannot
    carry the entity, ``"vendor answered <status>: ..."`` when the vendor's server refused it live,
    ``"<kind>: refers to ..."`` when it needs an entity the vendor refused."""
    if not reason:
        return "other"
    if reason.startswith("vendor answered"):
        return "vendor_refused"
    field, _, problem = reason.partition(": ")
    if problem.startswith("refers to"):
        return "reference_refused"
    if field in FIELD_REASONS:
        return FIELD_REASONS[field]
    plain = _INDEXED.sub("", field)
    if plain.startswith("emails"):
        return "bad_email"
    if plain.endswith(".value") or problem in ("not a UUID", "missing or not a string", "not a reference object"):
        return "bad_reference"
    return "other"


#: The kinds each list shows.
LIST_KINDS: dict[models.ReportList, tuple[str, ...]] = {
    models.ReportList.PERSONS: (EntityKind.PERSON.value,),
    models.ReportList.GROUPS: (EntityKind.GROUP.value,),
    models.ReportList.REFUSED: tuple(k.value for k in VENDOR_KINDS),
}
#: Where a search looks: persons by name, login and e-mail address (or by id, for roles that may not see
#: personal data); everything else by its display name or id.
PERSON_SEARCH = ("_id", "data.given_name", "data.middle_name", "data.family_name", "data.eppn", "data.emails.value")
NAME_SEARCH = ("_id", "data.display_name")
#: What a list shows of an entity's data.
SHOWN = ("given_name", "family_name", "eppn", "display_name", "group_type", "school_unit_code")

Row = models.ReportPerson | models.ReportGroup | models.ReportRefusal


@dataclass(frozen=True)
class ReportPage:
    """A page of a report's list, how many the list has in all, and whether a search found more than
    :data:`SEARCH_LIMIT` entities (then the list is of the first of them: the search should be narrowed)."""

    rows: list[Row]
    total: int
    search_cut: bool = False


class ReportAdmin(SubscriptionAdmin):
    async def test_report(self, principal: Principal, tenant_id: str, vendor_id: str) -> models.SubscriptionReport:
        """What the subscription would send in test mode, and whether that is final. A live or ended
        subscription has no test report (its deliveries are in the delivery report)."""
        subscription = await self._in_test_mode(principal, tenant_id, vendor_id)
        return await self._report(subscription, test=True)

    async def delivered_report(self, principal: Principal, tenant_id: str, vendor_id: str) -> models.SubscriptionReport:
        """The same for what the vendor holds (a live subscription's page)."""
        await self._tenant(principal, tenant_id)
        return await self._report(await self._subscription(tenant_id, vendor_id), test=False)

    async def test_report_list(
        self,
        principal: Principal,
        tenant_id: str,
        vendor_id: str,
        which: models.ReportList,
        *,
        text: str = "",
        school_unit_id: str | None = None,
        skip: int = 0,
        limit: int = REPORT_PAGE_LIMIT,
    ) -> ReportPage:
        await self._in_test_mode(principal, tenant_id, vendor_id)
        return await self._list(principal, tenant_id, vendor_id, which, True, text, school_unit_id, skip, limit)

    async def delivered_list(
        self,
        principal: Principal,
        tenant_id: str,
        vendor_id: str,
        which: models.ReportList,
        *,
        text: str = "",
        school_unit_id: str | None = None,
        skip: int = 0,
        limit: int = REPORT_PAGE_LIMIT,
    ) -> ReportPage:
        await self._tenant(principal, tenant_id)
        await self._subscription(tenant_id, vendor_id)
        return await self._list(principal, tenant_id, vendor_id, which, False, text, school_unit_id, skip, limit)

    async def delivery_report_csv(self, principal: Principal, tenant_id: str, vendor_id: str) -> str:
        await self._tenant(principal, tenant_id)
        await self._subscription(tenant_id, vendor_id)
        return await DeliveryLedger(self.db, vendor_id).report_csv(tenant_id)

    # --- the report ----------------------------------------------------------------------------------

    async def _in_test_mode(self, principal: Principal, tenant_id: str, vendor_id: str) -> VendorSubscription:
        await self._tenant(principal, tenant_id)
        subscription = await self._subscription(tenant_id, vendor_id)
        if subscription.ended_at is not None:
            raise Conflict("the subscription has ended: it has no test report")
        if not subscription.test_mode:
            raise Conflict("the subscription is live: it has no test report (its deliveries are in report.csv)")
        return subscription

    async def _report(self, subscription: VendorSubscription, *, test: bool) -> models.SubscriptionReport:
        tenant_id, vendor_id = subscription.tenant_id, subscription.vendor_id
        ledger = DeliveryLedger(self.db, vendor_id)
        summary = await ledger.summary(tenant_id, test=test)
        units = await self._units({u for u, _ in summary.per_unit_and_role if u != "-"})
        rows = [
            models.ReportUnitRow(
                school_unit_id=None if unit == "-" else unit,
                school_unit_code=units[unit].school_unit_code if unit in units else None,
                display_name=units[unit].display_name if unit in units else None,
                role=role,
                count=count,
            )
            for (unit, role), count in summary.per_unit_and_role.items()
        ]
        rows.sort(key=lambda r: (r.school_unit_code or "~", r.school_unit_id or "~", r.role))
        refused: dict[str, int] = {}
        for reason, count in summary.refused_per_reason.items():
            code = reason_code(reason)
            refused[code] = refused.get(code, 0) + count
        return models.SubscriptionReport(
            vendor_id=vendor_id,
            **await self._state(tenant_id, vendor_id, summary),
            would_send=dict(sorted(summary.per_kind.items())),
            per_school_unit=rows,
            would_be_refused=dict(sorted(summary.refused_per_kind.items())),
            refused_per_reason=dict(sorted(refused.items())),
        )

    async def _state(self, tenant_id: str, vendor_id: str, summary: LedgerSummary) -> dict[str, Any]:
        """Computing while the organiser's projection is asked for or running, or the vendor's dispatcher
        has changes of the pair still to record; ready (since the later of the projection's end and the
        last change recorded) otherwise; not computed when nothing ever was."""
        progress = await self.projection_status.get(tenant_id)
        backlog = await self.delivery_backlog.get(vendor_id, tenant_id)
        if progress.busy:
            return {
                "state": models.ReportState.COMPUTING,
                "projection": "running" if progress.running else "requested",
                "computing_since": progress.started_at if progress.running else progress.requested_at,
                "pending": backlog.pending,
            }
        if backlog.pending:
            return {
                "state": models.ReportState.COMPUTING,
                "computing_since": backlog.oldest_queued_at,
                "pending": backlog.pending,
            }
        times = [t for t in (progress.finished_at, backlog.last_settled_at) if t is not None]
        if summary.empty and not times:
            return {"state": models.ReportState.NOT_COMPUTED, "pending": 0}
        return {"state": models.ReportState.READY, "ready_at": max(times, default=None), "pending": 0}

    # --- its lists -----------------------------------------------------------------------------------

    async def _list(
        self,
        principal: Principal,
        tenant_id: str,
        vendor_id: str,
        which: models.ReportList,
        test: bool,
        text: str,
        school_unit_id: str | None,
        skip: int,
        limit: int,
    ) -> ReportPage:
        """A page of the list: paged and counted in the store; with a search, the entities it finds (at
        most :data:`SEARCH_LIMIT`) are looked up in the ledger by id and paged here."""
        ledger = DeliveryLedger(self.db, vendor_id)
        kinds = LIST_KINDS[which]
        refused = which is models.ReportList.REFUSED
        limit = max(1, min(limit, REPORT_PAGE_LIMIT))
        text = text.strip()
        cut = False
        if text:
            found = await self._search(principal, tenant_id, vendor_id, kinds, text)
            cut = len(found) > SEARCH_LIMIT
            entries = await ledger.listed_among(
                tenant_id, found, test=test, kinds=kinds, refused=refused, school_unit_id=school_unit_id
            )
            total, entries = len(entries), entries[skip : skip + limit]
        else:
            entries, total = await ledger.listed(
                tenant_id,
                test=test,
                kinds=kinds,
                refused=refused,
                school_unit_id=school_unit_id,
                skip=skip,
                limit=limit,
            )
        return ReportPage(await self._rows(principal, tenant_id, vendor_id, which, entries), total, cut)

    async def _search(
        self, principal: Principal, tenant_id: str, vendor_id: str, kinds: tuple[str, ...], text: str
    ) -> list[str]:
        """The ids the vendor knows the entities of ``kinds`` by that ``text`` finds (a protected person's
        pseudonym too); one more than :data:`SEARCH_LIMIT` says there are more."""
        found: list[str] = []
        fields: tuple[str, ...]
        for kind in kinds:
            if kind == EntityKind.PERSON.value:
                fields = PERSON_SEARCH if principal.may_see_personal_data else ("_id",)
            else:
                fields = NAME_SEARCH
            found += await self.entities.matching(
                tenant_id, EntityKind(kind), text, fields, limit=SEARCH_LIMIT + 1 - len(found)
            )
            if len(found) > SEARCH_LIMIT:
                break
        pseudonyms = [str(pseudonym_id(tenant_id, vendor_id, UUID(e))) for e in found[:SEARCH_LIMIT] if _is_uuid(e)]
        return [*found, *pseudonyms]

    async def _rows(
        self,
        principal: Principal,
        tenant_id: str,
        vendor_id: str,
        which: models.ReportList,
        entries: list[Document],
    ) -> list[Row]:
        """The page's entries with their school units and (as the principal may see them) names: one read
        of the vendor's views (whose entity a pseudonym is), one of the entities, one of the units."""
        ids = [e["entity_id"] for e in entries]
        sources = await VendorViews(self.db).sources_of(tenant_id, vendor_id, ids) if ids else {}
        shown = await self.entities.shown({sources.get(i, i) for i in ids}, SHOWN)
        units = await self._units({u for e in entries for u in e.get("school_unit_ids") or []})
        personal = principal.may_see_personal_data
        rows: list[Row] = []
        for entry in entries:
            entity_id: str = entry["entity_id"]
            source = sources.get(entity_id, entity_id)
            data = (shown.get(source) or {}).get("data") or {}
            at_units = [
                units.get(u) or models.ReportSchoolUnit(school_unit_id=u) for u in entry.get("school_unit_ids") or []
            ]
            person = entry["kind"] == EntityKind.PERSON.value
            name = _name(data) if personal or not person else None
            if which is models.ReportList.PERSONS:
                eppn = data.get("eppn") or []
                rows.append(
                    models.ReportPerson(
                        entity_id=entity_id,
                        person_id=source,
                        pseudonymised=source != entity_id,
                        name=name,
                        login=str(eppn[0]) if personal and eppn else None,
                        roles=list(entry.get("roles") or []),
                        school_units=at_units,
                        at=entry["at"],
                    )
                )
            elif which is models.ReportList.GROUPS:
                rows.append(
                    models.ReportGroup(
                        entity_id=entity_id,
                        name=name,
                        group_type=data.get("group_type"),
                        members=entry.get("members"),
                        school_units=at_units,
                        at=entry["at"],
                    )
                )
            else:
                rows.append(
                    models.ReportRefusal(
                        entity_id=entity_id,
                        kind=entry["kind"],
                        name=name,
                        roles=list(entry.get("roles") or []),
                        school_units=at_units,
                        reason=entry.get("reason"),
                        reason_code=reason_code(entry.get("reason")),
                        at=entry["at"],
                    )
                )
        return rows

    async def _units(self, ids: set[str]) -> dict[str, models.ReportSchoolUnit]:
        """School units by id, with their code and name (one read)."""
        shown = await self.entities.shown(ids, ("display_name", "school_unit_code")) if ids else {}
        return {
            unit: models.ReportSchoolUnit(
                school_unit_id=unit,
                school_unit_code=(shown.get(unit) or {}).get("data", {}).get("school_unit_code"),
                display_name=(shown.get(unit) or {}).get("data", {}).get("display_name"),
            )
            for unit in ids
        }


def _name(data: dict[str, Any]) -> str | None:
    person = " ".join(str(data[n]) for n in ("given_name", "family_name") if data.get(n))
    return person or data.get("display_name") or None


def _is_uuid(value: str) -> bool:
    try:
        UUID(value)
    except ValueError:
        return False
    return True
