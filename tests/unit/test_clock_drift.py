"""Read leases and clocks that do not run alike (raftproc.core.reads.lease_ticks)."""

from __future__ import annotations

import pytest

from raftproc.config import ConfigError, parse_config, to_toml
from raftproc.core.reads import LEASE_MARGIN_TICKS, lease_ticks
from raftproc.core.types import RaftOptions


@pytest.mark.parametrize("drift", [0.0, 0.01, 0.05, 0.1, 0.2, 0.3, 0.49])
@pytest.mark.parametrize("timeout", [3, 10, 15, 30, 150])
def test_a_lease_on_a_slow_leader_clock_ends_before_a_fast_followers_refusal(timeout, drift):
    """Worst case within the bound: the leader's ticks run (1 - d) slow, so its lease
    lasts ticks / (1 - d) of real time; the follower's run (1 + d) fast, so it refuses
    votes for timeout / (1 + d). The lease must end first, with the margin to spare."""
    ticks = lease_ticks(timeout, drift)
    assert ticks >= 0
    if ticks:
        assert ticks / (1 - drift) + LEASE_MARGIN_TICKS <= timeout / (1 + drift) + 1e-9


def test_the_default_bound_shortens_the_lease_and_a_bound_too_wide_for_the_timeout_disables_it():
    assert lease_ticks(15, 0.0) == 13 and lease_ticks(15, RaftOptions().max_clock_drift) == 11
    assert lease_ticks(3, 0.3) == 0, "no lease is better than an unsafe one"
    with pytest.raises(ValueError):
        RaftOptions(max_clock_drift=0.5)


def test_the_cluster_file_takes_the_bound_checks_it_and_writes_it_back():
    nodes = [{"id": 1, "peer": "h:1", "client": "h:2"}]
    cfg = parse_config({"node": nodes, "max_clock_drift": 0.2})
    assert cfg.raft().max_clock_drift == 0.2 and "max_clock_drift = 0.2" in to_toml(cfg)
    assert "max_clock_drift" not in to_toml(parse_config({"node": nodes})), "the default is not written"
    for bad in (0.5, -0.1, "5%", True):
        with pytest.raises(ConfigError, match="max_clock_drift"):
            parse_config({"node": nodes, "max_clock_drift": bad})
