"""Every published contract, in one list, and its JSON Schema export (``make contracts``)."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel

from skolsynk.contracts.envelope import Envelope, MessageContract
from skolsynk.contracts.gdpr import DeletionReceipt, DeletionRequested, ErasureRequested, ErasureWithdrawn
from skolsynk.contracts.source import SourceRecordPage, SourceRunCompleted, SourceRunStarted, fields_schema
from skolsynk.contracts.sync import SourceCheckCompleted, SourceCheckRequested, SyncRequested
from skolsynk.contracts.vendor import ProjectionRequested, ProjectionRequestedV2, VendorChange, resources_schema
from skolsynk.domain.ss12000 import ENTITY_MODELS

#: Every payload contract that crosses a service boundary. Add new contracts here.
CONTRACTS: tuple[type[MessageContract], ...] = (
    SyncRequested,
    SourceCheckRequested,
    SourceCheckCompleted,
    SourceRunStarted,
    SourceRecordPage,
    SourceRunCompleted,
    VendorChange,
    ProjectionRequested,
    ProjectionRequestedV2,
    DeletionRequested,
    DeletionReceipt,
    ErasureRequested,
    ErasureWithdrawn,
)


def contract_schemas() -> dict[str, dict[str, object]]:
    """File name -> JSON Schema, for the envelope and every contract."""
    schemas: dict[str, dict[str, object]] = {}
    models: list[tuple[str, type[BaseModel], str | None, int | None]] = [
        (f"envelope.v{Envelope.model_fields['envelope_version'].default}", Envelope, None, None)
    ]
    models += [(f"{c.message_type}.v{c.schema_version}", c, c.message_type, c.schema_version) for c in CONTRACTS]
    # The shape of source records' data, for connector authors.
    models += [(f"entity.{kind.value}", model, None, None) for kind, model in ENTITY_MODELS.items()]
    for name, model, message_type, version in models:
        schema = model.model_json_schema(mode="serialization")
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["$id"] = f"https://skolsynk.org/contracts/{name}.schema.json"
        if message_type is not None:
            schema["x-message-type"] = message_type
            schema["x-schema-version"] = version
        schemas[f"{name}.schema.json"] = schema
    # The field names a source record of each kind may carry (SourceRecord.data), with their types.
    for kind, schema in fields_schema().items():
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["$id"] = f"https://skolsynk.org/contracts/record-fields.{kind}.schema.json"
        schemas[f"record-fields.{kind}.schema.json"] = schema
    # What a vendor receives for each kind (VendorChange.resource).
    for kind, schema in resources_schema().items():
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["$id"] = f"https://skolsynk.org/contracts/vendor-resource.{kind}.schema.json"
        schemas[f"vendor-resource.{kind}.schema.json"] = schema
    return schemas


def render(schema: dict[str, object]) -> str:
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def export(directory: Path) -> list[Path]:
    """Write every schema to ``directory``; returns the files written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for file_name, schema in contract_schemas().items():
        path = directory / file_name
        path.write_text(render(schema), encoding="utf-8")
        written.append(path)
    return written


def stale_files(directory: Path) -> list[str]:
    """Names of exported files that are missing, different or no longer produced."""
    expected = {name: render(schema) for name, schema in contract_schemas().items()}
    problems = [
        name
        for name, text in expected.items()
        if not (directory / name).exists() or (directory / name).read_text(encoding="utf-8") != text
    ]
    problems += [p.name for p in directory.glob("*.schema.json") if p.name not in expected]
    return sorted(problems)
