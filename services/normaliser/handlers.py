"""Message handlers of the normaliser. Skeleton: the SS 12000 model and diff arrive with issue 3."""

from __future__ import annotations

from skolsynk.contracts import Envelope
from skolsynk.logging import get_logger
from skolsynk.messaging import MessageContext

log = get_logger(__name__)


async def handle_source_event(envelope: Envelope, context: MessageContext) -> None:
    log.info("source_event_received", attempt=context.attempt)
