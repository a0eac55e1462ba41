"""skolsynk shared library: what several services need, each piece in one place.

- :mod:`skolsynk.settings`       pydantic-settings objects (built in ``main()``, passed in)
- :mod:`skolsynk.logging`        structlog set-up and the personal-data redaction rule
- :mod:`skolsynk.observability`  health (/livez, /readyz) and /metrics server, shared metrics
- :mod:`skolsynk.lifecycle`      the service runner: signals, drain budget, ordered close
- :mod:`skolsynk.messaging`      aio-pika topology, envelope, publisher, consumer, inbox
- :mod:`skolsynk.storage`        AsyncMongoClient factory, indexes, repositories, outbox
- :mod:`skolsynk.contracts`      versioned pydantic message contracts and JSON Schema export
- :mod:`skolsynk.connectors`     the pulling source connectors' plumbing: HTTP client base, run publishing,
                                 per-source runs and schedule, the sources file
"""

__version__ = "0.1.0"
