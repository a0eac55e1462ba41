"""No store query on a hot path carries an index hint.

The Mongo wire server (the embedded default of the demo, the tests and CI) serves a filter on exactly an
index's fields as a range of that index, but for a hinted query it walks the whole index, every tenant's
documents, and decodes each (``_candidates_from_hint``), while its ``explain`` names the index either way:
the explain tests cannot tell. MongoDB does not mind either way. So skolsynk asks with an index's own
fields and checks anything further on what was found, and hints only where this list says why.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

#: (file, function) -> why a hint is acceptable there (none is on a sync's path).
ALLOWED = {
    ("libs/skolsynk/storage/deliveries.py", "listed"): "the admin's paged ledger list, sorted and counted in the store",
    ("libs/skolsynk/storage/entities.py", "find_persons"): "the admin's person search, a regex over names",
    ("libs/skolsynk/storage/holds.py", "holding"): "a vendor's holds of a tenant: a handful of documents",
}


def _hinted_calls(path: Path) -> list[tuple[str, int]]:
    """(enclosing function, line) of every ``.hint(...)`` call and ``hint=`` keyword in a store call."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: list[tuple[str, int]] = []

    def visit(node: ast.AST, function: str) -> None:
        for child in ast.iter_child_nodes(node):
            name = child.name if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef) else function
            if isinstance(child, ast.Call):
                is_hint = isinstance(child.func, ast.Attribute) and child.func.attr == "hint"
                has_hint = any(k.arg == "hint" for k in child.keywords) and isinstance(child.func, ast.Attribute)
                if is_hint or (has_hint and child.func.attr in STORE_CALLS):
                    found.append((name, child.lineno))
            visit(child, name)

    visit(tree, "<module>")
    return found


STORE_CALLS = {"find", "find_one", "count_documents", "delete_many", "delete_one", "update_many", "update_one",
               "aggregate", "distinct", "replace_one", "find_one_and_update", "find_one_and_delete"}  # fmt: skip


def test_store_queries_carry_no_hint_except_where_allowed():
    hinted = {
        (str(path.relative_to(ROOT)), function, line)
        for folder in ("libs", "services")
        for path in sorted((ROOT / folder).rglob("*.py"))
        for function, line in _hinted_calls(path)
    }
    unexplained = sorted(h for h in hinted if (h[0], h[1]) not in ALLOWED)
    assert not unexplained, (
        "hinted store queries (the Mongo wire server walks the whole index for them): ask with the index's own "
        f"fields instead, or add to ALLOWED with why: {unexplained}"
    )
    assert {(f, fn) for f, fn, _ in hinted} <= set(ALLOWED)


def test_the_check_finds_a_hint(tmp_path: Path):
    source = tmp_path / "hinted.py"
    source.write_text(
        "async def lookup(collection):\n"
        "    await collection.find({'a': 1}).hint('by_a').to_list(None)\n"
        "    await collection.delete_many({'a': 1}, hint='by_a')\n"
        "    await collection.find({'a': 1}).to_list(None)\n",
        encoding="utf-8",
    )
    assert _hinted_calls(source) == [("lookup", 2), ("lookup", 3)]
