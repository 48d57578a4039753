"""The event names `supervisor.py logs --event` accepts are read from the node's
code (raftproc.ops.logs.logged_events): complete, and refusing what no node logs."""

from __future__ import annotations

import pytest

from raftproc.ops.logs import _EventScan, check_event, logged_events


def scan(source: str) -> _EventScan:
    import ast

    s = _EventScan()
    s.visit(ast.parse(source))
    return s


def test_logged_events_reads_every_log_call_of_the_node():
    found = logged_events()
    assert found.unread == (), "a log call whose event the scan cannot read: name the event with a string where it is logged"
    # One of each way an event is logged: the core, a room, start-up recovery, a line built by hand.
    assert {"became_leader", "frame_error", "wal_torn_tail_truncated", "log_lines_dropped", "node_started"} <= found.names


def test_logged_events_reads_literals_choices_and_forwarders():
    s = scan(
        'log("a")\n'
        'self._log("b" if x else "c", term=1)\n'
        "def forward(event, **f):\n    log(event, **f)\n"
        'line = {"event": "d", "ts": 0}\n'
        'warn("e")\n'
    )
    assert s.names == {"a", "b", "c", "d", "e"} and s.unread == []


def test_logged_events_flags_what_it_cannot_read():
    s = scan('log(f"made_{up}")\nname = "x"\nself.log(name)\ndef f(other):\n    log(event)\n')
    assert s.names == set() and s.unread == [1, 3, 5]


def test_check_event_refuses_an_unknown_name_naming_the_close_ones():
    assert check_event("became_leader") == "became_leader"
    with pytest.raises(ValueError, match="became_leader") as e:
        check_event("became_leadr")
    assert "'became_leadr'" in str(e.value)
    with pytest.raises(ValueError, match="without --event"):
        check_event("zzzz")


def test_the_events_other_code_looks_for_are_logged():
    """A name misspelt where logs are read matches nothing, silently: the live page's
    events and the core's levels must be names a node logs."""
    from raftproc.runtime.logging import CORE_EVENT_LEVELS
    from raftproc.server.watch import SHOWN_EVENTS

    names = logged_events().names
    assert set(SHOWN_EVENTS) - names == set()
    assert set(CORE_EVENT_LEVELS) - names == set()
