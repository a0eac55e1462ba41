"""The SS 12000 puller's subscriptions and ``/log/`` entries, as logic: both spellings of ``resourceTypes``,
when a subscription is renewed, what a failed run tells the source (and what it never does), a webhook URL
without a secret refused, and unmappable objects' ids kept only when they are UUIDs."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from skolsynk.connectors.sources.ss12000 import SourceConfig, parse_sources
from skolsynk_services.ss12000_puller.mapping import map_page
from skolsynk_services.ss12000_puller.runs import RunReport
from skolsynk_services.ss12000_puller.source_log import MAX_ENTRIES_PER_RUN, log_entries
from skolsynk_services.ss12000_puller.subscriptions import (
    RESOURCE_TYPES,
    Subscription,
    not_offered_recently,
    parse_expiry,
    resource_types,
)

pytestmark = pytest.mark.unit

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


def source(**overrides: Any) -> SourceConfig:
    raw = {
        "tenant_id": "kommun-a",
        "source_id": "ss12000-1",
        "base_url": "https://api.example.se/v2.0/",
        "auth": {"kind": "none"},
        "webhook_secret_env": "HOOK_SECRET",
        **overrides,
    }
    return parse_sources([raw])[0]


def test_resource_types_in_both_spellings() -> None:
    assert resource_types([{"resource": "Person"}, {"resource": "Group"}]) == ["Person", "Group"]
    # The spec's example: plain strings, and "Organsation" misspelt.
    assert resource_types(["Organsation", "Person", "Duty"]) == ["Organisation", "Person", "Duty"]
    assert resource_types([{"resource": 3}, None, {"kind": "Person"}, "Activity"]) == ["Activity"]
    assert resource_types(None) == []
    # What the puller subscribes to is what it reads.
    assert RESOURCE_TYPES == ("Organisation", "Person", "Duty", "Group", "Syllabus", "Activity")


def test_expiry_is_read_tolerantly() -> None:
    assert parse_expiry("2026-06-01T00:00:00Z") == datetime(2026, 6, 1, tzinfo=UTC)
    assert parse_expiry("2026-06-01T02:00:00+02:00") == datetime(2026, 6, 1, tzinfo=UTC)
    assert parse_expiry("2026-06-01T00:00:00") == datetime(2026, 6, 1, tzinfo=UTC)  # no zone: UTC
    assert parse_expiry("next tuesday") is None
    assert parse_expiry(None) is None


def test_renewal_well_before_expiry_or_halfway_through_a_short_lifetime() -> None:
    week = timedelta(days=7)
    ninety_days = Subscription("id", "https://hook", T0 + timedelta(days=90), renewed_at=T0)
    assert ninety_days.renew_at(week) == T0 + timedelta(days=83)
    one_day = Subscription("id", "https://hook", T0 + timedelta(days=1), renewed_at=T0)
    assert one_day.renew_at(week) == T0 + timedelta(hours=12)
    already_past = Subscription("id", "https://hook", T0 - timedelta(hours=1), renewed_at=T0)
    assert already_past.renew_at(week) <= T0


def test_a_subscription_answer_without_an_id_is_refused() -> None:
    answer = {"id": "2f7b0d5e-6c0a-4d1b-9a53-1d9c0b6e8f00", "expires": "2026-06-01T00:00:00Z"}
    made = Subscription.from_answer(answer, target="https://hook", now=T0, asked=RESOURCE_TYPES)
    assert (made.id, made.expires_at, made.renewed_at) == (answer["id"], datetime(2026, 6, 1, tzinfo=UTC), T0)
    assert Subscription.from_answer({"id": "x"}, target="t", now=T0, asked=RESOURCE_TYPES).expires_at == T0 + timedelta(
        days=1
    )
    for bad in ({}, {"id": ""}, {"id": 5}, ["id"], None):
        with pytest.raises(Exception, match="invalid_subscription"):
            Subscription.from_answer(bad, target="t", now=T0, asked=RESOURCE_TYPES)


def test_not_offered_is_remembered_for_the_base_url_asked() -> None:
    src = source()
    recheck = timedelta(days=1)
    marker = {"subscriptions_not_offered": {"at": T0, "base_url": src.base_url}}
    assert not_offered_recently(marker, "subscriptions", src, T0 + timedelta(hours=1), recheck) == T0 + recheck
    assert not_offered_recently(marker, "subscriptions", src, T0 + recheck, recheck) is None  # ask again
    assert not_offered_recently(marker, "log", src, T0, recheck) is None
    moved = source(base_url="https://new.example.se/v2.1")
    assert not_offered_recently(marker, "subscriptions", moved, T0, recheck) is None  # another API: ask


def test_a_webhook_url_needs_the_webhook_secret() -> None:
    assert source(webhook_url="https://skolsynk.example.se/ss12000/notify/kommun-a/ss12000-1").webhook_url
    with pytest.raises(ValidationError, match="webhook_url needs the webhook secret"):
        source(webhook_url="https://skolsynk.example.se/hook", webhook_secret_env=None)
    with pytest.raises(ValidationError):
        source(webhook_url="ftp://skolsynk.example.se/hook")


def failed_report(*errors: str) -> RunReport:
    report = RunReport(tenant_id="kommun-a", source_id="ss12000-1", mode="full", started_at=T0)
    for code in errors:
        report.add_error(code)
    return report


def test_a_healthy_run_tells_the_source_nothing() -> None:
    assert log_entries(source(), failed_report(), at=T0) == []


def test_a_failed_run_becomes_log_entries() -> None:
    report = failed_report("persons:http_500", "deletedEntities:timeout", "groups:unmappable", "run_deadline_exceeded")
    object_id = str(uuid.uuid4())
    report.unmappable = [("groups", object_id, "organisation: must be a reference"), ("groups", None, "id: missing")]
    entries = log_entries(source(), report, at=T0)
    by_type = [(e["messageType"], e.get("resourceType"), e.get("resourceId")) for e in entries]
    assert by_type == [
        ("skolsynk.read_failed", "Person", None),
        ("skolsynk.read_failed", None, None),
        ("skolsynk.run_incomplete", None, None),
        ("skolsynk.object_unmappable", "Group", object_id),
        ("skolsynk.object_unmappable", "Group", None),
    ]
    assert {e["severityLevel"] for e in entries} == {"Error"}
    assert {e["timeOfOccurance"] for e in entries} == {"2026-03-02T08:00:00.000000Z"}
    assert entries[0]["resourceUrl"] == "https://api.example.se/v2.0/persons"
    assert "HTTP 500" in entries[0]["message"]
    assert str(report.run_id) in entries[0]["message"]
    assert "organisation: must be a reference" in entries[3]["message"]


def test_log_entries_per_run_are_capped() -> None:
    report = failed_report("persons:unmappable")
    report.unmappable = [("persons", str(uuid.uuid4()), "enrolments: invalid")] * 50
    assert len(log_entries(source(), report, at=T0)) == MAX_ENTRIES_PER_RUN


def test_unmappable_objects_keep_their_id_only_when_it_is_a_uuid() -> None:
    good_id = str(uuid.uuid4())
    page = map_page(
        "duties",
        [
            {"id": good_id, "person": "not a reference"},
            {"id": "19121212-1212", "person": "not a reference"},  # a civic number where an id belongs
            {"person": "not a reference"},
        ],
    )
    assert len(page.unmappable) == 3
    assert page.unmappable_ids == [good_id, None, None]
