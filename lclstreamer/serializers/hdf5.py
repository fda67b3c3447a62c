"""The HDF5 serializer: one in-memory HDF5 file image per batch."""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Iterator
from typing import Any

import numpy as np

from ..errors import DataError
from ..memfile import MemoryFile
from ..models import HDF5Serializer as HDF5Config
from ..protocols import Batch, RunInfo, StreamContext
from .h5layout import FIRST_MARK, SEQ_MARK, ImageLayout, find_layout

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
"""Rows up to this many bytes are stacked and written in one call (the copy costs less
than the calls)."""


class HDF5Serializer:
    """Writes each batch as an HDF5 file image and yields a view of it (no copy).

    Compressed arrays get one chunk per event, written from each event's array without
    stacking (rows of at most SMALL_ROW bytes are stacked and written in one call);
    uncompressed arrays, per-event scalars and strings are stored contiguously. Root
    attributes: rank, ranks, seq, n_events, first_event, source_identifier.

    When nothing is compressed and every field is numeric, h5py writes only the first
    image of each batch size; the next ones are made from its layout (h5layout): the
    same bytes with each batch's rows and `seq`/`first_event` written in place, which is
    the file h5py would write, without HDF5's per-file and per-object cost. The layout
    is checked once by reading an image made from it back with h5py; if that fails,
    h5py writes every image.
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
        self._key: tuple[Any, ...] | None = None
        self._layout: ImageLayout | None = None
        self.in_place = 0
        """Images made from a layout (the rest h5py wrote)."""

    def _write(self, f: Any, batch: Batch, seq: int, first_event: int) -> None:
        attrs = f.attrs
        attrs["rank"] = self.ctx.rank
        attrs["ranks"] = self.ctx.size
        attrs["seq"] = seq
        attrs["n_events"] = batch.n_events
        attrs["first_event"] = first_event
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
                # compressed: one chunk per event; uncompressed: contiguous (no chunk index)
                chunks = (1, *col.shape) if self.filters else None
                d = f.create_dataset(
                    path, shape=(n, *col.shape), dtype=col.dtype, chunks=chunks, **self.filters
                )
                if col.dtype.itemsize * int(np.prod(col.shape)) <= SMALL_ROW:
                    d[...] = col.stack()  # one call; copying small rows costs less than a call
                else:
                    for i, row in enumerate(col.rows):
                        d[i] = row
            else:
                f.create_dataset(path, data=col.stack())

    def _layout_for(self, batch: Batch) -> ImageLayout | None:
        """The layout to make `batch`'s image from, learnt from it when its sizes are new;
        None when h5py must write it (compression, strings, a layout that failed)."""
        if self.filters:
            return None
        cols = batch.columns
        key = (batch.n_events, *((cols[name].shape, cols[name].dtype) for name in self.fields))
        if key != self._key:
            numeric = all(cols[name].dtype.kind != "O" for name in self.fields)
            self._layout = self._learn(batch) if numeric else None
            self._key = key
        return self._layout

    def _learn(self, batch: Batch) -> ImageLayout | None:
        """The layout of the image h5py writes for `batch`, if an image made from it reads
        back as `batch` (attributes and every dataset)."""
        h5py = self._h5py
        scratch = MemoryFile(_estimate(batch))
        n = batch.n_events
        with h5py.File(scratch, "w") as f:
            self._write(f, batch, SEQ_MARK, FIRST_MARK)
            places = {
                name: (
                    f[path].id.get_offset(),
                    batch.columns[name].dtype,
                    (n, *batch.columns[name].shape),
                )
                for name, path in self.fields.items()
            }
        layout = find_layout(scratch.view(), places)
        return layout if layout is not None and self._reads_back(layout, batch) else None

    def _reads_back(self, layout: ImageLayout, batch: Batch) -> bool:
        """Whether an image made from `layout` (with seq and first_event different from
        each other and from the batch's) reads back with h5py as the batch."""
        probe = dataclasses.replace(batch, seq=batch.seq + 7, first_event=batch.first_event + 11)
        layout.render(self.file, probe)
        try:
            with self._h5py.File(io.BytesIO(self.file.view()), "r") as f:
                attrs = f.attrs
                got = (int(attrs["seq"]), int(attrs["first_event"]), int(attrs["n_events"]))
                if got != (probe.seq, probe.first_event, probe.n_events):
                    return False
                for name, path in self.fields.items():
                    want = np.ascontiguousarray(batch.columns[name].stack())
                    if f[path][()].tobytes() != want.tobytes():
                        return False
        except (OSError, KeyError, ValueError, TypeError):  # h5py's ways to refuse an image
            return False
        return True

    def __call__(self, batches: Iterator[Batch]) -> Iterator[memoryview]:
        for batch in batches:
            layout = self._layout_for(batch)
            if layout is not None:
                layout.render(self.file, batch)
                self.in_place += 1
            else:
                self.file.reset()
                self.file.reserve(_estimate(batch))
                with self._h5py.File(self.file, "w") as f:
                    self._write(f, batch, batch.seq, batch.first_event)
            yield self.file.view()


def _estimate(batch: Batch) -> int:
    """A little more than the bytes of a batch's data: the image size to reserve."""
    total = 1 << 16
    for col in batch.columns.values():
        if col.dtype.kind != "O":
            total += col.dtype.itemsize * int(np.prod(col.shape, dtype=np.int64)) * batch.n_events
    return total + total // 64
