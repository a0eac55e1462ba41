"""A local SMTP server for the notification tests (aiosmtpd, in its own thread), keeping every message."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any

from aiosmtpd.controller import Controller

from skolsynk_testkit.devstack import free_port


class Inbox:
    """The server's handler: every message received, parsed."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = BytesParser(policy=policy.default).parsebytes(envelope.content)
        assert isinstance(message, EmailMessage)
        self.messages.append(message)
        return "250 Message accepted"


@contextmanager
def local_smtp_server() -> Iterator[tuple[Inbox, int]]:
    """The inbox and the port of a local SMTP server on 127.0.0.1, stopped on exit."""
    handler = Inbox()
    controller = Controller(handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        yield handler, controller.port
    finally:
        controller.stop()
