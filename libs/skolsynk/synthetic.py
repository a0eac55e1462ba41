"""Synthetic organisers for the demo, tests and benchmarks: made-up, deterministic, realistic enough.

Names come from short lists of common Swedish names, e-mail addresses from a made-up domain, and
civic numbers are valid in form (with a correct check digit) but generated, never real people's.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime

from skolsynk.contracts.envelope import MessageContract
from skolsynk.contracts.source import SourceRecord, SourceRecordPage, SourceRunCompleted, SourceRunStarted
from skolsynk.domain.ss12000 import EntityKind

GIVEN_NAMES = ("Alva", "Elsa", "Maja", "Astrid", "Wilma", "Noah", "Hugo", "William", "Liam", "Oscar", "Ella", "Nils")
FAMILY_NAMES = ("Andersson", "Johansson", "Karlsson", "Nilsson", "Eriksson", "Larsson", "Olsson", "Persson")


def luhn_digit(nine_digits: str) -> int:
    total = 0
    for position, char in enumerate(nine_digits):
        product = int(char) * (2 if position % 2 == 0 else 1)
        total += product // 10 + product % 10
    return (10 - total % 10) % 10


def civic_number(rng: random.Random, birth_year: int) -> str:
    """A 12-digit personnummer with a valid check digit (made up)."""
    month, day, serial = rng.randint(1, 12), rng.randint(1, 28), rng.randint(0, 999)
    nine = f"{birth_year % 100:02d}{month:02d}{day:02d}{serial:03d}"
    return f"{birth_year // 100:02d}{nine}{luhn_digit(nine)}"


def organiser(
    *, seed: int = 1, school_units: int = 2, students_per_unit: int = 12, teachers_per_unit: int = 2
) -> list[SourceRecord]:
    """An organiser with school units, students in classes per school year, teachers with duties and
    one teaching activity per class. Deterministic for a seed."""
    rng = random.Random(seed)  # noqa: S311 - deterministic made-up data, not security
    records = [SourceRecord(kind=EntityKind.ORGANISATION, key="org", data={"display_name": "Demo kommun"})]
    for unit_no in range(school_units):
        unit = f"unit-{unit_no}"
        records.append(
            SourceRecord(
                kind=EntityKind.SCHOOL_UNIT,
                key=unit,
                data={
                    "display_name": f"Skola {unit_no + 1}",
                    "school_unit_code": f"{90000000 + seed * 1000 + unit_no:08d}",
                    "school_types": ["GR"],
                    "organisation": "org",
                    "municipality_code": "9999",
                },
            )
        )
        classes: dict[int, list[str]] = {}
        for n in range(students_per_unit):
            key = f"student-{unit_no}-{n}"
            year = 1 + n % 9
            given, family = rng.choice(GIVEN_NAMES), rng.choice(FAMILY_NAMES)
            records.append(
                SourceRecord(
                    kind=EntityKind.PERSON,
                    key=key,
                    data={
                        "given_name": given,
                        "family_name": family,
                        "eppn": [f"{key}@demo.skolsynk.example"],
                        "emails": [{"value": f"{key}@elev.demo.skolsynk.example", "type": "Skola elev"}],
                        "civic_no": civic_number(rng, 2026 - 7 - year),
                        "enrolments": [
                            {"school_unit": unit, "school_type": "GR", "school_year": year, "start_date": "2026-08-18"}
                        ],
                    },
                )
            )
            classes.setdefault(year, []).append(key)
        duties = []
        for n in range(teachers_per_unit):
            key = f"teacher-{unit_no}-{n}"
            records.append(
                SourceRecord(
                    kind=EntityKind.PERSON,
                    key=key,
                    data={
                        "given_name": rng.choice(GIVEN_NAMES),
                        "family_name": rng.choice(FAMILY_NAMES),
                        "eppn": [f"{key}@demo.skolsynk.example"],
                        "emails": [{"value": f"{key}@demo.skolsynk.example", "type": "Skola personal"}],
                    },
                )
            )
            duty = f"duty-{unit_no}-{n}"
            duties.append(duty)
            records.append(
                SourceRecord(
                    kind=EntityKind.DUTY,
                    key=duty,
                    data={"person": key, "school_unit": unit, "role": "Lärare", "start_date": "2026-08-01"},
                )
            )
        for year, members in sorted(classes.items()):
            group = f"class-{unit_no}-{year}"
            records.append(
                SourceRecord(
                    kind=EntityKind.GROUP,
                    key=group,
                    data={
                        "display_name": f"{year}A",
                        "group_type": "Klass",
                        "school_type": "GR",
                        "school_unit": unit,
                        "start_date": "2026-08-18",
                        "memberships": [{"person": m} for m in members],
                    },
                )
            )
            records.append(
                SourceRecord(
                    kind=EntityKind.ACTIVITY,
                    key=f"activity-{unit_no}-{year}",
                    data={
                        "display_name": f"Svenska {year}A",
                        "school_unit": unit,
                        "groups": [group],
                        "teachers": [duties[year % len(duties)]] if duties else [],
                        "start_date": "2026-08-18",
                    },
                )
            )
    return records


def school_unit_codes(records: list[SourceRecord]) -> list[str]:
    return [str(r.data["school_unit_code"]) for r in records if r.kind is EntityKind.SCHOOL_UNIT]


def full_run(
    records: list[SourceRecord],
    *,
    source_id: str,
    source_kind: str,
    page_size: int = 500,
    run_id: uuid.UUID | None = None,
) -> Iterator[MessageContract]:
    """The messages of a complete, healthy full snapshot of ``records``."""
    run_id = run_id or uuid.uuid4()
    yield SourceRunStarted(
        run_id=run_id, source_id=source_id, source_kind=source_kind, mode="full", started_at=datetime.now(UTC)
    )
    pages = [records[i : i + page_size] for i in range(0, len(records), page_size)] or [[]]
    for number, page in enumerate(pages):
        yield SourceRecordPage(run_id=run_id, source_id=source_id, page=number, records=page)
    counts: dict[EntityKind, int] = {}
    for record in records:
        counts[record.kind] = counts.get(record.kind, 0) + 1
    yield SourceRunCompleted(run_id=run_id, source_id=source_id, pages=len(pages), counts=counts, healthy=True)


def today() -> date:
    return datetime.now(UTC).date()
