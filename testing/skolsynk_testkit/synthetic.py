"""Synthetic organisers for the demo, tests and benchmarks: made-up, deterministic, realistic enough.

Names come from lists of common Swedish names, e-mail addresses from made-up domains (``.example``),
and civic numbers are valid in form (with a correct check digit) but generated, never real people's.

* :func:`organiser`: a tiny hand-sized organiser (tests);
* :func:`generate` / :func:`stream`: an organiser of size S (about 2,000 persons), M (20,000) or L
  (150,000 persons, 400 school units, 20,000 groups, about 500,000 memberships), or any
  :class:`SizeSpec`, with realistic structure (Skolor between the Huvudman and some school units, duties
  at both levels, mentors, syllabuses), persons without a securityMarking or not active, and realistic
  data-quality defects;
* :func:`change_set`: the same organiser a little later (moves, leavers, new students);
* :func:`split_school_units`: one organiser split by school units, to feed several sources;
* :func:`full_run` / :func:`incremental_run`: records as the messages a connector would publish.
"""

from __future__ import annotations

import calendar
import itertools
import math
import random
import unicodedata
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from typing import Any, Literal

from skolsynk.contracts.envelope import MessageContract
from skolsynk.contracts.source import (
    SourceDeletion,
    SourceRecord,
    SourceRecordPage,
    SourceRunCompleted,
    SourceRunStarted,
)
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
                        "security_marking": "Ingen",  # said by the source: a missing one is unknown
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
                        "security_marking": "Ingen",
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


# --- sized organisers ------------------------------------------------------------------------------

Size = Literal["S", "M", "L"]

#: The first day of the school year the generated organiser describes (groups start then; students
#: started at their school unit on this day some years ago). Fixed, so a seed always gives the same data.
SCHOOL_YEAR_START = date(2026, 8, 17)

GIRLS = (
    "Alice", "Maja", "Vera", "Alma", "Selma", "Elsa", "Lilly", "Astrid", "Olivia", "Wilma", "Ella", "Ebba",
    "Freja", "Stella", "Saga", "Signe", "Agnes", "Clara", "Ines", "Ellen", "Nora", "Alva", "Leah", "Edith",
    "Juni", "Hedda", "Iris", "Sara", "Emma", "Anna", "Lova", "Elvira", "Tyra", "Ronja", "Matilda", "Ida",
    "Linnea", "Hanna", "Märta", "Åsa", "Karin", "Eva", "Maria", "Kristina", "Lena", "Ingrid", "Birgitta",
)  # fmt: skip
BOYS = (
    "Noah", "Hugo", "William", "Liam", "Lucas", "Oscar", "Oliver", "Matteo", "Elias", "Adam", "Arvid", "Leo",
    "Frans", "Ludvig", "Theo", "Nils", "Vincent", "Charlie", "Harry", "Alexander", "Viktor", "Sixten", "Gustav",
    "Axel", "Melvin", "Love", "Albin", "Ebbe", "Isak", "Olle", "Sam", "Wilhelm", "Emil", "Anton", "Jonas",
    "Erik", "Lars", "Karl", "Anders", "Per", "Mikael", "Johan", "Björn", "Göran", "Mats", "Stefan", "Jörgen",
)  # fmt: skip
FAMILIES = (
    "Andersson", "Johansson", "Karlsson", "Nilsson", "Eriksson", "Larsson", "Olsson", "Persson", "Svensson",
    "Gustafsson", "Pettersson", "Jonsson", "Jansson", "Hansson", "Bengtsson", "Jönsson", "Lindberg", "Jakobsson",
    "Magnusson", "Lindström", "Olofsson", "Lindqvist", "Lindgren", "Berg", "Axelsson", "Bergström", "Lundberg",
    "Lind", "Lundgren", "Lundqvist", "Mattsson", "Berglund", "Fredriksson", "Sandberg", "Henriksson", "Ali",
    "Mohammed", "Forsberg", "Sjöberg", "Wallin", "Engström", "Eklund", "Danielsson", "Lundin", "Håkansson",
    "Björk", "Bergman", "Gunnarsson", "Holm", "Wikström", "Samuelsson", "Isaksson", "Fransson", "Bergqvist",
    "Nyström", "Holmberg", "Arvidsson", "Löfgren", "Söderberg", "Nyberg", "Blomqvist", "Claesson", "Nordström",
    "Hussein", "Öberg", "Åberg", "Ström", "Hassan", "Yilmaz", "Nguyen", "Kovačević", "Nordin", "Hedlund",
)  # fmt: skip
MUNICIPALITIES = (
    "Storvik", "Älvhamra", "Norrbacka", "Sjövik", "Lindhamn", "Ekeby", "Björkvik", "Granås", "Tallmo", "Åsbro",
)  # fmt: skip
PLACES = (
    "Ek", "Björk", "Tall", "Gran", "Lind", "Al", "Asp", "Rönn", "Hassel", "Lönn", "Sjö", "Ås", "Berg", "Dal",
    "Äng", "Hag", "Vik", "Strand", "Skogs", "Kvarn", "Brunns", "Kyrk", "Torps", "Backa", "Norr", "Sol",
)  # fmt: skip
DIRECTIONS = ("Norra", "Södra", "Östra", "Västra")
PLACE_SUFFIXES = ("backe", "dal", "hög", "lund", "ängs", "vik", "hage", "berg", "gård", "mo")
GR_SUBJECTS = (
    "Svenska", "Matematik", "Engelska", "Idrott och hälsa", "Moderna språk - spanska", "Moderna språk - tyska",
    "Moderna språk - franska", "Svenska som andraspråk", "Slöjd", "Hem- och konsumentkunskap", "Musik", "Bild",
    "Teknik", "Biologi", "Fysik", "Kemi", "Historia", "Geografi", "Religionskunskap", "Samhällskunskap",
)  # fmt: skip
GY_COURSES = (
    "Svenska 1", "Matematik 1c", "Engelska 5", "Idrott och hälsa 1", "Historia 1b", "Samhällskunskap 1b",
    "Naturkunskap 1b", "Religionskunskap 1", "Moderna språk 3", "Fysik 1a", "Kemi 1", "Biologi 1",
    "Matematik 2c", "Svenska 2", "Engelska 6", "Programmering 1", "Psykologi 1", "Filosofi 1",
    "Matematik 3c", "Svenska 3", "Företagsekonomi 1", "Gymnasiearbete",
)  # fmt: skip
GY_PROGRAMMES = ("NA", "SA", "TE", "EK", "ES", "BF", "EE", "VO", "HA", "IB")
#: Compulsory-school subjects as Skolverket codes them (``GRGR`` + subject + ``01``) and their designation.
GR_SYLLABUSES = {
    "Svenska": ("GRGRSVE01", "SV"), "Matematik": ("GRGRMAT01", "MA"), "Engelska": ("GRGRENG01", "EN"),
    "Idrott och hälsa": ("GRGRIDH01", "IDH"), "Moderna språk - spanska": ("GRGRMSP01", "M2SPA"),
    "Moderna språk - tyska": ("GRGRMSP01", "M2TYS"), "Moderna språk - franska": ("GRGRMSP01", "M2FRA"),
    "Svenska som andraspråk": ("GRGRSVA01", "SVA"), "Slöjd": ("GRGRSLJ01", "SL"),
    "Hem- och konsumentkunskap": ("GRGRHKK01", "HKK"), "Musik": ("GRGRMUS01", "MU"), "Bild": ("GRGRBIL01", "BL"),
    "Teknik": ("GRGRTEK01", "TK"), "Biologi": ("GRGRBIO01", "BI"), "Fysik": ("GRGRFYS01", "FY"),
    "Kemi": ("GRGRKEM01", "KE"), "Historia": ("GRGRHIS01", "HI"), "Geografi": ("GRGRGEO01", "GE"),
    "Religionskunskap": ("GRGRREL01", "RE"), "Samhällskunskap": ("GRGRSAM01", "SH"),
}  # fmt: skip
#: Upper-secondary courses: subject, subject code and course code (Skolverket's form).
GY_SYLLABUSES = {
    "Svenska 1": ("Svenska", "SVE", "SVESVE01"), "Matematik 1c": ("Matematik", "MAT", "MATMAT01c"),
    "Engelska 5": ("Engelska", "ENG", "ENGENG05"), "Idrott och hälsa 1": ("Idrott och hälsa", "IDR", "IDRIDR01"),
    "Historia 1b": ("Historia", "HIS", "HISHIS01b"), "Samhällskunskap 1b": ("Samhällskunskap", "SAM", "SAMSAM01b"),
    "Naturkunskap 1b": ("Naturkunskap", "NAK", "NAKNAK01b"),
    "Religionskunskap 1": ("Religionskunskap", "REL", "RELREL01"),
    "Moderna språk 3": ("Moderna språk", "MSP", "MODSPA03"), "Fysik 1a": ("Fysik", "FYS", "FYSFYS01a"),
    "Kemi 1": ("Kemi", "KEM", "KEMKEM01"), "Biologi 1": ("Biologi", "BIO", "BIOBIO01"),
    "Matematik 2c": ("Matematik", "MAT", "MATMAT02c"), "Svenska 2": ("Svenska", "SVE", "SVESVE02"),
    "Engelska 6": ("Engelska", "ENG", "ENGENG06"), "Programmering 1": ("Programmering", "PRR", "PRRPRR01"),
    "Psykologi 1": ("Psykologi", "PSK", "PSKPSY01"), "Filosofi 1": ("Filosofi", "FIO", "FIOFIO01"),
    "Matematik 3c": ("Matematik", "MAT", "MATMAT03c"), "Svenska 3": ("Svenska", "SVE", "SVESVE03"),
    "Företagsekonomi 1": ("Företagsekonomi", "FÖR", "FÖRFÖR01"), "Gymnasiearbete": ("Gymnasiearbete", "GYA", "GYARBE"),
}  # fmt: skip

