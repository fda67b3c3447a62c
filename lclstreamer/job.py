"""One rank's part of an lclstreamer job: set up, check with the other ranks, stream,
report. Returns the exit status; never lets a failed rank leave the others waiting."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import traceback
from pathlib import Path

from .config import load_config
from .engine import Engine
from .errors import LclstreamerError, PeerLost
from .mpi import Comm, world
from .protocols import StreamContext
from .stats import Progress, RankStats, as_dict, summarize

INTERRUPTED = 130


def report(message: str) -> None:
    """Print one error line on stderr."""
    print(f"lclstreamer: error: {message}", file=sys.stderr, flush=True)


def unexpected(exc: BaseException) -> str:
    """One line for an exception nobody anticipated (traceback with LCLSTREAMER_DEBUG=1)."""
    if os.environ.get("LCLSTREAMER_DEBUG") == "1":
        traceback.print_exception(exc)
    return f"unexpected {type(exc).__name__}: {exc}"


def collective_status(comm: Comm, error: LclstreamerError | None) -> int:
    """Every rank learns whether any rank failed to set up; rank 0 reports once.

    Returns 0 when all ranks are ready, else the exit status (2 for a configuration
    error, 1 otherwise), the same on every rank.
    """
    errors = comm.allgather(None if error is None else (type(error).__name__, str(error)))
    failed = [(rank, e) for rank, e in enumerate(errors) if e is not None]
    if not failed:
        return 0
    if comm.rank == 0:
        texts = {text for _, (_, text) in failed}
        if len(texts) == 1:
            ranks = ", ".join(str(rank) for rank, _ in failed)
            report(texts.pop() + ("" if len(failed) == comm.size else f" (rank {ranks})"))
        else:
            for rank, (_, text) in failed:
                report(f"rank {rank}: {text}")
    return 2 if any(kind == "ConfigError" for _, (kind, _) in failed) else 1


def _install_stop(stop: threading.Event) -> None:
    """First SIGTERM/SIGINT: finish cleanly; a second one: leave at once."""

    def handler(signum: int, frame: object) -> None:
        if stop.is_set():
            os._exit(INTERRUPTED)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, handler)


def run_job(config: Path, max_events: int | None, progress: bool) -> int:
    """Run this rank's share of the configured stream; the exit status of this rank."""
    comm = world()
    stop = threading.Event()
    engine = None
    error: LclstreamerError | None = None
    try:
        cfg = load_config(config)
        ctx = StreamContext(
            comm.rank, comm.size, cfg.source_identifier, max_events, stop.is_set, comm
        )
        engine = Engine.open(cfg, ctx)
    except LclstreamerError as exc:
        error = exc
    except Exception as exc:  # an unexpected failure must still reach the collective check
        error = LclstreamerError(unexpected(exc))
    status = collective_status(comm, error)
    if status or engine is None:
        if engine is not None:
            engine.close()
        return status or 1

    _install_stop(stop)
    bar = Progress(f"rank 0 of {comm.size}") if progress and comm.rank == 0 else None
    stats = RankStats()
    try:
        engine.stream(stats, on_batch=bar.update if bar else lambda s: None, stop=stop.is_set)
    except Exception as exc:
        if bar:
            bar.finish()
        text = str(exc) if isinstance(exc, LclstreamerError) else unexpected(exc)
        report(f"rank {comm.rank}: {text}" if comm.size > 1 else text)
        if not (isinstance(exc, PeerLost) or stop.is_set()):
            if comm.size > 1:
                comm.abort(1)  # ends every rank; does not return
            return 1
        # the buffer is gone or we were told to stop: the other ranks end too (their
        # sends time out, or they finish), and rank 0 still reports what was sent
        stats.error = text
    if bar:
        bar.update(stats, force=True)
        bar.finish()
    stats.interrupted = stop.is_set()
    print_summary(comm, stats)
    if stats.interrupted:
        return INTERRUPTED
    return 1 if stats.error else 0


def print_summary(comm: Comm, stats: RankStats) -> None:
    """Rank 0 prints the job summary; no rank returns before it is printed (a launcher may
    end the job as soon as one rank exits non-zero)."""
    everyone = comm.allgather(as_dict(stats))
    if comm.rank == 0:
        ranks = [RankStats(**s) for s in everyone]
        summary = summarize(ranks)
        errors = [f"rank {i}: {r.error}" for i, r in enumerate(ranks) if r.error]
        summary["complete"] = not errors and not any(r.interrupted for r in ranks)
        if any(r.interrupted for r in ranks):
            summary["interrupted"] = True
        if errors:
            summary["errors"] = errors
        print(json.dumps(summary), flush=True)
    comm.allgather(None)
