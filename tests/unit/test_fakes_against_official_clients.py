"""The fakes against the official clients (issue 23), so they cannot drift from the real APIs' definitions:
google-api-python-client, built from the discovery documents it ships and authorised by google-auth's own
service-account flow, calls the Google fake, and every answer must fit the discovery schema; the Microsoft
Graph Python SDK (msgraph-sdk) calls the Graph fake, and every answer must parse into its models with no
property they do not know, delta rounds, errors and throttling included."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from google.oauth2 import service_account
from googleapiclient.discovery import Resource, build
from googleapiclient.errors import HttpError
from kiota_abstractions.base_request_configuration import RequestConfiguration
from kiota_serialization_json.json_parse_node import JsonParseNode
from msgraph.generated.education.users.users_request_builder import UsersRequestBuilder
from msgraph.generated.models.education_user import EducationUser
from msgraph.generated.models.education_user_role import EducationUserRole
from msgraph.generated.models.o_data_errors.o_data_error import ODataError
from msgraph.graph_service_client import GraphServiceClient

from skolsynk_testkit.fakes.google_directory import ALL_SCOPES, FakeGoogleDirectory, generate_service_account_key
from skolsynk_testkit.fakes.graph_education import FakeGraphEducation
from skolsynk_testkit.synthetic import organiser
from tests.official_clients import (
    discovery_document,
    google_request_problems,
    google_response_problems,
    graph_client,
    graph_request_problems,
    graph_unexpected_properties,
)

pytestmark = [pytest.mark.unit, pytest.mark.timeout(60)]

ADMIN = "admin@demo.skolsynk.example"


# --- Google: google-api-python-client and google-auth --------------------------------------------------


@pytest.fixture
async def google() -> AsyncIterator[tuple[FakeGoogleDirectory, dict[str, str]]]:
    directory = FakeGoogleDirectory(admins=[ADMIN])
    directory.add_user(ADMIN, "Admin", "Istrator", audit=False)
    directory.load_organiser(organiser(seed=3, school_units=1, students_per_unit=5, teachers_per_unit=1))
    await directory.start()
    key = generate_service_account_key(client_email="skolsynk@project.iam.gserviceaccount.com")
    key["token_uri"] = directory.token_url
    directory.add_service_account(key)
    try:
        yield directory, key
    finally:
        await directory.stop()


def official(key: dict[str, str], fake: FakeGoogleDirectory, api: str, version: str) -> Resource:
    """The official client from its shipped discovery document, pointed at the fake, with google-auth's
    service-account credentials (domain-wide delegation to ``ADMIN``): the token comes from the fake's token
    endpoint through google-auth's own JWT assertion."""
    credentials = service_account.Credentials.from_service_account_info(key, scopes=sorted(ALL_SCOPES), subject=ADMIN)
    return build(
        api,
        version,
        credentials=credentials,
        static_discovery=True,
        cache_discovery=False,
        client_options={"api_endpoint": fake.base_url + "/"},
    )


async def execute(request: Any) -> Any:
    return await asyncio.to_thread(request.execute, num_retries=0)


async def test_the_google_fake_answers_the_official_client_within_the_discovery_schemas(
    google: tuple[FakeGoogleDirectory, dict[str, str]],
) -> None:
    fake, key = google
    with (
        official(key, fake, "admin", "directory_v1") as directory,
        official(key, fake, "admin", "reports_v1") as reports,
    ):
        await google_calls(fake, directory, reports)


