"""Bad input: a clear one-line error, a non-zero exit, never a traceback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from .helpers import ROOT


def run(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["nngstream", *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT
    )


def assert_clear_error(res: subprocess.CompletedProcess, code: int, *words: str) -> None:
    assert res.returncode == code, (res.returncode, res.stdout, res.stderr)
    assert "Traceback" not in res.stderr
    for w in words:
        assert w in res.stderr, f"{w!r} not in stderr:\n{res.stderr}"


@pytest.fixture
def urls(free_port):
    return f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (("--max-bytes", "12XB"), ("--max-bytes", "unknown unit 'xb'")),
        (("--max-bytes", "lots"), ("--max-bytes", "invalid size 'lots'")),
        (("--max-bytes", "0"), ("--max-bytes", "at least 1 byte")),
        (("--max-messages", "0"), ("--max-messages",)),
        (("--metrics-interval", "-1"), ("--metrics-interval",)),
        (("--idle-timeout", "0"), ("--idle-timeout",)),
        (("--callback", "http://127.0.0.1:9/cb"), ("--callback", "--cb-secret-file")),
        (("--cb-secret-file", "/nonexistent/key"), ("--cb-secret-file", "No such file")),
        (("--delivery", "acked", "--out-proto", "zmq"), ("--delivery acked needs NNG",)),
        (("--spill", "/tmp", "--when-full", "drop-oldest"), ("--spill keeps every message",)),
        (("--spill-max-bytes", "1Q"), ("--spill-max-bytes", "unknown unit")),
        (("--in-delivery", "acked"), ("--in-delivery acked needs --dial-in",)),
        (("--end-timeout", "0"), ("--end-timeout",)),
    ],
)
@pytest.mark.timeout(30)
def test_bad_options_exit_2(urls, extra, words):
    assert_clear_error(run(*urls, *extra), 2, "nngstream: error:", *words)


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("in_url", "words"),
    [
        ("foo://bar", ("IN_URL", "invalid nng address 'foo://bar'")),
        ("tcp://127.0.0.1", ("IN_URL", "HOST:PORT")),
        ("127.0.0.1:5000", ("IN_URL", "invalid nng address")),
    ],
)
def test_invalid_urls_exit_2(urls, in_url, words):
    assert_clear_error(run(in_url, urls[1]), 2, *words)


@pytest.mark.timeout(30)
def test_typer_usage_errors_exit_2(urls):
    assert run(urls[0]).returncode == 2  # OUT_URL missing
    assert_clear_error(run(*urls, "--when-full", "sometimes"), 2, "sometimes")
    assert_clear_error(run(*urls, "--in-proto", "mqtt"), 2, "mqtt")


@pytest.mark.timeout(30)
@pytest.mark.parametrize("proto", ["nng", "zmq"])
def test_port_in_use_exits_1(free_port, proto):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        busy = s.getsockname()[1]
        res = run(f"tcp://127.0.0.1:{busy}", f"tcp://127.0.0.1:{free_port()}", "--in-proto", proto)
        assert_clear_error(res, 1, f"cannot listen on IN address tcp://127.0.0.1:{busy}")
        res = run(f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{busy}", "--out-proto", proto)
        assert_clear_error(res, 1, f"cannot listen on OUT address tcp://127.0.0.1:{busy}")


@pytest.mark.timeout(30)
@pytest.mark.parametrize("proto", ["nng", "zmq"])
def test_unreachable_dial_exits_1(free_port, proto):
    nobody = f"tcp://127.0.0.1:{free_port()}"
    res = run(nobody, f"tcp://127.0.0.1:{free_port()}", "--dial-in", "--dial-timeout", "1",
              "--in-proto", proto)  # fmt: skip
    assert_clear_error(res, 1, f"cannot dial IN address {nobody}")
    res = run(f"tcp://127.0.0.1:{free_port()}", nobody, "--dial-out", "--dial-timeout", "1",
              "--out-proto", proto)  # fmt: skip
    assert_clear_error(res, 1, f"cannot dial OUT address {nobody}")


@pytest.mark.timeout(30)
def test_addresses_that_cannot_be_used_exit_1(free_port, tmp_path):
    out = f"tcp://127.0.0.1:{free_port()}"
    # not an address of this machine (TEST-NET-1)
    assert_clear_error(run(f"tcp://192.0.2.1:{free_port()}", out), 1, "cannot listen on IN")
    assert_clear_error(run(f"tcp://no-such-host.invalid:{free_port()}", out), 1, "cannot")
    missing = tmp_path / "no" / "such" / "dir" / "in.sock"
    assert_clear_error(run(f"ipc://{missing}", out), 1, "cannot listen on IN")
    res = run(f"ipc://{missing}", out, "--in-proto", "zmq")
    assert_clear_error(res, 1, "cannot listen on IN")


@pytest.mark.timeout(30)
def test_unreadable_certified_config_exits_1(urls, tmp_path):
    key = tmp_path / "key"
    key.write_text("s")
    res = run(*urls, "--callback", "https://lclstream-api/cb", "--cb-secret-file", str(key),
              "--certified-config", str(tmp_path / "missing"))  # fmt: skip
    assert_clear_error(res, 1, "nngstream: error:", "missing")


@pytest.mark.timeout(30)
def test_callback_destinations_and_keys(urls, tmp_path):
    """--callback only goes where the operator allowed; its key comes from a file or
    $NNGSTREAM_CB_SECRET, never from the command line."""
    res = run(*urls, "--callback", "https://h/cb", "--cb-secret", "s")
    assert res.returncode == 2 and "No such option" in res.stderr  # keys stay off argv
    key = tmp_path / "key"
    key.write_text("s\n")
    res = run(*urls, "--callback", "https://evil.example/cb", "--cb-secret-file", str(key))
    assert_clear_error(res, 2, "--callback", "not allowed", "--callback-allow")
    res = run(*urls, "--callback", "https://evil.example/cb", "--cb-secret-file", str(key),
              "--callback-allow", "https://good.example/")  # fmt: skip
    assert_clear_error(res, 2, "--callback", "not allowed")
    res = run(*urls, "--callback", "https://h/cb", "--callback-allow", "h.x", "--cb-secret-file",
              str(key))  # fmt: skip
    assert_clear_error(res, 2, "--callback-allow", "neither a service nickname")
    (tmp_path / "empty").write_text("\n")
    res = run(*urls, "--callback", "https://h/cb", "--cb-secret-file", str(tmp_path / "empty"))
    assert_clear_error(res, 2, "--cb-secret-file", "is empty")
    env = {**os.environ, "NNGSTREAM_CB_SECRET": ""}
    res = subprocess.run(
        ["nngstream", *urls, "--callback", "https://h/cb"],
        capture_output=True, text=True, timeout=30, cwd=ROOT, env=env,
    )  # fmt: skip
    assert_clear_error(res, 2, "--callback needs a key", "NNGSTREAM_CB_SECRET")


@pytest.mark.timeout(30)
def test_toolkit_bad_input(free_port, tmp_path):
    url = f"tcp://127.0.0.1:{free_port()}"
    assert_clear_error(run("push", str(tmp_path / "nope.bin"), "--to", url), 1, "no such file")
    empty = tmp_path / "empty.bin"
    empty.write_bytes(b"")
    res = run("push", str(empty), "--to", url, "--dial-timeout", "1")
    assert_clear_error(res, 1, "empty file")
    f = tmp_path / "a.bin"
    f.write_bytes(b"x")
    assert_clear_error(run("push", str(f), "--to", "http://x"), 1, "invalid nng address")
    assert_clear_error(run("push", str(f), "--to", url, "--dial", "0"), 1, "--dial")
    res = run("push", str(f), "--to", url, "--dial-timeout", "1")
    assert_clear_error(res, 1, f"cannot dial OUT address {url}")
    res = run("pull", url, "--dial-timeout", "1", "--proto", "zmq")
    assert_clear_error(res, 1, f"cannot dial IN address {url}")
    assert_clear_error(run("pull", "tcp://x"), 1, "HOST:PORT")


@pytest.mark.timeout(30)
def test_help_mentions_the_toolkit():
    res = run("--help")
    assert res.returncode == 0 and "nngstream push" in res.stdout
    for sub in ("push", "pull"):
        res = run(sub, "--help")
        assert res.returncode == 0 and "--proto" in res.stdout
    assert sys.executable  # the console script is the venv's


@pytest.mark.timeout(30)
def test_spill_directory_that_cannot_be_created(urls, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    res = run(*urls, "--spill", str(blocker / "spill"))
    assert_clear_error(res, 1, "nngstream: error: cannot use spill directory", "--spill")


@pytest.mark.timeout(30)
def test_ready_file_that_cannot_be_written(urls, tmp_path):
    res = run(*urls, "--ready-file", str(tmp_path / "missing" / "ready.json"))
    assert_clear_error(res, 1, "nngstream: error: cannot write ready file", "--ready-file")


@pytest.mark.timeout(30)
def test_pull_check_unknown_format(urls):
    res = run("pull", urls[1], "--check", "cbor")
    assert_clear_error(res, 2, "--check: unknown format 'cbor'")
