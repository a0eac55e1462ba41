"""The subscription form and its warnings on the real broker and the Mongo wire server: the per-unit
counts the store aggregates, the API's preview and subscription warning of a filter combination that
selects no students at a chosen unit, every filter of the model saved through the API and through the
form (with errors per field), and the preview's lists searched and paged.

The organiser: Skola 1 (grundskola, years 1-9) and Granmogymnasiet (gymnasieskola, years 1-3), 30
students and a teacher each, a class per year."""

from __future__ import annotations

import re
import uuid
from datetime import date
from typing import Any

import pytest

from skolsynk.contracts.source import SourceRecord
from skolsynk.domain.ss12000 import EntityKind, GroupType, SchoolType
from skolsynk.domain.subscription import MassDeletionGuard, ProtectedIdentityPolicy, Role
from skolsynk.settings import ServiceSettings
from skolsynk.storage.entities import EntityReader
from skolsynk.storage.subscriptions import SubscriptionStore
from skolsynk_services.normaliser.app import NormaliserSettings
from skolsynk_services.normaliser.app import build as build_normaliser
from skolsynk_testkit.synthetic import full_run, organiser, school_unit_codes
from tests.connected import test_admin_api, test_admin_ui_pages
from tests.connected.test_admin_api import TENANT as API_TENANT
from tests.connected.test_admin_api import Admin
from tests.connected.test_admin_ui_pages import TENANT as UI_TENANT
from tests.connected.test_admin_ui_pages import Ui, check_page
from tests.helpers import wait_for

#: The admin API's and the UI's test services (their modules' fixtures).
admin = test_admin_api.admin
ui = test_admin_ui_pages.ui

pytestmark = [
    pytest.mark.connected,
    pytest.mark.timeout(120),
    pytest.mark.queues("normaliser.source-events", "normaliser.projections", "gdpr.events"),
]

STUDENTS = 30  # per unit: more than a preview page (50) for both units together


def granmo_organiser(students: int = STUDENTS) -> list[SourceRecord]:
    """Skola 1 (grundskola, years 1-9) and Granmogymnasiet (gymnasieskola, years 1-3), ``students`` each
    and a teacher each (the browser test's organiser too)."""
    records = []
    for record in organiser(seed=31, school_units=2, students_per_unit=students, teachers_per_unit=1):
        data = dict(record.data)
        if record.kind is EntityKind.SCHOOL_UNIT and record.key == "unit-1":
            data |= {"display_name": "Granmogymnasiet", "school_types": ["GY"]}
        elif record.kind is EntityKind.PERSON and record.key.startswith("student-1-"):
            n = int(record.key.rsplit("-", 1)[1])
            data["enrolments"] = [{**e, "school_type": "GY", "school_year": 1 + n % 3} for e in data["enrolments"]]
        elif record.kind is EntityKind.GROUP and data.get("school_unit") == "unit-1":
            data["school_type"] = "GY"
        records.append(SourceRecord(kind=record.kind, key=record.key, data=data))
    return records


RECORDS = granmo_organiser()
SKOLA_1, GRANMO = school_unit_codes(RECORDS)


async def seed(settings: ServiceSettings, tenant_id: str) -> None:
    """The organiser's EGIL snapshot through the real normaliser, into ``tenant_id``."""
    normaliser = build_normaliser(
        NormaliserSettings.model_validate({**settings.model_dump(), "date_check_interval_seconds": 86400})
    )
    try:
        await normaliser.start()
        run_id = uuid.uuid4()
        for message in full_run(RECORDS, source_id="egil-1", source_kind="egil", run_id=run_id):
            await normaliser.publisher.publish(
                message.to_envelope(tenant_id=tenant_id, producer="test"),
                exchange=normaliser.topology.exchange("source"),
                routing_key=f"egil.{tenant_id}",
            )

        async def finalised() -> bool:
            run = await normaliser.db["runs"].find_one({"_id": str(run_id)})
            return run is not None and run.get("status") == "finalised"

        await wait_for(finalised, timeout=30, interval=0.1, what="the organiser's run")
    finally:
        await normaliser.drain(1)
        await normaliser.close()


# --- the store's counts and the API -------------------------------------------------------------------


