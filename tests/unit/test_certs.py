"""Minting by hand (`python -m raftproc.ops.certs`): a CA once, node certificates with
their id and hosts, client and admin certificates; keys readable by their owner only;
names that would not parse back are refused."""

from __future__ import annotations

import os
import ssl

from cryptography import x509

from raftproc.ops.certs import main
from raftproc.runtime.tls import ADMIN, Identity, TlsFiles, client_context, identity_of, node_identity


def _identity(path) -> Identity | None:
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return identity_of({"subjectAltName": tuple(("URI", u) for u in sans.get_values_for_type(x509.UniformResourceIdentifier))})


def test_mint_a_ca_a_node_and_an_admin_by_hand(tmp_path):
    d = tmp_path / "pki"
    assert main(["ca", str(d)]) == 0
    assert main(["ca", str(d)]) == 1, "never replaces a CA"
    assert main(["node", str(d), "--id", "7", "--host", "10.0.0.7", "--host", "db7.example"]) == 0
    assert main(["client", str(d), "--name", "ops", "--admin"]) == 0
    assert main(["client", str(d), "--name", "a/b"]) == 2
    assert _identity(d / "node-7.pem") == node_identity(7)
    assert _identity(d / "admin-ops.pem") == Identity(ADMIN, "ops")
    sans = (
        x509.load_pem_x509_certificate((d / "node-7.pem").read_bytes())
        .extensions.get_extension_for_class(x509.SubjectAlternativeName)
        .value
    )
    assert sans.get_values_for_type(x509.DNSName) == ["db7.example"] and [str(a) for a in sans.get_values_for_type(x509.IPAddress)] == [
        "10.0.0.7"
    ]
    for key in ("ca-key.pem", "node-7-key.pem", "admin-ops-key.pem"):
        assert os.stat(d / key).st_mode & 0o777 == 0o600
    # What was minted loads as a TLS 1.3 client context.
    assert client_context(TlsFiles(d / "ca.pem", d / "admin-ops.pem", d / "admin-ops-key.pem")).minimum_version == ssl.TLSVersion.TLSv1_3
