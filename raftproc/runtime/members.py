"""Membership changes as the leader's host runs them for a client.

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

from raftproc.core.node import RaftNode
from raftproc.core.types import LEADER, MembershipChangeBusy, MembershipChangeRefused, NotLeader, TransferInProgress

Address = tuple[str, int]
Answer = Callable[..., None]


@dataclass(slots=True)
class MemberChange:
    op: str  # "add" | "remove"
    node: int
    deadline: float
    answer: Answer  # answer(status=..., result=... | error=...)
    addresses: tuple[Address, Address] | None = None  # add: (peer, client)
    last_refusal: str = ""

    def poll(self, raft: RaftNode, now: float, describe: Callable[[int | None], bytes]) -> bool:
        """One step forward; True once the client has its answer. `describe(node)`
        encodes the address book for the next configuration, with `node` added."""
        m = raft.membership
        settled = not m.is_joint and raft.log.config_index <= raft.commit_index
        if settled and self._done(m):
            self.answer(status="ok", result={"node": self.node, "op": self.op, "membership": describe(m)})
            return True
        if raft.role != LEADER:
            self.answer(status="unknown", error="leadership moved during the change; run the same command again to go on")
            return True
        if now > self.deadline:
            self.answer(
                status="unknown", error=f"timed out ({self.last_refusal or 'waiting for a commit'}); run the same command again to go on"
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
            raft.propose_membership(voters, learners, describe(with_node))
        except (MembershipChangeBusy, TransferInProgress) as e:
            self.last_refusal = str(e)  # try again on a later pass
        except (MembershipChangeRefused, NotLeader) as e:
            self.answer(status="error", error=str(e))
            return True
        return False

    def _done(self, m) -> bool:
        if self.op == "add":
            return self.node in m.voters
        return self.node not in m.members


def describe(m) -> dict[str, Any]:
    return {"voters": list(m.voters), "learners": list(m.learners), "outgoing": list(m.outgoing)}
