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
    "server": {"core", "kv", "runtime", "server", "config"},
    # The simulator runs the node's own Ready driver and nothing else of the server.
    "sim": {"core", "sim", "server.driver"},
    "checker": {"checker"},
    "node": {"core", "runtime", "server", "config"},
    "client": {"core", "kv", "runtime", "config"},
    "cli": {"core", "runtime", "config", "client"},
    "ops": {"core", "kv", "runtime", "config", "client", "checker", "ops"},
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
