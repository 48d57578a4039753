from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from raftproc.core.log import LogInvariantError, RaftLog
from raftproc.core.messages import Entry
from raftproc.core.progress import PROBE, REPLICATE, Progress
from raftproc.core.quorum import has_quorum, majority, quorum_index


def entries(*terms):
    return [Entry(t, i) for i, t in enumerate(terms, start=1)]


def test_log_term_at_bounds():
    log = RaftLog(entries(1, 1, 2))
    assert [log.term_at(i) for i in range(5)] == [0, 1, 1, 2, None]
    assert (log.last_index, log.last_term) == (3, 2)


def test_log_rejects_gaps_and_decreasing_terms():
    log = RaftLog(entries(1, 2))
    with pytest.raises(LogInvariantError):
        log.append([Entry(2, 4)])
    with pytest.raises(LogInvariantError):
        log.append([Entry(1, 3)])


def test_log_slice_is_half_open():
    log = RaftLog(entries(1, 1, 2, 3))
    assert [e.index for e in log.slice(2, 4)] == [2, 3]
    assert log.slice(5, 9) == ()
    assert [e.index for e in log.slice(0, 2)] == [1]


def test_log_truncate_pulls_stable_index_down():
    log = RaftLog(entries(1, 1, 2, 3))
    assert log.stable_index == 4
    log.truncate_from(3)
    assert (log.last_index, log.stable_index) == (2, 2)
    log.append([Entry(4, 3)])
    assert log.unstable() == (Entry(4, 3),)


def test_log_term_runs():
    log = RaftLog(entries(1, 2, 2, 2, 5))
    assert log.first_index_of_term(4) == 2
    assert log.last_index_of_term(2) == 4
    assert log.last_index_of_term(3) is None
    assert log.last_index_of_term(7) is None


@pytest.mark.parametrize(
    "theirs, ok",
    [((3, 2), True), ((2, 2), False), ((9, 1), False), ((1, 3), True), ((4, 2), True)],
)
def test_log_is_up_to_date(theirs, ok):
    log = RaftLog(entries(1, 1, 2))
    assert log.is_up_to_date(*theirs) is ok


def test_majority_sizes():
    assert [majority(n) for n in range(1, 8)] == [1, 2, 2, 3, 3, 4, 4]


@given(st.lists(st.integers(0, 100), min_size=1, max_size=9))
def test_quorum_index_is_held_by_a_majority_and_is_the_highest_such(matches):
    q = quorum_index(matches, len(matches))
    assert sum(1 for m in matches if m >= q) >= majority(len(matches))
    assert sum(1 for m in matches if m >= q + 1) < majority(len(matches))


def test_has_quorum_counts_grants_only():
    assert has_quorum([True, True, False], 3)
    assert not has_quorum([True, False, False, True], 5)


def test_progress_success_moves_to_replicate_and_never_backwards():
    pr = Progress(next_index=10)
    assert pr.on_success(7)
    assert (pr.state, pr.match_index, pr.next_index) == (REPLICATE, 7, 10)
    assert not pr.on_success(5)
    assert pr.match_index == 7


def test_progress_reject_probes_but_not_below_match():
    pr = Progress(match_index=5, next_index=20, state=REPLICATE)
    pr.on_reject(2)
    assert (pr.state, pr.next_index) == (PROBE, 6)
    assert pr.inflight() == 0


def test_appends_to_a_follower_far_behind_are_capped_in_bytes():
    """400 entries of 100 KB behind: no AppendEntries carries more than the byte cap
    (an entry larger than the cap travels alone), so no message outgrows the
    transport's frame limit and the follower catches up."""
    from harness import Cluster

    from raftproc.core import AppendEntries, RaftOptions

    cfg = RaftOptions(
        election_timeout_min=10,
        election_timeout_max=20,
        heartbeat_interval=3,
        pre_vote=False,
        check_quorum=False,
        max_bytes_per_message=250_000,
    )
    c = Cluster(3, config=cfg)
    leader = c.elect(1)
    c.deliver()
    c.crash(3)
    for _ in range(40):
        c.propose(1, b"v" * 100_000)
        c.deliver()
    c.start(3)
    c.tick(1, cfg.heartbeat_interval)
    sizes = []
    for _ in range(200):
        sizes += [sum(len(e.command or b"") for e in m.entries) for m in c.queue if isinstance(m, AppendEntries) and m.dst == 3]
        c.deliver(rounds=1)
        if c.node(3).log.last_index == leader.log.last_index:
            break
    assert c.node(3).log.last_index == leader.log.last_index
    assert 200_000 <= max(sizes) <= 250_000
