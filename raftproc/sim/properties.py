"""The properties the simulator checks after every step and at every write, send,
apply and install: Raft's safety properties (paper, Figure 3), durability, persist
before promise, linearizable reads (the list is in raftproc.sim.cluster).

A `PropertyChecker` keeps the cluster-wide record the checks compare against (what
was committed, by whom first, which entry each (index, term) names, who led each
term, the reads still to serve) and reads the nodes and their storage. The
simulation calls `check_step` after each step; the hosts call the others as the
driver writes, sends, applies and installs.
"""

from __future__ import annotations

from collections.abc import Mapping

from raftproc.core.invariants import NodeView, check_node, check_transition
from raftproc.core.membership import Membership
from raftproc.core.messages import AppendEntriesResponse, Entry, Message, NodeId, RequestVote, RequestVoteResponse, describe
from raftproc.core.node import RaftNode
from raftproc.core.quorum import majority
from raftproc.core.ready import ReadState
from raftproc.core.types import LEADER
from raftproc.sim.node import SimNode
from raftproc.sim.stats import SimStats
from raftproc.sim.storage import MemoryStorage
from raftproc.sim.timeline import Timeline


class SafetyViolation(AssertionError):
    pass


class LivenessViolation(AssertionError):
    pass


class PropertyChecker:
    def __init__(self, nodes: Mapping[NodeId, SimNode], bootstrap: Membership, stats: SimStats, timeline: Timeline) -> None:
        """`nodes` is the simulation's own mapping, spares included, read as it changes."""
        self._nodes = nodes
        self._bootstrap = bootstrap
        self._quorum = majority(len(bootstrap.voters))
        self._stats = stats
        self._timeline = timeline
        # What the cluster as a whole has committed: committed[i - 1] is entry i.
        self.committed: list[Entry] = []
        # commit_terms[i - 1]: the term of the first node seen applying entry i. A node
        # learns of a commit only in the committing leader's term or later, so this is
        # never below the term in which entry i was committed.
        self._commit_terms: list[int] = []
        # Log Matching: (index, term) -> (command, term of the entry before it).
        self._entry_identity: dict[tuple[int, int], tuple[bytes | None, int]] = {}
        self.leader_of_term: dict[int, NodeId] = {}
        # Reads asked and not yet served: request -> entries committed when it was asked.
        self._reads: dict[int, int] = {}

    def is_committed(self, entry: tuple[int, int]) -> bool:
        index, term = entry
        return len(self.committed) >= index and self.committed[index - 1].term == term

    def check_step(self) -> None:
        newest_committed = self.committed[-1] if self.committed else None
        for sn in self._nodes.values():
            node = sn.node
            if node is None:
                continue
            check_node(node)
            if node.diverged is not None or node.peer_divergences:
                # Storage here keeps what it acknowledged: two histories under one
                # term can only come from a bug in the core or the driver.
                raise SafetyViolation(
                    f"node {sn.id}: {node.diverged.describe() if node.diverged else ''} peers reported divergence: {node.peer_divergences}"
                )
            view = NodeView.of(node)
            assert sn.view is not None
            check_transition(sn.view, view)
            sn.view = view
            if node.role == LEADER:
                self._check_leader(node)
        if newest_committed is not None:
            self._check_durable(newest_committed)
        for sn in self._nodes.values():
            self._check_committed_kept(sn)

    def _check_committed_kept(self, sn: SimNode) -> None:
        st, committed = sn.storage, self.committed
        floor = sn.durable_floor
        if floor and st.term_at(floor) != committed[floor - 1].term:
            raise SafetyViolation(
                f"node {sn.id} lost committed entry {committed[floor - 1].term}/{floor} from its storage "
                f"(now {st.term_at(floor)}; snapshot at {st.snapshot_index}, last index {st.last_index})"
            )
        while floor < len(committed) and st.term_at(floor + 1) == committed[floor].term:
            floor += 1
        sn.durable_floor = floor

    def _check_leader(self, node: RaftNode) -> None:
        term = node.current_term
        known = self.leader_of_term.get(term)
        if known is None:
            self.leader_of_term[term] = node.id
            self._stats.leaders_elected += 1
            self._timeline.note(f"node {node.id} leads term {term}")
        elif known != node.id:
            raise SafetyViolation(f"Election Safety: nodes {known} and {node.id} both lead term {term}")
        # Leader Completeness (§5.4): the newest entry committed in this term or
        # before is in the leader's log (by Log Matching, so is everything before it).
        for i in range(len(self.committed) - 1, -1, -1):
            if self._commit_terms[i] <= term:
                e = self.committed[i]
                # Compacted entries were applied here (State Machine Safety checks them).
                if e.index > node.log.snapshot_index and node.log.term_at(e.index) != e.term:
                    raise SafetyViolation(f"Leader Completeness: leader {node.id} of term {term} lacks committed entry {e.term}/{e.index}")
                break

    def _check_durable(self, e: Entry) -> None:
        lacking = [sn for sn in self._nodes.values() if sn.storage.term_at(e.index) != e.term]
        holders = len(self._nodes) - len(lacking)
        if not self._stats.config_changes and holders < self._quorum:
            raise SafetyViolation(f"Durability: committed entry {e.term}/{e.index} is stored on {holders} nodes, fewer than a majority")
        for sn in lacking:
            st = sn.storage
            last_term = st.last_term
            if last_term < e.term:
                continue  # every holder's log is more up-to-date than this one
            config = st.membership(self._bootstrap)
            if not config.is_voter(sn.id):
                continue  # it would never campaign
            electors = [other.id for other in self._nodes.values() if _at_least_as_up_to_date(st, other.storage)]
            if config.has_quorum(electors):
                raise SafetyViolation(
                    f"Leader Completeness: node {sn.id}, whose log ends at {last_term}/{st.last_index}, lacks "
                    f"committed entry {e.term}/{e.index} yet could win the votes of {sorted(electors)} "
                    f"under its configuration {config.describe()}"
                )

    def _check_log_matching(self, node_id: NodeId, e: Entry, prev_term: int) -> None:
        key = (e.index, e.term)
        identity = (e.command, prev_term)
        known = self._entry_identity.setdefault(key, identity)
        if known != identity:
            raise SafetyViolation(f"Log Matching: node {node_id} stores {e.term}/{e.index} as {identity}, another node as {known}")

    def check_stored(self, node_id: NodeId, storage: MemoryStorage, entries: tuple[Entry, ...]) -> None:
        """A write reaches storage: it continues the stored log without a gap, and
        every (index, term) it stores names the entry it names everywhere else."""
        if not entries:
            return
        first = entries[0].index
        prev_term = storage.term_at(first - 1)
        if prev_term is None:
            raise SafetyViolation(f"node {node_id} persists entry {first} after a gap (storage ends at {storage.last_index})")
        for e in entries:
            self._check_log_matching(node_id, e, prev_term)
            prev_term = e.term

    def check_snapshot_data(self, node_id: NodeId, data: tuple[Entry, ...]) -> None:
        for e in data:
            if e.index > len(self.committed) or self.committed[e.index - 1] != e:
                raise SafetyViolation(f"State Machine Safety: node {node_id} installs a snapshot holding {e}, never committed there")

    def check_applied(self, node_id: NodeId, applied_index: int, e: Entry, term: int) -> None:
        """Node `node_id`, which had applied up to `applied_index`, applies `e` in
        `term`: in order, and the entry every node applies there. The first to apply
        an index records it as committed."""
        if e.index != applied_index + 1:
            raise SafetyViolation(f"node {node_id} applies {e.index} after {applied_index}")
        if e.index <= len(self.committed):
            known = self.committed[e.index - 1]
            if known != e:
                raise SafetyViolation(
                    f"State Machine Safety: node {node_id} applies {e.term}/{e.index} {e.command!r} "
                    f"where {known.term}/{known.index} {known.command!r} was applied"
                )
        else:
            self.committed.append(e)
            self._commit_terms.append(term)

    def read_asked(self, request: int) -> None:
        """A client asked read `request`: it must see everything committed by now."""
        self._reads[request] = len(self.committed)

    def check_read(self, node_id: NodeId, rs: ReadState) -> None:
        committed_before = self._reads.pop(rs.request)
        if rs.index < committed_before:
            raise SafetyViolation(
                f"stale read: node {node_id} serves read {rs.request} at index {rs.index}, but {committed_before} "
                "entries were committed before it was asked"
            )
        self._stats.reads_served += 1

    def check_promise(self, sn: SimNode, msg: Message, promised_term: int | None) -> None:
        """Persist before you promise (Figure 2): what a message commits its sender to
        must already be in the sender's storage."""
        hs = sn.storage.hard_state
        # Pre-vote traffic names a term nobody has taken yet (thesis §9.6); it
        # promises nothing, so only the pre-candidate's own next term is allowed.
        allowed = hs.current_term
        if isinstance(msg, RequestVote) and msg.pre_vote:
            allowed = hs.current_term + 1
        elif isinstance(msg, RequestVoteResponse) and msg.pre_vote and msg.vote_granted:
            allowed = msg.term
        if msg.term > allowed:
            raise SafetyViolation(f"node {sn.id} sends term {msg.term} with term {hs.current_term} persisted: {describe(msg)}")
        if isinstance(msg, RequestVoteResponse) and msg.vote_granted and not msg.pre_vote:
            # Safe once the node can never vote again in that term: it stored that vote,
            # or a later term (a grant held back for a sync may leave after a newer term
            # reached the disk in the same sync).
            if hs.current_term == msg.term and hs.voted_for != msg.dst:
                raise SafetyViolation(f"node {sn.id} grants a vote it has not persisted ({hs}): {describe(msg)}")
        elif isinstance(msg, AppendEntriesResponse) and msg.success:
            if sn.storage.term_at(msg.match_index) != promised_term:
                raise SafetyViolation(f"node {sn.id} acknowledges entries it has not persisted: {describe(msg)}")


def _at_least_as_up_to_date(candidate: MemoryStorage, voter: MemoryStorage) -> bool:
    """§5.4.1 between two stored logs: would `voter` find `candidate` up to date?"""
    c_term, v_term = candidate.last_term, voter.last_term
    if c_term != v_term:
        return c_term > v_term
    return candidate.last_index >= voter.last_index
