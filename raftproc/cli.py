"""The command line: `python -m raftproc.client ...` (etcdctl's habits).

    python -m raftproc.client [--endpoints H:P,...] [--config PATH] [-w table|json] COMMAND
        set KEY VALUE [--trace] | get KEY | get --prefix PREFIX | del KEY | cas KEY EXPECTED NEW
        status | health | transfer [ID]
        member list | add ID PEER_HOST:PORT CLIENT_HOST:PORT | remove ID

Nodes come from --endpoints (client addresses, no config file needed), else from
--config, else the built-in local cluster. Certificates: the config's [tls], or
--cacert/--cert/--key.

Exit codes (scripts can rely on them):
    0  done (and, for get, the key exists)
    1  failed: the cluster refused it or it certainly did not happen (a cas that
       found another value, a permission denied, no leader accepted it)
    2  usage or configuration error
    3  unknown outcome: it may or may not have been applied
    4  get: no such key
    5  unreachable: no node answered (status, health: some node did not)
    6  status, health: the nodes that answered know no leader, or disagree, or a
       node's log diverged from another's (raftproc.core.divergence)
  130  interrupted (Ctrl-C)
"""

from __future__ import annotations

import argparse
import json
import ssl
import struct
import sys
from pathlib import Path
from typing import Any

from raftproc.client import Client, ClientError, Failed, Unknown, Unreachable, parse_optional_address
from raftproc.config import Address, ConfigError, load_config, parse_address
from raftproc.runtime.codec import RemoteProtocolError
from raftproc.runtime.framing import FrameError
from raftproc.runtime.tls import TlsError, TlsFiles, client_context

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNKNOWN, EXIT_NOT_FOUND, EXIT_UNREACHABLE, EXIT_NO_LEADER = 0, 1, 2, 3, 4, 5, 6
EXIT_INTERRUPTED = 130


