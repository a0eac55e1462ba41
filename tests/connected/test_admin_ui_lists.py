"""The admin UI's long lists, paged and searched in the store (issue 21): the audit log of an organiser and
of the platform, the organisers, the access tokens and the sources' runs, on the real Mongo wire server
through aiohttp's test client. Each shows 50 rows a page with its position ("Visar 51-100 av 120", with an
en dash), keeps the search in its page links, and a page past the end shows the last one."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from skolsynk.storage.runs import RUNS
from skolsynk_services.admin.auth import Role
from skolsynk_services.admin.stores import AuditLog
from tests.connected import test_admin_ui_pages as pages
from tests.connected.test_admin_ui_pages import OTHER, TENANT, Ui, check_page

DASH = "\u2013"
#: The UI with an operator signed in and two organisers (the page tests' fixture).
ui = pages.ui

pytestmark = [pytest.mark.connected, pytest.mark.timeout(120), pytest.mark.queues("gdpr.events")]


def rows(html: str, caption: str) -> list[str]:
    """The body rows of the table with this caption (its start)."""
    table = html.split(f"<caption>{caption}", 1)[1].split("</table>", 1)[0]
    return re.findall(r"<tr>(.*?)</tr>", table.split("<tbody>", 1)[1], flags=re.S)


def showing(html: str) -> str:
    found = re.search(r"Visar [\d\u00a0]+\u2013[\d\u00a0]+ av [\d\u00a0]+", html)
    assert found is not None, "no pager"
    return found.group(0).replace("\u00a0", " ")


async def test_the_audit_log_is_paged_and_searched_in_the_store(ui: Ui) -> None:
    audit = AuditLog(ui.app.db)
    for n in range(118):
        await audit.record(actor=f"admin-{n % 7}@kommun.example", role="organiser_admin", tenant_id=TENANT,
                           action="source.sync", target=f"source-{n}")  # fmt: skip
    await audit.record(actor="admin-0@kommun.example", role="organiser_admin", tenant_id=TENANT,
                       action="subscription.go_live", target="ne")  # fmt: skip
    await audit.record(actor="ops@drift.example", role="operator", tenant_id=OTHER, action="source.sync", target="x")
    base = f"/ui/t/{TENANT}/log"

    status, html = await ui.get(base)
    assert status == 200
    check_page(base, html)
    total = 118 + 1 + 1  # and the organiser's creation by the fixture
    assert f"Ändringar, nyaste först ({total})" in html
    assert showing(html) == f"Visar 1{DASH}50 av {total}"
    assert len(rows(html, "Ändringar")) == 50
    assert "Gick live" in rows(html, "Ändringar")[0]  # newest first
    status, html = await ui.get(base + "?sida=3")
    assert showing(html) == f"Visar 101{DASH}{total} av {total}"
    assert len(rows(html, "Ändringar")) == total - 100
    assert (await ui.get(base + "?sida=99"))[1].count("<tr>") == (await ui.get(base + "?sida=3"))[1].count("<tr>")

    # Who, what (the Swedish label: "gick live" is subscription.go_live) and what it concerns.
    status, html = await ui.get(base + "?q=ADMIN-3%40")
    assert showing(html) == f"Visar 1{DASH}17 av 17"
    assert all("admin-3@kommun.example" in row for row in rows(html, "Ändringar"))
    status, html = await ui.get(base + "?q=gick+live")
    assert [row.count("Gick live") for row in rows(html, "Ändringar")] == [1]
    status, html = await ui.get(base + "?q=source-11")
    assert len(rows(html, "Ändringar")) == 9  # source-11 and source-110 ... source-117
    status, html = await ui.get(base + "?q=admin&sida=2")
    assert 'href="/ui/t/kommun-u/log?q=admin&amp;sida=3"' in html  # the search stays in the page links
    status, html = await ui.get(base + "?q=ingen-sadan")
    assert "Inga träffar." in html

    # The platform's log has every organiser; the search finds an organiser's entries by its id.
    status, html = await ui.get(f"/ui/log?q={OTHER}")
    assert status == 200
    assert showing(html) == f"Visar 1{DASH}2 av 2"  # the creation and the sync
    assert all(OTHER in row for row in rows(html, "Ändringar"))


async def test_organisers_tokens_and_runs_are_paged_and_searched(ui: Ui) -> None:
    for n in range(55):
        response = await ui.post("/ui/tenants", {"tenant_id": f"kommun-{n:02d}", "display_name": f"Kommun nr {n}"})
        assert response.status == 303
    status, html = await ui.get("/ui/")
    assert "Alla huvudmän (57)" in html
    assert showing(html) == f"Visar 1{DASH}50 av 57"
    check_page("/ui/", html)
    status, html = await ui.get("/ui/?q=nr+4")
    assert [re.search(r"Kommun nr \d+", row).group(0) for row in rows(html, "Alla huvudmän")] == [  # type: ignore[union-attr]
        "Kommun nr 4",
        *(f"Kommun nr {n}" for n in range(40, 50)),
    ]

    for n in range(52):
        await ui.tokens.create(role=Role.VIEWER, subject=f"larare-{n}@kommun.example", tenant_id=TENANT,
                               created_by="t")  # fmt: skip
    status, html = await ui.get(f"/ui/t/{TENANT}/access")
    assert "Nycklar (52)" in html
    assert showing(html) == f"Visar 1{DASH}50 av 52"
    check_page("access", html)
    status, html = await ui.get(f"/ui/t/{TENANT}/access?q=LARARE-42")
    assert [row.count("larare-42@kommun.example") > 0 for row in rows(html, "Nycklar")] == [True]
    status, html = await ui.get("/ui/operators?sida=2")
    assert (
        showing(html) == f"Visar 51{DASH}53 av 53"
    )  # the operator's own token first: the last page has the organiser's
    assert all(TENANT in row for row in rows(html, "Nycklar"))

    now = datetime.now(UTC)
    runs = [
        {"_id": str(uuid.uuid4()), "tenant_id": TENANT, "source_id": "google-1" if n % 3 else "egil-1",
         "source_kind": "google" if n % 3 else "egil", "mode": "full", "status": "finalised",
         "started_at": now - timedelta(minutes=n), "finalised_at": now - timedelta(minutes=n) + timedelta(seconds=3),
         "completion": {"counts": {"person": 10 + n}, "healthy": True}, "outcome": {"complete": True}}
        for n in range(70)
    ]  # fmt: skip
    await ui.app.db[RUNS].insert_many(runs)
    status, html = await ui.get(f"/ui/t/{TENANT}/sources")
    assert status == 200
    check_page("sources", html)
    assert showing(html) == f"Visar 1{DASH}50 av 70"
    assert len(rows(html, "Senaste körningarna")) == 50
    status, html = await ui.get(f"/ui/t/{TENANT}/sources?q=egil&sida=2")
    assert showing(html) == f"Visar 1{DASH}24 av 24"  # the last page there is
    assert all("egil-1" in row for row in rows(html, "Senaste körningarna"))
    assert '<td class="num">10</td>' in rows(html, "Senaste körningarna")[0]  # the newest: 10 records
