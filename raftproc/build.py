"""Which build of raftproc this process runs: `compiled` or `pure`.

The hot modules (the core, the codec and framing, the WAL, the loop, the driver, the
state machine, the client and peer rooms) can be compiled in place with mypyc from
the same annotated source (`scripts/compile.py`, run by scripts/test and scripts/demo
when a C compiler is there). The compiled modules sit beside their sources as
extension modules, which Python's importer prefers. Both builds are the same code,
and either can run from one checkout:

- `RAFTPROC_PURE=1` runs the pure build even where a compiled one exists;
- a compiled build runs only when every compiled module's source is still the one
  it was compiled from (`compiled.json`, written by the compile, holds their digests).
  Otherwise a stale extension would silently run old code, so the whole process
  runs pure and says why: one build per process, never a mix (a compiled module
  calls its compiled neighbours directly, past their Python sources).

`raftproc/__init__.py` calls `choose()` before any other raftproc module is
imported; the node logs `build` in `node_started`, and status reports it.
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

PACKAGE_DIR = Path(__file__).resolve().parent
STAMP = PACKAGE_DIR / "compiled.json"
PURE_ENV = "RAFTPROC_PURE"

BUILD = "pure"
WHY = "not chosen yet"


def source_digest(path: Path) -> str:
    return hashlib.blake2b(path.read_bytes(), digest_size=16).hexdigest()


def module_source(module: str) -> Path:
    """raftproc.core.node -> <package dir>/core/node.py"""
    return PACKAGE_DIR.joinpath(*module.split(".")[1:]).with_suffix(".py")


def why_not_compiled() -> str | None:
    if os.environ.get(PURE_ENV) == "1":
        return f"{PURE_ENV}=1"
    try:
        stamp = json.loads(STAMP.read_text())
    except FileNotFoundError:
        return "not compiled (scripts/compile.py compiles it)"
    except (OSError, ValueError) as e:
        return f"{STAMP.name} unreadable: {e}"
    if not isinstance(stamp, dict) or not isinstance(stamp.get("modules"), dict):
        return f"{STAMP.name} is not a compile stamp"
    if stamp.get("ext_suffix") != importlib.machinery.EXTENSION_SUFFIXES[0]:
        return f"compiled for another Python ({stamp.get('ext_suffix')})"
    for module, digest in stamp["modules"].items():
        path = module_source(module)
        try:
            if source_digest(path) != digest:
                return f"{path.relative_to(PACKAGE_DIR.parent)} changed since it was compiled"
        except OSError:
            return f"{path.relative_to(PACKAGE_DIR.parent)} is missing"
    return None


class _SourcesOnly(importlib.abc.MetaPathFinder):
    """Finds raftproc's modules by their .py files only, past any extension beside them."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if not fullname.startswith("raftproc.") or path is None:
            return None
        for entry in path:
            finder = importlib.machinery.FileFinder(entry, (importlib.machinery.SourceFileLoader, importlib.machinery.SOURCE_SUFFIXES))
            spec = finder.find_spec(fullname)
            if spec is not None:
                return spec
        return None


def choose() -> None:
    global BUILD, WHY
    if any(isinstance(f, _SourcesOnly) for f in sys.meta_path):
        return
    why_not = why_not_compiled()
    if why_not is None:
        BUILD, WHY = "compiled", f"mypyc, stamp {STAMP.name}"
    else:
        BUILD, WHY = "pure", why_not
        sys.meta_path.insert(0, _SourcesOnly())


def running() -> str:
    """The build the hot modules were actually loaded from (the core's node module
    stands for them all: they are compiled together or not at all)."""
    import raftproc.core.node

    suffix = Path(raftproc.core.node.__file__ or "").name
    return "compiled" if any(suffix.endswith(s) for s in importlib.machinery.EXTENSION_SUFFIXES) else "pure"
