"""skolsynk's test and demo kit, a package of its own beside the product (``testing/``).

* :mod:`skolsynk_testkit.fakes`: local servers that behave as Google Workspace, Microsoft Graph, an
  SS 12000 API and an EGIL SCIM vendor do (paging, auth, throttling, errors);
* :mod:`skolsynk_testkit.synthetic`: deterministic made-up organisers of any size;
* :mod:`skolsynk_testkit.devstack`: the local Mongo wire server, broker vhosts and service processes;
* :mod:`skolsynk_testkit.demo_source`: the docker-compose demo's source.

Nothing in ``libs/`` or ``services/`` imports it, and it is not in the product's wheel or image.
"""
