"""Mint the cluster's private CA and its certificates (with the `cryptography` library).

    python -m raftproc.ops.certs ca DIR                         DIR/ca.pem, DIR/ca-key.pem
    python -m raftproc.ops.certs node DIR --id 3 [--host H]...  DIR/node-3.pem, DIR/node-3-key.pem
    python -m raftproc.ops.certs client DIR --name NAME [--admin]
                                                                DIR/client-NAME.pem (admin-NAME.pem), its key

Every certificate names its holder in a URI SAN (raftproc.runtime.tls): node certificates
`raftproc://node/N`, client ones `raftproc://client/NAME`, admin ones `raftproc://admin/NAME`.
`--host` adds DNS or IP SANs for tools that check hostnames; the nodes check the id.
Keys are ECDSA P-256 and written readable by their owner only (0600). Keep ca-key.pem
off the nodes: only whoever mints certificates needs it.
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import os
import sys
from dataclasses import replace
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from raftproc.config import ClusterConfig, NodeAddress, TlsConfig
from raftproc.runtime.tls import ADMIN, CLIENT, NODE, Identity, identity_of, node_identity

CA_DAYS = 3650
CERT_DAYS = 825


def write_private(path: Path, data: bytes) -> None:
    """Create or replace `path` readable and writable by its owner only."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # the mode above is masked by umask, and a file that existed kept its own
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def make_ca(directory: Path, *, name: str = "raftproc cluster CA") -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "ca.pem", directory / "ca-key.pem"
    write_private(key_path, _key_pem(key))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


def make_cert(
    directory: Path,
    identity: Identity,
    *,
    ca_dir: Path | None = None,
    hosts: tuple[str, ...] = (),
    not_before: datetime.datetime | None = None,
    not_after: datetime.datetime | None = None,
    stem: str | None = None,
) -> tuple[Path, Path]:
    """A certificate for `identity`, signed by the CA in `ca_dir` (default `directory`).
    Returns (certificate, key) paths: `<stem>.pem` and `<stem>-key.pem`."""
    ca_dir = ca_dir or directory
    try:
        ca_cert = x509.load_pem_x509_certificate((ca_dir / "ca.pem").read_bytes())
        ca_key = serialization.load_pem_private_key((ca_dir / "ca-key.pem").read_bytes(), password=None)
    except FileNotFoundError as e:
        raise SystemExit(f"no CA in {ca_dir} ({e.filename} is missing): run `python -m raftproc.ops.certs ca {ca_dir}` first") from None
    ca_public = ca_cert.public_key()
    # make_ca mints elliptic-curve CAs; the builder below signs with nothing else.
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey) or not isinstance(ca_public, ec.EllipticCurvePublicKey):
        raise SystemExit(f"the CA in {ca_dir} is not an elliptic-curve CA as `python -m raftproc.ops.certs ca` makes")
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    sans: list[x509.GeneralName] = [x509.UniformResourceIdentifier(identity.uri())]
    for host in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            sans.append(x509.DNSName(host))
    usages = [ExtendedKeyUsageOID.CLIENT_AUTH] + ([ExtendedKeyUsageOID.SERVER_AUTH] if identity.role == NODE else [])
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{identity.role}-{identity.name}")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or now - datetime.timedelta(minutes=5))
        .not_valid_after(not_after or now + datetime.timedelta(days=CERT_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_public), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    stem = stem or f"{identity.role}-{identity.name}"
    cert_path, key_path = directory / f"{stem}.pem", directory / f"{stem}-key.pem"
    directory.mkdir(parents=True, exist_ok=True)
    write_private(key_path, _key_pem(key))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


def secure_cluster(cfg: ClusterConfig, directory: Path) -> ClusterConfig:
    """`cfg` with mutual TLS: a new CA in `directory`, a certificate per node, one
    client and one admin certificate (what the supervisor uses), all named in the
    config by absolute paths, so a copy of the config works from anywhere."""
    directory = directory.resolve()
    make_ca(directory)
    client_cert, client_key = make_cert(directory, Identity(CLIENT, "default"), stem="client")
    admin_cert, admin_key = make_cert(directory, Identity(ADMIN, "supervisor"), stem="admin")
    tls = TlsConfig(directory / "ca.pem", client_cert, client_key, admin_cert, admin_key)
    return replace(cfg, tls=tls, nodes={i: node_with_cert(n, directory) for i, n in cfg.nodes.items()})


def node_with_cert(node: NodeAddress, directory: Path) -> NodeAddress:
    """`node` with a new certificate of its own, signed by the CA in `directory`."""
    hosts = tuple(sorted({node.peer[0], node.client[0]}))
    cert, key = make_cert(directory, node_identity(node.id), hosts=hosts)
    return replace(node, cert=cert, key=key)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m raftproc.ops.certs", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("ca", help="a new CA").add_argument("dir", type=Path)
    n = sub.add_parser("node", help="a node's certificate")
    n.add_argument("dir", type=Path)
    n.add_argument("--id", type=int, required=True)
    n.add_argument("--host", action="append", default=[], help="a DNS name or IP address the node is reached at (repeatable)")
    c = sub.add_parser("client", help="a client's certificate")
    c.add_argument("dir", type=Path)
    c.add_argument("--name", required=True)
    c.add_argument("--admin", action="store_true", help="may also change membership and transfer leadership")
    args = p.parse_args(argv)
    if args.cmd == "ca":
        if (args.dir / "ca-key.pem").exists():
            print(f"{args.dir / 'ca-key.pem'} exists: refusing to replace the CA", file=sys.stderr)
            return 1
        paths = make_ca(args.dir)
    elif args.cmd == "node":
        if args.id < 1:
            print("--id must be a positive integer", file=sys.stderr)
            return 2
        paths = make_cert(args.dir, node_identity(args.id), hosts=tuple(args.host))
    else:
        identity = Identity(ADMIN if args.admin else CLIENT, args.name)
        if identity_of({"subjectAltName": (("URI", identity.uri()),)}) != identity:
            print("--name: 1 to 64 letters, digits, '.', '_' or '-'", file=sys.stderr)
            return 2
        paths = make_cert(args.dir, identity)
    print(f"wrote {paths[0]} and its key {paths[1]} (readable by its owner only)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
