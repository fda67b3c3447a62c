"""The `hdf5` source's live mode: files streamed as they are completed in a directory.

Rank 0 scans the directory every `poll_interval` seconds and decides which new files are
complete (they open, and their size and modification time have not changed for `settle`
seconds), in file-name order; every rank learns the decision in the same collective
round, so all ranks number events identically (file offsets accumulate in that order)
and each takes rows r, r + N, ... as in the static mode. The run ends, for all ranks in
the same round, on the end marker, the idle timeout, the file count, `--max-events`, or
a stop request on any rank. Files that appear with a name sorting before one already
streamed are not streamed; they are counted (`hdf5_watch.late_files`) and logged.
"""

from __future__ import annotations

import contextlib
import glob
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import SourceError
from ..models import HDF5EventSource
from ..partition import limit
from ..protocols import RunInfo, StreamContext
from .hdf5 import HDF5Event, HDF5Source, _File, dataset_paths, file_events


@dataclass
class Decision:
    """Rank 0's word for one round: files to stream now (path, rows) and whether to end."""

    files: list[tuple[str, int]] = field(default_factory=list)
    end: str | None = None


@dataclass
class Watcher:
    """Rank 0's view of the directory (pure bookkeeping; the scan is passed in)."""

    settle: float
    max_files: int | None
    idle_timeout: float | None
    started: float
    seen: dict[str, tuple[int, float, float]] = field(default_factory=dict)  # size, mtime, since
    taken: list[str] = field(default_factory=list)
    late: set[str] = field(default_factory=set)
    last_new: float = 0.0

    def step(self, now: float, scan: dict[str, tuple[int, float]]) -> list[str]:
        """The files complete at `now` to take next, in name order (stops at the first
        file that is still changing, so the order never depends on timing)."""
        last = self.taken[-1] if self.taken else ""
        for path, (size, mtime) in scan.items():  # every file's settle clock runs
            before = self.seen.get(path)
            if before is None or before[:2] != (size, mtime):
                self.seen[path] = (size, mtime, now)
        ready: list[str] = []
        for path in sorted(scan):
            if path in self.taken or path in self.late:
                continue
            if path <= last:
                self.late.add(path)
                print(
                    f"lclstreamer: hdf5 watch: {path} appeared after {last} was streamed;"
                    " it is not streamed (file names must grow)",
                    file=sys.stderr,
                    flush=True,
                )
                continue
            if now - self.seen[path][2] < self.settle:
                break  # still changing (or just seen): later files wait, keeping the order
            ready.append(path)
            if self.max_files is not None and len(self.taken) + len(ready) >= self.max_files:
                break
        return ready

    def pending(self, scan: dict[str, tuple[int, float]]) -> bool:
        """Files seen but neither taken nor late: the run must not end before them."""
        return any(p not in self.taken and p not in self.late for p in scan)

    def ending(self, now: float, marker: bool, pending: bool) -> str | None:
        """Why the run ends now (None: it goes on)."""
        if self.max_files is not None and len(self.taken) >= self.max_files:
            return f"{self.max_files} files streamed"
        if marker and not pending:
            return "end marker found"
        quiet_since = self.last_new or self.started
        if self.idle_timeout is not None and now - quiet_since >= self.idle_timeout:
            return f"no new file for {self.idle_timeout} s"
        return None


