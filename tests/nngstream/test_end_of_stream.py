"""A stream ends only when it really ended: the end message on NNG and ZMQ, and a
buffer killed with SIGKILL mid-stream under `mpirun -n 2 lclstreamer` and two
`nngstream pull` consumers (real processes, real MPI)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest
import yaml

from tests.lclstreamer.helpers import MPIRUN, synthetic_config

from .helpers import ROOT, metrics_lines, start_buffer, wait_exit, wait_until


def _summary(proc) -> dict:
    """Rank 0's JSON summary (mpirun may print its own lines after it)."""
    lines = [ln for ln in proc.stdout().splitlines() if ln.startswith("{")]
    assert lines, f"no summary; stderr:\n{proc.stderr()}"
    return json.loads(lines[-1])


def _pull(spawn, url: str, proto: str, name: str):
    return spawn(["nngstream", "pull", url, "--proto", proto], name=name, cwd=ROOT)


def _streamer(spawn, tmp_path, proto: str, in_url: str, n: int, rate: float | None):
    cfg = synthetic_config(tmp_path, n=n, batch=2, shape=(8, 32, 32), rate_limit_hz=rate)
    cfg["data_handlers"] = [{"type": f"{proto}_push", "urls": [in_url]}]
    path = tmp_path / "stream.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return spawn(
        [MPIRUN, "-n", "2", "lclstreamer", "-c", str(path), "--no-progress"],
        name="lclstreamer",
        cwd=ROOT,
    )


@pytest.mark.mpi
@pytest.mark.timeout(120)
@pytest.mark.parametrize("proto", ["nng", "zmq"])
def test_normal_end_consumers_exit_0_after_the_end_message(spawn, free_port, tmp_path, proto):
    in_port, out_port = free_port(), free_port()
    buf = start_buffer(
        spawn, in_port, out_port, "--in-proto", proto, "--out-proto", proto, "--producers", "2"
    )
    out_url = f"tcp://127.0.0.1:{out_port}"
    pulls = [_pull(spawn, out_url, proto, f"pull{i}") for i in range(2)]
    wait_until(lambda: final_consumers(buf) == 2, 30, "both consumers to connect")
    lcl = _streamer(spawn, tmp_path, proto, f"tcp://127.0.0.1:{in_port}", 120, None)
    assert wait_exit(lcl, 90) == 0, lcl.stderr()
    summary = _summary(lcl)
    assert summary["complete"] is True and summary["batches"] == 60
    assert wait_exit(buf, 60) == 0, buf.stderr()
    reports = []
    for p in pulls:
        assert wait_exit(p, 30) == 0, p.stderr()
        reports.append(json.loads(p.stdout().strip().splitlines()[-1]))
    assert sum(r["messages"] for r in reports) == 60
    for r in reports:  # the same totals reach every consumer
        end = r["end"]
        assert (end["type"], end["recvd"], end["sent"], end["lost_max"]) == ("end", 60, 60, 0)
        if proto == "nng":  # one entry per rank's connection
            assert sorted(t["messages"] for t in end["producers"].values()) == [30, 30]


def final_consumers(buf) -> int:
    lines = metrics_lines(buf)
    return lines[-1]["consumers"] if lines else 0


@pytest.mark.mpi
@pytest.mark.timeout(120)
@pytest.mark.parametrize("proto", ["nng", "zmq"])
def test_buffer_killed_mid_stream(spawn, free_port, tmp_path, proto):
    """SIGKILL of the buffer: consumers exit non-zero within 5 s saying the stream broke;
    both ranks exit non-zero within 30 s, rank 0's summary says what was sent and that
    the run did not complete."""
    in_port, out_port = free_port(), free_port()
    buf = start_buffer(
        spawn, in_port, out_port, "--in-proto", proto, "--out-proto", proto,
        "--metrics-interval", "0.2",
    )  # fmt: skip
    out_url = f"tcp://127.0.0.1:{out_port}"
    pulls = [_pull(spawn, out_url, proto, f"pull{i}") for i in range(2)]
    wait_until(lambda: final_consumers(buf) == 2, 30, "both consumers to connect")
    lcl = _streamer(spawn, tmp_path, proto, f"tcp://127.0.0.1:{in_port}", 100_000, 100.0)
    wait_until(lambda: metrics_lines(buf)[-1]["sent"] >= 20, 60, "20 messages to flow")
    buf.signal(signal.SIGKILL)
    t0 = time.monotonic()
    for p in pulls:
        assert wait_exit(p, 5) != 0
        assert "stream broken after" in p.stderr(), p.stderr()
    assert time.monotonic() - t0 < 5
    code = wait_exit(lcl, 30)
    assert time.monotonic() - t0 < 30
    assert code != 0
    summary = _summary(lcl)
    assert summary["complete"] is False and summary["events"] > 0, summary
    assert any("the buffer is gone" in e for e in summary["errors"]), summary
    assert "the buffer is gone" in lcl.stderr()


def test_pull_without_buffer_end_message_is_broken(spawn, free_port):
    """A plain Pull0 'buffer' that sends two messages and closes: pull says broken, exit 1."""
    import pynng

    port = free_port()
    with pynng.Push0(listen=f"tcp://127.0.0.1:{port}") as sock:
        pull = spawn(["nngstream", "pull", f"tcp://127.0.0.1:{port}"], name="pull", cwd=ROOT)
        wait_until(lambda: len(sock.pipes) == 1, 20, "pull to connect")
        sock.send(b"one")
        sock.send(b"two")
        time.sleep(0.3)
    assert wait_exit(pull, 10) == 1
    assert "stream broken after 2 messages" in pull.stderr()


