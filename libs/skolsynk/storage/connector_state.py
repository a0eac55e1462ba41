"""The source connectors' own collections. Each is read and written by its connector alone, which keeps
the queries and indexes beside its code; the names are kept here with every other collection's.

* ``egil_resources``, ``egil_runs``: what each organiser's EGIL client pushed (its source snapshot),
  and the open incremental run per source (``services/skolsynk_services/egil_receiver/store.py``);
* ``ss12000_sync_state``: per source the high-water mark and the last runs
  (``services/skolsynk_services/ss12000_puller/runs.py``), its subscription at the source and what the source
  does not offer (``services/skolsynk_services/ss12000_puller/subscriptions.py``);
* ``google_sync_state``: per source the last runs and the Reports API cursor
  (``services/skolsynk_services/google_connector/runs.py``);
* ``google_watch_channels``: the Directory push-notification channels open per source (id, event, Google's
  resource id, a hash of the channel token, expiry) (``services/skolsynk_services/google_connector/watch.py``);
* ``graph_delta_links``, ``graph_sync_state``, ``graph_known_ids``: per (tenant, source, resource) the Graph
  delta link, per source the last runs and each teacher's schools, and per (tenant, source, resource) the
  user and class ids of the last healthy run (``services/skolsynk_services/graph_connector/runs.py``).
"""

from __future__ import annotations

EGIL_RESOURCES = "egil_resources"
EGIL_RUNS = "egil_runs"
SS12000_SYNC_STATE = "ss12000_sync_state"
GOOGLE_SYNC_STATE = "google_sync_state"
GOOGLE_WATCH_CHANNELS = "google_watch_channels"
GRAPH_DELTA_LINKS = "graph_delta_links"
GRAPH_SYNC_STATE = "graph_sync_state"
GRAPH_KNOWN_IDS = "graph_known_ids"
