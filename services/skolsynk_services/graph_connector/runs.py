"""One run of a Microsoft 365 source (:func:`run_once`), full or incremental (delta): read Graph, map,
publish one source run; its :class:`RunReport` and the :class:`SyncStateStore`.

**Full run** (the first run of a tenant, the periodic reconciliation, a resync): the *initial* delta
rounds of ``/education/schools/delta``, ``/education/users/delta`` and ``/education/classes/delta``
(without a token they return every object, and end with a ``@odata.deltaLink``), plus the relations
Graph does not put on the objects: each school's users and classes, each class's members and teachers.
Publishes ``mode="full"`` with every record and the count per kind; the normaliser removes what it did
not contain. The three delta links are stored afterwards, so the next run is incremental.

**Incremental run**: the stored delta links, each followed until a new ``@odata.deltaLink``; then
every changed user and class is read again in full (a delta entry carries only the changed
properties, and school and class relations are not on it), and the current school list gives the scope.
Deletions delta does not promise (deleted classes, deleted users) are found by listing the ids of users
and classes and comparing them with those of the last healthy run (``graph_known_ids``); moves between
schools (a membership of the school, not a property of the user) by listing each school's user ids. Delta
rounds carry no query options (none are documented for the education delta functions; class delta reports
membership changes only when nothing limits what it tracks).
``@removed`` entries become deletions: ``reason: deleted`` (gone for good) and ``reason: changed``
(soft-deleted or out of the application's scope, restorable) are both removals from this source's view;
they are counted apart. A class with ``members@delta`` is a changed class (its members are read again).
An expired delta token (``syncStateNotFound``, ``resyncRequired``, ``410 Gone``) turns the run into a
full run before anything is published.

A run that fails to read anything publishes **no records**, only its start and a completion with
``healthy=false`` and the error codes: a half-read run would rewrite persons with missing schools. An
object that cannot be mapped at all makes the run unhealthy too, but the rest is published. Unhealthy
runs store no delta links (the next run reads the same changes again).

**State** (:class:`SyncStateStore`, MongoDB):

* ``graph_delta_links``: one document per tenant, source and resource (``schools``, ``users``,
  ``classes``) with the ``@odata.deltaLink`` of the last healthy run. Written only after that run's
  messages were all confirmed by the broker, so a failed run is read again from the same links.
* ``graph_sync_state``: one document per tenant and source: the last full and incremental run (ids,
  times, health, error codes), ``last_full_success_at`` (the reconciliation schedule), and
  ``teacher_schools`` (teacher id -> the schools skolsynk published a Duty at), so a removed or moved
  teacher's duties can be deleted exactly.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, TypeVar

from skolsynk.connectors.runs import Mode as Mode
from skolsynk.connectors.runs import RunPublisher, RunStateStore, gather_limited, millis
from skolsynk.connectors.runs import RunReport as BaseRunReport
from skolsynk.connectors.runs import utcnow as utcnow
from skolsynk.connectors.sources.microsoft import SourceConfig
from skolsynk.contracts.source import SourceDeletion, SourceRecord
from skolsynk.domain.ss12000 import KIND_ORDER, EntityKind
from skolsynk.logging import get_logger
from skolsynk.messaging import Publisher
from skolsynk.storage import Database, IndexSpec
from skolsynk.storage.connector_state import GRAPH_DELTA_LINKS, GRAPH_KNOWN_IDS, GRAPH_SYNC_STATE
from skolsynk_services.graph_connector.client import DeltaExpired, GraphClient, GraphReadError
from skolsynk_services.graph_connector.mapping import (
    GraphMappingError,
    SchoolInfo,
    in_filter,
    map_class,
    map_school,
    map_user,
    object_id,
    organisation_record,
    relation_ids,
    school_info,
)
from skolsynk_services.graph_connector.metrics import GraphMetrics

log = get_logger(__name__)

SOURCE_KIND = "microsoft"
PRODUCER = "graph-connector"
PAGE_ITEMS = 500
DELTA_COLLECTION = GRAPH_DELTA_LINKS
STATE_COLLECTION = GRAPH_SYNC_STATE
RESOURCES: tuple[str, ...] = ("schools", "users", "classes")
#: Resources whose deletions delta does not promise (Microsoft: educationClass delta "does not include
#: deleted classes"; user delta returns "newly created or updated" users): every incremental run lists their
#: ids and compares them with the ids of the last healthy run (kept beside the delta links).
LISTED: tuple[str, ...] = ("users", "classes")


def school_users_resource(school_id: str) -> str:
    """The known-ids key of a school's users. A user's schools are memberships of the school (an Entra
    administrative unit), not properties of the user, so user delta does not report a move between schools:
    every incremental run lists each school's user ids and compares them with the last healthy run's."""
    return f"schools/{school_id}/users"


def _is_listed(resource: str) -> bool:
    return resource in LISTED or (resource.startswith("schools/") and resource.endswith("/users"))


INDEXES = [
    IndexSpec(
        DELTA_COLLECTION, (("tenant_id", 1), ("source_id", 1), ("resource", 1)), "tenant_source_resource", unique=True
    ),
    IndexSpec(STATE_COLLECTION, (("tenant_id", 1), ("source_id", 1)), "tenant_source", unique=True),
    IndexSpec(
        GRAPH_KNOWN_IDS, (("tenant_id", 1), ("source_id", 1), ("resource", 1)), "tenant_source_resource", unique=True
    ),
]
SCHOOL_SELECT = "id,displayName,externalId,schoolNumber,externalSource"
USER_SELECT = (
    "id,primaryRole,accountEnabled,givenName,surname,middleName,displayName,mail,userPrincipalName,"
    "externalSource,student,teacher"
)
CLASS_SELECT = "id,displayName,classCode,externalId,externalName,mailNickname,externalSource,term"
T = TypeVar("T")


class ReadFailed(Exception):
    """A read failed for good: ``code`` is ``{step}:{reason}``."""

    def __init__(self, code: str) -> None:
        self.code = code
        super().__init__(code)


@dataclass(kw_only=True)
class RunReport(BaseRunReport):
    """What one run did (ids, counts and codes only)."""

    mode: Mode
    requested_mode: Mode
    deletions: int = 0
    #: Why an incremental run became a full one (``no_delta_links``, ``syncStateNotFound``, ``gone`` ...).
    resync: str | None = None
    #: ``@removed`` entries by resource and reason (``users:deleted`` -> 3).
    removed: dict[str, int] = field(default_factory=dict)
    #: Users who joined or left a school (not reported by user delta; found by listing each school's users).
    school_moves: int = 0
    delta_links_stored: bool = False


class SyncStateStore(RunStateStore):
    """Per tenant and source: the delta links of the last healthy run, what the last runs did, each teacher's
    schools."""

    def __init__(self, db: Database) -> None:
        super().__init__(db, STATE_COLLECTION)
        self.links = db[DELTA_COLLECTION]
        self.known = db[GRAPH_KNOWN_IDS]

    @staticmethod
    def _link_id(source: SourceConfig, resource: str) -> str:
        return f"{source.key}:{resource}"

    async def delta_links(self, source: SourceConfig) -> dict[str, str]:
        links: dict[str, str] = {}
        async for doc in self.links.find({"tenant_id": source.tenant_id, "source_id": source.source_id}):
            if isinstance(doc.get("delta_link"), str) and doc.get("resource") in RESOURCES:
                links[doc["resource"]] = doc["delta_link"]
        return links

    async def store_delta_links(
        self, source: SourceConfig, links: dict[str, str], *, run_id: uuid.UUID, at: datetime
    ) -> None:
        for resource, link in links.items():
            await self.links.update_one(
                {"_id": self._link_id(source, resource)},
                {
                    "$set": {
                        "tenant_id": source.tenant_id,
                        "source_id": source.source_id,
                        "resource": resource,
                        "delta_link": link,
                        "run_id": str(run_id),
                        "stored_at": at,
                    }
                },
                upsert=True,
            )

    async def known_ids(self, source: SourceConfig) -> dict[str, frozenset[str]]:
        """The ids of :data:`LISTED` resources (and of each school's users) Graph had at the last healthy run
        (none stored: empty)."""
        known: dict[str, frozenset[str]] = {}
        async for doc in self.known.find({"tenant_id": source.tenant_id, "source_id": source.source_id}):
            if isinstance(doc.get("resource"), str) and _is_listed(doc["resource"]):
                known[str(doc["resource"])] = frozenset(doc.get("ids") or ())
        return known

    async def store_known_ids(self, source: SourceConfig, known: Mapping[str, set[str]]) -> None:
        """One document per resource (about 40 bytes an id; 150,000 users are 6 MB, under the 16 MB limit)."""
        for resource, ids in known.items():
            await self.known.update_one(
                {"_id": self._link_id(source, resource)},
                {
                    "$set": {
                        "tenant_id": source.tenant_id,
                        "source_id": source.source_id,
                        "resource": resource,
                        "ids": sorted(ids),
                    }
                },
                upsert=True,
            )

    async def teacher_schools(self, source: SourceConfig) -> dict[str, list[str]]:
        doc = await self.get(source) or {}
        raw = doc.get("teacher_schools") or {}
        return {str(k): [str(s) for s in v] for k, v in raw.items() if isinstance(v, list)}

    async def record_run(
        self,
        source: SourceConfig,
        report: RunReport,
        *,
        finished_at: datetime,
        teacher_schools: dict[str, list[str]] | None,
    ) -> None:
        """The run's outcome; ``teacher_schools`` (healthy runs only) replaces the stored map."""
        fields = self.run_fields(source, report, mode=report.mode, finished_at=finished_at, resync=report.resync)
        if report.healthy and teacher_schools is not None:
            fields["teacher_schools"] = teacher_schools
        await self.collection.update_one({"_id": source.key}, {"$set": fields}, upsert=True)


@dataclass
class RunContent:
    """What a run publishes, and what it stores when it was healthy."""

    records: dict[tuple[EntityKind, str], SourceRecord] = field(default_factory=dict)
    deletions: dict[tuple[EntityKind, str], SourceDeletion] = field(default_factory=dict)
    delta_links: dict[str, str] = field(default_factory=dict)
    teacher_schools: dict[str, list[str]] = field(default_factory=dict)
    unmappable: list[str] = field(default_factory=list)
    #: The ids of the :data:`LISTED` resources Graph has now, where they changed (stored when the run is healthy).
    known: dict[str, set[str]] = field(default_factory=dict)

    def upsert(self, records: Iterable[SourceRecord]) -> None:
        for record in records:
            self.deletions.pop((record.kind, record.key), None)
            self.records[(record.kind, record.key)] = record

    def delete(self, kind: EntityKind, key: str) -> None:
        self.records.pop((kind, key), None)
        self.deletions[(kind, key)] = SourceDeletion(kind=kind, key=key)

    @contextlib.contextmanager
    def guard(self, name: str) -> Iterator[None]:
        """An object that cannot be mapped is left out (neither published nor deleted) and makes the run
        unhealthy as ``{name}:unmappable``."""
        try:
            yield
        except GraphMappingError as error:
            code = f"{name}:unmappable"
            if code not in self.unmappable:
                self.unmappable.append(code)
            log.warning("graph_object_unmappable", resource=name, field=error.field, problem=error.problem)


@dataclass
class Collapsed:
    """A delta round reduced to one state per object: merged properties (later entries win) or removed."""

    changed: dict[str, dict[str, Any]] = field(default_factory=dict)
    removed: dict[str, str] = field(default_factory=dict)  # id -> reason
    unmappable: int = 0


def collapse(entries: Iterable[Any]) -> Collapsed:
    result = Collapsed()
    for entry in entries:
        try:
            key = object_id(entry)
        except GraphMappingError:
            result.unmappable += 1
            continue
        removed = entry.get("@removed")
        if removed is not None:
            reason = removed.get("reason") if isinstance(removed, Mapping) else None
            result.changed.pop(key, None)
            result.removed[key] = reason if reason in ("changed", "deleted") else "deleted"
            continue
        result.removed.pop(key, None)
        result.changed[key] = {**result.changed.get(key, {}), **entry}
    return result


class _Reader:
    """The reads of one run, with the step name in every failure code."""

    def __init__(self, source: SourceConfig, client: GraphClient) -> None:
        self.source = source
        self.client = client
        self.top = {"$top": str(source.page_size)}

    async def step(self, name: str, call: Awaitable[T]) -> T:
        try:
            return await call
        except GraphReadError as error:
            raise ReadFailed(f"{name}:{error.code}") from error

    async def ids(self, name: str, path: str) -> list[str]:
        items = await self.step(name, self.client.list_all(path, {"$select": "id", **self.top}))
        try:
            return relation_ids(items)
        except GraphMappingError as error:
            raise ReadFailed(f"{name}:unmappable") from error

    async def objects(self, name: str, path: str, select: str) -> list[Any]:
        return await self.step(name, self.client.list_all(path, {"$select": select, **self.top}))


def _scope(schools: Mapping[str, Mapping[str, Any]], source: SourceConfig) -> dict[str, SchoolInfo]:
    return {sid: school_info(obj, source) for sid, obj in schools.items() if in_filter(obj, source.schools)}


def _infos(ids: Iterable[str], scope: Mapping[str, SchoolInfo]) -> list[SchoolInfo]:
    return [scope[s] for s in ids if s in scope]


async def read_full(source: SourceConfig, client: GraphClient, *, today: date) -> RunContent:
    """Initial delta rounds of the three resources plus the relations; raises :class:`ReadFailed`."""
    reader = _Reader(source, client)
    content = RunContent()
    rounds = {}
    rounds["schools"] = await reader.step("schools/delta", client.delta_round("education/schools/delta"))
    schools = collapse(rounds["schools"].entries)
    scope = _scope(schools.changed, source)

    user_schools: dict[str, list[str]] = {}
    class_schools: dict[str, list[str]] = {}

    async def school_relations(school_id: str) -> tuple[str, list[str], list[str]]:
        users = await reader.ids("schools/users", f"education/schools/{school_id}/users")
        classes = await reader.ids("schools/classes", f"education/schools/{school_id}/classes")
        return school_id, users, classes

    for school_id, user_ids, class_ids in await gather_limited(scope, school_relations, source.concurrency):
        content.known[school_users_resource(school_id)] = set(user_ids)
        for user_id in user_ids:
            user_schools.setdefault(user_id, []).append(school_id)
        for class_id in class_ids:
            class_schools.setdefault(class_id, []).append(school_id)

    rounds["users"] = await reader.step("users/delta", client.delta_round("education/users/delta"))
    rounds["classes"] = await reader.step("classes/delta", client.delta_round("education/classes/delta"))
    users, classes = collapse(rounds["users"].entries), collapse(rounds["classes"].entries)
    wanted_classes = [c for c in classes.changed if _infos(class_schools.get(c, []), scope)]

    async def class_relations(class_id: str) -> tuple[list[str], list[str]]:
        members = await reader.ids("classes/members", f"education/classes/{class_id}/members")
        teachers = await reader.ids("classes/teachers", f"education/classes/{class_id}/teachers")
        return members, teachers

    relations = await gather_limited(wanted_classes, class_relations, source.concurrency)

    organisation = organisation_record(source)
    if organisation is not None:
        content.upsert([organisation])
    for school_id in scope:
        content.upsert([map_school(schools.changed[school_id], source)])
    for user_id, user in users.changed.items():
        with content.guard("users"):
            infos = _infos(user_schools.get(user_id, []), scope)
            mapped = map_user(user, infos, source, today=today, require_school=bool(source.schools))
            content.upsert(mapped.records)
            if mapped.duties:
                content.teacher_schools[user_id] = mapped.duty_schools
    for class_id, (members, teachers) in zip(wanted_classes, relations, strict=True):
        with content.guard("classes"):
            infos = _infos(class_schools.get(class_id, []), scope)
            content.upsert(map_class(classes.changed[class_id], infos, members, teachers, source))
    for name, collapsed in (("schools", schools), ("users", users), ("classes", classes)):
        if collapsed.unmappable:
            content.unmappable.append(f"{name}:unmappable")
    content.delta_links = {name: rounds[name].delta_link for name in RESOURCES}
    content.known.update({"users": set(users.changed), "classes": set(classes.changed)})
    return content


async def _school_moves(
    reader: _Reader, scope: Mapping[str, SchoolInfo], known: Mapping[str, frozenset[str]], content: RunContent
) -> set[str]:
    """The users who joined or left a school in scope since the last healthy run (each school's user ids
    listed, ``$select=id``); a school that left the scope counts as left by all its users, a school new in
    scope as joined by all of its. Without any school's ids stored (state from before this check) nothing
    counts as moved: the ids are only stored."""
    listed = dict(
        await gather_limited(scope, lambda school_id: _school_users(reader, school_id), reader.source.concurrency)
    )
    stored = {r: ids for r, ids in known.items() if r.startswith("schools/")}
    baseline = bool(stored)
    moved: set[str] = set()
    for school_id, user_ids in listed.items():
        resource = school_users_resource(school_id)
        before, now = stored.pop(resource, None), frozenset(user_ids)
        if before != now:
            content.known[resource] = set(now)
        if baseline:
            moved |= (before or frozenset()) ^ now
    for resource, before in stored.items():  # schools no longer in scope
        if before:
            content.known[resource] = set()
            moved |= before
    return moved


async def _school_users(reader: _Reader, school_id: str) -> tuple[str, list[str]]:
    return school_id, await reader.ids("schools/users", f"education/schools/{school_id}/users")


async def read_incremental(
    source: SourceConfig,
    client: GraphClient,
    links: Mapping[str, str],
    teacher_schools: Mapping[str, list[str]],
    report: RunReport,
    *,
    today: date,
    known: Mapping[str, frozenset[str]] | None = None,
) -> RunContent:
    """The delta rounds from the stored links, then changed objects read again; raises
    :class:`DeltaExpired` (resync) or :class:`ReadFailed`."""
    reader = _Reader(source, client)
    content = RunContent(teacher_schools={k: list(v) for k, v in teacher_schools.items()})
    rounds = {}
    for name in RESOURCES:
        rounds[name] = await reader.step(f"{name}/delta", client.delta_round(links[name]))
    changes = {name: collapse(rounds[name].entries) for name in RESOURCES}
    for name, collapsed in changes.items():
        for reason in collapsed.removed.values():
            report.removed[f"{name}:{reason}"] = report.removed.get(f"{name}:{reason}", 0) + 1
        if collapsed.unmappable:
            content.unmappable.append(f"{name}:unmappable")

    # Deletions delta does not report: the ids Graph has now against those of the last healthy run.
    gone: dict[str, list[str]] = {}
    for name in LISTED:
        listed = set(await reader.ids(name, f"education/{name}"))
        before = (known or {}).get(name)
        if before is None or frozenset(listed) != before:
            content.known[name] = listed  # stored after a healthy run; unchanged ids are not written again
        reported = set(changes[name].changed) | set(changes[name].removed)
        gone[name] = sorted(before - listed - reported) if before else []
        if gone[name]:
            report.removed[f"{name}:listed"] = len(gone[name])

    current: dict[str, dict[str, Any]] = {}
    for school in await reader.objects("schools", "education/schools", SCHOOL_SELECT):
        with content.guard("schools"):
            current[object_id(school)] = school
    scope = _scope(current, source)
    moved = await _school_moves(reader, scope, known or {}, content)
    moved -= set(changes["users"].changed) | set(changes["users"].removed) | set(gone["users"])
    report.school_moves = len(moved)

    def drop_duties(user_id: str, keep: Iterable[str] = ()) -> None:
        kept = set(keep)
        for school_id in content.teacher_schools.pop(user_id, []):
            if school_id not in kept:
                content.delete(EntityKind.DUTY, f"{user_id}:{school_id}")

    # Schools.
    for school_id in changes["schools"].changed:
        if school_id in scope:
            content.upsert([map_school(current[school_id], source)])
        elif school_id in current:  # left the school filter
            content.delete(EntityKind.SCHOOL_UNIT, school_id)
    for school_id in changes["schools"].removed:
        if school_id not in scope:
            content.delete(EntityKind.SCHOOL_UNIT, school_id)
            for user_id, schools in list(content.teacher_schools.items()):
                if school_id in schools:
                    content.delete(EntityKind.DUTY, f"{user_id}:{school_id}")
                    content.teacher_schools[user_id] = [s for s in schools if s != school_id]

    # Users: read again in full, with their schools.
    async def read_user(user_id: str) -> tuple[str, dict[str, Any] | None, list[str]]:
        user = await reader.step("users", client.get_object(f"education/users/{user_id}", {"$select": USER_SELECT}))
        if user is None:
            return user_id, None, []
        return user_id, user, await reader.ids("users/schools", f"education/users/{user_id}/schools")

    for user_id in [*changes["users"].removed, *gone["users"]]:
        content.delete(EntityKind.PERSON, user_id)
        drop_duties(user_id)
    to_read = [*changes["users"].changed, *sorted(moved)]
    for user_id, user, school_ids in await gather_limited(to_read, read_user, source.concurrency):
        if user is None:
            report.removed["users:gone"] = report.removed.get("users:gone", 0) + 1
            content.delete(EntityKind.PERSON, user_id)
            drop_duties(user_id)
            continue
        with content.guard("users"):
            mapped = map_user(user, _infos(school_ids, scope), source, today=today, require_school=bool(source.schools))
            if mapped.person is None:
                content.delete(EntityKind.PERSON, user_id)
                drop_duties(user_id)
                continue
            drop_duties(user_id, keep=mapped.duty_schools)
            content.upsert(mapped.records)
            if mapped.duties:
                content.teacher_schools[user_id] = mapped.duty_schools

    # Classes: read again in full, with schools, members and teachers.
    async def read_class(class_id: str) -> tuple[str, dict[str, Any] | None, list[str], list[str], list[str]]:
        klass = await reader.step(
            "classes", client.get_object(f"education/classes/{class_id}", {"$select": CLASS_SELECT})
        )
        if klass is None:
            return class_id, None, [], [], []
        school_ids = await reader.ids("classes/schools", f"education/classes/{class_id}/schools")
        if not _infos(school_ids, scope):
            return class_id, klass, school_ids, [], []
        members = await reader.ids("classes/members", f"education/classes/{class_id}/members")
        teachers = await reader.ids("classes/teachers", f"education/classes/{class_id}/teachers")
        return class_id, klass, school_ids, members, teachers

    for class_id in [*changes["classes"].removed, *gone["classes"]]:
        content.delete(EntityKind.GROUP, class_id)
        content.delete(EntityKind.ACTIVITY, class_id)
    for class_id, klass, school_ids, members, teachers in await gather_limited(
        changes["classes"].changed, read_class, source.concurrency
    ):
        with content.guard("classes"):
            records = map_class(klass, _infos(school_ids, scope), members, teachers, source) if klass else []
            if records:
                content.upsert(records)
            else:
                content.delete(EntityKind.GROUP, class_id)
                content.delete(EntityKind.ACTIVITY, class_id)
    content.delta_links = {name: rounds[name].delta_link for name in RESOURCES}
    return content


async def run_once(
    source: SourceConfig,
    *,
    mode: Mode,
    client: GraphClient,
    publisher: Publisher,
    exchange: str,
    state: SyncStateStore,
    metrics: GraphMetrics | None = None,
    today: Callable[[], date] = lambda: utcnow().date(),
) -> RunReport:
    """Run once and publish the run. An incremental run without stored delta links (never a healthy run
    before) or whose delta token expired is run as a full one. Read errors end up in the report (and
    make it unhealthy); publish errors propagate (nothing is stored: the run is simply repeated)."""
    requested = mode
    report = RunReport(
        tenant_id=source.tenant_id,
        source_id=source.source_id,
        mode=mode,
        requested_mode=requested,
        started_at=millis(utcnow()),
    )
    content: RunContent | None = None
    links: dict[str, str] = {}
    if mode == "incremental":
        links = await state.delta_links(source)
        if set(links) != set(RESOURCES):
            report.resync = "no_delta_links"
    began = asyncio.get_running_loop().time()
    if mode == "incremental" and report.resync is None:
        try:
            content = await read_incremental(
                source,
                client,
                links,
                await state.teacher_schools(source),
                report,
                today=today(),
                known=await state.known_ids(source),
            )
        except DeltaExpired as expired:
            report.resync = expired.code
            log.info(
                "graph_delta_expired",
                tenant_id=source.tenant_id,
                source_id=source.source_id,
                code=expired.code,
                location_given=expired.location is not None,
            )
        except ReadFailed as failure:
            report.add_error(failure.code)
    if report.resync is not None:
        report.mode = "full"
        report.removed.clear()
        if metrics is not None:
            metrics.resyncs.labels(report.resync if report.resync == "no_delta_links" else "expired").inc()
    if report.mode == "full":
        try:
            content = await read_full(source, client, today=today())
        except ReadFailed as failure:
            report.add_error(failure.code)
        except DeltaExpired as expired:  # a 410 in the middle of an initial round
            report.add_error(f"delta:{expired.code}")
    if report.errors:
        content = None  # a half-read run publishes nothing but its failure
    for code in content.unmappable if content else []:
        report.add_error(code)

    out = RunPublisher(
        publisher, exchange, source, report.run_id, source_kind=SOURCE_KIND, producer=PRODUCER, page_items=PAGE_ITEMS
    )
    log.info(
        "graph_run_started",
        tenant_id=source.tenant_id,
        source_id=source.source_id,
        run_id=str(report.run_id),
        mode=report.mode,
        resync=report.resync,
    )
    await out.started(report, mode=report.mode)
    if content is not None:
        records = sorted(content.records.values(), key=lambda r: KIND_ORDER.index(r.kind))
        deletions = sorted(content.deletions.values(), key=lambda d: -KIND_ORDER.index(d.kind))
        if report.mode == "full":
            deletions = []  # a full snapshot removes by absence
        report.count(records)
        report.deletions = len(deletions)
        await out.page(records)
        await out.page([], deletions)
    await out.completed(report)
    finished = utcnow()
    if report.healthy and content is not None:
        await state.store_delta_links(source, content.delta_links, run_id=report.run_id, at=finished)
        await state.store_known_ids(source, content.known)
        report.delta_links_stored = True
    await state.record_run(
        source, report, finished_at=finished, teacher_schools=content.teacher_schools if content else None
    )
    if metrics is not None:
        metrics.observe(report, asyncio.get_running_loop().time() - began)
    log.info(
        "graph_run_completed",
        tenant_id=source.tenant_id,
        source_id=source.source_id,
        run_id=str(report.run_id),
        mode=report.mode,
        pages=report.pages,
        counts={k.value: v for k, v in report.counts.items()},
        deletions=report.deletions,
        removed=report.removed,
        school_moves=report.school_moves,
        healthy=report.healthy,
        errors=report.errors,
    )
    return report
