"""Everything the repository cites is in the repository.

The device protocol, the HTTP API, the scenario format and the sharing rules are pages
of docs/ (device-protocol.md, http-api.md, scenario-format.md, sharing-models.md); no
file may send a reader to a document the repository does not have, and every link
between the docs pages must lead to a page that exists.  The docs also name the tests
that prove each promise (docs/threat-model.md lists them for every threat): when a test is
renamed or moved, a page would silently point at nothing, so every named test must exist.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from click.testing import CliRunner

from hub.cli import main
from tests.helpers import REPO

# Written in pieces so that this file does not match itself.
GONE = ("CONTRACT" + ".md", "PEERCONOMY" + ".md", ".." + "/shared")
SKIP_DIRS = {".git", ".venv", "node_modules", "__pycache__", ".pytest_cache", ".ruff_cache"}
PAGES = ("device-protocol.md", "http-api.md", "scenario-format.md", "sharing-models.md")


def _files() -> list[Path]:
    found = []
    for path in REPO.rglob("*"):
        parts = set(path.relative_to(REPO).parts)
        if parts & SKIP_DIRS or any(p.endswith(".egg-info") for p in parts):
            continue
        if path.is_file():
            found.append(path)
    return found


def test_no_file_cites_a_document_outside_the_repository():
    mentions = []
    for path in _files():
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue  # images, databases: no prose to point anywhere
        for number, line in enumerate(text.splitlines(), 1):
            if any(gone in line for gone in GONE):
                mentions.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert mentions == []


def test_the_contract_pages_exist_and_the_docs_links_resolve():
    docs = REPO / "docs"
    for page in PAGES:
        assert (docs / page).read_text(encoding="utf-8").startswith("# ")
    broken = []
    for page in docs.glob("*.md"):
        for target in re.findall(r"\]\(([^)#\s]+\.md)(?:#[^)]*)?\)", page.read_text()):
            if "://" not in target and not (page.parent / target).exists():
                broken.append(f"{page.name} -> {target}")
    assert broken == []


def test_the_cli_help_points_into_the_repository():
    """``peershop simulate --help`` names the page that describes its output."""
    result = CliRunner().invoke(main, ["simulate", "--help"])
    assert result.exit_code == 0
    assert "docs/scenario-format.md" in result.output
    assert not any(gone in result.output for gone in GONE)


PAGES = [*sorted((REPO / "docs").rglob("*.md")), REPO / "README.md"]
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
            target = REPO / path
            where = f"{page.relative_to(REPO)}: {path}" + (f"::{name}" if name else "")
            if not target.is_file():
                missing.append(f"{where} (no such file)")
            elif name and name not in _names(target):
                missing.append(f"{where} (no such test)")
    assert checked > 30, "the docs should name the tests behind the threat model"
    assert not missing, "the docs name tests that do not exist:\n" + "\n".join(missing)
