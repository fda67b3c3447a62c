"""Interoperation with upstream certified 1.3.0 from PyPI (in its own virtualenv).

Both directions over real mTLS on loopback, with each side's own exchange files:
upstream's url-safe base64 DER / JSON and our PEM."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.support.ports import free_port
from tests.support.servers import start_certified_server
from tests.support.upstream import upstream_env, upstream_venv

pytestmark = pytest.mark.timeout(600)  # the first run installs upstream certified

UPSTREAM = ["certified[http]==1.3.0"]

#: a FastAPI app for upstream's `certified serve`: the client certificate's subject
UPSTREAM_APP = """
from fastapi import FastAPI
from certified.fast import PeerCert

app = FastAPI()


@app.get("/who")
def who(cert: PeerCert) -> dict:
    return {"subject": cert.get("subject"), "issuer": cert.get("issuer")}
"""


@pytest.fixture(scope="module")
def up() -> Path:
    return upstream_venv("certified", UPSTREAM)


def ours(*args, check: bool = True) -> subprocess.CompletedProcess:
    out = subprocess.run(["certified", *map(str, args)], capture_output=True, text=True,
                         timeout=60)  # fmt: skip
    if check:
        assert out.returncode == 0, out.stderr
    return out


def theirs(up: Path, cwd: Path, *args, program: str = "certified", check: bool = True, **env):
    out = subprocess.run([str(up / program), *map(str, args)], capture_output=True, text=True,
                         timeout=60, cwd=cwd, env=upstream_env(up, **env))  # fmt: skip
    if check:
        assert out.returncode == 0, f"upstream {program} {args}:\n{out.stdout}\n{out.stderr}"
    return out


def signer_name(up: Path, cwd: Path, config: Path) -> str:
    """The RFC 4514 name upstream uses for an identity's signing CA (its `auths`)."""
    code = (
        "import sys; from certified import Certified; from certified.encode import rfc4514name;"
        f" print(rfc4514name(Certified({str(config)!r}).signer().certificate.subject))"
    )
    return theirs(up, cwd, "-c", code, program="python").stdout.strip()


def test_upstream_clients_reach_our_server(up, pki, spawn, tmp_path):
    """get-signer -> our add-client, and our introduce -> upstream add-intro: both talk."""
    ours_signer = tmp_path / "server-signer.json"
    ours_signer.write_text(
        ours("get-signer", "--format", "upstream", "--config", pki.server).stdout
    )

    # 1. upstream's own identity, trusted by its CA (upstream get-signer -> our add-client)
    u1 = tmp_path / "upclient"
    theirs(up, tmp_path, "init", "upclient", "--email", "u1@example.org", "--config", u1)
    sig = tmp_path / "u1-signer.json"
    sig.write_text(theirs(up, tmp_path, "get-signer", "--config", u1).stdout)
    ours("add-client", "upclient", sig, "--config", pki.server)
    _proc, url = start_certified_server(spawn, pki.server)  # reads its trusted CAs once
    port = url.rsplit(":", 1)[1]
    auth = signer_name(up, tmp_path, u1)
    theirs(up, tmp_path, "add-service", "127.0.0.1", ours_signer, "--auth", auth, "--config", u1)
    got = theirs(up, tmp_path, f"https://127.0.0.1:{port}/", "--config", u1, program="message")
    assert json.loads(got.stdout)["identity"] == "cn:upclient"

    # 2. introduced by us (upstream get-ident -> our introduce --format upstream -> add-intro)
    u2 = tmp_path / "upintro"
    theirs(up, tmp_path, "init", "upintro", "--email", "u2@example.org", "--config", u2)
    ident = tmp_path / "u2.b64"
    ident.write_text(theirs(up, tmp_path, "get-ident", "--config", u2).stdout)
    intro = tmp_path / "intro.json"
    intro.write_text(
        ours("introduce", ident, "--format", "upstream", "--config", pki.server).stdout
    )
    theirs(up, tmp_path, "add-intro", intro, "--config", u2)
    theirs(up, tmp_path, "add-service", "127.0.0.1", ours_signer, "--config", u2)
    got = theirs(up, tmp_path, f"https://127.0.0.1:{port}/", "--config", u2, program="message")
    assert json.loads(got.stdout)["identity"] == "cn:upintro@server"  # signed by our CA

    # 3. upstream's nickname file for our server, imported by one of our clients
    entry = u1 / "known_servers" / "127.0.0.1.yaml"
    ours("import-service", entry, "--name", "ourserver", "--url", url, "--config", pki.other)
    got = subprocess.run(["message", "https://ourserver/", "--config", str(pki.other)],
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert got.returncode == 0, got.stderr
    assert json.loads(got.stdout)["identity"] == "cn:other"


def test_our_client_reaches_upstream_server(up, pki, spawn, tmp_path):
    """Upstream serve trusts our client's CA (our get-signer PEM); we pin its get-signer."""
    us = tmp_path / "upservice"
    theirs(up, tmp_path, "init", "upservice", "--host", "127.0.0.1", "--config", us)
    ca = tmp_path / "client-ca.pem"
    ca.write_text(ours("get-signer", "--config", pki.client).stdout)
    theirs(up, tmp_path, "add-client", "ourclient", ca, "--config", us)
    (tmp_path / "upapp.py").write_text(UPSTREAM_APP)
    port = free_port()
    server = spawn([str(up / "certified"), "serve", "upapp:app", f"https://127.0.0.1:{port}",
                    "--config", str(us)], name="upstream-serve", cwd=tmp_path,
                   env=upstream_env(up, PYTHONPATH=str(tmp_path)))  # fmt: skip
    server.wait_port(port, timeout=60)
    sig = tmp_path / "up-signer.json"
    sig.write_text(theirs(up, tmp_path, "get-signer", "--config", us).stdout)
    ours("add-service", "up", f"https://127.0.0.1:{port}", sig, "--config", pki.client)
    got = subprocess.run(["message", "https://up/who", "--config", str(pki.client)],
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert got.returncode == 0, got.stderr + server.stderr()
    subject = json.loads(got.stdout)["subject"]
    assert [["commonName", "client"]] in subject
    # a client it does not trust is refused
    denied = subprocess.run(["message", "https://up/who", "--config", str(pki.other)],
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert denied.returncode != 0
