"""Search and paging for every long list in the UI: ``?q=`` filters, ``?sida=`` picks the page; the page
shows its position ("Visar 51-100 av 730", with an en dash) and links to the pages around it (the ``pager`` macro).

Lists the service already holds in memory are cut here (``paged``); lists read from the store page there
with ``skip``/``limit`` and a count (``paged_in_store``, or their own :class:`Paging` with
``Paging(number, size, total)``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from aiohttp import web

T = TypeVar("T")

#: Rows per page unless a list says otherwise.
PAGE_SIZE = 50
#: The query parameters the pager reads: the search text and the page number (1-based).
SEARCH, PAGE = "q", "sida"


def page_number(request: web.Request) -> int:
    """The requested page (1 when absent or not a positive number)."""
    try:
        return max(1, int(request.query.get(PAGE, "1")))
    except ValueError:
        return 1


def search_text(request: web.Request) -> str:
    return request.query.get(SEARCH, "").strip()[:200]


@dataclass(frozen=True)
class Paging:
    """Where a page is in its list: ``number`` (1-based, clamped to the last page), ``size`` rows each,
    ``total`` rows in all, and the query (filters, search) every page link keeps."""

    number: int
    size: int
    total: int
    query: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "number", max(1, min(self.number, self.pages)))

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.size))

    @property
    def skip(self) -> int:
        return (self.number - 1) * self.size

    @property
    def first(self) -> int:
        return 0 if self.total == 0 else self.skip + 1

    @property
    def last(self) -> int:
        return min(self.total, self.skip + self.size)

    def link(self, number: int) -> dict[str, str]:
        """The query of page ``number`` (filters kept)."""
        return {**self.query, PAGE: str(number)}

    def around(self, width: int = 2) -> list[int | None]:
        """The page numbers to link: first, last and ``width`` either side of this one; None is a gap."""
        wanted = sorted({1, self.pages, *range(self.number - width, self.number + width + 1)})
        shown: list[int | None] = []
        for n in (n for n in wanted if 1 <= n <= self.pages):
            last = shown[-1] if shown else None
            if last is not None and n - last > 1:
                shown.append(None)
            shown.append(n)
        return shown


def paged(
    request: web.Request,
    rows: Sequence[T],
    *,
    size: int = PAGE_SIZE,
    matches: Callable[[T, str], bool] | None = None,
    keep: tuple[str, ...] = (),
) -> tuple[list[T], Paging]:
    """One page of ``rows`` for this request: filtered by the search text when ``matches`` is given
    (case-insensitive: it gets the lowered text), then cut. ``keep`` names further query parameters
    (filters) the page links carry."""
    text = search_text(request)
    if matches is not None and text:
        lowered = text.lower()
        rows = [row for row in rows if matches(row, lowered)]
    query = {name: request.query[name] for name in keep if request.query.get(name)}
    if text:
        query[SEARCH] = text
    paging = Paging(page_number(request), size, len(rows), query)
    return list(rows[paging.skip : paging.skip + paging.size]), paging


async def paged_in_store(
    request: web.Request,
    fetch: Callable[[str, int, int], Awaitable[tuple[list[T], int]]],
    *,
    size: int = PAGE_SIZE,
    keep: tuple[str, ...] = (),
) -> tuple[list[T], Paging]:
    """One page of a list the store pages: ``fetch(search, skip, limit)`` returns that page's rows and how
    many rows match in all. A page past the last (the list shrank) is fetched again as the last page."""
    text = search_text(request)
    query = {name: request.query[name] for name in keep if request.query.get(name)}
    if text:
        query[SEARCH] = text
    wanted = page_number(request)
    rows, total = await fetch(text, (wanted - 1) * size, size)
    paging = Paging(wanted, size, total, query)
    if paging.number != wanted:
        rows, total = await fetch(text, paging.skip, size)
        paging = Paging(paging.number, size, total, query)
    return rows, paging
