"""Processing pipelines: the `batch` pipeline groups events into checked columns."""

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


class FieldColumn:
    """One field of a batch, its shape and dtype fixed by the first event of the run.

    Values are checked and kept by reference (no copy per event); `stack()`
    copies them into a buffer allocated once, only for consumers that want one
    array. Serializers that write row by row never pay for that copy.
    """

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
        self.batch_size = batch_size
        self._strings = self.dtype.kind == "O"
        self._rows: list[Any] = []
        self._buffer: np.ndarray | None = None
        self._stacked: np.ndarray | None = None

    @property
    def rows(self) -> list[Any]:
        return self._rows

    def clear(self) -> None:
        self._rows.clear()
        self._stacked = None

    def add(self, value: Any, index: int) -> None:
        """Keep `value`, or raise DataError if it does not fit the field."""
        if self._strings:
            if not isinstance(value, str):
                self._mismatch(np.asarray(value), index)
        else:
            if type(value) is not np.ndarray and not isinstance(value, np.generic):
                value = np.asarray(value)
            dtype = value.dtype
            if value.shape != self.shape or (
                dtype is not self.dtype
                and dtype != self.dtype
                and not np.can_cast(dtype, self.dtype, "same_kind")
            ):
                self._mismatch(value, index)
        self._rows.append(value)

    def stack(self) -> np.ndarray:
        if self._stacked is None:
            if self._buffer is None:
                self._buffer = np.empty((self.batch_size, *self.shape), dtype=self.dtype)
            out = self._buffer[: len(self._rows)]
            for i, value in enumerate(self._rows):
                out[i] = value
            self._stacked = out
        return self._stacked

    def _mismatch(self, arr: np.ndarray, index: int) -> None:
        raise DataError(
            f"field {self.name!r} changed in event {index}: it is {describe(arr.shape, arr.dtype)}"
            f" but was {describe(self.shape, self.dtype)} from event {self.first_index};"
            " every event of a field must have the same shape and dtype"
        )


class BatchPipeline:
    """Events -> batches of `batch_size`; the last, shorter batch is flushed too.

    Columns are created once, from the first event, and reused: a batch is
    valid until the next one is requested.
    """

    def __init__(self, cfg: BatchConfig, ctx: StreamContext | None) -> None:
        self.batch_size = cfg.batch_size

    def __call__(self, events: Iterator[Event]) -> Iterator[Batch]:
        size = self.batch_size
        columns: dict[str, FieldColumn] | None = None
        indices: list[int] = []
        seq = fill = first = 0
        for event in events:
            if columns is None:
                columns = {
                    name: FieldColumn(name, value, size, event.index)
                    for name, value in event.data.items()
                }
            if fill == 0:
                first = event.index
                indices.clear()
                for column in columns.values():
                    column.clear()
            index = event.index
            for name, value in event.data.items():
                columns[name].add(value, index)
            indices.append(index)
            fill += 1
            if fill == size:
                yield Batch(seq, first, fill, dict(columns), indices)
                seq += 1
                fill = 0
        if fill and columns is not None:
            yield Batch(seq, first, fill, dict(columns), indices)
