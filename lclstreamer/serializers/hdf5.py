"""The HDF5 serializer: one in-memory HDF5 file image per batch."""

from __future__ import annotations

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
    the file h5py would write, without HDF5's per-file and per-object cost. Each layout
    is checked when it is taken, on the image it was taken from (its fixed bytes, the rows where it
    puts them, the attributes read back by h5py); if that fails, h5py writes every
    image.
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
        """Images made from a layout (h5py wrote the others)."""

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

    def _layout_key(self, batch: Batch) -> tuple[Any, ...] | None:
        """What an image's layout depends on (batch size, fields' shapes and dtypes);
        None when the batch has no fixed layout (compression, strings)."""
        if self.filters:
            return None
        cols = [batch.columns[name] for name in self.fields]
        if any(col.dtype.kind == "O" for col in cols):
            return None
        return (batch.n_events, *((col.shape, col.dtype) for col in cols))

    def _by_h5py(self, batch: Batch, seq: int, first_event: int) -> None:
        """Write the image of `batch` into the memory file with h5py."""
        self.file.reset()
        self.file.reserve(_estimate(batch))
        with self._h5py.File(self.file, "w") as f:
            self._write(f, batch, seq, first_event)

    def _learn(self, batch: Batch) -> ImageLayout | None:
        """Write `batch`'s image with h5py and take its layout, if the layout reproduces
        it and the image reads back with the attribute values the layout writes; the
        memory file holds the batch's image either way."""
        h5py = self._h5py
        self._by_h5py(batch, SEQ_MARK, FIRST_MARK)
        with h5py.File(self.file, "r") as f:
            places = {
                name: (f[path].id.get_offset(), f[path].dtype, f[path].shape)
                for name, path in self.fields.items()
            }
        image = self.file.view()
        layout = find_layout(image, places)
        if layout is not None and layout.matches(image, batch):
            # values that tell seq from first_event and from the markers
            layout.set_attributes(image, batch.seq + 7, batch.first_event + 11)
            del image  # h5py reads the file: let go of the view first
            try:
                with h5py.File(self.file, "r") as f:
                    got = [int(f.attrs[k]) for k in ("seq", "first_event", "n_events")]
            except (OSError, KeyError, ValueError):  # h5py refuses the image
                got = []
            if got == [batch.seq + 7, batch.first_event + 11, batch.n_events]:
                layout.set_attributes(self.file.view(), batch.seq, batch.first_event)
                return layout
        self._by_h5py(batch, batch.seq, batch.first_event)
        return None

    def __call__(self, batches: Iterator[Batch]) -> Iterator[memoryview]:
        for batch in batches:
            key = self._layout_key(batch)
            if key is None:
                self._by_h5py(batch, batch.seq, batch.first_event)
            elif key != self._key:
                self._key = key
                self._layout = self._learn(batch)
            elif self._layout is not None:
                self._layout.render(self.file, batch)
                self.in_place += 1
            else:  # this layout failed its check
                self._by_h5py(batch, batch.seq, batch.first_event)
            yield self.file.view()


def _estimate(batch: Batch) -> int:
    """A little more than the bytes of a batch's data: the image size to reserve."""
    total = 1 << 16
    for col in batch.columns.values():
        if col.dtype.kind != "O":
            total += col.dtype.itemsize * int(np.prod(col.shape, dtype=np.int64)) * batch.n_events
    return total + total // 64
