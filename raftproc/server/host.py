"""The node host: one Raft node and the rooms that do its IO, wired together.

    open_host(cfg, node_id, log=...)   recover from disk, build every room, listen
    NodeHost(...)                      the loop's pass and the node's life: run, close

Rooms, each with one job (the host only wires them and runs the pass):
- the Ready driver (raftproc.server.driver): the same code the simulator proves;
- the peer transport (raftproc.server.transport) over the peer links
  (raftproc.server.peers): Raft messages both ways;
- snapshots (raftproc.server.snapshots): taking, compacting, installing, streaming;
- the applier (raftproc.server.applier): the driver's state machine, which answers
  the clients waiting on what it applies;
- the client service (raftproc.server.clients): connections and requests;
  membership changes (raftproc.server.members);
- the RESP port (raftproc.server.redis): Redis clients, their commands run by the
  client service here or forwarded to the leader's (raftproc.server.forward);
- the ticker (raftproc.server.ticker), the disk freeze (raftproc.server.disk),
  status and health (raftproc.server.status), the divergence alarm
  (raftproc.server.alarm);
- below them the event loop (raftproc.runtime.loop), the WAL
  (raftproc.runtime.wal) and start-up recovery (raftproc.runtime.recovery).

The data path runs one way: peers and clients step the core; the driver carries
out its Ready through the transport, the WAL and the applier. Each pass of the
loop ends in `_after_pass`: transfers are settled and a membership change is
stepped (both may make a Ready), the driver carries out every Ready, clients of a
node that lost leadership are told, links follow the membership, and a snapshot
is taken when due. A full disk freezes all of that until a retried write goes
through (raftproc.server.disk).
"""

from __future__ import annotations

import functools
import gc
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from raftproc import build
from raftproc.config import ClusterConfig
from raftproc.core.membership import Membership
from raftproc.core.node import RaftNode
from raftproc.runtime.identity import KnownPeers, load_identity
from raftproc.runtime.linkfaults import NO_FAULTS, LinkFaults
from raftproc.runtime.logging import SparseLog
from raftproc.runtime.loop import ConnectionSettings, EventLoop
from raftproc.runtime.recovery import RecoveredNode, recover_node
from raftproc.runtime.tls import TlsContexts, TlsError
from raftproc.runtime.wal import BackgroundSync, SyncFailed, WriteAheadLog
from raftproc.server.alarm import DivergenceAlarm
from raftproc.server.applier import Applier
from raftproc.server.clients import ClientLimits, ClientService
from raftproc.server.disk import DISK_RETRY_INTERVAL, DiskFreeze
from raftproc.server.driver import Driver
from raftproc.server.forward import Forwarder
from raftproc.server.incarnations import IncarnationRegistry
from raftproc.server.links import LinkShaper
from raftproc.server.members import MemberService
from raftproc.server.metrics import MetricsServer
from raftproc.server.peers import Peers
from raftproc.server.redis import RedisLimits, RedisService
from raftproc.server.replies import Replies
from raftproc.server.snapshots import SnapshotPolicy, Snapshots
from raftproc.server.status import NodeStatus
from raftproc.server.ticker import Ticker
from raftproc.server.trace import Tracer
from raftproc.server.transport import PeerTransport
from raftproc.server.watch import EventFeed, Watch

Log = Callable[..., None]
Clock = Callable[[], float]
GC_FREEZE_INTERVAL = 5.0  # seconds
GC_YOUNG_THRESHOLD = 20_000  # allocations between young collections (CPython's default: 700)
IDLE_SWEEP_INTERVAL = 1.0  # seconds between looks for idle connections


@dataclass(frozen=True, slots=True)
class Rooms:
    """Everything a node is made of, built by open_host in dependency order."""

    loop: EventLoop
    raft: RaftNode
    wal: WriteAheadLog
    disk: DiskFreeze
    peers: Peers
    transport: PeerTransport
    snapshots: Snapshots
    applier: Applier
    members: MemberService
    clients: ClientService
    redis: RedisService
    status: NodeStatus
    alarm: DivergenceAlarm
    ticker: Ticker
    tracer: Tracer
    tls: TlsContexts | None


