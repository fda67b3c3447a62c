"""Processing pipelines: the `batch` pipeline stacks events into preallocated arrays."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from .errors import DataError
from .models import BatchPipeline as BatchConfig
from .protocols import Batch, Event, StreamContext


def describe(shape: tuple[int, ...], dtype: np.dtype) -> str:
    """`float32 (16, 352, 384)`-style text for error messages."""
    return f"{'str' if dtype.kind == 'O' else dtype.name} {shape}"


class FieldBuffer:
    """A (batch_size, ...) array for one field, fixed by the first event that filled it."""

    def __init__(self, name: str, value: Any, batch_size: int, index: int) -> None:
        self.name = name
        self.first_index = index
        if isinstance(value, str):
            self.shape: tuple[int, ...] = ()
            self.dtype = np.dtype(object)
        else:
            arr = np.asarray(value)
            if arr.dtype.kind not in "biuf":
                raise DataError(
                    f"field {name!r}: event {index} has a value of dtype {arr.dtype}, which"
                    " cannot be batched (numbers, arrays of numbers and strings can)"
                )
            self.shape, self.dtype = arr.shape, arr.dtype
        self.array = np.empty((batch_size, *self.shape), dtype=self.dtype)

    def put(self, row: int, value: Any, index: int) -> None:
        """Copy `value` into row `row`, or raise DataError if it does not fit the field."""
        if self.dtype.kind == "O":
            if not isinstance(value, str):
                self._mismatch(np.asarray(value), index)
            self.array[row] = value
            return
        arr = value if isinstance(value, np.ndarray) else np.asarray(value)
        if arr.shape != self.shape or (
            arr.dtype != self.dtype and not np.can_cast(arr.dtype, self.dtype, "same_kind")
        ):
            self._mismatch(arr, index)
        self.array[row] = arr

    def _mismatch(self, arr: np.ndarray, index: int) -> None:
        raise DataError(
            f"field {self.name!r} changed in event {index}: it is {describe(arr.shape, arr.dtype)}"
            f" but was {describe(self.shape, self.dtype)} from event {self.first_index};"
            " every event of a field must have the same shape and dtype"
        )


class BatchPipeline:
    """Events -> batches of `batch_size`; the last, shorter batch is flushed too.

    Buffers are allocated once, from the first event, and reused: a batch is
    valid until the next one is requested.
    """

    def __init__(self, cfg: BatchConfig, ctx: StreamContext) -> None:
        self.batch_size = cfg.batch_size

    def __call__(self, events: Iterator[Event]) -> Iterator[Batch]:
        size = self.batch_size
        buffers: dict[str, FieldBuffer] | None = None
        seq = fill = first = 0
        for event in events:
            if buffers is None:
                buffers = {
                    name: FieldBuffer(name, value, size, event.index)
                    for name, value in event.data.items()
                }
            if fill == 0:
                first = event.index
            for name, value in event.data.items():
                buffers[name].put(fill, value, event.index)
            fill += 1
            if fill == size:
                yield Batch(seq, first, fill, {n: b.array for n, b in buffers.items()})
                seq += 1
                fill = 0
        if fill and buffers is not None:
            yield Batch(seq, first, fill, {n: b.array[:fill] for n, b in buffers.items()})
