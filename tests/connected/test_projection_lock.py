"""One projection per tenant at a time: a request that finds the tenant busy is handed to the
lock holder, resends included, and never lost."""

from __future__ import annotations

import pytest

from normaliser.state import ProjectionLock
from skolsynk.settings import ServiceSettings

pytestmark = pytest.mark.connected


async def test_busy_requests_and_their_resends_pass_to_the_holder(mongo, settings: ServiceSettings):
    db = mongo[settings.store.mongodb_database]
    first, second = ProjectionLock(db, owner="replica-1"), ProjectionLock(db, owner="replica-2")

    assert await first.acquire("kommun-a")
    assert not await second.acquire("kommun-a", resend=frozenset({"binogi"}))
    assert not await second.acquire("kommun-a", resend=frozenset({"ilt"}))
    assert await first.release("kommun-a") == (True, frozenset({"binogi", "ilt"}))
    assert await first.release("kommun-a") == (False, frozenset())
    # Released: the next request gets the lock at once.
    assert await second.acquire("kommun-a")
    assert await second.release("kommun-a") == (False, frozenset())


async def test_an_expired_lease_is_taken_over(mongo, settings: ServiceSettings):
    db = mongo[settings.store.mongodb_database]
    crashed = ProjectionLock(db, owner="crashed", lease_seconds=0.0)
    survivor = ProjectionLock(db, owner="survivor")
    assert await crashed.acquire("kommun-b")
    assert await survivor.acquire("kommun-b")
    assert await survivor.release("kommun-b") == (False, frozenset())
