"""The node host: one Raft node and the rooms that do its IO, wired together.

    open_host(cfg, node_id, log=...)   recover from disk, build every room, listen
    NodeHost(...)                      the wiring, named collaborator by collaborator

Rooms, each with one job:
- the Ready driver (raftproc.server.driver): persist, send, apply, advance; the
  same code the simulator proves;
- peers (raftproc.server.peers): links to the other nodes, hellos, the address book;
- snapshots (raftproc.server.snapshots): taking, compacting, installing, streaming;
- the client service (raftproc.server.clients): typed requests, waiting clients,
  reads, membership changes; it is the driver's state machine;
- the event loop (raftproc.runtime.loop), the WAL (raftproc.runtime.wal).

Each pass of the loop ends in `_after_pass`: transfers are settled and a
membership change is stepped (both may make a Ready), the driver carries out every
Ready, clients of a node that lost leadership are told, links follow the
membership, and a snapshot is taken when due. Ticks come from a timer every
`tick_ms`; the clock is injected (`clock`), as every room's is.

A full disk stalls the driver mid-Ready (raftproc.server.driver). Until the write
goes through, the node is frozen: no ticks, peer frames are dropped (to the
cluster it looks partitioned, so a leader is replaced once its followers' election
timers fire), clients get "disk_full" for everything but status, and the write is
retried every DISK_RETRY_INTERVAL. Nothing acknowledged depends on the stalled
write, and once it succeeds the node goes on where it stopped (`disk_write_resumed`).
"""

from __future__ import annotations

import dataclasses
import gc
import os
import random
import time
from collections.abc import Callable, Sequence
from typing import Any

from raftproc.config import ClusterConfig
from raftproc.core.divergence import Divergence
from raftproc.core.messages import AppendEntries, AppendEntriesResponse, InstallSnapshot, Message
from raftproc.core.node import RaftNode
from raftproc.core.types import LEADER, CommittedConflict
from raftproc.kv.state_machine import KeyValueStore
from raftproc.runtime.histogram import Histogram
from raftproc.runtime.identity import KnownPeers, is_joining, load_identity, record_divergence, recorded_divergence
from raftproc.runtime.linkfaults import NO_FAULTS, LinkFaults
from raftproc.runtime.logging import core_logger
from raftproc.runtime.loop import EventLoop
from raftproc.runtime.members import describe
from raftproc.runtime.recovery import recover_state
from raftproc.runtime.tls import TlsContexts, TlsError
from raftproc.runtime.transfer import SnapshotAck, SnapshotChunk
from raftproc.runtime.wal import BackgroundSync, SyncFailed, WriteAheadLog
from raftproc.server.clients import ClientService
from raftproc.server.driver import Driver
from raftproc.server.incarnations import IncarnationRegistry
from raftproc.server.links import LinkShaper
from raftproc.server.metrics import MetricsServer, Reading
from raftproc.server.peers import FrameRefused, Peers
from raftproc.server.snapshots import SnapshotPolicy, Snapshots
from raftproc.server.trace import Tracer
from raftproc.server.watch import EventFeed, Watch

Log = Callable[..., None]
Clock = Callable[[], float]
GC_FREEZE_INTERVAL = 5.0  # seconds
IDLE_SWEEP_INTERVAL = 1.0  # seconds between looks for idle connections
DISK_RETRY_INTERVAL = 0.5  # seconds between attempts at a write that found the disk full
HEALTH_APPLY_WINDOW = 10.0  # seconds a node may hold committed entries unapplied and still be healthy


class PeerTransport:
    """The driver's transport: Raft messages over the peer links; an InstallSnapshot
    becomes a snapshot stream. It times one AppendEntries round trip per peer at a
    time (sent, to the next answer from that peer) for the metrics."""

    def __init__(self, peers: Peers, snapshots: Snapshots, loop: EventLoop, tracer: Tracer) -> None:
        self.peers = peers
        self.snapshots = snapshots
        self.loop = loop
        self.tracer = tracer
        self.rtt: dict[int, Histogram] = {}
        self._timing: dict[int, float] = {}  # peer -> when the timed AppendEntries left

    def send(self, messages: Sequence[Message]) -> None:
        for msg in messages:
            if isinstance(msg, InstallSnapshot):
                self.snapshots.send(msg)
            else:
                if isinstance(msg, AppendEntries) and msg.dst not in self._timing:
                    self._timing[msg.dst] = self.loop.clock()
                if self.tracer.watching:
                    self.tracer.sending(msg)
                self.peers.send(msg)

    def answered(self, peer: int) -> None:
        sent = self._timing.pop(peer, None)
        if sent is not None:
            self.rtt.setdefault(peer, Histogram()).observe(self.loop.clock() - sent)

    def forget(self, peer: int) -> None:
        self._timing.pop(peer, None)  # the link broke: that message may never be answered

    def flush(self) -> None:
        self.loop.flush_now()


