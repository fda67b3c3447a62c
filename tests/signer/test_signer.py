"""The signer as a real UNIX-socket service: identities come from the kernel, not the client."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

import httpx
import pytest

from certified import Certified, admin
from certified.keys import load_certificate
from certified.pki import identity_of, make_csr, new_key, pem, subject_name
from tests.support.servers import refused_as_revoked, start_certified_server, start_signer
from tests.support.waiting import wait_until

pytestmark = pytest.mark.timeout(90)
LOGIN = pwd.getpwuid(os.getuid()).pw_name


@pytest.fixture
def signer(tmp_path, spawn):
    conf = tmp_path / "signer-ca"
    admin.init_identity(conf, "signer")
    sock = tmp_path / "signer.sock"
    proc = start_signer(spawn, conf, sock)
    return conf, sock, proc


def cli(*args, check=True):
    proc = subprocess.run(["signer", *map(str, args)], capture_output=True, text=True, timeout=60)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def uds_post(sock: Path, path: str, body: dict) -> httpx.Response:
    with httpx.Client(transport=httpx.HTTPTransport(uds=str(sock)), base_url="http://signer") as c:
        return c.post(path, json=body)


def test_request_issues_certificate_for_the_callers_login(signer, tmp_path):
    conf, sock, _proc = signer
    user = tmp_path / "user"
    out = cli("request", "--socket", sock, "--config", user)
    assert f"uid:{LOGIN}" in out.stdout
    assert (user / "id.key").stat().st_mode & 0o777 == 0o600
    cert = load_certificate(user / "id.crt")
    assert identity_of(cert) == f"uid:{LOGIN}"
    cert.verify_directly_issued_by(load_certificate(conf / "CA.crt"))
    row = json.loads(cli("status", f"{cert.serial_number:x}", "--config", conf).stdout)
    assert row["login"] == LOGIN and row["uid"] == os.getuid() and row["state"] == "valid"
    from certified.pki import key_fingerprint

    assert row["key_fingerprint"] == key_fingerprint(cert.public_key())
    # Asking again keeps the same private key (the key never leaves the user).
    key_before = (user / "id.key").read_bytes()
    cli("request", "--socket", sock, "--config", user)
    assert (user / "id.key").read_bytes() == key_before


def test_csr_naming_another_user_is_refused(signer):
    _conf, sock, _proc = signer
    other = "someone-else" if LOGIN != "someone-else" else "another"
    for subject in (
        subject_name(other, uid=other),
        subject_name(other),
        subject_name(LOGIN, uid=other),
    ):
        resp = uds_post(sock, "/sign", {"csr": pem(make_csr(new_key(), subject))})
        assert resp.status_code == 403
        assert f"logged in as '{LOGIN}'" in resp.json()["detail"]


def test_malformed_requests_get_clear_errors(signer):
    _conf, sock, _proc = signer
    resp = uds_post(sock, "/sign", {"csr": "-----BEGIN CERTIFICATE REQUEST-----\nxx\n"})
    assert resp.status_code == 400 and "malformed" in resp.json()["detail"]
    resp = uds_post(sock, "/sign", {"csr": "hello"})
    assert resp.status_code == 400 and "PEM" in resp.json()["detail"]
    assert uds_post(sock, "/sign", {"csr": "x", "subject": "root"}).status_code == 422
    # A certificate wrapping someone else's public key proves nothing: only CSRs are signed.
    from certified.pki import ca_certificate, issue_certificate

    mallory_ca = new_key()
    ca = ca_certificate(mallory_ca, "mallory")
    alice_pub = new_key().public_key()
    forged = issue_certificate(mallory_ca, ca, alice_pub, subject_name(LOGIN, uid=LOGIN))
    resp = uds_post(sock, "/sign", {"csr": pem(forged)})
    assert resp.status_code == 400 and "signing request" in resp.json()["detail"]


def test_revocation_is_visible_and_enforced(signer, tmp_path, spawn, pki):
    conf, sock, _proc = signer
    admin.add_client(pki.server, "signer", (conf / "CA.crt").read_text(), users=True)
    _srv, url = start_certified_server(
        spawn, pki.server, extra=["--crl", f"unix:{sock}", "--crl-refresh", "0.2"], name="app"
    )
    user = tmp_path / "user"
    cli("request", "--socket", sock, "--config", user)
    pki.add_service(user, "app", url)
    serial = f"{load_certificate(user / 'id.crt').serial_number:x}"
    with Certified(user).client("https://app") as c:
        assert c.get("/").json()["identity"] == f"uid:{LOGIN}"
        assert "revoked" in cli("revoke", serial, "--config", conf).stdout
        status = json.loads(cli("status", serial, "--config", conf).stdout)
        assert status["state"] == "revoked" and status["revoked_at"]
        wait_until(lambda: refused_as_revoked(c), 10, "the revocation to be enforced")
    crl_file = tmp_path / "crl.pem"
    cli("crl", "--config", conf, "-o", crl_file)
    out = subprocess.run(
        ["openssl", "crl", "-in", str(crl_file), "-noout", "-text"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if out.returncode == 0:
        assert serial.upper().lstrip("0") in out.stdout.replace(":", "").upper()
    # --user revokes every valid certificate of that login.
    cli("request", "--socket", sock, "--config", tmp_path / "user2")
    revoked = cli("revoke", "--user", LOGIN, "--config", conf).stdout.split()
    assert revoked.count("revoked") == 1


def test_cli_bad_input(signer, tmp_path):
    conf, sock, _proc = signer
    checks = [
        (cli("status", "zz", "--config", conf, check=False), "not a hexadecimal"),
        (cli("status", "abc123", "--config", conf, check=False), "no certificate with serial"),
        (cli("revoke", "--config", conf, check=False), "exactly one of"),
        (
            cli("revoke", "--user", "nobody-here", "--config", conf, check=False),
            "no valid certificate",
        ),
        (
            cli(
                "request",
                "--socket",
                tmp_path / "none.sock",
                "--config",
                tmp_path / "u",
                check=False,
            ),
            "no signer socket",
        ),
        (cli("serve", "--socket", sock, "--config", conf, check=False), "already serving"),
        (cli("status", "ab", "--db", tmp_path / "missing.db", check=False), "does not exist"),
    ]
    for proc, needle in checks:
        assert proc.returncode == 1, proc.stderr
        assert needle in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


# A second real UNIX user, so the identity provably comes from SO_PEERCRED. The client
# side runs under the system python (stdlib only) as `nobody`, speaking raw HTTP.
NOBODY_CLIENT = r"""
import http.client, json, socket, sys
class UnixConn(http.client.HTTPConnection):
    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX); self.sock.connect(sys.argv[1])
