"""Majority arithmetic, kept apart so joint consensus can replace it in one place."""

from __future__ import annotations

from collections.abc import Iterable


def majority(voters: int) -> int:
    """The smallest number of voters that is more than half of `voters`."""
    return voters // 2 + 1


def quorum_index(match_indexes: Iterable[int], voters: int) -> int:
    """The highest index that at least a majority of `voters` hold.

    `match_indexes` gives one value per voter (the leader's own included); the
    answer is the majority-th largest of them.
    """
    ordered = sorted(match_indexes, reverse=True)
    return ordered[majority(voters) - 1]


def has_quorum(granted: Iterable[bool], voters: int) -> bool:
    return sum(1 for g in granted if g) >= majority(voters)
