"""How the UI writes times and numbers: Swedish local time, a non-breaking space between thousands, a
decimal comma, a dash for no value."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

#: What a table cell shows for "no value".
DASH = "\u2013"

try:
    LOCAL_TIME: ZoneInfo | None = ZoneInfo("Europe/Stockholm")
except ZoneInfoNotFoundError:  # pragma: no cover - a system without a time-zone database
    LOCAL_TIME = None


def when(value: Any) -> str:
    """A time as Swedes read it, in Swedish local time."""
    if value is None or value == "":
        return DASH
    if isinstance(value, str):
        text = value
        try:
            value = datetime.fromisoformat(text)
        except ValueError:
            return text
    if not isinstance(value, datetime):
        return str(value)
    moment: datetime = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    if LOCAL_TIME is not None:
        return moment.astimezone(LOCAL_TIME).strftime("%Y-%m-%d %H:%M")
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def number(value: Any) -> str:
    if value is None:
        return DASH
    if isinstance(value, float) and not value.is_integer():
        return decimal(value)
    return f"{int(value):,}".replace(",", "\u00a0")


def decimal(value: float, digits: int = 1) -> str:
    text = f"{value:.{digits}f}".replace(".", ",")
    return text[: -(digits + 1)] if text.endswith("," + "0" * digits) else text
