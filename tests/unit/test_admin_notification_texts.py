"""The wording of the organiser's notification mails: counts take the noun's number in both languages."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from skolsynk_services.admin.notify import DELETIONS_OVERDUE, HOLDS_WAITING, notification_message

pytestmark = pytest.mark.unit

SINCE = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)


@pytest.mark.parametrize(("kind", "field"), [(DELETIONS_OVERDUE, "overdue"), (HOLDS_WAITING, "removals")])
def test_one_deletion_is_one_deletion_in_swedish_and_in_english(kind: str, field: str) -> None:
    _, one = notification_message(kind, "Kommun A", "Leverantör", SINCE, {field: 1}, False)
    assert "1 radering " in one
    assert "1 deletion of Kommun A" in one
    assert "1 deletions" not in one
    _, two = notification_message(kind, "Kommun A", "Leverantör", SINCE, {field: 2}, False)
    assert "2 raderingar" in two
    assert "2 deletions of Kommun A" in two
