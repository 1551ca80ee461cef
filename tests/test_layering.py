"""The package's import graph keeps its layers: no circles, and dependencies point one way.

Read statically with ``ast`` from photosentry/, so a rule holds for code no test runs.
Every import counts, at module level or inside a function (a deferred import still
ties two modules together), except those under ``if TYPE_CHECKING:`` (never run). An
edge goes to the module an import names: ``from .banks import BankStore`` is an edge
to ``photosentry.hashes.banks`` (the package's ``__init__``), ``from . import mih`` to
``photosentry.hashes.mih``. The parent packages Python runs first are not edges: a
package's ``__init__`` re-exporting its submodules is not a circle.

The rules (docs/design.md, "Layers"):

- no import circle between modules;
- ``hashes`` and ``models`` are the core: they import nothing of ``worker``, ``review``,
  ``rescan`` or the CLI, never ``rq``, and not each other; ``redis`` only in the
  shared bank backend (``hashes/banks/redis.py``);
- ``worker`` does not import ``review`` (the review package uses the worker);
- only the CLI imports the CLI.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator, Set
from dataclasses import dataclass
from pathlib import Path

import pytest

import photosentry

PACKAGE = Path(photosentry.__file__).resolve().parent

#: Imports that break a rule today and are being removed (issue #16: the worker side is
#: being reworked): (importer, imported). Each entry must still exist and still break a
#: rule, so this set only shrinks: delete an entry when its import goes.
KNOWN_EXCEPTIONS: set[tuple[str, str]] = set()

CORE = ("photosentry.hashes", "photosentry.models")
#: The one core module allowed to import redis-py: the shared bank backend.
REDIS_BACKEND = "photosentry.hashes.banks.redis"


@dataclass(frozen=True)
class Import:
    importer: str
    #: A photosentry module, or the top-level name of a third-party one ("rq", "redis").
    imported: str
    line: int
    #: Inside a function (run when called) rather than at module level.
    deferred: bool

    def __str__(self) -> str:
        return f"{self.importer} -> {self.imported} (line {self.line}{', in a function' if self.deferred else ''})"


def module_name(path: Path, root: Path = PACKAGE) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(test: ast.expr) -> bool:
    return isinstance(test, (ast.Name, ast.Attribute)) and ast.unparse(test).split(".")[-1] == "TYPE_CHECKING"


class _Collector(ast.NodeVisitor):
    def __init__(self, module: str, is_package: bool, modules: set[str]) -> None:
        self.module, self.modules, self.depth = module, modules, 0
        self.package = module.split(".") if is_package else module.split(".")[:-1]
        self.found: list[Import] = []

    def _add(self, name: str, line: int) -> None:
        root = name.split(".")[0]
        self.found.append(Import(self.module, name if root == "photosentry" else root, line, self.depth > 0))

    def visit_If(self, node: ast.If) -> None:
        if _is_type_checking(node.test):  # typing only, never run
            for child in node.orelse:
                self.visit(child)
            return
        self.generic_visit(node)

    def _scope(self, node: ast.AST) -> None:
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _scope

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name, node.lineno)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            base = self.package[: len(self.package) - (node.level - 1)]
            target = ".".join([*base, *([node.module] if node.module else [])])
        else:
            target = node.module or ""
        for alias in node.names:
            sub = f"{target}.{alias.name}"
            # `from pkg import name`: the submodule when there is one, else the package.
            self._add(sub if sub in self.modules else target, node.lineno)


def collect(root: Path = PACKAGE) -> list[Import]:
    paths = sorted(root.rglob("*.py"))
    modules = {module_name(p, root) for p in paths}
    out: list[Import] = []
    for path in paths:
        collector = _Collector(module_name(path, root), path.name == "__init__.py", modules)
        collector.visit(ast.parse(path.read_text(), filename=str(path)))
        out += [i for i in collector.found if i.imported != i.importer]
    return out


def internal_graph(imports: Iterable[Import], *, skip: Set[tuple[str, str]] = frozenset()) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for i in imports:
        if i.imported.startswith("photosentry") and (i.importer, i.imported) not in skip:
            graph.setdefault(i.importer, set()).add(i.imported)
            graph.setdefault(i.imported, set())
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each as
    one closed path through it, so a failure names the circle to break."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(v: str) -> None:  # recursion depth is fine: the package has ~100 modules
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [_closed_path(graph, set(c)) for c in components]


def _closed_path(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    """A shortest circle through the component's first module (breadth-first)."""
    start = min(component)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v] & component):
                if w == start:
                    return [*paths[v], start]
                if w not in paths:
                    paths[w] = [*paths[v], w]
                    nxt.append(w)
        frontier = nxt
    raise AssertionError(f"no circle through {start}")  # pragma: no cover - a component always has one


def _in(module: str, packages: str | tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in ((packages,) if isinstance(packages, str) else packages))


