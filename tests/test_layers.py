"""The package's layers (issue 31): the import graph, read from the code's own imports (at module level
and inside functions, not under TYPE_CHECKING), has no circles but one that is known and listed here."""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "effitrain"
# no circle is left: the trainer's warm start keys its state file with the run store (runstore.py), and
# the run facade above the trainer (runcache.py) is imported by no module the trainer imports
KNOWN: set[frozenset[str]] = set()


def _modules() -> dict[str, Path]:
    mods = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        mods[name.removesuffix(".__init__")] = path
    return mods


def import_graph() -> dict[str, set[str]]:
    """module → the package modules it imports (a `from pkg import submodule` counts as the submodule)."""
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for name, path in mods.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        typing_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
                       and "TYPE_CHECKING" in ast.unparse(node.test) for n in ast.walk(node)}
        for node in ast.walk(tree):
            if id(node) in typing_only:
                continue
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("effitrain"):
                subs = {f"{node.module}.{a.name}" for a in node.names} & mods.keys()
                graph[name] |= subs or ({node.module} & mods.keys())
            elif isinstance(node, ast.Import):
                graph[name] |= {a.name for a in node.names} & mods.keys()
    return graph


def circles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[frozenset[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(frozenset(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_the_import_graph_has_no_circle():
    new = [sorted(c) for c in circles(import_graph()) if c not in KNOWN]
    assert not new, f"import circles: {new} (break them; see issue 31)"


def test_the_circle_finder_finds_a_circle():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [frozenset({"a", "b", "c"})]
    assert circles({"a": {"b"}, "b": set()}) == []


def test_the_parallel_layouts_and_the_technique_do_not_import_each_other():
    graph = import_graph()
    assert "effitrain.parallel.pipeline" not in graph["effitrain.parallel.ddp"]
    assert not {m for m in graph["effitrain.techniques.ouroboros"] if m.startswith("effitrain.parallel.")} - {
        "effitrain.parallel.launch"}
    assert not {m for m in graph["effitrain.train.trainer"] if m.startswith("effitrain.parallel")}
