"""The compiled build is the pure build, step for step: the same simulated runs (the
core and the Ready driver compiled, under faults) give byte-identical traces, from
the first message to the last commit. The simulator's proofs hold for both."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from raftproc import build


def _trace(seed: int, nodes: int, pure: bool) -> str:
    env = {**os.environ, build.PURE_ENV: "1" if pure else "0"}
    done = subprocess.run(
        [sys.executable, "-m", "raftproc.sim", "--seed", str(seed), "--nodes", str(nodes), "--steps", "1500"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return done.stdout


@pytest.mark.parametrize("seed, nodes", [(7, 5), (11, 3), (23, 7)])
def test_a_simulated_run_is_the_same_in_both_builds(seed, nodes):
    if build.BUILD != "compiled":
        pytest.skip(f"this checkout runs the pure build ({build.WHY}): nothing to compare")
    compiled, pure = _trace(seed, nodes, pure=False), _trace(seed, nodes, pure=True)
    assert "every property held" in compiled
    assert compiled.splitlines() == pure.splitlines()