class NodeHost:
    def __init__(self, rooms: Rooms, *, cfg: ClusterConfig, log: Log) -> None:
        self.rooms = rooms
        self.cfg = cfg
        self.log = log
        self.loop, self.raft, self.wal, self.disk = rooms.loop, rooms.raft, rooms.wal, rooms.disk
        self.clients, self.snapshots, self.status = rooms.clients, rooms.snapshots, rooms.status
        self.metrics: MetricsServer | None = None
        self.running = True
        # The sync thread's completions come back to the loop through a waker.
        self.syncer = BackgroundSync(self.wal, self._sync_completed()) if cfg.background_sync else None
        self.driver = Driver(
            self.raft,
            storage=self.wal,
            transport=rooms.transport,
            state_machine=rooms.applier,
            installer=self.snapshots,
            syncer=self.syncer,
            on_ready=rooms.transport.ready,
        )
        self._linked_membership: Membership | None = None
        self._reconcile_links()
        self.loop.after_pass.append(self._after_pass)
        # A write makes a few dozen container objects that refcounting frees at once;
        # the default 700-allocation trigger ran a young collection every few writes
        # at peak. Fewer, larger ones scan about the same survivors, and
        # _freeze_heap keeps the old objects out of every collection's way.
        gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])
        self.loop.call_later(GC_FREEZE_INTERVAL, self._freeze_heap)
        self.loop.call_later(IDLE_SWEEP_INTERVAL, self._close_idle)

    def _sync_completed(self) -> Callable[[int], None]:
        wake = self.loop.make_waker(self._on_synced)
        return lambda seq: wake()

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
        self.rooms.redis.close()
        self.rooms.peers.close()
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
        tls = self.rooms.tls
        if tls is None:
            self.log("tls_reload_skipped", level="warning", reason="the config has no [tls] table")
            return
        try:
            tls.reload()
        except TlsError as e:
            self.log("tls_reload_failed", level="error", error=str(e))
            return
        f = tls.files
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
        self.rooms.redis.close_idle(idle, first_frame)
        self.rooms.peers.close_idle(idle, first_frame)
        self.loop.call_later(IDLE_SWEEP_INTERVAL, self._close_idle)

    # --- the pass ---------------------------------------------------------------------

    def _after_pass(self) -> None:
        if self.disk.frozen:
            return
        rooms = self.rooms
        self.status.note_progress()
        if rooms.tracer.watching:
            rooms.tracer.progressed(self.raft.commit_index)
        self.snapshots.settle()
        rooms.members.poll()
        self.driver.handle_ready()
        if self.driver.stalled is not None:
            self._freeze()
            return
        rooms.applier.settle_leadership()
        rooms.alarm.record()
        self.snapshots.drop_unwanted()
        if self.raft.membership is not self._linked_membership:
            self._reconcile_links()
        self.snapshots.maybe_take()

    def _on_synced(self) -> None:
        """On the loop thread, after the sync thread made writes durable (or failed)."""
        assert self.syncer is not None
        if self.syncer.failed is not None:
            raise self.syncer.failed
        self.driver.on_synced(self.syncer.synced)
        self._after_pass()

    def _reconcile_links(self) -> None:
        """One link per member (and per node the leader still replicates to)."""
        self._linked_membership = self.raft.membership
        self.rooms.peers.reconcile(set(self.raft.peers) | set(self.raft.progress))

    # --- a full disk --------------------------------------------------------------------

    def _freeze(self) -> None:
        self.disk.freeze(self.driver.disk_full_error, str(self.wal.dir))
        self.loop.call_later(DISK_RETRY_INTERVAL, self._retry_write)

    def _retry_write(self) -> None:
        if not self.running or not self.disk.frozen:
            return
        if not self.driver.retry():
            self.loop.call_later(DISK_RETRY_INTERVAL, self._retry_write)
            return
        self.disk.thaw()
        # Before any request is served: a lease must not outlive the frozen time.
        self.rooms.ticker.catch_up()
        self.rooms.transport.thawed()
        self._after_pass()


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
    rng = rng or random.Random()
    # Everything logged from here on can also reach the live page (raftproc.server.watch).
    feed = EventFeed(node_id, time.time)
    log = feed.tap(log)
    data_dir = cfg.node_data_dir(node_id)
    node = recover_node(
        data_dir, node_id, voters=cfg.bootstrap_voters(), options=cfg.raft(), rng=rng, log=log, segment_bytes=cfg.segment_bytes
    )
    loop = EventLoop(clock)
    shaper = LinkShaper(loop, cfg.peer_buffer, link_faults)
    rooms = _build_rooms(cfg, node_id, node, loop=loop, shaper=shaper, feed=feed, rng=rng, log=log)
    me = cfg.node(node_id)
    # Listening first: the host dials its peers as it starts, and links open only while the peers room runs.
    rooms.peers.listen(me.peer)
    rooms.clients.listen(me.client)
    if me.redis is not None:
        rooms.redis.listen(me.redis)
    host = NodeHost(rooms, cfg=cfg, log=log)
    if me.metrics is not None:
        watch = Watch(feed, raft=rooms.raft, kv=node.kv, loop=loop, shaper=shaper, tick_ms=cfg.tick_ms, disk_full=lambda: rooms.disk.frozen)
        reading = functools.partial(_reading, rooms)
        host.metrics = MetricsServer(loop, me.metrics, reading, timeout=cfg.handshake_timeout_ms / 1000, log=log, watch=watch)
    _log_started(log, cfg, node_id, rooms, link_faults)
    return host


