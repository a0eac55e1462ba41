"""The dispatcher's EGIL SCIM client against the fake vendor server: mutual TLS with the server's CA
and public-key pin, API keys, 409/404 recovery and the classification of failures."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
import trustme

from skolsynk.adapters.egil import EgilResourceType
from skolsynk.catalogue import ScimAuth, ScimDelivery
from skolsynk.storage.vendor_credentials import PairCredentials
from skolsynk_services.dispatcher.scim import EgilScimClient, PinMismatch, VendorRejected, VendorUnavailable
from skolsynk_testkit.fakes.egil_vendor import FakeEgilVendor, server_ssl_context, spki_sha256_pin

pytestmark = pytest.mark.unit


def organisation(resource_id: str) -> dict[str, object]:
    return {
        "schemas": ["urn:scim:schemas:extension:sis:school:1.0:Organisation"],
        "externalId": resource_id,
        "displayName": "Demo kommun",
    }


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, Path | str]:
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1")
    client = ca.issue_cert("kommun-a.skolsynk.example")
    other_server = trustme.CA().issue_cert("127.0.0.1")
    files = {
        "ca": tmp_path / "ca.pem",
        "server": tmp_path / "server.pem",
        "client_cert": tmp_path / "client.pem",
        "client_key": tmp_path / "client.key",
    }
    ca.cert_pem.write_to_path(str(files["ca"]))
    server.private_key_and_cert_chain_pem.write_to_path(str(files["server"]))
    client.cert_chain_pems[0].write_to_path(str(files["client_cert"]))
    client.private_key_pem.write_to_path(str(files["client_key"]))
    return {
        **files,
        "client_pin": spki_sha256_pin(client.cert_chain_pems[0].bytes()),
        "server_pin": spki_sha256_pin(server.cert_chain_pems[0].bytes()),
        "other_server_pin": spki_sha256_pin(other_server.cert_chain_pems[0].bytes()),
    }


def mtls_delivery(base_url: str, pki: dict[str, Path | str], *, pin: str | None) -> ScimDelivery:
    return ScimDelivery(
        base_url=base_url,
        auth=ScimAuth(
            client_cert_file=Path(pki["client_cert"]),
            client_key_file=Path(pki["client_key"]),
            ca_file=Path(pki["ca"]),
            server_pin_sha256=pin,
        ),
    )


@contextlib.asynccontextmanager
async def serving(vendor: FakeEgilVendor, **start: Any) -> AsyncIterator[FakeEgilVendor]:
    """The fake vendor, started inside the ``try`` so that a failed start still releases it."""
    try:
        await vendor.start(**start)
        yield vendor
    finally:
        await vendor.stop()


@contextlib.asynccontextmanager
async def started(client: EgilScimClient) -> AsyncIterator[EgilScimClient]:
    try:
        await client.start()
        yield client
    finally:
        await client.close()


async def test_mutual_tls_with_the_right_pin_reaches_the_tenant(pki):
    tls = server_ssl_context(str(pki["server"]), client_ca=str(pki["ca"]))
    async with serving(FakeEgilVendor(client_pins={str(pki["client_pin"]): "kommun-a"}), ssl_context=tls) as vendor:
        delivery = mtls_delivery(vendor.base_url, pki, pin=str(pki["server_pin"]))
        async with started(EgilScimClient(delivery, api_key=None)) as client:
            resource_id = str(uuid4())
            assert (
                await client.upsert(
                    EgilResourceType.ORGANISATIONS, resource_id, organisation(resource_id), exists=False
                )
                == "created"
            )
            assert resource_id in vendor.resources("kommun-a", "Organisations")


async def test_a_server_without_the_pinned_key_is_refused(pki):
    tls = server_ssl_context(str(pki["server"]), client_ca=str(pki["ca"]))
    async with serving(FakeEgilVendor(client_pins={str(pki["client_pin"]): "kommun-a"}), ssl_context=tls) as vendor:
        delivery = mtls_delivery(vendor.base_url, pki, pin=str(pki["other_server_pin"]))
        async with started(EgilScimClient(delivery, api_key=None)) as client:
            resource_id = str(uuid4())
            with pytest.raises(PinMismatch):
                await client.upsert(
                    EgilResourceType.ORGANISATIONS, resource_id, organisation(resource_id), exists=False
                )


async def test_api_key_409_and_404_recovery_and_failure_classes():
    org = EgilResourceType.ORGANISATIONS
    rid = str(uuid4())
    async with serving(FakeEgilVendor(api_keys={"k" * 20: "kommun-a"})) as vendor:
        delivery = ScimDelivery(base_url=vendor.base_url, auth=ScimAuth(api_key_env="SKOLSYNK_UNUSED"))
        async with started(EgilScimClient(delivery, api_key="k" * 20, retry_timeout_seconds=2.0)) as client:
            assert await client.upsert(org, rid, organisation(rid), exists=False) == "created"
            assert await client.upsert(org, rid, organisation(rid), exists=False) == "replaced"  # 409 -> PUT
            vendor.forget("kommun-a", "Organisations", rid)
            assert await client.upsert(org, rid, organisation(rid), exists=True) == "created"  # 404 -> POST
            assert await client.delete(org, rid) == "deleted"
            assert await client.delete(org, rid) == "absent"  # 404 on DELETE: already gone
            vendor.faults.reject(rid, 422, "displayName is not allowed here")
            with pytest.raises(VendorRejected, match="422"):
                await client.upsert(org, rid, organisation(rid), exists=False)
            vendor.faults.clear()
            vendor.faults.fail_next(1000, 503)
            with pytest.raises(VendorUnavailable):
                await client.upsert(org, rid, organisation(rid), exists=False)
            vendor.faults.clear()
            vendor.faults.fail_next(2, 503)  # a short storm is ridden out inside one delivery
            assert await client.upsert(org, rid, organisation(rid), exists=False) == "created"
    async with serving(FakeEgilVendor(api_keys={"k" * 20: "kommun-a"})) as vendor:
        delivery = ScimDelivery(base_url=vendor.base_url, auth=ScimAuth(api_key_env="SKOLSYNK_UNUSED"))
        async with started(EgilScimClient(delivery, api_key="wrong-" + "k" * 14)) as bad_key:
            with pytest.raises(VendorRejected, match="403"):
                await bad_key.upsert(org, rid, organisation(rid), exists=False)


async def test_each_organiser_presents_its_own_client_certificate_and_a_rotation_takes_over(pki, tmp_path):
    """Issue 18: a pair's own certificate (held in memory, from the sealed store) gets its own TLS session;
    the others use the catalogue entry's; a rotated certificate replaces the session, the old one is closed
    once its requests can have ended."""
    ca = trustme.CA()
    ca_file = tmp_path / "own-ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    server_file = tmp_path / "own-server.pem"
    ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(server_file))
    own = {name: ca.issue_cert(f"{name}.skolsynk.example") for name in ("a", "a2")}
    shared = ca.issue_cert("shared.skolsynk.example")
    shared_cert, shared_key = tmp_path / "shared.pem", tmp_path / "shared.key"
    shared.cert_chain_pems[0].write_to_path(str(shared_cert))
    shared.private_key_pem.write_to_path(str(shared_key))

    def pin(name: str) -> str:
        return spki_sha256_pin(own[name].cert_chain_pems[0].bytes())

    def credentials(name: str) -> PairCredentials:
        cert = own[name]
        return PairCredentials(
            certificate_pem=cert.cert_chain_pems[0].bytes().decode(), key_pem=cert.private_key_pem.bytes().decode()
        )

    pins = {pin("a"): "tenant-a", spki_sha256_pin(shared.cert_chain_pems[0].bytes()): "shared"}
    tls = server_ssl_context(str(server_file), client_ca=str(ca_file))
    async with serving(FakeEgilVendor(client_pins=pins), ssl_context=tls) as vendor:
        delivery = ScimDelivery(
            base_url=vendor.base_url,
            auth=ScimAuth(client_cert_file=shared_cert, client_key_file=shared_key, ca_file=ca_file),
        )
        async with started(EgilScimClient(delivery, api_key=None)) as client:
            await client.use_credentials({"kommun-a": credentials("a")})
            assert client.own_tenants == {"kommun-a"}
            ids = [str(uuid4()) for _ in range(3)]
            await client.upsert(
                EgilResourceType.ORGANISATIONS, ids[0], organisation(ids[0]), exists=False, tenant_id="kommun-a"
            )
            await client.upsert(
                EgilResourceType.ORGANISATIONS, ids[1], organisation(ids[1]), exists=False, tenant_id="kommun-b"
            )
            assert set(vendor.resources("tenant-a", "Organisations")) == {ids[0]}
            assert set(vendor.resources("shared", "Organisations")) == {ids[1]}

            vendor.client_pins[pin("a2")] = "tenant-a"
            del vendor.client_pins[pin("a")]
            old = client._tenant_sessions["kommun-a"][1]
            await client.use_credentials({"kommun-a": credentials("a2")})
            assert client._tenant_sessions["kommun-a"][1] is not old
            assert not old.closed  # its requests may still be running
            await client.upsert(
                EgilResourceType.ORGANISATIONS, ids[2], organisation(ids[2]), exists=False, tenant_id="kommun-a"
            )
            assert set(vendor.resources("tenant-a", "Organisations")) == {ids[0], ids[2]}

            await client.use_credentials({})  # removed: back to the catalogue entry's certificate
            assert client.own_tenants == set()
        assert old.closed  # closed with the client at the latest
