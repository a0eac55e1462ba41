"""The fake vendor EGIL SCIM server behaves like the reference server (Windermere) on the wire.

Every test starts the fake on 127.0.0.1, port 0, and talks to it with aiohttp.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
import signal
import ssl
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, NamedTuple

import aiohttp
import pytest
import trustme

from skolsynk_testkit.fakes.egil_vendor import (
    DanglingReference,
    FakeEgilVendor,
    server_ssl_context,
    spki_sha256_pin,
)
from tests.reference import egil_capture

pytestmark = pytest.mark.unit

KEY = "key-gronkoping"
TENANT = "gronkoping"
OTHER_KEY = "key-exempel"
OTHER_TENANT = "exempel"
SCIM = "application/scim+json"

ORG = "4f3d2c1b-8a9e-4b7c-9d6e-5f4a3b2c1d0e"
SUG = "0b1c2d3e-4f5a-4b6c-8d7e-9f0a1b2c3d4e"
UNIT = "9f8e7d6c-5b4a-4f3e-9d2c-1b0a9f8e7d6c"
STUDENT = "c0a80101-0000-4000-8000-000000000007"
TEACHER = "7e57ac4e-0000-4000-8000-000000000003"
EMPLOYMENT = "01533f0e-827b-5159-a821-210868e4c5a3"
GROUP = "6a7b8c9d-0000-4000-8000-0000000000b2"
ACTIVITY = "6de42408-d238-5b10-9262-e4daf20fd710"


def ref(endpoint: str, uuid: str) -> dict[str, str]:
    return {"value": uuid, "$ref": f"{endpoint}/{uuid}"}


def organisation(uuid: str = ORG, **extra: Any) -> dict[str, Any]:
    return {
        "schemas": ["urn:scim:schemas:extension:sis:school:1.0:Organisation"],
        "externalId": uuid,
        "displayName": "Grönköpings kommun",
        **extra,
    }


def school_unit(uuid: str = UNIT, **extra: Any) -> dict[str, Any]:
    return {
        "schemas": ["urn:scim:schemas:extension:sis:school:1.0:SchoolUnit"],
        "externalId": uuid,
        "displayName": "Norrskolan",
        "schoolUnitCode": "29384756",
        "organisation": ref("Organisations", ORG),
        "schoolUnitGroup": ref("SchoolUnitGroups", SUG),
        "schoolTypes": ["GR"],
        "municipalityCode": "9999",
        **extra,
    }


def student(uuid: str = STUDENT, **extra: Any) -> dict[str, Any]:
    return {
        "schemas": [
            "urn:ietf:params:scim:schemas:core:2.0:User",
            "urn:scim:schemas:extension:sis:school:1.0:User",
        ],
        "externalId": uuid,
        "userName": "wian01@gronkoping.se",
        "displayName": "Wilma Andersson",
        "name": {"familyName": "Andersson", "givenName": "Wilma"},
        "emails": [{"value": "wilma.andersson@elev.gronkoping.se"}],
        "urn:scim:schemas:extension:sis:school:1.0:User": {
            "enrolments": [{**ref("SchoolUnits", UNIT), "schoolYear": 8, "schoolType": "GR"}],
            "civicNo": "201105062385",
        },
        **extra,
    }


def teacher(uuid: str = TEACHER) -> dict[str, Any]:
    body = student(uuid, userName="evlu01@gronkoping.se", displayName="Eva Lund")
    body["name"] = {"familyName": "Lund", "givenName": "Eva"}
    body["urn:scim:schemas:extension:sis:school:1.0:User"] = {"civicNo": "196901024288"}
    return body


def employment(uuid: str = EMPLOYMENT) -> dict[str, Any]:
    return {
        "schemas": ["urn:scim:schemas:extension:sis:school:1.0:Employment"],
        "externalId": uuid,
        "employedAt": ref("SchoolUnits", UNIT),
        "user": ref("Users", TEACHER),
        "employmentRole": "Lärare",
        "signature": "ELU",
    }


def student_group(uuid: str = GROUP, members: tuple[str, ...] = (STUDENT,)) -> dict[str, Any]:
    return {
        "schemas": ["urn:scim:schemas:extension:sis:school:1.0:StudentGroup"],
        "externalId": uuid,
        "displayName": "8B",
        "studentGroupType": "Klass",
        "schoolType": "GR",
        "owner": ref("SchoolUnits", UNIT),
        "studentMemberships": [ref("Users", member) for member in members],
    }


def activity(uuid: str = ACTIVITY) -> dict[str, Any]:
    return {
        "schemas": ["urn:scim:schemas:extension:sis:school:1.0:Activity"],
        "externalId": uuid,
        "displayName": "8B",
        "owner": ref("SchoolUnits", UNIT),
        "groups": [ref("StudentGroups", GROUP)],
        "teachers": [ref("Employments", EMPLOYMENT)],
        "parentActivity": [],
    }


class Answer(NamedTuple):
    status: int
    text: str
    headers: dict[str, str]

    def json(self) -> Any:
        return json.loads(self.text)


class Api:
    """A thin SCIM client over one session, for terse tests."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str) -> None:
        self.session = session
        self.base_url = base_url

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        content_type: str | None = SCIM,
        headers: dict[str, str] | None = None,
    ) -> Answer:
        all_headers = dict(headers or {})
        data: bytes | None = None
        if body is not None:
            data = body if isinstance(body, bytes) else (body if isinstance(body, str) else json.dumps(body)).encode()
            if content_type is not None:
                all_headers["Content-Type"] = content_type
        async with self.session.request(method, self.base_url + path, data=data, headers=all_headers) as response:
            return Answer(response.status, await response.text(), dict(response.headers))

    async def post(self, endpoint: str, body: Any, **options: Any) -> Answer:
        return await self.call("POST", f"/{endpoint}", body, **options)

    async def put(self, endpoint: str, uuid: str, body: Any, **options: Any) -> Answer:
        return await self.call("PUT", f"/{endpoint}/{uuid}", body, **options)

    async def delete(self, endpoint: str, uuid: str, **options: Any) -> Answer:
        return await self.call("DELETE", f"/{endpoint}/{uuid}", **options)

    async def get(self, path: str, **options: Any) -> Answer:
        return await self.call("GET", path, **options)


