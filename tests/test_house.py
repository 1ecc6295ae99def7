"""The house keeps its plan (docs/architecture.md): checks import-linter cannot make.

Every import in hub/, web/, devices/ and firmware_bridge/ is read with :mod:`ast`, the
ones inside functions too, so a circle cannot hide behind a late import:

* the import graph (the CLI aside, which may import everything) has no cycle;
* nothing imports hub/cli/, the composition root;
* no module of hub/ or web/ is over 800 lines;
* hub/rules/ and hub/peerconomy/ import no SQLAlchemy, paho, click or Flask and read
  no clock (they take ``now``);
* an import inside a function says why on its line (an optional dependency, start-up
  time, hardware loaded on use);
* the pages of web/ that read through hub/'s query functions import no SQLAlchemy and
  no models.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("hub", "web", "devices", "firmware_bridge")
MAX_LINES = 800
PURE = ("hub.rules", "hub.peerconomy")
IMPURE_LIBRARIES = ("sqlalchemy", "alembic", "paho", "click", "flask", "werkzeug")
# Reading the clock: the pure layers take `now` instead.
# web/ modules whose reads are query functions of hub/store/ and hub/ledger/: no SQL of
# their own (web/state.py keeps the session factory, so it may name SQLAlchemy's types).
READ_THROUGH_QUERIES = {
    "web.floor": ("sqlalchemy", "hub.store.models"),
    "web.views": ("sqlalchemy", "hub.store.models"),
    "web.tasks": ("sqlalchemy", "hub.store.models"),
    "web.period": ("sqlalchemy", "hub.store.models"),
    "web.me": ("sqlalchemy", "hub.store.models"),
    "web.api": ("sqlalchemy", "hub.store.models"),
    "web.admin": ("sqlalchemy", "hub.store.models"),
    "web.metrics": ("sqlalchemy", "hub.store.models"),
    "web.state": ("hub.store.models",),
}
CLOCK_CALLS = {
    ("datetime", "now"),
    ("datetime", "utcnow"),
    ("datetime", "today"),
    ("date", "today"),
    ("time", "time"),
    ("time", "monotonic"),
    ("time", "time_ns"),
    ("time", "localtime"),
    ("time", "gmtime"),
}


@dataclass(frozen=True)
class Import:
    source: str  # the importing module
    target: str  # the imported module (a module of the four packages, or a library's name)
    line: int
    in_function: bool
    text: str  # the source line


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def source_files() -> list[Path]:
    files = []
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            if "migrations" in path.parts and "versions" in path.parts:
                continue  # Alembic's revisions: run by Alembic, imported by no module
            files.append(path)
    return files


MODULES = {module_name(p): p for p in source_files()}


def _resolve(name: str) -> str:
    """The longest module of the four packages that ``name`` is or lies in."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name


def imports_of(path: Path) -> list[Import]:
    source = module_name(path)
    is_package = path.name == "__init__.py"
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    found: list[Import] = []

    def add(target: str, node: ast.stmt, in_function: bool) -> None:
        found.append(Import(source, target, node.lineno, in_function, lines[node.lineno - 1]))

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inside = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            if isinstance(child, ast.Import):
                for alias in child.names:
                    add(_resolve(alias.name) or alias.name, child, in_function)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = source if is_package else source.rpartition(".")[0]
                    for _ in range(child.level - 1):
                        base = base.rpartition(".")[0]
                    module = f"{base}.{child.module}" if child.module else base
                else:
                    module = child.module or ""
                for alias in child.names:
                    # `from hub.ledger import periods` imports the module hub.ledger.periods
                    sub = f"{module}.{alias.name}"
                    target = sub if sub in MODULES else (_resolve(module) or module)
                    add(target, child, in_function)
            visit(child, inside)

    visit(ast.parse(text), False)
    return found


ALL_IMPORTS = [i for p in MODULES.values() for i in imports_of(p)]


def _in(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def test_the_import_graph_has_no_cycle_counting_imports_inside_functions():
    graph: dict[str, set[str]] = {m: set() for m in MODULES if not _in(m, "hub.cli")}
    for imp in ALL_IMPORTS:
        if imp.source in graph and imp.target in graph and imp.target != imp.source:
            graph[imp.source].add(imp.target)
    cycle = _find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    WHITE, GREY, BLACK = 0, 1, 2
    colour = dict.fromkeys(graph, WHITE)
    stack: list[str] = []

    def dfs(node: str) -> list[str] | None:
        colour[node] = GREY
        stack.append(node)
        for nxt in sorted(graph[node]):
            if colour[nxt] == GREY:
                return [*stack[stack.index(nxt) :], nxt]
            if colour[nxt] == WHITE:
                found = dfs(nxt)
                if found:
                    return found
        stack.pop()
        colour[node] = BLACK
        return None

    for node in sorted(graph):
        if colour[node] == WHITE:
            found = dfs(node)
            if found:
                return found
    return None


def test_nothing_imports_the_cli():
    offenders = [
        f"{i.source}:{i.line}"
        for i in ALL_IMPORTS
        if _in(i.target, "hub.cli") and not _in(i.source, "hub.cli")
    ]
    assert offenders == []


@pytest.mark.parametrize(
    "path",
    [p for m, p in MODULES.items() if _in(m, "hub") or _in(m, "web")],
    ids=lambda p: str(p.relative_to(REPO)),
)
def test_no_module_of_hub_or_web_is_over_800_lines(path: Path):
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{path.relative_to(REPO)} has {lines} lines: split it"


def test_the_pure_layers_import_no_storage_network_cli_or_web():
    offenders = [
        f"{i.source}:{i.line} imports {i.target}"
        for i in ALL_IMPORTS
        if any(_in(i.source, p) for p in PURE)
        and any(_in(i.target, lib) for lib in IMPURE_LIBRARIES)
    ]
    assert offenders == []


def test_the_pure_layers_read_no_clock():
    offenders = []
    for module, path in MODULES.items():
        if not any(_in(module, p) for p in PURE):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                owner = node.func.value
                name = owner.attr if isinstance(owner, ast.Attribute) else getattr(owner, "id", "")
                if (name, node.func.attr) in CLOCK_CALLS:
                    offenders.append(f"{module}:{node.lineno} {name}.{node.func.attr}()")
    assert offenders == [], "take `now` instead: " + ", ".join(offenders)


def test_every_import_inside_a_function_says_why():
    silent = [
        f"{i.source}:{i.line}: {i.text.strip()}"
        for i in ALL_IMPORTS
        if i.in_function and "#" not in i.text
    ]
    assert silent == []


def test_the_checks_see_imports_inside_functions():
    """The walk must find a late import, or the cycle check would prove nothing."""
    late = [i for i in ALL_IMPORTS if i.in_function]
    assert any(i.source == "devices.agent" and i.target == "devices.pn532" for i in late)


def test_the_pages_read_through_query_functions():
    """The floor, tasks, period and me pages run no SQL of their own: a new read is a
    query function in hub/store/ or hub/ledger/ (docs/architecture.md "A new page")."""
    assert set(READ_THROUGH_QUERIES) <= set(MODULES)  # a renamed page must not slip out
    offenders = [
        f"{i.source}:{i.line}: {i.text.strip()}"
        for i in ALL_IMPORTS
        if any(_in(i.target, banned) for banned in READ_THROUGH_QUERIES.get(i.source, ()))
    ]
    assert offenders == []
