"""The Google Workspace for Education connector: reads a tenant's Admin SDK Directory (OUs, users, groups)
with a domain-wide-delegated service account and publishes full snapshots to the normaliser."""
