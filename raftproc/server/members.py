"""Membership: `member list | add | remove` as the leader runs them for a client.

`member add ID` is three steps the core takes one at a time (raftproc.core.node):
the node joins as a learner, catches up (by InstallSnapshot if it must), and is
promoted through a joint configuration, which the leader leaves by itself.
`member remove ID` is one change (and its joint step). The host drives each step
from its loop and answers the client once the committed configuration shows the
result, or says why it cannot:

- "ok": done (or it already was: re-running a command is safe);
- "error": refused for good (e.g. a node that is not a member);
- "unknown": leadership moved or time ran out mid-way; the cluster holds some
  consistent configuration on the way, and the same command, run again, goes on
  from wherever it stands.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from raftproc.core.membership import Membership
from raftproc.core.node import RaftNode
from raftproc.core.types import LEADER, MembershipChangeBusy, MembershipChangeRefused, NotLeader, TransferInProgress
from raftproc.runtime.protocol import MemberRequest, Outcome
from raftproc.server.peers import Peers
from raftproc.server.replies import Asker, Replies

Address = tuple[str, int]
Answer = Callable[..., None]
Log = Callable[..., None]
MEMBER_CHANGE_TIMEOUT = 60.0  # seconds a `member add` may take (the learner's catch-up included)


@dataclass(slots=True)
class MemberChange:
    op: str  # "add" | "remove"
    node: int
    deadline: float
    answer: Answer  # answer(status=..., result=... | error=...)
    addresses: tuple[Address, Address] | None = None  # add: (peer, client)
    last_refusal: str = ""

    def poll(self, raft: RaftNode, now: float, address_book: Callable[[int | None], bytes]) -> bool:
        """One step forward; True once the client has its answer. `address_book(node)`
        encodes the addresses of the next configuration's members, with `node` added."""
        m = raft.membership
        settled = not m.is_joint and raft.log.config_index <= raft.commit_index
        if settled and self._done(m):
            self.answer(status=Outcome.OK, result={"node": self.node, "op": self.op, "membership": membership_fields(m)})
            return True
        if raft.role != LEADER:
            self.answer(status=Outcome.UNKNOWN, error="leadership moved during the change; run the same command again to go on")
            return True
        if now > self.deadline:
            self.answer(
                status=Outcome.UNKNOWN,
                error=f"timed out ({self.last_refusal or 'waiting for a commit'}); run the same command again to go on",
            )
            return True
        if not settled:
            return False
        voters, learners = set(m.voters), set(m.learners)
        if self.op == "add":
            if self.node in learners:  # caught up enough? the core decides
                learners.discard(self.node)
                voters.add(self.node)
                with_node = None
            else:
                learners.add(self.node)
                with_node = self.node
        else:
            voters.discard(self.node)
            learners.discard(self.node)
            with_node = None
        try:
            raft.propose_membership(voters, learners, address_book(with_node))
        except (MembershipChangeBusy, TransferInProgress) as e:
            self.last_refusal = str(e)  # try again on a later pass
        except (MembershipChangeRefused, NotLeader) as e:
            self.answer(status=Outcome.ERROR, error=str(e))
            return True
        return False

    def _done(self, m: Membership) -> bool:
        if self.op == "add":
            return self.node in m.voters
        return self.node not in m.members


def membership_fields(m: Membership) -> dict[str, Any]:
    """A membership as status answers and logs show it."""
    return {"voters": list(m.voters), "learners": list(m.learners), "outgoing": list(m.outgoing)}


class MemberService:
    """`member list | add | remove` on the leader: one change at a time, stepped
    between loop passes (`poll`) until the committed configuration shows it."""

    def __init__(self, *, me: int, raft: RaftNode, peers: Peers, replies: Replies, clock: Callable[[], float], log: Log) -> None:
        self.me = me
        self.raft = raft
        self.peers = peers
        self.replies = replies
        self.clock = clock
        self.log = log
        self.change: MemberChange | None = None

    def handle(self, conn: Asker, req: MemberRequest) -> None:
        if self.raft.role != LEADER:
            self.replies.redirect(conn, req.id)
            return
        if req.op == "list":
            self.replies.answer(conn, req.id, status=Outcome.OK, result=self._list())
            return
        refusal = self._refusal(req)
        if refusal is not None:
            self.replies.answer(conn, req.id, status=Outcome.ERROR, error=refusal)
            return
        if req.op == "add" and req.node not in self.raft.membership.members:
            assert req.addresses is not None
            self.peers.add_joining(req.node, *req.addresses)
        request_id = req.id
        self.change = MemberChange(
            req.op,
            req.node,
            self.clock() + MEMBER_CHANGE_TIMEOUT,
            answer=lambda **fields: self.replies.answer(conn, request_id, **fields),
        )
        self.log("member_change_started", op=req.op, peer_id=req.node)

    def _refusal(self, req: MemberRequest) -> str | None:
        m = self.raft.membership
        if self.change is not None:
            return f"node {self.me} is already running a membership change"
        if req.op == "remove" and req.node not in m.members:
            return (
                f"node {req.node} is not a member (voters {sorted(m.voters)}, learners {sorted(m.learners)}); "
                "if an earlier remove of it answered unknown, that remove has finished"
            )
        if req.op == "add" and req.node in m.members:
            assert req.addresses is not None
            known = self.peers.book.get(req.node)
            if known is not None and (known.peer, known.client) != req.addresses:
                return f"node {req.node} is a member at another address (peer {known.peer[0]}:{known.peer[1]})"
        return None

    def _list(self) -> dict[str, Any]:
        raft = self.raft
        nodes = {}
        for node in raft.membership.members:
            a = self.peers.book.get(node)
            pr = raft.progress.get(node)
            nodes[node] = {
                "role": "voter" if raft.membership.is_voter(node) else "learner",
                "peer": f"{a.peer[0]}:{a.peer[1]}" if a else None,
                "client": f"{a.client[0]}:{a.client[1]}" if a else None,
                "match_index": raft.log.last_index if node == self.me else (pr.match_index if pr else 0),
            }
        return {
            "leader": self.me,
            "term": raft.current_term,
            "last_index": raft.log.last_index,
            **membership_fields(raft.membership),
            "nodes": nodes,
        }

    def poll(self) -> None:
        """Between passes: step the running change, if any."""
        if self.change is not None and self.change.poll(self.raft, self.clock(), self._address_book_with):
            self.change = None

    def _address_book_with(self, extra: int | None = None) -> bytes:
        members = set(self.raft.membership.members) | ({extra} if extra else set())
        return self.peers.address_book(members)

    def applied(self, membership: Membership) -> None:
        """A configuration entry was applied: nodes no longer in it are forgotten."""
        self.peers.forget_removed(membership.members)
