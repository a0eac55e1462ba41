"""The admin service: REST API and web UI for organisers and operators (issue 9). Skeleton for now."""
