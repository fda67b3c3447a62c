"""Throughput of nngstream against its two baselines, measured in the same run.

For each protocol (NNG, ZMQ), transport and message size, 2 producers stream to 2
consumers three ways:
  direct     producers dial both consumers (no buffer at all)
  relay      a minimal relay: a recv -> send loop of the same library, zero-copy, with
             the socket options nngstream uses (NNG: the defaults; ZMQ: its HWM)
  nngstream  the `nngstream` CLI with default settings
Throughput is total bytes over the time from the first message any consumer received
to the last. Then (NNG over tcp, 1 MiB) `--delivery acked` against the default
at-most-once, and the spill's write/replay rate against a bare sequential write/read of
the same bytes to a file in the same directory. Each round runs the ways back to back;
each round starts with another way (rotated), and the median over rounds is printed
with the ratio of each round, so slow moments of a shared machine hit them alike.
Also printed: the buffer's peak RSS (VmHWM) and the CPU time the relay and the buffer spent per GB
forwarded (less sensitive to other load than throughput). Prints figures only; asserts
nothing about speed.

    .venv/bin/python tests/bench/bench_nngstream.py [--rounds 3] [--transports tcp,ipc]
        [--only relay|acked|spill]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pynng
import zmq

from nngstream.zmqio import HWM as ZMQ_HWM

KIB, MIB = 1024, 1024 * 1024
CONTROL_PREFIX = b"\x00NNGSTREAM\x00"  # nngstream's control messages (end of stream)
PRODUCERS = CONSUMERS = 2
NNGSTREAM = [sys.executable, "-m", "nngstream"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Addresses:
    """Fresh addresses of one transport."""

    def __init__(self, transport: str, tmp: Path) -> None:
        self.transport, self.tmp, self.n = transport, tmp, 0

    def __call__(self) -> str:
        self.n += 1
        if self.transport == "ipc":
            return f"ipc://{self.tmp}/a{self.n}-{os.getpid()}.sock"
        return f"tcp://127.0.0.1:{free_port()}"


# -- peers ------------------------------------------------------------------------------
def produce(proto: str, urls: list[str], count: int, size: int, go) -> None:
    data = os.urandom(size)
    if proto == "nng":
        sock = pynng.Push0()
        for u in urls:
            sock.dial(u, block=False)
        go.wait()
        for _ in range(count):
            sock.send(data)
        time.sleep(3)  # NNG has no linger: let the last messages leave before closing
        sock.close()
    else:
        ctx = zmq.Context()
        sock = ctx.socket(zmq.PUSH)
        for u in urls:
            sock.connect(u)
        go.wait()
        for _ in range(count):
            sock.send(data, copy=False)
        sock.close(linger=-1)
        ctx.term()


def consume(proto: str, url: str, listen: bool, results, ready) -> None:
    """Receive until 1 s passes without a message; report (count, bytes, first, last)."""
    n = nbytes = 0
    first = last = 0.0
    if proto.startswith("acked"):  # nngstream --delivery acked, nngstream's own consumer
        from nngstream.acked import DEFAULT_CREDIT, AckedConsumer

        credit = int(proto.removeprefix("acked") or DEFAULT_CREDIT)
        consumer = AckedConsumer(url, credit=credit, dial_timeout=20)
        ready.release()
        for _producer, _seq, payload in consumer.messages(lambda: 0):
            last = time.monotonic()
            if not n:
                first = last
            n += 1
            nbytes += len(payload)
        consumer.close()
    elif proto == "nng":
        sock = pynng.Pull0(recv_max_size=0, recv_timeout=20_000)
        sock.listen(url) if listen else sock.dial(url, block=False)
        ready.release()
        try:
            while True:
                msg = sock.recv_msg()
                if bytes(msg._buffer[: len(CONTROL_PREFIX)]) == CONTROL_PREFIX:
                    continue  # nngstream's end message
                last = time.monotonic()
                if not n:
                    first = last
                    sock.recv_timeout = 1000
                n += 1
                nbytes += len(msg._buffer)
        except pynng.Timeout:
            pass
        sock.close()
    else:
        ctx = zmq.Context()
        sock = ctx.socket(zmq.PULL)
        sock.bind(url) if listen else sock.connect(url)
        sock.setsockopt(zmq.RCVTIMEO, 20_000)
        ready.release()
        try:
            while True:
                frame = sock.recv(copy=False)
                if not len(frame) or frame.bytes[: len(CONTROL_PREFIX)] == CONTROL_PREFIX:
                    continue  # nngstream's end message
                last = time.monotonic()
                if not n:
                    first = last
                    sock.setsockopt(zmq.RCVTIMEO, 1000)
                n += 1
                nbytes += len(frame)
        except zmq.Again:
            pass
        sock.close(linger=0)
        ctx.term()
    results.put((n, nbytes, first, last))


# -- the minimal relays (the baseline the issue defines) --------------------------------
def relay_nng(in_url: str, out_url: str) -> None:
    pull = pynng.Pull0(listen=in_url, recv_max_size=0)
    push = pynng.Push0(listen=out_url)
    while True:
        push.send_msg(pull.recv_msg())


def relay_zmq(in_url: str, out_url: str) -> None:
    ctx = zmq.Context()
    pull, push = ctx.socket(zmq.PULL), ctx.socket(zmq.PUSH)
    for sock in (pull, push):  # the queue lengths nngstream's ZMQ sides use
        sock.setsockopt(zmq.RCVHWM, ZMQ_HWM)
        sock.setsockopt(zmq.SNDHWM, ZMQ_HWM)
    pull.bind(in_url)
    push.bind(out_url)
    while True:
        push.send(pull.recv(copy=False), copy=False)


# -- one measurement --------------------------------------------------------------------
def peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def wait_listening(urls: list[str], proc: subprocess.Popen | mp.Process) -> None:
    deadline = time.monotonic() + 20
    for u in urls:
        while True:
            alive = proc.poll() is None if isinstance(proc, subprocess.Popen) else proc.is_alive()
            if not alive:
                raise RuntimeError(f"the middle process died before listening on {u}")
            if u.startswith("ipc://"):
                if Path(u[6:]).exists():
                    break
            else:
                try:
                    with socket.create_connection(("127.0.0.1", int(u.rsplit(":", 1)[1])), 0.2):
                        break
                except OSError:
                    pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listening on {u}")
            time.sleep(0.05)


def _cpu(proc: subprocess.Popen | mp.Process | None) -> float:
    if proc is None:
        return 0.0
    t = psutil.Process(proc.pid).cpu_times()
    return t.user + t.system


def measure(
    way: str, proto: str, size: int, total_bytes: int, addr: Addresses, extra: list[str]
) -> dict:
    """One measurement; `proto` "acked" is NNG producers, `nngstream --delivery acked`
    and acked consumers."""
    consumer_proto = proto
    if proto.startswith("acked"):
        proto, extra = "nng", [*extra, "--delivery", "acked"]
    count = max(1, total_bytes // size // PRODUCERS)
    results: mp.Queue = mp.Queue()
    ready = mp.Semaphore(0)
    go = mp.Event()
    middle: subprocess.Popen | mp.Process | None = None
    if way == "direct":
        consumer_urls = [addr() for _ in range(CONSUMERS)]
        cons = [
            mp.Process(target=consume, args=(proto, u, True, results, ready)) for u in consumer_urls
        ]
        producer_urls = consumer_urls
    else:
        in_url, out_url = addr(), addr()
        if way == "relay":
            target = relay_nng if proto == "nng" else relay_zmq
            middle = mp.Process(target=target, args=(in_url, out_url), daemon=True)
            middle.start()
        else:
            middle = subprocess.Popen(
                [*NNGSTREAM, in_url, out_url, "--in-proto", proto, "--out-proto", proto,
                 "--metrics-interval", "3600", *extra],
                stdout=subprocess.DEVNULL,
            )  # fmt: skip
        wait_listening([in_url, out_url], middle)
        cons = [
            mp.Process(target=consume, args=(consumer_proto, out_url, False, results, ready))
            for _ in range(CONSUMERS)
        ]
        producer_urls = [in_url]
    for c in cons:
        c.start()
    for _ in cons:
        ready.acquire()
    prods = [
        mp.Process(target=produce, args=(proto, producer_urls, count, size, go))
        for _ in range(PRODUCERS)
    ]
    for p in prods:
        p.start()
    time.sleep(0.5 if way == "direct" else 1.0)  # let every connection come up
    cpu0 = _cpu(middle)  # leave out start-up (imports) from the CPU per GB
    go.set()
    got = [results.get(timeout=300) for _ in cons]
    rss = 0
    cpu = _cpu(middle) - cpu0
    if isinstance(middle, subprocess.Popen):
        rss = peak_rss(middle.pid)
        middle.terminate()
        middle.wait(30)
    elif middle is not None:
        middle.kill()
        middle.join()
    for p in prods:  # every message arrived: they only wait out NNG's missing linger
        p.terminate()
    for p in prods + cons:
        p.join(30)
    n = sum(g[0] for g in got)
    nbytes = sum(g[1] for g in got)
    t0 = min(g[2] for g in got if g[0])
    t1 = max(g[3] for g in got if g[0])
    if n != count * PRODUCERS:
        print(f"  warning: {way} delivered {n} of {count * PRODUCERS} messages", flush=True)
    return {"rate": nbytes / (t1 - t0), "rss": rss, "n": n, "cpu": cpu / (nbytes / 1e9)}


def machine() -> str:
    cpu = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"{os.cpu_count()} cores ({cpu}), {mem:.0f} GiB RAM, Python {platform.python_version()},"
        f" {platform.system()} {platform.release()}, pynng {pynng.__version__},"
        f" pyzmq {zmq.__version__} (libzmq {zmq.zmq_version()})"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--transports", default="tcp,ipc")
    ap.add_argument("--protos", default="nng,zmq")
    ap.add_argument("--sizes", default="1048576,65536")
    ap.add_argument("--total-mib", type=int, default=1024, help="MiB streamed per measurement")
    ap.add_argument("--nngstream-args", default="", help="extra options for nngstream")
    ap.add_argument("--only", choices=["relay", "acked", "spill"], help="one section only")
    ap.add_argument("--spill-mib", type=int, default=1024, help="MiB through the spill")
    args = ap.parse_args()
    extra = args.nngstream_args.split()
    mp.set_start_method("fork")
    print(f"machine: {machine()}")
    print(
        f"2 producers -> 2 consumers, {args.total_mib} MiB per measurement,"
        f" median of {args.rounds} interleaved rounds; GB/s = 1e9 bytes/s;"
        f" nngstream options: {' '.join(extra) or '(defaults)'}"
    )
    if args.only in (None, "relay"):
        relay_table(args, extra)
    if args.only in (None, "acked"):
        acked_table(args, extra)
    if args.only in (None, "spill"):
        spill_table(args)


def relay_table(args: argparse.Namespace, extra: list[str]) -> None:
    header = (
        f"{'proto':5} {'link':4} {'size':>7} | {'direct':>7} {'relay':>7} {'nngstr':>7} |"
        f" {'nngstr/relay':>12} {'relay/direct':>12} {'nngstr/direct':>13} | {'peak RSS':>9} |"
        f" {'CPU s/GB relay':>14} {'nngstr':>6} | nngstr/relay per round"
    )
    print(header)
    print("-" * len(header))
    with tempfile.TemporaryDirectory(prefix="bench-nngstream-") as tmp:
        for transport in args.transports.split(","):
            addr = Addresses(transport, Path(tmp))
            for proto in args.protos.split(","):
                for size in map(int, args.sizes.split(",")):
                    runs: dict[str, list[dict]] = {"direct": [], "relay": [], "nngstream": []}
                    for r in range(args.rounds):
                        for way in rotated(list(runs), r):
                            runs[way].append(
                                measure(way, proto, size, args.total_mib * MIB, addr, extra)
                            )
                    rate = {w: statistics.median(r["rate"] for r in rs) for w, rs in runs.items()}
                    rss = max(r["rss"] for r in runs["nngstream"])
                    cpu = {w: statistics.median(r["cpu"] for r in rs) for w, rs in runs.items()}
                    label = f"{size // MIB} MiB" if size >= MIB else f"{size // KIB} KiB"
                    print(
                        f"{proto:5} {transport:4} {label:>7} |"
                        f" {rate['direct'] / 1e9:7.2f} {rate['relay'] / 1e9:7.2f}"
                        f" {rate['nngstream'] / 1e9:7.2f} |"
                        f" {rate['nngstream'] / rate['relay']:12.2f}"
                        f" {rate['relay'] / rate['direct']:12.2f}"
                        f" {rate['nngstream'] / rate['direct']:13.2f} |"
                        f" {rss / MIB:6.0f} MiB |"
                        f" {cpu['relay']:14.2f} {cpu['nngstream']:6.2f} |"
                        f" {per_round(runs['nngstream'], runs['relay'])}",
                        flush=True,
                    )


def rotated(ways: list[str], r: int) -> list[str]:
    """The ways in the order of round `r`: each starts a round in turn, so none always
    runs right after another (the machine's state after a run is shared fairly)."""
    k = r % len(ways)
    return ways[k:] + ways[:k]


def per_round(a: list[dict], b: list[dict]) -> str:
    """Throughput ratio a/b of each round (same round = measured back to back)."""
    return " ".join(f"{x['rate'] / y['rate']:.2f}" for x, y in zip(a, b, strict=True))


def acked_table(args: argparse.Namespace, extra: list[str]) -> None:
    """`--delivery acked` (consumers' credit 2, and the default credit) against
    at-most-once: NNG over tcp, 1 MiB, same rounds."""
    from nngstream.acked import DEFAULT_CREDIT

    print("\nacked delivery vs at-most-once (NNG, tcp, 1 MiB; nngstream both ways)")
    modes = {"nng": "at-most-once", "acked2": "acked, credit 2",
             "acked": f"acked, credit {DEFAULT_CREDIT} (default)"}  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="bench-nngstream-") as tmp:
        addr = Addresses("tcp", Path(tmp))
        runs: dict[str, list[dict]] = {m: [] for m in modes}
        for r in range(args.rounds):
            for mode in rotated(list(runs), r):
                runs[mode].append(
                    measure("nngstream", mode, MIB, args.total_mib * MIB, addr, extra)
                )
    rate = {m: statistics.median(r["rate"] for r in rs) for m, rs in runs.items()}
    cpu = {m: statistics.median(r["cpu"] for r in rs) for m, rs in runs.items()}
    for mode, label in modes.items():
        print(
            f"{label:28} {rate[mode] / 1e9:5.2f} GB/s ({cpu[mode]:.2f} CPU s/GB)"
            f"  ratio vs at-most-once {rate[mode] / rate['nng']:.2f}"
            f"  (per round {per_round(runs[mode], runs['nng'])})",
            flush=True,
        )