class Output:
    """Prints a result as a table line or as one JSON object."""

    def __init__(self, json_out: bool) -> None:
        self.json = json_out

    def emit(self, obj: dict[str, Any], text: str) -> None:
        print(json.dumps(obj, sort_keys=True) if self.json else text)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    out = Output(args.write_out == "json")
    try:
        addresses, tls_files = _nodes(args)
        tls = _tls_context(tls_files, args)
    except (ConfigError, TlsError, ValueError) as e:
        print(f"raftproc.client: {e}", file=sys.stderr)
        return EXIT_USAGE
    changes_members = args.cmd == "member" and args.member_cmd != "list"
    timeout = args.timeout if args.timeout is not None else 60.0 if changes_members else 5.0
    client = Client(addresses, timeout=timeout, tls=tls)
    try:
        return _run(client, args, out)
    except Unknown as e:
        print(f"UNKNOWN: {e}", file=sys.stderr)
        return EXIT_UNKNOWN
    except Unreachable as e:
        print(f"UNREACHABLE: {e}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except Failed as e:
        print(f"FAILED: {e}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        client.close()


def _run(client: Client, args: argparse.Namespace, out: Output) -> int:
    cmd = args.cmd
    if cmd in ("status", "health"):
        return _status(client, out, health=cmd == "health")
    if cmd == "transfer":
        leader = client.transfer(args.id)
        out.emit({"leader": leader}, f"node {leader} leads")
        return EXIT_OK
    if cmd == "member":
        return _member(client, args, out)
    if cmd == "set":
        client.set(args.key, args.value, trace=args.trace)
        out.emit({"ok": True}, "OK")
    elif cmd == "get" and args.prefix:
        items = client.scan(args.key)
        if out.json:
            out.emit({"prefix": args.key, "items": [{"key": k, "value": v} for k, v in items]}, "")
        else:
            for k, v in items:
                print(k)
                print(v)
        if not items:
            if not out.json:
                print(f"no key starts with {args.key!r}", file=sys.stderr)
            return EXIT_NOT_FOUND
    elif cmd == "get":
        value = client.get(args.key)
        if value is None:
            if out.json:
                out.emit({"key": args.key, "found": False, "value": None}, "")
            else:
                print(f"not found: {args.key}", file=sys.stderr)
            return EXIT_NOT_FOUND
        out.emit({"key": args.key, "found": True, "value": value}, value)
    elif cmd == "del":
        result = client.delete(args.key)
        out.emit({"ok": True, "existed": bool(result.get("existed"))}, "OK" if result.get("existed") else "OK (was absent)")
    elif cmd == "cas":
        expected = None if args.expected == "-" else args.expected
        result = client.cas(args.key, expected, args.new)
        if not result.get("ok"):
            out.emit({"ok": False, "mismatch": True, "value": result.get("value")}, f"MISMATCH: current value is {result.get('value')!r}")
            return EXIT_FAILED
        out.emit({"ok": True}, "OK")
    return EXIT_OK


def _status(client: Client, out: Output, *, health: bool) -> int:
    """Every node's status. Exit 5 if one did not answer, 6 if those that did know no
    leader or name different ones; `health` prints only the verdict."""
    rows: list[dict[str, Any]] = []
    for node_id in sorted(client.addresses):
        try:
            rows.append(client.status(node_id))
        except (OSError, ClientError, RemoteProtocolError, FrameError, struct.error) as e:
            rows.append({"node": node_id, "role": "down", "error": f"{type(e).__name__}: {e}"[:200]})
    down = [r["node"] for r in rows if r["role"] == "down"]
    leaders = {r.get("leader") for r in rows if r["role"] != "down"}
    diverged = [f"node {r['node']}: {str(r['diverged'])[:300]}" for r in rows if r.get("diverged")]
    code = EXIT_UNREACHABLE if down else EXIT_OK if len(leaders) == 1 and None not in leaders and not diverged else EXIT_NO_LEADER
    verdict = {
        EXIT_OK: "healthy",
        EXIT_UNREACHABLE: f"unhealthy: nodes {down} do not answer",
        EXIT_NO_LEADER: f"unhealthy: leaders seen {sorted(map(str, leaders))}",
    }[code]
    if diverged:
        verdict = "unhealthy: DIVERGED HISTORIES, acknowledged writes may be lost (docs/storage.md): " + "; ".join(diverged)
    if out.json:
        out.emit({"healthy": code == EXIT_OK, "verdict": verdict, **({} if health else {"nodes": rows})}, "")
        return code
    if not health:
        print(
            f"{'node':>4} {'role':<9} {'term':>5} {'leader':>6} {'commit':>8} {'applied':>8} {'snapshot':>8} "
            f"{'log':>7} {'wal MiB':>8}  log digest"
        )
        for s in rows:
            if s["role"] == "down":
                print(f"{s['node']:>4} {'down':<9} ({s['error']})")
                continue
            print(
                f"{s['node']:>4} {s['role']:<9} {s['term']:>5} {str(s['leader']):>6} "
                f"{s['commit_index']:>8} {s['last_applied']:>8} {s.get('snapshot_index', 0):>8} "
                f"{s.get('log_entries', 0):>7} {s.get('wal_bytes', 0) / 2**20:>8.1f}  {s['log_digest'][:12]}"
            )
    print(verdict, file=sys.stdout if code == EXIT_OK else sys.stderr)
    return code


def _member(client: Client, args: argparse.Namespace, out: Output) -> int:
    if args.member_cmd == "list":
        r = client.member("list")
        lines = [f"leader {r['leader']}, term {r['term']}, last index {r['last_index']}"]
        lines += [
            f"  node {node}: {info['role']:7} peer {info['peer']} client {info['client']} match {info['match_index']}"
            for node, info in sorted(r["nodes"].items())
        ]
        if r["outgoing"]:
            lines.append(f"  changing from voters {r['outgoing']} (joint consensus)")
        out.emit(r, "\n".join(lines))
        return EXIT_OK
    if args.member_cmd == "add":
        for text in (args.peer, args.client):
            if parse_optional_address(text) is None:
                print(f"raftproc.client: {text!r} is not HOST:PORT", file=sys.stderr)
                return EXIT_USAGE
        print(
            f"adding node {args.id}: it joins as a learner and votes once caught up; waiting up to {client.timeout:.0f} s", file=sys.stderr
        )
        r = client.member("add", args.id, args.peer, args.client)
    else:
        print(f"removing node {args.id} (a leader hands over first); waiting up to {client.timeout:.0f} s", file=sys.stderr)
        r = client.member("remove", args.id)
    out.emit(r, f"OK: voters {r['membership']['voters']}, learners {r['membership']['learners']}")
    return EXIT_OK


def _nodes(args: argparse.Namespace) -> tuple[dict[int, Address], TlsFiles | None]:
    """The nodes' client addresses, and the config's certificates (if a config is used)."""
    if args.endpoints:
        addresses = {}
        for i, text in enumerate(t for t in args.endpoints.split(",") if t.strip()):
            addresses[i + 1] = parse_address(text.strip())  # ValueError: a usage error
        if not addresses:
            raise ValueError("--endpoints names no node")
        tls_files = load_config(args.config).client_tls() if args.config else None
        return addresses, tls_files
    cfg = load_config(args.config)
    return cfg.client_addresses(), cfg.client_tls()


def _tls_context(files: TlsFiles | None, args: argparse.Namespace) -> ssl.SSLContext | None:
    """The config's certificates, each replaced by its flag when one is given."""
    if files is None and args.tls_ca is None:
        return None
    ca = Path(args.tls_ca) if args.tls_ca else files.ca if files else None
    cert = Path(args.tls_cert) if args.tls_cert else files.cert if files else None
    key = Path(args.tls_key) if args.tls_key else files.key if files else None
    if ca is None:
        raise TlsError("--cert and --key need --cacert (or a config with [tls])")
    return client_context(TlsFiles(ca, cert, key))


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m raftproc.client", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--endpoints", help="client addresses HOST:PORT,HOST:PORT,... (instead of a config file)")
    p.add_argument("--config", help="cluster TOML (default: built-in local 5-node cluster)")
    p.add_argument("-w", "--write-out", choices=("table", "json"), default="table", help="output format")
    p.add_argument("--cacert", dest="tls_ca", help="CA bundle to verify the nodes with (default: the config's [tls] ca)")
    p.add_argument("--cert", dest="tls_cert", help="client certificate to present (default: the config's admin_cert, else client_cert)")
    p.add_argument("--key", dest="tls_key", help="the certificate's private key")
    p.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="seconds to reach a definite outcome (default 5; 60 for member add and remove, which wait for a catch-up)",
    )
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("set", help="set KEY VALUE")
    s.add_argument("key")
    s.add_argument("value")
    s.add_argument("--trace", action="store_true", help="every node logs this write's way (scripts/supervisor.py timeline)")
    g = sub.add_parser("get", help="get KEY (exit 4 if absent); get --prefix P: every key starting with P, in order")
    g.add_argument("key")
    g.add_argument("--prefix", action="store_true", help="a range read: KEY is a prefix; keys and values alternate, one per line")
    sub.add_parser("del", help="delete KEY").add_argument("key")
    c = sub.add_parser("cas", help="cas KEY EXPECTED NEW (EXPECTED '-' means absent)")
    c.add_argument("key")
    c.add_argument("expected")
    c.add_argument("new")
    sub.add_parser("transfer", help="hand leadership to node ID (default: the most up-to-date follower)").add_argument(
        "id", type=int, nargs="?", default=None
    )
    m = sub.add_parser("member", help="member list | add ID PEER_HOST:PORT CLIENT_HOST:PORT | remove ID")
    msub = m.add_subparsers(dest="member_cmd", required=True)
    msub.add_parser("list", help="voters, learners and each member's addresses and match index")
    ma = msub.add_parser("add", help="add node ID: it joins as a learner, catches up, then votes")
    ma.add_argument("id", type=int)
    ma.add_argument("peer", help="HOST:PORT where the node listens for peers")
    ma.add_argument("client", help="HOST:PORT where the node listens for clients")
    msub.add_parser("remove", help="remove node ID (the leader too: it hands over first)").add_argument("id", type=int)
    sub.add_parser(
        "status", help="each node's role, term, leader, commit and applied index, snapshot, log, WAL size (exit 5/6 if unhealthy)"
    )
    sub.add_parser("health", help="one verdict: every node answers and all name the same leader (exit 0), else 5 or 6")
    return p


if __name__ == "__main__":
    sys.exit(main())
