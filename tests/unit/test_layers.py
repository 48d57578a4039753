"""Imports run one way, downwards: core <- kv <- runtime <- server <- node/client
<- ops <- scripts. Each package may import only what its row below allows, and the
core imports no module that does IO and never uses the global random state."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import raftproc

ROOT = Path(raftproc.__file__).parent

# Package (or top-level module) -> the raftproc packages and modules it may import.
# A name allows itself and everything under it ("server.driver" allows only that module).
ALLOWED: dict[str, set[str]] = {
    "core": {"core"},
    "kv": {"core", "kv"},
    "runtime": {"core", "kv", "runtime"},
    "config": {"core", "runtime.addresses", "runtime.tls"},
    "server": {"core", "kv", "runtime", "server", "config", "build"},
    # The simulator runs the node's own Ready driver and nothing else of the server.
    "sim": {"core", "sim", "server.driver"},
    "checker": {"checker"},
    "node": {"core", "runtime", "server", "config", "build"},
    "client": {"core", "kv", "runtime", "config"},
    "cli": {"core", "runtime", "config", "client"},
    "ops": {"core", "kv", "runtime", "config", "client", "checker", "ops", "build"},
    # Which build runs (compiled or pure): chosen before anything else is imported;
    # it names the core's node module only to tell which one was loaded.
    "build": {"core.node"},
    # The live page: static files and a docstring.
    "web": set(),
}
IO_MODULES = {
    "socket",
    "selectors",
    "select",
    "os",
    "time",
    "threading",
    "asyncio",
    "subprocess",
    "structlog",
    "cbor2",
    "io",
    "signal",
    "multiprocessing",
}


def _layer(path: Path) -> str:
    rel = path.relative_to(ROOT)
    return rel.parts[0].removesuffix(".py") if len(rel.parts) > 1 or rel.name != "__init__.py" else ""


def _imports(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


def _violations(layer: str, path: Path, allowed: dict[str, set[str]]) -> list[str]:
    out = []
    for name in _imports(path):
        parts = name.split(".")
        if parts[0] != "raftproc" or len(parts) == 1:
            continue
        target = ".".join(parts[1:])
        if not any(target == a or target.startswith(a + ".") for a in allowed[layer]):
            out.append(f"{path.name} imports {name}")
    return out


def _sources():
    for path in sorted(ROOT.rglob("*.py")):
        layer = _layer(path)
        if layer and layer != "__main__":
            yield layer, path


def test_every_package_has_a_row():
    assert {layer for layer, _ in _sources()} <= set(ALLOWED)


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_imports_run_downwards(layer):
    offenders = [v for lay, path in _sources() if lay == layer for v in _violations(lay, path, ALLOWED)]
    assert offenders == []


def test_the_table_catches_an_upward_import(tmp_path):
    """The walk is not vacuous: kv reaching into runtime is caught, and so is the
    simulator reaching past the driver into the rest of the server."""
    planted = tmp_path / "planted.py"
    planted.write_text("from raftproc.runtime.snapshot import KvImage\nimport raftproc.server.host\n")
    assert _violations("kv", planted, ALLOWED) == [
        f"{planted.name} imports raftproc.runtime.snapshot",
        f"{planted.name} imports raftproc.server.host",
    ]
    assert _violations("sim", planted, ALLOWED) == [
        f"{planted.name} imports raftproc.runtime.snapshot",
        f"{planted.name} imports raftproc.server.host",
    ]


def test_core_imports_no_io_module():
    offenders = [f"{path.name}: {n}" for lay, path in _sources() if lay == "core" for n in _imports(path) if n.split(".")[0] in IO_MODULES]
    assert offenders == []


def test_core_never_uses_the_global_random_state():
    offenders = []
    for lay, path in _sources():
        if lay != "core":
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "random" and node.attr != "Random":
                offenders.append(f"{path.name}:{node.lineno} random.{node.attr}")
            if isinstance(node, ast.ImportFrom) and node.module == "random":
                offenders += [f"{path.name}: from random import {a.name}" for a in node.names if a.name != "Random"]
    assert offenders == []


def test_no_module_outgrows_a_newcomers_reading():
    """600 lines at most; the Raft core's node, which holds the whole protocol, 1,100."""
    limits = {ROOT / "core" / "node.py": 1100}
    too_long = []
    for path in sorted(ROOT.rglob("*.py")):
        lines = len(path.read_text().splitlines())
        if lines > limits.get(path, 600):
            too_long.append(f"{path.relative_to(ROOT)}: {lines} lines")
    assert too_long == []


