"""How a source's runs fare, from its latest runs (libs/skolsynk/storage/runs.source_health_of)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from skolsynk.storage.runs import source_health_of

NOW = datetime(2026, 12, 6, 12, tzinfo=UTC)


def run(minutes_ago: int, *, complete: bool | None, status: str = "finalised", errors: tuple[str, ...] = ()) -> Any:
    started = NOW - timedelta(minutes=minutes_ago)
    return {
        "status": status,
        "source_kind": "google",
        "started_at": started,
        "finalised_at": started + timedelta(minutes=1) if status == "finalised" else None,
        "completion": {"errors": list(errors)},
        "outcome": {"complete": complete, "reasons": [] if complete else ["the source reported read errors"]},
    }


def test_no_finished_run_is_unknown() -> None:
    health = source_health_of([run(1, complete=None, status="running")], now=NOW)
    assert (health.state, health.running_since) == ("unknown", NOW - timedelta(minutes=1))


def test_a_complete_last_run_is_ok() -> None:
    health = source_health_of([run(5, complete=True), run(60, complete=False)], now=NOW)
    assert (health.state, health.failing_since, health.failed_runs) == ("ok", None, 0)
    assert health.last_complete_at == NOW - timedelta(minutes=4)


def test_incomplete_runs_are_retrying_then_failing_from_the_first_of_the_streak() -> None:
    runs = [
        run(1, complete=None, status="receiving"),  # in progress: passed over
        run(10, complete=False, errors=("token:unauthorized_client",)),
        run(20, complete=False, errors=("users:quota_exceeded",)),
        run(90, complete=True),
    ]
    early = source_health_of(runs, now=NOW, failing_after=timedelta(hours=1))
    assert (early.state, early.failing_since, early.failed_runs) == ("retrying", NOW - timedelta(minutes=20), 2)
    assert early.errors == ["token:unauthorized_client"]  # the latest failed run's codes
    assert early.reasons == ["the source reported read errors"]
    assert early.last_complete_at == NOW - timedelta(minutes=89)
    assert early.running_since == NOW - timedelta(minutes=1)
    late = source_health_of(runs, now=NOW, failing_after=timedelta(minutes=15))
    assert late.state == "failing"


def test_a_source_that_never_completed_is_failing_with_no_complete_run() -> None:
    health = source_health_of([run(30, complete=False)], now=NOW, failing_after=timedelta(minutes=15))
    assert (health.state, health.last_complete_at) == ("failing", None)
