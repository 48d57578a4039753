"""Is a recorded key-value history linearizable?

A Wing & Gong search with Lowe's memoisation (the approach of Knossos and
Porcupine), run per key: a key-value store is linearizable exactly when each key's
sub-history is (linearizability is local, Herlihy & Wing), and small per-key
searches are what keep a 20,000-operation history fast.

The history (one JSON object per line, see raftproc.ops.workload):
- `ok: true`   the operation happened, between `call` and `return`;
- `ok: false`  it did not happen (except a cas with `mismatch: true`, which ran and
               observed a value other than `expect`: a read);
- `ok: null`   unknown: it may have taken effect at any point after `call`, or
               never. Its `return` is null.

Each key is a register: put sets it, delete clears it (null = absent), get must
observe it, cas sets it only if it holds `expect`.

The search keeps a set of operations linearized so far (a bitmask) and the register
value. From a configuration, an operation may go next if it is not linearized yet
and was called no later than the earliest return among the definite operations still
waiting (anything called after that return must follow it). The search succeeds when
every definite operation is linearized; unknown operations may be left out. Visited
(set, value) configurations are remembered, so each is explored once.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

INFINITY = float("inf")
ABSENT = None


@dataclass(frozen=True, slots=True)
class Operation:
    id: int
    client: int
    op: str  # put | get | delete | cas
    key: str
    value: str | None
    expect: str | None
    call: int
    ret: float  # INFINITY when unknown
    ok: bool | None
    output: str | None
    mismatch: bool = False

    @classmethod
    def from_record(cls, i: int, r: dict[str, Any]) -> Operation:
        ret = r.get("return")
        return cls(
            id=i,
            client=r["client"],
            op=r["op"],
            key=r["key"],
            value=r.get("value"),
            expect=r.get("expect"),
            call=r["call"],
            ret=INFINITY if ret is None else ret,
            ok=r.get("ok"),
            output=r.get("output"),
            mismatch=bool(r.get("mismatch")),
        )

    def describe(self) -> str:
        ret = "?" if self.ret == INFINITY else f"{self.ret}"
        what = {
            "put": f"put {self.value!r}",
            "get": f"get -> {self.output!r}",
            "delete": "delete",
            "cas": f"cas {self.expect!r}->{self.value!r}" + (" (mismatch)" if self.mismatch else ""),
        }[self.op]
        return f"#{self.id} client {self.client} {what} ok={self.ok} [{self.call}, {ret}]"


@dataclass
class KeyVerdict:
    key: str
    ok: bool
    operations: int
    states_explored: int
    problem: list[str] = field(default_factory=list)


@dataclass
class CheckResult:
    ok: bool
    operations: int
    keys: int
    failures: list[KeyVerdict]
    undecided: list[str]

    def summary(self) -> str:
        if self.ok:
            return f"linearizable: {self.operations} operations over {self.keys} keys"
        lines = [f"NOT linearizable: {len(self.failures)} of {self.keys} keys fail"]
        for f in self.failures[:5]:
            lines.append(f"  key {f.key!r}:")
            lines += [f"    {p}" for p in f.problem]
        if self.undecided:
            lines.append(f"  undecided (search budget spent): {self.undecided[:10]}")
        return "\n".join(lines)


def load_history(path: str | Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def check_history(records: Iterable[dict[str, Any]], *, max_states_per_key: int = 2_000_000) -> CheckResult:
    by_key: dict[str, list[Operation]] = defaultdict(list)
    total = 0
    for i, r in enumerate(records):
        op = Operation.from_record(i, r)
        total += 1
        if _irrelevant(op):
            continue
        by_key[op.key].append(op)
    failures, undecided = [], []
    for key, ops in by_key.items():
        verdict = check_key(key, ops, max_states_per_key)
        if verdict is None:
            undecided.append(key)
        elif not verdict.ok:
            failures.append(verdict)
    return CheckResult(ok=not failures and not undecided, operations=total, keys=len(by_key), failures=failures, undecided=undecided)


def _irrelevant(op: Operation) -> bool:
    """Operations that neither changed nor observed anything."""
    if op.ok is False and not (op.op == "cas" and op.mismatch):
        return True  # definitely did not happen
    if op.ok is None and op.op == "get":
        return True  # an unanswered read observed nothing and changed nothing
    return False


def _step(op: Operation, value: str | None) -> tuple[bool, str | None]:
    """Can `op` run on a register holding `value`? And what does it leave?"""
    if op.op == "put":
        return True, op.value
    if op.op == "delete":
        return True, ABSENT
    if op.op == "get":
        return op.output == value, value
    if op.op == "cas":
        if op.mismatch:
            return value != op.expect, value
        if op.ok is None:
            # An unknown cas may have run and failed its comparison: then it changed
            # nothing, which is the same as never running. Only the success matters.
            return value == op.expect, op.value
        return value == op.expect, op.value
    raise ValueError(f"unknown operation {op.op!r}")


def check_key(key: str, ops: list[Operation], max_states: int) -> KeyVerdict | None:
    """None when the search budget ran out before a verdict.

    Definite operations are kept in call order and in return order with a pointer to
    the first one not yet linearized in each, so a step looks only at the operations
    inside the current concurrency window, not the whole history. Unknown operations
    (few) are kept apart: each stays a candidate from its call on.
    """
    definite = sorted((o for o in ops if o.ret != INFINITY), key=lambda o: o.call)
    unknown = sorted((o for o in ops if o.ret == INFINITY), key=lambda o: o.call)
    nd = len(definite)
    by_ret = sorted(range(nd), key=lambda i: definite[i].ret)
    bit_of = {id(o): i for i, o in enumerate(definite)}
    bit_of.update({id(o): nd + j for j, o in enumerate(unknown)})
    all_definite = (1 << nd) - 1

    def first_unset(order, start: int, mask: int) -> int:
        while start < len(order) and mask >> order[start] & 1:
            start += 1
        return start

    identity = list(range(nd))
    visited: set[tuple[int, str | None]] = set()
    stack: list[tuple[int, str | None, int, int]] = [(0, ABSENT, 0, 0)]
    best: tuple[int, str | None, int, int] = (0, ABSENT, 0, 0)
    while stack:
        mask, value, lo, lo_ret = stack.pop()
        if (mask, value) in visited:
            continue
        visited.add((mask, value))
        if len(visited) > max_states:
            return None
        lo = first_unset(identity, lo, mask)
        lo_ret = first_unset(by_ret, lo_ret, mask)
        if mask & all_definite == all_definite:
            return KeyVerdict(key, True, len(ops), len(visited))
        if lo > best[2]:
            best = (mask, value, lo, lo_ret)
        horizon = definite[by_ret[lo_ret]].ret
        candidates = []
        for i in range(lo, nd):
            o = definite[i]
            if o.call > horizon:
                break
            if not mask >> i & 1:
                candidates.append((i, o))
        for j, o in enumerate(unknown):
            if o.call > horizon:
                break
            if not mask >> (nd + j) & 1:
                candidates.append((nd + j, o))
        for bit, o in candidates:
            legal, new_value = _step(o, value)
            if legal:
                stack.append((mask | 1 << bit, new_value, lo, lo_ret))
    mask, value, lo, lo_ret = best
    return KeyVerdict(key, False, len(ops), len(visited), _explain(definite, unknown, mask, value, lo, lo_ret, by_ret))


def _explain(definite, unknown, mask, value, lo, lo_ret, by_ret) -> list[str]:
    nd = len(definite)
    done = [definite[i] for i in range(nd) if mask >> i & 1]
    horizon = definite[by_ret[lo_ret]].ret if lo_ret < nd else INFINITY
    stuck = [definite[i] for i in range(lo, nd) if not mask >> i & 1 and definite[i].call <= horizon]
    stuck += [o for j, o in enumerate(unknown) if not mask >> (nd + j) & 1 and o.call <= horizon]
    lines = [f"longest linearizable prefix: {len(done)} operations, leaving the value {value!r}"]
    lines += [f"  last ordered: {o.describe()}" for o in sorted(done, key=lambda o: o.call)[-3:]]
    lines.append("none of these can go next:")
    lines += [f"  {o.describe()}" for o in stuck[:8]]
    return lines
