"""The command line: `raftproc ...` or `python -m raftproc.client ...` (etcdctl's and
redis-cli's habits).

    raftproc [--endpoints H:P,...] [--config PATH] [-w table|json] COMMAND
        set KEY [VALUE] [--trace] | get KEY | get --prefix PREFIX | del KEY | cas KEY EXPECTED NEW
        status | health | transfer [ID]
        member list | add ID PEER_HOST:PORT CLIENT_HOST:PORT | remove ID

The global options may also follow the command (`get x -w json`). Nodes come from
--endpoints (client addresses, no config file needed), else from --config, else
the built-in local cluster. Certificates: the config's [tls], or
--cacert/--cert/--key.

`set KEY` without a value reads it from stdin, byte for byte; a value that is not
UTF-8 text is stored as bytes, and `get` writes it back raw (JSON: value_base64).

Exit codes (scripts can rely on them):
    0  done (and, for get, the key exists)
    1  failed: the cluster refused it or it certainly did not happen (a cas that
       found another value, a permission denied, no leader accepted it)
    2  usage or configuration error (every node also refused how we talk: plaintext
       to a TLS cluster, a certificate it does not accept)
    3  unknown outcome: it may or may not have been applied
    4  get: no such key
    5  unreachable: no node answered, or every one refused the connection (status,
       health: some member did not answer)
    6  status, health: the nodes that answered know no leader, or disagree, or a
       node's log diverged from another's (raftproc.core.divergence)
  130  interrupted (Ctrl-C)
"""

from __future__ import annotations

import argparse
import base64
import json
import ssl
import sys
from pathlib import Path
from typing import Any

from raftproc.client import Client, ClientError, Misconfigured, Unknown, Unreachable, Value, parse_optional_address
from raftproc.config import Address, ConfigError, load_config, parse_address
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
        print(f"raftproc: {e}", file=sys.stderr)
        return EXIT_USAGE
    changes_members = args.cmd == "member" and args.member_cmd != "list"
    timeout = args.timeout if args.timeout is not None else 60.0 if changes_members else 5.0
    client = Client(addresses, timeout=timeout, tls=tls, fail_fast=True)
    try:
        return _run(client, args, out)
    except ClientError as e:
        label, code = _verdict(e)
        print(f"{label}: {e}", file=sys.stderr)
        return code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        client.close()


def _verdict(e: ClientError) -> tuple[str, int]:
    """How the command line names a failure, and its exit code."""
    if isinstance(e, Unknown):
        return "UNKNOWN", EXIT_UNKNOWN
    if isinstance(e, Misconfigured):
        return "MISCONFIGURED", EXIT_USAGE
    if isinstance(e, Unreachable):
        return "UNREACHABLE", EXIT_UNREACHABLE
    return "FAILED", EXIT_FAILED


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
        client.set(args.key, args.value if args.value is not None else _stdin_value(), trace=args.trace)
        out.emit({"ok": True}, "OK")
    elif cmd == "get" and args.prefix:
        return _scan(client, args.key, out)
    elif cmd == "get":
        return _get(client, args.key, out)
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


def _stdin_value() -> Value:
    """The value piped in (redis-cli's -x, etcdctl's `put k < file`), byte for byte:
    text when it is UTF-8, else bytes."""
    data = sys.stdin.buffer.read()
    try:
        return data.decode()
    except UnicodeDecodeError:
        return data


def _get(client: Client, key: str, out: Output) -> int:
    value = client.get(key)
    if value is None:
        if out.json:
            out.emit({"key": key, "found": False, "value": None}, "")
        else:
            print(f"not found: {key}", file=sys.stderr)
        return EXIT_NOT_FOUND
    if isinstance(value, bytes) and not out.json:
        sys.stdout.flush()
        sys.stdout.buffer.write(value)  # raw: exactly the bytes that were set
        sys.stdout.buffer.flush()
        return EXIT_OK
    out.emit({"key": key, "found": True, **_json_value(value)}, str(value))
    return EXIT_OK


