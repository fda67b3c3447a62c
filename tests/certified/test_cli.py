"""The `certified` CLI on disk: files, permissions, trust lists, and bad input."""

import json
import os
import re
import subprocess

import pytest

from certified import Certified
from certified.errors import CertifiedError
from certified.keys import load_private_key


def run(*args, check=True, prog="certified", **kw):
    proc = subprocess.run([prog, *map(str, args)], capture_output=True, text=True, timeout=60, **kw)
    if check and proc.returncode != 0:
        raise AssertionError(f"{prog} {args} failed: {proc.stderr}")
    return proc


def message(*args):
    return run(*args, check=False, prog="message")


def assert_one_line_error(proc, needle, code=1):
    """One `PROG: error: ...` line holding `needle`, exit `code` (1 runtime, 2 config)."""
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr
    err = proc.stderr.strip()
    assert re.match(r"^(certified|message): error: ", err) and needle in err, err
    assert len(err.splitlines()) == 1, err


def test_init_writes_private_keys_0600_and_lists(tmp_path):
    d = tmp_path / "svc"
    run("init", "svc", "--host", "127.0.0.1", "--config", d)
    for key in ("CA.key", "id.key"):
        assert (d / key).stat().st_mode & 0o777 == 0o600
    assert Certified(d).identity == "cn:svc"
    out = json.loads(run("list", "--json", "--config", d).stdout)
    assert {i["kind"] for i in out} == {"identity", "ca"}
    again = run("init", "svc", "--config", d, check=False)
    assert_one_line_error(again, "exists")
    run("init", "svc", "--config", d, "--overwrite")


def test_config_dir_from_environment(tmp_path):
    d = tmp_path / "fromenv"
    env = {**os.environ, "CERTIFIED_CONFIG": str(d)}
    run("init", "envy", env=env)
    assert (d / "id.crt").exists()
    assert "cn:envy" in run("list", env=env).stdout


def test_introduce_add_client_add_service(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    run("init", "alpha", "--config", a)
    run("init", "beta", "--host", "localhost", "--config", b)
    signed = json.loads(run("introduce", b / "id.crt", "--config", a).stdout)
    assert "BEGIN CERTIFICATE" in signed["signed_cert"] and "BEGIN CERTIFICATE" in signed["ca_cert"]
    run("add-client", "beta", b / "CA.crt", "--config", a)
    run("add-service", "beta", "https://127.0.0.1:9999", b / "CA.crt", "--config", a)
    listed = {
        (i["kind"], i["name"]) for i in json.loads(run("list", "--json", "--config", a).stdout)
    }
    assert ("client", "beta") in listed and ("service", "beta") in listed
    url, pinned = Certified(a).resolve("https://beta/jobs?x=1")
    assert url == "https://127.0.0.1:9999/jobs?x=1" and "BEGIN CERTIFICATE" in pinned


def test_group_readable_key_is_refused(tmp_path):
    d = tmp_path / "loose"
    run("init", "loose", "--config", d)
    os.chmod(d / "id.key", 0o644)
    with pytest.raises(CertifiedError, match="chmod 600"):
        load_private_key(d / "id.key")
    assert_one_line_error(
        message("https://127.0.0.1:1/", "--config", d), "accessible by group/others"
    )


def test_corrupt_key_and_bad_inputs(tmp_path):
    d = tmp_path / "bad"
    run("init", "bad", "--config", d)
    (d / "id.key").write_text("-----BEGIN PRIVATE KEY-----\ngarbage\n-----END PRIVATE KEY-----\n")
    assert_one_line_error(message("https://x/", "--config", d), "unknown service nickname")
    assert_one_line_error(message("https://127.0.0.1:1/", "--config", d), "corrupt")
    (tmp_path / "junk.csr").write_text("not a csr")
    assert_one_line_error(
        run("introduce", tmp_path / "junk.csr", "--config", d, check=False),
        "expected a certificate or certificate request",
    )
    assert_one_line_error(
        run("introduce", tmp_path / "missing.csr", "--config", d, check=False), "No such file"
    )
    assert_one_line_error(
        run("add-service", "x", "ftp://h", d / "CA.crt", "--config", d, check=False),
        "https://HOST:PORT",
    )
    assert_one_line_error(
        run("add-service", "../evil", "https://h:1", d / "CA.crt", "--config", d, check=False),
        "invalid service nickname",
    )
    assert_one_line_error(
        run("add-client", "x", tmp_path / "junk.csr", "--config", d, check=False),
        "not a certificate (expected PEM, url-safe base64 DER",
    )
    assert_one_line_error(
        run("list", "--config", tmp_path / "nowhere", check=False), "does not exist", code=2
    )
    # Usage errors (click's) are one line too, exit 2.
    assert_one_line_error(run("init", check=False), "Missing argument 'name'", code=2)
    assert_one_line_error(run("frobnicate", check=False), "No such command", code=2)
    assert_one_line_error(run("list", "--bogus", check=False), "No such option", code=2)
    bare = run(check=False)  # no arguments: the help, and the usage exit code
    assert bare.returncode == 2 and "Usage: certified" in bare.stdout and bare.stderr == ""


def test_one_search_order_for_directories_and_files(tmp_path):
    from certified.configfind import find_config

    venv = tmp_path / "venv"
    (venv / "etc" / "certified").mkdir(parents=True)
    (venv / "etc" / "psik.yaml").write_text("{}\n")
    env = {"VIRTUAL_ENV": str(venv)}
    flag, var = tmp_path / "flag", tmp_path / "var"
    # A flag or variable wins even when missing (the caller says so); else what exists.
    assert find_config(flag, "X_CONFIG", "psik.yaml", {**env, "X_CONFIG": str(var)}) == (
        flag,
        True,
    )
    assert find_config(None, "X_CONFIG", "psik.yaml", {**env, "X_CONFIG": str(var)}) == (
        var,
        True,
    )
    assert find_config(None, "X_CONFIG", "psik.yaml", env) == (venv / "etc" / "psik.yaml", False)
    assert find_config(None, "X_CONFIG", "certified", env, directory=True) == (
        venv / "etc" / "certified",
        False,
    )
    # A directory is not a config file, nor a file a config directory.
    assert find_config(None, "X_CONFIG", "certified", env)[0] != venv / "etc" / "certified"
    assert find_config(None, "X_CONFIG", "psik.yaml", env, directory=True)[0] is None
