"""The skolsynk services, one sub-package each, each run with ``python -m skolsynk_services.<name>``.

No service imports another; what several share lives in :mod:`skolsynk` (``libs/``).
"""
