"""The normaliser's projection locks (collection ``projection_locks``): one lease document per tenant
being projected, so that one replica projects a tenant at a time (with the checkpoint of a projection of
the whole organiser that spans several slices of time). Only the normaliser reads and writes
it (``ProjectionLock`` in ``services/skolsynk_services/normaliser/state.py``); its name is kept here
with every other collection's."""

from __future__ import annotations

PROJECTION_LOCKS = "projection_locks"

#: The removals a projection of the whole organiser gathered before it handed its lock over (one document
#: per vendor view: ``tenant_id``, ``vendor_id``, ``projection`` (the sliced projection's id), ``reason``),
#: judged together with the rest at its end, then deleted.
PROJECTION_REMOVALS = "projection_removals"