async def google_calls(fake: FakeGoogleDirectory, directory: Resource, reports: Resource) -> None:
    document = discovery_document("admin.directory_v1")

    # users.list, every page (list_next follows nextPageToken as the client does), and users.get.
    users: list[dict[str, Any]] = []
    request = directory.users().list(customer="my_customer", projection="full", maxResults=2, orderBy="email")
    while request is not None:
        page = await execute(request)
        assert google_response_problems(document, "GET", "/admin/directory/v1/users", page) == []
        users += page.get("users", [])
        request = directory.users().list_next(request, page)
    assert len(users) == len(fake.users)
    student = next(u for u in users if "customSchemas" in u)
    assert student["emails"][0] == {"address": student["primaryEmail"], "primary": True}
    searched = await execute(
        directory.users().list(
            customer="my_customer",
            query=f"orgUnitPath='{student['orgUnitPath']}'",
            projection="custom",
            customFieldMask="SS12000",
        )
    )
    assert student["id"] in {u["id"] for u in searched["users"]}
    one = await execute(directory.users().get(userKey=student["id"], projection="full"))
    assert google_response_problems(document, "GET", f"/admin/directory/v1/users/{student['id']}", one) == []
    assert one["primaryEmail"] == student["primaryEmail"]

    # Org units, schemas, groups and their members.
    answers = {
        "/admin/directory/v1/customer/my_customer/orgunits": await execute(
            directory.orgunits().list(customerId="my_customer", orgUnitPath="/", type="all")
        ),
        "/admin/directory/v1/customer/my_customer/schemas": await execute(
            directory.schemas().list(customerId="my_customer")
        ),
        "/admin/directory/v1/groups": await execute(directory.groups().list(customer="my_customer", maxResults=200)),
    }
    group = answers["/admin/directory/v1/groups"]["groups"][0]
    answers[f"/admin/directory/v1/groups/{group['id']}/members"] = await execute(
        directory.members().list(groupKey=group["id"], roles="OWNER,MEMBER", includeDerivedMembership=True)
    )
    for path, body in answers.items():
        assert google_response_problems(document, "GET", path, body) == [], path
    assert answers["/admin/directory/v1/customer/my_customer/orgunits"]["organizationUnits"]
    assert answers[f"/admin/directory/v1/groups/{group['id']}/members"]["members"]

    # The Reports API's admin audit events.
    fake.move_user(student["id"], "/Skolor")
    events = await execute(reports.activities().list(userKey="all", applicationName="admin", maxResults=10))
    path = "/admin/reports/v1/activity/users/all/applications/admin"
    assert google_response_problems(discovery_document("admin.reports_v1"), "GET", path, events) == []
    assert events["items"]

    # Push notifications: users.watch answers a Channel; channels.stop ends it (and 404s once it is gone).
    body = {
        "id": "c-1",
        "type": "web_hook",
        "address": "https://127.0.0.1:9/hook",
        "token": "t",
        "params": {"ttl": "900"},
    }
    channel = await execute(directory.users().watch(customer="my_customer", event="add", body=body))
    assert google_response_problems(document, "POST", "/admin/directory/v1/users/watch", channel) == []
    assert channel["id"] == "c-1"
    assert int(channel["expiration"]) > 0
    stop = {"id": "c-1", "resourceId": channel["resourceId"]}
    await execute(directory.channels().stop(body=stop))
    with pytest.raises(HttpError) as stopped:
        await execute(directory.channels().stop(body=stop))
    assert stopped.value.status_code == 404

    # Errors in the shape the official client reads: status, message and reason.
    with pytest.raises(HttpError) as missing:
        await execute(directory.users().get(userKey="nobody@demo.skolsynk.example"))
    assert missing.value.status_code == 404
    assert missing.value.error_details[0]["reason"] == "notFound"

    # And every request the official client made is one the discovery documents define.
    for record in fake.requests:
        if record.path == "/token":
            continue
        name = "admin.reports_v1" if record.path.startswith("/admin/reports/") else "admin.directory_v1"
        assert google_request_problems(discovery_document(name), record.method, record.path, record.query) == []


async def test_the_discovery_checks_can_fail() -> None:
    """The checks themselves: an undeclared parameter, a bad enum value, an unknown property, a wrong type."""
    document = discovery_document("admin.directory_v1")
    assert google_request_problems(document, "GET", "/admin/directory/v1/users", {"customer": ["c"]}) == []
    assert set(
        google_request_problems(
            document, "GET", "/admin/directory/v1/users", {"customer": ["c"], "projection": ["all"], "shards": ["2"]}
        )
    ) == {
        "directory.users.list: undeclared parameter shards",
        "directory.users.list: projection='all' is not one of ['basic', 'custom', 'full']",
    }

    assert google_request_problems(document, "GET", "/admin/directory/v1/nothing/at/all", {}) != []
    body = {"users": [{"id": "1", "primaryEmail": 5, "favouriteColour": "blå"}]}
    assert google_response_problems(document, "GET", "/admin/directory/v1/users", body) == [
        "Users.users[0].primaryEmail: int, not string",
        "Users.users[0].favouriteColour: not in the schema",
    ]


# --- Microsoft: msgraph-sdk -----------------------------------------------------------------------------


@pytest.fixture
async def graph() -> AsyncIterator[FakeGraphEducation]:
    fake = FakeGraphEducation(default_page_size=3, delta_page_size=3, removals_in_delta=("schools", "users"))
    fake.load_organiser(organiser(seed=7, school_units=1, students_per_unit=4, teachers_per_unit=1))
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


async def test_the_graph_fake_answers_the_sdk_and_parses_into_its_models(graph: FakeGraphEducation) -> None:
    async with graph_client(graph.graph_base_url, graph.issue_token()) as client:
        await graph_calls(graph, client)


