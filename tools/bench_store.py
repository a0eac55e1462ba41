"""Store work, counted by the services themselves: every service's Mongo client carries a command
listener (``skolsynk.storage.mongo.StoreWorkCounter``) that feeds ``skolsynk_store_commands_total``,
``skolsynk_store_documents_read_total`` and ``skolsynk_store_documents_written_total`` on its /metrics.
The benchmark scrapes them before and after a phase: round trips and documents per vendor change are
machine-independent, so they can be compared across sizes and machines (they must not grow with size).

Not a library: ``tools/bench.py`` imports it from this folder.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from skolsynk_testkit.devstack import ServiceProcess

_SAMPLE = re.compile(
    r"^(skolsynk_store_(?:commands_total|documents_read_total|documents_written_total|command_seconds_sum"
    r"|command_seconds_count|command_seconds_bucket))\{([^}]*)\} (\S+)$"
)
#: A command slower than this counts as slow (a bucket bound of ``skolsynk_store_command_seconds``).
SLOW_SECONDS = "1.0"
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


@dataclass
class StoreWork:
    """Counts of one or more services at one moment (or the difference of two moments)."""

    commands: Counter[str] = field(default_factory=Counter)  # "command collection" -> count
    read: Counter[str] = field(default_factory=Counter)  # collection -> documents
    written: Counter[str] = field(default_factory=Counter)  # collection -> documents
    seconds: Counter[str] = field(default_factory=Counter)  # "command collection" -> seconds waited
    slow: Counter[str] = field(default_factory=Counter)  # "command collection" -> commands over SLOW_SECONDS

    def __add__(self, other: StoreWork) -> StoreWork:
        return StoreWork(
            self.commands + other.commands,
            self.read + other.read,
            self.written + other.written,
            self.seconds + other.seconds,
            self.slow + other.slow,
        )

    def __sub__(self, earlier: StoreWork) -> StoreWork:
        def minus(a: Counter[str], b: Counter[str]) -> Counter[str]:
            return Counter({k: a[k] - b.get(k, 0) for k in a if a[k] - b.get(k, 0)})

        return StoreWork(
            minus(self.commands, earlier.commands),
            minus(self.read, earlier.read),
            minus(self.written, earlier.written),
            minus(self.seconds, earlier.seconds),
            minus(self.slow, earlier.slow),
        )

    @property
    def round_trips(self) -> int:
        return sum(self.commands.values())

    @property
    def documents_read(self) -> int:
        return sum(self.read.values())

    @property
    def documents_written(self) -> int:
        return sum(self.written.values())

    def summary(self, per: float | None = None, *, top: int = 8) -> dict[str, Any]:
        """Totals, per ``per`` (vendor changes, records, requests) when given, and the largest items."""
        result: dict[str, Any] = {
            "round_trips": self.round_trips,
            "documents_read": self.documents_read,
            "documents_written": self.documents_written,
        }
        if per:
            result |= {
                "per": per,
                "round_trips_per": self.round_trips / per,
                "documents_read_per": self.documents_read / per,
                "documents_written_per": self.documents_written / per,
            }
        result["store_seconds"] = round(sum(self.seconds.values()), 2)
        result["top_commands"] = dict(self.commands.most_common(top))
        result["seconds_by_command"] = {k: round(v, 2) for k, v in self.seconds.most_common(top)}
        result[f"commands_over_{SLOW_SECONDS}s"] = dict(self.slow.most_common(top))
        result["read_by_collection"] = dict(self.read.most_common(top))
        result["written_by_collection"] = dict(self.written.most_common(top))
        return result


def parse(text: str) -> StoreWork:
    work = StoreWork()
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match is None:
            continue
        name, labels_text, value = match.groups()
        labels = dict(_LABEL.findall(labels_text))
        key = f"{labels.get('command', '?')} {labels.get('collection', '?')}"
        if name == "skolsynk_store_command_seconds_sum":
            work.seconds[key] += float(value)
            continue
        if name == "skolsynk_store_command_seconds_count":
            work.slow[key] += round(float(value))  # minus the bucket of SLOW_SECONDS, below
            continue
        if name == "skolsynk_store_command_seconds_bucket":
            if labels.get("le") == SLOW_SECONDS:
                work.slow[key] -= round(float(value))
            continue
        amount = round(float(value))
        if name.startswith("skolsynk_store_commands"):
            work.commands[key] += amount
        elif name.startswith("skolsynk_store_documents_read"):
            work.read[labels.get("collection", "?")] += amount
        else:
            work.written[labels.get("collection", "?")] += amount
    return work


def scrape(service: ServiceProcess) -> StoreWork:
    """A service's store counters now (empty when it does not answer)."""
    try:
        status, body = service.get("/metrics", timeout=10)
    except OSError:
        return StoreWork()
    return parse(body.decode()) if status == 200 else StoreWork()


def snapshot(services: Mapping[str, ServiceProcess]) -> dict[str, StoreWork]:
    return {name: scrape(service) for name, service in services.items() if service.process.poll() is None}


def difference(after: Mapping[str, StoreWork], before: Mapping[str, StoreWork]) -> dict[str, StoreWork]:
    return {name: work - before.get(name, StoreWork()) for name, work in after.items()}


def total(work: Mapping[str, StoreWork]) -> StoreWork:
    result = StoreWork()
    for item in work.values():
        result = result + item
    return result


def report(work: Mapping[str, StoreWork], per: float | None = None) -> dict[str, Any]:
    """All services together (``per`` unit when given) and each service on its own."""
    return {
        "all_services": total(work).summary(per),
        "by_service": {name: w.summary(per, top=5) for name, w in work.items() if w.round_trips},
    }
