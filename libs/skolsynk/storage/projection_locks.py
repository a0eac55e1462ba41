"""The normaliser's projection locks (collection ``projection_locks``): one lease document per tenant
being projected, so that one replica projects a tenant at a time. Only the normaliser reads and writes
it (``ProjectionLock`` in ``services/skolsynk_services/normaliser/state.py``); its name is kept here
with every other collection's."""

from __future__ import annotations

PROJECTION_LOCKS = "projection_locks"
