"""EGIL client registry: API keys by hash, pins, and pins from federation metadata."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from skolsynk_services.egil_receiver.clients import ClientRegistry, federation_client_pins, hash_key
from tests.reference import EGIL_METADATA

pytestmark = pytest.mark.unit


def write_clients(tmp_path: Path, clients: list[dict[str, object]]) -> Path:
    path = tmp_path / "clients.yaml"
    path.write_text(yaml.safe_dump(clients))
    return path


def test_api_keys_are_matched_by_hash_and_pins_directly(tmp_path: Path) -> None:
    path = write_clients(
        tmp_path,
        [
            {
                "tenant_id": "kommun-a",
                "source_id": "egil",
                "api_key_sha256": hash_key("secret-key"),
                "client_pins": ["p1="],
            }
        ],
    )
    registry = ClientRegistry.from_file(path)
    assert registry.by_api_key("secret-key").tenant_id == "kommun-a"  # type: ignore[union-attr]
    assert registry.by_api_key("other-key") is None
    assert registry.by_pin("p1=").source_id == "egil"  # type: ignore[union-attr]
    assert registry.by_pin("p2=") is None


def test_pins_come_from_federation_metadata(tmp_path: Path) -> None:
    path = write_clients(
        tmp_path,
        [{"tenant_id": "gronkoping", "source_id": "egil", "federation_entity_id": "https://egil.gronkoping.se"}],
    )
    registry = ClientRegistry.from_file(path, federation_metadata=EGIL_METADATA)
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
