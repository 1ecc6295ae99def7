"""The docs name the tests that prove each promise; a named test must exist.

docs/threat-model.md lists, for every threat, the tests that show it is closed, and other
pages point readers at tests too.  When a test is renamed or a file moves, the docs would
silently point at nothing; this test fails instead, naming the page and the reference.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGES = [*sorted((ROOT / "docs").rglob("*.md")), ROOT / "README.md"]
# `tests/x.py`, `tests/x.py::test_a` or `::test_b` (the same file as the last one named)
REFERENCE = re.compile(r"`(tests/[\w/.-]+\.py)(?:::(\w+))?`|`::(\w+)`")


def _names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {
        node.name
        for node in ast.walk(tree)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
    }


def _references(page: Path) -> list[tuple[str, str | None]]:
    found: list[tuple[str, str | None]] = []
    last_file: str | None = None
    for match in REFERENCE.finditer(page.read_text(encoding="utf-8")):
        path, name, tail = match.groups()
        if path:
            last_file = path
            found.append((path, name))
        elif last_file is not None:
            found.append((last_file, tail))
    return found


def test_every_test_the_docs_name_exists() -> None:
    missing = []
    checked = 0
    for page in PAGES:
        for path, name in _references(page):
            checked += 1
            target = ROOT / path
            where = f"{page.relative_to(ROOT)}: {path}" + (f"::{name}" if name else "")
            if not target.is_file():
                missing.append(f"{where} (no such file)")
            elif name and name not in _names(target):
                missing.append(f"{where} (no such test)")
    assert checked > 30, "the docs should name the tests behind the threat model"
    assert not missing, "the docs name tests that do not exist:\n" + "\n".join(missing)
