"""The HDF5 event source: rows of datasets in one or many files (e.g. CXI)."""

from __future__ import annotations

import glob
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import SourceError
from ..models import HDF5EventSource
from ..partition import blocks, limit
from ..protocols import RunInfo, StreamContext


def expand_files(patterns: str | list[str]) -> list[Path]:
    """Files matching the patterns, sorted and without duplicates; error if a pattern matches
    nothing."""
    out: list[Path] = []
    seen: set[Path] = set()
    for pattern in [patterns] if isinstance(patterns, str) else patterns:
        matches = sorted(glob.glob(pattern, recursive=True))
        if not matches:
            what = "matches" if glob.has_magic(pattern) else "exists"
            raise SourceError(f"hdf5 event source: no file {what} for {pattern!r}")
        for m in matches:
            p = Path(m)
            if p not in seen and p.is_file():
                seen.add(p)
                out.append(p)
    return out


@dataclass
class _File:
    path: Path
    handle: Any  # h5py.File
    length: int
    datasets: dict[str, Any]  # name -> h5py.Dataset (absent names are missing in this file)


class HDF5Event:
    """One row of the datasets of one file; values are views of the block read."""

    __slots__ = ("index", "_block", "_row")

    def __init__(self, index: int, block: dict[str, np.ndarray], row: int) -> None:
        self.index = index
        self._block = block
        self._row = row

    def _get(self, name: str) -> Any | None:
        arr = self._block.get(name)
        return None if arr is None else arr[self._row]

    def detector(self, name: str, kind: str) -> np.ndarray | None:
        return self._get(name)

    def scalar(self, name: str) -> Any | None:
        return self._get(name)

    def timestamp(self) -> int | None:
        sec = self._block.get("\0sec")
        if sec is None:
            return None
        s = sec[self._row]
        nsec = self._block.get("\0nsec")
        if nsec is not None:
            return int(s) << 32 | int(nsec[self._row])
        whole = int(np.floor(s))
        return whole << 32 | round((float(s) - whole) * 1e9)

    def photon_energy_ev(self) -> float | None:
        e = self._block.get("\0energy")
        return None if e is None else float(e[self._row])

    def event_codes(self) -> None:
        return None


def file_events(
    f: _File, offset: int, total: int, ctx: StreamContext, block: int
) -> Iterator[HDF5Event]:
    """This rank's events of file `f`, whose first row is event `offset`, up to event
    `total` (exclusive); rows are read as strided slices of `block` rows."""
    rank, size = ctx.rank, ctx.size
    end = min(f.length, total - offset)
    first = (rank - offset) % size  # first row of this file that is ours
    for rows in blocks(range(first, max(end, 0), size), block):
        sel = slice(rows.start, rows[-1] + 1, size)
        try:
            data = {name: ds[sel] for name, ds in f.datasets.items()}
        except OSError as exc:
            raise SourceError(f"{f.path}: cannot read rows {sel}: {exc}") from None
        for k, row in enumerate(rows):
            yield HDF5Event(offset + row, data, k)


def dataset_paths(cfg: HDF5EventSource) -> dict[str, str]:
    """Name -> dataset path of everything the source reads (metadata under hidden names)."""
    paths = {**cfg.datasets}
    if cfg.photon_energy_ev:
        paths["\0energy"] = cfg.photon_energy_ev
    if cfg.timestamp:
        paths["\0sec"] = cfg.timestamp.seconds
        if cfg.timestamp.nanoseconds:
            paths["\0nsec"] = cfg.timestamp.nanoseconds
    return paths


class HDF5Source:
    """This rank's rows (round-robin over the concatenation of all files), read by slices."""

    def __init__(self, cfg: HDF5EventSource, ctx: StreamContext) -> None:
        import h5py
        import hdf5plugin  # noqa: F401  (registers the compression filters for reading)

        self.cfg = cfg
        self.ctx = ctx
        paths = dataset_paths(cfg)
        self._files: list[_File] = []
        try:
            for path in expand_files(cfg.files):
                self._files.append(self._open(h5py, path, paths))
        except Exception:
            self.close()
            raise
        for name, dpath in paths.items():
            if not any(name in f.datasets for f in self._files):
                label = name if not name.startswith("\0") else dpath
                raise SourceError(f"hdf5 event source: no file has dataset {dpath} ({label})")

    @staticmethod
    def _open(h5py: Any, path: Path, paths: dict[str, str]) -> _File:
        try:
            handle = h5py.File(path, "r")
        except OSError as exc:
            raise SourceError(f"hdf5 event source: cannot open {path}: {exc}") from None
        found: dict[str, Any] = {}
        lengths: dict[str, int] = {}
        for name, dpath in paths.items():
            obj = handle.get(dpath)
            if obj is None:
                continue
            if not isinstance(obj, h5py.Dataset) or obj.ndim == 0:
                raise SourceError(f"{path}: {dpath} is not a dataset with an event axis")
            found[name] = obj
            lengths[dpath] = obj.shape[0]
        if len(set(lengths.values())) > 1:
            sizes = ", ".join(f"{p}: {n}" for p, n in lengths.items())
            raise SourceError(f"{path}: datasets disagree on the number of events ({sizes})")
        return _File(path, handle, next(iter(lengths.values()), 0), found)

    def run_info(self) -> RunInfo:
        return RunInfo(self.cfg.experiment, self.cfg.run)

    def events(self) -> Iterator[HDF5Event]:
        total = limit(sum(f.length for f in self._files), self.ctx.max_events)
        offset = 0
        for f in self._files:
            yield from file_events(f, offset, total, self.ctx, self.cfg.read_block)
            offset += f.length
            if offset >= total:
                break

    def close(self) -> None:
        for f in self._files:
            f.handle.close()
        self._files = []