@pytest.fixture
async def vendor() -> AsyncIterator[FakeEgilVendor]:
    fake = FakeEgilVendor(api_keys={KEY: TENANT, OTHER_KEY: OTHER_TENANT})
    try:
        await fake.start("127.0.0.1", 0)
        yield fake
    finally:
        await fake.stop()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10), headers={"X-API-Key": KEY}) as client:
        yield client


@pytest.fixture
def api(vendor: FakeEgilVendor, session: aiohttp.ClientSession) -> Api:
    return Api(session, vendor.base_url)


@pytest.fixture
async def make_api() -> AsyncIterator[Callable[..., Any]]:
    """Start extra vendors with other options; each gets its own session. Closed at the end."""
    started: list[tuple[FakeEgilVendor, aiohttp.ClientSession]] = []

    async def make(**options: Any) -> tuple[FakeEgilVendor, Api]:
        options.setdefault("api_keys", {KEY: TENANT})
        fake = FakeEgilVendor(**options)
        client = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10), headers={"X-API-Key": KEY})
        started.append((fake, client))  # before the start: stopped at the end even when it fails to start
        await fake.start("127.0.0.1", 0)
        return fake, Api(client, fake.base_url)

    try:
        yield make
    finally:
        for fake, client in started:
            await client.close()
            await fake.stop()


def list_resources(answer: Answer) -> list[dict[str, Any]]:
    document = answer.json()
    assert document["schemas"] == ["urn:ietf:params:scim:api:messages:2.0:ListResponse"]
    assert document["totalResults"] == len(document["Resources"])
    resources: list[dict[str, Any]] = document["Resources"]
    return resources


# --------------------------------------------------------------------------------------------------
# Create, replace, delete, list


async def test_post_creates_with_the_external_id_as_id(api: Api, vendor: FakeEgilVendor) -> None:
    answer = await api.post("Organisations", organisation())

    assert answer.status == 201
    assert answer.headers["Content-Type"] == SCIM
    # the SQL backend answers with the parsed object re-marshalled: schemas and unknown attributes gone
    assert answer.json() == {"externalId": ORG, "displayName": "Grönköpings kommun"}
    assert vendor.resources(TENANT, "Organisations") == {ORG: organisation()}
    record = vendor.requests[-1]
    assert (record.method, record.path, record.status, record.tenant) == ("POST", "/Organisations", 201, TENANT)
    assert (record.resource_type, record.resource_id, record.detail) == ("Organisations", ORG, None)


async def test_post_of_an_existing_id_is_409(api: Api, vendor: FakeEgilVendor) -> None:
    assert (await api.post("Organisations", organisation())).status == 201

    answer = await api.post("Organisations", organisation(displayName="Changed"))

    assert answer.status == 409
    assert answer.text == f"object {ORG} already exists\n"
    assert answer.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert vendor.resources(TENANT, "Organisations")[ORG]["displayName"] == "Grönköpings kommun"


async def test_put_replaces_the_whole_object(api: Api, vendor: FakeEgilVendor) -> None:
    await api.post("Users", student())
    replacement = student(displayName="Wilma Berg")
    del replacement["emails"]

    answer = await api.put("Users", STUDENT, replacement)

    assert answer.status == 200
    assert answer.json()["displayName"] == "Wilma Berg"
    held = vendor.resources(TENANT, "Users")[STUDENT]
    assert held == replacement
    assert "emails" not in held


async def test_put_of_an_unknown_id_is_404(api: Api, vendor: FakeEgilVendor) -> None:
    answer = await api.put("Users", STUDENT, student())

    assert (answer.status, answer.text) == (404, f"couldn't find object {STUDENT}\n")
    assert vendor.resources(TENANT, "Users") == {}


async def test_put_with_a_url_id_other_than_the_external_id_is_400(api: Api, vendor: FakeEgilVendor) -> None:
    other = "c0a80101-0000-4000-8000-000000000009"
    await api.post("Users", student())

    answer = await api.put("Users", STUDENT, student(other))

    assert answer.status == 400
    assert "does not match" in answer.text
    assert vendor.resources(TENANT, "Users") == {STUDENT: student()}


