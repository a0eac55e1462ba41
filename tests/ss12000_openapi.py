"""The SS 12000:2020 OpenAPI 2.1.0 (SIS's file, read from the reference directory, never committed) as JSON
Schema validators for what an SS 12000 API answers.

An OpenAPI 3.0 schema object is JSON Schema with a few differences; :func:`json_schema` turns the spec's
``components`` into JSON Schema 2020-12:

* ``nullable: true`` becomes ``"null"`` among the types (and in an ``enum``): ``null`` is valid only
  where the spec says ``nullable``;
* ``example`` is dropped (YAML reads some as dates; they are documentation, not constraints);
* everything else keeps its meaning: ``required``, ``enum``, ``minItems``, ``uniqueItems``, ``allOf`` and
  ``additionalProperties`` as the spec has it (it sets none: extra members are allowed).

2020-12 rather than Draft 7 (OpenAPI 3.0's own base is older still) because its validators assert every
``format`` the spec uses: ``uuid``, ``date``, ``date-time``, ``email``, ``uri``. The two drafts differ for
a ``$ref`` with siblings and a boolean ``exclusiveMinimum``/``exclusiveMaximum``; the spec has neither,
and :func:`json_schema` refuses a spec that does, so a newer file cannot change the meaning silently.
The validator is jsonschema-rs (a dev dependency through schemathesis), with format assertion on.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable
from typing import Any, Final

import jsonschema_rs
import yaml

from tests.reference import SS12000_OPENAPI, reference_file

#: The id the spec is registered under; ``$ref: "#/components/..."`` resolves inside it.
SPEC_URI: Final = "urn:ss12000-openapi-2.1"


class UnsupportedSchema(ValueError):
    """The spec uses a construct whose meaning differs between OpenAPI 3.0 and JSON Schema 2020-12."""


def json_schema(node: Any, where: str = "#") -> Any:
    """An OpenAPI 3.0 document (or part of it) as JSON Schema 2020-12; see the module docstring."""
    if isinstance(node, list):
        return [json_schema(value, f"{where}/{index}") for index, value in enumerate(node)]
    if not isinstance(node, dict):
        return node
    if "$ref" in node and len(node) > 1:
        raise UnsupportedSchema(f"{where}: $ref with siblings ({sorted(node)})")
    for keyword in ("exclusiveMinimum", "exclusiveMaximum"):
        if isinstance(node.get(keyword), bool):
            raise UnsupportedSchema(f"{where}: boolean {keyword}")
    converted = {key: json_schema(value, f"{where}/{key}") for key, value in node.items() if key != "example"}
    if converted.pop("nullable", False):
        if isinstance(converted.get("type"), str):
            converted["type"] = [converted["type"], "null"]
        if isinstance(converted.get("enum"), list) and None not in converted["enum"]:
            converted["enum"] = [*converted["enum"], None]
    return converted


@functools.cache
def spec() -> dict[str, Any]:
    """The OpenAPI document as JSON Schema (skips, or fails under ``CI``, when the file is missing)."""
    raw = yaml.safe_load(reference_file(SS12000_OPENAPI).read_text(encoding="utf-8"))
    # YAML reads unquoted dates (in ``default``, ``example``) as date objects: back to JSON text.
    converted: dict[str, Any] = json_schema(json.loads(json.dumps(raw, default=str)))
    return converted


@functools.cache
def _registry() -> jsonschema_rs.Registry:
    return jsonschema_rs.Registry([(SPEC_URI, spec())], draft=jsonschema_rs.Draft202012)


def _validator(pointer: str) -> jsonschema_rs.Validator:
    return jsonschema_rs.Draft202012Validator(
        {"$ref": f"{SPEC_URI}#{pointer}"}, registry=_registry(), validate_formats=True
    )


@functools.cache
def component(name: str) -> jsonschema_rs.Validator:
    """A validator for ``#/components/schemas/{name}``."""
    if name not in spec()["components"]["schemas"]:
        raise KeyError(f"the spec has no schema {name!r}")
    return _validator(f"/components/schemas/{name}")


@functools.cache
def answer(path: str) -> jsonschema_rs.Validator:
    """A validator for the ``200`` answer of ``GET {path}`` (``/persons``, ``/deletedEntities`` ...), the
    schema the spec names for that operation."""
    operation = spec()["paths"][path]["get"]
    schema = operation["responses"]["200"]["content"]["application/json"]["schema"]
    ref = schema["$ref"]
    if not ref.startswith("#/"):
        raise UnsupportedSchema(f"GET {path}: answer schema {ref!r} is not in the document")
    return _validator(ref[1:])


def violations(validator: jsonschema_rs.Validator, instance: Any, *, limit: int = 20) -> list[str]:
    """What is wrong with ``instance``: up to ``limit`` lines ``/json/path: message``."""
    lines: list[str] = []
    errors: Iterable[jsonschema_rs.ValidationError] = validator.iter_errors(instance)
    for error in errors:
        path = "/" + "/".join(str(part) for part in error.instance_path)
        lines.append(f"{path}: {error.message}")
        if len(lines) >= limit:
            break
    return lines
