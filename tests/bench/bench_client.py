"""The Python client's two hot paths against their baselines, measured in the same run.

Batches: lclstreamer's own output (`mpirun -n 2`, synthetic 2x352x384 float32 frames with
Bragg peaks on a Poisson background, batches of 16, HDF5 with bitshuffle/LZ4).

1. cache replay: `Cache.replay` (read, checksum check, decode every batch) against
   reading the same files with h5py directly, every dataset read: (a) `h5py.File(path)`
   (what users write) and (b) `h5py.File(io.BytesIO(path.read_bytes()))` (the fastest
   bare h5py read we know); also reading and checksumming alone (what verification
   costs).
2. pull decode: `pull([url], config=...)` against a bare loop over the same buffer: a
   pynng Pull0 socket, stop at the end message, read every dataset with h5py, (a) from
   `io.BytesIO(message)` (what users write today) and (b) from an HDF5 core-driver file
   image (the fastest bare loop we know). Each round: a fresh `nngstream` buffer, the
   consumer dials, `nngstream push` sends the files; rate = message bytes from the first
   message to the end.

Rounds alternate the order of the ways (ABC, then CBA); the median of the rounds is
printed, wall and CPU time (this process, every thread). Prints figures only.

    .venv/bin/python tests/bench/bench_client.py [--rounds 3] [--events 512] [--part cache|pull]
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import h5py
import hdf5plugin  # noqa: F401
import pynng
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from lclstream_api.client import decoder_for, pull  # noqa: E402
from lclstream_api.client.cache import Cache, read_checked  # noqa: E402
from tests.support.suite import pipeline  # noqa: E402

CONTROL_PREFIX = b"\x00NNGSTREAM\x00"
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_batches(root: Path, events: int) -> tuple[dict, list[Path]]:
    cfg = pipeline(events, shape=(2, 352, 384), batch_size=16)
    path = root / "cfg.yaml"
    handlers = [{"type": "file", "directory": str(root / "batches"), "prefix": "b"}]
    path.write_text(yaml.safe_dump({**cfg, "data_handlers": handlers}))
    subprocess.run([str(BIN / "mpirun"), "-n", "2", str(BIN / "lclstreamer"), "-c", str(path),
                    "--no-progress"], check=True, capture_output=True)  # fmt: skip
    return cfg, sorted((root / "batches").glob("*.h5"))


def read_h5(f: h5py.File) -> int:
    with f:
        return sum(f[name][()].nbytes for name in ("/data/frames", "/data/index"))


def bench_cache(cfg: dict, files: list[Path], root: Path, rounds: int) -> None:
    dec = decoder_for(cfg)
    cache = Cache(root / "cache")
    w = cache.writer("b" * 64, server="bench", version="bench", config=cfg, serializer="hdf5")
    for f in files:
        data = f.read_bytes()
        w.add(data, dec(memoryview(data)))
    entry = w.commit("bench")
    stored = [entry.path / r.file for r in entry.manifest.batches]
    total = sum(p.stat().st_size for p in stored)
    ways = {
        "h5py files": lambda: [read_h5(h5py.File(p, "r")) for p in stored],
        "h5py bytes": lambda: [read_h5(h5py.File(io.BytesIO(p.read_bytes()))) for p in stored],
        "cache replay": lambda: [None for _batch in cache.replay(entry, dec)],
        "read+checksum": lambda: [read_checked(entry.path, r) for r in entry.manifest.batches],
    }
    rates: dict[str, list[float]] = {k: [] for k in ways}
    cpu: dict[str, list[float]] = {k: [] for k in ways}
    for r in range(rounds):
        order = list(ways.items())
        for k, run in order if r % 2 == 0 else order[::-1]:  # ABC CBA: no way always first
            t, c = time.perf_counter(), time.process_time()
            run()
            rates[k].append(total / (time.perf_counter() - t))
            cpu[k].append((time.process_time() - c) / total * 1e9)
    med = {k: statistics.median(v) / 1e6 for k, v in rates.items()}
    cpu_gb = {k: statistics.median(v) for k, v in cpu.items()}
    print(
        f"cache replay: {len(stored)} batches, {total / 1e6:.0f} MB stored (median of "
        f"{rounds} rounds; MB/s of stored bytes, CPU seconds per GB over all threads)"
    )
    for k, v in med.items():
        print(f"  {k:<14} {v:8.0f} MB/s  {cpu_gb[k]:6.2f} CPU s/GB")
    for base in ("h5py files", "h5py bytes"):
        print(
            f"  replay / {base} = {med['cache replay'] / med[base]:.2f}x wall, "
            f"{cpu_gb[base] / cpu_gb['cache replay']:.2f}x by CPU time "
            "(target >= 0.9x; replay includes the XXH3-128 check of every batch)"
        )


def start_buffer(in_port: int, out_port: int) -> subprocess.Popen:
    p = subprocess.Popen([str(BIN / "nngstream"), f"tcp://127.0.0.1:{in_port}",
                          f"tcp://127.0.0.1:{out_port}", "--producers", "1"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", out_port), 0.2).close()
            return p
        except OSError:
            if time.monotonic() > deadline:
                p.kill()
                raise
            time.sleep(0.05)


def bare_loop(url: str, image: bool) -> tuple[int, float]:
    """A user's hand-written consumer: bytes received and seconds from the first message."""
    from h5py import h5f, h5p

    sock = pynng.Pull0(recv_max_size=0)
    sock.dial(url, block=True)
    total, t0 = 0, None
    try:
        while True:
            msg = sock.recv()
            if t0 is None:
                t0 = time.perf_counter()
            if msg.startswith(CONTROL_PREFIX):
                break
            total += len(msg)
            if image:
                fapl = h5p.create(h5p.FILE_ACCESS)
                fapl.set_fapl_core(backing_store=False)
                fapl.set_file_image(msg)
                f = h5py.File(h5f.open(f"img{total}".encode(), h5f.ACC_RDONLY, fapl=fapl))
            else:
                f = h5py.File(io.BytesIO(msg), "r")
            with f:
                f["/data/frames"][()]
                f["/data/index"][()]
    finally:
        sock.close()
    return total, time.perf_counter() - t0


