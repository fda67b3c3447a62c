"""The HDF5 serializer: one in-memory HDF5 file image per batch."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from ..errors import DataError
from ..memfile import MemoryFile
from ..models import HDF5Serializer as HDF5Config
from ..protocols import Batch, RunInfo, StreamContext

#: the dtypes zfp compresses (hdf5plugin's Zfp refuses others at dataset creation).
ZFP_DTYPES = frozenset({"float32", "float64", "int32", "int64"})


def filter_options(
    compression: str, level: int | None, zfp_mode: str = "reversible"
) -> dict[str, Any]:
    """h5py create_dataset keyword arguments for a compression choice."""
    if compression == "none":
        return {}
    if compression in ("gzip", "gzip_with_shuffle"):
        opts: dict[str, Any] = {
            "compression": "gzip",
            "compression_opts": 4 if level is None else level,
        }
        if compression == "gzip_with_shuffle":
            opts["shuffle"] = True
        return opts
    import hdf5plugin

    if compression == "bitshuffle_lz4":
        return dict(hdf5plugin.Bitshuffle(cname="lz4"))
    if compression == "bitshuffle_zstd":
        return dict(hdf5plugin.Bitshuffle(cname="zstd", clevel=3 if level is None else level))
    if compression == "zfp":
        if zfp_mode == "reversible":
            return dict(hdf5plugin.Zfp(reversible=True))
        if level is None:
            raise ValueError(f"zfp {zfp_mode} needs a compression_level")
        if zfp_mode == "rate":
            return dict(hdf5plugin.Zfp(rate=float(level)))
        if zfp_mode == "precision":
            return dict(hdf5plugin.Zfp(precision=level))
        if zfp_mode == "accuracy":
            return dict(hdf5plugin.Zfp(accuracy=2.0**-level))
        raise ValueError(f"unknown zfp mode {zfp_mode!r}")
    raise ValueError(f"unknown compression {compression!r}")


SMALL_ROW = 1 << 16
"""Rows up to this many bytes are stacked and written in one call (same chunks, same file)."""


class HDF5Serializer:
    """Writes each batch as an HDF5 file image and yields a view of it (no copy).

    Arrays with per-event dimensions get one chunk per event and the configured
    compression, written from each event's array without stacking (rows of at most
    SMALL_ROW bytes are stacked and written in one call: the copy costs less than the
    calls); per-event scalars and strings are stored contiguously. Root attributes:
    rank, ranks, seq, n_events, first_event, source_identifier.
    """

    suffix = ".h5"

    def __init__(self, cfg: HDF5Config, ctx: StreamContext, run: RunInfo) -> None:
        import h5py
        import hdf5plugin  # noqa: F401  (registers the bitshuffle filters)

        self._h5py = h5py
        self.fields = dict(cfg.fields)
        self.filters = filter_options(cfg.compression, cfg.compression_level, cfg.zfp_mode)
        self.zfp = cfg.compression == "zfp"
        self.ctx = ctx
        self.file = MemoryFile()
        self._str = h5py.string_dtype()

    def _write(self, f: Any, batch: Batch) -> None:
        attrs = f.attrs
        attrs["rank"] = self.ctx.rank
        attrs["ranks"] = self.ctx.size
        attrs["seq"] = batch.seq
        attrs["n_events"] = batch.n_events
        attrs["first_event"] = batch.first_event
        attrs["source_identifier"] = self.ctx.source_identifier
        for name, path in self.fields.items():
            col = batch.columns[name]
            n = batch.n_events
            if col.dtype.kind == "O":
                f.create_dataset(path, data=col.stack(), dtype=self._str)
            elif col.shape:
                if self.zfp and col.dtype.name not in ZFP_DTYPES:
                    raise DataError(
                        f"data_serializer.fields.{name}: zfp compresses only "
                        f"{', '.join(sorted(ZFP_DTYPES))} arrays, not {col.dtype.name} "
                        f"(cast it with the data source's dtype, or choose another compression)"
                    )
                # one chunk per event, each written straight from the event's own array
                d = f.create_dataset(
                    path,
                    shape=(n, *col.shape),
                    dtype=col.dtype,
                    chunks=(1, *col.shape),
                    **self.filters,
                )
                if col.dtype.itemsize * int(np.prod(col.shape)) <= SMALL_ROW:
                    d[...] = col.stack()  # one call; copying small rows costs less than a call
                else:
                    for i, row in enumerate(col.rows):
                        d[i] = row
            else:
                f.create_dataset(path, data=col.stack())

    def __call__(self, batches: Iterator[Batch]) -> Iterator[memoryview]:
        for batch in batches:
            self.file.reset()
            self.file.reserve(_estimate(batch))
            with self._h5py.File(self.file, "w") as f:
                self._write(f, batch)
            yield self.file.view()


def _estimate(batch: Batch) -> int:
    """A little more than the bytes of a batch's data: the image size to reserve."""
    total = 1 << 16
    for col in batch.columns.values():
        if col.dtype.kind != "O":
            total += col.dtype.itemsize * int(np.prod(col.shape, dtype=np.int64)) * batch.n_events
    return total + total // 64
