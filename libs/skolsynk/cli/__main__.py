"""``python -m skolsynk.cli``: the same as the ``skolsynk`` command."""

from skolsynk.cli import main

raise SystemExit(main())