async def test_the_store_counts_each_units_students_staff_and_groups_in_one_aggregation(admin: Admin):
    await seed(admin.settings, API_TENANT)
    populations = await EntityReader(admin.app.db).unit_populations(API_TENANT, date.today())
    assert set(populations) == {SKOLA_1, GRANMO}
    skola, granmo = populations[SKOLA_1], populations[GRANMO]
    assert granmo.name == "Granmogymnasiet"
    assert dict(granmo.students) == {(SchoolType.GY, 1): 10, (SchoolType.GY, 2): 10, (SchoolType.GY, 3): 10}
    assert {y for _, y in skola.students} == set(range(1, 10))
    assert skola.student_count == STUDENTS
    assert skola.student_school_types == (SchoolType.GR,)
    assert dict(skola.staff) == dict(granmo.staff) == {Role.TEACHER: 1}
    assert dict(granmo.groups) == {GroupType.KLASS: 9}  # the generator's classes, by its years 1-9
    # A person no longer active, an enrolment ended and a duty not yet begun are not counted.
    entities = admin.app.db["entities"]
    await entities.update_one(
        {"tenant_id": API_TENANT, "kind": "person", "data.enrolments.school_unit": "unit-1"},
        {"$set": {"data.person_status": "Utvandrad"}},
    )
    await entities.update_one(
        {"tenant_id": API_TENANT, "kind": "person", "data.enrolments.school_unit": "unit-0"},
        {"$set": {"data.enrolments.0.end_date": "2020-06-15"}},
    )
    await entities.update_many(
        {"tenant_id": API_TENANT, "kind": "duty", "data.school_unit": "unit-0"},
        {"$set": {"data.start_date": "2999-08-01"}},
    )
    populations = await EntityReader(admin.app.db).unit_populations(API_TENANT, date.today())
    assert (populations[GRANMO].student_count, populations[SKOLA_1].student_count) == (STUDENTS - 1, STUDENTS - 1)
    assert dict(populations[SKOLA_1].staff) == {}


async def test_the_api_preview_warns_of_years_7_to_9_at_an_upper_secondary_school(admin: Admin):
    await seed(admin.settings, API_TENANT)
    token = await admin.token_for(API_TENANT)
    wanted = {"school_unit_codes": [SKOLA_1, GRANMO], "school_years": [7, 8, 9]}
    status, preview = await admin.call("POST", f"/tenants/{API_TENANT}/subscriptions/binogi/preview", token, wanted)
    assert status == 200, preview
    assert preview["totals"]["teacher"] == 2  # Granmogymnasiet's teacher still goes: the warning says why
    [warning] = preview["warnings"]
    assert warning == {
        "school_unit_code": GRANMO,
        "school_unit_name": "Granmogymnasiet",
        "missing": "students",
        "cause": "school_years",
        "chosen_school_types": [],
        "chosen_school_years": [7, 8, 9],
        "chosen_group_types": [],
        "unit_school_types": ["GY"],
        "unit_school_years": [1, 2, 3],
        "unit_group_types": [],
        "message": "No students at Granmogymnasiet: years 7\u20139 are not there (school types there: GY; "
        "years 1\u20133).",
    }
    fixed = {**wanted, "school_years": [1, 7, 8, 9]}
    status, preview = await admin.call("POST", f"/tenants/{API_TENANT}/subscriptions/binogi/preview", token, fixed)
    assert (status, preview["warnings"]) == (200, [])


async def test_every_filter_is_saved_through_the_api_and_the_subscription_warns(admin: Admin):
    await seed(admin.settings, API_TENANT)
    token = await admin.token_for(API_TENANT)
    path = f"/tenants/{API_TENANT}/subscriptions/binogi"
    every = {
        "school_unit_codes": [SKOLA_1, GRANMO],
        "roles": ["student", "teacher"],
        "school_types": ["GR"],
        "school_years": [7, 8, 9],
        "group_types": ["Klass", "Mentor"],
        "placements": True,
        "fields": {"person": ["given_name", "eppn"], "group": ["display_name"]},
        "protected_identity_policy": "pseudonymise",
        "deletion_grace_hours": 12,
        "guard": {"max_removals": 10, "max_percent": 5.5, "percent_applies_from": 2},
    }
    status, saved = await admin.call("PUT", path, token, every)
    assert status == 200, saved
    stored = await SubscriptionStore(admin.app.db).get(API_TENANT, "binogi")
    assert stored is not None
    assert stored.school_types == {SchoolType.GR}
    assert stored.school_years == {7, 8, 9}
    assert stored.group_types == {GroupType.KLASS, GroupType.MENTOR}
    assert stored.placements
    assert stored.fields == {EntityKind.PERSON: {"given_name", "eppn"}, EntityKind.GROUP: {"display_name"}}
    assert stored.protected_identity_policy is ProtectedIdentityPolicy.PSEUDONYMISE
    assert stored.deletion_grace_hours == 12
    assert stored.guard == MassDeletionGuard(max_removals=10, max_percent=5.5, percent_applies_from=2)
    # Granmogymnasiet has neither grundskola nor years 7-9; the PUT's answer and GET both say so.
    for subscription in (saved, (await admin.call("GET", path, token))[1]):
        assert [(w["school_unit_code"], w["missing"], w["cause"]) for w in subscription["warnings"]] == [
            (GRANMO, "students", "school_types_and_years")
        ]
    _, listed = await admin.call("GET", f"/tenants/{API_TENANT}/subscriptions", token)
    assert listed[0]["warnings"] is None  # lists do not count
    # A change without a guard keeps the subscription's; one with a bad guard is refused, naming it.
    status, _ = await admin.call("PUT", path, token, {**every, "guard": None, "school_types": None})
    assert status == 200
    stored = await SubscriptionStore(admin.app.db).get(API_TENANT, "binogi")
    assert stored is not None
    assert (stored.guard.max_removals, stored.school_types) == (10, None)
    status, problem = await admin.call("PUT", path, token, {**every, "guard": {"max_percent": 200}})
    assert status == 422
    assert [e["field"] for e in problem["errors"]] == ["guard.max_percent"]