def _build_rooms(
    cfg: ClusterConfig,
    node_id: int,
    node: RecoveredNode,
    *,
    loop: EventLoop,
    shaper: LinkShaper,
    feed: EventFeed,
    rng: random.Random,
    log: Log,
) -> Rooms:
    """Each room from the ones built before it: nothing refers to a room not yet built."""
    b = _Builder(cfg, node_id, node, loop, log)
    disk = DiskFreeze(loop.clock, log)
    alarm = DivergenceAlarm(raft=node.raft, data_dir=b.data_dir, sync=b.sync, log=log)
    peers = b.peers(rng, shaper, feed)
    snapshots = b.snapshots(peers, disk)
    tracer = Tracer(node_id, log)
    transport = PeerTransport(raft=node.raft, peers=peers, snapshots=snapshots, loop=loop, disk=disk, tracer=tracer)
    replies = Replies(me=node_id, raft=node.raft, peers=peers, log=log)
    members = MemberService(me=node_id, raft=node.raft, peers=peers, replies=replies, clock=loop.clock, log=log)
    applier = Applier(raft=node.raft, kv=node.kv, members=members, replies=replies, tracer=tracer, on_applied=snapshots.applied, log=log)
    status = NodeStatus(
        me=node_id,
        raft=node.raft,
        kv=node.kv,
        wal=node.state.wal,
        snapshots=snapshots,
        transport=transport,
        applier=applier,
        disk=disk,
        alarm=alarm,
        clock=loop.clock,
    )
    clients = b.clients(applier, members, replies, peers, disk, status, tracer, shaper)
    redis = b.redis(clients, peers)
    ticker = b.ticker(
        disk, on_tick=IncarnationRegistry(node_id, b.incarnation, node.raft, node.kv, peers.known_peers, loop.clock, log).settle
    )
    return Rooms(
        loop,
        node.raft,
        node.state.wal,
        disk,
        peers,
        transport,
        snapshots,
        applier,
        members,
        clients,
        redis,
        status,
        alarm,
        ticker,
        tracer,
        b.tls,
    )


