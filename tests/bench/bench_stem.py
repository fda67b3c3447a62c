"""Benchmark: 4D-STEM streaming (docs/stem.md), each figure paired with its baseline in
one run.

1. electron counting, 576 x 576 uint16 frames: ours (`lclstreamer.stem.counting.Counter`)
   vs stempy's `electron_count_frame` (its C++ counting) on the same frames with the same
   thresholds; frames/s (alternating runs, best of REPEATS).
2. end to end: 4 producers (`mpirun -n 4 lclstreamer`, stem-sectors) -> nngstream
   (`--route-by frame_number --delivery acked`) -> `mpirun -n 2 stem-count`, frames/s
   steady (stem-count's `seconds`: from the first sector received to every frame counted
   and gathered) and with start-up (from the producers' mpirun to the file written), vs
   counting the same frames from memory (assembled, in one process, the first 256; the
   median of 3 passes over them: one pass lasts a quarter of a second), and
   vs only generating them (the synthetic source's own cost, which the pipeline pays on
   its producers); one row per round (with each component's CPU per frame, user +
   system, start-up included, and its context switches per frame, from wait4), then the
   median round. `--transport acked,nng,zmq` also runs keyed NNG at at-most-once (the
   aggregator without `--delivery acked`) and the keyed ZMQ configuration (`zmq_push`
   producers, `--in-proto zmq --out-proto zmq`, `stem-count --proto zmq`: at-most-once),
   the order of the configurations alternating round by round.
3. keyed routing vs round-robin: the same acked buffer with and without `--route-by`,
   4 `nngstream push` producers -> 2 `nngstream pull --delivery acked` consumers, 2048
   sector messages of 576 x 144 uint16 (166 KB); messages/s (alternating, best of 3).
4. keyed routing on ZMQ vs round-robin: the same ZMQ buffer (`--in-proto zmq --out-proto
   zmq`) with and without `--route-by`, 4 producer processes sending the two-part NERSC
   message (msgpack header, 576 x 144 uint16) -> 2 `nngstream pull --proto zmq --count`
   consumers (`--keyed` for the keyed buffer), 2048 messages; messages/s (alternating,
   best of REPEATS).
5. the transport floor: the same topology and sector messages with bare pyzmq programs
   (4 producers sending pre-made sectors -> a PULL/PUSH relay loop -> 2 consumers that
   only receive), over TCP and ipc://, each program's CPU per frame, next to counting
   from memory in the same run, and the end-to-end ratio that floor leaves room for on
   2 cores (frames/s = 2 cores / (floor + counting CPU per frame); median of the rounds).
Prints Markdown, one ratio row per figure and its baseline.

    .venv/bin/python tests/bench/bench_stem.py [--repeat 5]
        [--only counting|pipeline|routing|routing-zmq|floor] [--scan 16 16] [--lockstep 32]
        [--transport acked|nng|zmq|zmq-ipc|acked,nng,zmq]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import msgpack
import numpy as np
import yaml

from lclstreamer.models import StemSectorEventSource
from lclstreamer.sources.stem import SectorMaker, dark_reference, sector_width
from lclstreamer.stem.counting import Counter, thresholds

BIN = Path(sys.executable).parent
EXAMPLES = Path(__file__).resolve().parents[2] / "lclstreamer" / "examples"
MEMORY_FRAMES = 256  # frames generated and counted in memory for the baselines
MEMORY_PASSES = 3  # counting from memory: the median of this many passes over them


def frames_of(cfg: StemSectorEventSource, n: int, dark: np.ndarray) -> list[np.ndarray]:
    """The first n frames, as the producers make their sectors (SectorMaker)."""
    w = sector_width(cfg)
    makers = [SectorMaker(cfg, s, dark[:, s * w : (s + 1) * w]) for s in range(cfg.sectors)]
    return [np.concatenate([m(f) for m in makers], axis=1) for f in range(n)]


def bench_counting(cfg: StemSectorEventSource, repeats: int) -> tuple[float, float]:
    import stempy.image

    dark = dark_reference(cfg)
    frames = frames_of(cfg, 100, dark)
    th = thresholds(np.stack(frames[:10]), dark, 4.0, 10.0)
    ours = Counter(dark, th)

    def run_ours() -> None:
        for f in frames:
            ours(f)

    def run_stempy() -> None:
        for f in frames:
            stempy.image.electron_count_frame(
                f, darkreference=dark, background_threshold=th.background, xray_threshold=th.xray
            )

    best = [0.0, 0.0]
    for _ in range(repeats):
        for i, fn in enumerate((run_ours, run_stempy)):
            t0 = time.perf_counter()
            fn()
            best[i] = max(best[i], len(frames) / (time.perf_counter() - t0))
    return best[0], best[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_consumers(path: Path, n: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and f'"consumers":{n}' in path.read_text():
            return
        time.sleep(0.05)
    raise RuntimeError("consumers did not connect")


TRANSPORTS = {  # producers' handler, buffer options, consumers' options
    "acked": ("nng_push", ["--delivery", "acked"], []),
    "nng": ("nng_push", [], []),  # keyed NNG at-most-once: no kept copy, no redelivery
    "zmq": ("zmq_push", ["--in-proto", "zmq", "--out-proto", "zmq"], ["--proto", "zmq"]),
}
TRANSPORTS["zmq-ipc"] = TRANSPORTS["zmq"]  # the same over ipc:// (one machine only)


def _reap(p: subprocess.Popen, timeout: float) -> tuple[float, float, int]:
    """Wait for `p` (up to `timeout` s, then kill it) and return the CPU its process tree
    used: (user s, system s, context switches), from wait4 (children it waited for
    included, as /usr/bin/time counts them)."""
    deadline = time.monotonic() + timeout
    while True:
        pid, status, ru = os.wait4(p.pid, os.WNOHANG)
        if pid:
            p.returncode = os.waitstatus_to_exitcode(status)
            return ru.ru_utime, ru.ru_stime, ru.ru_nvcsw + ru.ru_nivcsw
        if time.monotonic() > deadline:
            p.kill()
        time.sleep(0.02)


def bench_pipeline(
    scan: tuple[int, int], lockstep: int | None = None, transport: str = "acked"
) -> dict[str, float]:
    """Frames/s end to end, from memory, and generation alone (`lockstep`: the producers'
    rounds, default the example's; `transport`: a key of TRANSPORTS), and the CPU per frame
    of each component (start-up included)."""
    handler, buf_opts, cons_opts = TRANSPORTS[transport]
    cfg = StemSectorEventSource(type="stem_sectors", scan_shape=scan, seed=1)
    n = scan[0] * scan[1]
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        if transport.endswith("-ipc"):
            in_url, out_url = f"ipc://{d}/in.sock", f"ipc://{d}/out.sock"
        else:
            in_url, out_url = f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
        conf = yaml.safe_load((EXAMPLES / "stem-sectors.yaml").read_text())
        conf["event_source"]["scan_shape"] = list(scan)
        conf["event_source"]["sector_loss"] = 0.0
        if lockstep is not None:
            conf["event_source"]["lockstep"] = lockstep
        conf["data_handlers"] = [{"type": handler, "urls": [in_url], "mode": "dial"}]
        (d / "p.yaml").write_text(yaml.safe_dump(conf))
        subprocess.run([BIN / "stem-count", "dark", d / "p.yaml", "-o", d / "dark.npy"], check=True)
        metrics = d / "buf.jsonl"
        with metrics.open("w") as mf:
            buf = subprocess.Popen(
                [BIN / "nngstream", in_url, out_url, *buf_opts, "--route-by", "frame_number",
                 "--producers", "4", "--metrics-interval", "0.2"],
                stdout=mf, stderr=subprocess.DEVNULL,
            )  # fmt: skip
        cons = subprocess.Popen(
            [BIN / "mpirun", "-n", "2", BIN / "stem-count", "count", out_url,
             "--scan-shape", str(scan[0]), str(scan[1]), "--dark", d / "dark.npy",
             "-o", d / "c.h5", *cons_opts],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        cpu: dict[str, tuple[float, float, int]] = {}
        try:
            wait_consumers(metrics, 2)
            t0 = time.perf_counter()
            prod = subprocess.Popen(
                [BIN / "mpirun", "-n", "4", BIN / "lclstreamer", "-c", d / "p.yaml"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            cpu["producers"] = _reap(prod, 600)
            assert prod.returncode == 0, prod.returncode
            cpu["consumers"] = _reap(cons, 600)  # its only output is one line: no pipe fills
            assert cons.stdout is not None
            out = cons.stdout.read()
            e2e = n / (time.perf_counter() - t0)
            cpu["aggregator"] = _reap(buf, 30)  # it ends with the stream
            acc = json.loads(out.strip().splitlines()[-1])
            assert acc["frames_complete"] == n, acc
            steady = n / acc["seconds"]
        finally:
            for p in (cons, buf):
                if p.returncode is None:
                    p.kill()
                    p.wait()
    m = min(n, MEMORY_FRAMES)  # the same frames' rate, without holding the whole scan
    dark = dark_reference(cfg)
    t0 = time.perf_counter()
    frames = frames_of(cfg, m, dark)
    generate = m / (time.perf_counter() - t0)
    th = thresholds(np.stack(frames[:10]), dark, 4.0, 10.0)
    count = Counter(dark, th)
    passes = []
    for _ in range(MEMORY_PASSES):
        t0 = time.perf_counter()
        for f in frames:
            count(f)
        passes.append(m / (time.perf_counter() - t0))
    memory = sorted(passes)[len(passes) // 2]
    res = {"end_to_end": e2e, "steady": steady, "from_memory": memory, "generate": generate}
    for name, (user, system, switches) in cpu.items():
        res[f"{name}_user_ms"] = 1000 * user / n
        res[f"{name}_sys_ms"] = 1000 * system / n
        res[f"{name}_switches"] = switches / n
    return res


def _cpu_line(r: dict[str, float]) -> str:
    """CPU per frame of each component (user + system ms, start-up included) and context
    switches per frame."""
    parts = [
        f"{c} {r[f'{c}_user_ms']:.2f}+{r[f'{c}_sys_ms']:.2f} ms ({r[f'{c}_switches']:.0f} cs)"
        for c in ("producers", "aggregator", "consumers")
    ]
    return ", ".join(parts)


def bench_routing(repeats: int, messages: int = 2048) -> tuple[float, float]:
    """Messages/s through an acked buffer, keyed vs round-robin (best of `repeats` each)."""
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        sector = np.random.default_rng(0).integers(0, 4000, (576, 144), dtype=np.uint16)
        files = []
        for i in range(messages):
            header = {"scan_number": 1, "frame_number": i // 4, "sector": i % 4,
                      "shape": [576, 144], "dtype": "<u2"}  # fmt: skip
            p = d / f"{i:06d}.msg"
            p.write_bytes(msgpack.packb(header) + sector.tobytes())
            files.append(p)
        shares = [files[s::4] for s in range(4)]
        best = {"keyed": 0.0, "round_robin": 0.0}
        for _ in range(repeats):
            for mode, extra in (("keyed", ["--route-by", "frame_number"]), ("round_robin", [])):
                inp, outp = free_port(), free_port()
                metrics = d / f"{mode}.jsonl"
                with metrics.open("w") as mf:
                    buf = subprocess.Popen(
                        [BIN / "nngstream", f"tcp://127.0.0.1:{inp}", f"tcp://127.0.0.1:{outp}",
                         "--delivery", "acked", "--producers", "4", "--metrics-interval", "0.2",
                         *extra],
                        stdout=mf, stderr=subprocess.DEVNULL,
                    )  # fmt: skip
                pulls = [
                    subprocess.Popen(
                        [
                            BIN / "nngstream",
                            "pull",
                            f"tcp://127.0.0.1:{outp}",
                            "--count",
                            "--delivery",
                            "acked",
                        ],
                        stdout=subprocess.PIPE,
                        stderr=subprocess.DEVNULL,
                        text=True,
                    )  # fmt: skip
                    for _ in range(2)
                ]
                try:
                    wait_consumers(metrics, 2)
                    t0 = time.perf_counter()
                    pushes = [
                        subprocess.Popen(
                            [BIN / "nngstream", "push", "--to", f"tcp://127.0.0.1:{inp}", *share],
                            stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL,
                        )  # fmt: skip
                        for share in shares
                    ]
                    got = sum(int(p.communicate(timeout=300)[0].strip()) for p in pulls)
                    rate = messages / (time.perf_counter() - t0)
                    for p in pushes:
                        p.wait(60)
                    assert got == messages, (mode, got)
                    best[mode] = max(best[mode], rate)
                finally:
                    for p in (*pulls, buf):
                        p.kill()
                        p.wait()
        return best["keyed"], best["round_robin"]


_ZMQ_PRODUCER = """
import sys, msgpack, numpy as np, zmq
url, sector, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
data = np.random.default_rng(sector).integers(0, 4000, (576, 144), dtype=np.uint16)
ctx = zmq.Context(); sock = ctx.socket(zmq.PUSH); sock.setsockopt(zmq.LINGER, 60000)
sock.connect(url)
for frame in range(n):
    header = {"scan_number": 1, "frame_number": frame, "sector": sector,
              "shape": [576, 144], "dtype": "<u2"}
    sock.send_multipart([msgpack.packb(header), data], copy=False)
sock.close(); ctx.term()
"""


def bench_routing_zmq(repeats: int, messages: int = 2048) -> tuple[float, float]:
    """Messages/s through a ZMQ buffer, keyed vs round-robin (best of `repeats` each)."""
    best = {"keyed": 0.0, "round_robin": 0.0}
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        modes = (("keyed", ["--route-by", "frame_number"], ["--keyed"]), ("round_robin", [], []))
        for r in range(repeats):
            for mode, extra, pull_extra in modes[:: 1 if r % 2 == 0 else -1]:  # alternate
                inp, outp = free_port(), free_port()
                metrics = d / f"{mode}.jsonl"
                with metrics.open("w") as mf:
                    buf = subprocess.Popen(
                        [BIN / "nngstream", f"tcp://127.0.0.1:{inp}", f"tcp://127.0.0.1:{outp}",
                         "--in-proto", "zmq", "--out-proto", "zmq", "--producers", "4",
                         "--metrics-interval", "0.2", *extra],
                        stdout=mf, stderr=subprocess.DEVNULL,
                    )  # fmt: skip
                pulls = [
                    subprocess.Popen(
                        [
                            BIN / "nngstream",
                            "pull",
                            f"tcp://127.0.0.1:{outp}",
                            "--proto",
                            "zmq",
                            "--count",
                            *pull_extra,
                        ],
                        stdout=subprocess.PIPE,
                        stderr=subprocess.DEVNULL,
                        text=True,
                    )  # fmt: skip
                    for _ in range(2)
                ]
                try:
                    wait_consumers(metrics, 2)
                    t0 = time.perf_counter()
                    pushes = [
                        subprocess.Popen(
                            [
                                sys.executable,
                                "-c",
                                _ZMQ_PRODUCER,
                                f"tcp://127.0.0.1:{inp}",
                                str(s),
                                str(messages // 4),
                            ],
                        )  # fmt: skip
                        for s in range(4)
                    ]
                    got = sum(int(p.communicate(timeout=300)[0].strip()) for p in pulls)
                    rate = messages / (time.perf_counter() - t0)
                    for p in pushes:
                        p.wait(60)
                    assert got == messages, (mode, got)
                    best[mode] = max(best[mode], rate)
                finally:
                    for p in (*pulls, buf):
                        p.kill()
                        p.wait()
    return best["keyed"], best["round_robin"]


_BARE_RELAY = """
import sys, zmq
ctx = zmq.Context(); pull, push = ctx.socket(zmq.PULL), ctx.socket(zmq.PUSH)
pull.bind(sys.argv[1]); push.bind(sys.argv[2])
while True:
    push.send_multipart(pull.recv_multipart(copy=False), copy=False)
"""

_BARE_CONSUMER = """
import sys, time, zmq
ctx = zmq.Context(); sock = ctx.socket(zmq.PULL); sock.connect(sys.argv[1])
sock.setsockopt(zmq.RCVTIMEO, 60000)
n, first, last = 0, 0.0, 0.0
try:
    while True:
        sock.recv_multipart(copy=False)
        last = time.perf_counter()
        if not n:
            first = last
            sock.setsockopt(zmq.RCVTIMEO, 1000)
        n += 1
except zmq.Again:
    pass
print(n, first, last)
"""


def bench_floor(frames: int, link: str) -> dict[str, float]:
    """The transport floor: the pipeline's topology and messages with bare pyzmq programs
    (4 producers sending one pre-made sector each per frame, a PULL -> PUSH relay loop, 2
    consumers that only receive), over `link` (tcp or ipc): frames/s and each program's
    CPU per frame (user + system ms, start-up included: a Python start-up and imports of
    zmq, numpy and msgpack only)."""
    with tempfile.TemporaryDirectory() as tmp:
        if link == "tcp":
            inp, outp = f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
        else:
            inp, outp = f"ipc://{tmp}/in", f"ipc://{tmp}/out"
        py = [sys.executable, "-c"]
        relay = subprocess.Popen([*py, _BARE_RELAY, inp, outp])
        cons = [
            subprocess.Popen([*py, _BARE_CONSUMER, outp], stdout=subprocess.PIPE, text=True)
            for _ in range(2)
        ]
        try:
            time.sleep(1.0)  # every program started and connected
            prods = [
                subprocess.Popen([*py, _ZMQ_PRODUCER, inp, str(s), str(frames)]) for s in range(4)
            ]
            cpu = {"producers": [0.0, 0.0], "relay": [0.0, 0.0], "consumers": [0.0, 0.0]}
            for name, group in (("producers", prods), ("consumers", cons)):
                for p in group:
                    user, system, _ = _reap(p, 600)
                    cpu[name][0] += user
                    cpu[name][1] += system
            got = [c.stdout.read().split() for c in cons if c.stdout is not None]
            relay.kill()
            user, system, _ = _reap(relay, 30)
            cpu["relay"] = [user, system]
        finally:
            for p in (relay, *cons):
                if p.returncode is None:
                    p.kill()
                    p.wait()
    n = sum(int(g[0]) for g in got)
    assert n == 4 * frames, (n, 4 * frames)
    seconds = max(float(g[2]) for g in got) - min(float(g[1]) for g in got)
    res = {"rate": frames / seconds}
    for name, (user, system) in cpu.items():
        res[f"{name}_ms"] = 1000 * (user + system) / frames
    res["total_ms"] = sum(res[f"{c}_ms"] for c in cpu)
    return res


def floor_rows(scan: tuple[int, int], repeats: int) -> None:
    """Median round of the transport floor per link, next to counting from memory (same
    run), and the end-to-end ratio the floor allows (2 cores, no overhead at all)."""
    n = scan[0] * scan[1]
    cfg = StemSectorEventSource(type="stem_sectors", scan_shape=scan, seed=1)
    dark = dark_reference(cfg)
    frames = frames_of(cfg, min(n, MEMORY_FRAMES), dark)
    th = thresholds(np.stack(frames[:10]), dark, 4.0, 10.0)
    count = Counter(dark, th)
    runs: dict[str, list[dict[str, float]]] = {"tcp": [], "ipc": []}
    memory: list[float] = []
    for r in range(repeats):
        for link in ("tcp", "ipc")[:: 1 if r % 2 == 0 else -1]:
            runs[link].append(bench_floor(n, link))
        t0 = time.perf_counter()
        for f in frames:
            count(f)
        memory.append(len(frames) / (time.perf_counter() - t0))
    mem = sorted(memory)[len(memory) // 2]
    count_ms = 1000 / mem
    for link, rs in runs.items():
        f = sorted(rs, key=lambda x: x["total_ms"])[len(rs) // 2]
        bound = 2000 / (f["total_ms"] + count_ms) / mem
        print(f"| transport floor ({link}), {n} frames: bare pyzmq producers -> relay loop ->"
              f" consumers that only receive (frames/s; CPU per frame: producers"
              f" {f['producers_ms']:.2f}, relay {f['relay_ms']:.2f}, consumers"
              f" {f['consumers_ms']:.2f}, total {f['total_ms']:.2f} ms) vs counting from"
              f" memory ({count_ms:.2f} ms per frame) | {f['rate']:.0f} | {mem:.0f} |"
              f" {f['rate'] / mem:.2f}x; the end to end this floor allows on 2 cores"
              f" (floor + counting CPU, nothing else): {bound:.2f}x |", flush=True)  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=5, help="runs of each figure (best kept)")
    ap.add_argument("--only", choices=["counting", "pipeline", "routing", "routing-zmq", "floor"])
    ap.add_argument("--scan", type=int, nargs=2, default=(16, 16), metavar=("NX", "NY"))
    ap.add_argument(
        "--lockstep", type=int, help="pipeline: the producers' rounds (0: none; default 32)"
    )
    ap.add_argument(
        "--transport",
        default="acked",
        help="pipeline: acked (NNG, --delivery acked: the example's), nng (keyed NNG,"
        " at-most-once), zmq (keyed ZMQ, at-most-once), zmq-ipc (the same over ipc://),"
        " or several, e.g. acked,nng,zmq"
        " (alternating rounds)",
    )
    args = ap.parse_args()
    if unknown := set(args.transport.split(",")) - set(TRANSPORTS):
        ap.error(f"--transport: unknown {sorted(unknown)}, choose from {sorted(TRANSPORTS)}")
    scan = tuple(args.scan)
    cfg = StemSectorEventSource(type="stem_sectors", scan_shape=(10, 10), seed=1)
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    print()
    print("| what | ours | baseline | ratio |")
    print("|---|---|---|---|", flush=True)
    if args.only in (None, "counting"):
        ours, theirs = bench_counting(cfg, args.repeat)
        print(f"| counting 576x576 (frames/s) vs stempy electron_count_frame | {ours:.0f} |"
              f" {theirs:.0f} | {ours / theirs:.2f}x |", flush=True)  # fmt: skip
    if args.only in (None, "pipeline"):
        transports = args.transport.split(",")
        runs: dict[str, list[dict[str, float]]] = {t: [] for t in transports}
        for i in range(max(1, args.repeat // 2)):
            for t in transports[:: 1 if i % 2 == 0 else -1]:  # alternate the order
                r = bench_pipeline(scan, args.lockstep, t)  # type: ignore[arg-type]
                runs[t].append(r)
                print(f"| round ({t}): steady {r['steady']:.0f}, with start-up"
                      f" {r['end_to_end']:.0f}, from memory {r['from_memory']:.0f}, generating"
                      f" {r['generate']:.0f}; CPU per frame: {_cpu_line(r)} | | |"
                      f" {r['steady'] / r['from_memory']:.2f}x |", flush=True)  # fmt: skip
        for t in transports:
            pipe = sorted(runs[t], key=lambda r: r["steady"] / r["from_memory"])[len(runs[t]) // 2]
            print(f"| end to end ({t}) {scan[0]}x{scan[1]} scan, steady (first sector received"
                  f" to all counted, frames/s) vs counting from memory (median round) |"
                  f" {pipe['steady']:.0f} | {pipe['from_memory']:.0f} |"
                  f" {pipe['steady'] / pipe['from_memory']:.2f}x |")  # fmt: skip
            print(f"| end to end ({t}) with start-up (producers' mpirun to file written) vs"
                  f" counting from memory (same round) | {pipe['end_to_end']:.0f} |"
                  f" {pipe['from_memory']:.0f} |"
                  f" {pipe['end_to_end'] / pipe['from_memory']:.2f}x |")  # fmt: skip
            print(f"| end to end ({t}), steady, vs generating the frames alone (1 process) |"
                  f" {pipe['steady']:.0f} | {pipe['generate']:.0f} |"
                  f" {pipe['steady'] / pipe['generate']:.2f}x |", flush=True)  # fmt: skip
    if args.only in (None, "floor"):
        floor_rows(scan, max(1, args.repeat // 2) | 1)  # an odd number of rounds
    if args.only in (None, "routing"):
        keyed, rr = bench_routing(args.repeat)
        print(f"| keyed routing vs round-robin, acked (msgs/s, 166 KB) | {keyed:.0f} | {rr:.0f} |"
              f" {keyed / rr:.2f}x |")  # fmt: skip
    if args.only in (None, "routing-zmq"):
        keyed, rr = bench_routing_zmq(args.repeat)
        print(f"| keyed routing vs round-robin, ZMQ two-part (msgs/s, 166 KB) | {keyed:.0f} |"
              f" {rr:.0f} | {keyed / rr:.2f}x |")  # fmt: skip


if __name__ == "__main__":
    main()
