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


def main():
    self_addr, client_port, journal, *peers = sys.argv[1:]
    kv = KV(self_addr, peers, journal)
    done = queue.SimpleQueue()
    wake_r, wake_w = socket.socketpair()
    wake_r.setblocking(False)
    sel = selectors.DefaultSelector()
    server = socket.create_server(("127.0.0.1", int(client_port)))
    server.setblocking(False)
    sel.register(server, selectors.EVENT_READ, "accept")
    sel.register(wake_r, selectors.EVENT_READ, "wake")
    buffers = {}

    def answer(conn, request_id, status):
        body = cbor2.dumps({"v": 2, "t": "resp", "id": request_id, "status": status, "result": {"ok": status == "ok"}})
        try:
            conn.sendall(HEADER.pack(len(body)) + body)
        except OSError:
            pass

    while True:
        kv.doTick(0.0005)
        for key, _ in sel.select(0):
            if key.data == "accept":
                conn, _ = server.accept()
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                buffers[conn] = bytearray()
                sel.register(conn, selectors.EVENT_READ, "client")
            elif key.data == "wake":
                wake_r.recv(65536)
            else:
                conn = key.fileobj
                try:
                    data = conn.recv(1 << 20)
                except OSError:
                    data = b""
                if not data:
                    sel.unregister(conn)
                    buffers.pop(conn, None)
                    conn.close()
                    continue
                buf = buffers[conn]
                buf += data
                while len(buf) >= 4:
                    (size,) = HEADER.unpack_from(buf)
                    if len(buf) < 4 + size:
                        break
                    req = cbor2.loads(bytes(buf[4 : 4 + size]))
                    del buf[: 4 + size]
                    if req.get("t") == "status":
                        body = cbor2.dumps({"v": 2, "t": "resp", "id": req["id"], "status": "ok", "result": {"is_leader": kv._isLeader()}})
                        conn.sendall(HEADER.pack(len(body)) + body)
                        continue

                    def callback(result, error, conn=conn, rid=req["id"]):
                        done.put((conn, rid, "ok" if error == 0 else "unknown"))

                    kv.set(req["key"], req["value"], callback=callback)
        while True:
            try:
                conn, rid, status = done.get_nowait()
            except queue.Empty:
                break
            answer(conn, rid, status)


if __name__ == "__main__":
    sys.exit(main())
