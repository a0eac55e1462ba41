"""One projection per tenant at a time: a request that finds the tenant busy is handed to the
lock holder, resends included, and never lost."""

from __future__ import annotations

import pytest

from skolsynk.settings import ServiceSettings
from skolsynk_services.normaliser.state import ProjectionLock

pytestmark = pytest.mark.connected


async def test_busy_requests_and_their_resends_pass_to_the_holder(mongo, settings: ServiceSettings):
    db = mongo[settings.store.mongodb_database]
    first, second = ProjectionLock(db, owner="replica-1"), ProjectionLock(db, owner="replica-2")

    assert await first.acquire("kommun-a")
    assert not await second.acquire("kommun-a", resend=frozenset({"binogi"}))
    assert not await second.acquire("kommun-a", resend=frozenset({"ilt"}))
    assert await first.release("kommun-a") == (True, frozenset({"binogi", "ilt"}), False)
    assert await first.release("kommun-a") == (False, frozenset(), False)
    # Released: the next request gets the lock at once.
    assert await second.acquire("kommun-a")
    assert await second.release("kommun-a") == (False, frozenset(), False)


async def test_an_expired_lease_is_taken_over(mongo, settings: ServiceSettings):
    db = mongo[settings.store.mongodb_database]
    crashed = ProjectionLock(db, owner="crashed", lease_seconds=0.0)
    survivor = ProjectionLock(db, owner="survivor")
    assert await crashed.acquire("kommun-b")
    assert await survivor.acquire("kommun-b")
    assert await survivor.release("kommun-b") == (False, frozenset(), False)


async def test_a_request_for_the_whole_organiser_is_not_lost_in_a_busy_lock(mongo, settings: ServiceSettings):
    """A subscription change that arrives during an incremental projection must make the holder
    project the whole organiser next, not just what changed."""
    db = mongo[settings.store.mongodb_database]
    holder, other = ProjectionLock(db, owner="replica-1"), ProjectionLock(db, owner="replica-2")
    assert await holder.acquire("kommun-c")
    assert not await other.acquire("kommun-c")
    assert not await other.acquire("kommun-c", whole=True)
    assert not await other.acquire("kommun-c")
    assert await holder.release("kommun-c") == (True, frozenset(), True)
    assert await holder.release("kommun-c") == (False, frozenset(), False)


async def test_a_request_that_finds_the_holder_letting_go_takes_the_lock(mongo, settings: ServiceSettings):
    """The holder releases between a request's failed insert and its mark: the mark matches nothing, and
    before the fix the request was answered "coalesced" with nobody left to project it (a source run's
    finalisation was lost that way in a test run). The request now takes the lock itself."""
    db = mongo[settings.store.mongodb_database]
    holder, late = ProjectionLock(db, owner="replica-1"), ProjectionLock(db, owner="replica-2")
    assert await holder.acquire("kommun-d")
    update_one = late.collection.update_one
    released: list[tuple[bool, frozenset[str], bool]] = []

    async def holder_lets_go_first(*args: object, **kwargs: object) -> object:
        if not released:
            released.append(await holder.release("kommun-d"))  # the holder's projection ends just now
        return await update_one(*args, **kwargs)

    late.collection.update_one = holder_lets_go_first  # type: ignore[method-assign]
    assert await late.acquire("kommun-d", resend=frozenset({"ne"}))
    assert released == [(False, frozenset(), False)]
    assert (await db["projection_locks"].find_one({"_id": "kommun-d"}) or {}).get("owner") == "replica-2"
    assert await late.release("kommun-d") == (False, frozenset(), False)
