"""Benchmarks: a raftproc cluster, and its peers, under load generators in separate
processes (scripts/bench.py is the command).

- points.py     a measured point (system, size, load) and its runs
- loadgens.py   raftproc.ops.loadgen processes: start them, gather their results
- targets.py    a cluster under test: raftproc, etcd, PySyncObj, what each must offer
- measure.py    one run of a point: throughput, latency, CPU, memory; the disk's fsync; failover
- compare.py    the comparison: every system at every point, interleaved over rounds
- table.py      the comparison's table, its headline figures and its JSON
- reads.py      gets through the log, by ReadIndex and by lease
- snapshots.py  restart and catch-up with a large store; disk under churn
- redis.py      --compare redis: raftproc's RESP port beside redis-server, all under redis-benchmark
- redis_table.py  its table, the ratios raftproc/Redis, and its failed runs
"""