c = UnixConn("signer"); c.request("POST", "/sign", body=sys.stdin.read(),
                                  headers={"content-type": "application/json"})
r = c.getresponse(); print(r.status); print(r.read().decode())
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as a second user")
def test_identity_comes_from_the_kernel_not_the_request(tmp_path, spawn):
    system_python = shutil.which("python3", path="/usr/bin:/bin")
    try:
        nobody = pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no 'nobody' user")
    if system_python is None:
        pytest.skip("no system python3 for the second user")
    shared = Path(tempfile.mkdtemp(prefix="signer-test-", dir="/tmp"))
    try:
        shared.chmod(0o755)
        conf = tmp_path / "signer-ca"
        admin.init_identity(conf, "signer")
        sock = shared / "signer.sock"
        start_signer(spawn, conf, sock)
        script = shared / "client.py"
        script.write_text(NOBODY_CLIENT)

        def as_nobody(subject) -> tuple[int, dict]:
            body = json.dumps({"csr": pem(make_csr(new_key(), subject))})
            out = subprocess.run(
                [system_python, str(script), str(sock)],
                input=body,
                text=True,
                capture_output=True,
                timeout=30,
                user=nobody.pw_uid,
                group=nobody.pw_gid,
                extra_groups=[],
                cwd=shared,
            )
            assert out.returncode == 0, out.stderr
            status, text = out.stdout.split("\n", 1)
            return int(status), json.loads(text)

        status, body = as_nobody(subject_name("nobody", uid="nobody"))
        assert status == 200, body
        from cryptography import x509

        assert identity_of(x509.load_pem_x509_certificate(body["cert"].encode())) == "uid:nobody"
        row = json.loads(cli("status", body["serial"], "--config", conf).stdout)
        assert row["login"] == "nobody" and row["uid"] == nobody.pw_uid
        status, body = as_nobody(subject_name(LOGIN, uid=LOGIN))
        assert status == 403 and "logged in as 'nobody'" in body["detail"]
    finally:
        shutil.rmtree(shared, ignore_errors=True)


def ls(conf, *args) -> list[dict]:
    out = cli("ls", "--json", "--config", conf, *args).stdout
    return [json.loads(line) for line in out.splitlines()]


def test_a_revoked_key_is_never_signed_again(signer, tmp_path):
    conf, sock, _proc = signer
    user = tmp_path / "user"
    cli("request", "--socket", sock, "--config", user)
    first = load_certificate(user / "id.crt")
    cli("revoke", f"{first.serial_number:x}", "--config", conf)
    again = cli("request", "--socket", sock, "--config", user, check=False)
    assert again.returncode == 1 and "Traceback" not in again.stderr
    assert again.stderr.strip() == (
        f"signer: error: signer refused: this key's certificate {first.serial_number:x} was"
        " revoked, so the key is never signed again; make a new key (signer request --new-key)"
    )
    assert load_certificate(user / "id.crt") == first  # nothing installed
    # The same key in a hand-made CSR is refused too (403), and nothing is recorded.
    from certified.keys import load_private_key

    csr = make_csr(load_private_key(user / "id.key"), subject_name(LOGIN, uid=LOGIN))
    resp = uds_post(sock, "/sign", {"csr": pem(csr)})
    assert resp.status_code == 403 and "was revoked" in resp.json()["detail"]
    assert [r["state"] for r in ls(conf)] == ["revoked"]
    # A new key is certified; the revoked certificate stays revoked.
    cli("request", "--socket", sock, "--config", user, "--new-key")
    second = load_certificate(user / "id.crt")
    assert second.serial_number != first.serial_number
    assert second.public_key() != first.public_key()
    assert [r["state"] for r in ls(conf)] == ["revoked", "valid"]


