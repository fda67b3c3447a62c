"""A reusable output buffer that messages are assembled in (one copy of each array)."""

from __future__ import annotations

import numpy as np


class OutBuffer:
    """Grows to the largest message seen and is reused; `view()` is valid until `reset()`."""

    def __init__(self, capacity: int = 1 << 16) -> None:
        self._buf = bytearray(capacity)
        self._mv = memoryview(self._buf)
        self.pos = 0

    def reset(self, size_hint: int = 0) -> None:
        """Start a new message of about `size_hint` bytes."""
        self.pos = 0
        if size_hint > len(self._buf):
            self._grow(size_hint)

    def _grow(self, need: int) -> None:
        new = bytearray(max(need, 2 * len(self._buf)))
        new[: self.pos] = self._buf[: self.pos]
        self._buf = new
        self._mv = memoryview(self._buf)

    def write(self, data: bytes | memoryview) -> None:
        end = self.pos + len(data)
        if end > len(self._buf):
            self._grow(end)
        self._mv[self.pos : end] = data
        self.pos = end

    def write_array(self, arr: np.ndarray, dtype: np.dtype) -> None:
        """Append `arr` converted to `dtype` (C order) in one pass, without a temporary."""
        n = arr.size * dtype.itemsize
        end = self.pos + n
        if end > len(self._buf):
            self._grow(end)
        dest = np.frombuffer(self._buf, dtype=dtype, count=arr.size, offset=self.pos)
        np.copyto(dest.reshape(arr.shape), arr, casting="unsafe")
        del dest
        self.pos = end

    def view(self) -> memoryview:
        return self._mv[: self.pos]