class _Builder:
    """The rooms that take most of the config, one method each."""

    def __init__(self, cfg: ClusterConfig, node_id: int, node: RecoveredNode, loop: EventLoop, log: Log) -> None:
        self.cfg, self.node_id, self.node, self.loop, self.log = cfg, node_id, node, loop, log
        self.data_dir = cfg.node_data_dir(node_id)
        self.sync = node.state.wal.sync_enabled
        self.incarnation = load_identity(self.data_dir, node_id, sync=self.sync)
        tls_files = cfg.node_tls(node_id)
        self.tls = TlsContexts(tls_files) if tls_files is not None else None
        self.handshake_timeout = cfg.handshake_timeout_ms / 1000

    def peers(self, rng: random.Random, shaper: LinkShaper, feed: EventFeed) -> Peers:
        cfg, kv = self.cfg, self.node.kv
        peers = Peers(
            me=self.node_id,
            incarnation=self.incarnation,
            book=dict(cfg.nodes),
            known_peers=KnownPeers(self.data_dir, sync=self.sync),
            loop=self.loop,
            rng=rng,
            max_frame=cfg.max_frame,
            max_buffer=cfg.peer_buffer,
            log=self.log,
            tls=self.tls,
            handshake_timeout=self.handshake_timeout,
            shaper=shaper,
            feed=feed,
            logged_incarnations=lambda: kv.incarnations,
        )
        for book in self.node.address_books:
            peers.learn(book)
        return peers

    def snapshots(self, peers: Peers, disk: DiskFreeze) -> Snapshots:
        cfg, st = self.cfg, self.node.state
        return Snapshots(
            me=self.node_id,
            data_dir=self.data_dir,
            wal=st.wal,
            newest=st.snapshot,
            floor=st.floor,
            raft=self.node.raft,
            kv=self.node.kv,
            peers=peers,
            loop=self.loop,
            policy=SnapshotPolicy(cfg.snapshot_entries, cfg.snapshot_bytes, cfg.snapshot_chunk_bytes),
            disk=disk,
            clock=self.loop.clock,
            log=self.log,
        )

    def clients(
        self,
        applier: Applier,
        members: MemberService,
        replies: Replies,
        peers: Peers,
        disk: DiskFreeze,
        status: NodeStatus,
        tracer: Tracer,
        shaper: LinkShaper,
    ) -> ClientService:
        cfg = self.cfg
        return ClientService(
            me=self.node_id,
            raft=self.node.raft,
            loop=self.loop,
            limits=ClientLimits(cfg.max_request_bytes, cfg.max_clients),
            connections=self.connections,
            applier=applier,
            members=members,
            replies=replies,
            peers=peers,
            disk=disk,
            status=status.status,
            tracer=tracer,
            log=self.log,
            link_faults=shaper if cfg.link_faults else None,
        )

    @functools.cached_property
    def connections(self) -> ConnectionSettings:
        """How the client-facing ports' connections are bounded (and TLS-wrapped); one
        sparse log for them all, so a flood of bad input costs a few lines, whichever port."""
        cfg = self.cfg
        return ConnectionSettings(cfg.max_frame, cfg.peer_buffer, self.handshake_timeout, SparseLog(self.log), self.tls)

    def redis(self, clients: ClientService, peers: Peers) -> RedisService:
        cfg = self.cfg
        connections = self.connections
        return RedisService(
            me=self.node_id,
            raft=self.node.raft,
            kv=self.node.kv,
            loop=self.loop,
            limits=RedisLimits(cfg.max_request_bytes, cfg.max_clients, cfg.redis_forward),
            connections=connections,
            clients=clients,
            forwarder=Forwarder(loop=self.loop, settings=connections, log=self.log),
            peers=peers,
            log=self.log,
        )

    def ticker(self, disk: DiskFreeze, on_tick: Callable[[], None]) -> Ticker:
        return Ticker(
            raft=self.node.raft,
            loop=self.loop,
            wal=self.node.state.wal,
            disk=disk,
            tick_ms=self.cfg.tick_ms,
            election_timeout_max=self.cfg.election_timeout_max,
            on_tick=on_tick,
        )


def _reading(rooms: Rooms):
    return rooms.status.reading(client_connections=len(rooms.clients.connections))


def _log_started(log: Log, cfg: ClusterConfig, node_id: int, rooms: Rooms, link_faults: LinkFaults) -> None:
    me = cfg.node(node_id)
    log(
        "node_started",
        term=rooms.raft.current_term,
        role=rooms.raft.role,
        peer=f"{me.peer[0]}:{me.peer[1]}",
        client=f"{me.client[0]}:{me.client[1]}",
        pid=os.getpid(),
        build=build.running(),
        build_why=build.WHY,
        transport="tls" if rooms.tls else "plaintext",
        tick_ms=cfg.tick_ms,
        **({"link_faults": link_faults.to_wire()} if link_faults.active else {}),
        metrics=f"{me.metrics[0]}:{me.metrics[1]}" if me.metrics else None,
        redis=f"{me.redis[0]}:{me.redis[1]}" if me.redis else None,
    )