class NodeHost:
    def __init__(
        self,
        *,
        node_id: int,
        cfg: ClusterConfig,
        loop: EventLoop,
        raft: RaftNode,
        kv: KeyValueStore,
        wal: WriteAheadLog,
        syncer: BackgroundSync | None,
        peers: Peers,
        snapshots: Snapshots,
        clients: ClientService,
        driver: Driver,
        incarnations: IncarnationRegistry,
        clock: Clock,
        log: Log,
        tls: TlsContexts | None = None,
    ) -> None:
        self.id = node_id
        self.tls = tls
        self.cfg = cfg
        self.loop = loop
        self.raft = raft
        self.kv = kv
        self.wal = wal
        self.syncer = syncer
        self.peers = peers
        self.snapshots = snapshots
        self.clients = clients
        self.driver = driver
        self.incarnations = incarnations
        self.transport: PeerTransport = driver.transport  # type: ignore[assignment]
        self.metrics: MetricsServer | None = None
        self.leader_changes = 0
        self._leader_seen = raft.leader_id
        self._applied_seen = (kv.last_applied, clock())  # (index, when it last moved)
        self.clock = clock
        self.log = log
        self.running = True
        self.frozen_since: float | None = None  # the disk was full at this time (clock)
        self._unreachable_while_frozen: set[int] = set()
        self._linked_membership = None
        self._divergence_recorded = raft.diverged is not None  # recorded already, or not yet diverged
        self._reconcile_links()
        loop.after_pass.append(self._after_pass)
        self._tick_interval = cfg.tick_ms / 1000
        # A sync slower than this makes a leader step down: twice the longest election
        # timeout. A loaded 2-core machine saw single fsyncs of 150-250 ms (the shortest
        # timeout is 150 ms), and a leader that stepped down for each churned for nothing.
        self._slow_sync_limit = 2 * cfg.election_timeout_max * self._tick_interval
        self._next_tick = clock() + self._tick_interval
        self._last_tick_at = clock()
        loop.call_at(self._next_tick, self._tick)
        loop.call_later(GC_FREEZE_INTERVAL, self._freeze_heap)
        loop.call_later(IDLE_SWEEP_INTERVAL, self._close_idle)

    # --- running ------------------------------------------------------------------

    def run(self) -> None:
        try:
            self.loop.run()
        finally:
            self.close()

    def stop(self) -> None:
        self.loop.stop()

    def close(self) -> None:
        if not self.running:
            return
        self.running = False
        if self.metrics is not None:
            self.metrics.close()
        self.clients.close()
        self.peers.close()
        if self.syncer is not None:
            self.syncer.stop()
        self.snapshots.close()
        try:
            self.wal.close()
        except SyncFailed:
            pass  # the error that stops the node is already on its way up
        self.loop.close()
        self.log("node_stopped")

    def reload_tls(self) -> None:
        """SIGHUP: read the certificate, key and CA bundle again. New connections
        use them; open ones keep the session they have. A file that does not load
        leaves the old contexts in place."""
        if self.tls is None:
            self.log("tls_reload_skipped", level="warning", reason="the config has no [tls] table")
            return
        try:
            self.tls.reload()
        except TlsError as e:
            self.log("tls_reload_failed", level="error", error=str(e))
            return
        f = self.tls.files
        self.log("tls_reloaded", ca=str(f.ca), cert=str(f.cert), key=str(f.key))

    def _freeze_heap(self) -> None:
        """Move every object alive now out of the cyclic GC's reach (gc.freeze).

        The log and the key-value store hold millions of long-lived objects; a full
        collection walks them all and, measured in a 60-second run at peak load,
        paused the leader long enough to lose an election. Frozen objects are never
        scanned again, so pauses stay proportional to what is new. The cost: a
        reference cycle among frozen objects is never collected (the loop creates
        none on purpose; refcounting frees the rest).
        """
        gc.freeze()
        self.loop.call_later(GC_FREEZE_INTERVAL, self._freeze_heap)

    def _close_idle(self) -> None:
        idle, first_frame = self.cfg.idle_timeout_ms / 1000, self.cfg.handshake_timeout_ms / 1000
        self.clients.close_idle(idle, first_frame)
        self.peers.close_idle(idle, first_frame)
        self.loop.call_later(IDLE_SWEEP_INTERVAL, self._close_idle)

    def _tick(self) -> None:
        now = self.clock()
        if self.frozen_since is None:
            self._check_disk_speed()
            self._catch_up_clock()
            self.incarnations.settle()
        self._next_tick = max(self._next_tick + self._tick_interval, now)
        self.loop.call_at(self._next_tick, self._tick)

    def _catch_up_clock(self) -> None:
        """Tick the core for the time since its last tick. A late timer (a GC pause,
        SIGSTOP, a frozen disk) ticks the node once, not a burst of catch-up ticks
        that would start an election the moment the process resumes; but the read
        lease's clock hears the whole time that passed."""
        now = self.clock()
        elapsed = max(1, round((now - self._last_tick_at) / self._tick_interval))
        self._last_tick_at = now
        self.raft.tick(elapsed)

    def _after_pass(self) -> None:
        if self.frozen_since is not None:
            return
        self._note_progress()
        if self.transport.tracer.watching:
            self.transport.tracer.progressed(self.raft.commit_index)
        self.snapshots.settle()
        self.clients.poll_member_change()
        self.driver.handle_ready()
        if self.driver.stalled is not None:
            self._freeze()
            return
        self.clients.settle_leadership()
        if self.raft.diverged is not None and not self._divergence_recorded:
            self._record_divergence()
        self.snapshots.drop_unwanted()
        if self.raft.membership is not self._linked_membership:
            self._reconcile_links()
        self.snapshots.maybe_take()

    def _record_divergence(self) -> None:
        d = self.raft.diverged
        assert d is not None
        try:
            record_divergence(self.cfg.node_data_dir(self.id), dataclasses.asdict(d), sync=self.wal.sync_enabled)
        except OSError as e:
            self.log("divergence_record_failed", level="error", error=str(e))
            return
        self._divergence_recorded = True

    def _on_synced(self) -> None:
        """On the loop thread, after the sync thread made writes durable (or failed)."""
        assert self.syncer is not None
        if self.syncer.failed is not None:
            raise self.syncer.failed
        self.driver.on_synced(self.syncer.synced)
        self._after_pass()

    # --- a full or slow disk -----------------------------------------------------------

    def _check_disk_speed(self) -> None:
        """A leader whose fsync takes longer than twice the longest election timeout
        steps down: it cannot promise its own writes in time, and with the sync on a
        thread it would otherwise go on heartbeating, so nobody would replace it. (With
        the sync inline the loop itself is stuck; the followers elect another leader
        and this node hears so once the sync returns, and steps down then at the latest.)"""
        slowest = self.wal.slowest_sync()
        if slowest > self._slow_sync_limit and self.raft.role == LEADER:
            self.raft.step_down(
                f"a WAL sync took {slowest * 1000:.0f} ms, over twice the longest election timeout ({self._slow_sync_limit * 1000:.0f} ms)"
            )

    def is_frozen(self) -> bool:
        return self.frozen_since is not None

    def _freeze(self) -> None:
        self.frozen_since = self.clock()
        self.clients.disk_full = True
        self.log(
            "disk_full",
            level="error",
            error=self.driver.disk_full_error,
            wal=str(self.wal.dir),
            action="refusing writes and peer messages; retrying the write every 0.5 s",
        )
        self.loop.call_later(DISK_RETRY_INTERVAL, self._retry_write)

    def _retry_write(self) -> None:
        if not self.running or self.frozen_since is None:
            return
        if not self.driver.retry():
            self.loop.call_later(DISK_RETRY_INTERVAL, self._retry_write)
            return
        seconds = round(self.clock() - self.frozen_since, 1)
        self.frozen_since = None
        self.clients.disk_full = False
        self.log("disk_write_resumed", seconds_stalled=seconds)
        # Before any request is served: a lease must not outlive the frozen time.
        self._catch_up_clock()
        for peer in sorted(self._unreachable_while_frozen):
            self.raft.report_unreachable(peer)
        self._unreachable_while_frozen.clear()
        self._after_pass()

    def _reconcile_links(self) -> None:
        """One link per member (and per node the leader still replicates to)."""
        self._linked_membership = self.raft.membership
        self.peers.reconcile(set(self.raft.peers) | set(self.raft.progress))

    # --- what peers send ------------------------------------------------------------

    def on_peer_frame(self, frame: Any) -> None:
        if self.frozen_since is not None:
            return  # the core is mid-Ready; the sender retries, as over a lossy link
        if isinstance(frame, SnapshotChunk):
            self.snapshots.on_chunk(frame)
        elif isinstance(frame, SnapshotAck):
            self.snapshots.on_ack(frame)
        else:
            if isinstance(frame, AppendEntriesResponse):
                self.transport.answered(frame.src)
                self.transport.tracer.received(frame)
            try:
                self.raft.step(frame)
            except CommittedConflict as e:
                raise FrameRefused(str(e)) from None

    def on_link_down(self, peer: int) -> None:
        self.transport.forget(peer)
        if self.frozen_since is None:
            self.raft.report_unreachable(peer)
        else:
            self._unreachable_while_frozen.add(peer)  # the core hears it once it may be asked
        self.snapshots.link_down(peer)

    def on_ready(self, rd) -> None:
        """Before the driver sends anything: configuration entries teach the address
        book their members' addresses, so links to new members can be dialled."""
        for entry in rd.entries:
            if entry.membership is not None:
                self.peers.learn(entry.command)
        if rd.entries and self.raft.role != LEADER:
            self.transport.tracer.appended(rd.entries, self.raft.leader_id)

    # --- metrics and health -------------------------------------------------------------

    def _note_progress(self) -> None:
        leader = self.raft.leader_id
        if leader != self._leader_seen:
            if leader is not None:
                self.leader_changes += 1
            self._leader_seen = leader
        if self.kv.last_applied != self._applied_seen[0]:
            self._applied_seen = (self.kv.last_applied, self.clock())

    def reading(self) -> Reading:
        """The node as a scrape sees it (raftproc.server.metrics)."""
        r = self.raft
        return Reading(
            node=self.id,
            term=r.current_term,
            is_leader=r.role == LEADER,
            has_leader=r.leader_id is not None,
            leader_changes=self.leader_changes,
            committed=r.commit_index,
            applied=self.kv.last_applied,
            pending=len(self.clients.waiting),
            failed=self.clients.proposals_failed,
            client_connections=len(self.clients.connections),
            disk_full=self.frozen_since is not None,
            fsync=self.wal.sync_latency,
            snapshot_save=self.snapshots.save_latency,
            peer_rtt=dict(self.transport.rtt),
            health_problem=self._health_problem(),
            diverged=self.divergence() is not None,
        )

    def _health_problem(self) -> str | None:
        """Why this node is unhealthy, or None: it knows a leader, can write its disk,
        and has applied what is committed or applied something within HEALTH_APPLY_WINDOW."""
        alarm = self.divergence()
        if alarm is not None:
            return alarm
        if self.frozen_since is not None:
            return "disk full: writes wait for room"
        if self.raft.leader_id is None:
            return "no leader known"
        behind = self.raft.commit_index - self.kv.last_applied
        if behind > 0 and self.clock() - self._applied_seen[1] > HEALTH_APPLY_WINDOW:
            return f"{behind} committed entries not applied for {HEALTH_APPLY_WINDOW:.0f} s"
        return None

    def divergence(self) -> str | None:
        """The alarm of raftproc.core.divergence, if any: this node's history differs
        from a leader's, or (as leader) from a follower's. Acknowledged writes may be
        lost; an operator must decide which side is right (docs/storage.md)."""
        r = self.raft
        if r.diverged is not None:
            return r.diverged.describe()
        if r.peer_divergences:
            found = ", ".join(f"node {p} at index {i}" for p, i in sorted(r.peer_divergences.items()))
            return f"followers report a history that differs from this node's log: {found}"
        return None

    def status(self, *, state: bool = False) -> dict[str, Any]:
        """`state`: include the state digest, which hashes every key and value."""
        r = self.raft
        return {
            "node": self.id,
            "pid": os.getpid(),
            "role": r.role,
            "term": r.current_term,
            "leader": r.leader_id,
            "commit_index": r.commit_index,
            "last_applied": self.kv.last_applied,
            "last_index": r.log.last_index,
            **self.snapshots.status(),
            "log_entries": len(r.log),
            "wal_bytes": self.wal.disk_bytes(),
            "transferring_to": r.transferee,
            "disk_full": self.frozen_since is not None,
            "membership": describe(r.membership),
            "keys": len(self.kv.data),
            "sessions": len(self.kv.sessions),
            "incarnations_logged": len(self.kv.incarnations),
            "client_connections": len(self.clients.connections),
            "clients_refused": self.clients.refused_clients,
            "log_digest": self.kv.log_digest(),
            "diverged": self.divergence(),
            **({"state_digest": self.kv.state_digest()} if state else {}),
        }