async def test_put_id_mismatch_in_reference_mode_is_a_silent_200(make_api: Callable[..., Any]) -> None:
    vendor, api = await make_api(put_id_mismatch="reference")
    await api.post("Users", student())

    answer = await api.put("Users", STUDENT, student("c0a80101-0000-4000-8000-000000000009", displayName="X"))

    assert answer.status == 200  # Windermere's SQL backend: checked with the URL id, updated by the body id
    assert vendor.resources(TENANT, "Users") == {STUDENT: student()}


async def test_put_to_the_collection_takes_the_id_from_the_body(api: Api, vendor: FakeEgilVendor) -> None:
    await api.post("Organisations", organisation())

    answer = await api.call("PUT", "/Organisations", organisation(displayName="Nytt namn"))
    no_id = await api.call("PUT", "/Organisations", {"displayName": "x"})

    assert answer.status == 200
    assert vendor.resources(TENANT, "Organisations")[ORG]["displayName"] == "Nytt namn"
    assert (no_id.status, no_id.text) == (400, "Invalid PUT to resource type didn't include id or externalId in body\n")


async def test_delete_is_204_then_404(api: Api, vendor: FakeEgilVendor) -> None:
    await api.post("Organisations", organisation())

    first = await api.delete("Organisations", ORG)
    second = await api.delete("Organisations", ORG)

    assert (first.status, first.text) == (204, "")
    assert (second.status, second.text) == (404, f"couldn't find object {ORG}\n")
    assert vendor.resources(TENANT, "Organisations") == {}


async def test_delete_accepts_the_egil_clients_form_content_type(api: Api) -> None:
    await api.post("Organisations", organisation())

    answer = await api.call("DELETE", f"/Organisations/{ORG}", b"", content_type="application/x-www-form-urlencoded")

    assert answer.status == 204


async def test_delete_without_an_id_is_400(api: Api) -> None:
    answer = await api.call("DELETE", "/Users")

    assert (answer.status, answer.text) == (400, "Failed to get resource type and ID from URL\n")


async def test_get_lists_everything_unpaged_with_ids(api: Api) -> None:
    first, second = "c0a80101-0000-4000-8000-000000000001", "c0a80101-0000-4000-8000-000000000002"
    for uuid in (second, first):
        await api.post("Users", student(uuid, userName=f"{uuid}@x"))

    answer = await api.get("/Users?startIndex=2&count=1&filter=userName%20eq%20%22x%22")

    assert answer.status == 200
    assert answer.headers["Content-Type"] == "text/plain; charset=utf-8"  # Windermere's lists are sniffed
    resources = list_resources(answer)
    assert [r["id"] for r in resources] == [first, second]
    assert all(r["id"] == r["externalId"] for r in resources)


async def test_get_lists_only_what_the_sql_backend_persists(api: Api) -> None:
    await api.post("Users", student(unknownAttribute="dropped"))
    await api.post("StudentGroups", student_group())
    await api.post("Activities", activity())

    user = list_resources(await api.get("/Users"))[0]
    group = list_resources(await api.get("/StudentGroups"))[0]
    teaching = list_resources(await api.get("/Activities"))[0]

    extension = user["urn:scim:schemas:extension:sis:school:1.0:User"]
    assert extension == {"enrolments": [{"value": UNIT, "$ref": "", "schoolYear": 8}]}  # no civicNo, schoolType
    assert "schemas" not in user
    assert "unknownAttribute" not in user
    assert user["name"] == {"familyName": "Andersson", "givenName": "Wilma"}
    assert "schoolType" not in group
    assert group["studentMemberships"] == [{"value": STUDENT, "$ref": ""}]
    assert "parentActivity" not in teaching


async def test_get_is_per_collection_and_empty_when_nothing_is_held(api: Api) -> None:
    await api.post("Organisations", organisation())

    answer = await api.get("/SchoolUnits")

    assert answer.json() == {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"],
        "totalResults": 0,
        "Resources": [],
    }


async def test_single_get_is_broken_like_the_reference(api: Api) -> None:
    await api.post("Organisations", organisation())

    answer = await api.get(f"/Organisations/{ORG}")

    assert (answer.status, answer.text) == (500, f"failed to read unknown type: {ORG}\n")


async def test_single_get_can_be_made_to_work(make_api: Callable[..., Any]) -> None:
    _vendor, api = await make_api(single_get=True)
    await api.post("Organisations", organisation())

    found = await api.get(f"/Organisations/{ORG}")
    missing = await api.get("/Organisations/4f3d2c1b-0000-4000-8000-000000000000")

    assert found.status == 200
    assert found.json() == {"displayName": "Grönköpings kommun", "externalId": ORG, "id": ORG}
    assert missing.status == 404


