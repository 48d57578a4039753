"""A PySyncObj key-value node that speaks raftproc's client protocol (4-byte length
+ CBOR frames; "set" requests answered when PySyncObj's callback reports them
applied), so the benchmark drives both systems with the same load generator.

    python pysyncobj_node.py SELF_RAFT_ADDR CLIENT_PORT JOURNAL PEER_RAFT_ADDR...

Runs in the benchmark's PySyncObj virtualenv (pysyncobj, cbor2). PySyncObj's file
journal does not fsync, so this peer is not durable the way raftproc is.
"""

import os
import queue
import selectors
import socket
import struct
import sys

import cbor2
from pysyncobj import SyncObj, SyncObjConf, replicated

HEADER = struct.Struct(">I")


class KV(SyncObj):
    def __init__(self, self_addr, peers, journal):
        # autoTick off: this process's loop drives PySyncObj with doTick, so client
        # sockets and Raft traffic share one thread, as in raftproc.
        # appendEntriesPeriod: PySyncObj ships new commands on this timer (default
        # 100 ms); 1 ms is its best latency short of a busy loop.
        conf = SyncObjConf(
            journalFile=journal,
            dynamicMembershipChange=False,
            appendEntriesUseBatch=True,
            autoTick=False,
            appendEntriesPeriod=float(os.environ.get("PYSYNCOBJ_APPEND_PERIOD", "0.001")),
        )
        super().__init__(self_addr, peers, conf)
        self.data = {}

    @replicated
    def set(self, key, value):
        self.data[key] = value
        return True


class ClientPort:
    """raftproc's client protocol on one non-blocking socket: frames in, a "set"
    proposed to PySyncObj, its answer sent when the callback reports it applied.
    The callback may run on another thread: answers wait in `done`, and the loop
    sends them."""

    def __init__(self, kv: KV, port: int) -> None:
        self.kv = kv
        self.done: queue.SimpleQueue[tuple[socket.socket, int, str]] = queue.SimpleQueue()
        self.sel = selectors.DefaultSelector()
        self.server = socket.create_server(("127.0.0.1", port))
        self.server.setblocking(False)
        self.sel.register(self.server, selectors.EVENT_READ, "accept")
        self.buffers: dict[socket.socket, bytearray] = {}

    def serve_forever(self) -> None:
        while True:
            self.kv.doTick(0.0005)
            for key, _ in self.sel.select(0):
                if key.data == "accept":
                    self.accept()
                elif isinstance(key.fileobj, socket.socket):  # every other registration is a client's
                    self.read(key.fileobj)
            self.send_done()

    def accept(self) -> None:
        conn, _ = self.server.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffers[conn] = bytearray()
        self.sel.register(conn, selectors.EVENT_READ, "client")

    def read(self, conn: socket.socket) -> None:
        try:
            data = conn.recv(1 << 20)
        except OSError:
            data = b""
        if not data:
            self.sel.unregister(conn)
            self.buffers.pop(conn, None)
            conn.close()
            return
        buf = self.buffers[conn]
        buf += data
        while len(buf) >= 4:
            (size,) = HEADER.unpack_from(buf)
            if len(buf) < 4 + size:
                break
            request = cbor2.loads(bytes(buf[4 : 4 + size]))
            del buf[: 4 + size]
            self.handle(conn, request)

    def handle(self, conn: socket.socket, request: dict) -> None:
        if request.get("t") == "status":
            self.answer(conn, request["id"], "ok", {"is_leader": self.kv._isLeader()})
            return

        def applied(result: object, error: int, rid: int = request["id"]) -> None:
            self.done.put((conn, rid, "ok" if error == 0 else "unknown"))

        self.kv.set(request["key"], request["value"], callback=applied)

    def send_done(self) -> None:
        while True:
            try:
                conn, rid, status = self.done.get_nowait()
            except queue.Empty:
                return
            self.answer(conn, rid, status, {"ok": status == "ok"})

    def answer(self, conn: socket.socket, request_id: int, status: str, result: dict) -> None:
        body = cbor2.dumps({"v": 2, "t": "resp", "id": request_id, "status": status, "result": result})
        try:
            conn.sendall(HEADER.pack(len(body)) + body)
        except OSError:
            pass


def main() -> None:
    self_addr, client_port, journal, *peers = sys.argv[1:]
    ClientPort(KV(self_addr, peers, journal), int(client_port)).serve_forever()


if __name__ == "__main__":
    main()
