"""Local fakes of the systems skolsynk talks to, for tests and the demo.

``skolsynk_testkit.fakes.egil_vendor``: a vendor's EGIL SCIM server (modelled on Sambruk's Windermere), the
target the dispatcher pushes to; ``ss12000_api``: an SS 12000:2020 API; ``graph_education``: Microsoft
Graph's Education endpoints with delta and its token endpoint; ``google_directory``: the Google Admin
SDK Directory API with its token endpoint. Import from the module itself; this package re-exports nothing, so
``python -m skolsynk_testkit.fakes.egil_vendor`` runs without a double import.
"""
