"""Wire adapters: SS 12000's two wire formats to and from the canonical records.

* :mod:`skolsynk.adapters.egil`: the 2018 SCIM/EGIL profile (what EGIL clients push to the receiver and
  what the dispatchers push to EGIL vendor servers);
* :mod:`skolsynk.adapters.ss12000_api`: the 2020 REST API (what the SS 12000 puller reads).

They sit above :mod:`skolsynk.domain` and :mod:`skolsynk.contracts` (they build ``SourceRecord``s), so the
domain never imports a contract.
"""