def client_pull(url: str, cfg: dict) -> tuple[int, float]:
    t0 = None
    with pull([url], config=cfg) as p:
        for _batch in p:
            if t0 is None:
                t0 = time.perf_counter()
    return p.received.bytes, time.perf_counter() - t0


def one_pull_round(way: str, cfg: dict, files: list[Path]) -> tuple[float, float]:
    """(MB/s, CPU seconds per GB of this process: the consumer, its threads)"""
    i, o = free_port(), free_port()
    buf = start_buffer(i, o)
    url = f"tcp://127.0.0.1:{o}"
    out: list = []

    def consume() -> None:
        if way == "pull()":
            out.append(client_pull(url, cfg))
        else:
            out.append(bare_loop(url, image=way.endswith("image")))

    c0 = time.process_time()
    t = threading.Thread(target=consume)
    t.start()
    time.sleep(0.3)  # the consumer dials before the producer starts
    subprocess.run([str(BIN / "nngstream"), "push", *map(str, files), "--to",
                    f"tcp://127.0.0.1:{i}"], check=True, capture_output=True)  # fmt: skip
    t.join(300)
    cpu = time.process_time() - c0
    buf.wait(60)
    nbytes, secs = out[0]
    return nbytes / secs, cpu / nbytes * 1e9


def bench_pull(cfg: dict, files: list[Path], rounds: int) -> None:
    ways = ["bare BytesIO", "bare file image", "pull()"]
    rates: dict[str, list[float]] = {w: [] for w in ways}
    cpu: dict[str, list[float]] = {w: [] for w in ways}
    for r in range(rounds):
        for w in ways if r % 2 == 0 else ways[::-1]:  # ABC CBA: no way always first
            rate, cpu_gb = one_pull_round(w, cfg, files)
            rates[w].append(rate)
            cpu[w].append(cpu_gb)
    med = {k: statistics.median(v) / 1e6 for k, v in rates.items()}
    cpu_gb = {k: statistics.median(v) for k, v in cpu.items()}
    total = sum(f.stat().st_size for f in files)
    print(f"pull decode: {len(files)} batches, {total / 1e6:.0f} MB over one nngstream buffer "
          f"(median of {rounds} rounds, MB/s of message bytes)")  # fmt: skip
    for k, v in med.items():
        print(f"  {k:<16} {v:8.0f} MB/s  {cpu_gb[k]:6.2f} CPU s/GB (consumer process)")
    for base in ("bare BytesIO", "bare file image"):
        print(
            f"  pull() / {base:<15} = {med['pull()'] / med[base]:.2f}x wall, "
            f"{cpu_gb[base] / cpu_gb['pull()']:.2f}x by CPU time (target >= 0.9x)"
        )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--events", type=int, default=512)
    ap.add_argument("--part", choices=["cache", "pull", "both"], default="both")
    args = ap.parse_args()
    print(
        f"machine: {platform.node()} {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cpus, Python {platform.python_version()}, h5py {h5py.__version__}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        cfg, files = make_batches(root, args.events)
        if args.part in ("cache", "both"):
            bench_cache(cfg, files, root, args.rounds)
        if args.part in ("pull", "both"):
            bench_pull(cfg, files, args.rounds)


if __name__ == "__main__":
    main()
