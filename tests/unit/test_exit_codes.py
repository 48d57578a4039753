"""The supervisor's status exits as the client CLI's does, for the same cluster."""

from __future__ import annotations

import pytest

from raftproc import cli
from raftproc.ops import supervisor
from raftproc.ops.supervisor import members_answers, verdict


@pytest.mark.parametrize("name", ["EXIT_OK", "EXIT_FAILED", "EXIT_USAGE", "EXIT_UNREACHABLE", "EXIT_NO_LEADER", "EXIT_INTERRUPTED"])
def test_exit_codes_are_the_clis(name):
    assert getattr(supervisor, name) == getattr(cli, name)


def answer(leader: int | None = 1, diverged: str | None = None) -> dict:
    return {"role": "follower", "leader": leader, "diverged": diverged}


def test_verdict_healthy_down_no_leader_and_diverged():
    assert verdict({1: answer(), 2: answer(), 3: answer()}) == (cli.EXIT_OK, "healthy")
    code, said = verdict({1: answer(), 2: None, 3: answer()})
    assert code == cli.EXIT_UNREACHABLE and "nodes [2] do not answer" in said
    assert verdict({1: answer(), 2: answer(), 3: answer(leader=None)})[0] == cli.EXIT_NO_LEADER
    assert verdict({1: answer(), 2: answer(), 3: answer(leader=2)})[0] == cli.EXIT_NO_LEADER, "two leaders named"
    code, said = verdict({1: answer(), 2: answer(), 3: answer(diverged="log diverged")})
    assert code == cli.EXIT_NO_LEADER and "DIVERGED" in said


def test_verdict_a_down_member_outranks_a_divergence_as_in_the_cli():
    assert verdict({1: answer(diverged="x"), 2: None})[0] == cli.EXIT_UNREACHABLE


def test_the_nodes_the_supervisor_removed_are_no_members():
    """A removed node stays stopped on purpose (`up` leaves it so): nothing to wait for."""
    rows = [{"node": 1, "state": "stopped"}, {"node": 2, "state": "running", **answer(2)}, {"node": 3, "state": "dead"}]
    assert members_answers(rows, {1}) == {2: rows[1], 3: None}, "a row without a role did not answer"
    assert verdict(members_answers(rows, {1, 3})) == (cli.EXIT_OK, "healthy")
