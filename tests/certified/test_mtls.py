"""Real TLS on loopback against `certified serve`: who gets in, who does not, and why."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import ssl
import subprocess
import time

import httpx
import pytest

from certified import Certified
from certified.keys import load_certificate, load_private_key, write_pem, write_private_key
from certified.pki import build_crl, issue_certificate, new_key, pem, subject_name, utcnow
from tests.support.ci import require_executable
from tests.support.servers import refused_as_revoked, start_certified_server
from tests.support.waiting import wait_until

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def server(pki, spawn):
    proc, url = start_certified_server(spawn, pki.server)
    pki.add_service(pki.client, "whoami", url)
    return proc, url


def test_trusted_client_is_seen_with_its_identity(pki, server):
    proc, _url = server
    with Certified(pki.client).client("https://whoami") as client:
        body = client.get("/").json()
    assert body["identity"] == "cn:client"
    time.sleep(0.2)
    access = access_lines(proc)
    assert access[-1]["client_identity"] == "cn:client"
    assert (
        access[-1]["status"] == 200 and access[-1]["path"] == "/" and access[-1]["method"] == "GET"
    )
    assert access[-1]["remote"].startswith("127.0.0.1:") and access[-1]["duration_ms"] >= 0
    assert f"serving {_url}: mTLS, TLS 1.3, client certificate required" in proc.stderr()


def access_lines(proc) -> list[dict]:
    return [json.loads(line) for line in proc.stderr().splitlines() if '"certified.access"' in line]


def assert_refused(proc, call) -> None:
    """`call` fails at the TLS layer: no request reaches the app, the server stays up."""
    before = len(access_lines(proc))
    with pytest.raises((httpx.HTTPError, ssl.SSLError)):
        call()
    time.sleep(0.2)
    assert len(access_lines(proc)) == before
    assert proc.popen.poll() is None


def test_expired_certificate_is_refused(pki, server, tmp_path):
    proc, url = server
    expired = tmp_path / "expired"
    shutil.copytree(pki.client, expired)
    ca_key = load_private_key(pki.client / "CA.key")
    ca_cert = load_certificate(pki.client / "CA.crt")
    key = new_key()
    cert = issue_certificate(
        ca_key,
        ca_cert,
        key.public_key(),
        subject_name("client"),
        days=1,
        not_before=utcnow() - dt.timedelta(days=3),
    )
    write_private_key(expired / "id.key", key, overwrite=True)
    write_pem(expired / "id.crt", pem(cert) + pem(ca_cert), overwrite=True)
    with Certified(expired).client("https://whoami") as c:
        assert_refused(proc, lambda: c.get("/"))
    sent = subprocess.run(
        ["message", "https://whoami/", "--config", str(expired)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert sent.returncode == 1
    assert sent.stderr.endswith("certificate expired (TLS alert 45)\n"), sent.stderr


def test_revoked_certificate_is_refused(pki, spawn, tmp_path):
    crl_path = tmp_path / "revoked.pem"
    ca_key = load_private_key(pki.client / "CA.key")
    ca_cert = load_certificate(pki.client / "CA.crt")
    write_pem(crl_path, pem(build_crl(ca_key, ca_cert, [])))
    _proc, url = start_certified_server(spawn, pki.server, extra=["--crl", str(crl_path)])
    pki.add_service(pki.client, "whoami", url)
    pki.add_service(pki.other, "whoami", url)
    with Certified(pki.client).client("https://whoami") as c:
        assert c.get("/").status_code == 200
        serial = load_certificate(pki.client / "id.crt").serial_number
        write_pem(crl_path, pem(build_crl(ca_key, ca_cert, [(serial, utcnow())])), overwrite=True)
        wait_until(lambda: refused_as_revoked(c), 10, "the revocation to be enforced")
    with Certified(pki.other).client("https://whoami") as c:  # other CA: unaffected
        assert c.get("/").status_code == 200


def test_crl_from_an_untrusted_issuer_is_rejected_at_startup(pki, spawn, tmp_path):
    rogue = new_key()
    from certified.pki import ca_certificate

    rogue_ca = ca_certificate(rogue, "rogue")
    crl_path = tmp_path / "rogue.pem"
    write_pem(crl_path, pem(build_crl(rogue, rogue_ca, [])))
    proc = subprocess.run(
        [
            "certified",
            "serve",
            "certified.whoami:app",
            "https://127.0.0.1:1",
            "--config",
            str(pki.server),
            "--crl",
            str(crl_path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (
        proc.returncode == 1
        and "not a trusted CA" in proc.stderr
        and "Traceback" not in proc.stderr
    )


def test_client_refuses_server_not_matching_pin(pki, server):
    proc, url = server
    # Pin a certificate that is not the server's: the handshake must fail on the client.
    from certified.admin import add_service

    add_service(pki.client, "imposter", url, (pki.other / "CA.crt").read_text())
    imposter = Certified(pki.client).client("https://imposter")
    with imposter, pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        imposter.get("/")
    # Pinning the server's own leaf certificate (not its CA) works.
    add_service(
        pki.client,
        "leaf",
        url,
        (pki.server / "id.crt").read_text().split("-----END")[0] + "-----END CERTIFICATE-----\n",
    )
    with Certified(pki.client).client("https://leaf") as c:
        assert c.get("/").json()["identity"] == "cn:client"


def test_message_cli(pki, server):
    _proc, _url = server
    ok = subprocess.run(
        ["message", "https://whoami/echo", '{"x": [1, 2]}', "--config", str(pki.client)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout) == {"identity": "cn:client", "body": {"x": [1, 2]}}
    missing = subprocess.run(
        ["message", "https://whoami/nope", "--config", str(pki.client)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert missing.returncode == 1 and "404" in missing.stderr and "Not Found" in missing.stderr


def test_interoperates_with_curl(pki, server):
    require_executable("curl", "apt-get install curl")
    _proc, url = server
    ok = subprocess.run(
        [
            "curl",
            "-sS",
            "--fail",
            "--cert",
            str(pki.client / "id.crt"),
            "--key",
            str(pki.client / "id.key"),
            "--cacert",
            str(pki.server / "CA.crt"),
            url + "/",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["identity"] == "cn:client"


def tls_lines(proc) -> list[dict]:
    return [json.loads(line) for line in proc.stderr().splitlines() if '"certified.tls"' in line]


def s_client(port: int, pki, identity=None) -> str:
    """What `openssl s_client -tls1_3` says when it sends a request (with `identity`)."""
    cert = ["-cert", str(identity / "id.crt"), "-key", str(identity / "id.key")] if identity else []
    out = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-tls1_3", "-ign_eof"]
        + ["-CAfile", str(pki.server / "CA.crt"), *cert],
        input="GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
        capture_output=True,
        text=True,
        timeout=30,
    )
    return out.stdout + out.stderr


def curl(url: str, pki, identity=None) -> subprocess.CompletedProcess:
    cert = []
    if identity is not None:
        cert = ["--cert", str(identity / "id.crt"), "--key", str(identity / "id.key")]
    return subprocess.run(
        ["curl", "-sS", "--tlsv1.3", "--cacert", str(pki.server / "CA.crt"), *cert, url + "/"],
        capture_output=True,
        text=True,
        timeout=30,
    )


def revoked_client(pki, tmp_path):
    """A CRL file revoking cn:client's certificate."""
    crl_path = tmp_path / "revoked.pem"
    ca_key = load_private_key(pki.client / "CA.key")
    ca_cert = load_certificate(pki.client / "CA.crt")
    serial = load_certificate(pki.client / "id.crt").serial_number
    write_pem(crl_path, pem(build_crl(ca_key, ca_cert, [(serial, utcnow())])))
    return crl_path


