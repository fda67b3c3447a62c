"""The electron counts written in stempy's sparse HDF5 format (version 3), which
`stempy.io.load_electron_counts` reads, plus the stream's accounting."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

STEMPY_VERSION = 3


def write_counts(
    path: Path,
    events: list[np.ndarray],
    scan_shape: tuple[int, int],
    frame_shape: tuple[int, int],
    status: np.ndarray,
    counted_by: np.ndarray,
    thresholds: np.ndarray,
    accounting: dict[str, int | float | str],
) -> None:
    """`events[i]`: flat pixel indices of frame i (scan position i, x fastest);
    `status[i]`: 0 never seen, 1 complete, 2 incomplete (sectors missing);
    `counted_by[i]`: the rank that counted it (-1: none); `thresholds[rank]`: that rank's
    (background, X-ray) thresholds."""
    nx, ny = scan_shape
    tmp = path.with_name(path.name + ".part")
    with h5py.File(tmp, "w") as f:
        f.attrs["version"] = STEMPY_VERSION
        g = f.create_group("electron_events")
        pos = g.create_dataset("scan_positions", data=np.arange(nx * ny, dtype=np.uint32))
        pos.attrs["Nx"], pos.attrs["Ny"] = nx, ny
        frames = g.create_dataset("frames", (nx * ny,), dtype=h5py.vlen_dtype(np.dtype(np.uint32)))
        frames.attrs["Nx"], frames.attrs["Ny"] = frame_shape[0], frame_shape[1]
        data = np.empty(nx * ny, dtype=object)
        for i, e in enumerate(events):
            data[i] = e
        frames[...] = data
        acc = f.create_group("stream_accounting")
        acc.create_dataset("frame_status", data=status.astype(np.uint8))
        acc.create_dataset("counted_by", data=counted_by.astype(np.int32))
        acc.create_dataset("thresholds", data=thresholds.astype(np.float64))
        for k, v in accounting.items():
            acc.attrs[k] = v
    tmp.replace(path)