def rule_breaks(imports: Iterable[Import]) -> Iterator[tuple[Import, str]]:
    """Every import that breaks a layering rule, with the rule."""
    for i in imports:
        src, dst = i.importer, i.imported
        if _in(src, CORE):
            if _in(dst, ("photosentry.worker", "photosentry.review", "photosentry.rescan", "photosentry.cli")):
                yield i, "hashes and models import nothing of the worker, review, rescan or the CLI"
            elif dst == "rq":
                yield i, "hashes and models never import rq"
            elif dst == "redis" and src != REDIS_BACKEND:
                yield i, f"in hashes and models only {REDIS_BACKEND} imports redis"
            elif _in(src, "photosentry.hashes") and _in(dst, "photosentry.models") or (
                _in(src, "photosentry.models") and _in(dst, "photosentry.hashes")
            ):
                yield i, "hashes and models do not import each other"
        if _in(src, "photosentry.worker") and _in(dst, "photosentry.review"):
            yield i, "the worker does not import the review package (review uses the worker)"
        if _in(dst, "photosentry.cli") and not _in(src, "photosentry.cli"):
            yield i, "only the CLI imports the CLI"


@pytest.fixture(scope="module")
def imports() -> list[Import]:
    return collect()


def test_the_graph_is_read(imports: list[Import]) -> None:
    # A parser that found nothing would pass every rule: pin a few edges of each kind.
    edges = {(i.importer, i.imported, i.deferred) for i in imports}
    assert ("photosentry.hashes.banks.redis", "redis", False) in edges
    assert ("photosentry.hashes.index", "photosentry.hashes.mih", False) in edges  # from . import mih
    assert ("photosentry.hashes.mih.segment", "photosentry.hashes.mih.plan", False) in edges
    assert ("photosentry.worker.jobs", "photosentry.worker.service", True) in edges  # inside a function
    # `if TYPE_CHECKING:` imports are not edges: banks/__init__ names the Redis backend only there.
    assert ("photosentry.hashes.banks", "redis", False) not in edges
    assert len(internal_graph(imports)) > 60


def test_no_import_circles(imports: list[Import]) -> None:
    found = cycles(internal_graph(imports, skip=KNOWN_EXCEPTIONS))
    assert not found, "import circles (break one edge of each):\n" + "\n".join(" -> ".join(c) for c in found)


def test_layers_point_one_way(imports: list[Import]) -> None:
    broken = [f"{i}: {rule}" for i, rule in rule_breaks(imports) if (i.importer, i.imported) not in KNOWN_EXCEPTIONS]
    assert not broken, "imports against the layering rules:\n" + "\n".join(broken)


def _reaches(graph: dict[str, set[str]], start: str, goal: str) -> bool:
    seen, todo = {start}, [start]
    while todo:
        for w in graph.get(todo.pop(), ()):
            if w == goal:
                return True
            if w not in seen:
                seen.add(w)
                todo.append(w)
    return False


def test_known_exceptions_are_still_needed(imports: list[Import]) -> None:
    edges = {(i.importer, i.imported) for i in imports}
    without = internal_graph(imports, skip=KNOWN_EXCEPTIONS)
    breaking = {(i.importer, i.imported) for i, _ in rule_breaks(imports)}
    # Needed: the import still breaks a rule, or putting it back closes a circle.
    stale = sorted(e for e in KNOWN_EXCEPTIONS
                   if e not in breaking and not (e in edges and _reaches(without, e[1], e[0])))
    assert not stale, f"these imports no longer break a rule: delete them from KNOWN_EXCEPTIONS: {stale}"


def test_a_new_circle_or_layer_break_is_caught(tmp_path: Path) -> None:
    # The checks themselves, on a small package: a deferred import closing a circle,
    # and a core module importing the worker.
    pkg = tmp_path / "photosentry"
    for name, text in {
        "__init__.py": "",
        "hashes/__init__.py": "",
        "hashes/codecs.py": "def f():\n    from .signals import X\n",
        "hashes/signals.py": "from .codecs import f\nfrom ..worker import policy\n",
        "worker/__init__.py": "",
        "worker/policy.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..review import queue\n",
        "review/__init__.py": "",
        "review/queue.py": "",
    }.items():
        (pkg / name).parent.mkdir(parents=True, exist_ok=True)
        (pkg / name).write_text(text)
    found = collect(pkg)
    assert cycles(internal_graph(found)) == [["photosentry.hashes.codecs", "photosentry.hashes.signals",
                                             "photosentry.hashes.codecs"]]
    assert [(str(i), rule.split(":")[0]) for i, rule in rule_breaks(found)] == [
        ("photosentry.hashes.signals -> photosentry.worker.policy (line 2)",
         "hashes and models import nothing of the worker, review, rescan or the CLI"),
    ]
