"""Message handlers of the GDPR service. Skeleton: the erasure ledger arrives with issue 8."""

from __future__ import annotations

from skolsynk.contracts import Envelope
from skolsynk.logging import get_logger
from skolsynk.messaging import MessageContext

log = get_logger(__name__)


async def handle_gdpr_event(envelope: Envelope, context: MessageContext) -> None:
    log.info("gdpr_event_received", attempt=context.attempt)
