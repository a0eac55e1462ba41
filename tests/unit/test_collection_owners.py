"""Every MongoDB collection is named once: by a constant in its owner module in ``skolsynk.storage``
(the inbox and outbox in ``skolsynk.messaging``), which offers the queries other components need.
Everything else imports the constant or calls the owner's repository. The owners are the "owner
module" column of "What is stored where" in docs/architecture.md.

The scan reads every module of ``libs/`` and ``services/`` and fails on:

* a collection's name spelled outside its owner module: as a constant (``X = "runs"``), in a
  collection position (``db["x"]``, ``database["x"]``, ``get_collection("x")``, ``IndexSpec("x", ...)``,
  ``collection_name = "x"``, ``super().__init__(db, "x")``), or, for a name that is no ordinary word
  (``run_pages``, ``dq_findings``, ...), anywhere at all;
* a name spelled more than once in its owner module, or not as a module-level constant there;
* a collection position naming a collection the table does not know (a new collection needs an owner
  module and a row in the table). A constant in a collection position is followed to the literal it
  stands for, through aliases and imports, so ``db[FOO]`` with ``FOO = "foo"`` in any module counts.

Ordinary words (``runs``, ``holds``, ``entities``, ...) are also a CLI command, an API tag, a JSON key;
those uses are left alone, and so are the admin UI's route names (``route(path, "erasure_requests")``).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
SCANNED = ("libs", "services")
#: Packages an owner module may live in.
OWNER_PACKAGES = ("skolsynk.storage.", "skolsynk.messaging.")
#: Calls whose first argument (or ``collection=``; ``name=`` but for ``IndexSpec``) is a collection's name.
COLLECTION_CALLS = frozenset({"get_collection", "create_collection", "drop_collection", "IndexSpec"})
#: Calls whose string arguments are the admin UI's route names (aiohttp named resources), not collections.
ROUTE_CALLS = frozenset({"route", "url"})


@dataclass(frozen=True)
class Spelling:
    module: str
    line: int
    name: str
    #: Stands in a collection position (itself, or through the constants that hold it).
    as_collection: bool
    #: Assigned to a name (a constant), and whether at module level.
    assigned: bool
    module_level: bool
    #: An argument of :data:`ROUTE_CALLS`.
    route_name: bool = False


@dataclass
class Module:
    name: str
    tree: ast.Module
    #: ``X = "literal"``, anywhere in the module.
    constants: dict[str, ast.Constant] = field(default_factory=dict)
    #: Module-level ``X = Y`` and ``X = m.Y``.
    aliases: dict[str, ast.expr] = field(default_factory=dict)
    #: ``from a import b as c``: c -> (a, b).
    imports: dict[str, tuple[str, str]] = field(default_factory=dict)


def _identifier(node: ast.expr) -> str:
    """``x`` of ``x`` and of ``a.b.x``."""
    return node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else ""


def _db_like(node: ast.expr) -> bool:
    name = _identifier(node)
    return name in ("db", "database") or name.endswith(("_db", "_database"))


def _literal(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and isinstance(node.value, str) and bool(node.value)


def _assigned(node: ast.AST) -> tuple[str, ast.expr] | None:
    """``(X, value)`` of ``X = value``."""
    if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
        return node.targets[0].id, node.value
    return None


def load(name: str, source: str) -> Module:
    module = Module(name, ast.parse(source))
    for node in ast.walk(module.tree):
        assignment = _assigned(node)
        if assignment is not None and isinstance(assignment[1], ast.Constant) and _literal(assignment[1]):
            module.constants.setdefault(assignment[0], assignment[1])
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                module.imports[alias.asname or alias.name] = (node.module, alias.name)
    for stmt in module.tree.body:
        assignment = _assigned(stmt)
        if assignment is not None and isinstance(assignment[1], ast.Name | ast.Attribute):
            module.aliases[assignment[0]] = assignment[1]
    return module


def resolve(modules: Mapping[str, Module], module: Module, expr: ast.expr, depth: int = 0) -> ast.Constant | None:
    """The string literal ``expr`` stands for, followed through constants, aliases and imports."""
    if depth > 10:
        return None
    if isinstance(expr, ast.Constant):
        return expr if _literal(expr) else None
    if isinstance(expr, ast.Name):
        return _resolve_name(modules, module, expr.id, depth)
    if isinstance(expr, ast.Attribute) and isinstance(expr.value, ast.Name):
        imported = module.imports.get(expr.value.id)
        target = modules.get(".".join(imported)) if imported else None
        if target is not None:
            return _resolve_name(modules, target, expr.attr, depth + 1)
    return None


def _resolve_name(modules: Mapping[str, Module], module: Module, name: str, depth: int) -> ast.Constant | None:
    if name in module.constants:
        return module.constants[name]
    if name in module.aliases:
        return resolve(modules, module, module.aliases[name], depth + 1)
    if name in module.imports:
        source, attribute = module.imports[name]
        target = modules.get(source)
        if target is not None:
            return _resolve_name(modules, target, attribute, depth + 1)
    return None


def _collection_positions(tree: ast.AST) -> list[ast.expr]:
    """Expressions that name a collection."""
    found: list[ast.expr] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Subscript) and _db_like(node.value):
            found.append(node.slice)
        elif isinstance(node, ast.Call):
            name = _identifier(node.func)
            if name in COLLECTION_CALLS:
                found += node.args[:1]
                keywords = ("collection",) if name == "IndexSpec" else ("collection", "name")
                found += [k.value for k in node.keywords if k.arg in keywords]
            elif name == "__init__" and len(node.args) >= 2 and _db_like(node.args[0]):
                found.append(node.args[1])
        elif isinstance(node, ast.Assign | ast.AnnAssign) and node.value is not None:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(_identifier(t) == "collection_name" for t in targets):
                found.append(node.value)
    return found


def spellings(sources: Mapping[str, str], known: Mapping[str, str]) -> list[Spelling]:
    """Every string literal of these modules (name -> source) that names a collection: the known names
    anywhere, and whatever stands in a collection position."""
    modules = {name: load(name, source) for name, source in sources.items()}
    positioned: set[int] = set()
    for module in modules.values():
        for expr in _collection_positions(module.tree):
            literal = resolve(modules, module, expr)
            if literal is not None:
                positioned.add(id(literal))
    found: list[Spelling] = []
    for module in modules.values():
        parents = {child: node for node in ast.walk(module.tree) for child in ast.iter_child_nodes(node)}
        module_level = {id(stmt) for stmt in module.tree.body}
        for node in ast.walk(module.tree):
            if not (isinstance(node, ast.Constant) and _literal(node)):
                continue
            if node.value not in known and id(node) not in positioned:
                continue
            parent = parents.get(node)
            assigned = isinstance(parent, ast.Assign | ast.AnnAssign) and parent.value is node
            route_name = (
                isinstance(parent, ast.Call) and _identifier(parent.func) in ROUTE_CALLS and node in parent.args
            )
            found.append(
                Spelling(
                    module.name,
                    node.lineno,
                    node.value,
                    as_collection=id(node) in positioned,
                    assigned=assigned,
                    module_level=assigned and id(parent) in module_level,
                    route_name=route_name,
                )
            )
    return found


def violations(found: list[Spelling], owners: Mapping[str, str]) -> list[str]:
    problems = []
    for s in found:
        where = f"{s.module}:{s.line}"
        owner = owners.get(s.name)
        if owner is None:
            problems.append(f"{where}: collection {s.name!r} has no owner module (docs/architecture.md)")
        elif s.module != owner and (s.as_collection or s.assigned or ("_" in s.name and not s.route_name)):
            problems.append(f"{where}: {s.name!r} is spelled outside its owner {owner}: import the constant")
    for name, owner in sorted(owners.items()):
        at_owner = [s for s in found if s.name == name and s.module == owner]
        if len(at_owner) != 1 or not at_owner[0].module_level:
            problems.append(f"{owner}: {name!r} must be spelled exactly once there, as a module-level constant")
    return problems


def owners_from_docs() -> dict[str, str]:
    """collection -> owner module, from the table "What is stored where" in docs/architecture.md."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    section = text.split("## What is stored where", 1)[1].split("\n## ", 1)[0]
    owners: dict[str, str] = {}
    for line in section.splitlines():
        if not line.startswith("| `"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        names = re.findall(r"`([a-z0-9_]+)`", cells[0])
        modules = re.findall(r"`(skolsynk\.[a-z0-9_.]+)`", cells[1])
        assert len(modules) == 1, f"docs/architecture.md: the row of {names} names no single owner module"
        for name in names:
            assert name not in owners, f"docs/architecture.md lists {name} twice"
            owners[name] = modules[0]
    return owners


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts[1:]  # without libs/ or services/
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def sources() -> dict[str, str]:
    return {module_name(p): p.read_text() for top in SCANNED for p in sorted((ROOT / top).rglob("*.py"))}


def test_the_table_names_an_owner_module_in_storage_or_messaging_for_every_collection() -> None:
    owners = owners_from_docs()
    assert len(owners) >= 25
    for name, owner in owners.items():
        assert owner.startswith(OWNER_PACKAGES), f"{name}: owner {owner} is not in skolsynk.storage/messaging"
        path = ROOT / "libs" / Path(*owner.split(".")).with_suffix(".py")
        assert path.is_file(), f"{name}: no module {owner}"


def test_every_collection_is_named_once_by_its_owner() -> None:
    owners = owners_from_docs()
    problems = violations(spellings(sources(), owners), owners)
    assert not problems, "\n".join(problems)


# The scan itself, on small modules.

OWNERS = {"runs": "skolsynk.storage.runs", "run_pages": "skolsynk.storage.runs"}
OWNER_SOURCE = 'RUNS = "runs"\nRUN_PAGES = "run_pages"\n\ndef f(db):\n    return db[RUNS], db[RUN_PAGES]\n'


@pytest.mark.parametrize(
    ("source", "problem"),
    [
        ('RUNS = "runs"\n', "'runs' is spelled outside its owner"),
        ('def f(db):\n    return db["run_pages"]\n', "'run_pages' is spelled outside its owner"),
        ('def f(app):\n    return app.db["runs"].find()\n', "'runs' is spelled outside its owner"),
        ('COUNTS = {}\nCOUNTS["run_pages"] = 1\n', "'run_pages' is spelled outside its owner"),
        ('X = IndexSpec("runs", [("a", 1)], name="a")\n', "'runs' is spelled outside its owner"),
        ('def f(db):\n    return db.get_collection("runs")\n', "'runs' is spelled outside its owner"),
        ('class S:\n    collection_name = "runs"\n', "'runs' is spelled outside its owner"),
        ('def f(self, db):\n    super().__init__(db, "runs")\n', "'runs' is spelled outside its owner"),
        ('STATE = "things"\ndef f(db):\n    return db[STATE]\n', "collection 'things' has no owner module"),
        ('def f(database):\n    return database["things"]\n', "collection 'things' has no owner module"),
        ("from skolsynk.a import B\nC = B\ndef f(db):\n    return db[C]\n", "collection 'things' has no owner"),
        ("from skolsynk import a\ndef f(db):\n    return IndexSpec(a.A, [])\n", "collection 'things' has no owner"),
    ],
)
def test_the_scan_finds_a_collection_spelled_outside_its_owner(source: str, problem: str) -> None:
    found = spellings(
        {
            "skolsynk.storage.runs": OWNER_SOURCE,
            "skolsynk.a": 'A = "things"\nB = A\n',
            "skolsynk_services.elsewhere": source,
        },
        OWNERS,
    )
    assert any(problem in p for p in violations(found, OWNERS)), violations(found, OWNERS)


def test_the_scan_leaves_ordinary_words_alone_and_accepts_the_owner() -> None:
    elsewhere = (
        "from skolsynk.storage.runs import RUNS\nfrom skolsynk.storage import runs\n\n"
        'def g(db, data, cli):\n    cli.add_parser("runs")\n    route("/p", "run_pages")\n'
        '    return db[RUNS], db[runs.RUN_PAGES], data["runs"]\n'
    )
    found = spellings({"skolsynk.storage.runs": OWNER_SOURCE, "skolsynk_services.elsewhere": elsewhere}, OWNERS)
    assert violations(found, OWNERS) == []


def test_the_scan_wants_the_owner_to_spell_the_name_once() -> None:
    owner_source = 'RUNS = "runs"\nRUN_PAGES = "run_pages"\n\ndef f(db):\n    return db["runs"]\n'
    problems = violations(spellings({"skolsynk.storage.runs": owner_source}, OWNERS), OWNERS)
    assert problems == ["skolsynk.storage.runs: 'runs' must be spelled exactly once there, as a module-level constant"]