def test_only_the_driver_advances_the_core():
    """Exactly one module outside the core hands a Ready back (advance) or reports
    durability (persisted): the Ready driver that node and simulator share."""
    callers = set()
    for path in sorted(ROOT.rglob("*.py")):
        if path.is_relative_to(ROOT / "core"):
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in ("advance", "persisted"):
                callers.add(str(path.relative_to(ROOT)))
    assert callers == {"server/driver.py"}


# --- rooms ------------------------------------------------------------------------------

SCRIPTS = ROOT.parent / "scripts"


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def _import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """Module -> the raftproc modules it imports (at any depth of the file)."""
    paths = {_module_name(p): p for p in sorted(root.rglob("*.py"))}
    graph: dict[str, set[str]] = {}
    for name, path in paths.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for alias in node.names:
                    sub = f"{node.module}.{alias.name}"
                    deps.add(sub if sub in paths else node.module)
            elif isinstance(node, ast.Import):
                deps.update(a.name for a in node.names)
        graph[name] = {d for d in deps if d in paths and d != name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_circle_in_the_package():
    assert _cycles(_import_graph()) == []


def test_the_circle_check_is_not_vacuous():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_host_imports_its_rooms_and_no_room_imports_the_host():
    graph = _import_graph()
    rooms = {m for m in graph if m.startswith("raftproc.server.") and m != "raftproc.server.host"}
    assert graph["raftproc.server.host"] & rooms, "the host wires the server's rooms"
    assert [m for m in graph if "raftproc.server.host" in graph[m] and m.startswith("raftproc.server")] == []


# Private attributes reached across modules, each with the reason it is allowed.
PRIVATE_REACH_ALLOWED = {
    # PySyncObj, the benchmark's peer, offers no public "am I the leader".
    ("ops/peers/pysyncobj_node.py", "_isLeader"),
}


def _private_reaches(path: Path) -> list[tuple[int, str]]:
    """`x._name` where x is not self/cls and no code in this module defines `_name`:
    one room calling into another's private parts."""
    tree = ast.parse(path.read_text(), str(path))
    own = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            own.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            own.add(node.attr)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            own.add(node.id)
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            receiver = node.value
            if isinstance(receiver, ast.Name) and receiver.id in ("self", "cls"):
                continue
            if node.attr not in own:
                out.append((node.lineno, f"{ast.unparse(receiver)}.{node.attr}"))
    return out


def test_no_room_calls_another_rooms_private_parts():
    offenders = []
    for path in sorted(list(ROOT.rglob("*.py")) + list(SCRIPTS.glob("*.py"))):
        rel = str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)
        for line, what in _private_reaches(path):
            if (rel, what.rsplit(".", 1)[1]) not in PRIVATE_REACH_ALLOWED:
                offenders.append(f"{rel}:{line} {what}")
    assert offenders == []


def test_the_private_reach_check_is_not_vacuous(tmp_path):
    planted = tmp_path / "planted.py"
    planted.write_text(
        "class A:\n    def _mine(self):\n        other._theirs()\n        self._mine()\n        a = A()\n        a._mine()\n"
    )
    assert _private_reaches(planted) == [(3, "other._theirs")]


def _long_functions(path: Path, limit: int) -> list[str]:
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            length = node.end_lineno - node.lineno + 1
            if length > limit:
                out.append(f"{path.name}:{node.lineno} {node.name} ({length} lines)")
    return out


def test_no_function_is_too_long_to_hold_in_mind():
    """60 lines at most, in the package and in the scripts."""
    paths = sorted(list(ROOT.rglob("*.py")) + list(SCRIPTS.glob("*.py")))
    assert [f for p in paths for f in _long_functions(p, 60)] == []
