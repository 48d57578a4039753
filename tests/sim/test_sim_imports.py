"""The simulator's parts are collaborators, not halves of one class: no module of
raftproc.sim imports, even for type checking only, a module that imports it back."""

from __future__ import annotations

import ast
from pathlib import Path

import raftproc.sim

SIM = Path(raftproc.sim.__file__).parent


def _sim_imports(path: Path) -> set[str]:
    """The raftproc.sim modules `path` imports, by module name (cluster, host, ...)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("raftproc.sim."):
            out.add(node.module.removeprefix("raftproc.sim."))
        elif isinstance(node, ast.Import):
            out |= {a.name.removeprefix("raftproc.sim.") for a in node.names if a.name.startswith("raftproc.sim.")}
    return out


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle in `graph`, as the path around it, or None."""
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> list[str] | None:
        if module in path:
            return path[path.index(module) :] + [module]
        if module in done:
            return None
        for target in sorted(graph.get(module, ())):
            found = visit(target, path + [module])
            if found:
                return found
        done.add(module)
        return None

    for module in sorted(graph):
        found = visit(module, [])
        if found:
            return found
    return None


def test_sim_modules_import_one_way():
    graph = {p.stem: _sim_imports(p) for p in SIM.glob("*.py") if p.name != "__init__.py"}
    assert "host" in graph["cluster"], "the import graph is read: the run loop imports the host"
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])


def test_cycle_finder_finds_a_circle():
    assert _cycle({"cluster": {"host"}, "host": {"properties"}, "properties": {"cluster"}}) == [
        "cluster",
        "host",
        "properties",
        "cluster",
    ]
    assert _cycle({"cluster": {"host"}, "host": set()}) is None