async def test_file_backend_overwrites_echoes_and_keeps_raw_bodies(make_api: Callable[..., Any]) -> None:
    vendor, api = await make_api(backend="file")
    raw = json.dumps(student(unknownAttribute=1), indent=2)

    first = await api.post("Users", raw)
    again = await api.post("Users", student(displayName="Overwritten"))
    missing = await api.delete("Users", "c0a80101-0000-4000-8000-0000000000ff")
    broken = await api.post("Users", "{")
    no_id = await api.post("Users", {"displayName": "x"})
    single = await api.get(f"/Users/{STUDENT}")
    listed = list_resources(await api.get("/Users"))

    assert (first.status, first.text) == (201, raw)  # echoed byte for byte
    assert again.status == 201
    assert vendor.resources(TENANT, "Users")[STUDENT]["displayName"] == "Overwritten"
    assert (missing.status, missing.text) == (404, "Resource missing: c0a80101-0000-4000-8000-0000000000ff\n")
    assert (broken.status, broken.text) == (500, "unexpected end of JSON input\n")
    assert (no_id.status, no_id.text) == (500, "Missing externalId in resource\n")
    assert (single.status, single.json()["totalResults"]) == (200, 0)
    assert listed[0]["urn:scim:schemas:extension:sis:school:1.0:User"]["civicNo"] == "201105062385"
    assert list(listed[0]) == sorted(listed[0])  # re-marshalled from a Go map: sorted keys


# --------------------------------------------------------------------------------------------------
# Validation and protocol errors


def _without(body: dict[str, Any], *path: str) -> dict[str, Any]:
    target = body
    for key in path[:-1]:
        target = target[key]
    del target[path[-1]]
    return body


def _enrolment(**changes: Any) -> dict[str, Any]:
    body = student()
    enrolment = body["urn:scim:schemas:extension:sis:school:1.0:User"]["enrolments"][0]
    enrolment.update(changes)
    for key, value in changes.items():
        if value is None:
            del enrolment[key]
    return body


INVALID = [
    ("Organisations", _without(organisation(), "displayName"), "missing required attribute displayName"),
    ("Organisations", _without(organisation(), "externalId"), "missing required attribute externalId"),
    ("Organisations", organisation("not-a-uuid"), "invalid UUID: not-a-uuid"),
    ("Organisations", organisation(ORG + "\n"), "invalid UUID: " + ORG + "\n"),
    (
        "Organisations",
        organisation(displayName=42),
        "json: cannot unmarshal number into Go struct field Organisation.displayName of type string",
    ),
    ("SchoolUnits", school_unit(schoolUnitCode="123"), "invalid school unit code: 123"),
    ("SchoolUnits", _without(school_unit(), "schoolUnitCode"), "missing required attribute schoolUnitCode"),
    ("Users", _without(student(), "userName"), "missing required attribute userName"),
    ("Users", _without(student(), "name"), "missing required attribute name"),
    ("Users", _without(student(), "name", "givenName"), "missing required attribute givenName"),
    ("Users", _without(student(), "displayName"), "missing required attribute displayName"),
    ("Users", _enrolment(value=None), "missing required attribute value"),
    ("Users", _enrolment(schoolYear="7"), "json: cannot unmarshal string into Go struct field"),
    ("Users", _enrolment(schoolYear=7.5), "cannot unmarshal number 7.5"),
    ("Employments", _without(employment(), "employmentRole"), "missing required attribute employmentRole"),
    ("Employments", _without(employment(), "employedAt"), "missing required attribute employedAt"),
    ("Employments", _without(employment(), "user"), "missing required attribute user"),
    ("StudentGroups", _without(student_group(), "owner"), "missing required attribute owner"),
    ("Activities", _without(activity(), "owner"), "missing required attribute owner"),
    ("Activities", _without(activity(), "displayName"), "missing required attribute displayName"),
    ("Organisations", '{"externalId": ', "unexpected end of JSON input"),
    ("Organisations", "[]", "json: cannot unmarshal array into Go value of type map[string]interface {}"),
    ("Organisations", '{"externalId": NaN}', "invalid character 'N' looking for beginning of value"),
]


@pytest.mark.parametrize(("endpoint", "body", "detail"), INVALID)
async def test_invalid_resources_are_400_with_the_reference_detail(
    api: Api, vendor: FakeEgilVendor, endpoint: str, body: Any, detail: str
) -> None:
    answer = await api.post(endpoint, body)

    assert answer.status == 400
    assert answer.text.startswith("Failed to parse resource:\n")
    assert detail in answer.text
    assert vendor.requests[-1].detail == answer.text.removesuffix("\n")
    assert vendor.resources(TENANT, endpoint) == {}


async def test_schoolyear_as_string_names_field_and_type(api: Api) -> None:
    answer = await api.post("Users", _enrolment(schoolYear="7"))

    assert "schoolYear of type int" in answer.text


VALID = [
    ("SchoolUnits", school_unit(schoolUnitCode="SE123456789")),  # the reference's unanchored [0-9]{8}
    ("Organisations", organisation(displayName="")),  # present counts, even empty
    ("Organisations", organisation(schemas=["urn:nonsense"], unknown={"x": 1})),  # schemas not checked
    ("Organisations", organisation(ORG.upper())),  # upper-case UUIDs are valid
    ("Users", teacher()),
    ("Employments", employment()),
    ("StudentGroups", student_group()),
    ("Activities", activity()),
]


