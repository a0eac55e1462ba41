"""The official definitions of the source APIs, for the fidelity tests (issue 23): Google's discovery documents
as google-api-python-client ships them, and the Microsoft Graph Python SDK (msgraph-sdk) with its request
builders' URL templates and its models. Both are test dependencies only.

* :func:`google_request_problems` / :func:`google_response_problems`: is a request (method, path, query)
  one the discovery document defines, with declared parameters, valid enum values and the required ones;
  does a response body fit the method's response schema (no property the schema lacks, the declared
  JSON types).
* :func:`graph_client`: a ``GraphServiceClient`` talking to a fake's base URL with a bearer token the fake
  issued; :func:`graph_request_problems`: is a request one of the SDK's request builders can make (path
  and ``$`` options from its URL template); :func:`graph_unexpected_properties`: properties a parsed model
  did not know (they land in ``additional_data``), other than the delta annotations Graph documents.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import googleapiclient
import httpx
from kiota_abstractions.authentication import (
    AccessTokenProvider,
    AllowedHostsValidator,
    BaseBearerTokenAuthenticationProvider,
)
from kiota_abstractions.serialization import Parsable
from msgraph.graph_request_adapter import GraphRequestAdapter
from msgraph.graph_service_client import GraphServiceClient
from msgraph_core import GraphClientFactory

DISCOVERY_DOCUMENTS = Path(googleapiclient.__file__).parent / "discovery_cache" / "documents"
#: Annotations Graph documents on delta entries, which no model declares.
GRAPH_DELTA_ANNOTATIONS = frozenset({"@removed", "members@delta"})
#: Query options of Graph's own next and delta links (opaque: not the client's choice).
GRAPH_LINK_TOKENS = frozenset({"$skiptoken", "$deltatoken"})


# --- Google: discovery documents ---------------------------------------------------------------------


@cache
def discovery_document(name: str) -> dict[str, Any]:
    """``admin.directory_v1``, ``admin.reports_v1`` ... as shipped with google-api-python-client."""
    document: dict[str, Any] = json.loads((DISCOVERY_DOCUMENTS / f"{name}.json").read_text(encoding="utf-8"))
    return document


def _methods(resources: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    for resource in resources.values():
        yield from resource.get("methods", {}).values()
        yield from _methods(resource.get("resources", {}))


def _template_pattern(method: Mapping[str, Any]) -> re.Pattern[str]:
    """The method's path template as a regex: ``{param}`` one segment, ``{+param}`` the parameter's own
    ``pattern`` where the document gives one (else anything)."""
    parameters = method.get("parameters", {})

    def segment(part: str) -> str:
        if not part.startswith("{"):
            return re.escape(part)
        if part.startswith("{+"):
            pattern = parameters.get(part[2:-1], {}).get("pattern")
            return f"({pattern.strip('^$')})" if pattern else "(.+)"
        return "([^/]+)"

    return re.compile("".join(segment(p) for p in re.split(r"(\{\+?[A-Za-z0-9_.]+\})", method["path"])) + "$")


def google_method(document: Mapping[str, Any], http_method: str, path: str) -> dict[str, Any] | None:
    """The discovery method a request is: same HTTP method, path matching its template (relative to the
    document's service path); the most specific template wins."""
    relative = path.lstrip("/").removeprefix(str(document.get("servicePath", "")))
    matches = [
        method
        for method in _methods(document["resources"])
        if method["httpMethod"] == http_method and _template_pattern(method).match(relative)
    ]
    return max(matches, key=lambda m: len(re.sub(r"\{[^}]*\}", "", m["path"])), default=None)


def _value_problem(name: str, value: str, parameter: Mapping[str, Any]) -> str | None:
    kind = parameter.get("type")
    if "enum" in parameter and value not in parameter["enum"]:
        return f"{name}={value!r} is not one of {parameter['enum']}"
    if kind == "integer":
        try:
            number = int(value)
        except ValueError:
            return f"{name}={value!r} is not an integer"
        low, high = parameter.get("minimum"), parameter.get("maximum")
        if (low is not None and number < int(low)) or (high is not None and number > int(high)):
            return f"{name}={number} is outside {low}..{high}"
    if kind == "boolean" and value not in ("true", "false"):
        return f"{name}={value!r} is not a boolean"
    return None


def google_request_problems(
    document: Mapping[str, Any], http_method: str, path: str, query: Mapping[str, Sequence[str]]
) -> list[str]:
    """What makes the request one the discovery document does not define (empty: none)."""
    method = google_method(document, http_method, path)
    if method is None:
        return [f"{http_method} {path}: no method of {document['name']} {document['version']}"]
    declared = {**document.get("parameters", {}), **method.get("parameters", {})}
    problems: list[str] = []
    for name, values in query.items():
        parameter = declared.get(name)
        if parameter is None or parameter.get("location") != "query":
            problems.append(f"{method['id']}: undeclared parameter {name}")
            continue
        if len(values) > 1 and not parameter.get("repeated"):
            problems.append(f"{method['id']}: {name} given {len(values)} times")
        problems += [f"{method['id']}: {p}" for v in values if (p := _value_problem(name, v, parameter))]
    for name, parameter in method.get("parameters", {}).items():
        if parameter.get("required") and parameter.get("location") == "query" and name not in query:
            problems.append(f"{method['id']}: required parameter {name} missing")
    return problems


def _schema_problems(document: Mapping[str, Any], value: Any, schema: Mapping[str, Any], where: str) -> list[str]:
    if "$ref" in schema:
        schema = document["schemas"][schema["$ref"]]
    kind = schema.get("type")
    if kind == "object":
        if not isinstance(value, dict):
            return [f"{where}: {type(value).__name__}, not an object"]
        properties, additional = schema.get("properties", {}), schema.get("additionalProperties")
        problems: list[str] = []
        for key, item in value.items():
            if key in properties:
                problems += _schema_problems(document, item, properties[key], f"{where}.{key}")
            elif additional is not None:
                problems += _schema_problems(document, item, additional, f"{where}.{key}")
            else:
                problems.append(f"{where}.{key}: not in the schema")
        return problems
    if kind == "array":
        if not isinstance(value, list):
            return [f"{where}: {type(value).__name__}, not an array"]
        return [
            p
            for i, item in enumerate(value)
            for p in _schema_problems(document, item, schema["items"], f"{where}[{i}]")
        ]
    expected: dict[str, tuple[type, ...]] = {
        "string": (str,),
        "integer": (int,),
        "number": (int, float),
        "boolean": (bool,),
    }
    if kind in expected and (not isinstance(value, expected[kind]) or (kind != "boolean" and isinstance(value, bool))):
        return [f"{where}: {type(value).__name__}, not {kind}"]
    if kind == "string" and schema.get("format") in ("int64", "uint64") and not str(value).lstrip("-").isdigit():
        return [f"{where}: {value!r} is not an int64 string"]
    return []


def google_response_problems(document: Mapping[str, Any], http_method: str, path: str, body: Any) -> list[str]:
    """What in ``body`` does not fit the response schema of the request's discovery method."""
    method = google_method(document, http_method, path)
    if method is None or "response" not in method:
        return [f"{http_method} {path}: no response schema"]
    return _schema_problems(document, body, method["response"], method["response"]["$ref"])


# --- Microsoft: msgraph-sdk ---------------------------------------------------------------------------


class _FixedToken(AccessTokenProvider):
    def __init__(self, token: str) -> None:
        self.token = token

    async def get_authorization_token(self, uri: str, additional_authentication_context: Any = None) -> str:
        return self.token

    def get_allowed_hosts_validator(self) -> AllowedHostsValidator:
        return AllowedHostsValidator([])


@asynccontextmanager
async def graph_client(base_url: str, token: str) -> AsyncIterator[GraphServiceClient]:
    """The SDK's client on ``base_url`` (``.../v1.0``), sending ``token`` as the bearer; its HTTP client is
    closed on the way out."""
    http = GraphClientFactory.create_with_default_middleware()
    adapter = GraphRequestAdapter(BaseBearerTokenAuthenticationProvider(_FixedToken(token)), client=http)
    adapter.base_url = base_url
    try:
        yield GraphServiceClient(request_adapter=adapter)
    finally:
        await http.aclose()
        # msgraph-core's AsyncGraphTransport does not close the transport it wraps: its connections would leak.
        inner = getattr(http._transport, "transport", None)
        if isinstance(inner, httpx.AsyncBaseTransport):
            await inner.aclose()


def _builder(client: GraphServiceClient, path: str) -> Any:
    """Walk the SDK's request builders along ``path`` (below ``/v1.0``); an id segment goes through the
    builder's ``by_..._id``. ``None`` when the SDK has no such path."""
    builder: Any = client
    for segment in path.strip("/").split("/"):
        name = {"delta()": "delta", "microsoft.graph.delta": "delta"}.get(segment, segment)
        if re.fullmatch(r"[a-z][A-Za-z]*", name) and hasattr(builder, name):
            builder = getattr(builder, name)
            continue
        by_id = [a for a in dir(builder) if a.startswith("by_") and a.endswith("_id")]
        if len(by_id) != 1:
            return None
        builder = getattr(builder, by_id[0])(segment)
    return builder


def graph_request_problems(client: GraphServiceClient, path: str, query: Mapping[str, str]) -> list[str]:
    """What makes a GET of ``path`` (below ``/v1.0``) with ``query`` one the SDK's request builders do not
    make (Graph's own ``$skiptoken`` / ``$deltatoken`` links aside)."""
    builder = _builder(client, path)
    template = getattr(builder, "url_template", None)
    if not isinstance(template, str):
        return [f"GET {path}: no request builder in msgraph-sdk"]
    found = re.search(r"\{\?([^}]*)\}", template)
    allowed = {unquote(name) for name in found.group(1).split(",")} if found else set()
    return [f"GET {path}: {name} is not an option of {template}" for name in set(query) - allowed - GRAPH_LINK_TOKENS]


def graph_unexpected_properties(parsed: Any, where: str = "") -> list[str]:
    """Properties the SDK's models did not know, anywhere in ``parsed`` (a model, a list of them)."""
    if isinstance(parsed, list):
        return [p for i, item in enumerate(parsed) for p in graph_unexpected_properties(item, f"{where}[{i}]")]
    if not isinstance(parsed, Parsable):
        return []
    problems = [
        f"{where or type(parsed).__name__}.{key}"
        for key in getattr(parsed, "additional_data", None) or {}
        if key not in GRAPH_DELTA_ANNOTATIONS and not key.startswith("@odata.")  # OData's own control information
    ]
    for name, value in vars(parsed).items():
        if name != "additional_data" and isinstance(value, (Parsable, list)):
            problems += graph_unexpected_properties(value, f"{where or type(parsed).__name__}.{name}")
    return problems
