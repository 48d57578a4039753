"""Which build runs: the compiled one only when every compiled module's source is the
one it was compiled from, never a mix; RAFTPROC_PURE=1 forces the pure one."""

from __future__ import annotations

import importlib.machinery
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from raftproc import build


def _stamped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sources: dict[str, str]) -> None:
    package = tmp_path / "raftproc"
    for module, text in sources.items():
        path = package.joinpath(*module.split(".")[1:]).with_suffix(".py")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    monkeypatch.setattr(build, "PACKAGE_DIR", package)
    monkeypatch.setattr(build, "STAMP", package / "compiled.json")
    monkeypatch.delenv(build.PURE_ENV, raising=False)
    digests = {m: build.source_digest(build.module_source(m)) for m in sources}
    build.STAMP.write_text(json.dumps({"ext_suffix": importlib.machinery.EXTENSION_SUFFIXES[0], "modules": digests}))


def test_a_build_whose_sources_are_unchanged_is_compiled(tmp_path, monkeypatch):
    _stamped(tmp_path, monkeypatch, {"raftproc.core.node": "x = 1\n", "raftproc.runtime.wal": "y = 2\n"})
    assert build.why_not_compiled() is None


def test_one_changed_source_makes_the_whole_build_pure_and_names_it(tmp_path, monkeypatch):
    _stamped(tmp_path, monkeypatch, {"raftproc.core.node": "x = 1\n", "raftproc.runtime.wal": "y = 2\n"})
    (tmp_path / "raftproc" / "runtime" / "wal.py").write_text("y = 3\n")
    assert build.why_not_compiled() == "raftproc/runtime/wal.py changed since it was compiled"


def test_no_stamp_a_foreign_stamp_and_the_switch_each_give_the_pure_build(tmp_path, monkeypatch):
    _stamped(tmp_path, monkeypatch, {"raftproc.core.node": "x = 1\n"})
    monkeypatch.setenv(build.PURE_ENV, "1")
    assert build.why_not_compiled() == "RAFTPROC_PURE=1"
    monkeypatch.delenv(build.PURE_ENV)
    build.STAMP.write_text(json.dumps({"ext_suffix": ".cpython-99.so", "modules": {}}))
    assert "another Python" in (build.why_not_compiled() or "")
    build.STAMP.unlink()
    assert "not compiled" in (build.why_not_compiled() or "")


def test_the_switch_loads_every_module_from_its_source():
    code = "import raftproc.build as b, raftproc.server.driver as d; print(b.BUILD, b.running(), d.__file__.endswith('.py'))"
    out = subprocess.run(
        [sys.executable, "-c", code], env={**os.environ, build.PURE_ENV: "1"}, capture_output=True, text=True, check=True
    ).stdout.split()
    assert out == ["pure", "pure", "True"]
