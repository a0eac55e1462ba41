"""The Swedish catalogue (admin/ui/sv.json) has every text the admin UI asks for: each key that the
templates' t()/plural() and the Python code's text()/plural()/section() name (a key built from a prefix,
``t('run_modes.' ~ mode)``, needs its section with keys so starting), and every plural has both Swedish forms."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from skolsynk_services.admin.auth import Role
from skolsynk_services.admin.models import SourceKind
from skolsynk_services.admin.ui.catalogue import catalogue, lookup
from skolsynk_services.admin.ui.texts import SOURCE_FORMS

pytestmark = pytest.mark.unit

ADMIN = Path(__file__).resolve().parents[2] / "services" / "skolsynk_services" / "admin"
TEMPLATE_CALL = re.compile(r"""\b(t|plural)\(\s*(['"])([^'"]+)\2""")
PYTHON_CALL = re.compile(r"""\b(text|plural|section)\(\s*(f?)(['"])([^'"]+)\3""")


def used_keys() -> list[tuple[str, str]]:
    """(where, key) of every literal catalogue key; a plural's key is under "plural.", a key that code
    completes (an f-string or a Jinja concatenation) is its fixed start and a "*"."""
    found: list[tuple[str, str]] = []
    for template in sorted((ADMIN / "templates").glob("*.html")):
        source = template.read_text(encoding="utf-8")
        for match in TEMPLATE_CALL.finditer(source):
            call, key = match.group(1), match.group(3)
            rest = source[match.end() :].lstrip()
            if rest.startswith("~"):  # 'run_modes.' ~ mode: the section must be there ('kinds_' ~ kind: a key so named)
                key += "*"
            found.append((template.name, ("plural." if call == "plural" else "") + key))
    for module in sorted(ADMIN.rglob("*.py")):
        for match in PYTHON_CALL.finditer(module.read_text(encoding="utf-8")):
            call, formatted, key = match.group(1), match.group(2), match.group(4)
            if formatted and "{" in key:
                key = key.split("{", 1)[0] + "*"
            found.append((str(module.relative_to(ADMIN)), ("plural." if call == "plural" else "") + key))
    return found


def test_every_key_the_templates_and_the_code_use_is_in_the_catalogue() -> None:
    keys = used_keys()
    assert len(keys) > 150  # the scan finds the calls (a broken pattern would find none and pass)
    assert ("log.html", "log.search") in keys
    assert ("ui/chart.py", "plural.chart_runs") in keys
    missing = []
    for where, key in keys:
        section_key, _, start = key.removesuffix("*").rpartition(".") if key.endswith("*") else (key, "", "")
        try:
            entry = lookup(section_key)
        except KeyError:
            missing.append(f"{where}: {key}")
            continue
        if key.endswith("*") and not (isinstance(entry, dict) and any(k.startswith(start) for k in entry)):
            missing.append(f"{where}: {key} (no section with such keys)")
    assert not missing, "add these to admin/ui/sv.json:\n" + "\n".join(missing)


def test_every_plural_has_its_one_and_other_form() -> None:
    plurals = catalogue()["plural"]
    assert len(plurals) > 20
    broken = [
        key
        for key, forms in plurals.items()
        if not isinstance(forms, dict) or not all(isinstance(forms.get(form), str) for form in ("one", "other"))
    ]
    assert not broken, f"plurals without both 'one' and 'other': {broken}"


def test_every_role_and_source_kind_has_its_words() -> None:
    assert {role.value for role in Role} <= set(catalogue()["roles"])
    kinds = {kind.value for kind in SourceKind}
    assert kinds <= set(catalogue()["source_kinds"])
    assert set(SOURCE_FORMS) == kinds
    assert all(field.label for fields in SOURCE_FORMS.values() for field in fields)
