"""Versioned message contracts. Vendors read the exported JSON Schema in ``docs/contracts/``."""

from skolsynk.contracts.envelope import ContractMismatch, Envelope, MessageContract, utcnow
from skolsynk.contracts.sync import SyncRequested

__all__ = ["ContractMismatch", "Envelope", "MessageContract", "SyncRequested", "utcnow"]
