"""The import layers of src/llm_ladder, read with `ast` (docs/architecture.md, "Layers").

A module may import modules of its own layer or below, never above, and no import cycle is
allowed. Imports inside functions count: hiding one there does not change the layering.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

# lowest first; a module's layer is the one of its longest matching prefix
LAYERS: list[tuple[str, list[str]]] = [
    ("foundation", ["errors", "hardware", "plugins", "task", "data", "splits", "store", "stats",
                    "results", "workers", "models", "ppi", "cells"]),
    ("mechanics", ["metrics", "costs", "embedding", "embedding_int8", "rag", "tools",
                   "finetune", "curve", "optimize", "judging"]),
    ("rungs", ["rungs"]),
    ("library", ["session", "evaluate", "decide", "ladder", "tuning", "report", "serving",
                 "testing", "init", "audit", "judge_check", "labels",
                 "synth", "upgrade"]),
    ("cli", ["cli", "__main__"]),
]


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def import_graph(root: Path, package: str) -> dict[str, set[str]]:
    """module -> the package's modules it imports (anywhere in its body)."""
    files = {module_name(p, root): p for p in (root / package).rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in files}
    for mod, path in files.items():
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative import
                    here = mod.split(".") if is_pkg else mod.split(".")[:-1]
                    here = here[: len(here) - node.level + 1]
                    base = ".".join(here + ([base] if base else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base
                           for a in node.names]
            for t in targets:
                while t and t not in files:  # `import a.b.c` where c is a name
                    t = t.rpartition(".")[0]
                if t and t != mod and t.startswith(package):
                    graph[mod].add(t)
    return graph


def layer_of(mod: str, package: str) -> int:
    rest = mod[len(package) + 1:] if mod != package else ""
    if not rest:
        return len(LAYERS)  # the package's own __init__: the public API, above everything
    best, found = "", len(LAYERS)
    for rank, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            if (rest == p or rest.startswith(p + ".")) and len(p) > len(best):
                best, found = p, rank
    return found


def upward(graph: dict[str, set[str]], package: str) -> list[str]:
    bad = []
    for mod, deps in sorted(graph.items()):
        for dep in sorted(deps):
            rank = layer_of(mod, package)
            if layer_of(dep, package) > rank:
                name = LAYERS[rank][0] if rank < len(LAYERS) else "api"
                bad.append(f"{mod} ({name}) imports {dep}")
    return bad


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_every_module_has_a_layer():
    graph = import_graph(SRC, "llm_ladder")
    unplaced = [m for m in graph if m != "llm_ladder" and layer_of(m, "llm_ladder") == len(LAYERS)]
    assert not unplaced, f"add these modules to a layer in tests/test_layers.py: {unplaced}"


def test_no_import_cycles():
    assert cycles(import_graph(SRC, "llm_ladder")) == []


def test_no_upward_imports():
    assert upward(import_graph(SRC, "llm_ladder"), "llm_ladder") == []


def test_the_checker_finds_cycles_and_upward_imports(tmp_path):
    """The checks above can fail: a tiny package with one cycle and one upward import."""
    pkg = tmp_path / "llm_ladder"
    (pkg / "rag").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "rag" / "__init__.py").write_text("")
    (pkg / "rag" / "index.py").write_text("def f():\n    from llm_ladder.ladder import climb\n")
    (pkg / "ladder.py").write_text("from llm_ladder.session import x\n")
    (pkg / "session.py").write_text("from llm_ladder import ladder\n")
    graph = import_graph(tmp_path, "llm_ladder")
    assert cycles(graph) == [["llm_ladder.ladder", "llm_ladder.session"]]
    assert upward(graph, "llm_ladder") == ["llm_ladder.rag.index (mechanics) imports "
                                           "llm_ladder.ladder"]