def _scan(client: Client, prefix: str, out: Output) -> int:
    items = client.scan(prefix)
    if out.json:
        out.emit({"prefix": prefix, "items": [{"key": k, **_json_value(v)} for k, v in items]}, "")
    else:
        for k, v in items:
            print(k)
            sys.stdout.flush()
            sys.stdout.buffer.write((v if isinstance(v, bytes) else v.encode()) + b"\n")
            sys.stdout.buffer.flush()
    if not items:
        if not out.json:
            print(f"no key starts with {prefix!r}", file=sys.stderr)
        return EXIT_NOT_FOUND
    return EXIT_OK


def _json_value(value: Value) -> dict[str, str]:
    """JSON holds text only: bytes go as base64, under a name that says so."""
    if isinstance(value, bytes):
        return {"value_base64": base64.b64encode(value).decode()}
    return {"value": value}


def _status_rows(client: Client) -> list[dict[str, Any]]:
    """The status of every endpoint, then of every member they name that none of them
    is (a node added later): its address comes from the leader's member list."""
    rows: dict[Address, dict[str, Any]] = {}
    for node_id, address in sorted(client.addresses.items()):
        rows[address] = _status_row(client, address, node_id)
    answered = {r["node"] for r in rows.values() if r["role"] != "down"}
    members = {n for r in rows.values() if r["role"] != "down" for n in _members_named(r)}
    missing = sorted(members - answered)
    if not missing:
        return list(rows.values())
    listed = _member_addresses(client)
    for node in missing:
        at = listed.get(node)
        if at is None:
            rows[("?", node)] = {"node": node, "role": "down", "error": "a member whose address no leader told"}
        elif at in rows:
            rows[at]["node"] = node  # an endpoint that did not answer: now we know its id
        else:
            rows[at] = _status_row(client, at, node)
    return list(rows.values())


def _status_row(client: Client, address: Address, node_id: int) -> dict[str, Any]:
    try:
        return client.status_at(address, client.attempt_timeout)
    except ClientError as e:
        return {"node": node_id, "role": "down", "error": str(e)[:200]}


def _members_named(status: dict[str, Any]) -> list[int]:
    membership = status.get("membership") or {}
    return [*membership.get("voters", ()), *membership.get("learners", ())]


def _member_addresses(client: Client) -> dict[int, Address]:
    """Every member's client address, as the leader's member list gives them."""
    try:
        nodes = client.member("list")["nodes"]
    except ClientError:
        return {}
    found = {node: parse_optional_address(info.get("client")) for node, info in nodes.items()}
    return {node: address for node, address in found.items() if address is not None}