def test_denied_user_gets_nothing_until_allowed(signer, tmp_path):
    conf, sock, _proc = signer
    user = tmp_path / "user"
    cli("request", "--socket", sock, "--config", user)
    serial = f"{load_certificate(user / 'id.crt').serial_number:x}"
    denied = cli("deny", LOGIN, "--config", conf).stdout.splitlines()
    assert denied == [f"revoked {serial}", f"denied {LOGIN}"]
    assert ls(conf, "--state", "revoked")[0]["serial"] == serial
    assert f"denied {LOGIN} since" in cli("ls", "--config", conf).stdout
    crl = httpx.Client(transport=httpx.HTTPTransport(uds=str(sock))).get("http://signer/crl")
    from cryptography import x509

    revoked = {r.serial_number for r in x509.load_pem_x509_crl(crl.content)}
    assert int(serial, 16) in revoked
    for args in ((), ("--new-key",)):
        out = cli("request", "--socket", sock, "--config", user, *args, check=False)
        assert out.returncode == 1, out.stderr
        assert f"user '{LOGIN}' is denied certificates" in out.stderr
    resp = uds_post(sock, "/sign", {"csr": pem(make_csr(new_key(), subject_name(LOGIN)))})
    assert resp.status_code == 403 and "denied" in resp.json()["detail"]
    assert len(ls(conf)) == 1  # nothing issued while denied
    assert cli("allow", LOGIN, "--config", conf).stdout.strip() == f"allowed {LOGIN}"
    cli("request", "--socket", sock, "--config", user, "--new-key")
    assert [r["state"] for r in ls(conf)] == ["revoked", "valid"]
    again = cli("allow", LOGIN, "--config", conf, check=False)
    assert again.returncode == 1 and f"user '{LOGIN}' is not denied" in again.stderr


def test_ls_filters_by_user_and_state(signer, tmp_path):
    import datetime as dt

    from signer.ledger import Ledger
    from signer.models import LedgerRow

    conf, sock, _proc = signer
    for name in ("a", "b", "c"):
        cli("request", "--socket", sock, "--config", tmp_path / name)
    serials = [r["serial"] for r in ls(conf)]
    cli("revoke", serials[1], "--config", conf)
    past = dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
    Ledger(conf / "signer.db").record(
        LedgerRow(
            serial="abc",
            login="someone",
            uid=4242,
            key_fingerprint="00" * 32,
            not_before=past - dt.timedelta(days=30),
            not_after=past,
        )
    )
    assert [r["serial"] for r in ls(conf, "--state", "valid")] == [serials[0], serials[2]]
    assert [r["serial"] for r in ls(conf, "--state", "revoked")] == [serials[1]]
    assert [r["serial"] for r in ls(conf, "--state", "expired")] == ["abc"]
    assert [r["serial"] for r in ls(conf, "--user", "someone")] == ["abc"]
    assert ls(conf, "--user", LOGIN, "--state", "expired") == []
    table = cli("ls", "--config", conf, "--user", LOGIN).stdout.splitlines()
    assert len(table) == 3 and all(LOGIN in line for line in table)
    bad = cli("ls", "--config", conf, "--state", "bogus", check=False)
    assert bad.returncode == 2 and bad.stderr.startswith("signer: error: Invalid value")


def test_request_key_type_p256_gets_a_p256_user_certificate(signer, tmp_path):
    from cryptography.hazmat.primitives.asymmetric import ec

    from certified.keys import load_private_key

    conf, sock, _proc = signer  # the signer's own CA stays ed25519
    user = tmp_path / "user"
    cli("request", "--socket", sock, "--config", user, "--key-type", "p256")
    cert = load_certificate(user / "id.crt")
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    assert identity_of(cert) == f"uid:{LOGIN}"
    cert.verify_directly_issued_by(load_certificate(conf / "CA.crt"))
    assert isinstance(load_private_key(user / "id.key"), ec.EllipticCurvePrivateKey)
    # Asking for another type with the same key is refused; --new-key replaces it.
    again = cli("request", "--socket", sock, "--config", user, "--key-type", "ed25519", check=False)
    assert again.returncode == 1 and "is a p256 key; add --new-key" in again.stderr
    cli("request", "--socket", sock, "--config", user)  # renews with the p256 key it has
    assert isinstance(load_certificate(user / "id.crt").public_key(), ec.EllipticCurvePublicKey)
