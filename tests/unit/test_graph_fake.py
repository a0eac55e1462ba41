"""The fake Graph Education API and Entra token endpoint: token grant and expiry, paging with absolute
next links, delta rounds (empty pages, partial updates, tombstones, members@delta, replays), expired
delta tokens, throttling and Graph's error envelope; and the loader from a synthetic organiser."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest

from skolsynk.domain.ss12000 import EntityKind
from skolsynk_testkit.fakes.graph_education import FakeGraphEducation
from skolsynk_testkit.synthetic import organiser

pytestmark = [pytest.mark.unit, pytest.mark.timeout(20)]


def user(n: int, **extra: Any) -> dict[str, Any]:
    return {
        "id": f"00000000-0000-0000-0000-{n:012d}",
        "primaryRole": "student",
        "givenName": f"Elev{n}",
        "surname": "Testsson",
        "userPrincipalName": f"elev{n}@skola.example",
        "student": {"externalId": f"sis-{n}", "grade": "7"},
        **extra,
    }


@pytest.fixture
async def fake() -> AsyncIterator[FakeGraphEducation]:
    api = FakeGraphEducation(default_page_size=3, delta_page_size=3)
    try:
        await api.start()
        yield api
    finally:
        await api.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


class Graph:
    def __init__(self, fake: FakeGraphEducation, http: aiohttp.ClientSession) -> None:
        self.fake = fake
        self.http = http
        self.token = fake.issue_token()

    async def get(
        self, url: str, params: dict[str, str] | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, Any, Any]:
        if not url.startswith("http"):
            url = f"{self.fake.graph_base_url}/education/{url}"
        all_headers = {"Authorization": f"Bearer {self.token}", **(headers or {})}
        async with self.http.get(url, params=params, headers=all_headers) as response:
            return response.status, await response.json(content_type=None), response.headers

    async def round(self, start: str, params: dict[str, str] | None = None) -> tuple[list[list[Any]], str]:
        """Every page's value of a delta round, and its delta link."""
        pages: list[list[Any]] = []
        url, query = start, params
        while True:
            status, body, _ = await self.get(url, query)
            assert status == 200, body
            pages.append(body["value"])
            if "@odata.deltaLink" in body:
                assert "@odata.nextLink" not in body
                return pages, body["@odata.deltaLink"]
            url, query = body["@odata.nextLink"], None


@pytest.fixture
def graph(fake: FakeGraphEducation, http: aiohttp.ClientSession) -> Graph:
    return Graph(fake, http)


async def test_token_endpoint_grants_and_refuses_in_entra_shape(
    fake: FakeGraphEducation, http: aiohttp.ClientSession
) -> None:
    form = {
        "grant_type": "client_credentials",
        "client_id": fake.client_id,
        "client_secret": fake.client_secret,
        "scope": "https://graph.microsoft.com/.default",
    }
    async with http.post(fake.token_url, data=form) as response:
        assert response.status == 200
        body = await response.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 3599
    assert body["access_token"].count(".") == 2  # JWT-shaped
    async with http.post(fake.token_url, data={**form, "client_secret": "wrong"}) as response:
        assert response.status == 401
        error = await response.json()
    assert error["error"] == "invalid_client"
    assert error["error_codes"] == [7000215]
    assert {"trace_id", "correlation_id", "timestamp"} <= set(error)
    async with http.post(fake.token_url, data={**form, "scope": "User.Read"}) as response:
        assert response.status == 400
        assert (await response.json())["error"] == "invalid_scope"
    other_tenant = fake.token_url.replace(fake.azure_tenant_id, "unknown-tenant")
    async with http.post(other_tenant, data=form) as response:
        assert response.status == 400
        assert (await response.json())["error_codes"] == [90002]


async def test_expired_or_missing_tokens_get_graphs_401(graph: Graph) -> None:
    graph.token = "nonsense"
    status, body, headers = await graph.get("users")
    assert status == 401
    assert body["error"]["code"] == "InvalidAuthenticationToken"
    assert {"date", "request-id", "client-request-id"} <= set(body["error"]["innerError"])
    assert headers["WWW-Authenticate"].startswith("Bearer")
    graph.token = graph.fake.issue_token()
    assert (await graph.get("users"))[0] == 200
    graph.fake.expire_tokens()
    assert (await graph.get("users"))[0] == 401


