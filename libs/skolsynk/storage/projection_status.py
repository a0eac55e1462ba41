"""How far each organiser's projection has come (collection ``projection_status``), so that a test report
still being computed is never shown as final. One small document per tenant (``_id`` the tenant id):

* ``requested`` (with ``requested_at``): how many projections the admin has asked for, counted by
  :meth:`ProjectionStatus.requested` *before* it publishes each request (a subscription saved, gone live or
  back to test mode, a resend, a hold decided, the privacy setting changed);
* ``running`` (with ``started_at``): the normaliser is projecting the tenant now; set when it starts,
  cleared when it finishes or fails;
* ``done`` (with ``finished_at``): the ``requested`` count the last finished projection of the whole
  organiser started from (every request of the admin's needs the whole organiser projected).

A request is answered once ``done >= requested``: a projection that started before the request does not
answer it (the request, coalesced under the tenant's projection lock, makes the lock's holder project
again, and that run reads the higher count). Counters, not times, so the admin's clock and the
normaliser's never have to agree. Projections the admin did not ask for (after a source run, the date
check, an erasure, a drift check) count as running while they run. The whole organiser is projected at
once, for every vendor: one document per tenant says it for each of its subscriptions; what a vendor's
dispatcher has still to record is the pair's ``delivery_backlog``.

Written by the admin (``requested``) and the normaliser (the rest), each ``$set``/``$inc`` of its own
fields; read by the admin. Ids, counts and times only."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from pymongo import ReturnDocument

from skolsynk.storage.mongo import Database, Document, stored_time

PROJECTION_STATUS = "projection_status"


@dataclass(frozen=True)
class ProjectionProgress:
    """One tenant's projection as the store has it (:meth:`ProjectionStatus.get`)."""

    requested: int = 0
    done: int = 0
    running: bool = False
    requested_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None

    @property
    def waiting(self) -> bool:
        """A projection the admin asked for has not finished yet (it may not have started)."""
        return self.requested > self.done

    @property
    def busy(self) -> bool:
        """Requested and not done, or running: what the vendors hold may still change."""
        return self.waiting or self.running


def progress_of(doc: Document | None) -> ProjectionProgress:
    if doc is None:
        return ProjectionProgress()
    return ProjectionProgress(
        requested=int(doc.get("requested", 0)),
        done=int(doc.get("done", 0)),
        running=bool(doc.get("running", False)),
        requested_at=stored_time(doc.get("requested_at")),
        started_at=stored_time(doc.get("started_at")),
        finished_at=stored_time(doc.get("finished_at")),
    )


class ProjectionStatus:
    def __init__(self, db: Database) -> None:
        self.collection = db[PROJECTION_STATUS]

    async def requested(self, tenant_id: str, *, at: datetime) -> None:
        """The admin is about to ask for a projection of the tenant (call it before publishing: a request
        counted after the normaliser had read the count would never be answered until the next one)."""
        await self.collection.update_one(
            {"_id": tenant_id}, {"$inc": {"requested": 1}, "$set": {"requested_at": at}}, upsert=True
        )

    async def started(self, tenant_id: str, *, at: datetime) -> int:
        """The normaliser starts projecting the tenant; returns the requests this projection answers."""
        doc = await self.collection.find_one_and_update(
            {"_id": tenant_id},
            {"$set": {"running": True, "started_at": at}},
            upsert=True,
            return_document=ReturnDocument.AFTER,
        )
        return int((doc or {}).get("requested", 0))

    async def finished(self, tenant_id: str, *, answered: int | None, at: datetime) -> None:
        """The projection that :meth:`started` is done (and has committed every change). ``answered``: the
        count :meth:`started` returned, for a projection of the whole organiser; None for one of what a
        source run changed, which answers no request (a subscription's change needs the whole organiser)."""
        update: Document = {"$set": {"running": False, "finished_at": at}}
        if answered is not None:
            update["$max"] = {"done": answered}
        await self.collection.update_one({"_id": tenant_id}, update, upsert=True)

    async def failed(self, tenant_id: str) -> None:
        """The projection stopped without finishing (it is retried: the requests it had stay unanswered)."""
        await self.collection.update_one({"_id": tenant_id}, {"$set": {"running": False}})

    async def get(self, tenant_id: str) -> ProjectionProgress:
        return progress_of(await self.collection.find_one({"_id": tenant_id}))
