"""A reusable in-memory file that h5py can write an HDF5 file image into."""

from __future__ import annotations

import io


class MemoryFile(io.RawIOBase):
    """A seekable binary file backed by one growing bytearray that is reused.

    `reset()` empties the file but keeps its memory, so writing one HDF5 image
    per batch does not allocate (and page-fault) a fresh buffer every time.
    `view()` returns the current contents without copying; the view is only
    valid until the next write or `reset()`.
    """

    def __init__(self, capacity: int = 1 << 20) -> None:
        super().__init__()
        self._buf = bytearray(capacity)
        self._size = 0
        self._pos = 0

    def reset(self) -> None:
        """Forget the contents (memory is kept for the next image)."""
        self._size = 0
        self._pos = 0

    def view(self) -> memoryview:
        """The file contents, without a copy."""
        return memoryview(self._buf)[: self._size]

    @property
    def capacity(self) -> int:
        return len(self._buf)

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            pos = offset
        elif whence == io.SEEK_CUR:
            pos = self._pos + offset
        elif whence == io.SEEK_END:
            pos = self._size + offset
        else:
            raise ValueError(f"invalid whence {whence}")
        if pos < 0:
            raise ValueError("negative seek position")
        self._pos = pos
        return pos

    def reserve(self, size: int) -> None:
        """Make room for a file of `size` bytes at once (instead of growing step by step)."""
        if size > len(self._buf):
            try:
                self._buf.extend(bytes(size - len(self._buf)))
            except BufferError:  # a view of the old contents is still alive: leave it be
                new = bytearray(size)
                new[: self._size] = self._buf[: self._size]
                self._buf = new

    def claim(self, size: int) -> memoryview:
        """Make the file `size` bytes long, its contents left as they are (the caller
        writes every byte), and return a writable view of them (valid like `view()`)."""
        self.reserve(size)
        self._size = self._pos = size
        return memoryview(self._buf)[:size]

    def _reserve(self, size: int) -> None:
        if size > len(self._buf):
            grown = max(size, len(self._buf) + (len(self._buf) >> 1))
            try:
                self._buf.extend(bytes(grown - len(self._buf)))
            except BufferError:  # a view of the old contents is still alive: leave it be
                new = bytearray(grown)
                new[: self._size] = self._buf[: self._size]
                self._buf = new

    def write(self, data) -> int:  # type: ignore[override]
        src = memoryview(data).cast("B")
        n = src.nbytes
        end = self._pos + n
        self._reserve(end)
        if self._pos > self._size:  # a hole after a seek past the end reads as zeros
            self._buf[self._size : self._pos] = bytes(self._pos - self._size)
        self._buf[self._pos : end] = src
        self._pos = end
        if end > self._size:
            self._size = end
        return n

    def readinto(self, buffer) -> int:  # type: ignore[override]
        dst = memoryview(buffer).cast("B")
        n = max(0, min(dst.nbytes, self._size - self._pos))
        dst[:n] = self._buf[self._pos : self._pos + n]
        self._pos += n
        return n

    def truncate(self, size: int | None = None) -> int:
        size = self._pos if size is None else size
        if size > self._size:
            self._reserve(size)
            self._buf[self._size : size] = bytes(size - self._size)
        self._size = size
        return size

    def flush(self) -> None:
        return None

    def close(self) -> None:  # keep the buffer usable after h5py closes the file
        return None
