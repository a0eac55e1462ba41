"""Which failures are outages (retried for as long as it takes, never dead-lettered) and which count
attempts towards the DLQ."""

from __future__ import annotations

import pytest
from pymongo.errors import (
    AutoReconnect,
    DuplicateKeyError,
    NetworkTimeout,
    OperationFailure,
    ServerSelectionTimeoutError,
)

from skolsynk.messaging.consumer import PermanentError, TransientError, is_outage

pytestmark = pytest.mark.unit


def labelled(label: str) -> OperationFailure:
    error = OperationFailure("write conflict", code=112)
    error._add_error_label(label)
    return error


@pytest.mark.parametrize(
    "error",
    [
        TransientError("vendor down"),
        ServerSelectionTimeoutError("no primary"),
        AutoReconnect("connection reset"),
        NetworkTimeout("timed out"),
        labelled("TransientTransactionError"),
        labelled("RetryableWriteError"),
    ],
)
def test_outages(error: Exception):
    assert is_outage(error)


@pytest.mark.parametrize(
    "error",
    [ValueError("bug"), PermanentError("bad input"), DuplicateKeyError("dup"), OperationFailure("bad query", code=2)],
)
def test_not_outages(error: Exception):
    assert not is_outage(error)
