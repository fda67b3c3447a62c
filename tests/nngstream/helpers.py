"""Helpers for nngstream tests: start buffers and peers, read their results."""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

from tests.support.procs import Proc, ProcessSupervisor
from tests.support.waiting import wait_until  # noqa: F401 (the tests import it from here)

PEERS = str(Path(__file__).with_name("peers.py"))
ROOT = Path(__file__).resolve().parents[2]


def start_buffer(
    spawn: ProcessSupervisor,
    in_port: int,
    out_port: int,
    *extra: str,
    name: str = "buffer",
    wait: bool = True,
) -> Proc:
    """`nngstream tcp://127.0.0.1:IN tcp://127.0.0.1:OUT EXTRA...`, listening on both."""
    proc = spawn(
        ["nngstream", f"tcp://127.0.0.1:{in_port}", f"tcp://127.0.0.1:{out_port}", *extra],
        name=name,
        cwd=ROOT,
    )
    if wait:
        proc.wait_port(in_port)
        proc.wait_port(out_port)
    return proc


def producer(
    spawn: ProcessSupervisor, url: str, pid: int, count: int, *extra: str, proto: str = "nng"
) -> Proc:
    return spawn(
        [sys.executable, PEERS, "produce", url, "--id", str(pid), "--count", str(count),
         "--proto", proto, *extra],
        name=f"producer{pid}",
        cwd=ROOT,
    )  # fmt: skip


def consumer(
    spawn: ProcessSupervisor, url: str, out: Path, *extra: str, proto: str = "nng", name: str
) -> Proc:
    return spawn(
        [sys.executable, PEERS, "consume", url, "--out", str(out), "--proto", proto, *extra],
        name=name,
        cwd=ROOT,
    )


def metrics_lines(proc: Proc) -> list[dict]:
    out = []
    for line in proc.stdout().splitlines():
        line = line.strip()
        if line.startswith("{"):
            out.append(json.loads(line))
    return out


def final_metrics(proc: Proc) -> dict:
    lines = metrics_lines(proc)
    assert lines, f"no metrics from {proc.name}; stderr:\n{proc.stderr()}"
    return lines[-1]


def wait_exit(proc: Proc, timeout: float) -> int:
    """Exit code of `proc`, with its output in the assertion message if it hangs."""
    try:
        return proc.wait(timeout)
    except Exception:
        raise AssertionError(
            f"{proc.name} still running after {timeout}s\nstdout tail:\n"
            f"{proc.stdout()[-2000:]}\nstderr tail:\n{proc.stderr()[-2000:]}"
        ) from None


def last_count(proc: Proc, word: str) -> int:
    """The number in the last `WORD N` progress line of a peer (0 if none yet)."""
    n = 0
    for line in proc.stdout().splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == word and parts[1].isdigit():
            n = int(parts[1])
    return n


def load_received(path: Path) -> dict:
    return json.loads(path.read_text())


def check_delivery(results: list[dict], expected: dict[int, int]) -> None:
    """Every (producer, seq) for seq < expected[producer] arrived exactly once overall,
    and each consumer saw each producer's messages in increasing order."""
    seen: Counter[tuple[int, int]] = Counter()
    for r in results:
        last: dict[int, int] = {}
        for p, s in r["received"]:
            assert s > last.get(p, -1), f"producer {p}: seq {s} after {last[p]} (order broken)"
            last[p] = s
            seen[(p, s)] += 1
    dupes = [k for k, n in seen.items() if n > 1]
    assert not dupes, f"{len(dupes)} messages delivered twice, e.g. {dupes[:5]}"
    want = {(p, s) for p, n in expected.items() for s in range(n)}
    missing = want - set(seen)
    extra = set(seen) - want
    assert not missing, f"{len(missing)} messages lost, e.g. {sorted(missing)[:5]}"
    assert not extra, f"unexpected messages {sorted(extra)[:5]}"