async def test_missing_roles_are_403(graph: Graph) -> None:
    graph.fake.put_class({"id": "c1", "displayName": "7A"}, members=[])
    graph.token = graph.fake.issue_token(roles=["EduRoster.Read.All"])
    assert (await graph.get("classes/c1"))[0] == 200
    status, body, _ = await graph.get("classes/c1/members")
    assert status == 403
    assert body["error"]["code"] == "Authorization_RequestDenied"
    graph.token = graph.fake.issue_token(roles=[])
    assert (await graph.get("schools"))[0] == 403


async def test_listing_pages_with_absolute_next_links_and_top(graph: Graph) -> None:
    for n in range(1, 8):
        graph.fake.put_user(user(n))
    status, body, _ = await graph.get("users", {"$select": "id,givenName"})
    seen = [u["id"] for u in body["value"]]
    assert set(body["value"][0]) == {"id", "givenName"}
    assert body["@odata.context"].endswith("$metadata#education/users")
    pages = 1
    while "@odata.nextLink" in body:
        link = body["@odata.nextLink"]
        parts = urlsplit(link)
        assert link.startswith(graph.fake.graph_base_url)
        assert set(parse_qs(parts.query)) == {"$skiptoken"}  # the query options travel in the token
        status, body, _ = await graph.get(link)
        assert status == 200
        assert set(body["value"][0]) == {"id", "givenName"}
        seen += [u["id"] for u in body["value"]]
        pages += 1
    assert pages == 3
    assert seen == [user(n)["id"] for n in range(1, 8)]
    status, body, _ = await graph.get("users", {"$top": "10"})
    assert len(body["value"]) == 7
    assert "@odata.nextLink" not in body
    status, body, _ = await graph.get("users", {"$top": "1000"})
    assert status == 400
    assert body["error"]["code"] == "BadRequest"
    status, body, _ = await graph.get("users/nope")
    assert status == 404
    assert body["error"]["code"] == "Request_ResourceNotFound"


@pytest.mark.parametrize("suffix", ["delta", "delta()", "microsoft.graph.delta"])
async def test_delta_rounds_report_changes_removals_and_membership(graph: Graph, suffix: str) -> None:
    fake = graph.fake
    fake.removals_in_delta = frozenset({"schools", "users", "classes"})  # the kinder behaviour, asked for
    fake.empty_delta_pages = 1
    for n in range(1, 6):
        fake.put_user(user(n))
    fake.put_class({"id": "c1", "displayName": "7A"}, members=[user(1)["id"]])

    pages, link = await graph.round(f"users/{suffix}", {"$select": "id,givenName,surname,student"})
    assert pages[0] == []  # an empty page with a next link
    assert pages[-1] == []  # the delta link comes on a page of its own
    entries = [e for page in pages for e in page]
    assert len(entries) == 5
    assert set(entries[0]) == {"@odata.type", "id", "givenName", "surname", "student"}
    assert "$deltatoken" in parse_qs(urlsplit(link).query)
    _, class_link = await graph.round(f"classes/{suffix}")

    # Nothing changed: an (empty) round and a new link.
    pages, link = await graph.round(link)
    assert [e for page in pages for e in page] == []

    fake.update_user(user(2)["id"], surname="Nyström")
    fake.remove_user(user(3)["id"], reason="changed")
    fake.remove_user(user(4)["id"])
    fake.put_user(user(9))
    fake.change_class_members("c1", add=[user(9)["id"]], remove=[user(1)["id"]])
    pages, link = await graph.round(link)
    entries = {e["id"]: e for page in pages for e in page}
    assert entries[user(2)["id"]] == {
        "@odata.type": "#microsoft.graph.educationUser",
        "id": user(2)["id"],
        "surname": "Nyström",
    }
    assert entries[user(3)["id"]] == {"id": user(3)["id"], "@removed": {"reason": "changed"}}
    assert entries[user(4)["id"]] == {"id": user(4)["id"], "@removed": {"reason": "deleted"}}
    assert entries[user(9)["id"]]["givenName"] == "Elev9"  # new: the whole object (selected properties)
    assert "userPrincipalName" not in entries[user(9)["id"]]  # $select is kept in the token
    class_pages, _ = await graph.round(class_link)
    (klass,) = [e for page in class_pages for e in page]
    assert klass["id"] == "c1"
    assert {"@odata.type": "#microsoft.graph.user", "id": user(9)["id"]} in klass["members@delta"]
    assert {
        "@odata.type": "#microsoft.graph.user",
        "id": user(1)["id"],
        "@removed": {"reason": "deleted"},
    } in klass["members@delta"]

    # Replays: the same change twice in one round.
    fake.replay_changes = True
    fake.update_user(user(5)["id"], givenName="Ny")
    pages, _ = await graph.round(link)
    assert [e["id"] for page in pages for e in page] == [user(5)["id"], user(5)["id"]]


