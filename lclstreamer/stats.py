"""Run statistics: per-rank counters, the job summary, and progress lines."""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any, TextIO


@dataclass
class RankStats:
    """What one rank did."""

    events: int = 0
    skipped: int = 0
    batches: int = 0
    bytes: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    counters: dict[str, int] = field(default_factory=dict)
    """Layer counters (pipeline drops, bytes per stage, ...), summed over ranks."""
    interrupted: bool = False  # stopped by SIGTERM/SIGINT before its share was done
    error: str = ""  # why the rank stopped early (its one-line error), else ""


def summarize(ranks: list[RankStats]) -> dict[str, Any]:
    """The job summary: sums over ranks, wall time of the slowest rank, and rates.

    `cpu_seconds` (CPU time of all ranks while streaming) shows, on a shared machine,
    whether a rate is limited by the work itself or by the cores available.
    """
    seconds = max((r.seconds for r in ranks), default=0.0)
    events = sum(r.events for r in ranks)
    nbytes = sum(r.bytes for r in ranks)
    counters: dict[str, int] = {}
    for r in ranks:
        for key, value in r.counters.items():
            counters[key] = counters.get(key, 0) + value
    return {
        "events": events,
        "skipped": sum(r.skipped for r in ranks),
        "batches": sum(r.batches for r in ranks),
        "bytes": nbytes,
        "seconds": round(seconds, 3),
        "events/s": round(events / seconds, 1) if seconds > 0 else 0.0,
        "MB/s": round(nbytes / 1e6 / seconds, 1) if seconds > 0 else 0.0,
        "ranks": len(ranks),
        "cpu_seconds": round(sum(r.cpu_seconds for r in ranks), 3),
        **({"counters": counters} if counters else {}),
    }


def as_dict(stats: RankStats) -> dict[str, Any]:
    return asdict(stats)


class Progress:
    """Rate lines for a terminal (rewritten in place) or a log (one line every few seconds)."""

    def __init__(self, label: str, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.interval = 0.5 if self.tty else 5.0
        self.label = label
        self.start = time.monotonic()
        self.last = self.start
        self.active = False

    def update(self, stats: RankStats, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last < self.interval:
            return
        self.last = now
        dt = max(now - self.start, 1e-9)
        line = (
            f"{self.label}: {stats.events} events, {stats.skipped} skipped, {stats.batches}"
            f" batches, {stats.events / dt:.1f} events/s, {stats.bytes / 1e6 / dt:.1f} MB/s"
        )
        if self.tty:
            self.stream.write("\r" + line + "\x1b[K")
            self.active = True
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def finish(self) -> None:
        if self.tty and self.active:
            self.stream.write("\n")
            self.stream.flush()