@pytest.mark.parametrize(("endpoint", "body"), VALID)
async def test_valid_resources_are_created(api: Api, endpoint: str, body: dict[str, Any]) -> None:
    answer = await api.post(endpoint, body)

    assert answer.status == 201, answer.text


async def test_the_egil_clients_single_group_becomes_groups(api: Api) -> None:
    legacy = activity()
    legacy["group"] = legacy.pop("groups")[0]

    assert (await api.post("Activities", legacy)).status == 201
    listed = list_resources(await api.get("/Activities"))[0]

    assert listed["groups"] == [{"value": GROUP, "$ref": ""}]


async def test_content_type_must_be_scim_or_json(api: Api) -> None:
    wrong = await api.post("Organisations", organisation(), content_type="text/plain")
    json_with_charset = await api.post("Organisations", organisation(), content_type="application/json; charset=utf-8")

    assert wrong.status == 415
    assert wrong.text == 'Bad media type: got "text/plain" (SCIM uses application/scim+json)\n'
    assert json_with_charset.status == 201


async def test_unknown_paths_and_methods(api: Api) -> None:
    for path in ("/ServiceProviderConfig", "/Schemas", "/scim/v2/Users", "/Students"):
        answer = await api.get(path)
        assert (answer.status, answer.text) == (404, "404 page not found\n"), path
    patch = await api.call("PATCH", f"/Users/{STUDENT}", {"Operations": []})
    extra_segment = await api.call("DELETE", f"/Users/x/{STUDENT}")

    assert (patch.status, patch.text) == (501, "Not implemented\n")
    assert (extra_segment.status, extra_segment.text) == (500, "unrecognized resource type x\n")


async def test_ids_are_case_sensitive(api: Api, vendor: FakeEgilVendor) -> None:
    upper = ORG.upper()
    assert (await api.post("Organisations", organisation(upper))).status == 201

    wrong_case = await api.delete("Organisations", ORG)
    other_object = await api.post("Organisations", organisation(ORG))

    assert wrong_case.status == 404
    assert other_object.status == 201
    assert set(vendor.resources(TENANT, "Organisations")) == {upper, ORG}
    assert sorted(r["id"] for r in list_resources(await api.get("/Organisations"))) == sorted([upper, ORG])


async def test_scim_error_format(make_api: Callable[..., Any]) -> None:
    _vendor, api = await make_api(error_format="scim")
    await api.post("Organisations", organisation())

    invalid = await api.post("Organisations", _without(organisation(), "displayName"))
    conflict = await api.post("Organisations", organisation())

    assert invalid.status == 400
    assert invalid.headers["Content-Type"] == SCIM
    assert invalid.json() == {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"],
        "status": "400",
        "detail": "Failed to parse resource:\nmissing required attribute displayName",
    }
    assert conflict.json()["status"] == "409"
    assert conflict.json()["scimType"] == "uniqueness"


async def test_base_path(make_api: Callable[..., Any]) -> None:
    vendor, api = await make_api(base_path="/scim/v2/")

    inside = await api.post("Organisations", organisation())
    outside = await Api(api.session, vendor.base_url.removesuffix("/scim/v2")).post("Organisations", organisation())

    assert vendor.base_url.endswith("/scim/v2")
    assert inside.status == 201
    assert outside.status == 404
    assert vendor.requests[0].path == "/scim/v2/Organisations"


# --------------------------------------------------------------------------------------------------
# Tenants and authentication


async def test_api_key_missing_or_unknown_is_403(vendor: FakeEgilVendor) -> None:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as anonymous:
        api = Api(anonymous, vendor.base_url)
        missing = await api.post("Organisations", organisation())
        unknown = await api.post("Organisations", organisation(), headers={"X-API-Key": "guessed"})

    assert (missing.status, missing.text) == (403, "No API key\n")
    assert (unknown.status, unknown.text) == (403, "Invalid API key\n")
    assert [r.tenant for r in vendor.requests] == [None, None]
    assert vendor.tenants() == []


async def test_missing_api_key_status_is_configurable(make_api: Callable[..., Any]) -> None:
    vendor, _api = await make_api(no_key_status=401, api_key_header="X-Vendor-Key")
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as anonymous:
        api = Api(anonymous, vendor.base_url)
        missing = await api.post("Organisations", organisation(), headers={"X-API-Key": KEY})
        right = await api.post("Organisations", organisation(), headers={"X-Vendor-Key": KEY})

    assert missing.status == 401
    assert right.status == 201


async def test_tenants_are_separate(api: Api, vendor: FakeEgilVendor) -> None:
    other = {"X-API-Key": OTHER_KEY}
    assert (await api.post("Organisations", organisation())).status == 201

    same_uuid_elsewhere = await api.post("Organisations", organisation(displayName="Exempel"), headers=other)
    listed_elsewhere = list_resources(await api.get("/Organisations", headers=other))

    assert same_uuid_elsewhere.status == 201
    assert [r["displayName"] for r in listed_elsewhere] == ["Exempel"]
    assert vendor.resources(TENANT, "Organisations")[ORG]["displayName"] == "Grönköpings kommun"
    assert vendor.resources(OTHER_TENANT, "Organisations")[ORG]["displayName"] == "Exempel"
    assert vendor.tenants() == sorted([TENANT, OTHER_TENANT])


