"""Imports point down: no module of ood_lib imports, directly or through others, a module that
imports it back. Imports inside functions count, since hiding an edge in a function is how the
cycles this test replaced were kept."""
import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "ood_lib"


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """Module -> the package modules it imports anywhere in its text."""
    modules = {p.stem for p in package.glob("*.py")}
    graph = {}
    for module in modules:
        deps = set()
        for node in ast.walk(ast.parse((package / f"{module}.py").read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                deps.update([node.module.split(".")[0]] if node.module else [a.name for a in node.names])
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("ood_lib."):
                deps.add(node.module.split(".")[1])
            elif isinstance(node, ast.Import):
                deps.update(a.name.split(".")[1] for a in node.names if a.name.startswith("ood_lib."))
        graph[module] = (deps & modules) - {module}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One path per strongly connected set of modules larger than one (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
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
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_checker_finds_a_cycle_hidden_in_a_function(tmp_path):
    (tmp_path / "low.py").write_text("def f():\n    from .high import g\n")
    (tmp_path / "high.py").write_text("from .low import f\n")
    (tmp_path / "alone.py").write_text("import os\n")
    graph = import_graph(tmp_path)
    assert graph == {"low": {"high"}, "high": {"low"}, "alone": set()}
    assert cycles(graph) == [["high", "low"]]


def test_ood_lib_has_no_import_cycle():
    graph = import_graph()
    assert {"config", "data", "images", "nuisance", "config_files"} <= set(graph)
    assert "data" not in graph["config"] and "train" not in graph["nuisance"]
    assert cycles(graph) == [], f"modules that import each other, directly or through others: {cycles(graph)}"
