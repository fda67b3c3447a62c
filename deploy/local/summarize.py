"""Summarize HDF5 batch messages received from a stream (the demo's consumer side).

Usage: python summarize.py DIR [--expect N]

Every *.msg file under DIR (consumer subfolders too) is one message: an in-memory HDF5
file holding one batch, with
root attributes rank, seq, n_events, first_event. Prints what arrived (batches, events,
bytes, per producer rank, dataset shapes and compression) and checks that every event
index arrived exactly once. Exits 1 on duplicates, or on missing events with --expect.
"""

from __future__ import annotations

import argparse
import io
import sys
from collections import Counter
from pathlib import Path

import h5py
import hdf5plugin  # registers the bitshuffle/LZ4/zstd filters for reading
import numpy as np


def datasets(f: h5py.File) -> dict[str, h5py.Dataset]:
    out: dict[str, h5py.Dataset] = {}

    def visit(name: str, obj: object) -> None:  # returning non-None would stop the walk
        if isinstance(obj, h5py.Dataset):
            out[name] = obj

    f.visititems(visit)
    return out


FILTER_NAMES = {fid: name for name, fid in hdf5plugin.FILTERS.items()}


def filters(ds: h5py.Dataset) -> str:
    """Names of a dataset's filters (plugin ids resolved through hdf5plugin)."""
    names = []
    for key in ds._filters:  # h5py's filter table: name or numeric id -> options
        names.append(FILTER_NAMES.get(int(key), key) if key.isdigit() else key)
    return "+".join(names) or "none"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("directory", type=Path)
    ap.add_argument("--expect", type=int, default=None, help="number of events expected")
    args = ap.parse_args()
    files = sorted(args.directory.rglob("*.msg"))
    if not files:
        print(f"no messages in {args.directory}", file=sys.stderr)
        return 1
    per_rank: Counter[int] = Counter()
    indexes: list[np.ndarray] = []
    total_bytes = 0
    raw_bytes = 0
    shapes: dict[str, tuple] = {}
    for path in files:
        data = path.read_bytes()
        total_bytes += len(data)
        with h5py.File(io.BytesIO(data), "r") as f:
            per_rank[int(f.attrs["rank"])] += int(f.attrs["n_events"])
            for name, ds in datasets(f).items():
                shapes.setdefault(name, (ds.shape[1:], str(ds.dtype), filters(ds)))
                raw_bytes += ds.size * ds.dtype.itemsize
                if name.endswith("event_index"):
                    indexes.append(ds[()])
    events = sum(per_rank.values())
    print(f"received {len(files)} batches, {events} events, {total_bytes / 1e6:.1f} MB")
    ranks = ", ".join(f"{r}: {n}" for r, n in sorted(per_rank.items()))
    print(f"events per producer rank: {ranks}")
    print(f"array bytes {raw_bytes / 1e6:.1f} MB: {raw_bytes / total_bytes:.1f}x the bytes sent")
    for name, (shape, dtype, comp) in sorted(shapes.items()):
        print(f"  /{name}: per event {shape} {dtype}, compression {comp}")
    if not indexes:
        print("no event_index dataset: cannot check exactly-once delivery")
        return 0
    seen = np.concatenate(indexes)
    dupes = int(seen.size - np.unique(seen).size)
    print(f"distinct event indexes: {np.unique(seen).size}, duplicates: {dupes}")
    if args.expect is not None:
        print(f"expected {args.expect} events (minus skipped incomplete ones): got {events}")
        if events > args.expect:
            return 1
    return 1 if dupes else 0


if __name__ == "__main__":
    sys.exit(main())
