"""Message handlers of the dispatcher. Skeleton: delivery modes arrive with issue 7."""

from __future__ import annotations

from skolsynk.contracts import Envelope
from skolsynk.logging import get_logger
from skolsynk.messaging import MessageContext

log = get_logger(__name__)


async def handle_vendor_change(envelope: Envelope, context: MessageContext) -> None:
    log.info("vendor_change_received", attempt=context.attempt)
