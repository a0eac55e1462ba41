"""The envelope, payload contracts and the exported JSON Schema files."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from skolsynk.contracts import ContractMismatch, Envelope, MessageContract, SyncRequested
from skolsynk.contracts.__main__ import main as contracts_main
from skolsynk.contracts.registry import CONTRACTS, contract_schemas, export, stale_files
from skolsynk.domain.ss12000 import VENDOR_KINDS, EntityKind

pytestmark = pytest.mark.unit

CAUSE_ID = UUID("11111111-1111-4111-8111-111111111111")
FLOW_ID = UUID("22222222-2222-4222-8222-222222222222")


def _sync(**overrides: Any) -> SyncRequested:
    fields: dict[str, Any] = {"source_id": "google-main", "requested_by": "operator", **overrides}
    return SyncRequested(**fields)


def _envelope(**overrides: Any) -> Envelope:
    fields: dict[str, Any] = {
        "message_type": "sync.requested",
        "schema_version": 1,
        "tenant_id": "kommun-a",
        "payload": {"source_id": "google-main", "mode": "full", "requested_by": "operator"},
        **overrides,
    }
    return Envelope(**fields)


# ---------------------------------------------------------------------------
# Envelope
# ---------------------------------------------------------------------------


def test_envelope_defaults() -> None:
    before = datetime.now(UTC)
    env = Envelope(message_type="sync.requested", schema_version=1, payload={})
    assert env.envelope_version == 1
    assert isinstance(env.message_id, UUID)
    assert env.tenant_id is None
    assert env.correlation_id is None
    assert env.causation_id is None
    assert env.producer is None
    assert env.produced_at.tzinfo is not None
    assert before <= env.produced_at <= datetime.now(UTC)


def test_every_envelope_gets_its_own_message_id() -> None:
    assert len({_envelope().message_id for _ in range(50)}) == 50


@pytest.mark.parametrize(
    "env",
    [
        _envelope(),
        _envelope(tenant_id=None, correlation_id=FLOW_ID, causation_id=CAUSE_ID, producer="admin"),
        _envelope(produced_at=datetime(2025, 8, 18, 7, 30, tzinfo=timezone(timedelta(hours=2)))),
        _envelope(payload={"nested": {"list": [1, 2.5, None, True, "å"]}, "empty": {}}),
    ],
)
def test_envelope_round_trips_through_json(env: Envelope) -> None:
    wire = env.model_dump_json()
    again = Envelope.model_validate_json(wire)
    assert again == env
    assert again.model_dump_json() == wire
    assert Envelope.model_validate(json.loads(wire)) == env


_json_scalars = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20)
)
_json_values = st.recursive(
    _json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=15,
)


@given(
    payload=st.dictionaries(st.text(max_size=10), _json_values, max_size=5),
    tenant=st.none() | st.from_regex(r"\A[a-z0-9][a-z0-9-]{0,62}\Z"),
    correlation=st.none() | st.uuids(),
    produced_at=st.datetimes(timezones=st.just(UTC)),
)
def test_envelope_json_round_trip_property(
    payload: dict[str, Any], tenant: str | None, correlation: UUID | None, produced_at: datetime
) -> None:
    env = Envelope(
        message_type="a.b",
        schema_version=3,
        tenant_id=tenant,
        correlation_id=correlation,
        produced_at=produced_at,
        payload=payload,
    )
    assert Envelope.model_validate_json(env.model_dump_json()) == env


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"unexpected": "x"}, "unexpected"),
        ({"produced_at": datetime(2025, 1, 1, 12, 0)}, "produced_at"),  # naive
        ({"tenant_id": "Kommun-A"}, "tenant_id"),
        ({"tenant_id": "-kommun"}, "tenant_id"),
        ({"tenant_id": "kommun a"}, "tenant_id"),
        ({"tenant_id": ""}, "tenant_id"),
        ({"tenant_id": "k" * 64}, "tenant_id"),
        ({"message_type": "Sync.Requested"}, "message_type"),
        ({"message_type": "sync..requested"}, "message_type"),
        ({"message_type": ""}, "message_type"),
        ({"schema_version": 0}, "schema_version"),
        ({"envelope_version": 2}, "envelope_version"),
        ({"envelope_version": 0}, "envelope_version"),
        ({"message_id": "not-a-uuid"}, "message_id"),
        ({"producer": "p" * 65}, "producer"),
        ({"payload": ["not", "a", "dict"]}, "payload"),
    ],
)
def test_envelope_rejects_invalid_fields(overrides: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        _envelope(**overrides)
    assert field in {str(part) for e in caught.value.errors() for part in e["loc"]}


def test_envelope_rejects_extra_fields_on_the_wire() -> None:
    wire = json.loads(_envelope().model_dump_json())
    wire["surprise"] = True
    with pytest.raises(ValidationError, match="surprise"):
        Envelope.model_validate_json(json.dumps(wire))


def test_envelope_rejects_naive_timestamp_on_the_wire() -> None:
    wire = json.loads(_envelope().model_dump_json())
    wire["produced_at"] = "2025-01-01T12:00:00"
    with pytest.raises(ValidationError, match="produced_at"):
        Envelope.model_validate_json(json.dumps(wire))


def test_envelope_is_immutable() -> None:
    env = _envelope()
    with pytest.raises(ValidationError):
        env.tenant_id = "kommun-b"  # type: ignore[misc]


# ---------------------------------------------------------------------------
# MessageContract.to_envelope / from_envelope
# ---------------------------------------------------------------------------


def test_to_envelope_sets_type_version_and_ids() -> None:
    msg_id = uuid4()
    env = _sync(mode="incremental").to_envelope(
        tenant_id="kommun-a", correlation_id=FLOW_ID, producer="admin", message_id=msg_id
    )
    assert env.message_type == "sync.requested" == SyncRequested.message_type
    assert env.schema_version == 1 == SyncRequested.schema_version
    assert env.tenant_id == "kommun-a"
    assert env.correlation_id == FLOW_ID
    assert env.causation_id is None
    assert env.producer == "admin"
    assert env.message_id == msg_id
    assert env.payload == {"source_id": "google-main", "mode": "incremental", "requested_by": "operator"}


def test_to_envelope_without_ids() -> None:
    env = _sync().to_envelope()
    assert (env.tenant_id, env.correlation_id, env.causation_id, env.producer) == (None, None, None, None)
    assert _sync().to_envelope().message_id != env.message_id


def test_caused_by_inherits_tenant_and_correlation() -> None:
    cause = _envelope(message_id=CAUSE_ID, tenant_id="kommun-a", correlation_id=FLOW_ID)
    child = _sync().to_envelope(caused_by=cause)
    assert child.causation_id == CAUSE_ID
    assert child.tenant_id == "kommun-a"
    assert child.correlation_id == FLOW_ID
    assert child.message_id not in (CAUSE_ID, FLOW_ID)


def test_caused_by_without_correlation_falls_back_to_the_cause_message_id() -> None:
    cause = _envelope(message_id=CAUSE_ID, correlation_id=None)
    child = _sync().to_envelope(caused_by=cause)
    assert child.correlation_id == CAUSE_ID
    assert child.causation_id == CAUSE_ID
    grandchild = _sync().to_envelope(caused_by=child)
    assert grandchild.correlation_id == CAUSE_ID  # the whole flow shares one correlation id
    assert grandchild.causation_id == child.message_id


def test_explicit_values_win_over_the_cause() -> None:
    cause = _envelope(message_id=CAUSE_ID, tenant_id="kommun-a", correlation_id=FLOW_ID)
    other_flow = uuid4()
    child = _sync().to_envelope(caused_by=cause, tenant_id="kommun-b", correlation_id=other_flow)
    assert (child.tenant_id, child.correlation_id, child.causation_id) == ("kommun-b", other_flow, CAUSE_ID)


def test_from_envelope_round_trip() -> None:
    original = _sync(mode="incremental", requested_by="schedule")
    env = Envelope.model_validate_json(original.to_envelope(tenant_id="kommun-a").model_dump_json())
    assert SyncRequested.from_envelope(env) == original


@pytest.mark.parametrize(
    ("message_type", "schema_version"),
    [("sync.completed", 1), ("sync.requested", 2), ("user.upserted", 7)],
)
def test_from_envelope_rejects_another_type_or_version(message_type: str, schema_version: int) -> None:
    env = _envelope(message_type=message_type, schema_version=schema_version)
    with pytest.raises(ContractMismatch, match=rf"expected sync\.requested v1, got {message_type} v{schema_version}"):
        SyncRequested.from_envelope(env)


def test_contract_mismatch_is_a_value_error() -> None:
    assert issubclass(ContractMismatch, ValueError)


@pytest.mark.parametrize(
    "payload",
    [
        {"mode": "full", "requested_by": "operator"},  # source_id missing
        {"source_id": "Google", "requested_by": "operator"},  # bad id
        {"source_id": "google", "requested_by": "operator", "mode": "delta"},  # unknown mode
        {"source_id": "google", "requested_by": "x" * 65},  # too long
        {"source_id": "google", "requested_by": "operator", "extra": 1},  # extra=forbid
    ],
)
def test_from_envelope_rejects_an_invalid_payload(payload: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        SyncRequested.from_envelope(_envelope(payload=payload))


def test_contract_defaults_and_immutability() -> None:
    msg = _sync()
    assert msg.mode == "full"
    with pytest.raises(ValidationError):
        msg.mode = "incremental"  # type: ignore[misc]


@pytest.mark.parametrize("contract", CONTRACTS, ids=lambda c: f"{c.message_type}.v{c.schema_version}")
def test_every_registered_contract_fits_the_envelope(contract: type[MessageContract]) -> None:
    env = Envelope(message_type=contract.message_type, schema_version=contract.schema_version, payload={})
    assert env.message_type == contract.message_type


def test_registered_contracts_are_unique() -> None:
    keys = [(c.message_type, c.schema_version) for c in CONTRACTS]
    assert len(keys) == len(set(keys))


# ---------------------------------------------------------------------------
# JSON Schema export and the staleness check
# ---------------------------------------------------------------------------


def test_schema_files_cover_the_envelope_and_every_contract() -> None:
    schemas = contract_schemas()
    expected = {"envelope.v1.schema.json"} | {f"{c.message_type}.v{c.schema_version}.schema.json" for c in CONTRACTS}
    expected |= {f"entity.{kind.value}.schema.json" for kind in EntityKind}
    expected |= {f"record-fields.{kind.value}.schema.json" for kind in EntityKind}
    expected |= {f"vendor-resource.{kind.value}.schema.json" for kind in VENDOR_KINDS}
    assert set(schemas) == expected
    sync = schemas["sync.requested.v1.schema.json"]
    assert sync["x-message-type"] == "sync.requested"
    assert sync["x-schema-version"] == 1
    assert sync["$id"] == "https://skolsynk.org/contracts/sync.requested.v1.schema.json"
    assert sync["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert "x-message-type" not in schemas["envelope.v1.schema.json"]
    assert "payload" in schemas["envelope.v1.schema.json"]["required"]  # type: ignore[operator]


def test_exported_files_are_current(tmp_path: Path) -> None:
    written = export(tmp_path / "contracts")
    assert sorted(p.name for p in written) == sorted(contract_schemas())
    assert stale_files(tmp_path / "contracts") == []
    for path in written:
        assert json.loads(path.read_text(encoding="utf-8")) == contract_schemas()[path.name]


def test_export_is_deterministic(tmp_path: Path) -> None:
    first = {p.name: p.read_bytes() for p in export(tmp_path / "a")}
    second = {p.name: p.read_bytes() for p in export(tmp_path / "b")}
    assert first == second


def test_modified_file_is_stale(tmp_path: Path) -> None:
    export(tmp_path)
    path = tmp_path / "sync.requested.v1.schema.json"
    schema = json.loads(path.read_text(encoding="utf-8"))
    schema["properties"]["mode"]["description"] = "edited by hand"
    path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    assert stale_files(tmp_path) == ["sync.requested.v1.schema.json"]


def test_whitespace_change_is_stale(tmp_path: Path) -> None:
    export(tmp_path)
    path = tmp_path / "envelope.v1.schema.json"
    path.write_text(path.read_text(encoding="utf-8").rstrip("\n"), encoding="utf-8")
    assert stale_files(tmp_path) == ["envelope.v1.schema.json"]


def test_missing_file_is_stale(tmp_path: Path) -> None:
    export(tmp_path)
    (tmp_path / "envelope.v1.schema.json").unlink()
    assert stale_files(tmp_path) == ["envelope.v1.schema.json"]


def test_unknown_schema_file_is_stale(tmp_path: Path) -> None:
    export(tmp_path)
    (tmp_path / "sync.requested.v0.schema.json").write_text("{}\n", encoding="utf-8")
    (tmp_path / "README.md").write_text("not a schema\n", encoding="utf-8")  # other files are fine
    assert stale_files(tmp_path) == ["sync.requested.v0.schema.json"]


def test_empty_or_missing_directory_lists_every_file(tmp_path: Path) -> None:
    assert stale_files(tmp_path / "does-not-exist") == sorted(contract_schemas())
    assert stale_files(tmp_path) == sorted(contract_schemas())


def test_cli_check_and_export(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    directory = tmp_path / "contracts"
    assert contracts_main(["check", str(directory)]) == 1
    assert "stale" in capsys.readouterr().err
    assert contracts_main(["export", str(directory)]) == 0
    assert "wrote" in capsys.readouterr().out
    assert contracts_main(["check", str(directory)]) == 0
    assert "current" in capsys.readouterr().out
    (directory / "extra.v1.schema.json").write_text("{}", encoding="utf-8")
    assert contracts_main(["check", str(directory)]) == 1
    assert "extra.v1.schema.json" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [[], ["check"], ["verify", "docs/contracts"], ["check", "a", "b"]])
def test_cli_usage_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert contracts_main(argv) == 2
    assert "usage" in capsys.readouterr().err