#: Defect kinds, named by the data-quality finding each one produces (docs/data-quality.md).
DEFECTS = (
    "email.invalid",
    "email.duplicate",
    "eppn.duplicate",
    "enrolment.unknown_school_unit",
    "person.no_active_relation",
)


@dataclass(frozen=True)
class SizeSpec:
    """How big an organiser is and how often each defect occurs (rates per person)."""

    persons: int
    school_units: int
    groups: int
    memberships: int
    #: share of persons that are staff (the rest are students)
    staff_share: float = 0.10
    #: share of school units that are upper-secondary schools (GY); the rest are compulsory (GR)
    gy_share: float = 0.25
    #: a person's e-mail address is malformed (``email.invalid``; the address is dropped)
    invalid_email_rate: float = 0.02
    #: a person has another person's e-mail address (``email.duplicate``)
    duplicate_email_rate: float = 0.004
    #: a person has another person's login (``eppn.duplicate``: withheld)
    duplicate_eppn_rate: float = 0.002
    #: a student has a second enrolment at a school unit the organiser does not have
    unknown_unit_rate: float = 0.005
    #: a student without an enrolment, a member of staff without a duty (``person.no_active_relation``)
    no_placement_rate: float = 0.01
    #: a person has a protected identity (Skyddad folkbokföring)
    protected_rate: float = 0.002
    #: teachers who also teach at the neighbouring school unit (a second duty)
    shared_staff_rate: float = 0.03
    #: a person whose securityMarking the source does not give (unknown: treated as protected unless the
    #: organiser decides otherwise; the normaliser's summary finding ``security_marking.missing``)
    missing_marking_rate: float = 0.0075
    #: a person whose personStatus is Utvandrad (three in four) or Avliden: kept out of every selection
    inactive_rate: float = 0.002
    #: an F-6 unit followed by a 7-9 unit are the two school units of one Skola (an organisation between
    #: them and the Huvudman) whose Rektor, Kurator, Skolsköterska and Speciallärare/specialpedagog have
    #: their duties at the Skola; False: every school unit directly under the Huvudman
    skolor: bool = True

    @classmethod
    def for_persons(cls, persons: int, **rates: Any) -> SizeSpec:
        """L's proportions (375 persons, 50 groups and 1,250 memberships per school unit) at any size."""
        return cls(
            persons=persons,
            school_units=max(1, round(persons / 375)),
            groups=round(persons * 20_000 / 150_000),
            memberships=round(persons * 500_000 / 150_000),
            **rates,
        )


SIZES: dict[str, SizeSpec] = {
    "S": SizeSpec(persons=2_000, school_units=6, groups=267, memberships=6_667),
    "M": SizeSpec(persons=20_000, school_units=54, groups=2_667, memberships=66_667),
    "L": SizeSpec(persons=150_000, school_units=400, groups=20_000, memberships=500_000),
}


def size_spec(size: Size | str | SizeSpec) -> SizeSpec:
    if isinstance(size, SizeSpec):
        return size
    try:
        return SIZES[size.upper()]
    except KeyError:
        raise ValueError(f"unknown size {size!r}: S, M, L or a SizeSpec") from None


@dataclass
class Manifest:
    """What :func:`stream` generated: counts per kind and role, and the defects it planted (by the finding
    code each should produce)."""

    counts: Counter[str] = field(default_factory=Counter)
    students: int = 0
    staff: int = 0
    memberships: int = 0
    protected: int = 0
    defects: Counter[str] = field(default_factory=Counter)
    school_unit_codes: list[str] = field(default_factory=list)
    #: persons whose securityMarking is not given (unknown)
    unmarked: int = 0
    #: persons by personStatus other than Aktiv (Utvandrad, Avliden)
    inactive: Counter[str] = field(default_factory=Counter)
    #: organisations of type Skola (each above two school units)
    skolor: int = 0
    #: duties at a Skola rather than a school unit, by role
    skola_duties: Counter[str] = field(default_factory=Counter)
    #: classes with a mentor (a duty's assignment role Mentor towards the class)
    mentors: int = 0
    #: teaching activities with a syllabus (a subject or a course)
    with_syllabus: int = 0

    @property
    def persons(self) -> int:
        return self.students + self.staff


