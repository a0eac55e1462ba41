"""The backlog of an (organiser, vendor) pair from its two counters (libs/skolsynk/storage/delivery_backlog)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from skolsynk.storage.delivery_backlog import backlog_of

T0 = datetime(2026, 12, 6, 8, tzinfo=UTC)


def marks(*sizes: int) -> list[dict[str, object]]:
    """One mark per batch, a minute apart, oldest first."""
    return [{"at": T0 + timedelta(minutes=i), "n": n} for i, n in enumerate(sizes)]


def test_nothing_queued_is_nothing_pending() -> None:
    backlog = backlog_of("t", "v", None, None)
    assert (backlog.pending, backlog.oldest_queued_at, backlog.oldest_at_least) == (0, None, False)
    assert backlog.oldest_pending_seconds(now=T0) == 0.0


def test_the_oldest_pending_change_is_dated_by_its_batch() -> None:
    queued = {"n": 30, "marks": marks(10, 10, 10)}
    # Changes 1-10 queued at T0, 11-20 at T0+1 min, 21-30 at T0+2 min.
    assert backlog_of("t", "v", queued, {"n": 0}).oldest_queued_at == T0
    assert backlog_of("t", "v", queued, {"n": 9}).oldest_queued_at == T0
    assert backlog_of("t", "v", queued, {"n": 10}).oldest_queued_at == T0 + timedelta(minutes=1)
    last = backlog_of("t", "v", queued, {"n": 29})
    assert (last.pending, last.oldest_queued_at, last.oldest_at_least) == (1, T0 + timedelta(minutes=2), False)
    assert last.oldest_pending_seconds(now=T0 + timedelta(minutes=5)) == 180.0


def test_a_backlog_longer_than_the_marks_kept_is_at_least_as_old_as_the_oldest() -> None:
    # 50 queued, the marks of the last 20 kept: change 6 was queued before the oldest mark.
    backlog = backlog_of("t", "v", {"n": 50, "marks": marks(10, 10)}, {"n": 5})
    assert (backlog.pending, backlog.oldest_queued_at, backlog.oldest_at_least) == (45, T0, True)


def test_everything_settled_or_more_is_nothing_pending() -> None:
    queued = {"n": 10, "marks": marks(10)}
    for settled in (10, 12):  # more: a change counted twice before the counts were levelled
        backlog = backlog_of("t", "v", queued, {"n": settled, "at": T0})
        assert (backlog.pending, backlog.oldest_pending_seconds(now=T0)) == (0, 0.0)
        assert backlog.last_settled_at == T0


def test_naive_times_from_the_store_are_utc() -> None:
    naive = T0.replace(tzinfo=None)
    backlog = backlog_of("t", "v", {"n": 1, "marks": [{"at": naive, "n": 1}]}, None)
    assert backlog.oldest_queued_at == T0