# --- the form --------------------------------------------------------------------------------------------


def form(**changes: Any) -> dict[str, Any]:
    """The form as a browser sends it for NE (every input; unchecked boxes absent)."""
    values: dict[str, Any] = {
        "vendor_id": "ne",
        "school_unit_codes": [SKOLA_1, GRANMO],
        "roles": ["student", "teacher"],
        "fields_vendor": "ne",
        "fields": checked_default(),
        "protected_identity_policy": "exclude",
        "deletion_grace_hours": "0",
        "guard_max_removals": "50",
        "guard_max_percent": "20",
        "guard_percent_applies_from": "5",
    }
    return values | changes


def checked(html: str, name: str) -> set[str]:
    return set(re.findall(rf'<input type="checkbox" name="{name}" value="([^"]+)"[^>]* checked', html))


async def test_the_form_edits_every_filter_and_warns_before_saving(ui: Ui, settings: ServiceSettings):
    await seed(settings, UI_TENANT)
    # NE's dispatcher keeps its profile in the store, where the selection (and the form) read it.
    ne = ui.service.catalogue.get("ne")
    assert ne is not None
    await SubscriptionStore(ui.app.db).save_profile(ne.profile)
    await ui.login(await ui.token_for(UI_TENANT))
    base = f"/ui/t/{UI_TENANT}/vendors"

    # The new form: every unit with what it has; school types of the organiser; every group type; NE's fields.
    status, html = await ui.get(f"{base}/new?vendor_id=ne")
    assert status == 200
    check_page("new subscription", html)
    assert "Gymnasieskola, årskurs 1\u20133: 30 elever, 1 lärare, 0 övrig personal" in html
    assert "Grundskola, årskurs 1\u20139: 30 elever" in html
    assert set(re.findall(r'name="school_types" value="([^"]+)"', html)) == {"GR", "GY"}
    assert set(re.findall(r'name="group_types" value="([^"]+)"', html)) == {t.value for t in GroupType}
    assert checked(html, "fields") == set(checked_default())

    # Years 7-9 with the upper-secondary school: the preview names the unit and the filter.
    response = await ui.post(f"{base}/new", form(school_years=["7", "8", "9"], action="preview"))
    html = await response.text()
    assert response.status == 200
    check_page("preview with a warning", html)
    assert "Inga elever på Granmogymnasiet: årskurs 7\u20139 finns inte där (skolformen är gymnasieskola)." in html
    assert await SubscriptionStore(ui.app.db).get(UI_TENANT, "ne") is None

    # Saved with every filter; the edit form shows each as saved; the subscription's page warns.
    every = form(school_types=["GY"], school_years=["7", "8", "9"], group_types=["Klass", "Mentor"],
                 fields=["person.given_name", "person.eppn", "group.display_name"],
                 protected_identity_policy="minimal", deletion_grace_hours="1,5", guard_max_removals="7",
                 guard_max_percent="12,5", guard_percent_applies_from="3", action="save")  # fmt: skip
    response = await ui.post(f"{base}/new", every)
    assert response.status == 303, await response.text()
    saved = await SubscriptionStore(ui.app.db).get(UI_TENANT, "ne")
    assert saved is not None
    assert (saved.school_types, saved.school_years) == ({SchoolType.GY}, {7, 8, 9})
    assert saved.group_types == {GroupType.KLASS, GroupType.MENTOR}
    assert saved.fields == {
        EntityKind.ORGANISATION: set(),
        EntityKind.SCHOOL_UNIT: set(),
        EntityKind.PERSON: {"given_name", "eppn"},
        EntityKind.GROUP: {"display_name"},
    }
    assert saved.protected_identity_policy is ProtectedIdentityPolicy.MINIMAL
    assert saved.deletion_grace_hours == 1.5
    assert saved.guard == MassDeletionGuard(max_removals=7, max_percent=12.5, percent_applies_from=3)
    status, html = await ui.get(f"{base}/ne/edit")
    assert (checked(html, "school_types"), checked(html, "school_years")) == ({"GY"}, {"7", "8", "9"})
    assert checked(html, "group_types") == {"Klass", "Mentor"}
    assert checked(html, "fields") == {"person.given_name", "person.eppn", "group.display_name"}
    assert 'id="f-guard_max_percent" name="guard_max_percent" value="12,5"' in html
    status, html = await ui.get(f"{base}/ne")
    assert status == 200
    assert "årskurs 7\u20139 · skolformen gymnasieskola · grupptyperna klass och mentorsgrupp" in html
    # Gymnasieskola and years 7-9 exist at neither unit, separately or together.
    assert "Inga elever på Granmogymnasiet: årskurs 7\u20139 finns inte där (skolformen är gymnasieskola)." in html
    assert "Inga elever på Skola 1: skolformen gymnasieskola finns inte där (skolformen är grundskola)." in html
    # Back to every year and type: the fields left as NE's profile gives them are saved as no narrowing.
    response = await ui.post(f"{base}/ne/edit", form(action="save", fields=checked_default()))
    assert response.status == 303
    saved = await SubscriptionStore(ui.app.db).get(UI_TENANT, "ne")
    assert saved is not None
    assert (saved.school_types, saved.school_years, saved.group_types, saved.fields) == (None, None, None, None)
    status, html = await ui.get(f"{base}/ne")
    assert "Kontrollera urvalet" not in html


