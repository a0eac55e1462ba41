"""The SS 12000 puller: reads SS 12000:2020 (2.1) source APIs (full and incremental runs, webhook
triggers) and publishes source runs to the normaliser."""
