"""axe-core in the browser tests: the WCAG levels every admin UI page must pass (A and AA of WCAG 2.0,
2.1 and 2.2) and the violations on the page on screen, each named with its rule, impact, help and the
first elements it found."""

from __future__ import annotations

from axe_playwright_python.async_playwright import Axe
from playwright.async_api import Page

#: The WCAG levels axe-core checks (its rule tags).
WCAG = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa"]


async def axe_violations(page: Page, name: str, axe: Axe | None = None) -> list[str]:
    """The WCAG A/AA violations on the page now, each line starting with ``name`` (the page's name)."""
    results = await (axe or Axe()).run(
        page, options={"runOnly": {"type": "tag", "values": WCAG}, "resultTypes": ["violations"]}
    )
    return [
        f"{name}: axe {v['id']} ({v['impact']}): {v['help']} at "
        + "; ".join(", ".join(node["target"]) for node in v["nodes"][:3])
        for v in results.response["violations"]
    ]


async def no_axe_violations(page: Page, name: str, axe: Axe | None = None) -> None:
    found = await axe_violations(page, name, axe)
    assert not found, "\n".join(found)