def _status(client: Client, out: Output, *, health: bool) -> int:
    """Every member's status. Exit 5 if one did not answer, 6 if those that did know no
    leader or name different ones; `health` prints only the verdict."""
    rows = sorted(_status_rows(client), key=lambda r: r["node"])
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
            f"{'log':>7} {'wal MiB':>8} {'build':<8} log digest"
        )
        for s in rows:
            if s["role"] == "down":
                print(f"{s['node']:>4} {'down':<9} ({s['error']})")
                continue
            print(
                f"{s['node']:>4} {s['role']:<9} {s['term']:>5} {str(s['leader']):>6} "
                f"{s['commit_index']:>8} {s['last_applied']:>8} {s.get('snapshot_index', 0):>8} "
                f"{s.get('log_entries', 0):>7} {s.get('wal_bytes', 0) / 2**20:>8.1f} {s.get('build', '?'):<8} {s['log_digest'][:12]}"
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
                print(f"raftproc: {text!r} is not HOST:PORT", file=sys.stderr)
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
        addresses = dict(enumerate(args.endpoints, start=1))
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


def _endpoints(text: str) -> list[Address]:
    """--endpoints: HOST:PORT,... checked while parsing, so a URL is named at once."""
    addresses = []
    for item in (t.strip() for t in text.split(",")):
        if "://" in item:
            raise argparse.ArgumentTypeError(f"{item!r} is a URL: give the node's client address as HOST:PORT")
        if item:
            try:
                addresses.append(parse_address(item))
            except ValueError as e:
                raise argparse.ArgumentTypeError(str(e)) from None
    if not addresses:
        raise argparse.ArgumentTypeError("names no node")
    return addresses


def _global_options(p: argparse.ArgumentParser, *, defaults: bool) -> None:
    """The options every command takes. The top parser holds the defaults; each
    command's copy has none (SUPPRESS), so a flag after the command counts only
    when given there, and overrides the same flag given before it."""

    def default(value: Any) -> Any:
        return value if defaults else argparse.SUPPRESS

    g = p.add_argument_group("global options")
    g.add_argument("--endpoints", type=_endpoints, default=default(None), help="client addresses HOST:PORT,HOST:PORT,... (no config file)")
    g.add_argument("--config", default=default(None), help="cluster TOML (default: built-in local 5-node cluster)")
    g.add_argument("-w", "--write-out", choices=("table", "json"), default=default("table"), help="output format")
    g.add_argument("--cacert", dest="tls_ca", default=default(None), help="CA bundle to verify the nodes with (default: the config's ca)")
    g.add_argument(
        "--cert", dest="tls_cert", default=default(None), help="client certificate (default: the config's admin_cert, else client_cert)"
    )
    g.add_argument("--key", dest="tls_key", default=default(None), help="the certificate's private key")
    g.add_argument(
        "--timeout",
        type=float,
        default=default(None),
        help="seconds to reach a definite outcome (default 5; 60 for member add and remove, which wait for a catch-up)",
    )


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="raftproc", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    _global_options(p, defaults=True)
    shared = argparse.ArgumentParser(add_help=False)
    _global_options(shared, defaults=False)
    sub = p.add_subparsers(dest="cmd", required=True)

    def command(parent: Any, name: str, help: str) -> argparse.ArgumentParser:
        return parent.add_parser(name, help=help, parents=[shared])

    s = command(sub, "set", "set KEY [VALUE] (no VALUE: read it from stdin, byte for byte)")
    s.add_argument("key")
    s.add_argument("value", nargs="?", help="the value (default: stdin)")
    s.add_argument("--trace", action="store_true", help="every node logs this write's way (scripts/supervisor.py timeline)")
    g = command(sub, "get", "get KEY (exit 4 if absent); get --prefix P: every key starting with P, in order")
    g.add_argument("key")
    g.add_argument("--prefix", action="store_true", help="a range read: KEY is a prefix; keys and values alternate, one per line")
    command(sub, "del", "delete KEY").add_argument("key")
    c = command(sub, "cas", "cas KEY EXPECTED NEW (EXPECTED '-' means absent)")
    c.add_argument("key")
    c.add_argument("expected")
    c.add_argument("new")
    command(sub, "transfer", "hand leadership to node ID (default: the most up-to-date follower)").add_argument(
        "id", type=int, nargs="?", default=None
    )
    m = command(sub, "member", "member list | add ID PEER_HOST:PORT CLIENT_HOST:PORT | remove ID")
    msub = m.add_subparsers(dest="member_cmd", required=True)
    command(msub, "list", "voters, learners and each member's addresses and match index")
    ma = command(msub, "add", "add node ID: it joins as a learner, catches up, then votes")
    ma.add_argument("id", type=int)
    ma.add_argument("peer", help="HOST:PORT where the node listens for peers")
    ma.add_argument("client", help="HOST:PORT where the node listens for clients")
    command(msub, "remove", "remove node ID (the leader too: it hands over first)").add_argument("id", type=int)
    command(sub, "status", "every member's role, term, leader, commit and applied index, snapshot, log, WAL size (exit 5/6 if unhealthy)")
    command(sub, "health", "one verdict: every member answers and all name the same leader (exit 0), else 5 or 6")
    return p


if __name__ == "__main__":
    sys.exit(main())
