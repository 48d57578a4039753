"""Mutual TLS for both ports: the contexts, and who a certificate says its holder is.

Every certificate is signed by the cluster's private CA and names its holder in a
URI subject alternative name:

    raftproc://node/3        node 3 (peer port: the only certificate that may say
                             hello as node 3; client port: never)
    raftproc://client/NAME   may read and write keys, and ask for status
    raftproc://admin/NAME    may also change membership and transfer leadership

Hostnames are not checked: a peer is who its certificate's node id says, which is
what Raft needs to know (etcd's `--peer-cert-allowed-cn`, with the id as the name).
Only TLS 1.3 is spoken, and a TLS port speaks nothing else: a plaintext frame is a
failed handshake and the connection is closed without an answer.

`TlsContexts` holds the contexts a node hands to new connections; `reload()`
(SIGHUP) builds new ones from the same files, so rotated certificates, keys and CA
bundles take effect for new connections while open ones carry on.
"""

from __future__ import annotations

import re
import ssl
from dataclasses import dataclass
from pathlib import Path

NODE, CLIENT, ADMIN = "node", "client", "admin"
ROLES = (NODE, CLIENT, ADMIN)
URI_PREFIX = "raftproc://"
MAX_NAME_CHARS = 64
_URI = re.compile(r"raftproc://(node|client|admin)/([A-Za-z0-9_.-]{1,64})")
MAX_NODE_ID = 2**63 - 1


class TlsError(Exception):
    """A certificate, key or CA file could not be loaded."""


@dataclass(frozen=True, slots=True)
class Identity:
    role: str  # node | client | admin
    name: str  # a node's id in decimal, or a client's name

    @property
    def node_id(self) -> int | None:
        return int(self.name) if self.role == NODE else None

    def uri(self) -> str:
        return f"{URI_PREFIX}{self.role}/{self.name}"

    def __str__(self) -> str:
        return f"{self.role} {self.name}"


def node_identity(node_id: int) -> Identity:
    return Identity(NODE, str(node_id))


def identity_of(cert: dict | None) -> Identity | None:
    """The identity a verified peer certificate (`SSLSocket.getpeercert()`) names, or
    None when it names none or more than one (a certificate is one holder)."""
    if not cert:
        return None
    found = []
    for kind, value in cert.get("subjectAltName", ()):
        if kind != "URI" or not isinstance(value, str) or not value.startswith(URI_PREFIX):
            continue
        m = _URI.fullmatch(value)
        if m is None:
            return None
        role, name = m.groups()
        if role == NODE and (not name.isdigit() or not 1 <= int(name) <= MAX_NODE_ID or name != str(int(name))):
            return None
        found.append(Identity(role, name))
    return found[0] if len(found) == 1 else None


@dataclass(frozen=True)
class TlsFiles:
    """One holder's certificate and key, and the CA bundle it trusts."""

    ca: Path
    cert: Path | None
    key: Path | None


def server_context(files: TlsFiles) -> ssl.SSLContext:
    """For a listening port: TLS 1.3 only, and a certificate from our CA required."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _common(ctx, files)
    return ctx


def client_context(files: TlsFiles) -> ssl.SSLContext:
    """For dialling a node: its certificate must come from our CA; ours is shown if
    we have one (a client port refuses a connection without)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False  # the node id in the certificate is checked instead
    _common(ctx, files)
    return ctx


def client_context_for(files: TlsFiles | None) -> ssl.SSLContext | None:
    """A client context for a config's client files (ClusterConfig.client_tls()), or
    None for a plaintext cluster."""
    return client_context(files) if files is not None else None


def _common(ctx: ssl.SSLContext, files: TlsFiles) -> None:
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.verify_mode = ssl.CERT_REQUIRED
    try:
        ctx.load_verify_locations(cafile=str(files.ca))
        if files.cert is not None:
            ctx.load_cert_chain(str(files.cert), str(files.key) if files.key is not None else None)
    except (OSError, ssl.SSLError) as e:
        raise TlsError(f"cannot load TLS files (ca {files.ca}, cert {files.cert}, key {files.key}): {e}") from None


class TlsContexts:
    """A node's two contexts: `server` for its listeners, `client` for its peer links."""

    def __init__(self, files: TlsFiles) -> None:
        if files.cert is None or files.key is None:
            raise TlsError("a node needs its own certificate and key")
        self.files = files
        self.server = server_context(files)
        self.client = client_context(files)

    def reload(self) -> None:
        """Read the files again; on any error the old contexts stay (TlsError)."""
        server, client = server_context(self.files), client_context(self.files)
        self.server, self.client = server, client
