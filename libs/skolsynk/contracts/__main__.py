"""``python -m skolsynk.contracts export|check DIR``: write or verify the JSON Schema files."""

from __future__ import annotations

import sys
from pathlib import Path

from skolsynk.contracts.registry import export, stale_files


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("export", "check"):
        sys.stderr.write("usage: python -m skolsynk.contracts export|check DIR\n")
        return 2
    command, directory = argv[0], Path(argv[1])
    if command == "export":
        for path in export(directory):
            sys.stdout.write(f"wrote {path}\n")
        return 0
    stale = stale_files(directory)
    if stale:
        sys.stderr.write("contract schemas are stale (run `make contracts` and commit): " + ", ".join(stale) + "\n")
        return 1
    sys.stdout.write(f"contract schemas in {directory} are current\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
