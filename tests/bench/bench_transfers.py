"""lclstream-api benchmark: what the service adds to a stream, on the real stack
(mTLS, psik-api local backend, nngstream, `mpirun -n 2 lclstreamer`).

Run from the repository root:  .venv/bin/python tests/bench/bench_transfers.py

- POST /transfers -> first batch at the consumer, median of 5 (small synthetic run);
- MB/s of the demo workload (320 epix10k2M events, HDF5 + bitshuffle/LZ4, 2 ranks),
  first to last batch: through the service (1 buffer) vs the same lclstreamer run
  pushing straight into one NNG pull socket (the baseline, same run of this script);
- aggregate MB/s with 2 buffers (2 consumers) vs 1 buffer (2 consumers).
"""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"

import pynng  # noqa: E402
import yaml  # noqa: E402

from nngstream.models import Proto  # noqa: E402
from nngstream.tools import pull  # noqa: E402
from tests.support.pki import make_pki  # noqa: E402
from tests.support.ports import free_port  # noqa: E402
from tests.support.procs import ProcessSupervisor  # noqa: E402
from tests.support.suite import Suite, pipeline  # noqa: E402

DEMO = yaml.safe_load((REPO / "deploy/local/stream.yaml").read_text().replace("@EVENTS@", "320"))


def receive(urls: list[str], first: list[float]) -> tuple[int, float]:
    """Pull every URL until its end message; (bytes, seconds first-to-last batch)."""
    reports, last = [], []

    def one(url: str) -> None:
        def seen(_r) -> None:
            if not first:
                first.append(time.monotonic())

        reports.append(pull(url, Proto.NNG, progress=seen, progress_interval=0.0))
        last.append(time.monotonic())

    threads = [threading.Thread(target=one, args=(u,)) for u in urls]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(r.bytes for r in reports), max(last) - first[0]


def through_service(client, config: dict, buffers: int) -> tuple[float, int, float]:
    """(seconds POST -> first batch, bytes, seconds first -> last batch)."""
    opts = {"producers": 2, "buffers": buffers}
    t0 = time.monotonic()
    resp = client.post("/transfers", json={"config": config, "options": opts})
    assert resp.status_code == 201, resp.text
    first: list[float] = []
    nbytes, secs = receive(resp.json()["urls"], first)
    return first[0] - t0, nbytes, secs


def direct(root: Path) -> tuple[int, float]:
    """The demo run pushed by 2 ranks straight into one listening NNG Pull0 socket."""
    url = f"tcp://127.0.0.1:{free_port()}"
    cfg = {**DEMO, "data_handlers": [{"type": "nng_push", "urls": [url], "mode": "dial"}]}
    path = root / "direct.yaml"
    path.write_text(yaml.safe_dump(cfg))
    expected = 320 // DEMO["processing_pipeline"]["batch_size"]
    with pynng.Pull0(listen=url, recv_max_size=0) as sock:
        proc = subprocess.Popen(
            ["mpirun", "-n", "2", "lclstreamer", "-c", str(path), "--no-progress"]
        )
        nbytes, first = 0, 0.0
        for i in range(expected):
            nbytes += len(sock.recv())
            if i == 0:
                first = time.monotonic()
        secs = time.monotonic() - first
        proc.wait(120)
    return nbytes, secs


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        spawn = ProcessSupervisor(root)
        try:
            suite = Suite(make_pki(root / "pki"), spawn, root, ["lclstream"])
            with suite.client() as client:
                lat = [through_service(client, pipeline(32), 1)[0] for _ in range(5)]
                med = statistics.median(lat)
                print(f"POST -> first batch (2 ranks, local backend): median {med:.2f} s"
                      f" of {[round(x, 2) for x in lat]} (target < 2 s)")  # fmt: skip
                base_b, base_s = direct(root)
                _, svc_b, svc_s = through_service(client, DEMO, 1)
                base, svc = base_b / base_s / 1e6, svc_b / svc_s / 1e6
                print(f"demo workload: direct push->pull {base:.0f} MB/s, through the service"
                      f" {svc:.0f} MB/s ({svc / base:.2f}x, target >= 0.8x)")  # fmt: skip
                _, k1_b, k1_s = through_service(client, DEMO, 1)
                _, k2_b, k2_s = through_service(client, DEMO, 2)
                k1, k2 = k1_b / k1_s / 1e6, k2_b / k2_s / 1e6
                print(
                    f"aggregate: 1 buffer {k1:.0f} MB/s, 2 buffers {k2:.0f} MB/s ({k2 / k1:.2f}x)"
                )
        finally:
            spawn.stop_all()
    print(f"machine: {platform.node()} {platform.processor() or platform.machine()},"
          f" {os.cpu_count()} cores (shared)")  # fmt: skip


if __name__ == "__main__":
    main()
