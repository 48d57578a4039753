"""What each RESP error reply of raftproc's port (docs/redis.md) becomes in a chaos
history, with the replies turned into exceptions by redis-py's own parser, as a
client meets them."""

from __future__ import annotations

import pytest
from redis._parsers.base import BaseParser  # how redis-py turns an error line into an exception
from redis.exceptions import ConnectionError, TimeoutError

from raftproc.client import Failed, Unknown
from raftproc.ops.redis_workload import error_code, outcome_error

REPLIES = {
    "CLUSTERDOWN no leader: node 2 knows none": Failed,
    "TRYAGAIN the entry was overwritten by a newer leader": Failed,
    "MISCONF this node cannot write its log: disk full": Failed,
    "ERR wrong number of arguments for 'set' command": Failed,
    "UNKNOWN outcome unknown: the connection to the leader dropped": Unknown,
    "LOADING something this port never sends": Unknown,  # not guessed Failed
}


@pytest.mark.parametrize("line", REPLIES)
def test_redis_error_reply_write_outcome(line):
    e = BaseParser.parse_error(line)
    assert error_code(e) == line.split()[0]
    assert type(outcome_error(e, write=True, sent=True)) is REPLIES[line]


@pytest.mark.parametrize("line", REPLIES)
def test_redis_error_reply_read_always_failed(line):
    """A read changes nothing: one that may have run simply failed."""
    assert type(outcome_error(BaseParser.parse_error(line), write=False, sent=True)) is Failed


@pytest.mark.parametrize(
    "e", [ConnectionError("Connection closed by server."), TimeoutError("Timeout reading from socket"), OSError(104, "reset")]
)
def test_redis_connection_lost_after_sending(e):
    assert error_code(e) is None
    assert type(outcome_error(e, write=True, sent=True)) is Unknown
    assert type(outcome_error(e, write=False, sent=True)) is Failed


def test_redis_nothing_sent_is_failed_whatever_the_error():
    for e in [ConnectionError("refused"), TimeoutError("Timeout connecting"), BaseParser.parse_error("UNKNOWN handshake")]:
        assert type(outcome_error(e, write=True, sent=False)) is Failed
