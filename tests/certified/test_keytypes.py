"""ECDSA P-256 identities beside ed25519: construction, the CLIs, and real TLS 1.3
handshakes across every pairing of server and client key types."""

from __future__ import annotations

import socket
import subprocess
from urllib.parse import urlsplit

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from certified import Certified
from certified.errors import CertifiedError
from certified.keys import load_certificate, load_private_key
from certified.pki import (
    ca_certificate,
    identity_of,
    issue_certificate,
    key_fingerprint,
    key_type_of,
    make_csr,
    new_key,
    parse_csr,
    pem,
    subject_name,
)
from tests.support.pki import make_pki
from tests.support.servers import start_certified_server

pytestmark = pytest.mark.timeout(60)
PAIRS = [(s, c) for s in ("ed25519", "p256") for c in ("ed25519", "p256")]


@pytest.mark.parametrize(("ca_type", "leaf_type"), PAIRS)
def test_a_ca_of_either_type_signs_keys_of_either_type(ca_type, leaf_type):
    ca_key, leaf_key = new_key(ca_type), new_key(leaf_type)
    ca = ca_certificate(ca_key, "facility")
    ca.verify_directly_issued_by(ca)
    leaf = issue_certificate(ca_key, ca, leaf_key.public_key(), subject_name("al", uid="al"))
    leaf.verify_directly_issued_by(ca)
    assert identity_of(leaf) == "uid:al" and key_type_of(leaf.public_key()) == leaf_type
    pub, subject, _ = parse_csr(pem(make_csr(leaf_key, subject_name("al"))).encode())
    assert key_fingerprint(pub) == key_fingerprint(leaf_key.public_key())
    assert len(key_fingerprint(pub)) == 64


def test_other_curves_and_unknown_types_are_refused():
    p384 = ec.generate_private_key(ec.SECP384R1())
    ca_key = new_key("p256")
    ca = ca_certificate(ca_key, "facility")
    with pytest.raises(CertifiedError, match="only ed25519 or ECDSA P-256 keys"):
        issue_certificate(ca_key, ca, p384.public_key(), subject_name("x"))
    with pytest.raises(CertifiedError, match="unknown key type 'rsa'"):
        new_key("rsa")  # type: ignore[arg-type]


def run(prog: str, *args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [prog, *map(str, args)], capture_output=True, text=True, timeout=60, check=False
    )


def test_init_key_type_p256_makes_p256_ca_and_identity(tmp_path):
    d = tmp_path / "web"
    out = run(
        "certified", "init", "web", "--key-type", "p256", "--host", "127.0.0.1", "--config", d
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"created p256 identity 'web' in {d}"
    for name in ("CA.key", "id.key"):
        key = load_private_key(d / name)
        assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"
    assert (d / "id.key").stat().st_mode & 0o777 == 0o600
    load_certificate(d / "id.crt").verify_directly_issued_by(load_certificate(d / "CA.crt"))
    default = tmp_path / "plain"
    assert run("certified", "init", "plain", "--config", default).returncode == 0
    assert isinstance(load_private_key(default / "id.key"), ed25519.Ed25519PrivateKey)
    bad = run("certified", "init", "x", "--key-type", "rsa", "--config", tmp_path / "x")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert "'rsa' is not one of 'ed25519', 'p256'" in bad.stderr
    assert not (tmp_path / "x").exists()


def peer_key_type(client: Certified, url: str) -> tuple[str, str]:
    """(TLS version, server key type) of a raw handshake as `client`."""
    parts = urlsplit(url)
    ctx = client.ssl_context(False, pinned=client.services()["whoami"].cert)
    with (
        socket.create_connection((parts.hostname, parts.port), timeout=10) as raw,
        ctx.wrap_socket(raw, server_hostname=parts.hostname) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
        return tls.version(), key_type_of(x509.load_der_x509_certificate(der).public_key())


@pytest.mark.parametrize(("server_key", "client_key"), PAIRS)
def test_mtls_handshake_between_key_types(tmp_path, spawn, server_key, client_key):
    pki = make_pki(tmp_path / "pki", server_key=server_key, client_key=client_key)
    user = pki.new_user("alice", key_type=client_key)
    _proc, url = start_certified_server(spawn, pki.server)
    for who, expected in ((pki.client, "cn:client"), (user, "uid:alice")):
        pki.add_service(who, "whoami", url)
        with Certified(who).client("https://whoami") as c:
            assert c.get("/").json()["identity"] == expected
        assert peer_key_type(Certified(who), url) == ("TLSv1.3", server_key)


def test_a_p256_server_still_refuses_an_untrusted_p256_client(tmp_path, spawn):
    pki = make_pki(tmp_path / "pki", server_key="p256", client_key="p256")
    stranger = pki.new_identity("stranger", trusted=False, key_type="p256")
    _proc, url = start_certified_server(spawn, pki.server)
    pki.add_service(stranger, "whoami", url)
    with (
        Certified(stranger).client("https://whoami") as c,
        pytest.raises(httpx.HTTPError, match="(?i)unknown ca"),
    ):
        c.get("/")
