"""Structured logging with structlog, and the rule that keeps personal data out of logs.

The rule: a log event carries ids (tenant, vendor, source, message, entity UUIDs), counts, codes and
durations, never a person's name, e-mail address, civic number (personnummer) or a raw payload. Code
follows the rule by logging ids only; :func:`redact_personal_data` is the safety net that runs on every
event: keys that name personal data are masked whatever their value, and string values are scrubbed of
anything shaped like an e-mail address or a Swedish civic number. Use :func:`scrub` on any text that
leaves the process from an exception (error headers, problem details).

Context (``tenant_id``, ``vendor_id``, ``message_id``, ``correlation_id``, ...) is bound with
:func:`bound_context` and travels through ``contextvars`` to every event logged inside the block.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from datetime import date, datetime
from enum import Enum
from typing import Any, Literal, TextIO
from uuid import UUID

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

REDACTED = "[redacted]"

#: Keys whose values are personal data, compared case-insensitively with ``-`` and ``_`` removed.
PERSONAL_DATA_KEYS: frozenset[str] = frozenset(
    k.replace("_", "")
    for k in (
        "email",
        "emails",
        "mail",
        "given_name",
        "givenname",
        "family_name",
        "familyname",
        "first_name",
        "last_name",
        "display_name",
        "displayname",
        "name",
        "full_name",
        "civic_no",
        "civicno",
        "personnummer",
        "ssn",
        "national_id",
        "phone",
        "phone_number",
        "address",
        "user_name",
        "username",
        "eppn",
        "payload",
        "body",
        "password",
        "secret",
        "token",
        "authorization",
        "api_key",
    )
)

_EMAIL = re.compile(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9.\-]+\.[A-Za-z]{2,}")
# Swedish civic numbers: YYYYMMDD-NNNN, YYMMDD-NNNN, YYMMDD+NNNN and the 10/12-digit forms without
# separator, with a plausible month and day; coordination numbers (day + 60) included.
_CIVIC_NO = re.compile(
    r"(?<![\dA-Za-z-])(?:19|20)?\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01]|6[1-9]|[78]\d|9[01])[-+]?\d{4}(?![\dA-Za-z]|-[0-9A-Fa-f])"
)


def scrub(text: str) -> str:
    """Mask e-mail addresses and civic-number-shaped digit runs in free text."""
    text = _EMAIL.sub("[email]", text)
    return _CIVIC_NO.sub("[civic-no]", text)


def _normalise_key(key: str) -> str:
    return key.lower().replace("_", "").replace("-", "")


def _redact_value(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, bytes | bytearray):
        return scrub(bytes(value).decode("utf-8", errors="replace"))
    if isinstance(value, UUID | datetime | date | Enum):
        return str(value)
    if isinstance(value, Mapping):
        return {
            k: (REDACTED if _normalise_key(str(k)) in PERSONAL_DATA_KEYS else _redact_value(v))
            for k, v in value.items()
        }
    if isinstance(value, list | tuple | set | frozenset):
        return [_redact_value(v) for v in value]
    # Anything else (exceptions, models, custom objects) is rendered by repr: scrub that text.
    return scrub(repr(value))


def redact_personal_data(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """structlog processor: mask personal-data keys and scrub string values (the safety net)."""
    for key in list(event_dict):
        if key in ("timestamp", "level", "logger"):
            continue
        if _normalise_key(key) in PERSONAL_DATA_KEYS:
            event_dict[key] = REDACTED
        else:
            event_dict[key] = _redact_value(event_dict[key])
    return event_dict


def _shared_processors() -> list[Processor]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,
        redact_personal_data,
    ]


def configure_logging(
    *,
    log_format: Literal["json", "console"] = "json",
    level: str = "INFO",
    service: str | None = None,
    stream: TextIO | None = None,
) -> None:
    """Configure structlog and route the standard library's loggers (aio-pika, pymongo, aiohttp)
    through the same processors, so every line on stdout (or ``stream``: command-line tools log to
    stderr, their output is stdout) has the same shape."""
    renderer: Processor = (
        structlog.processors.JSONRenderer()
        if log_format == "json"
        else structlog.dev.ConsoleRenderer(
            colors=sys.stdout.isatty(), exception_formatter=structlog.dev.plain_traceback
        )
    )
    shared = _shared_processors()
    structlog.configure(
        # filter_by_level first: an event below the level costs a lookup, not the whole chain
        processors=[structlog.stdlib.filter_by_level, *shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Chatty libraries: their INFO lines are noise for operators.
    for noisy in ("aio_pika", "aiormq", "pymongo", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))
    structlog.contextvars.clear_contextvars()
    if service:
        structlog.contextvars.bind_contextvars(service=service)


def get_logger(name: str | None = None) -> structlog.stdlib.BoundLogger:
    logger: structlog.stdlib.BoundLogger = structlog.stdlib.get_logger(name)
    return logger


@contextmanager
def bound_context(**ids: str | int | None) -> Iterator[None]:
    """Bind ids (never personal data) to every log event inside the block."""
    clean = {k: v for k, v in ids.items() if v is not None}
    with structlog.contextvars.bound_contextvars(**clean):
        yield


def redact_mapping(values: MutableMapping[str, Any]) -> dict[str, Any]:
    """A copy of ``values`` safe to log or to put in a message header."""
    redacted = _redact_value(dict(values))
    assert isinstance(redacted, dict)
    return redacted