def test_ready_file_and_port_zero(tmp_path):
    """tcp://HOST:0 on both sides: the ready file and the first metrics line give the
    ports chosen, and they work."""
    ready = tmp_path / "ready.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "nngstream", "tcp://127.0.0.1:0", "tcp://127.0.0.1:0",
         "--ready-file", str(ready), "--idle-timeout", "20"],
        stdout=subprocess.PIPE, text=True, cwd=ROOT,
    )  # fmt: skip
    try:
        first = json.loads(proc.stdout.readline())
        doc = json.loads(ready.read_text())
        assert doc["pid"] == proc.pid
        assert (first["in_url"], first["out_url"]) == (doc["in_url"], doc["out_url"])
        ports = {int(doc[k].rsplit(":", 1)[1]) for k in ("in_url", "out_url")}
        assert 0 not in ports and len(ports) == 2
        import pynng

        with (
            pynng.Pull0(dial=doc["out_url"], recv_timeout=10_000) as pull,
            pynng.Push0(dial=doc["in_url"]) as push,
        ):
            push.send(b"hello")
            assert pull.recv() == b"hello"
    finally:
        proc.terminate()
        proc.wait(30)


@pytest.mark.mpi
@pytest.mark.timeout(120)
def test_pull_reports_sequence_gaps_from_hdf5_attributes(spawn, free_port, tmp_path):
    """drop-oldest with no consumer: the consumer that comes later finds the dropped
    batches as gaps in each rank's sequence (from the batches' rank/seq attributes)."""
    in_port, out_port = free_port(), free_port()
    buf = start_buffer(
        spawn, in_port, out_port, "--max-messages", "6", "--when-full", "drop-oldest",
        "--producers", "2",
    )  # fmt: skip
    lcl = _streamer(spawn, tmp_path, "nng", f"tcp://127.0.0.1:{in_port}", 80, None)
    assert wait_exit(lcl, 90) == 0, lcl.stderr()
    pull = spawn(
        ["nngstream", "pull", f"tcp://127.0.0.1:{out_port}", "--check", "hdf5"],
        name="pull",
        cwd=ROOT,
    )
    assert wait_exit(buf, 60) == 0, buf.stderr()
    assert wait_exit(pull, 30) == 0, pull.stderr()
    report = json.loads(pull.stdout().strip().splitlines()[-1])
    seq = report["sequence"]
    assert report["end"]["dropped"] > 0 and 0 < seq["gaps"] <= report["end"]["dropped"]
    highest = sum(p["highest"] + 1 for p in seq["producers"].values())
    assert seq["gaps"] + report["messages"] == highest
    assert seq["duplicates"] == 0 and "missing from the per-producer sequences" in pull.stderr()


def test_pull_check_rejects_a_message_that_is_not_an_hdf5_batch(spawn, free_port, tmp_path):
    in_port, out_port = free_port(), free_port()
    start_buffer(spawn, in_port, out_port)
    pull = spawn(
        ["nngstream", "pull", f"tcp://127.0.0.1:{out_port}", "--check", "hdf5"],
        name="pull",
        cwd=ROOT,
    )
    f = tmp_path / "junk.bin"
    f.write_bytes(b"not hdf5" * 10)
    subprocess.run(
        ["nngstream", "push", str(f), "--to", f"tcp://127.0.0.1:{in_port}"],
        check=True, cwd=ROOT, timeout=30, capture_output=True,
    )  # fmt: skip
    assert wait_exit(pull, 30) == 1
    assert "message 1: not an HDF5 batch with rank and seq attributes" in pull.stderr()


@pytest.mark.mpi
@pytest.mark.timeout(120)
def test_sigterm_to_one_rank_is_reported_as_interrupted(spawn, free_port, tmp_path):
    """SIGTERM to rank 1 only: it flushes and leaves, rank 0 finishes its share, and
    rank 0's summary says interrupted and not complete; what was sent all arrives."""
    import psutil

    in_port, out_port = free_port(), free_port()
    buf = start_buffer(spawn, in_port, out_port, "--producers", "2", "--metrics-interval", "0.2")
    pull = _pull(spawn, f"tcp://127.0.0.1:{out_port}", "nng", "pull")
    lcl = _streamer(spawn, tmp_path, "nng", f"tcp://127.0.0.1:{in_port}", 400, 40.0)

    def rank1() -> psutil.Process | None:
        for p in psutil.Process(lcl.pid).children(recursive=True):
            try:
                if "lclstreamer" in " ".join(p.cmdline()) and p.environ().get("PMI_RANK") == "1":
                    return p
            except psutil.Error:
                continue
        return None

    wait_until(lambda: rank1() is not None, 30, "rank 1 to start")
    wait_until(lambda: metrics_lines(buf)[-1]["recvd"] >= 4, 30, "batches to flow")
    rank1().send_signal(signal.SIGTERM)
    assert wait_exit(lcl, 60) != 0
    summary = _summary(lcl)
    assert summary["interrupted"] is True and summary["complete"] is False, summary
    assert 0 < summary["events"] < 400
    assert wait_exit(buf, 30) == 0, buf.stderr()
    assert wait_exit(pull, 30) == 0, pull.stderr()
    report = json.loads(pull.stdout().strip().splitlines()[-1])
    assert report["messages"] == summary["batches"] == report["end"]["recvd"]
