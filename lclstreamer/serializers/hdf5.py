"""The HDF5 serializer: one in-memory HDF5 file image per batch."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ..memfile import MemoryFile
from ..models import HDF5Serializer as HDF5Config
from ..protocols import Batch, RunInfo, StreamContext


def filter_options(compression: str, level: int | None) -> dict[str, Any]:
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
    raise ValueError(f"unknown compression {compression!r}")


class HDF5Serializer:
    """Writes each batch as an HDF5 file image and yields a view of it (no copy).

    Arrays with per-event dimensions get one chunk per event and the configured
    compression; per-event scalars are stored contiguously. Root attributes:
    rank, ranks, seq, n_events, first_event, source_identifier.
    """

    suffix = ".h5"

    def __init__(self, cfg: HDF5Config, ctx: StreamContext, run: RunInfo) -> None:
        import h5py
        import hdf5plugin  # noqa: F401  (registers the bitshuffle filters)

        self._h5py = h5py
        self.fields = dict(cfg.fields)
        self.filters = filter_options(cfg.compression, cfg.compression_level)
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
            arr = batch.data[name]
            if arr.dtype.kind == "O":
                f.create_dataset(path, data=arr, dtype=self._str)
            elif arr.ndim > 1:
                f.create_dataset(path, data=arr, chunks=(1, *arr.shape[1:]), **self.filters)
            else:
                f.create_dataset(path, data=arr)

    def __call__(self, batches: Iterator[Batch]) -> Iterator[memoryview]:
        for batch in batches:
            self.file.reset()
            with self._h5py.File(self.file, "w") as f:
                self._write(f, batch)
            yield self.file.view()
