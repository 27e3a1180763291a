"""The package's import graph: no import circle, and no import from a lower layer to an upper one.

Layers, lowest first (``kho_formats/__init__.py`` describes them):

    base     kho_formats.errors, _types, _version, limits, findings, safeio, outdir, text, keyed, progress, records
    abi      kho_formats.abi.*
    memory   kho_formats.memory.*
    model    kho_formats.model.*
    ops      kho_formats.ops.*
    api      kho_formats.api, kho_formats (the package itself)
    top      kho_formats.cli, kho_formats.boot.*

The graph is read from the sources with :mod:`ast`, so it sees every import statement wherever it
is: at module level, inside a function (a lazy import still ties the modules together) and under
``if TYPE_CHECKING:``.  The last kind never runs, so it is left out of the circle check, but it still
may not point upward.  ``from pkg import name`` is an edge to ``pkg.name`` when that is a module, else
to ``pkg``.  Importing a submodule runs its package's ``__init__`` first; that implicit step is not an
edge (a package ``__init__`` that imports its submodules is, and a submodule importing names back
from its package ``__init__`` then makes a circle).
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "kho_formats"

LAYERS = ("base", "abi", "memory", "model", "ops", "api", "top")
_SUBPACKAGE_LAYER = {"abi": "abi", "memory": "memory", "model": "model", "ops": "ops", "boot": "top"}
_MODULE_LAYER = {"api": "api", "cli": "top"}


def layer_of(module: str) -> str:
    """The layer of a ``kho_formats`` module name."""
    parts = module.split(".")
    if parts == ["kho_formats"]:
        return "api"
    head = parts[1]
    if head in _SUBPACKAGE_LAYER:
        return _SUBPACKAGE_LAYER[head]
    return _MODULE_LAYER.get(head, "base")


@dataclass(frozen=True)
class Edge:
    src: str
    dst: str
    line: int
    type_only: bool


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST) -> Iterable[tuple[ast.Import | ast.ImportFrom, bool]]:
    """Every import statement, with whether it sits under ``if TYPE_CHECKING:``."""

    def walk(node: ast.AST, type_only: bool) -> Iterable[tuple[ast.Import | ast.ImportFrom, bool]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                yield child, type_only
            elif isinstance(child, ast.If) and _is_type_checking(child.test):
                for stmt in child.body:
                    yield from walk(ast.Module(body=[stmt], type_ignores=[]), True)
                for stmt in child.orelse:
                    yield from walk(ast.Module(body=[stmt], type_ignores=[]), type_only)
            else:
                yield from walk(child, type_only)

    return walk(tree, False)


def import_graph(sources: Mapping[str, tuple[str, bool]], root: str = "kho_formats") -> list[Edge]:
    """Edges between the modules of ``sources`` (module name -> (source text, is a package))."""
    edges: list[Edge] = []
    for mod, (text, is_pkg) in sources.items():
        package = mod.split(".") if is_pkg else mod.split(".")[:-1]
        for node, type_only in _imports(ast.parse(text)):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                if node.level:
                    base = package[: len(package) - (node.level - 1)]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                targets = [f"{target}.{a.name}" if f"{target}.{a.name}" in sources else target for a in node.names]
            for t in targets:
                if (t == root or t.startswith(root + ".")) and t != mod:
                    edges.append(Edge(mod, t, node.lineno, type_only))
    return edges


def upward_imports(edges: Iterable[Edge]) -> list[str]:
    rank = {name: k for k, name in enumerate(LAYERS)}
    return [
        f"{e.src} ({layer_of(e.src)}) imports {e.dst} ({layer_of(e.dst)}) at line {e.line}"
        for e in edges
        if rank[layer_of(e.dst)] > rank[layer_of(e.src)]
    ]


def import_cycles(edges: Iterable[Edge]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    graph: dict[str, set[str]] = {}
    for e in edges:
        if not e.type_only:
            graph.setdefault(e.src, set()).add(e.dst)
            graph.setdefault(e.dst, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
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
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def package_sources(package: Path = PACKAGE) -> dict[str, tuple[str, bool]]:
    out = {}
    for p in sorted(package.rglob("*.py")):
        parts = list(p.relative_to(package.parent).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        if is_pkg:
            parts.pop()
        out[".".join(parts)] = (p.read_text(encoding="utf-8"), is_pkg)
    return out


SOURCES = package_sources()
EDGES = import_graph(SOURCES)


def test_every_module_has_a_layer() -> None:
    assert len(SOURCES) > 50
    assert {layer_of(m) for m in SOURCES} <= set(LAYERS)
    assert layer_of("kho_formats.abi.layout") == "abi" and layer_of("kho_formats.text") == "base"
    assert layer_of("kho_formats.model.clients.luo") == "model" and layer_of("kho_formats.boot.x86") == "top"


#: modules whose layer the issue names (the face and what came with it); each must sit where it says
PLACED = {
    "kho_formats": "api",
    "kho_formats.api": "api",
    "kho_formats.ops.documents": "ops",
    "kho_formats.ops.target": "ops",
    "kho_formats.progress": "base",
    "kho_formats.keyed": "base",
    "kho_formats.text": "base",
    "kho_formats.abi.struct": "abi",
    "kho_formats.abi.elf": "abi",
    "kho_formats.abi.kdump": "abi",
    "kho_formats.abi.memblock": "abi",
    "kho_formats.cli": "top",
    "kho_formats.boot.qemu": "top",
}


def test_every_layer_has_modules_and_the_named_ones_are_in_the_graph() -> None:
    by_layer: dict[str, list[str]] = {}
    for m in SOURCES:
        by_layer.setdefault(layer_of(m), []).append(m)
    assert set(by_layer) == set(LAYERS)  # no layer is empty
    for mod, layer in PLACED.items():
        assert mod in SOURCES, mod
        assert layer_of(mod) == layer, mod
    # each is in the graph the checks walk: another module imports it (the entry points aside)
    imported = {e.dst for e in EDGES}
    assert set(PLACED) - {"kho_formats", "kho_formats.cli"} <= imported
    # the face is only imported by the package root and the top layer
    face_users = {e.src for e in EDGES if e.dst == "kho_formats.api" and not e.type_only}
    assert {layer_of(m) for m in face_users} <= {"api", "top"}


def test_no_import_runs_up_a_layer() -> None:
    assert upward_imports(EDGES) == []


def test_no_import_circle() -> None:
    assert import_cycles(EDGES) == []


# -- the checks themselves, on a synthetic package ----------------------------------------


GOOD = {
    "kho_formats.errors": ("class E(Exception): ...\n", False),
    "kho_formats.abi": ("from .versions import get\n", True),
    "kho_formats.abi.versions": ("from ..errors import E\ndef get(): ...\n", False),
    "kho_formats.memory": ("", True),
    "kho_formats.memory.image": ("from ..abi import versions\nfrom .. import errors\n", False),
    "kho_formats.ops": ("", True),
    "kho_formats.ops.report": ("def f():\n    from ..memory.image import X\n", False),
}


def test_the_checks_pass_a_layered_package() -> None:
    edges = import_graph(GOOD)
    assert {(e.src, e.dst) for e in edges} == {
        ("kho_formats.abi", "kho_formats.abi.versions"),
        ("kho_formats.abi.versions", "kho_formats.errors"),
        ("kho_formats.memory.image", "kho_formats.abi.versions"),
        ("kho_formats.memory.image", "kho_formats.errors"),
        ("kho_formats.ops.report", "kho_formats.memory.image"),
    }
    assert upward_imports(edges) == [] and import_cycles(edges) == []


@pytest.mark.parametrize(
    "src, text",
    [
        ("kho_formats.abi.versions", "from ..memory import image\n"),  # module level
        ("kho_formats.abi.versions", "def check():\n    from ..ops.report import f\n"),  # lazy, in a function
        ("kho_formats.memory.image", "import kho_formats.ops.report as r\n"),  # absolute
        ("kho_formats.errors", "if TYPE_CHECKING:\n    from .abi import versions\n"),  # type-only still counts
    ],
)
def test_an_upward_import_is_caught(src: str, text: str) -> None:
    sources = dict(GOOD)
    sources[src] = (sources[src][0] + text, sources[src][1])
    bad = upward_imports(import_graph(sources))
    assert len(bad) == 1 and bad[0].startswith(src)


def test_a_circle_is_caught_at_module_or_function_level() -> None:
    sources = dict(GOOD)
    sources["kho_formats.memory.kdump"] = ("from .image import PhysImage\n", False)
    sources["kho_formats.memory.image"] = (
        GOOD["kho_formats.memory.image"][0] + "def f():\n    from . import kdump\n",
        False,
    )
    assert import_cycles(import_graph(sources)) == [["kho_formats.memory.image", "kho_formats.memory.kdump"]]
    # a submodule importing a name back from its own package's __init__, which imports it
    sources = dict(GOOD)
    sources["kho_formats.abi.versions"] = ("from . import get\n", False)
    assert import_cycles(import_graph(sources)) == [["kho_formats.abi", "kho_formats.abi.versions"]]


def test_a_type_only_circle_is_not_a_circle() -> None:
    sources = dict(GOOD)
    sources["kho_formats.memory.kdump"] = ("from .image import PhysImage\n", False)
    sources["kho_formats.memory.image"] = ("if TYPE_CHECKING:\n    from .kdump import K\n", False)
    assert import_cycles(import_graph(sources)) == []