class Pki(NamedTuple):
    ca: trustme.CA
    server: trustme.LeafCert
    client: trustme.LeafCert
    stranger: trustme.LeafCert


@pytest.fixture(scope="module")
def pki() -> Pki:
    ca = trustme.CA()
    return Pki(
        ca,
        ca.issue_cert("127.0.0.1"),
        ca.issue_cert("egil-client.gronkoping.se"),
        ca.issue_cert("someone-else.example"),
    )


@pytest.fixture
def mtls_server_context(pki: Pki) -> Iterator[ssl.SSLContext]:
    with (
        pki.server.private_key_and_cert_chain_pem.tempfile() as chain,
        pki.ca.cert_pem.tempfile() as client_ca,
    ):
        yield server_ssl_context(chain, None, client_ca)


def client_context(pki: Pki, cert: trustme.LeafCert | None) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    pki.ca.configure_trust(context)
    if cert is not None:
        cert.configure_cert(context)
    return context


async def test_mtls_tenant_is_the_client_certificate_pin(pki: Pki, mtls_server_context: ssl.SSLContext) -> None:
    entity = "https://egil.gronkoping.example"
    pin = spki_sha256_pin(pki.client.cert_chain_pems[0].bytes())
    vendor = FakeEgilVendor(client_pins={pin: entity})
    try:
        await vendor.start("127.0.0.1", 0, ssl_context=mtls_server_context)
        assert vendor.base_url.startswith("https://127.0.0.1:")
        for cert, expected in ((pki.client, 201), (pki.stranger, 403)):
            connector = aiohttp.TCPConnector(ssl=client_context(pki, cert))
            async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=10)) as s:
                answer = await Api(s, vendor.base_url).post("Organisations", organisation())
            assert answer.status == expected
        stranger_pin = spki_sha256_pin(pki.stranger.cert_chain_pems[0].bytes())
        assert answer.text == f"failed to find client pin ({stranger_pin}) in metadata\n"
        assert [r.tenant for r in vendor.requests] == [entity, None]
        assert set(vendor.resources(entity, "Organisations")) == {ORG}

        # no client certificate: the server requires one, the handshake fails (with TLS 1.3 the client
        # only notices when it reads the answer: the server hangs up)
        for version, error in (
            (ssl.TLSVersion.TLSv1_2, aiohttp.ClientConnectorError),
            (ssl.TLSVersion.TLSv1_3, aiohttp.ClientConnectionError),
        ):
            context = client_context(pki, None)
            context.maximum_version = version
            connector = aiohttp.TCPConnector(ssl=context)
            async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=10)) as s:
                with pytest.raises(error):
                    await Api(s, vendor.base_url).post("Organisations", organisation())
        assert len(vendor.requests) == 2  # no request reached the application
    finally:
        await vendor.stop()


def test_spki_pin_matches_openssl_recipe(pki: Pki) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization

    pem = pki.client.cert_chain_pems[0].bytes()
    certificate = x509.load_pem_x509_certificate(pem)
    der = certificate.public_bytes(serialization.Encoding.DER)
    spki = certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    digest = hashes.Hash(hashes.SHA256())
    digest.update(spki)
    import base64

    expected = base64.b64encode(digest.finalize()).decode()
    assert spki_sha256_pin(pem) == expected
    assert spki_sha256_pin(der) == expected
    assert len(expected) == 44
    assert expected.endswith("=")


# --------------------------------------------------------------------------------------------------
# Faults


async def test_fail_next(api: Api, vendor: FakeEgilVendor) -> None:
    vendor.faults.fail_next(2, status=503)

    statuses = [(await api.post("Organisations", organisation())).status for _ in range(3)]

    assert statuses == [503, 503, 201]
    assert [r.fault for r in vendor.requests] == ["fail_next", "fail_next", None]
    assert vendor.requests[0].tenant == TENANT


async def test_error_rate_is_deterministic(api: Api, vendor: FakeEgilVendor) -> None:
    async def run() -> list[int]:
        vendor.faults.error_rate(0.5, status=502, seed=7)
        return [(await api.get("/Users")).status for _ in range(20)]

    first, second = await run(), await run()

    assert first == second
    assert set(first) == {200, 502}
    vendor.faults.error_rate(0.0)
    assert (await api.get("/Users")).status == 200


async def test_delay_before_processing_drops_a_request_whose_client_gave_up(api: Api, vendor: FakeEgilVendor) -> None:
    vendor.faults.delay(0.3)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=0.1), headers={"X-API-Key": KEY}) as hasty:
        with pytest.raises(TimeoutError):
            await Api(hasty, vendor.base_url).post("Organisations", organisation())
    await vendor.wait_for_requests(1)

    assert (vendor.requests[0].status, vendor.requests[0].fault) == (499, "delay")
    assert vendor.resources(TENANT, "Organisations") == {}

    started = time.monotonic()
    assert (await api.post("Organisations", organisation())).status == 201
    assert time.monotonic() - started >= 0.3


