"""The core must stay free of IO: it imports no module that touches sockets, files,
threads or the clock, and never uses the global random state."""

from __future__ import annotations

import ast
from pathlib import Path

import raftproc.core

FORBIDDEN = {"socket", "selectors", "select", "os", "time", "threading", "asyncio", "subprocess", "structlog", "cbor2", "io", "signal", "multiprocessing"}
CORE = Path(raftproc.core.__file__).parent


def core_files():
    files = sorted(CORE.rglob("*.py"))
    assert files, "no core sources found"
    return files


def test_core_imports_no_io_module():
    offenders = []
    for path in core_files():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in FORBIDDEN]
    assert offenders == []


def test_core_never_uses_the_global_random_state():
    offenders = []
    for path in core_files():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id == "random"
                and node.attr != "Random"
            ):
                offenders.append(f"{path.name}:{node.lineno} random.{node.attr}")
            if isinstance(node, ast.ImportFrom) and node.module == "random":
                offenders += [f"{path.name}: from random import {a.name}" for a in node.names if a.name != "Random"]
    assert offenders == []


def test_import_walk_sees_a_planted_io_import(tmp_path, monkeypatch):
    """The walk itself is not vacuous."""
    planted = tmp_path / "bad.py"
    planted.write_text("import os\nfrom time import monotonic\n")
    tree = ast.parse(planted.read_text())
    found = [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]
    assert len(found) == 2
