"""The supervisor's status exits as the client CLI's does, for the same cluster."""

from __future__ import annotations

import pytest

from raftproc import cli
from raftproc.ops import supervisor
from raftproc.ops.supervisor import verdict


@pytest.mark.parametrize("name", ["EXIT_OK", "EXIT_FAILED", "EXIT_USAGE", "EXIT_UNREACHABLE", "EXIT_NO_LEADER", "EXIT_INTERRUPTED"])
def test_exit_codes_are_the_clis(name):
    assert getattr(supervisor, name) == getattr(cli, name)


def row(node: int, role: str | None = "follower", leader: int | None = 1, diverged: str | None = None) -> dict:
    """A status table row as Cluster.status_table gives it: role only for a node that answered."""
    r: dict = {"node": node, "state": "running" if role else "dead"}
    if role:
        r.update(role=role, leader=leader, diverged=diverged)
    return r


def test_verdict_healthy_down_no_leader_and_diverged():
    healthy = [row(1, "leader"), row(2), row(3)]
    assert verdict(healthy, set()) == (cli.EXIT_OK, "healthy")
    code, said = verdict([row(1, "leader"), row(2, None), row(3)], set())
    assert code == cli.EXIT_UNREACHABLE and "nodes [2] do not answer" in said
    assert verdict([row(1, "leader"), row(2), row(3, leader=None)], set())[0] == cli.EXIT_NO_LEADER
    assert verdict([row(1, "leader"), row(2), row(3, leader=2)], set())[0] == cli.EXIT_NO_LEADER, "two leaders named"
    code, said = verdict([row(1, "leader"), row(2), row(3, diverged="log diverged")], set())
    assert code == cli.EXIT_NO_LEADER and "DIVERGED" in said


def test_verdict_a_down_member_outranks_a_divergence_as_in_the_cli():
    assert verdict([row(1, "leader", diverged="x"), row(2, None)], set())[0] == cli.EXIT_UNREACHABLE


def test_verdict_leaves_out_the_nodes_the_supervisor_removed():
    """A removed node stays stopped on purpose (`up` leaves it so): it is no member to wait for."""
    assert verdict([row(1, None), row(2, "leader", leader=2), row(3, leader=2)], {1}) == (cli.EXIT_OK, "healthy")
