#!/usr/bin/env python3
"""Compile raftproc's hot modules with mypyc, in place, beside their sources.

    python scripts/compile.py              # compile (about a minute on two cores)
    python scripts/compile.py --if-stale   # only when a source, the module list or mypyc changed
    python scripts/compile.py --clean      # remove the compiled modules: the pure build

The compiled modules are the same annotated source as the pure ones (raftproc/build.py
says how a process chooses between them). Where there is no C compiler, no Python
headers or no mypyc (it comes with mypy, in the test extra), this says so and leaves the
pure build; a compile that fails where they are all present is an error (exit 1).
Prints one line: the build the checkout now runs.
"""

from __future__ import annotations

import argparse
import importlib.machinery
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from raftproc import build  # noqa: E402

# Everything a node runs: the core, the state machine, the runtime rooms and the
# server's (docs/results.md, issue 25, has the profiles). The entry points (node.py,
# cli.py), the simulator, the checker, ops and config stay pure: they run once or in
# tests, and `python -m` cannot run a compiled module. runtime/logging.py stays pure
# too: structlog keeps a weak reference to its log file, which a compiled class
# cannot take.
COMPILED = [
    "raftproc.core.changes",
    "raftproc.core.divergence",
    "raftproc.core.invariants",
    "raftproc.core.log",
    "raftproc.core.membership",
    "raftproc.core.messages",
    "raftproc.core.node",
    "raftproc.core.progress",
    "raftproc.core.quorum",
    "raftproc.core.reads",
    "raftproc.core.ready",
    "raftproc.core.types",
    "raftproc.kv.cbor",
    "raftproc.kv.commands",
    "raftproc.kv.redis",
    "raftproc.kv.state_machine",
    "raftproc.runtime.addresses",
    "raftproc.runtime.codec",
    "raftproc.runtime.dirlock",
    "raftproc.runtime.entries",
    "raftproc.runtime.framing",
    "raftproc.runtime.histogram",
    "raftproc.runtime.identity",
    "raftproc.runtime.linkfaults",
    "raftproc.runtime.loop",
    "raftproc.runtime.protocol",
    "raftproc.runtime.recovery",
    "raftproc.runtime.resp",
    "raftproc.runtime.skew",
    "raftproc.runtime.snapshot",
    "raftproc.runtime.tls",
    "raftproc.runtime.transfer",
    "raftproc.runtime.wal",
    "raftproc.server.alarm",
    "raftproc.server.applier",
    "raftproc.server.clients",
    "raftproc.server.disk",
    "raftproc.server.driver",
    "raftproc.server.forward",
    "raftproc.server.host",
    "raftproc.server.incarnations",
    "raftproc.server.links",
    "raftproc.server.members",
    "raftproc.server.metrics",
    "raftproc.server.peers",
    "raftproc.server.redis",
    "raftproc.server.replies",
    "raftproc.server.resp_local",
    "raftproc.server.snapshots",
    "raftproc.server.status",
    "raftproc.server.ticker",
    "raftproc.server.trace",
    "raftproc.server.transport",
    "raftproc.server.watch",
]
# One shared library for the group, inside the package so that it imports from any
# working directory (mypyc names it <group>__mypyc).
GROUP = "raftproc._compiled"


def compiled_files() -> list[Path]:
    suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
    return [p for p in build.PACKAGE_DIR.rglob("*") if p.name.endswith(suffixes)]


def clean() -> None:
    build.STAMP.unlink(missing_ok=True)
    for path in compiled_files():
        path.unlink()


def why_cannot_compile() -> str | None:
    if not (shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")):
        return "no C compiler"
    if not Path(sysconfig.get_paths()["include"], "Python.h").exists():
        return "no Python headers (Python.h)"
    try:
        import mypyc.build  # noqa: F401
    except ImportError:
        return "no mypyc (pip install mypy)"
    return None


def compile_in_place() -> None:
    from mypyc.build import mypycify
    from setuptools import Distribution

    sources = [str(build.module_source(m).relative_to(ROOT)) for m in COMPILED]
    # Digests taken before the compile and checked after it: a source edited while
    # gcc ran would otherwise be stamped as compiled while the extension holds the
    # older text.
    digests = source_digests()
    with tempfile.TemporaryDirectory(prefix="raftproc-mypyc-") as scratch:
        os.chdir(ROOT)
        c_dir = Path(scratch, "c")
        # One C file per module, so the C compiler runs on both cores.
        extensions = mypycify(sources, group_name=GROUP, opt_level="3", multi_file=True, target_dir=str(c_dir))
        for ext in extensions:
            # the group's header lands in the package's folder
            ext.include_dirs.append(str(c_dir / "raftproc"))
        dist = Distribution({"name": "raftproc", "ext_modules": extensions})
        cmd = dist.get_command_obj("build_ext")
        cmd.inplace = True
        cmd.build_temp = str(Path(scratch, "obj"))
        cmd.parallel = os.cpu_count() or 1
        cmd.ensure_finalized()
        cmd.run()
    if source_digests() != digests:
        clean()
        raise RuntimeError("a source changed during the compile; compile again")
    stamp = {"ext_suffix": importlib.machinery.EXTENSION_SUFFIXES[0], "mypyc": mypyc_version(), "modules": digests}
    build.STAMP.write_text(json.dumps(stamp, indent=1) + "\n")


def source_digests() -> dict[str, str]:
    return {m: build.source_digest(build.module_source(m)) for m in COMPILED}


def mypyc_version() -> str:
    try:
        from mypy.version import __version__
    except ImportError:
        return "none"
    return __version__


def stamp_matches_this_compile() -> bool:
    """The stamp names the modules this script compiles and the mypyc it would use
    (raftproc.build checks the sources; a process cannot know the list)."""
    try:
        stamp = json.loads(build.STAMP.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(stamp, dict) and sorted(stamp.get("modules") or {}) == sorted(COMPILED) and stamp.get("mypyc") == mypyc_version()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--if-stale", action="store_true", help="compile only when the compiled build is missing or stale")
    ap.add_argument("--clean", action="store_true", help="remove the compiled modules and their stamp")
    ap.add_argument("--verbose", action="store_true", help="show mypyc's and the C compiler's output as they run")
    args = ap.parse_args()
    if args.clean:
        clean()
        print("build: pure (compiled modules removed)")
        return 0
    if os.environ.get(build.PURE_ENV) == "1":
        print(f"build: pure ({build.PURE_ENV}=1: not compiling)")
        return 0
    if args.if_stale and build.why_not_compiled() is None and stamp_matches_this_compile():
        print("build: compiled (up to date)")
        return 0
    missing = why_cannot_compile()
    if missing:
        clean()
        print(f"build: pure ({missing})")
        return 0
    clean()
    started = time.monotonic()
    print(f"compiling {len(COMPILED)} modules with mypyc ...", file=sys.stderr, flush=True)
    if args.verbose:
        try:
            compile_in_place()
        except BaseException:
            clean()  # never half a build
            raise
    else:
        # mypyc's notes and gcc's lines only when the compile fails
        done = subprocess.run([sys.executable, __file__, "--verbose"], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            clean()
            print(done.stdout[-20_000:] + done.stderr[-20_000:], file=sys.stderr)
            print("build: pure (the compile failed; its output is above)", file=sys.stderr)
            return 1
    print(f"build: compiled ({len(COMPILED)} modules in {time.monotonic() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
