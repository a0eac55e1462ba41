"""The admin API's OpenAPI 3.1 document, built from the endpoint table and the pydantic models.

``python -m skolsynk_services.admin.openapi [FILE]`` writes it (docs/admin-openapi.json is checked in; a test fails when
it is stale). The service serves it at ``/api/v1/openapi.json``."""

from __future__ import annotations

import json
import sys
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel

import skolsynk
from skolsynk.connectors.sources import SOURCE_KINDS
from skolsynk_services.admin.api import ENDPOINTS, PREFIX, TOTAL_COUNT, Endpoint
from skolsynk_services.admin.problems import PROBLEM_TYPE_BASE

DOCUMENT = Path(__file__).resolve().parents[3] / "docs" / "admin-openapi.json"
REF = "#/components/schemas/{model}"

PROBLEM_SCHEMA = {
    "type": "object",
    "description": f"RFC 9457 problem details; type is {PROBLEM_TYPE_BASE}<kind>.",
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
        "errors": {"type": "array", "items": {"type": "object"}},
        "blockers": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["type", "title", "status", "detail"],
}


def _schema(annotation: Any, components: dict[str, Any]) -> dict[str, Any]:
    if annotation is None:
        return {}
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        schema = annotation.model_json_schema(ref_template=REF, mode="serialization")
        components.update(schema.pop("$defs", {}))
        components[annotation.__name__] = schema
        return {"$ref": REF.format(model=annotation.__name__)}
    if typing.get_origin(annotation) is list:
        (item,) = typing.get_args(annotation)
        return {"type": "array", "items": _schema(item, components)}
    if annotation is dict or typing.get_origin(annotation) is dict:
        return {"type": "object"}
    raise TypeError(f"no schema for {annotation!r}")


def _input_schema(model: type[BaseModel], components: dict[str, Any]) -> dict[str, Any]:
    schema = model.model_json_schema(ref_template=REF, mode="validation")
    components.update(schema.pop("$defs", {}))
    components[model.__name__] = schema
    return {"$ref": REF.format(model=model.__name__)}


def _operation(point: Endpoint, components: dict[str, Any]) -> dict[str, Any]:
    parameters: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}
        for name in point.params
    ]
    for query in point.query:
        schema: dict[str, Any] = {"type": query.kind}
        if query.enum is not None:
            schema["enum"] = [e.value for e in query.enum]
        parameters.append(
            {"name": query.name, "in": "query", "required": False, "description": query.description, "schema": schema}
        )
    problem = {"application/problem+json": {"schema": {"$ref": REF.format(model="Problem")}}}
    responses: dict[str, Any] = {}
    if point.status == 204:
        responses["204"] = {"description": "Done."}
    elif point.media_type == "text/csv":
        responses[str(point.status)] = {"description": "CSV", "content": {"text/csv": {"schema": {"type": "string"}}}}
    else:
        content = {"application/json": {"schema": _schema(point.response, components)}}
        responses[str(point.status)] = {"description": "OK", "content": content}
        if point.counted:
            responses[str(point.status)]["headers"] = {
                TOTAL_COUNT: {
                    "description": "How long the whole list is (this is one page of it).",
                    "schema": {"type": "integer"},
                }
            }
    errors = {"401": "No or an invalid token.", "403": "The token may not do this.", "404": "Not found."}
    if point.body is not None or point.query:
        errors["422"] = "The request is invalid (field by field in errors)."
    if point.method != "GET":
        errors["409"] = "The change conflicts with the current state."
        errors["503"] = "The service that would carry out the request is not running."
    for status, description in errors.items():
        responses[status] = {"description": description, "content": problem}
    operation: dict[str, Any] = {
        "operationId": point.call.__name__,
        "summary": point.summary,
        "tags": [point.tag],
        "parameters": parameters,
        "responses": responses,
    }
    if point.body is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": _input_schema(point.body, components)}},
        }
    return operation


def document() -> dict[str, Any]:
    components: dict[str, Any] = {"Problem": PROBLEM_SCHEMA}
    paths: dict[str, Any] = {}
    for point in ENDPOINTS:
        paths.setdefault(PREFIX + point.path, {})[point.method.lower()] = _operation(point, components)
    for kind in SOURCE_KINDS.values():
        components[f"SourceSettings.{kind.name}"] = kind.settings_schema()
    paths[PREFIX + "/openapi.json"] = {
        "get": {
            "operationId": "openapi",
            "summary": "This document",
            "tags": ["meta"],
            "responses": {
                "200": {"description": "OK", "content": {"application/json": {"schema": {"type": "object"}}}}
            },
        }
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "skolsynk admin API",
            "version": skolsynk.__version__,
            "description": (
                "Organisers' and operators' API: sources, vendor subscriptions with preview and the promotion "
                "gate, sync history, data quality, holds, GDPR erasure requests and evidence. Every endpoint needs "
                "'Authorization: Bearer <token>'; organiser admins reach only their own tenant."
            ),
        },
        "servers": [{"url": "/"}],
        "security": [{"bearerAuth": []}],
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": dict(sorted(components.items())),
            "securitySchemes": {
                "bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "skt_<id>.<secret>"}
            },
        },
    }


def render() -> str:
    return json.dumps(document(), indent=2, sort_keys=False, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    target = Path(args[0]) if args else DOCUMENT
    target.write_text(render(), encoding="utf-8")
    sys.stdout.write(f"wrote {target}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
