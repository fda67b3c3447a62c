"""The suite end to end on loopback: a user asks psik-api (mTLS) for a buffer job
(nngstream) and a 2-rank MPI streamer job (lclstreamer); a consumer pulls the stream.

Everything is real: TLS, psik local backend, mpirun from the mpich wheel, NNG sockets.
"""

from __future__ import annotations

import io
import subprocess
import time
from pathlib import Path

import h5py
import hdf5plugin  # noqa: F401  (bitshuffle filter for reading)
import numpy as np
import pytest
import yaml

from certified import Certified
from tests.support.ports import free_port
from tests.support.servers import start_psik_api

pytestmark = pytest.mark.timeout(180)


def streamer_config(in_url: str, events: int, rate_hz: float | None = None) -> dict:
    source: dict = {
        "type": "synthetic",
        "number_of_events": events,
        "seed": 3,
        "detectors": {"det": {"shape": [2, 64, 64]}},
    }
    if rate_hz:
        source["rate_limit_hz"] = rate_hz
    return {
        "source_identifier": "synthetic:e2e",
        "skip_incomplete_events": True,
        "event_source": source,
        "data_sources": {"frames": {"type": "detector", "source": "det"},
                         "index": {"type": "event_index"}},
        "processing_pipeline": {"type": "batch", "batch_size": 4},
        "data_serializer": {"type": "hdf5", "compression": "bitshuffle_lz4",
                            "fields": {"frames": "/data/frames", "index": "/data/index"}},
        "data_handlers": [{"type": "nng_push", "urls": [in_url], "mode": "dial"}],
    }  # fmt: skip


@pytest.fixture
def suite(pki, spawn, tmp_path):
    _proc, url = start_psik_api(spawn, pki.server, tmp_path, psik={"kill_grace": 2.0})
    pki.add_service(pki.client, "psik", url)
    with Certified(pki.client).client("https://psik", timeout=60) as client:
        yield client, tmp_path


def submit(client, name: str, script: str, processes: int = 1) -> str:
    spec = {"name": name, "script": script,
            "resources": {"duration": 3, "process_count": processes}}  # fmt: skip
    resp = client.post("/jobs", json=spec)
    assert resp.status_code == 201, resp.text
    return resp.json()["jobid"]


def final_state(client, jobid: str, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = client.get(f"/jobs/{jobid}").json()["state"]
        if state in ("completed", "failed", "canceled"):
            return state
        time.sleep(0.1)
    raise AssertionError(f"job {jobid} still {state} after {timeout}s")


def start_stream(client, root: Path, events: int, rate_hz: float | None = None):
    in_port, out_port = free_port(), free_port()
    cfg = root / "stream.yaml"
    cfg.write_text(yaml.safe_dump(streamer_config(f"tcp://127.0.0.1:{in_port}", events, rate_hz)))
    buf = submit(client, "buffer",
                 f"nngstream tcp://127.0.0.1:{in_port} tcp://127.0.0.1:{out_port} "
                 "--producers 2 --metrics-interval 1")  # fmt: skip
    streamer = submit(client, "streamer", f"$mpirun -n 2 lclstreamer -c {cfg} --no-progress", 2)
    return buf, streamer, out_port


def pull(out_port: int, dest: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["nngstream", "pull", f"tcp://127.0.0.1:{out_port}", "--out", str(dest)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def read_batches(dest: Path) -> list[dict]:
    out = []
    for path in sorted(dest.glob("*.msg")):
        with h5py.File(io.BytesIO(path.read_bytes()), "r") as f:
            index = f["/data/index"][()]
            frames = f["/data/frames"]
            assert frames.shape == (len(index), 2, 64, 64) and frames.dtype == np.float32
            out.append(
                {**{k: int(f.attrs[k]) for k in ("rank", "seq", "n_events")}, "index": index}
            )
    return out


def test_stream_arrives_exactly_once_and_jobs_complete(suite):
    client, root = suite
    events = 96
    buf, streamer, out_port = start_stream(client, root, events)
    got = pull(out_port, root / "received")
    assert got.returncode == 0, got.stderr
    batches = read_batches(root / "received")
    seen = np.concatenate([b["index"] for b in batches])
    assert sorted(seen.tolist()) == list(range(events))  # every event, exactly once
    for rank in (0, 1):
        seqs = sorted(b["seq"] for b in batches if b["rank"] == rank)
        assert seqs == list(range(len(seqs))) and seqs, f"rank {rank} sequence {seqs}"
    assert final_state(client, streamer) == "completed"
    assert final_state(client, buf) == "completed"
    metrics = client.get(f"/jobs/{buf}/logs/stdout").text.strip().splitlines()
    assert '"state":"done"' in metrics[-1].replace(" ", "")


def test_streamer_killed_mid_stream_ends_cleanly_without_corruption(suite):
    client, root = suite
    buf, streamer, out_port = start_stream(client, root, events=4000, rate_hz=100)
    dest = root / "received"
    consumer = subprocess.Popen(
        ["nngstream", "pull", f"tcp://127.0.0.1:{out_port}", "--out", str(dest)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while len(list(dest.glob("*.msg"))) < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert client.delete(f"/jobs/{streamer}").status_code == 200
        _out, err = consumer.communicate(timeout=90)  # the stream ends when producers are gone
        assert consumer.returncode == 0, err
    finally:
        if consumer.poll() is None:
            consumer.kill()
    assert final_state(client, streamer) == "canceled"
    assert final_state(client, buf) == "completed"  # buffer drained and exited 0
    batches = read_batches(dest)  # every message that arrived is a whole, readable batch
    seen = np.concatenate([b["index"] for b in batches])
    assert 0 < seen.size < 4000 and np.unique(seen).size == seen.size