def apportion(total: int, weights: Sequence[float]) -> list[int]:
    """``total`` split into integers proportional to ``weights`` (largest remainder; sums to ``total``)."""
    if not weights:
        return []
    weight_sum = sum(weights)
    if weight_sum <= 0:
        weights, weight_sum = [1.0] * len(weights), float(len(weights))
    exact = [total * w / weight_sum for w in weights]
    shares = [math.floor(x) for x in exact]
    left = total - sum(shares)
    by_remainder = sorted(range(len(weights)), key=lambda i: (shares[i] - exact[i], i))
    for i in by_remainder[:left]:
        shares[i] += 1
    return shares


def fold(text: str) -> str:
    """A name as the local part of an e-mail address: lower case ASCII, ``å``/``ä`` -> ``a``, ``ö`` -> ``o``."""
    decomposed = unicodedata.normalize("NFKD", text.lower())
    ascii_only = "".join(c for c in decomposed if c.isascii() and (c.isalnum() or c in " -"))
    return "-".join(ascii_only.replace("-", " ").split())


@dataclass
class _Skola:
    """A Skola: the organisation above two school units (an F-6 and a 7-9 unit) with one leadership and
    student health team for both."""

    key: str
    name: str
    #: the duties of the Skola's teachers (at the Skola), for the activities of both units
    teacher_duties: list[str] = field(default_factory=list)


@dataclass
class _Unit:
    index: int
    key: str
    code: str
    name: str
    stage: str  # "F-6", "F-9", "7-9" or "GY"
    years: list[int]  # school years offered (0: förskoleklass)
    skola: _Skola | None = None  # the Skola above it (None: directly under the Huvudman)
    first_in_skola: bool = False  # the Skola's staff at Skola level are counted in its first unit
    students: int = 0
    staff: int = 0
    per_year: dict[int, int] = field(default_factory=dict)
    classes: dict[int, int] = field(default_factory=dict)
    teaching_groups: dict[int, int] = field(default_factory=dict)
    group_size: dict[int, int] = field(default_factory=dict)

    @property
    def school_types(self) -> list[str]:
        if self.stage == "GY":
            return ["GY"]
        return ["FKLASS", "GR"] if self.years[0] == 0 else ["GR"]


STAGES = {"F-6": list(range(7)), "F-9": list(range(10)), "7-9": [7, 8, 9], "GY": [1, 2, 3]}
#: Duty roles a Skola has once for its school units: their duties are at the Skola.
SKOLA_ROLES = ("Rektor", "Kurator", "Skolsköterska", "Speciallärare/specialpedagog")