def _learn_addresses(peers: Peers, meta: Any, entries: Sequence[Any]) -> None:
    """Addresses of nodes added after the config file was written: the snapshot's,
    then every configuration entry's, newest last."""
    if meta is not None:
        peers.learn(meta.addresses)
    for entry in entries:
        if entry.membership is not None:
            peers.learn(entry.command)


def _serve_metrics(host: NodeHost, address: tuple[str, int], feed: EventFeed, shaper: LinkShaper) -> None:
    """/metrics, /health and the live page's /events, on the metrics address."""
    watch = Watch(feed, raft=host.raft, kv=host.kv, loop=host.loop, shaper=shaper, tick_ms=host.cfg.tick_ms, disk_full=host.is_frozen)
    host.metrics = MetricsServer(host.loop, address, host.reading, timeout=host.cfg.handshake_timeout_ms / 1000, log=host.log, watch=watch)


def _recover_state(cfg: ClusterConfig, node_id: int, st: Any, rng: random.Random, log: Log) -> tuple[KeyValueStore, RaftNode]:
    """The store from the newest snapshot, and the core from it and the WAL after it."""
    kv = KeyValueStore()
    if st.meta is not None and st.image is not None:
        kv.restore(st.meta.index, st.image)
    # A rebuilt node is not a voter of the first configuration: it waits to be added.
    voters = tuple(v for v in cfg.bootstrap_voters() if not (v == node_id and is_joining(cfg.node_data_dir(node_id))))
    raft = RaftNode(
        node_id,
        voters,
        rng=rng,
        options=cfg.raft(),
        hard_state=st.wal_tail.hard_state,
        entries=st.wal_tail.entries,
        snapshot=st.meta,
        applied=st.meta.index if st.meta else 0,
        log=core_logger(log),
    )
    return kv, raft


