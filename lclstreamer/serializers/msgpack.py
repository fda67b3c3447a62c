"""The `msgpack` serializer: one map per event in the layout of CrystFEL's msgpack input."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from ..errors import DataError
from ..models import MsgpackSerializer as MsgpackConfig
from ..protocols import Batch, RunInfo, StreamContext
from .packing import OutBuffer

_I4 = np.dtype("<i4")
_F4 = np.dtype("<f4")


def array_dtype(dtype: np.dtype, choice: str) -> np.dtype:
    """The little-endian dtype CrystFEL reads that an array of `dtype` is sent as."""
    if choice == "float32":
        return _F4
    if choice == "int32":
        return _I4
    if dtype.kind in "iub" and np.can_cast(dtype, _I4, "safe"):
        return _I4
    return _F4


def bin_header(nbytes: int) -> bytes:
    """The msgpack bin 8/16/32 header of a byte string of `nbytes` bytes."""
    if nbytes < 1 << 8:
        return b"\xc4" + nbytes.to_bytes(1, "big")
    if nbytes < 1 << 16:
        return b"\xc5" + nbytes.to_bytes(2, "big")
    if nbytes < 1 << 32:
        return b"\xc6" + nbytes.to_bytes(4, "big")
    raise DataError(f"msgpack serializer: an array of {nbytes} bytes exceeds msgpack's 4 GiB")


def wire_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    """Frames of more than 2 dimensions travel as 2-D: panels stacked along ss."""
    if len(shape) > 2:
        return (int(np.prod(shape[:-1], dtype=np.int64)), shape[-1])
    return shape


class MsgpackSerializer:
    """Yields one msgpack map per event, assembled in a reused buffer (valid until the next).

    Arrays are `{"type": "<i4"|"<f4", "shape": [...], "data": <bin>}`, converted while
    being copied into the message; numbers and strings are plain values.
    """

    suffix = ".msgpack"

    def __init__(self, cfg: MsgpackConfig, ctx: StreamContext, run: RunInfo) -> None:
        import msgpack

        self._packb = msgpack.packb
        self._packer = msgpack.Packer()
        self.fields = list(cfg.fields.items())
        self.choice = cfg.array_dtype
        self.out = OutBuffer()
        self._keys = {name: self._packb(key) for name, key in self.fields}
        self._plans: dict[str, tuple[bytes, np.dtype, tuple[int, ...]]] | None = None

    def _plan(self, batch: Batch) -> dict[str, tuple[bytes, np.dtype, tuple[int, ...]]]:
        """Per array field, the packed map header up to the bin length, its dtype and shape."""
        plans = {}
        for name, _ in self.fields:
            col = batch.columns[name]
            if col.dtype.kind == "O" or not col.shape:
                continue
            dt = array_dtype(col.dtype, self.choice)
            shape = wire_shape(col.shape)
            nbytes = int(np.prod(shape, dtype=np.int64)) * dt.itemsize
            head = (
                self._packer.pack_map_header(3)
                + self._packb("type")
                + self._packb(dt.str)
                + self._packb("shape")
                + self._packb(list(shape))
                + self._packb("data")
                + bin_header(nbytes)
            )
            plans[name] = (head, dt, shape)
        return plans

    def _value(self, value: Any, name: str, index: int) -> bytes:
        if isinstance(value, str | int | float):
            return self._packb(value)
        if isinstance(value, np.generic | np.ndarray) and np.ndim(value) == 0:
            return self._packb(value.item())
        raise DataError(f"msgpack serializer: field {name!r} of event {index} is not packable")

    def __call__(self, batches: Iterator[Batch]) -> Iterator[memoryview]:
        out = self.out
        map_header = self._packer.pack_map_header(len(self.fields))
        for batch in batches:
            if self._plans is None:
                self._plans = self._plan(batch)
            plans = self._plans
            columns = [(name, batch.columns[name].rows) for name, _ in self.fields]
            for i in range(batch.n_events):
                out.reset()
                out.write(map_header)
                for name, rows in columns:
                    out.write(self._keys[name])
                    value = rows[i]
                    plan = plans.get(name)
                    if plan is None:
                        out.write(self._value(value, name, batch.indices[i]))
                    else:
                        head, dt, shape = plan
                        out.write(head)
                        out.write_array(np.asarray(value).reshape(shape), dt)
                yield out.view()
