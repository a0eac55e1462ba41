"""A connector follows the source registry: :class:`RegistryFollower` looks every ``poll_seconds`` which
sources of its kind were added, saved again, disabled or removed (one small read of ``(_id, version)``
pairs, :meth:`~skolsynk.storage.sources.SourceStore.versions`), reads only those, and hands the connector
the sources it is to serve (:meth:`~skolsynk.connectors.scheduling.SourceConnector.set_sources`).

A source that cannot be served (settings the model refuses, a secret that cannot be opened, a referenced
variable that is not set) is left out, logged without values, and reported to the registry
(:meth:`~skolsynk.storage.sources.SourceStore.report_problem`) so the admin shows why; it is tried again at
every poll. Every other source keeps running.

A versioned poll rather than a change stream: a stream needs a resume token kept per replica and a full
read at start and after an invalidation anyway, and the sources with problems must be retried on a timer
regardless; the poll is one indexed read of ``(_id, version)`` per kind and interval.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from pydantic import BaseModel, ValidationError

from skolsynk.connectors.config import ConfigurationError
from skolsynk.connectors.sources import SourceKind
from skolsynk.logging import get_logger
from skolsynk.storage.sources import SecretsUnavailable, SourceStore

log = get_logger(__name__)

#: How often a connector looks for changed sources (the issue's promise: within a minute).
DEFAULT_POLL_SECONDS = 30.0


class FollowingConnector(Protocol):
    async def set_sources(self, sources: Any) -> dict[str, str]: ...


def describe(error: ValidationError) -> str:
    """A validation error as ``field: message`` lines, never the value."""
    lines = []
    for problem in error.errors():
        where = ".".join(str(part) for part in problem.get("loc", ())) or "(source)"
        lines.append(f"{where}: {str(problem.get('msg', 'invalid')).removeprefix('Value error, ')}")
    return "; ".join(lines)


class RegistryFollower:
    """The sources of ``kind`` in ``store``, kept in step with ``connector``."""

    def __init__(
        self,
        store: SourceStore,
        kind: SourceKind,
        connector: FollowingConnector,
        *,
        poll_seconds: float = DEFAULT_POLL_SECONDS,
    ) -> None:
        self.store = store
        self.kind = kind
        self.connector = connector
        self.poll_seconds = poll_seconds
        #: What was read last: key -> version (disabled and broken sources included).
        self.versions: dict[str, int] = {}
        #: The sources served, by key.
        self.configs: dict[str, BaseModel] = {}
        #: Why a source is not served, by key (what was reported to the registry).
        self.problems: dict[str, str] = {}
        self._lock = asyncio.Lock()

    async def load(self) -> None:
        """The first read, at start (before the service is ready)."""
        await self.refresh()

    async def refresh(self) -> bool:
        """Read what changed since the last look and apply it; True when anything did. Calls that overlap
        (the poll, and a sync request for a source not served yet) run one after the other."""
        async with self._lock:
            return await self._refresh()

    async def _refresh(self) -> bool:
        versions = await self.store.versions(self.kind.name)
        changed = sorted(
            key for key, version in versions.items() if self.versions.get(key) != version or key in self.problems
        )
        gone = set(self.versions) - set(versions)
        if not changed and not gone:
            return False
        configs = {key: config for key, config in self.configs.items() if key in versions and key not in changed}
        problems: dict[str, tuple[int, str]] = {}
        disabled = 0
        for doc in await self.store.by_keys(changed):
            key, version = str(doc["_id"]), int(doc.get("version", 0))
            versions[key] = version
            if not doc.get("enabled", True):
                disabled += 1
                continue
            try:
                configs[key] = self.kind.from_registry(doc, self.store.secrets_of(doc))
            except ValidationError as error:
                problems[key] = (version, f"the stored settings are not valid: {describe(error)}")
            except (SecretsUnavailable, ConfigurationError) as error:
                problems[key] = (version, str(error))
        for key, message in (await self.connector.set_sources(configs.values())).items():
            configs.pop(key, None)
            problems[key] = (versions[key], message)
        for key, (version, message) in problems.items():
            if self.problems.get(key) != message:
                log.warning("source_not_served", kind=self.kind.name, source=key, problem=message)
                await self.store.report_problem(key, version, message)
        for key in set(self.problems) - set(problems):
            if key in versions:
                await self.store.report_problem(key, versions[key], None)
        self.problems = {key: message for key, (_, message) in problems.items()}
        self.configs = configs
        self.versions = versions
        log.info(
            "sources_followed",
            kind=self.kind.name,
            served=len(configs),
            changed=len(changed),
            removed=len(gone),
            disabled=disabled,
            problems=len(problems),
        )
        return True

    async def follow(self) -> None:
        """Forever: :meth:`refresh` every ``poll_seconds``; a failed look is logged and tried again."""
        while True:
            await asyncio.sleep(self.poll_seconds)
            try:
                await self.refresh()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("sources_follow_failed", kind=self.kind.name)
