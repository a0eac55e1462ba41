"""``python -m skolsynk_testkit.mongo_server``: the Mongo wire server (SecantusDB) with the settings its own
command line reads from ``secantusd.toml`` but does not pass on.

``secantusd-py`` (SecantusDB 0.7.0b3) parses ``[storage] ttl_sweep_seconds`` and never gives it to the
server, so its TTL sweep always runs every 60 s. The sweep decodes every document of every TTL-indexed
collection under the server's one lock (docs/benchmarks.md), which the benchmark must be able to move out
of the way of a latency measurement: this launcher builds the server itself, as the command line does,
with the sweep's interval (0: never) and the storage engine's cache (``--cache-size``: in memory it holds
every document, and at 1G, the command line's default, an organiser of 150,000 persons overflows it with
``WT_CACHE_FULL``). Everything else is the command line's default.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from types import FrameType

from secantus.server import SecantusDBServer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m skolsynk_testkit.mongo_server", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--storage-path", default=":memory:")
    parser.add_argument("--log-level", default="WARNING", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    parser.add_argument(
        "--ttl-sweep-seconds", type=float, default=60.0, help="how often TTL-indexed documents expire (0: never)"
    )
    parser.add_argument(
        "--cache-size", default="1G", help="the storage engine's cache (in memory: all the data the server holds)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    server = SecantusDBServer(
        host=args.host,
        port=args.port,
        storage_path=args.storage_path,
        enable_test_commands=False,  # as the command line: off unless asked for
        ttl_sweep_seconds=args.ttl_sweep_seconds,
        cache_size=args.cache_size,
    )

    def stop(signum: int, frame: FrameType | None) -> None:
        server.stop()
        sys.exit(0)

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    server.start()
    server.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