@pytest.mark.parametrize(
    ("case", "alert", "number", "reason"),
    [
        ("no certificate", "certificate required", 116, {"peer did not return a certificate"}),
        (
            "untrusted CA",
            "unknown ca",
            48,
            # openssl sends the leaf only, curl and httpx the chain from id.crt
            {
                "unable to get local issuer certificate",
                "self-signed certificate in certificate chain",
            },
        ),
        ("revoked", "certificate revoked", 44, {"certificate revoked"}),
    ],
)
def test_refused_clients_get_a_tls_alert_saying_why(
    pki, spawn, tmp_path, case, alert, number, reason
):
    """openssl s_client, curl and `message` see the alert; the server logs one JSON line
    per refused handshake (peer, reason); no request reaches the app."""
    require_executable("openssl", "apt-get install openssl")
    require_executable("curl", "apt-get install curl")
    extra = ["--crl", str(revoked_client(pki, tmp_path))] if case == "revoked" else []
    proc, url = start_certified_server(spawn, pki.server, extra=extra)
    port = int(url.rsplit(":", 1)[1])
    identity = {
        "no certificate": None,
        "untrusted CA": pki.new_identity("stranger", trusted=False),
        "revoked": pki.client,
    }[case]

    said = s_client(port, pki, identity)
    assert f"alert {alert}" in said and f"SSL alert number {number}" in said, said
    assert "HTTP/1.1 200" not in said
    got = curl(url, pki, identity)
    assert got.returncode != 0 and got.stdout == ""
    assert f"alert {alert}" in got.stderr, got.stderr
    if identity is not None:
        pki.add_service(identity, "whoami", url)
        sent = subprocess.run(
            ["message", "https://whoami/", "--config", str(identity)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert sent.returncode == 1 and "Traceback" not in sent.stderr
        assert sent.stderr.strip() == (
            f"message: error: GET https://whoami/: the server refused the TLS handshake: "
            f"{alert} (TLS alert {number})"
        )
    refusals = 2 if identity is None else 3
    wait_until(lambda: len(tls_lines(proc)) >= refusals, 10, "the refusal log lines")
    lines = tls_lines(proc)
    assert len(lines) == refusals, lines
    for line in lines:
        assert line["level"] == "warning" and line["message"] == "refused TLS handshake"
        assert line["peer"].startswith("127.0.0.1:") and line["reason"] in reason
    assert access_lines(proc) == [] and proc.popen.poll() is None
    # The server still serves trusted clients.
    pki.add_service(pki.other, "whoami", url)
    with Certified(pki.other).client("https://whoami") as c:
        assert c.get("/").json()["identity"] == "cn:other"


def test_async_client_speaks_mtls(pki, server):
    import asyncio

    async def call() -> dict:
        async with Certified(pki.client).async_client("https://whoami") as c:
            return (await c.post("/echo", json={"n": 1})).json()

    assert asyncio.run(call()) == {"identity": "cn:client", "body": {"n": 1}}


def test_client_resolves_nicknames_in_absolute_urls(pki, server):
    import asyncio

    with Certified(pki.client).client() as c:
        assert c.get("https://whoami/").json()["identity"] == "cn:client"

    async def call() -> dict:
        async with Certified(pki.client).async_client() as c:
            return (await c.post("https://whoami/echo", json=[1])).json()

    assert asyncio.run(call())["body"] == [1]


def test_sigterm_drains_and_exits_zero(pki, server):
    proc, _url = server
    with Certified(pki.client).client("https://whoami") as c:
        assert c.get("/").status_code == 200
    import signal as _signal

    proc.popen.send_signal(_signal.SIGTERM)
    assert proc.popen.wait(timeout=20) == 0
    assert "Application shutdown complete" in proc.stderr()


def test_sigterm_with_an_idle_keep_alive_client_shuts_down_cleanly(pki, server):
    """A client that keeps its connection in its pool and never reads it again (as
    services' httpx clients do) does not answer TLS close_notify: the server drops such
    idle connections at shutdown instead of waiting its graceful-shutdown timeout out and
    cancelling the app (which would skip the app's own shutdown)."""
    import signal as _signal

    proc, _url = server
    with Certified(pki.client).client("https://whoami") as c:
        assert c.get("/").status_code == 200  # the connection stays open in c's pool
        proc.popen.send_signal(_signal.SIGTERM)
        assert proc.popen.wait(timeout=30) == 0
    err = proc.stderr()
    assert "Application shutdown complete" in err
    assert "timeout graceful shutdown exceeded" not in err


def test_trusted_ca_cannot_impersonate_over_tls(pki, server, tmp_path):
    """cn:client's CA signs certificates for `server` and a user: the server sees them
    namespaced, so ownership checks keyed on identity cannot be fooled."""
    _proc, _url = server
    ca_key = load_private_key(pki.client / "CA.key")
    ca_cert = load_certificate(pki.client / "CA.crt")
    for name, subject, expected in (
        ("as-server", subject_name("server"), "cn:server@client"),
        ("as-alice", subject_name("alice", uid="alice"), "uid:alice@client"),
    ):
        d = tmp_path / name
        shutil.copytree(pki.client, d)
        key = new_key()
        cert = issue_certificate(ca_key, ca_cert, key.public_key(), subject)
        write_private_key(d / "id.key", key, overwrite=True)
        write_pem(d / "id.crt", pem(cert) + pem(ca_cert), overwrite=True)
        with Certified(d).client("https://whoami") as c:
            assert c.get("/").json()["identity"] == expected


def test_sigterm_after_the_keep_alive_timeout_closed_an_idle_client_shuts_down_at_once(pki, server):
    """uvicorn closes a connection idle for its keep-alive timeout (5 s) with TLS
    close_notify, which a pooled client never answers (it does not read idle
    connections): at shutdown such a closing connection is dropped too, so the server
    exits without waiting its graceful-shutdown timeout (10 s) out."""
    import signal as _signal

    proc, _url = server
    with Certified(pki.client).client("https://whoami") as c:
        assert c.get("/").status_code == 200  # the connection stays open in c's pool
        time.sleep(6)  # past uvicorn's keep-alive timeout: the server is closing it
        proc.popen.send_signal(_signal.SIGTERM)
        assert proc.popen.wait(timeout=30) == 0
    err = proc.stderr()
    assert "Application shutdown complete" in err
    assert "Waiting for connections to close" not in err
    assert "timeout graceful shutdown exceeded" not in err


def test_sigterm_during_a_response_delivers_it_whole_then_exits(pki, spawn, tmp_path):
    """A request in flight when SIGTERM arrives gets its whole response (16 MiB, read
    slowly, byte for byte: the server drops such a connection only once the response
    has left), and the server exits 0 without hitting its graceful-shutdown timeout."""
    import signal as _signal
    import threading

    from tests.support.asgi_apps import pattern

    proc, url = start_certified_server(spawn, pki.server, "tests.support.asgi_apps:slow_body")
    pki.add_service(pki.client, "slow", url)
    got: list[bytes] = []
    with Certified(pki.client).client("https://slow", timeout=60) as c:

        def fetch() -> None:
            with c.stream("GET", "/", params={"mib": 16, "mark": str(mark)}) as r:
                parts = []
                for chunk in r.iter_bytes(65536):
                    parts.append(chunk)
                    time.sleep(0.002)  # a slow reader: the server's buffers stay full
                got.append(b"".join(parts))

        mark = tmp_path / "arrived"
        t = threading.Thread(target=fetch)
        t.start()
        wait_until(mark.exists, 30, "the request to reach the app")  # it answers 1 s later
        proc.popen.send_signal(_signal.SIGTERM)
        t.join(60)
        assert got and got[0] == pattern(16)
        assert proc.popen.wait(timeout=30) == 0
    err = proc.stderr()
    assert "Application shutdown complete" in err
    assert "timeout graceful shutdown exceeded" not in err