def spill_table(args: argparse.Namespace) -> None:
    """The spill (1 MiB messages) against a bare sequential write/read of the same bytes,
    in the same directory (page cache included, no fsync in either)."""
    from nngstream.spill import Spill

    size, n = MIB, args.spill_mib
    data = memoryview(os.urandom(size))
    print(
        f"\nspill vs bare file, {n} x 1 MiB, in {tempfile.gettempdir()} (median of {args.rounds})"
    )
    rows: dict[str, list[float]] = {"spill write": [], "file write": [], "spill read": [],
                                    "file read": []}  # fmt: skip

    def new(k: int) -> tuple[bytearray, memoryview]:
        buf = bytearray(k)
        return buf, memoryview(buf)

    for _ in range(args.rounds):
        with tempfile.TemporaryDirectory(prefix="bench-spill-") as tmp:
            spill = Spill(Path(tmp), max_bytes=2 * n * size)
            t = time.perf_counter()
            for _ in range(n):
                spill.write(data)
            spill._writer.flush()  # noqa: SLF001 (bytes out of Python, as the file's close)
            rows["spill write"].append(n * size / (time.perf_counter() - t))
            t = time.perf_counter()
            for _ in range(n):
                spill.read(new)
            rows["spill read"].append(n * size / (time.perf_counter() - t))
            spill.close()
            path = Path(tmp) / "bare.bin"
            t = time.perf_counter()
            with path.open("wb") as f:
                for _ in range(n):
                    f.write(data)
            rows["file write"].append(n * size / (time.perf_counter() - t))
            buf = bytearray(size)
            t = time.perf_counter()
            with path.open("rb", buffering=0) as f:
                for _ in range(n):
                    f.readinto(buf)
                    buf = bytearray(size)  # a fresh message each time, as the spill does
            rows["file read"].append(n * size / (time.perf_counter() - t))
    med = {k: statistics.median(v) for k, v in rows.items()}
    for op in ("write", "read"):
        print(
            f"{op:5}: spill {med['spill ' + op] / 1e6:8.0f} MB/s, bare file"
            f" {med['file ' + op] / 1e6:8.0f} MB/s, spill / file"
            f" {med['spill ' + op] / med['file ' + op]:.2f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
