"""One projection per tenant at a time: a request that finds the tenant busy is handed to the
lock holder, resends included, and never lost."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from skolsynk.settings import ServiceSettings
from skolsynk_services.normaliser.state import ProjectionLock, now
from tests.helpers import wait_for

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


async def test_an_expired_lease_taken_over_keeps_the_requests_left_with_the_crashed_holder(
    mongo, settings: ServiceSettings
):
    """A holder that died before it let go took the requests left with it along; the replica that takes
    the lock over projects them (its release says so), instead of starting clean."""
    db = mongo[settings.store.mongodb_database]
    crashed = ProjectionLock(db, owner="crashed", lease_seconds=0.0)
    other, survivor = ProjectionLock(db, owner="other"), ProjectionLock(db, owner="survivor")
    assert await crashed.acquire("kommun-e")
    await db["projection_locks"].update_one({"_id": "kommun-e"}, {"$set": {"lease_until": now() + timedelta(hours=1)}})
    assert not await other.acquire("kommun-e", resend=frozenset({"ne"}), whole=True)
    await db["projection_locks"].update_one(
        {"_id": "kommun-e"}, {"$set": {"lease_until": now() - timedelta(seconds=1)}}
    )
    assert await survivor.acquire("kommun-e")
    assert await survivor.release("kommun-e") == (True, frozenset({"ne"}), True)
    assert await survivor.release("kommun-e") == (False, frozenset(), False)


async def test_a_projection_handed_over_unfinished_is_taken_with_its_checkpoint_by_the_next_request(
    mongo, settings: ServiceSettings
):
    """A projection of the whole organiser that ran out of its slice of time keeps the tenant locked with its
    checkpoint; the next request, from any replica, takes the lock at once (no lease to wait out) and gets
    the checkpoint to resume; the holder's own request, not yet projected, is left as a busy request."""
    db = mongo[settings.store.mongodb_database]
    holder, other, third = (ProjectionLock(db, owner=o) for o in ("replica-1", "replica-2", "replica-3"))
    checkpoint = {"reason": "subscription", "resend": ["ilt"], "causes": [], "projection": {"chunks": 3}}

    assert await holder.acquire("kommun-f")
    assert await holder.hand_over("kommun-f", checkpoint, resend=frozenset({"ne"}), whole=True, unserved=True)
    # Handed over, the tenant is still locked: nobody starts a projection of their own beside it...
    assert await db["projection_locks"].count_documents({"_id": "kommun-f"}) == 1
    # ...but the next request takes it, with the checkpoint.
    taken = await other.acquire("kommun-f")
    assert taken is not None
    assert taken.checkpoint == checkpoint
    # While it resumes, the tenant is busy again; a continuation (nothing of its own) leaves no mark.
    assert await third.acquire("kommun-f", mark=False) is None
    assert await other.release("kommun-f") == (True, frozenset({"ne"}), True)  # the holder's own request
    assert await other.release("kommun-f") == (False, frozenset(), False)
    assert await db["projection_locks"].count_documents({}) == 0


async def test_a_resumed_projection_that_fails_leaves_its_request_for_the_whole_organiser(
    mongo, settings: ServiceSettings
):
    """A slice that fails does not leave a checkpoint it may have come from: the lock, free for anyone at
    once, keeps the unfinished projection's request (with its resends) for a projection from the start."""
    db = mongo[settings.store.mongodb_database]
    holder, resumer, next_request = (ProjectionLock(db, owner=o) for o in ("replica-1", "replica-2", "replica-3"))
    checkpoint = {"reason": "resend", "resend": ["ilt"], "causes": [], "projection": {"chunks": 3}}
    assert await holder.acquire("kommun-g")
    assert await holder.hand_over("kommun-g", checkpoint)
    taken = await resumer.acquire("kommun-g")
    assert taken is not None
    assert taken.checkpoint == checkpoint
    await resumer.give_up("kommun-g", checkpoint=taken.checkpoint)

    retried = await next_request.acquire("kommun-g", mark=False)
    assert retried is not None
    assert retried.checkpoint is None
    assert await next_request.release("kommun-g") == (True, frozenset({"ilt"}), True)
    assert await next_request.release("kommun-g") == (False, frozenset(), False)


async def test_a_failed_projection_without_a_checkpoint_lets_go(mongo, settings: ServiceSettings):
    db = mongo[settings.store.mongodb_database]
    holder = ProjectionLock(db, owner="replica-1")
    assert await holder.acquire("kommun-h")
    await holder.give_up("kommun-h", checkpoint=None)
    assert await db["projection_locks"].count_documents({}) == 0


async def test_a_live_holder_renews_its_lease_and_a_dead_one_is_overtaken_after_one_lease(
    mongo, settings: ServiceSettings
):
    """The lease is short (a killed replica blocks its tenant for one lease, not for a handler's whole
    budget) because the holder renews it while it projects."""
    db = mongo[settings.store.mongodb_database]
    holder = ProjectionLock(db, owner="replica-1", lease_seconds=0.4)
    other = ProjectionLock(db, owner="replica-2", lease_seconds=0.4)
    locks = db["projection_locks"]

    async def lease_until() -> datetime:
        lock = await locks.find_one({"_id": "kommun-l"})
        assert lock is not None
        return lock["lease_until"]

    assert await holder.acquire("kommun-l")
    first = await lease_until()
    async with holder.kept("kommun-l"):

        async def renewed_past_three_leases() -> bool:
            return await lease_until() > first + timedelta(seconds=1.2)

        await wait_for(renewed_past_three_leases, what="the lease renewed past three leases")
        # Asked meanwhile: left with the live holder, not taken over.
        assert not await other.acquire("kommun-l", whole=True)
    # The holder died (no release, no more renewals): the next request takes over within a lease and
    # keeps what was left with the dead holder.
    await wait_for(lambda: other.acquire("kommun-l"), what="the dead holder's lock taken over")
    assert not await holder.renew("kommun-l")
    assert await other.renew("kommun-l")
    assert await other.release("kommun-l") == (True, frozenset(), True)
    assert await other.release("kommun-l") == (False, frozenset(), False)
