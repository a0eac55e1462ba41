"""Telling the source what went wrong: after a run that failed (an unhealthy report), the puller posts
``LogEntry`` objects to the source's ``POST /log/`` (SS 12000 2.0 and 2.1), so the people running the source
see, in their own system, which listing skolsynk could not read and which objects it could not use.

* One entry per failed listing (``messageType`` ``skolsynk.read_failed``, ``resourceType`` the collection's
  EndPointsEnum type, ``resourceUrl`` the listing), one per unmappable object (``skolsynk.object_unmappable``,
  with ``resourceId`` when the object's id is a UUID, and the attribute and what is wrong with it), one for a
  run that went past its deadline (``skolsynk.run_incomplete``); at most :data:`MAX_ENTRIES_PER_RUN`, all
  ``severityLevel`` ``Error``, ``timeOfOccurance`` the run's end. Messages (Swedish, for the source's staff)
  carry codes, attribute names and the run id: never a value read from the source.
* A source without ``/log/`` (404, 405 or 501) is remembered in the store (``ss12000_sync_state``,
  ``log_not_offered``, with the base URL asked) and not asked again for ``recheck_seconds`` or until its base
  URL changes. Posting is best effort: each entry is sent once, the first failure ends it for this run (the
  source is likely down: that is why the run failed), and the run's outcome never depends on it.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from skolsynk.connectors.sources.ss12000 import SourceConfig
from skolsynk.logging import get_logger
from skolsynk_services.ss12000_puller.client import Ss12000Client, Ss12000ReadError, format_time
from skolsynk_services.ss12000_puller.metrics import Ss12000Metrics
from skolsynk_services.ss12000_puller.runs import RunReport
from skolsynk_services.ss12000_puller.subscriptions import NOT_OFFERED_CODES, SubscriptionStore, not_offered_recently

log = get_logger(__name__)

#: Entries posted for one run at most.
MAX_ENTRIES_PER_RUN = 20
#: The collections read, as EndPointsEnum types (``deletedEntities`` has none).
RESOURCE_TYPES: dict[str, str] = {
    "organisations": "Organisation",
    "persons": "Person",
    "duties": "Duty",
    "groups": "Group",
    "activities": "Activity",
}
#: What a read error code means, for the message (others are shown as the code).
_CODE_TEXTS: dict[str, str] = {
    "timeout": "inget svar i tid",
    "connection": "ingen anslutning",
    "invalid_json": "svaret var inte JSON",
    "invalid_envelope": "svaret saknade data",
    "page_token_repeated": "samma pageToken kom tillbaka (listan tog aldrig slut)",
    "page_cap_reached": "listan hade fler sidor än gränsen",
    "run_deadline_exceeded": "körningen tog längre tid än tillåtet",
}


def _code_text(code: str) -> str:
    if code.startswith("http_"):
        return f"HTTP {code[5:]} efter omförsök"
    if code.startswith("token_"):
        return f"token-anropet misslyckades ({code})"
    return _CODE_TEXTS.get(code, code)


def log_entries(source: SourceConfig, report: RunReport, *, at: datetime) -> list[dict[str, Any]]:
    """The ``LogEntry`` objects of a failed run (none for a healthy one), at most :data:`MAX_ENTRIES_PER_RUN`."""
    if report.healthy:
        return []
    base = source.base_url.rstrip("/")
    common = {"severityLevel": "Error", "timeOfOccurance": format_time(at)}
    run = f"Körning {report.run_id} ({report.mode})"
    entries: list[dict[str, Any]] = []
    for code in report.errors:
        endpoint, _, cause = code.partition(":")
        if cause == "unmappable":
            continue  # one entry per object below
        if not cause:
            entries.append(
                common
                | {
                    "messageType": "skolsynk.run_incomplete",
                    "message": f"{run}: {_code_text(endpoint)}. skolsynk tar inte bort något på grund av den.",
                }
            )
            continue
        entry = common | {
            "messageType": "skolsynk.read_failed",
            "message": f"{run}: skolsynk kunde inte läsa {endpoint} ({_code_text(cause)}). Körningen är "
            "ofullständig; skolsynk tar inte bort något förrän en hel körning lyckas.",
            "resourceUrl": f"{base}/{endpoint}",
        }
        if endpoint in RESOURCE_TYPES:
            entry["resourceType"] = RESOURCE_TYPES[endpoint]
        entries.append(entry)
    for endpoint, object_id, problem in report.unmappable:
        entry = common | {
            "messageType": "skolsynk.object_unmappable",
            "message": f"{run}: ett objekt i {endpoint} kunde inte användas ({problem}). Det saknas hos "
            "skolsynk tills det rättas.",
        }
        if endpoint in RESOURCE_TYPES:
            entry["resourceType"] = RESOURCE_TYPES[endpoint]
        if object_id is not None:
            entry["resourceId"] = object_id
        entries.append(entry)
    return entries[:MAX_ENTRIES_PER_RUN]


class SourceLog:
    """Posts the entries of failed runs to the sources that have a ``/log/``."""

    def __init__(self, store: SubscriptionStore, metrics: Ss12000Metrics, *, recheck_seconds: float) -> None:
        self.store = store
        self.metrics = metrics
        self.recheck = timedelta(seconds=recheck_seconds)

    async def run_failed(self, source: SourceConfig, client: Ss12000Client, report: RunReport, *, at: datetime) -> int:
        """Post what went wrong in ``report``; how many entries the source took. Never raises for what the source
        answers."""
        entries = log_entries(source, report, at=at)
        if not entries:
            return 0
        state = await self.store.get(source)
        if not_offered_recently(state, "log", source, at, self.recheck) is not None:
            self.metrics.log_entries.labels("skipped").inc(len(entries))
            return 0
        posted = 0
        for entry in entries:
            try:
                await client.send("POST", "log/", entry, repeat=False)
            except Ss12000ReadError as error:
                if error.code in NOT_OFFERED_CODES:
                    await self.store.not_offered(source, "log", at=at)
                    self.metrics.log_entries.labels("not_offered").inc()
                    log.info(
                        "ss12000_log_not_offered",
                        tenant_id=source.tenant_id,
                        source_id=source.source_id,
                        code=error.code,
                        ask_again_in_seconds=self.recheck.total_seconds(),
                    )
                else:
                    self.metrics.log_entries.labels("failed").inc()
                    log.warning(
                        "ss12000_log_post_failed",
                        tenant_id=source.tenant_id,
                        source_id=source.source_id,
                        run_id=str(report.run_id),
                        code=error.code,
                    )
                break
            posted += 1
            self.metrics.log_entries.labels("posted").inc()
        if posted and "log_not_offered" in state:
            await self.store.offered(source, "log")
        if posted:
            log.info(
                "ss12000_log_posted",
                tenant_id=source.tenant_id,
                source_id=source.source_id,
                run_id=str(report.run_id),
                entries=posted,
            )
        return posted
