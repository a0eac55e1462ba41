"""The GDPR service: deletions with vendor receipts, erasure requests, retention, evidence."""