class _Generator:
    """One organiser, generated school unit by school unit (records are yielded as they are made)."""

    def __init__(self, spec: SizeSpec, seed: int, manifest: Manifest, start: date) -> None:
        self.spec = spec
        self.rng = random.Random(f"skolsynk-synthetic:{seed}")  # noqa: S311 - made-up data, not security
        # Markings and statuses draw from their own stream, so they leave the rest of the organiser as it was.
        self.traits = random.Random(f"skolsynk-synthetic-traits:{seed}")  # noqa: S311 - as above
        self.manifest = manifest
        self.start = start
        self.municipality = MUNICIPALITIES[seed % len(MUNICIPALITIES)]
        self.domain = f"{fold(self.municipality)}.example"
        self.municipality_code = f"9{seed % 1000:03d}"
        self.local_parts: dict[str, int] = {}
        self.civic_numbers: set[str] = set()
        self.unit_codes: set[str] = set()
        self.org_key = self.key()
        self.last_clean: dict[str, Any] | None = None
        self.previous_teachers: list[str] = []
        self.seed = seed
        #: syllabus keys by (school type, subject or course), made when first taught
        self.syllabuses: dict[tuple[str, str], str] = {}

    def key(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    # --- planning --------------------------------------------------------------------------------

    def plan(self) -> list[_Unit]:
        spec, rng = self.spec, self.rng
        units: list[_Unit] = []
        gr_cycle = itertools.cycle(("F-9", "F-6", "7-9", "F-6"))  # an F-6 and a 7-9 side by side: a Skola
        names: set[str] = set()
        for index in range(spec.school_units):
            gy = math.floor((index + 1) * spec.gy_share) > math.floor(index * spec.gy_share)
            stage = "GY" if gy else next(gr_cycle)
            place = rng.choice(PLACES) + rng.choice(PLACE_SUFFIXES)
            base = name = f"{place}gymnasiet" if stage == "GY" else f"{place}skolan"
            for attempt in itertools.count():  # 260 places: larger organisers have Norra/Södra ... schools
                if name not in names:
                    break
                name = f"{DIRECTIONS[attempt]} {base}" if attempt < len(DIRECTIONS) else f"{base} {attempt - 2}"
            names.add(name)
            code = ""
            while not code or code in self.unit_codes:
                code = f"{rng.randrange(10_000_000, 100_000_000):08d}"
            self.unit_codes.add(code)
            units.append(_Unit(index, self.key(), code, name, stage, STAGES[stage]))
        if spec.skolor:
            self.skolor(units)
        weights = [rng.uniform(0.6, 1.4) * (1.4 if u.stage == "GY" else 1.0) for u in units]
        staff_total = round(spec.persons * spec.staff_share)
        student_total = spec.persons - staff_total
        for unit, students, staff in zip(
            units, apportion(student_total, weights), apportion(staff_total, weights), strict=True
        ):
            unit.students, unit.staff = students, staff
            unit.per_year = dict(zip(unit.years, apportion(students, [1.0] * len(unit.years)), strict=True))
            size = 30 if unit.stage == "GY" else 25
            unit.classes = {y: math.ceil(n / size) for y, n in unit.per_year.items()}
        # Teaching groups fill what classes leave of the group budget; their size the membership budget.
        cells = [(u, y) for u in units for y, n in u.per_year.items() if n > 0]
        classes = sum(sum(u.classes.values()) for u in units)
        teaching = max(0, spec.groups - classes)
        placed = round(student_total * (1 - spec.no_placement_rate))
        for (unit, year), groups in zip(cells, apportion(teaching, [u.per_year[y] for u, y in cells]), strict=True):
            unit.teaching_groups[year] = groups
        budget = max(0, spec.memberships - placed)
        per_group = budget / teaching if teaching else 0.0
        for unit, year in cells:
            unit.group_size[year] = max(1, round(per_group))
        return units

    def skolor(self, units: list[_Unit]) -> None:
        """An F-6 unit and the 7-9 unit right after it become one Skola named after the first: the
        Skola is "Ekbackeskolan", its school units "Ekbackeskolan F-6" and "Ekbackeskolan 7-9"."""
        for first, second in itertools.pairwise(units):
            if first.stage == "F-6" and second.stage == "7-9" and first.skola is None:
                skola = _Skola(self.key(), first.name)
                first.skola = second.skola = skola
                first.first_in_skola = True
                first.name, second.name = f"{skola.name} F-6", f"{skola.name} 7-9"

    # --- records ---------------------------------------------------------------------------------

    def records(self) -> Iterator[SourceRecord]:
        units = self.plan()
        self.manifest.school_unit_codes = [u.code for u in units]
        yield self.count(
            SourceRecord(
                kind=EntityKind.ORGANISATION,
                key=self.org_key,
                data={
                    "display_name": f"{self.municipality} kommun",
                    "organisation_type": "Huvudman",
                    "organisation_number": self.organisation_number(),
                    "municipality_code": self.municipality_code,
                },
            )
        )
        for unit in units:
            if unit.skola is not None and unit.first_in_skola:
                self.manifest.skolor += 1
                yield self.count(
                    SourceRecord(
                        kind=EntityKind.ORGANISATION,
                        key=unit.skola.key,
                        data={
                            "display_name": unit.skola.name,
                            "organisation_type": "Skola",
                            "parent": self.org_key,
                            "municipality_code": self.municipality_code,
                        },
                    )
                )
            yield from self.unit(unit)

    def count(self, record: SourceRecord) -> SourceRecord:
        self.manifest.counts[record.kind.value] += 1
        return record

    def organisation_number(self) -> str:
        nine = f"212000{self.rng.randrange(0, 1000):03d}"
        return f"{nine[:6]}-{nine[6:]}{luhn_digit(nine)}"

    def unit(self, unit: _Unit) -> Iterator[SourceRecord]:
        rng, spec = self.rng, self.spec
        yield self.count(
            SourceRecord(
                kind=EntityKind.SCHOOL_UNIT,
                key=unit.key,
                data={
                    "display_name": unit.name,
                    "school_unit_code": unit.code,
                    "school_types": unit.school_types,
                    "organisation": unit.skola.key if unit.skola is not None else self.org_key,
                    "municipality_code": self.municipality_code,
                },
            )
        )
        # Students, year by year, each placed in a class of their year.
        class_members: dict[tuple[int, int], list[str]] = defaultdict(list)
        year_members: dict[int, list[str]] = defaultdict(list)
        programmes = [GY_PROGRAMMES[(unit.index + i) % len(GY_PROGRAMMES)] for i in range(4)]
        for year, count in unit.per_year.items():
            for n in range(count):
                placed = rng.random() >= spec.no_placement_rate
                class_no = n % unit.classes[year] if unit.classes[year] else 0
                programme = programmes[class_no % len(programmes)] if unit.stage == "GY" else None
                key = self.key()
                data = self.student(unit, year, placed=placed, programme=programme)
                yield self.count(SourceRecord(kind=EntityKind.PERSON, key=key, data=data))
                self.manifest.students += 1
                if placed:
                    class_members[(year, class_no)].append(key)
                    year_members[year].append(key)
        # Staff and their duties; a few teachers of the neighbouring unit teach here too.
        teacher_duties: list[str] = []
        teachers_here: list[str] = []
        duties: list[SourceRecord] = []  # held back until the classes are made: mentors are a duty's task
        for role in self.roles(unit):
            key = self.key()
            placed = rng.random() >= spec.no_placement_rate
            data = self.staff_member()
            yield self.count(SourceRecord(kind=EntityKind.PERSON, key=key, data=data))
            self.manifest.staff += 1
            if not placed:
                self.manifest.defects["person.no_active_relation"] += 1
                continue
            duty = self.key()
            started = date(rng.randint(2004, self.start.year), 8, rng.randint(1, 20))
            # The Skola's leadership, student health and special teachers work at the Skola (both units).
            at_skola = unit.skola is not None and unit.first_in_skola and role in SKOLA_ROLES
            if at_skola:
                self.manifest.skola_duties[role] += 1
            duties.append(
                SourceRecord(
                    kind=EntityKind.DUTY,
                    key=duty,
                    data={
                        "person": key,
                        "school_unit": unit.skola.key if at_skola and unit.skola is not None else unit.key,
                        "role": role,
                        "signature": (fold(data["given_name"])[:2] + fold(data["family_name"])[:2]).upper(),
                        "start_date": min(started, self.start).isoformat(),
                    },
                )
            )
            if role in ("Lärare", "Förstelärare", "Speciallärare/specialpedagog"):
                teacher_duties.append(duty)
                if at_skola and unit.skola is not None:
                    unit.skola.teacher_duties.append(duty)
                else:
                    teachers_here.append(key)
        if unit.skola is not None and not unit.first_in_skola:
            teacher_duties += unit.skola.teacher_duties  # the Skola's teachers teach here too
        if unit.index % 2 == 1 and self.previous_teachers:
            shared = max(1, round(len(self.previous_teachers) * spec.shared_staff_rate))
            for person in rng.sample(self.previous_teachers, min(shared, len(self.previous_teachers))):
                duty = self.key()
                duties.append(
                    SourceRecord(
                        kind=EntityKind.DUTY,
                        key=duty,
                        data={
                            "person": person,
                            "school_unit": unit.key,
                            "role": "Lärare",
                            "start_date": self.start.isoformat(),
                        },
                    )
                )
                teacher_duties.append(duty)
        self.previous_teachers = teachers_here if unit.index % 2 == 0 else []
        teachers = itertools.cycle(teacher_duties or [None])
        mentors: dict[str, list[str]] = defaultdict(list)  # duty -> the classes it mentors
        groups = list(self.groups(unit, class_members, year_members, programmes, teachers, mentors))
        for record in duties:
            if mentors.get(record.key):
                record.data["assignment_roles"] = [
                    {"group": group, "assignment_role_type": "Mentor", "start_date": self.start.isoformat()}
                    for group in mentors[record.key]
                ]
                self.manifest.mentors += len(mentors[record.key])
            yield self.count(record)
        yield from groups

    def groups(
        self,
        unit: _Unit,
        class_members: dict[tuple[int, int], list[str]],
        year_members: dict[int, list[str]],
        programmes: list[str],
        teachers: Iterator[str | None],
        mentors: dict[str, list[str]],
    ) -> Iterator[SourceRecord]:
        """Classes with their Mentorstid activity (its teacher is the class's mentor: their duty gets the
        assignment role Mentor towards the class, when the duty is this unit's own), then teaching groups
        with their activities (each with its subject's or course's syllabus, förskoleklass none)."""
        rng = self.rng
        for (year, class_no), members in sorted(class_members.items()):
            letter = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"[class_no % 26]
            if unit.stage == "GY":
                name = f"{programmes[class_no % len(programmes)]}{(self.start.year - year + 1) % 100:02d}{letter}"
                school_type = "GY"
            else:
                name = f"{'F' if year == 0 else year}{letter}"
                school_type = "FKLASS" if year == 0 else "GR"
            group = self.key()
            yield self.group(unit, group, name, "Klass", school_type, members)
            mentor = next(teachers)
            if mentor is not None:
                mentors[mentor].append(group)
            yield self.activity(unit, f"Mentorstid {name}", group, mentor)
        for year, count in sorted(unit.teaching_groups.items()):
            population = year_members.get(year, [])
            if not population:
                continue
            size = min(len(population), unit.group_size[year])
            subjects = GY_COURSES if unit.stage == "GY" else GR_SUBJECTS
            label = f"åk {year}" if unit.stage != "GY" else f"år {year}"
            if year == 0:
                label = "förskoleklass"
            for n in range(count):
                subject = subjects[(n + year) % len(subjects)]
                round_no = n // len(subjects)
                name = f"{subject} {label}" + (f" grupp {round_no + 1}" if round_no else "")
                members = rng.sample(population, size)
                group = self.key()
                school_type = "GY" if unit.stage == "GY" else ("FKLASS" if year == 0 else "GR")
                yield self.group(unit, group, name, "Undervisning", school_type, members)
                syllabus = None
                if year > 0:  # förskoleklass has no subjects
                    syllabus, new = self.syllabus(school_type, subject)
                    if new is not None:
                        yield new
                yield self.activity(unit, name, group, next(teachers), syllabus)

    def group(
        self, unit: _Unit, key: str, name: str, group_type: str, school_type: str, members: list[str]
    ) -> SourceRecord:
        self.manifest.memberships += len(members)
        return self.count(
            SourceRecord(
                kind=EntityKind.GROUP,
                key=key,
                data={
                    "display_name": name,
                    "group_type": group_type,
                    "school_type": school_type,
                    "school_unit": unit.key,
                    "start_date": self.start.isoformat(),
                    "memberships": [{"person": m} for m in members],
                },
            )
        )

    def activity(
        self, unit: _Unit, name: str, group: str, teacher: str | None, syllabus: str | None = None
    ) -> SourceRecord:
        data: dict[str, Any] = {
            "display_name": name,
            "school_unit": unit.key,
            "groups": [group],
            "teachers": [teacher] if teacher else [],
            "start_date": self.start.isoformat(),
        }
        if syllabus is not None:
            data["syllabus"] = syllabus
            self.manifest.with_syllabus += 1
        return self.count(SourceRecord(kind=EntityKind.ACTIVITY, key=self.key(), data=data))

    def syllabus(self, school_type: str, subject: str) -> tuple[str, SourceRecord | None]:
        """The key of the syllabus of ``subject`` (a GR subject or a GY course), and its record the first
        time it is taught (None after). Keys come from the seed and the code, not the random stream."""
        known = self.syllabuses.get((school_type, subject))
        if known is not None:
            return known, None
        if school_type == "GY":
            subject_name, subject_code, course_code = GY_SYLLABUSES[subject]
            data: dict[str, Any] = {
                "subject_name": subject_name,
                "subject_code": subject_code,
                "course_code": course_code,
                "course_name": subject,
            }
        else:
            code, designation = GR_SYLLABUSES[subject]
            data = {"subject_name": subject, "subject_code": code, "subject_designation": designation}
        data |= {"school_type": school_type, "official": True}
        key = str(uuid.uuid5(uuid.NAMESPACE_URL, f"skolsynk-synthetic:{self.seed}:syllabus:{school_type}:{subject}"))
        self.syllabuses[(school_type, subject)] = key
        return key, self.count(SourceRecord(kind=EntityKind.SYLLABUS, key=key, data=data))

    def roles(self, unit: _Unit) -> list[str]:
        """The duties of a school unit's staff: leadership and student health first, then teachers."""
        fixed = ["Rektor", "Skoladministratör"]
        if unit.staff >= 8:
            fixed += ["Kurator", "Skolsköterska"]
            if unit.skola is not None and unit.first_in_skola:
                fixed.append("Speciallärare/specialpedagog")  # for both units of the Skola
        if unit.skola is not None and not unit.first_in_skola:
            fixed = [r for r in fixed if r not in SKOLA_ROLES]  # the Skola's, counted in its first unit
        if unit.stage in ("7-9", "F-9", "GY") and unit.staff >= 10:
            fixed.append("Studie- och yrkesvägledare")
        if unit.staff >= 15:
            fixed += ["Bibliotekarie", "Skoladministratör"]
        roles = fixed[: unit.staff]
        for n in range(unit.staff - len(roles)):
            if unit.stage in ("F-6", "F-9") and n % 12 == 11:
                roles.append("Fritidspedagog")
            elif n % 10 == 9:
                roles.append("Förstelärare")
            elif n % 20 == 13:
                roles.append("Speciallärare/specialpedagog")
            elif n % 25 == 7:
                roles.append("Lärarassistent")
            else:
                roles.append("Lärare")
        return roles

    # --- persons ---------------------------------------------------------------------------------

    def person(
        self, given: str, family: str, birth_year: int, female: bool, *, mail_domain: str, email_type: str
    ) -> dict[str, Any]:
        local = f"{fold(given)}.{fold(family)}"
        seen = self.local_parts.get(local, 0) + 1
        self.local_parts[local] = seen
        if seen > 1:
            local = f"{local}{seen}"
        civic = self.civic_number(birth_year, female)
        data: dict[str, Any] = {
            "given_name": given,
            "family_name": family,
            "eppn": [f"{local}@{self.domain}"],
            "emails": [{"value": f"{local}@{mail_domain}", "type": email_type}],
            "civic_no": civic,
            "birth_date": f"{civic[:4]}-{civic[4:6]}-{civic[6:8]}",
        }
        # The synthetic sources say every person's marking ("Ingen" too): a missing one is unknown and, by
        # default, treated as protected.
        data["security_marking"] = "Ingen"
        if self.rng.random() < self.spec.protected_rate:
            data["security_marking"] = "Skyddad folkbokföring"
            self.manifest.protected += 1
        self.traits_of(data)
        self.defects(data)
        return data

    def traits_of(self, data: dict[str, Any]) -> None:
        """Leave out the securityMarking of a few persons (unknown), and give a few a personStatus other
        than Aktiv (Utvandrad, Avliden)."""
        spec = self.spec
        if self.traits.random() < spec.missing_marking_rate:
            if data.pop("security_marking") != "Ingen":
                self.manifest.protected -= 1  # not known to be protected any more
            self.manifest.unmarked += 1
        roll = self.traits.random()
        if roll < spec.inactive_rate:
            data["person_status"] = "Utvandrad" if roll < 0.75 * spec.inactive_rate else "Avliden"
            self.manifest.inactive[data["person_status"]] += 1

    def defects(self, data: dict[str, Any]) -> None:
        """Plant at most one address defect; remember a clean person to copy from."""
        spec, roll = self.spec, self.rng.random()
        email = data["emails"][0]
        if roll < spec.invalid_email_rate:
            email["value"] = self.malformed(email["value"])
            self.manifest.defects["email.invalid"] += 1
        elif roll < spec.invalid_email_rate + spec.duplicate_email_rate and self.last_clean is not None:
            email["value"] = self.last_clean["emails"][0]["value"]
            self.manifest.defects["email.duplicate"] += 1
        elif (
            roll < spec.invalid_email_rate + spec.duplicate_email_rate + spec.duplicate_eppn_rate
            and self.last_clean is not None
        ):
            data["eppn"] = list(self.last_clean["eppn"])
            self.manifest.defects["eppn.duplicate"] += 1
        else:
            self.last_clean = data

    def malformed(self, address: str) -> str:
        local, _, domain = address.partition("@")
        return self.rng.choice(
            (
                f"{local}@@{domain}",  # typed twice
                f"{local} @{domain}",  # a space
                f"{local}.{domain}",  # no @
                f"{local}@{domain}.",  # a trailing dot
                f"{local}@{domain.split('.', 1)[0]}",  # no top-level domain
            )
        )

    def civic_number(self, birth_year: int, female: bool) -> str:
        """A unique 12-digit personnummer with a valid check digit; the 11th digit is even for women."""
        while True:
            month = self.rng.randint(1, 12)
            day = self.rng.randint(1, calendar.monthrange(birth_year, month)[1])
            serial = self.rng.randrange(0, 100) * 10 + self.rng.choice((0, 2, 4, 6, 8) if female else (1, 3, 5, 7, 9))
            nine = f"{birth_year % 100:02d}{month:02d}{day:02d}{serial:03d}"
            civic = f"{birth_year // 100:02d}{nine}{luhn_digit(nine)}"
            if civic not in self.civic_numbers:
                self.civic_numbers.add(civic)
                return civic

    def names(self) -> tuple[str, str, bool]:
        female = self.rng.random() < 0.5
        given = self.rng.choice(GIRLS if female else BOYS)
        family = self.rng.choice(FAMILIES)
        if self.rng.random() < 0.05:
            family = f"{family}-{self.rng.choice(FAMILIES)}"
        return given, family, female

    def student(self, unit: _Unit, year: int, *, placed: bool, programme: str | None) -> dict[str, Any]:
        given, family, female = self.names()
        first_year = unit.years[0]
        data = self.person(
            given,
            family,
            self.start.year - 6 - year,
            female,
            mail_domain=f"elev.{self.domain}",
            email_type="Skola elev",
        )
        if not placed:
            data["enrolments"] = []
            self.manifest.defects["person.no_active_relation"] += 1
            return data
        started = self.start.replace(year=self.start.year - (year - first_year))
        enrolment: dict[str, Any] = {
            "school_unit": unit.key,
            "school_type": "FKLASS" if year == 0 else ("GY" if unit.stage == "GY" else "GR"),
            "school_year": year,
            "start_date": started.isoformat(),
        }
        if programme is not None:
            enrolment["programme_code"] = programme
        data["enrolments"] = [enrolment]
        if self.rng.random() < self.spec.unknown_unit_rate:
            # e.g. mother-tongue tuition at another organiser's school, which this organiser does not have
            data["enrolments"].append(
                {
                    "school_unit": self.key(),
                    "school_type": enrolment["school_type"],
                    "school_year": year,
                    "start_date": self.start.isoformat(),
                }
            )
            self.manifest.defects["enrolment.unknown_school_unit"] += 1
        return data

    def staff_member(self) -> dict[str, Any]:
        given, family, female = self.names()
        birth_year = self.rng.randint(1960, 2001)
        data = self.person(given, family, birth_year, female, mail_domain=self.domain, email_type="Skola personal")
        data["enrolments"] = []
        return data


def stream(
    size: Size | str | SizeSpec = "S",
    *,
    seed: int = 1,
    manifest: Manifest | None = None,
    school_year_start: date = SCHOOL_YEAR_START,
) -> Iterator[SourceRecord]:
    """The records of a synthetic organiser, one school unit after another (memory stays flat: nothing
    but e-mail local parts, civic numbers and syllabus keys, for uniqueness, is kept across units).
    Deterministic for ``(size, seed, school_year_start)``; ``manifest`` is filled as the records are
    generated.

    The Huvudman first; then per school unit: the Skola above it when it is the first of a Skola's two
    (an F-6 unit followed by a 7-9 unit; the other units are directly under the Huvudman), the school unit
    (GR as F-6, F-9 or 7-9 with förskoleklass, or GY with programmes), its students (each with an
    enrolment, school year and, GY, programme), its staff with duties (Rektor, Skoladministratör, Kurator,
    Skolsköterska, Studie- och yrkesvägledare, Bibliotekarie, teachers, Förstelärare,
    Speciallärare/specialpedagog, Lärarassistent, Fritidspedagog; a Skola's Rektor, Kurator, Skolsköterska
    and Speciallärare/specialpedagog at the Skola, for both its units), a class (``Klass``) per school
    year and parallel with its "Mentorstid" activity (the mentor is the activity's teacher, whose duty has
    the assignment role Mentor towards the class), and teaching groups (``Undervisning``) per subject or
    course with their activities, each with its syllabus (made the first time it is taught). Teachers of
    every odd school unit include a few of the unit before (a second duty). A few persons have no
    securityMarking, a few are Utvandrad or Avliden (:class:`SizeSpec` rates).

    Defects, at the :class:`SizeSpec`'s rates, each one producing its finding when the normaliser reads
    the organiser: malformed e-mail addresses (``email.invalid``), a person with another's e-mail address
    (``email.duplicate``) or login (``eppn.duplicate``), a second enrolment at an unknown school unit
    (``enrolment.unknown_school_unit``), students without an enrolment and staff without a duty
    (``person.no_active_relation``)."""
    return _Generator(
        size_spec(size), seed, manifest if manifest is not None else Manifest(), school_year_start
    ).records()


def generate(
    size: Size | str | SizeSpec = "S", *, seed: int = 1, school_year_start: date = SCHOOL_YEAR_START
) -> list[SourceRecord]:
    """:func:`stream` as a list: S is about 2,800 records, M 27,000, L 206,000 (memberships inside groups)."""
    return list(stream(size, seed=seed, school_year_start=school_year_start))


def pages(records: Iterable[SourceRecord], page_size: int = 500) -> Iterator[list[SourceRecord]]:
    """Records in pages of ``page_size`` (a stream stays a stream)."""
    iterator = iter(records)
    while page := list(itertools.islice(iterator, page_size)):
        yield page


# --- one organiser, several sources ----------------------------------------------------------------


def split_school_units(records: Iterable[SourceRecord], parts: int = 2) -> list[list[SourceRecord]]:
    """Split an organiser between ``parts`` sources by school unit (contiguous blocks, in order): each
    school unit with its duties, groups and activities; each person with the school unit of their first
    enrolment or duty (a person without either goes by their key); an organisation (the Huvudman, a
    Skola) to every part with a school unit beneath it, and a duty at one to the part of the first school
    unit beneath it. A duty at a school unit of another part than its person's cannot be expressed by
    one source and is left out, with its activities' reference to it. A syllabus goes to every part
    with an activity of it."""
    records = list(records)
    unit_records = [r for r in records if r.kind is EntityKind.SCHOOL_UNIT]
    units = [r.key for r in unit_records]
    part_of_unit = {key: index * parts // max(1, len(units)) for index, key in enumerate(units)}
    parent_of = {r.key: r.data.get("parent") for r in records if r.kind is EntityKind.ORGANISATION}
    parts_of_organisation: dict[str, list[int]] = defaultdict(list)
    for unit_record in unit_records:  # every organisation above a unit, up the tree (cycle-safe)
        above, seen = unit_record.data.get("organisation"), set()
        while isinstance(above, str) and above in parent_of and above not in seen:
            seen.add(above)
            if part_of_unit[unit_record.key] not in parts_of_organisation[above]:
                parts_of_organisation[above].append(part_of_unit[unit_record.key])
            above = parent_of[above]
    for organisation, its_parts in parts_of_organisation.items():
        part_of_unit.setdefault(organisation, its_parts[0])
    first_duty_unit: dict[str, str] = {}
    for record in records:
        if record.kind is EntityKind.DUTY:
            first_duty_unit.setdefault(str(record.data["person"]), str(record.data["school_unit"]))
    part_of_person: dict[str, int] = {}
    for record in records:
        if record.kind is EntityKind.PERSON:
            known = [
                str(e["school_unit"]) for e in record.data.get("enrolments") or [] if e["school_unit"] in part_of_unit
            ]
            unit = known[0] if known else first_duty_unit.get(record.key)
            part_of_person[record.key] = (
                part_of_unit[unit] if unit in part_of_unit else sum(map(ord, record.key)) % parts
            )
    split: list[list[SourceRecord]] = [[] for _ in range(parts)]
    dropped_duties: set[str] = set()
    parts_of_syllabus: dict[str, set[int]] = defaultdict(set)
    for record in records:
        if record.kind is EntityKind.ACTIVITY and record.data.get("syllabus"):
            unit_part = part_of_unit.get(str(record.data.get("school_unit")), 0)
            parts_of_syllabus[str(record.data["syllabus"])].add(unit_part)
    for record in records:
        if record.kind is EntityKind.DUTY:
            part = part_of_unit.get(str(record.data["school_unit"]), part_of_person.get(str(record.data["person"]), 0))
            if part_of_person.get(str(record.data["person"]), part) != part:
                dropped_duties.add(record.key)
                continue
            split[part].append(record)
        elif record.kind is EntityKind.PERSON:
            split[part_of_person[record.key]].append(record)
        elif record.kind in (EntityKind.ORGANISATION, EntityKind.SCHOOL_UNIT_GROUP):
            for part in parts_of_organisation.get(record.key) or range(parts):
                split[part].append(record)
        elif record.kind is EntityKind.SYLLABUS:
            for part in sorted(parts_of_syllabus.get(record.key) or range(parts)):
                split[part].append(record)
        else:
            unit_key = str(record.data.get("school_unit") or record.key)
            part = part_of_unit.get(unit_key, 0)
            if record.kind is EntityKind.ACTIVITY and dropped_duties.intersection(record.data.get("teachers") or []):
                teachers = [t for t in record.data["teachers"] if t not in dropped_duties]
                record = SourceRecord(kind=record.kind, key=record.key, data={**record.data, "teachers": teachers})
            split[part].append(record)
    return split


# --- a little later: moves, leavers, new students ------------------------------------------------------


@dataclass(frozen=True)
class ChangeSet:
    """An organiser after a change: the whole new snapshot (``records``), what an incremental source
    would send (``changed``: new or changed records; ``deleted``), and which persons (keys) moved to
    another school unit, left or joined."""

    records: list[SourceRecord]
    changed: list[SourceRecord]
    deleted: list[SourceDeletion]
    moved: frozenset[str]
    left: frozenset[str]
    joined: frozenset[str]


def change_set(
    records: Iterable[SourceRecord],
    *,
    seed: int = 1,
    moves: float = 0.01,
    leavers: float = 0.01,
    joiners: float = 0.01,
    on: date | None = None,
) -> ChangeSet:
    """The organiser ``records`` a little later: ``moves`` of the placed students move to another school
    unit of the same school type that has their school year (a new enrolment from ``on``, their class
    and teaching groups there instead), ``leavers`` leave (gone from the source and their groups) and
    ``joiners`` (a share of the students) start in a class. Rates are shares of the placed students
    (at least one each when the rate is above 0). Deterministic for the same records, seed and day."""
    records = list(records)
    rng = random.Random(f"skolsynk-changes:{seed}")  # noqa: S311 - made-up data, not security
    day = (on or today()).isoformat()
    units = {r.key: r for r in records if r.kind is EntityKind.SCHOOL_UNIT}
    persons = {r.key: r for r in records if r.kind is EntityKind.PERSON}
    groups = {r.key: r for r in records if r.kind is EntityKind.GROUP}
    placed: dict[str, dict[str, Any]] = {}  # student key -> their enrolment at a known unit
    for person in persons.values():
        enrolments = [e for e in person.data.get("enrolments") or [] if e.get("school_unit") in units]
        if enrolments:
            placed[person.key] = enrolments[0]
    member_of: dict[str, list[str]] = defaultdict(list)
    classes: dict[tuple[str, int], list[str]] = defaultdict(list)  # (unit, year) -> class keys
    for group in groups.values():
        member_keys = [str(m["person"]) for m in group.data.get("memberships") or []]
        for member in member_keys:
            member_of[member].append(group.key)
        if group.data.get("group_type") == "Klass" and member_keys and member_keys[0] in placed:
            year_of_class = int(placed[member_keys[0]].get("school_year") or 0)
            classes[(str(group.data["school_unit"]), year_of_class)].append(group.key)

    def how_many(rate: float) -> int:
        return max(1, round(rate * len(placed))) if rate > 0 and placed else 0

    def targets(enrolment: dict[str, Any]) -> list[str]:
        """Other school units with a class of the student's year and their school type."""
        unit, year = str(enrolment["school_unit"]), int(enrolment.get("school_year") or 0)
        school_type = enrolment.get("school_type")
        return sorted(u for (u, y) in classes if u != unit and y == year and _unit_offers(units[u], school_type))

    offered: dict[tuple[str, int, Any], list[str]] = {}
    for enrolment in placed.values():
        cell = (str(enrolment["school_unit"]), int(enrolment.get("school_year") or 0), enrolment.get("school_type"))
        if cell not in offered:
            offered[cell] = targets(enrolment)
    movable = sorted(
        k
        for k, e in placed.items()
        if offered[(str(e["school_unit"]), int(e.get("school_year") or 0), e.get("school_type"))] and k in member_of
    )
    movers = rng.sample(movable, min(len(movable), how_many(moves)))
    staying = sorted(set(placed) - set(movers))
    leaving = rng.sample(staying, min(len(staying), how_many(leavers)))
    new_persons: dict[str, SourceRecord] = {}
    membership_changes: dict[str, set[str]] = defaultdict(set)  # group -> members to remove
    additions: dict[str, list[str]] = defaultdict(list)  # group -> members to add
    moved: list[str] = []
    for key in movers:
        enrolment = placed[key]
        year = int(enrolment.get("school_year") or 0)
        target = rng.choice(targets(enrolment))
        new_enrolment = {**enrolment, "school_unit": target, "start_date": day}
        person = persons[key]
        enrolments = [new_enrolment if e is enrolment else e for e in person.data["enrolments"]]
        new_persons[key] = SourceRecord(kind=person.kind, key=key, data={**person.data, "enrolments": enrolments})
        for group_key in member_of.get(key, []):
            membership_changes[group_key].add(key)
        additions[rng.choice(classes[(target, year)])].append(key)
        moved.append(key)
    for key in leaving:
        for group_key in member_of.get(key, []):
            membership_changes[group_key].add(key)
    # New students: like a random placed student of the same unit and year, as a new person.
    generator = _Generator(SIZES["S"], seed, Manifest(), SCHOOL_YEAR_START)
    generator.civic_numbers = {str(p.data.get("civic_no")) for p in persons.values()}
    some_eppn = next((str(p.data["eppn"][0]) for p in persons.values() if p.data.get("eppn")), "x@skola.example")
    generator.domain = some_eppn.rsplit("@", 1)[1]
    generator.local_parts = Counter(
        str(p.data["eppn"][0]).split("@")[0].rstrip("0123456789") for p in persons.values() if p.data.get("eppn")
    )
    generator.rng = rng
    generator.spec = replace(
        SIZES["S"],
        invalid_email_rate=0,
        duplicate_email_rate=0,
        duplicate_eppn_rate=0,
        missing_marking_rate=0,
        inactive_rate=0,
    )
    joined: list[str] = []
    cells = sorted(classes)
    for _ in range(how_many(joiners) if cells else 0):
        unit, year = rng.choice(cells)
        given, family, female = generator.names()
        data = generator.person(
            given,
            family,
            SCHOOL_YEAR_START.year - 6 - year,
            female,
            mail_domain=f"elev.{generator.domain}",
            email_type="Skola elev",
        )
        like = placed[next(m["person"] for m in groups[classes[(unit, year)][0]].data["memberships"])]
        data["enrolments"] = [{**like, "start_date": day}]
        key = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        new_persons[key] = SourceRecord(kind=EntityKind.PERSON, key=key, data=data)
        additions[rng.choice(classes[(unit, year)])].append(key)
        joined.append(key)
    new_groups: dict[str, SourceRecord] = {}
    for group_key in sorted(set(membership_changes) | set(additions)):
        group = groups[group_key]
        removed = membership_changes.get(group_key, set())
        members: list[dict[str, Any]] = [m for m in group.data.get("memberships") or [] if m["person"] not in removed]
        members += [{"person": p} for p in additions.get(group_key, [])]
        new_groups[group_key] = SourceRecord(
            kind=group.kind, key=group.key, data={**group.data, "memberships": members}
        )
    gone = set(leaving)
    result: list[SourceRecord] = []
    for record in records:
        if record.kind is EntityKind.PERSON and record.key in gone:
            continue
        replacement = new_persons.get(record.key) if record.kind is EntityKind.PERSON else None
        if record.kind is EntityKind.GROUP:
            replacement = new_groups.get(record.key)
        result.append(replacement or record)
    result += [new_persons[key] for key in joined]
    changed = [new_persons[k] for k in moved] + [new_persons[k] for k in joined] + list(new_groups.values())
    return ChangeSet(
        records=result,
        changed=changed,
        deleted=[SourceDeletion(kind=EntityKind.PERSON, key=key) for key in sorted(gone)],
        moved=frozenset(moved),
        left=frozenset(gone),
        joined=frozenset(joined),
    )


def _unit_offers(unit: SourceRecord, school_type: Any) -> bool:
    return school_type in (unit.data.get("school_types") or [])


def school_unit_codes(records: list[SourceRecord]) -> list[str]:
    return [str(r.data["school_unit_code"]) for r in records if r.kind is EntityKind.SCHOOL_UNIT]


def full_run(
    records: Iterable[SourceRecord],
    *,
    source_id: str,
    source_kind: str,
    page_size: int = 500,
    run_id: uuid.UUID | None = None,
) -> Iterator[MessageContract]:
    """The messages of a complete, healthy full snapshot of ``records`` (a stream stays a stream: pages
    are made as they are sent)."""
    run_id = run_id or uuid.uuid4()
    yield SourceRunStarted(
        run_id=run_id, source_id=source_id, source_kind=source_kind, mode="full", started_at=datetime.now(UTC)
    )
    counts: dict[EntityKind, int] = {}
    number = 0
    for page in pages(records, page_size):
        for record in page:
            counts[record.kind] = counts.get(record.kind, 0) + 1
        yield SourceRecordPage(run_id=run_id, source_id=source_id, page=number, records=page)
        number += 1
    if number == 0:
        yield SourceRecordPage(run_id=run_id, source_id=source_id, page=0, records=[])
        number = 1
    yield SourceRunCompleted(run_id=run_id, source_id=source_id, pages=number, counts=counts, healthy=True)


def incremental_run(
    changed: Iterable[SourceRecord],
    deleted: Iterable[SourceDeletion],
    *,
    source_id: str,
    source_kind: str,
    page_size: int = 500,
    run_id: uuid.UUID | None = None,
) -> Iterator[MessageContract]:
    """The messages of an incremental run: changed records first, deletions after (as connectors send
    them), in pages of ``page_size``."""
    run_id = run_id or uuid.uuid4()
    yield SourceRunStarted(
        run_id=run_id, source_id=source_id, source_kind=source_kind, mode="incremental", started_at=datetime.now(UTC)
    )
    record_pages = list(pages(changed, page_size))
    deletion_list = list(deleted)
    deletion_pages = [deletion_list[i : i + page_size] for i in range(0, len(deletion_list), page_size)]
    number = 0
    for page in record_pages:
        yield SourceRecordPage(run_id=run_id, source_id=source_id, page=number, records=page)
        number += 1
    for chunk in deletion_pages:
        yield SourceRecordPage(run_id=run_id, source_id=source_id, page=number, deletions=chunk)
        number += 1
    if number == 0:
        yield SourceRecordPage(run_id=run_id, source_id=source_id, page=0)
        number = 1
    yield SourceRunCompleted(run_id=run_id, source_id=source_id, pages=number, healthy=True)


def today() -> date:
    return datetime.now(UTC).date()


def without_person(records: Iterable[SourceRecord], key: str) -> list[SourceRecord]:
    """The organiser without one person (a leaver): their record and their group memberships."""
    kept = []
    for record in records:
        if record.key == key:
            continue
        if record.kind is EntityKind.GROUP:
            members = [m for m in record.data["memberships"] if m["person"] != key]
            record = SourceRecord(kind=record.kind, key=record.key, data={**record.data, "memberships": members})
        kept.append(record)
    return kept
