"""The pure parts of the publisher: how an envelope becomes an AMQP message, and which errors are
worth retrying."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from uuid import UUID

import aio_pika
import pytest
from aio_pika.exceptions import (
    AMQPConnectionError,
    ChannelClosed,
    ChannelInvalidStateError,
    ChannelNotFoundEntity,
    ConnectionClosed,
    DeliveryError,
    PublishError,
)
from aiormq.abc import DeliveredMessage
from pamqp import commands as spec
from pamqp.header import ContentHeader

from skolsynk.contracts import Envelope, SyncRequested
from skolsynk.messaging.publisher import (
    HEADER_SCHEMA_VERSION,
    HEADER_TENANT,
    build_amqp_message,
    is_retryable_publish_error,
)

pytestmark = pytest.mark.unit

MESSAGE_ID = UUID("7278a908-3fc9-4485-a698-04704d2773bd")
FLOW_ID = UUID("22222222-2222-4222-8222-222222222222")


def _envelope(**overrides: object) -> Envelope:
    contract = SyncRequested(source_id="google-main", requested_by="operator")
    fields = {"tenant_id": "kommun-a", "correlation_id": FLOW_ID, "producer": "admin", "message_id": MESSAGE_ID}
    fields.update(overrides)
    return contract.to_envelope(**fields)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------
# build_amqp_message
# ---------------------------------------------------------------------------


def test_message_properties_mirror_the_envelope() -> None:
    env = _envelope()
    message = build_amqp_message(env)
    assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    assert message.message_id == str(MESSAGE_ID)
    assert message.correlation_id == str(FLOW_ID)
    assert message.type == "sync.requested"
    assert message.content_type == "application/json"
    assert message.content_encoding == "utf-8"
    assert message.app_id == "admin"
    assert message.headers == {HEADER_TENANT: "kommun-a", HEADER_SCHEMA_VERSION: 1}
    assert HEADER_TENANT == "x-tenant-id"
    assert HEADER_SCHEMA_VERSION == "x-schema-version"


def test_body_is_the_envelope_json() -> None:
    env = _envelope()
    message = build_amqp_message(env)
    assert message.body == env.model_dump_json().encode()
    assert Envelope.model_validate_json(message.body) == env
    assert json.loads(message.body)["payload"]["source_id"] == "google-main"


def test_timestamp_is_when_the_envelope_was_produced() -> None:
    produced = datetime(2025, 8, 18, 7, 30, 15, tzinfo=UTC)
    env = Envelope(message_type="sync.requested", schema_version=1, payload={}, produced_at=produced)
    timestamp = build_amqp_message(env).timestamp
    assert timestamp is not None
    assert abs((timestamp - produced).total_seconds()) < 1


def test_no_tenant_no_correlation() -> None:
    env = _envelope(tenant_id=None, correlation_id=None, producer=None)
    message = build_amqp_message(env)
    assert message.headers == {HEADER_SCHEMA_VERSION: 1}
    assert message.correlation_id is None
    assert message.app_id is None
    assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT


def test_extra_headers_are_added() -> None:
    message = build_amqp_message(_envelope(), {"x-skolsynk-attempt": 2, "x-custom": "v"})
    assert message.headers == {
        HEADER_TENANT: "kommun-a",
        HEADER_SCHEMA_VERSION: 1,
        "x-skolsynk-attempt": 2,
        "x-custom": "v",
    }


def test_schema_version_header_follows_the_envelope() -> None:
    env = Envelope(message_type="user.upserted", schema_version=3, payload={})
    message = build_amqp_message(env)
    assert message.headers[HEADER_SCHEMA_VERSION] == 3
    assert message.type == "user.upserted"


def test_building_does_not_mutate_the_headers_argument() -> None:
    extra = {"x-custom": "v"}
    build_amqp_message(_envelope(), extra)
    assert extra == {"x-custom": "v"}


# ---------------------------------------------------------------------------
# is_retryable_publish_error
# ---------------------------------------------------------------------------


def _returned() -> PublishError:
    frame = spec.Basic.Return(reply_code=312, reply_text="NO_ROUTE", exchange="ns.control", routing_key="nothing")
    delivered = DeliveredMessage(delivery=frame, header=ContentHeader(), body=b"{}", channel=None)  # type: ignore[arg-type]
    return PublishError(delivered, frame)


def _nacked() -> DeliveryError:
    return DeliveryError(None, spec.Basic.Nack(delivery_tag=1))


@pytest.mark.parametrize(
    "error",
    [
        pytest.param(ConnectionClosed(320, "CONNECTION_FORCED"), id="ConnectionClosed"),
        pytest.param(AMQPConnectionError("gone"), id="AMQPConnectionError"),
        pytest.param(ChannelClosed(406, "closed"), id="ChannelClosed"),
        pytest.param(ChannelInvalidStateError("No active transport in channel"), id="ChannelInvalidStateError"),
        pytest.param(TimeoutError(), id="TimeoutError"),
        pytest.param(ConnectionRefusedError(111, "refused"), id="ConnectionRefusedError"),
        pytest.param(ConnectionResetError(104, "reset"), id="ConnectionResetError"),
        pytest.param(_nacked(), id="DeliveryError-nack"),
        pytest.param(RuntimeError("Writer is None"), id="RuntimeError-writer"),
    ],
)
def test_connection_trouble_and_nacks_are_retried(error: Exception) -> None:
    assert is_retryable_publish_error(error) is True


@pytest.mark.parametrize(
    "error",
    [
        pytest.param(_returned(), id="PublishError-returned"),
        pytest.param(ChannelNotFoundEntity(404, "NOT_FOUND - no exchange 'x'"), id="ChannelNotFoundEntity"),
        pytest.param(ValueError("bad"), id="ValueError"),
        pytest.param(TypeError("bad"), id="TypeError"),
        pytest.param(KeyError("x"), id="KeyError"),
    ],
)
def test_returned_missing_exchange_and_programming_errors_are_not_retried(error: Exception) -> None:
    assert is_retryable_publish_error(error) is False


def test_the_explicit_exclusions_really_are_subclasses_of_retryable_errors() -> None:
    # Guards the reason is_retryable_publish_error checks them first: order matters.
    assert isinstance(_returned(), DeliveryError)
    assert isinstance(ChannelNotFoundEntity(404, "x"), ChannelClosed)
