"""The shape of the code: no import cycle between ganforge's modules, and no loss or model known by name
outside the plug-ins that define them (losses/, families/)."""

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "ganforge"


def module_name(path: Path, root: Path) -> str:
    return ".".join(path.relative_to(root.parent).with_suffix("").parts).removesuffix(".__init__")


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    """module -> the ganforge modules it imports, anywhere in it (inside functions too). Importing the top
    package for its API (`import ganforge`) is left out: it imports everything by design."""
    modules = {module_name(p, root): p for p in root.rglob("*.py")}

    def resolve(name: str) -> str | None:
        parts = name.split(".")
        return next((".".join(parts[:i]) for i in range(len(parts), 0, -1) if ".".join(parts[:i]) in modules), None)

    graph = {}
    for name, path in modules.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {resolve(a.name) for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                found |= {resolve(f"{node.module}.{a.name}") for a in node.names}
        graph[name] = found - {None, name, "ganforge"}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while not component or component[-1] != v:
                component.append(stack.pop())
                on_stack.discard(component[-1])
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_no_module_imports_itself_back():
    graph = import_graph()
    assert len(graph) > 40 and "ganforge.training" in graph["ganforge"] | {"ganforge.training"}
    assert cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle(tmp_path):
    (tmp_path / "ganforge").mkdir()
    (tmp_path / "ganforge" / "a.py").write_text("def f():\n    from ganforge.b import g\n")  # inside a function
    (tmp_path / "ganforge" / "b.py").write_text("from ganforge import a\n")
    (tmp_path / "ganforge" / "c.py").write_text("import ganforge.a\n")
    assert cycles(import_graph(tmp_path / "ganforge")) == [["ganforge.a", "ganforge.b"]]


def test_no_loss_or_model_is_known_by_name_outside_the_plugins():
    by_name = re.compile(r"\bcfg\.(loss|model)\s*(==|!=|in\b|not in\b)|\b(loss|model)\s*==\s*\"")
    offenders = [f"{p.relative_to(PACKAGE)}:{i}: {line.strip()}"
                 for p in PACKAGE.rglob("*.py") if p.parent.name not in ("losses", "families")
                 for i, line in enumerate(p.read_text().splitlines(), 1) if by_name.search(line)]
    assert offenders == []
