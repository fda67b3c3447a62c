"""Receiving a transfer: M consumers over the buffers' URLs (consumer i dials URL i mod K),
each stopping at its buffer's end message, then accounting for every event from the HDF5
batches' attributes (rank, seq, n_events)."""

from __future__ import annotations

import io
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from nngstream.errors import NngstreamError
from nngstream.models import Delivery, Proto
from nngstream.tools import Report, pull


@dataclass
class Consumer:
    url: str
    out_dir: Path
    report: Report = field(default_factory=Report)
    error: str = ""
    done: bool = False


@dataclass
class Accounting:
    """What the saved batches say about the events."""

    messages: int = 0
    events: int | None = 0  # None: not HDF5 batches with rank/seq/n_events
    duplicates: int = 0  # (rank, seq) received more than once
    gaps: int = 0  # (rank, seq) missing below the highest seen per rank


def receive(
    urls: list[str],
    out: Path,
    consumers: int,
    proto: Proto,
    delivery: Delivery,
    stop: threading.Event,
    on_progress=None,
) -> list[Consumer]:
    """Run `consumers` pulls (threads) until each saw its end of stream or broke."""
    cons = [
        Consumer(urls[i % len(urls)], out / f"consumer-{i:02d}")
        for i in range(max(consumers, len(urls)))
    ]

    def run(c: Consumer) -> None:
        def progress(r: Report) -> None:
            c.report = r

        try:
            c.report = pull(
                c.url, proto, out_dir=c.out_dir, delivery=delivery, dial_timeout=60,
                progress=progress, progress_interval=0.5,
            )  # fmt: skip
        except (NngstreamError, OSError, ValueError) as exc:
            c.error = str(exc)
        finally:
            c.done = True

    threads = [threading.Thread(target=run, args=(c,), daemon=True) for c in cons]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        if on_progress is not None:
            on_progress(cons)
        stop.wait(1.0)
        for t in threads:
            t.join(0.01)
    return cons


def batch_attrs(path: Path) -> tuple[int, int, int]:
    """(rank, seq, n_events) of one saved HDF5 batch; OSError/KeyError if it has none."""
    import h5py

    with h5py.File(io.BytesIO(path.read_bytes()), "r") as f:
        rank, seq, n = (int(f.attrs[k]) for k in ("rank", "seq", "n_events"))
    return rank, seq, n


class EventCounter:
    """Events received so far, reading each new batch once (for percent progress)."""

    def __init__(self, dirs: list[Path]) -> None:
        self.dirs = dirs
        self.counted: set[Path] = set()
        self.seen: set[tuple[int, int]] = set()
        self.events = 0

    def update(self) -> int:
        for d in self.dirs:
            for path in d.glob("*.msg") if d.is_dir() else ():
                if path in self.counted:
                    continue
                try:
                    rank, seq, n = batch_attrs(path)
                except (OSError, KeyError):
                    continue  # still being written, or not an HDF5 batch: next time
                self.counted.add(path)
                if (rank, seq) not in self.seen:
                    self.seen.add((rank, seq))
                    self.events += n
        return self.events


def percent(events: int, known: int | None) -> str:
    """Progress suffix ", 42% of N events" for a known event count N; "" if unknown."""
    if not known:
        return ""
    return f", {min(100.0, 100.0 * events / known):.0f}% of {known} events"


def account(dirs: list[Path]) -> Accounting:
    """Count messages, events, duplicate and missing batches across every consumer."""
    acc = Accounting()
    seen: dict[int, set[int]] = {}
    for d in dirs:
        for path in sorted(d.glob("*.msg")):
            acc.messages += 1
            if acc.events is None:
                continue
            try:
                rank, seq, n = batch_attrs(path)
            except (OSError, KeyError):
                acc.events = None
                continue
            if seq in seen.setdefault(rank, set()):
                acc.duplicates += 1
                continue
            seen[rank].add(seq)
            acc.events += n
    for seqs in seen.values():
        acc.gaps += max(seqs) + 1 - len(seqs)
    return acc


def rate(cons: list[Consumer], t0: float) -> tuple[int, int, float]:
    msgs = sum(c.report.messages for c in cons)
    nbytes = sum(c.report.bytes for c in cons)
    return msgs, nbytes, time.monotonic() - t0
