"""What the pulling source connectors (``ss12000_puller``, ``graph_connector``, ``google_connector``) share:
the plumbing around an API, never the API itself.

- :mod:`skolsynk.connectors.http`        the JSON client base: aiohttp session, cached bearer tokens, one GET
  retried with stamina (``Retry-After`` honoured), failures as a short safe error code
- :mod:`skolsynk.connectors.runs`        publishing one source run (started, pages, completed), its report and
  the run state store
- :mod:`skolsynk.connectors.scheduling`  :class:`~skolsynk.connectors.scheduling.SourceConnector`: one run at a
  time per source, coalesced triggers, the schedule loop, sources added, changed and retired while it runs
  (``set_sources``)
- :mod:`skolsynk.connectors.sources`     what a source of each kind is: one model per kind (``ss12000``,
  ``microsoft``, ``google``, ``egil``), and ``SOURCE_KINDS``: how each is checked, built from and put in the
  source registry
- :mod:`skolsynk.connectors.registry`    :class:`~skolsynk.connectors.registry.RegistryFollower`: the sources of
  one kind followed in the source registry (a versioned poll), problems reported back to it
- :mod:`skolsynk.connectors.config`      the connector settings (nested retry settings), a secret as its value
  or an environment variable, the YAML sources files ``skolsynk sources import`` reads, with clear errors
- :mod:`skolsynk.connectors.service`     wiring a connector into a :class:`~skolsynk.service.ServiceApp`, its
  sources followed in the registry

Endpoints, paging, the meaning of an API's status codes and error bodies, the mapping and each connector's
log events and metrics stay in the connector. Every connector has the same shape
(``services/skolsynk_services/<connector>/``):

- ``app.py``        the composition root: ``{Name}ConnectorSettings`` (a
  :class:`~skolsynk.connectors.config.ConnectorSettings`), ``build(settings, *, sources=None, environ=None)``
  (follows the source registry; ``sources`` replaces it, for tests) and ``main``; ``__main__.py`` calls ``main``
- ``client.py``     the API client, ``{Name}Client`` (a :class:`~skolsynk.connectors.http.JsonApiClient`), and
  its ``{Name}ReadError``
- ``mapping.py``    the API's objects as canonical ``SourceRecord``s
- ``runs.py``       one run (``run_once``), its ``RunReport`` and the state store ``SyncStateStore``
  (``SOURCE_KIND``, ``PRODUCER``, ``INDEXES``)
- ``connector.py``  ``{Name}Connector`` (a :class:`~skolsynk.connectors.scheduling.SourceConnector`):
  ``run(source, ...)``, ``trigger(source, ...)``, ``handle_sync_requested(envelope, context)``, ``due(source)``
- ``auth.py``, ``metrics.py`` (``{Name}Metrics``), ``webhook.py`` where a connector has them

A connector has no ``sources.py``: its ``SourceConfig`` is in its kind's module of :mod:`skolsynk.connectors.sources`.
"""
