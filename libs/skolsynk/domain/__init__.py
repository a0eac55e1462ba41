"""The SS 12000 domain: the canonical model, stable ids, vendor subscriptions and selection rules.

Shared by the normaliser (which owns the state), the admin service (preview, data-quality views) and
the dispatchers (EGIL mapping)."""