async def test_delay_after_processing_stores_before_answering(vendor: FakeEgilVendor) -> None:
    vendor.faults.delay(0.3, after_processing=True)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=0.1), headers={"X-API-Key": KEY}) as hasty:
        with pytest.raises(TimeoutError):
            await Api(hasty, vendor.base_url).post("Organisations", organisation())

    # Wait for the vendor to finish the request (on a busy machine it may not have started when the client
    # gave up), then: the client timed out, the vendor stored it.
    assert [r.status for r in await vendor.wait_for_requests(1)] == [201]
    assert set(vendor.resources(TENANT, "Organisations")) == {ORG}


async def test_reject_one_resource_id(api: Api, vendor: FakeEgilVendor) -> None:
    vendor.faults.reject(STUDENT, status=422, detail="userName not allowed")

    rejected = await api.post("Users", student())
    other = await api.post("Users", teacher())
    rejected_put = await api.put("Users", STUDENT, student())
    vendor.faults.clear()
    accepted = await api.post("Users", student())

    assert (rejected.status, rejected.text) == (422, "userName not allowed\n")
    assert rejected_put.status == 422
    assert other.status == 201
    assert accepted.status == 201
    assert [r.fault for r in vendor.requests] == ["reject", None, "reject", None]


async def test_throttle_answers_429_with_retry_after(api: Api, vendor: FakeEgilVendor) -> None:
    vendor.faults.throttle(2, retry_after=3)

    answers = [await api.get("/Users") for _ in range(3)]

    assert [a.status for a in answers] == [429, 429, 200]
    assert answers[0].headers["Retry-After"] == "3"
    assert "Retry-After" not in answers[2].headers


async def test_fail_matching_reproduces_the_capture_servers_injections(api: Api, vendor: FakeEgilVendor) -> None:
    # egil-captures 10b: PUT /Users/* answered 204 and DELETE /Users/* answered 200, without processing
    await api.post("Users", student())
    vendor.faults.fail_matching("PUT", "/Users/", 204, times=None)
    vendor.faults.fail_matching("DELETE", "/Users/", 200, times=1)

    put = await api.put("Users", STUDENT, student(displayName="Changed"))
    put_again = await api.put("Users", STUDENT, student(displayName="Changed"))
    delete = await api.delete("Users", STUDENT)
    group = await api.post("StudentGroups", student_group())
    delete_again = await api.delete("Users", STUDENT)

    assert [put.status, put_again.status, delete.status, group.status] == [204, 204, 200, 201]
    assert delete_again.status == 204
    assert vendor.resources(TENANT, "Users") == {}


async def test_rate_limit_makes_requests_wait_instead_of_failing(api: Api, vendor: FakeEgilVendor) -> None:
    vendor.faults.rate_limit(20, burst=1)

    started = time.monotonic()
    statuses = [(await api.get("/Users")).status for _ in range(5)]

    assert statuses == [200] * 5
    assert time.monotonic() - started >= 0.15


async def test_faults_clear(api: Api, vendor: FakeEgilVendor) -> None:
    faults = vendor.faults
    faults.fail_next(3)
    faults.throttle(3)
    faults.error_rate(1.0)
    faults.delay(5)
    faults.reject(ORG)
    faults.fail_matching("POST", "/", 500, times=None)
    faults.rate_limit(0.01)

    faults.clear()

    assert (await api.post("Organisations", organisation())).status == 201


# --------------------------------------------------------------------------------------------------
# Outage


async def test_down_refuses_connections_and_up_listens_on_the_same_port(api: Api, vendor: FakeEgilVendor) -> None:
    assert (await api.post("Organisations", organisation())).status == 201
    port = vendor.port

    vendor.down()
    assert not vendor.is_up
    with pytest.raises(aiohttp.ClientConnectionError):
        await api.get("/Organisations")  # the pooled keep-alive connection is gone too
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(force_close=True), headers={"X-API-Key": KEY}
    ) as fresh:
        with pytest.raises(aiohttp.ClientConnectorError) as refused:
            await Api(fresh, vendor.base_url).get("/Organisations")
    assert isinstance(refused.value.os_error, ConnectionRefusedError)

    await vendor.up()

    assert vendor.port == port
    assert [r["id"] for r in list_resources(await api.get("/Organisations"))] == [ORG]


# --------------------------------------------------------------------------------------------------
# References


async def test_dangling_references_are_recorded_per_request(api: Api, vendor: FakeEgilVendor) -> None:
    # children first: the reference server accepts it, the fake records what was missing
    assert (await api.post("StudentGroups", student_group(members=(STUDENT,)))).status == 201
    group_request = vendor.requests[-1]

    assert set(group_request.dangling) == {
        ("StudentGroups", GROUP, "owner", UNIT),
        ("StudentGroups", GROUP, "studentMemberships", STUDENT),
    }
    # parents first: nothing dangles
    vendor.dangling_references.clear()
    for endpoint, body in (
        ("Organisations", organisation()),
        ("SchoolUnitGroups", {"externalId": SUG, "displayName": "Grundskoleförvaltningen"}),
        ("SchoolUnits", school_unit()),
        ("Users", student()),
        ("Users", teacher()),
        ("Employments", employment()),
        ("Activities", activity()),
    ):
        assert (await api.post(endpoint, body)).status == 201
    assert vendor.dangling_references == []


