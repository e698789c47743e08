"""Layers that only look down: minillm's modules import each other without cycles.

Every import of every module is read with ``ast`` (those inside functions too, since a lazy import is
still a dependency), and the module graph must have no cycle but one: tensor.py's late
``from . import ops`` at its bottom (ops define the Functions that Tensor's methods call, and import
Tensor and Function from tensor.py).
"""
import ast

from conftest import REPO

PACKAGE = REPO / "minillm"
ALLOWED = {("minillm.tensor", "minillm.ops")}  # documented at the bottom of minillm/tensor.py


def module_name(path):
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path, name, modules):
    """The minillm modules that the module ``name`` (file ``path``) imports, anywhere in its body."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            for alias in node.names:  # `from a import b`: b is a submodule, or a name defined in a
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
    return {m for m in found if m in modules and m != name}


def import_graph():
    paths = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
    return {name: imports_of(path, name, paths) - {b for a, b in ALLOWED if a == name}
            for name, path in paths.items()}


def reachable(graph, start):
    seen, todo = set(), [start]
    while todo:
        for child in graph[todo.pop()] - seen:
            seen.add(child)
            todo.append(child)
    return seen


def cycles(graph):
    """The shortest cycle through each module that is on one, each written from its first module."""
    reach = {m: reachable(graph, m) for m in graph}
    found = set()
    for start in (m for m in graph if m in reach[m]):
        cycle = shortest_cycle(graph, start)[:-1]
        first = cycle.index(min(cycle))
        found.add(tuple(cycle[first:] + cycle[:first + 1]))
    return sorted(list(cycle) for cycle in found)


def shortest_cycle(graph, start):
    paths, frontier = {start: [start]}, [start]
    while True:  # start is on a cycle, so the search returns
        nxt = []
        for node in frontier:
            for child in sorted(graph[node]):
                if child == start:
                    return paths[node] + [start]
                if child not in paths:
                    paths[child] = paths[node] + [child]
                    nxt.append(child)
        frontier = nxt


def test_the_graph_sees_lazy_submodule_and_relative_imports():
    graph = import_graph()
    assert "minillm.ops" not in graph["minillm.tensor"]  # the one allowed edge is left out
    assert "minillm.tensor" in graph["minillm.ops.elementwise"]
    assert "minillm.ops.elementwise" in graph["minillm.ops"]  # `from .elementwise import Add`
    assert "minillm.backend" in graph["minillm.cuda"]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]


def test_the_tensor_to_ops_import_is_the_last_statement_of_tensor_py():
    last = ast.parse((PACKAGE / "tensor.py").read_text()).body[-1]
    assert isinstance(last, ast.ImportFrom) and last.level == 1 and [a.name for a in last.names] == ["ops"]


def test_no_import_cycles():
    found = cycles(import_graph())
    assert not found, "import cycles:\n" + "\n".join(" -> ".join(cycle) for cycle in found)