def checked_default() -> list[str]:
    """The fields NE's profile accepts: what the form checks for a subscription that does not narrow them."""
    return [
        "organisation.display_name", "organisation.organisation_number", "school_unit.display_name",
        "school_unit.school_unit_code", "school_unit.school_types", "person.given_name", "person.family_name",
        "person.eppn", "person.enrolments", "group.display_name", "group.group_type", "group.school_type",
    ]  # fmt: skip


async def test_the_forms_errors_are_told_at_each_field(ui: Ui, settings: ServiceSettings):
    await seed(settings, UI_TENANT)
    await ui.login(await ui.token_for(UI_TENANT))
    base = f"/ui/t/{UI_TENANT}/vendors"
    bad = form(guard_max_percent="200", guard_max_removals="många", school_types=["XX"], action="preview")
    response = await ui.post(f"{base}/new", bad)
    html = await response.text()
    assert response.status == 422
    check_page("invalid subscription form", html)
    assert 'id="f-guard_max_percent-error">Skriv en andel mellan 0 och 100.' in html
    assert 'id="f-guard_max_removals-error">Skriv ett heltal, 0 eller mer.' in html
    assert re.search(r'id="f-guard_max_percent" name="guard_max_percent" value="200"\s+autocomplete="off"\s+'
                     r'aria-invalid="true"', html)  # fmt: skip
    assert 'id="school-types-error">Välj skolformer ur listan.' in html
    assert 'value="GR" aria-invalid="true"' in html
    assert "f-guard_percent_applies_from-error" not in html
    assert await SubscriptionStore(ui.app.db).get(UI_TENANT, "ne") is None


async def test_the_previews_lists_are_searched_and_paged(ui: Ui, settings: ServiceSettings):
    await seed(settings, UI_TENANT)
    await ui.login(await ui.token_for(UI_TENANT))
    base = f"/ui/t/{UI_TENANT}/vendors"
    response = await ui.post(f"{base}/new", form(action="preview"))
    html = await response.text()
    added = 2 * STUDENTS + 2
    assert f"Läggs till: {added} personer" in html
    assert f"Visar 1\u201350 av {added}" in html
    assert len(rows_of(html, "added")) == 50
    assert 'name="preview_pages" value="2:1"' in html

    response = await ui.post(f"{base}/new", form(preview_pages="2:1"))  # a page button: no action, a preview
    html = await response.text()
    assert f"Visar 51\u2013{added} av {added}" in html
    assert len(rows_of(html, "added")) == added - 50
    assert 'aria-current="page">2<' in html

    response = await ui.post(f"{base}/new", form(action="preview", q="granmo"))
    html = await response.text()
    assert f"Läggs till: {added} personer ({STUDENTS + 1} av {added} matchar sökningen)" in html
    found = rows_of(html, "added")
    assert len(found) == STUDENTS + 1
    assert all("Granmogymnasiet (" in row and "Skola 1 (" not in row for row in found)


def rows_of(html: str, key: str) -> list[str]:
    """The body rows of one of the preview's lists (``added`` or ``removed``)."""
    table = html.split(f'id="lista-{key}"', 1)[1].split("</table>", 1)[0]
    return re.findall(r"<tr><td>.*?</tr>", table.split("<tbody>", 1)[1], flags=re.S)