async def test_deletes_do_not_cascade_and_orphans_are_recorded(api: Api, vendor: FakeEgilVendor) -> None:
    await api.post("SchoolUnits", school_unit())
    await api.post("Users", student())
    await api.post("StudentGroups", student_group(members=(STUDENT,)))

    answer = await api.delete("Users", STUDENT)  # still a member of the group: accepted anyway

    assert answer.status == 204
    assert vendor.requests[-1].orphaned == (DanglingReference("StudentGroups", GROUP, "studentMemberships", STUDENT),)
    assert vendor.resources(TENANT, "StudentGroups")[GROUP]["studentMemberships"] == [ref("Users", STUDENT)]


async def test_seed_and_forget(api: Api, vendor: FakeEgilVendor) -> None:
    assert vendor.seed(TENANT, "Organisations", organisation()) == ORG
    conflict = await api.post("Organisations", organisation())
    assert vendor.forget(TENANT, "Organisations", ORG)
    lost = await api.put("Organisations", ORG, organisation())

    assert conflict.status == 409
    assert lost.status == 404
    with pytest.raises(ValueError, match="missing required attribute displayName"):
        vendor.seed(TENANT, "Organisations", _without(organisation(), "displayName"))


# --------------------------------------------------------------------------------------------------
# The EGIL reference client's captured requests


def _captured(step: str) -> list[dict[str, Any]]:
    path = egil_capture(step)
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


async def _replay(api: Api, requests: list[dict[str, Any]]) -> list[tuple[int, int]]:
    results = []
    for captured in requests:
        headers = {name: value for name, value in captured["headers"] if name in ("User-Agent", "Accept")}
        content_type = next((value for name, value in captured["headers"] if name == "Content-Type"), None)
        raw = captured["body_raw"]
        body = raw.encode("utf-8") if raw is not None else None
        answer = await api.call(captured["method"], captured["path"], body, content_type=content_type, headers=headers)
        results.append((answer.status, captured["response_status"]))
    return results


async def test_replay_of_the_initial_sync_capture(api: Api, vendor: FakeEgilVendor) -> None:
    initial = _captured("01-initial-sync")
    assert len(initial) == 27

    results = await _replay(api, initial)

    assert [got for got, _ in results] == [expected for _, expected in results]
    assert {expected for _, expected in results} == {201}
    counts = {endpoint: len(vendor.resources(TENANT, endpoint)) for endpoint in ("Users", "Employments", "Activities")}
    assert counts == {"Users": 13, "Employments": 4, "Activities": 3}
    assert vendor.dangling_references == []  # the client sends parents first

    # step 02 continues from there: PUT, POST, PUT of the group, then the DELETE with a form content type
    changes = _captured("02-after-ldap-changes")
    results = await _replay(api, changes)

    assert [got for got, _ in results] == [expected for _, expected in results] == [200, 201, 200, 204]
    users = vendor.resources(TENANT, "Users")
    assert users["c0a80101-0000-4000-8000-000000000003"]["name"]["familyName"] == "Björk"
    assert "c0a80101-0000-4000-8000-000000000008" not in users
    assert vendor.orphaned_references == []  # the group was updated before the member was deleted


# --------------------------------------------------------------------------------------------------
# Logging and the command line


async def test_access_log_has_one_line_per_request_without_bodies(make_api: Callable[..., Any]) -> None:
    log = io.StringIO()
    _vendor, api = await make_api(access_log=log)

    await api.post("Users", student())
    await api.delete("Users", STUDENT)

    lines = log.getvalue().splitlines()
    assert len(lines) == 2
    assert re.fullmatch(rf"127\.0\.0\.1 {TENANT} POST /Users 201 \d+\.\dms", lines[0])
    assert f"DELETE /Users/{STUDENT} 204" in lines[1]
    assert "Wilma" not in log.getvalue()


async def test_command_line_serves_until_sigterm() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "skolsynk_testkit.fakes.egil_vendor",
        "--port",
        "0",
        "--api-key",
        f"{KEY}={TENANT}",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        banner = (await asyncio.wait_for(process.stdout.readline(), 15)).decode()
        match = re.search(r"listening on (http://127\.0\.0\.1:\d+)", banner)
        assert match, banner
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10), headers={"X-API-Key": KEY}) as s:
            answer = await Api(s, match.group(1)).post("Users", student())
        assert answer.status == 201
        log_line = (await asyncio.wait_for(process.stdout.readline(), 5)).decode()

        process.send_signal(signal.SIGTERM)
        rest, errors = await asyncio.wait_for(process.communicate(), 10)
    finally:
        if process.returncode is None:
            process.kill()
            await process.communicate()

    assert process.returncode == 0, errors.decode()
    assert f"{TENANT} POST /Users 201" in log_line
    assert "Wilma" not in log_line
    assert "stopped" in rest.decode()