def open_host(
    cfg: ClusterConfig,
    node_id: int,
    *,
    log: Log,
    clock: Clock = time.monotonic,
    rng: random.Random | None = None,
    link_faults: LinkFaults = NO_FAULTS,
) -> NodeHost:
    """Recover node `node_id` from its data directory (newest valid snapshot, then
    the WAL after it, then the core on top), build its rooms and start listening.
    `link_faults`: injected faults to start with (raftproc.node checks the config allows them)."""
    started = clock()
    rng = rng or random.Random()
    # Everything logged from here on can also reach the live page (raftproc.server.watch).
    feed = EventFeed(node_id, time.time)
    log = feed.tap(log)
    me = cfg.node(node_id)
    data_dir = cfg.node_data_dir(node_id)
    st = recover_state(data_dir, warn=lambda event, **f: log(event, level="warning", **f), segment_bytes=cfg.segment_bytes)
    wal, rec, meta = st.wal, st.wal_tail, st.meta
    incarnation = load_identity(data_dir, node_id, sync=wal.sync_enabled)
    tls_files = cfg.node_tls(node_id)
    tls = TlsContexts(tls_files) if tls_files is not None else None
    handshake_timeout = cfg.handshake_timeout_ms / 1000
    kv, raft = _recover_state(cfg, node_id, st, rng, log)
    recorded = recorded_divergence(data_dir)
    if recorded is not None:
        raft.mark_diverged(Divergence(**recorded))
    loop = EventLoop(clock)
    shaper = LinkShaper(loop, cfg.peer_buffer, link_faults)
    host: NodeHost | None = None  # the rooms' callbacks reach it once it exists
    peers = Peers(
        me=node_id,
        incarnation=incarnation,
        book=dict(cfg.nodes),
        known_peers=KnownPeers(data_dir, sync=wal.sync_enabled),
        loop=loop,
        rng=rng,
        max_frame=cfg.max_frame,
        max_buffer=cfg.peer_buffer,
        log=log,
        on_frame=lambda frame: host.on_peer_frame(frame),
        on_link_down=lambda peer: host.on_link_down(peer),
        tls=tls,
        handshake_timeout=handshake_timeout,
        shaper=shaper,
        feed=feed,
        logged_incarnations=lambda: kv.incarnations,
    )
    _learn_addresses(peers, meta, rec.entries)
    snapshots = Snapshots(
        me=node_id,
        data_dir=data_dir,
        wal=wal,
        newest=st.snapshot,
        floor=st.floor,
        raft=raft,
        kv=kv,
        peers=peers,
        loop=loop,
        policy=SnapshotPolicy(cfg.snapshot_entries, cfg.snapshot_bytes, cfg.snapshot_chunk_bytes),
        clock=clock,
        log=log,
    )
    tracer = Tracer(node_id, log)
    clients = ClientService(
        me=node_id,
        raft=raft,
        kv=kv,
        peers=peers,
        loop=loop,
        max_frame=cfg.max_frame,
        max_buffer=cfg.peer_buffer,
        max_request_bytes=cfg.max_request_bytes,
        max_clients=cfg.max_clients,
        clock=clock,
        log=log,
        status=lambda state: host.status(state=state),
        on_applied=snapshots.applied,
        tls=tls,
        handshake_timeout=handshake_timeout,
        tracer=tracer,
        link_faults=shaper if cfg.link_faults else None,
    )
    syncer = None
    if cfg.background_sync:
        wake = loop.make_waker(lambda: host._on_synced())
        syncer = BackgroundSync(wal, lambda seq: wake())
    driver = Driver(
        raft,
        storage=wal,
        transport=PeerTransport(peers, snapshots, loop, tracer),
        state_machine=clients,
        installer=snapshots,
        syncer=syncer,
        on_ready=lambda rd: host.on_ready(rd),
    )
    log(
        "wal_recovered",
        term=rec.hard_state.current_term,
        role=raft.role,
        segments=rec.segments,
        records=rec.records,
        entries=len(rec.entries),
        voted_for=rec.hard_state.voted_for,
        commit_index=rec.hard_state.commit_index,
        snapshot_index=meta.index if meta else 0,
        keys=len(kv.data),
        wal_floor=st.floor,
        torn_tail_bytes=rec.torn_tail_bytes,
        ms=round((clock() - started) * 1000, 1),
    )
    peers.listen(me.peer)
    clients.listen(me.client)
    host = NodeHost(
        node_id=node_id,
        cfg=cfg,
        loop=loop,
        raft=raft,
        kv=kv,
        wal=wal,
        syncer=syncer,
        peers=peers,
        snapshots=snapshots,
        clients=clients,
        driver=driver,
        clock=clock,
        log=log,
        tls=tls,
        incarnations=IncarnationRegistry(node_id, incarnation, raft, kv, peers.known_peers, clock, log),
    )
    if me.metrics is not None:
        _serve_metrics(host, me.metrics, feed, shaper)
    log(
        "node_started",
        term=raft.current_term,
        role=raft.role,
        peer=f"{me.peer[0]}:{me.peer[1]}",
        client=f"{me.client[0]}:{me.client[1]}",
        pid=os.getpid(),
        transport="tls" if tls else "plaintext",
        tick_ms=cfg.tick_ms,
        **({"link_faults": link_faults.to_wire()} if link_faults.active else {}),
        metrics=f"{me.metrics[0]}:{me.metrics[1]}" if me.metrics else None,
    )
    return host