async def test_a_select_limits_what_delta_tracks(graph: Graph) -> None:
    """As Graph documents for groups: with a ``$select`` only changes of the selected properties are
    reported, and membership changes only when ``members`` is selected; without one, class delta reports
    membership changes ("including membership changes") and user delta every property. Issue 23."""
    fake = graph.fake
    fake.put_user(user(1))
    fake.put_user(user(2))
    fake.put_class({"id": "c1", "displayName": "7A"}, members=[user(1)["id"]])
    _, selected_users = await graph.round("users/delta", {"$select": "id,surname"})
    _, all_users = await graph.round("users/delta")
    _, selected_classes = await graph.round("classes/delta", {"$select": "id,displayName"})
    _, member_classes = await graph.round("classes/delta", {"$select": "id,displayName,members"})
    _, all_classes = await graph.round("classes/delta")

    fake.update_user(user(1)["id"], givenName="Ny")  # not selected in selected_users
    fake.update_user(user(2)["id"], surname="Nyström")
    fake.change_class_members("c1", add=[user(2)["id"]])

    async def entries(link: str) -> list[dict[str, Any]]:
        pages, _ = await graph.round(link)
        return [e for page in pages for e in page]

    assert [e["id"] for e in await entries(selected_users)] == [user(2)["id"]]
    assert {e["id"] for e in await entries(all_users)} == {user(1)["id"], user(2)["id"]}
    assert await entries(selected_classes) == []
    for link in (member_classes, all_classes):
        (klass,) = await entries(link)
        assert klass["members@delta"] == [{"@odata.type": "#microsoft.graph.user", "id": user(2)["id"]}]


async def test_expired_delta_tokens(graph: Graph) -> None:
    graph.fake.put_user(user(1))
    _, link = await graph.round("users/delta", {"$select": "id,surname"})
    graph.fake.expire_delta_tokens()
    status, body, _ = await graph.get(link)
    assert status == 400
    assert body["error"]["code"] == "syncStateNotFound"

    _, link = await graph.round("users/delta", {"$select": "id,surname"})
    graph.fake.expire_delta_tokens("gone")
    status, body, headers = await graph.get(link)
    assert status == 410
    assert body["error"]["code"] == "resyncRequired"
    fresh = headers["Location"]
    pages, _ = await graph.round(fresh)
    assert [set(e) for page in pages for e in page] == [{"@odata.type", "id", "surname"}]

    # Seven days is the limit.
    clock = [0.0]
    graph.fake._clock = lambda: clock[0]
    graph.token = graph.fake.issue_token()
    _, link = await graph.round("users/delta")
    clock[0] += 7 * 24 * 3600 + 1
    graph.token = graph.fake.issue_token()
    status, body, _ = await graph.get(link)
    assert (status, body["error"]["code"]) == (400, "syncStateNotFound")