class HDF5WatchSource:
    """Events of files completed in a watched directory (see the module docstring)."""

    def __init__(self, cfg: HDF5EventSource, ctx: StreamContext) -> None:
        import h5py
        import hdf5plugin  # noqa: F401  (registers the compression filters for reading)

        assert cfg.watch is not None and isinstance(cfg.files, str)
        self._h5py = h5py
        self.cfg = cfg
        self.ctx = ctx
        self.watch = cfg.watch
        self.pattern = cfg.files
        directory = Path(os.path.dirname(self.pattern) or ".")
        if not directory.is_dir():
            raise SourceError(f"hdf5 watch: directory {directory} does not exist")
        self.marker = None
        if self.watch.end_marker is not None:
            self.marker = directory / self.watch.end_marker
        self.paths = dataset_paths(cfg)
        self._files: list[_File] = []
        self._rounds_open = False
        self.late_files = 0
        self.streamed_files = 0

    def run_info(self) -> RunInfo:
        return RunInfo(self.cfg.experiment, self.cfg.run)

    def counters(self) -> dict[str, int]:
        # rank 0 decides, so only its counts are the run's (other ranks report 0)
        if self.ctx.rank != 0:
            return {}
        return {"hdf5_watch.files": self.streamed_files, "hdf5_watch.late_files": self.late_files}

    def _scan(self) -> dict[str, tuple[int, float]]:
        out = {}
        for p in glob.glob(self.pattern):
            try:
                st = os.stat(p)
            except OSError:
                continue  # vanished meanwhile
            if os.path.isfile(p):
                out[p] = (st.st_size, st.st_mtime)
        return out

    def _length(self, path: str) -> int | None:
        """Rows of a complete file, or None if it does not open yet."""
        try:
            f = HDF5Source._open(self._h5py, Path(path), self.paths)
        except SourceError:
            return None
        f.handle.close()
        return f.length

    def _decide(self, watcher: Watcher, total: int, cap: int) -> Decision:
        now = time.monotonic()
        marker = self.marker is not None and self.marker.exists()
        scan = self._scan()
        ready = watcher.step(now, scan)
        decision = Decision()
        for path in ready:
            rows = self._length(path)
            if rows is None:
                break  # not readable yet: try again next round, keeping the order
            decision.files.append((path, rows))
            watcher.taken.append(path)
            watcher.last_new = now
        self.late_files = len(watcher.late)
        if total + sum(n for _, n in decision.files) >= cap:
            decision.end = "--max-events reached"
        else:
            decision.end = watcher.ending(now, marker, watcher.pending(scan))
        return decision

    def _round(self, decision: Decision | None, stopping: bool) -> Decision:
        """One collective round: everyone gets rank 0's decision; a stop anywhere ends."""
        got = self.ctx.allgather((decision, stopping))
        final = got[0][0]
        assert isinstance(final, Decision)
        if any(s for _, s in got) and final.end is None:
            final.end = "stop requested"
        return final

    def events(self) -> Iterator[HDF5Event]:
        w = self.watch
        cap = limit(1 << 62, self.ctx.max_events)
        watcher = Watcher(w.settle, w.max_files, w.idle_timeout, time.monotonic())
        total = 0
        self._rounds_open = True
        try:
            while True:
                mine = self._decide(watcher, total, cap) if self.ctx.rank == 0 else None
                decision = self._round(mine, self.ctx.stop())
                for path, rows in decision.files:
                    f = self._open(path, rows)
                    yield from file_events(f, total, cap, self.ctx, self.cfg.read_block)
                    total += rows
                    self.streamed_files += 1
                if decision.end is not None:
                    self._rounds_open = False
                    if self.ctx.rank == 0:
                        print(
                            f"lclstreamer: hdf5 watch: run ends ({decision.end}):"
                            f" {self.streamed_files} files, {min(total, cap)} events",
                            file=sys.stderr,
                            flush=True,
                        )
                    return
                if not decision.files:
                    time.sleep(w.poll_interval)
        finally:
            if self._rounds_open:  # left early (stop, error elsewhere): end the rounds
                self._rounds_open = False
                self._leave()

    def _leave(self) -> None:
        """Tell the others this rank leaves: one last round that ends the run for all."""
        with contextlib.suppress(Exception):  # the job is failing anyway; abort ends the rest
            self._round(Decision(end="a rank left") if self.ctx.rank == 0 else None, True)

    def _open(self, path: str, rows: int) -> _File:
        f = HDF5Source._open(self._h5py, Path(path), self.paths)
        self._files.append(f)
        if f.length != rows:
            raise SourceError(f"hdf5 watch: {path} changed after it was taken ({rows} rows)")
        return f

    def close(self) -> None:
        if self._rounds_open:  # the engine stopped reading us early (stop request)
            self._rounds_open = False
            self._leave()
        for f in self._files:
            f.handle.close()
        self._files = []


def hdf5_source(cfg: HDF5EventSource, ctx: StreamContext) -> Any:
    """The `hdf5` event source: static files, or a watched directory with `watch`."""
    return HDF5WatchSource(cfg, ctx) if cfg.watch is not None else HDF5Source(cfg, ctx)
