"""`nngstream push` / `nngstream pull` through a real buffer, including large messages."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from .helpers import ROOT, final_metrics, start_buffer, wait_exit

MIB = 1024 * 1024


@pytest.mark.timeout(90)
@pytest.mark.parametrize("proto", ["nng", "zmq"])
def test_push_pull_files_with_large_messages(spawn, free_port, tmp_path, proto):
    in_port, out_port = free_port(), free_port()
    p = ("--in-proto", proto, "--out-proto", proto)
    buf = start_buffer(spawn, in_port, out_port, *p, "--max-bytes", "64MiB")
    files = []
    for i, size in enumerate((100, 48 * MIB, 3 * MIB + 7, 1)):  # 48 MiB: above NNG's default
        f = tmp_path / f"f{i}.bin"
        f.write_bytes(os.urandom(size))
        files.append(f)
    pulled = tmp_path / "pulled"
    puller = spawn(
        ["nngstream", "pull", f"tcp://127.0.0.1:{out_port}", "--out", str(pulled), "--proto",
         proto],
        name="pull",
        cwd=ROOT,
    )  # fmt: skip
    res = subprocess.run(
        ["nngstream", "push", *map(str, files), "--to", f"tcp://127.0.0.1:{in_port}",
         "--proto", proto],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["messages"] == 4 and report["bytes"] == sum(f.stat().st_size for f in files)
    assert wait_exit(buf, 60) == 0, buf.stderr()
    assert wait_exit(puller, 30) == 0, puller.stderr()
    got = sorted(pulled.glob("*.msg"))
    assert [g.read_bytes() for g in got] == [f.read_bytes() for f in files]  # one link: in order
    summary = json.loads(puller.stdout().strip().splitlines()[-1])
    assert summary["messages"] == 4 and summary["bytes"] == report["bytes"]
    assert "pulled 4 messages" in puller.stderr()
    assert final_metrics(buf)["bytes_out"] == report["bytes"]


@pytest.mark.timeout(60)
def test_push_over_several_connections_and_pull_count(spawn, free_port, tmp_path):
    in_port, out_port = free_port(), free_port()
    buf = start_buffer(spawn, in_port, out_port)
    files = []
    for i in range(12):
        f = tmp_path / f"f{i}.bin"
        f.write_bytes(b"%d" % i * 1000)
        files.append(f)
    counter = spawn(
        ["nngstream", "pull", f"tcp://127.0.0.1:{out_port}", "--count"], name="count", cwd=ROOT
    )
    res = subprocess.run(
        ["nngstream", "push", *map(str, files), "--to", f"tcp://127.0.0.1:{in_port}",
         "--dial", "3"],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert wait_exit(buf, 30) == 0, buf.stderr()
    assert wait_exit(counter, 30) == 0
    assert counter.stdout().strip() == "12"
    m = final_metrics(buf)
    assert m["recvd"] == m["sent"] == 12


def test_saved_messages_appear_whole_or_not_at_all(tmp_path):
    """`pull --out` writes each message under a hidden .part name and renames it: a
    consumer killed mid-write leaves a .part (not matched by *.msg), never a cut .msg."""
    from nngstream.tools import save_message

    (tmp_path / ".00000001.msg.part").write_bytes(b"cut")  # what a kill -9 leaves
    assert [p.name for p in tmp_path.glob("*.msg")] == []
    path = save_message(tmp_path, 1, (b"head", memoryview(b"-body")))
    assert path.name == "00000001.msg" and path.read_bytes() == b"head-body"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["00000001.msg"]
