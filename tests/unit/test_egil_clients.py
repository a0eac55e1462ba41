"""EGIL client registry: API keys by hash, pins, and pins from federation metadata."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from skolsynk.connectors.sources.egil import load_sources
from skolsynk_services.egil_receiver.clients import (
    ClientRegistry,
    EgilClient,
    federation_client_pins,
    hash_key,
    load_federation_pins,
)
from tests.reference import EGIL_METADATA

pytestmark = pytest.mark.unit


P1 = "A" * 43 + "="
P2 = "B" * 43 + "="


def write_clients(tmp_path: Path, clients: list[dict[str, object]]) -> Path:
    path = tmp_path / "clients.yaml"
    path.write_text(yaml.safe_dump(clients))
    return path


def test_api_keys_are_matched_by_hash_and_pins_directly(tmp_path: Path) -> None:
    path = write_clients(
        tmp_path,
        [{"tenant_id": "kommun-a", "source_id": "egil", "api_key_sha256": hash_key("secret-key"), "client_pins": [P1]}],
    )
    registry = ClientRegistry(load_sources(path))
    assert registry.by_api_key("secret-key").tenant_id == "kommun-a"  # type: ignore[union-attr]
    assert registry.by_api_key("other-key") is None
    assert registry.by_pin(P1).source_id == "egil"  # type: ignore[union-attr]
    assert registry.by_pin(P2) is None


def test_a_clients_file_is_checked_field_by_field(tmp_path: Path) -> None:
    path = write_clients(tmp_path, [{"tenant_id": "kommun-a", "source_id": "egil", "client_pins": ["p1="]}])
    with pytest.raises(ValidationError, match=r"client_pins\.0"):
        load_sources(path)


async def test_clients_are_registered_rotated_and_revoked_while_serving() -> None:
    registry = ClientRegistry([EgilClient(tenant_id="kommun-a", source_id="egil", api_key_sha256=hash_key("old"))])
    limiter = registry.limiter(registry.clients[0])
    problems = await registry.set_sources(
        [
            EgilClient(tenant_id="kommun-a", source_id="egil", api_key_sha256=hash_key("new")),
            EgilClient(tenant_id="kommun-a", source_id="ad-2", client_pins=(P1,)),
            EgilClient(tenant_id="kommun-a", source_id="nothing-yet"),
        ]
    )
    assert problems == {"kommun-a:nothing-yet": "no API key and no client certificate registered"}
    assert registry.by_api_key("old") is None
    assert registry.by_api_key("new").source_id == "egil"  # type: ignore[union-attr]
    assert registry.by_pin(P1).source_id == "ad-2"  # type: ignore[union-attr]
    assert registry.limiter(registry.by_api_key("new")) is limiter  # the same rate: its bucket is kept  # type: ignore[arg-type]
    await registry.set_sources([])
    assert registry.by_api_key("new") is None
    assert registry.by_pin(P1) is None


def test_pins_come_from_federation_metadata(tmp_path: Path) -> None:
    path = write_clients(
        tmp_path,
        [{"tenant_id": "gronkoping", "source_id": "egil", "federation_entity_id": "https://egil.gronkoping.se"}],
    )
    registry = ClientRegistry(load_sources(path), federation_pins=load_federation_pins(EGIL_METADATA))
    client = registry.by_pin("SzLHjE79PlF0YQ4uFVu0z6mnBdsbFo25TogfUV372qg=")
    assert client is not None
    assert client.tenant_id == "gronkoping"
    # The vendor's server entry has server pins, not client pins: they never let anyone in.
    assert registry.by_pin("LSL2kIUvDIw6poLb5fy7D6Beh+O61pceSeQtTHIEhs8=") is None


def test_federation_pins_only_sha256_client_pins() -> None:
    metadata = {
        "entities": [
            {
                "entity_id": "a",
                "clients": [{"pins": [{"alg": "sha256", "digest": "x="}, {"alg": "md5", "digest": "y"}]}],
            },
            {"entity_id": "b", "servers": [{"pins": [{"alg": "sha256", "digest": "z="}]}]},
        ]
    }
    assert federation_client_pins(json.loads(json.dumps(metadata))) == {"a": ("x=",)}
