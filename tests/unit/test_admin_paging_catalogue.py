"""The UI's paging arithmetic and its Swedish catalogue: plurals, placeholders, missing keys."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import make_mocked_request

from skolsynk_services.admin.ui.catalogue import plural, section, text
from skolsynk_services.admin.ui.paging import Paging, paged


def test_swedish_plurals_use_the_singular_only_for_one() -> None:
    assert plural("school_units", 1) == "1 skolenhet"
    assert plural("school_units", 0) == "0 skolenheter"
    assert plural("deletions_waiting", 1) == "1 radering väntar"
    assert plural("persons", 12345).endswith("personer")


def test_texts_fill_placeholders_and_name_a_missing_key() -> None:
    assert text("paging.showing", first=1, last=50, total=730) == "Visar 1\u201350 av 730"
    with pytest.raises(KeyError, match=r"paging\.nope"):
        text("paging.nope")
    with pytest.raises(KeyError):
        text("paging")  # a section, not a text
    assert "next" in section("paging")


def test_paging_clamps_and_shows_the_pages_around_this_one() -> None:
    paging = Paging(number=9, size=50, total=730)
    assert (paging.pages, paging.first, paging.last) == (15, 401, 450)
    assert paging.around() == [1, None, 7, 8, 9, 10, 11, None, 15]
    assert Paging(number=99, size=50, total=120).number == 3
    assert Paging(number=1, size=50, total=0).first == 0


def test_paged_filters_by_search_and_keeps_the_filters_in_links() -> None:
    request = make_mocked_request("GET", "/ui/t/x/quality?q=ALMA&sida=2&code=email.invalid")
    rows = [f"alma {i}" for i in range(60)] + ["bertil"]
    page, paging = paged(request, rows, size=25, matches=lambda row, q: q in row, keep=("code",))
    assert paging.total == 60
    assert page[0] == "alma 25"
    assert len(page) == 25
    assert paging.link(3) == {"code": "email.invalid", "q": "ALMA", "sida": "3"}
