"""What the pulling source connectors (``ss12000_puller``, ``graph_connector``, ``google_connector``) share:
the plumbing around an API, never the API itself.

- :mod:`skolsynk.connectors.http`        the JSON client base: aiohttp session, cached bearer tokens, one GET
  retried with stamina (``Retry-After`` honoured), failures as a short safe error code
- :mod:`skolsynk.connectors.runs`        publishing one source run (started, pages, completed) and its report
- :mod:`skolsynk.connectors.scheduling`  one run at a time per source, coalesced triggers, the schedule loop
- :mod:`skolsynk.connectors.config`      the YAML sources file with clear errors, secrets from the environment
- :mod:`skolsynk.connectors.service`     wiring a connector into a :class:`~skolsynk.service.ServiceApp`

Endpoints, paging, the meaning of an API's status codes and error bodies, the mapping and each connector's
log events and metrics stay in the connector.
"""
