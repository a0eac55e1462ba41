"""What the pulling source connectors (``ss12000_puller``, ``graph_connector``, ``google_connector``) share:
the plumbing around an API, never the API itself.

- :mod:`skolsynk.connectors.http`        the JSON client base: aiohttp session, cached bearer tokens, one GET
  retried with stamina (``Retry-After`` honoured), failures as a short safe error code
- :mod:`skolsynk.connectors.runs`        publishing one source run (started, pages, completed), its report and
  the run state store
- :mod:`skolsynk.connectors.scheduling`  :class:`~skolsynk.connectors.scheduling.SourceConnector`: one run at a
  time per source, coalesced triggers, the schedule loop
- :mod:`skolsynk.connectors.config`      the connector settings (nested retry settings), the YAML sources file
  with clear errors, secrets from the environment
- :mod:`skolsynk.connectors.service`     wiring a connector into a :class:`~skolsynk.service.ServiceApp`

Endpoints, paging, the meaning of an API's status codes and error bodies, the mapping and each connector's
log events and metrics stay in the connector. Every connector has the same shape
(``services/skolsynk_services/<connector>/``):

- ``app.py``        the composition root: ``{Name}ConnectorSettings`` (a
  :class:`~skolsynk.connectors.config.ConnectorSettings`), ``build(settings, *, sources=None, environ=None)``
  and ``main``; ``__main__.py`` calls ``main``
- ``sources.py``    the sources file: ``SourceConfig`` (one source), ``parse_sources``, ``load_sources``
- ``client.py``     the API client, ``{Name}Client`` (a :class:`~skolsynk.connectors.http.JsonApiClient`), and
  its ``{Name}ReadError``
- ``mapping.py``    the API's objects as canonical ``SourceRecord``s
- ``runs.py``       one run (``run_once``), its ``RunReport`` and the state store ``SyncStateStore``
  (``SOURCE_KIND``, ``PRODUCER``, ``INDEXES``)
- ``connector.py``  ``{Name}Connector`` (a :class:`~skolsynk.connectors.scheduling.SourceConnector`):
  ``run(source, ...)``, ``trigger(source, ...)``, ``handle_sync_requested(envelope, context)``, ``due(source)``
- ``auth.py``, ``metrics.py`` (``{Name}Metrics``), ``webhook.py`` where a connector has them
"""
