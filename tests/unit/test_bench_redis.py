"""`bench --compare redis` without any process: reading redis-benchmark's CSV (the
texts below are what redis-benchmark 7.0 printed), refusing what is not a
measurement, and the figures drawn from the runs."""

from __future__ import annotations

import math

import pytest

from raftproc.ops.bench.redis import RESP_MEDIANS, BenchmarkFailed, RespPoint, clients_and_pipeline, failed_run, parse_csv
from raftproc.ops.bench.redis_table import resp_ratios

HEADER = '"test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"\n'
SET = '"SET","285714.28","0.044","0.016","0.039","0.079","0.119","0.335"\n'
MSET = '"MSET (10 keys)","266666.66","0.052","0.016","0.047","0.087","0.167","0.407"\n'


def test_parse_csv_reads_the_row_of_its_test():
    assert parse_csv("set", 0, HEADER + SET, "") == {
        "ops_per_s": 285714.28,
        "avg_ms": 0.044,
        "p50_ms": 0.039,
        "p95_ms": 0.079,
        "p99_ms": 0.119,
        "max_ms": 0.335,
    }
    assert parse_csv("mset", 0, HEADER + MSET, "WARNING: Could not fetch server CONFIG\n")["p99_ms"] == 0.167


def test_parse_csv_fails_on_an_error_reply_even_with_rows_before_it():
    stderr = "Error from server: ERR unknown command 'INCR', with args beginning with: 'counter:__rand_int__' \n"
    with pytest.raises(BenchmarkFailed, match="Error from server: ERR unknown command 'INCR'"):
        parse_csv("set", 1, HEADER + SET, stderr)


@pytest.mark.parametrize(
    ("returncode", "stdout", "why"),
    [
        (1, HEADER + SET, "exited with 1"),  # a connection lost, say, after some rows
        (0, HEADER, "no row"),  # truncated
        (0, HEADER + MSET, "no row"),  # another test's row only
        (0, HEADER + '"SET","0.00","0","0","0","0","0","0"\n', "no throughput"),
        (0, HEADER + '"SET","fast","0","0","0","0","0","0"\n', "unreadable"),
    ],
)
def test_parse_csv_refuses_what_is_not_a_measurement(returncode, stdout, why):
    with pytest.raises(BenchmarkFailed, match=why):
        parse_csv("set", returncode, stdout, "")


def test_inflight_is_connections_times_pipeline_as_the_raftproc_rows_load():
    assert [clients_and_pipeline(n) for n in (1, 16, 32, 128, 512)] == [(1, 1), (16, 1), (32, 1), (32, 4), (32, 16)]


def _point(system: str, *ops: float) -> RespPoint:
    p = RespPoint(system, 1, 16, 64, 1000, test="set", clients=16)
    p.runs = [failed_run("boom") if math.isnan(x) else dict.fromkeys(RESP_MEDIANS, x) | {"errors": 0} for x in ops]
    return p


def test_a_failed_run_is_kept_but_left_out_of_median_and_span():
    p = _point("redis-durable", 100.0, math.nan, 300.0)
    assert p.median("ops_per_s") == 200.0 and p.span("ops_per_s") == (100.0, 300.0)
    assert p.failures() == ["boom"] and p.as_dict()["runs"][1]["errors"] == 1


def test_ratios_of_raftproc_to_each_redis():
    (row,) = resp_ratios([_point("raftproc-resp", 50.0), _point("redis-durable", 100.0), _point("redis-memory", 500.0)])
    assert row["raftproc/redis-durable"] == 0.5 and row["raftproc/redis-memory"] == 0.1
    (row,) = resp_ratios([_point("raftproc-resp", math.nan), _point("redis-durable", 100.0)])
    assert math.isnan(row["raftproc/redis-durable"]) and math.isnan(row["raftproc/redis-memory"])