@pytest.mark.parametrize(("retry_after", "status"), [("2", 429), ("0.25", 429), (None, 429), ("1.5", 503), (None, 504)])
async def test_throttling_answers(graph: Graph, retry_after: str | None, status: int) -> None:
    graph.fake.throttle(2, retry_after=retry_after, status=status)
    for _ in range(2):
        answer, body, headers = await graph.get("schools")
        assert answer == status
        assert headers.get("Retry-After") == retry_after
        assert body["error"]["code"] == ("TooManyRequests" if status == 429 else "serviceNotAvailable")
        assert "innerError" in body["error"]
    assert (await graph.get("schools"))[0] == 200
    assert [r.status for r in graph.fake.requests] == [status, status, 200]


async def test_a_failing_page_fails_always(graph: Graph) -> None:
    for n in range(1, 8):
        graph.fake.put_user(user(n))
    graph.fake.fail_page("users/delta", 1, status=500)
    status, body, _ = await graph.get("users/delta")
    assert status == 200
    for _ in range(2):
        status, error, _ = await graph.get(body["@odata.nextLink"])
        assert status == 500
        assert error["error"]["code"] == "generalException"
    assert [r.page for r in graph.fake.requests] == [0, 1, 1]


async def test_load_organiser_mirrors_the_canonical_records(graph: Graph) -> None:
    records = organiser(seed=3, school_units=2, students_per_unit=5, teachers_per_unit=1)
    graph.fake.load_organiser(records)
    fake = graph.fake
    persons = [r for r in records if r.kind is EntityKind.PERSON]
    assert len(fake.objects["users"]) == len(persons)
    assert len(fake.objects["schools"]) == 2
    assert len(fake.objects["classes"]) == len([r for r in records if r.kind is EntityKind.GROUP])
    unit = next(r for r in records if r.kind is EntityKind.SCHOOL_UNIT)
    school = fake.objects["schools"][fake.graph_id(EntityKind.SCHOOL_UNIT, unit.key)]
    assert school["schoolNumber"] == unit.data["school_unit_code"]
    student = fake.objects["users"][fake.graph_id(EntityKind.PERSON, "student-0-2")]
    assert student["primaryRole"] == "student"
    assert student["student"]["grade"] == "3"
    teacher_id = fake.graph_id(EntityKind.PERSON, "teacher-0-0")
    assert fake.objects["users"][teacher_id]["primaryRole"] == "teacher"
    _, body, _ = await graph.get(f"users/{teacher_id}/schools")
    assert [s["id"] for s in body["value"]] == [school["id"]]
    klass = fake.graph_id(EntityKind.GROUP, "class-0-3")
    _, body, _ = await graph.get(f"classes/{klass}/teachers")
    assert [u["id"] for u in body["value"]] == [teacher_id]
    _, body, _ = await graph.get(f"classes/{klass}/members", {"$top": "50"})
    assert student["id"] in [u["id"] for u in body["value"]]
    assert teacher_id in [u["id"] for u in body["value"]]  # teachers are members too


async def test_by_default_user_and_class_delta_leave_removals_out_as_documented(graph: Graph) -> None:
    """Microsoft: educationClass delta "does not include deleted classes"; user delta returns newly created
    or updated users. A listing shows what is gone. Schools' removals are still reported. Issue 23."""
    fake = graph.fake
    for n in range(1, 4):
        fake.put_user(user(n))
    fake.put_class({"id": "c1", "displayName": "7A"})
    fake.put_class({"id": "c2", "displayName": "7B"})
    _, users_link = await graph.round("users/delta")
    _, classes_link = await graph.round("classes/delta")
    fake.remove_user(user(1)["id"])
    fake.remove_user(user(2)["id"], reason="changed")
    fake.remove_class("c1")
    fake.update_user(user(3)["id"], surname="Kvar")
    pages, _ = await graph.round(users_link)
    assert [e["id"] for page in pages for e in page] == [user(3)["id"]]
    pages, _ = await graph.round(classes_link)
    assert [e for page in pages for e in page] == []
    status, body, _ = await graph.get("classes", {"$select": "id"})
    assert status == 200
    assert [c["id"] for c in body["value"]] == ["c2"]