async def graph_calls(graph: FakeGraphEducation, client: GraphServiceClient) -> None:
    education = client.education
    unexpected: list[str] = []

    # Listings with $top and $select, every page through @odata.nextLink.
    config = RequestConfiguration(
        query_parameters=UsersRequestBuilder.UsersRequestBuilderGetQueryParameters(
            top=2, select=["id", "primaryRole", "givenName", "surname", "userPrincipalName", "student", "teacher"]
        )
    )
    page = await education.users.get(request_configuration=config)
    users = []
    while page is not None:
        assert page.value is not None
        unexpected += graph_unexpected_properties(page)
        users += page.value
        page = await education.users.with_url(page.odata_next_link).get() if page.odata_next_link else None
    assert len(users) == len(graph.objects["users"])
    student = next(u for u in users if u.primary_role == EducationUserRole.Student)
    assert student.student is not None
    assert student.student.external_id
    assert student.id is not None
    one = await education.users.by_education_user_id(student.id).get()
    assert one is not None
    assert one.user_principal_name == student.user_principal_name

    schools = await education.schools.get()
    classes = await education.classes.get()
    assert schools is not None
    assert schools.value
    assert classes is not None
    assert classes.value
    klass = classes.value[0]
    assert klass.id is not None
    relations = [
        await education.users.by_education_user_id(student.id).schools.get(),
        await education.classes.by_education_class_id(klass.id).members.get(),
        await education.classes.by_education_class_id(klass.id).teachers.get(),
        await education.classes.by_education_class_id(klass.id).schools.get(),
        await education.schools.by_education_school_id(schools.value[0].id or "").users.get(),
    ]
    for answer in [schools, classes, one, *relations]:
        unexpected += graph_unexpected_properties(answer)

    # Delta: the initial rounds (the SDK's delta() spelling), then changes: an update, a removal, a
    # membership change.
    async def delta_round(builder: Any, link: str | None = None) -> tuple[list[Any], str]:
        entries: list[Any] = []
        answer = await (builder.with_url(link).get() if link else builder.get())
        while True:
            unexpected.extend(graph_unexpected_properties(answer))
            entries += answer.value or []
            if answer.odata_delta_link:
                return entries, answer.odata_delta_link
            answer = await builder.with_url(answer.odata_next_link).get()

    initial_users, users_link = await delta_round(education.users.delta)
    initial_classes, classes_link = await delta_round(education.classes.delta)
    assert len(initial_users) == len(users)
    assert len(initial_classes) == len(graph.objects["classes"])
    graph.update_user(student.id, surname="Nyström")
    leaver = next(u.id for u in users if u.id != student.id and u.primary_role == EducationUserRole.Student)
    assert leaver is not None
    graph.remove_user(leaver)
    graph.change_class_members(klass.id, add=[student.id])
    changed_users, _ = await delta_round(education.users.delta, users_link)
    changed_classes, _ = await delta_round(education.classes.delta, classes_link)
    by_id = {u.id: u for u in changed_users}
    assert by_id[student.id].surname == "Nyström"
    assert by_id[leaver].additional_data["@removed"] == {"reason": "deleted"}
    (changed_class,) = changed_classes
    assert {str(m["id"]) for m in changed_class.additional_data["members@delta"]} == {student.id}
    assert unexpected == []

    # Errors parse as ODataError; a 429 with Retry-After is ridden out by the SDK's own retry handler.
    with pytest.raises(ODataError) as missing:
        await education.users.by_education_user_id("00000000-0000-0000-0000-000000000000").get()
    assert missing.value.response_status_code == 404
    assert missing.value.error is not None
    assert missing.value.error.code == "Request_ResourceNotFound"
    graph.throttle(1, retry_after="1")
    assert (await education.schools.get()) is not None
    assert [r.status for r in graph.requests[-2:]] == [429, 200]

    # Every request the SDK made is one of its request builders' (a check that can fail: see below).
    for record in graph.requests:
        if "/oauth2/" not in record.path:
            assert graph_request_problems(client, record.path, record.query) == []
    assert graph_request_problems(client, "/education/users", {"$shards": "2"}) != []
    made_up = {"id": "1", "favouriteColour": "blå", "student": {"grade": "7", "shoeSize": 3}}
    parsed = JsonParseNode(made_up).get_object_value(EducationUser)
    assert graph_unexpected_properties(parsed) == ["EducationUser.favouriteColour", "EducationUser.student.shoeSize"]
    assert graph_request_problems(client, "/education/nothing", {}) != []
