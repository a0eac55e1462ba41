"""Local fakes of the systems skolsynk talks to, for tests and the demo.

``skolsynk.fakes.egil_vendor``: a vendor's EGIL SCIM server (modelled on Sambruk's Windermere), the
target the dispatcher pushes to. Import from the module itself; this package re-exports nothing, so
``python -m skolsynk.fakes.egil_vendor`` runs without a double import.
"""
