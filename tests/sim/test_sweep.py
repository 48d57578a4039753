"""The simulator sweep: many seeds, every safety property after every step, liveness
after healing. Seeds are split into shards so pytest-xdist spreads them over cores.

RAFTPROC_SIM_SEEDS and RAFTPROC_SIM_STEPS run a longer sweep on demand, as does
`python -m raftproc.sim --seeds N --steps K`.
"""

from __future__ import annotations

import os

import pytest

from raftproc.sim.sweep import CLUSTER_SIZES, run_one

SEEDS = int(os.environ.get("RAFTPROC_SIM_SEEDS", "1000"))
STEPS = int(os.environ.get("RAFTPROC_SIM_STEPS", "2000"))
SHARDS = 20


@pytest.mark.parametrize("shard", range(SHARDS))
def test_sim_sweep_holds_every_property(shard):
    failures = []
    for seed in range(shard, SEEDS, SHARDS):
        nodes = CLUSTER_SIZES[seed % len(CLUSTER_SIZES)]
        failure = run_one(seed, nodes, STEPS)
        if failure:
            failures.append(failure)
    assert not failures, "\n".join(failures)


def test_sim_same_seed_same_run():
    """A seed replays exactly: the trace of one run is the trace of the next."""
    from raftproc.sim import SimConfig, Simulation

    traces = []
    for _ in range(2):
        lines: list[str] = []
        Simulation(11, SimConfig(nodes=5, steps=300), trace=lines.append).run()
        traces.append(lines)
    assert traces[0] == traces[1] and len(traces[0]) > 100


def test_sim_cli_replays_a_seed_with_a_readable_trace(capsys):
    from raftproc.sim.__main__ import main

    assert main(["--seed", "7", "--steps", "200"]) == 0
    out = capsys.readouterr().out
    assert "RequestVote term=1" in out and "became_leader" in out and "every property held" in out


def test_sim_failure_names_the_replay_command():
    from raftproc.core import RaftNode
    from raftproc.sim import SafetyViolation, SimConfig, Simulation

    class NeverChecksLog(RaftNode):
        def _vote_refusal(self, msg):
            return None

    with pytest.raises(SafetyViolation) as err:
        for seed in range(20):
            Simulation(seed, SimConfig(nodes=3, steps=500), node_factory=NeverChecksLog).run()
    assert "python -m raftproc.sim --seed" in str(err.value)
