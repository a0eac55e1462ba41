"""The admin's rate limits (issue 19): failed authentications per address, requests per token."""

from __future__ import annotations

import pytest

from skolsynk_services.admin.limits import FailureGuard, RequestRate

pytestmark = pytest.mark.unit


def test_an_address_is_refused_after_the_limit_until_its_oldest_failure_leaves_the_window() -> None:
    now = [100.0]
    guard = FailureGuard(3, window_seconds=60, clock=lambda: now[0])
    for _ in range(2):
        guard.failed("198.51.100.7")
    assert guard.retry_after("198.51.100.7") is None
    now[0] += 10
    guard.failed("198.51.100.7")
    assert guard.retry_after("198.51.100.7") == 50  # the first failure leaves the window at 160
    assert guard.retry_after("203.0.113.9") is None  # another address is not affected
    now[0] += 50
    assert guard.retry_after("198.51.100.7") is None


async def test_a_key_over_its_rate_is_refused_at_once() -> None:
    rate = RequestRate(3)
    admitted = [await rate.admit("token-a") for _ in range(6)]
    assert admitted[:3] == [True, True, True]
    assert False in admitted[3:]
    assert await rate.admit("token-b")
