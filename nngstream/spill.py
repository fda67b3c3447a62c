"""Spill to disk: messages that do not fit in memory wait in segment files, in order.

A spill is a folder of segment files `NNNNNNNN.seg` under the `--spill` directory (one
folder per buffer run, removed at exit). A segment is a sequence of records
`<u64 little-endian length><payload>`; messages are written to the newest segment and
read back from the oldest, so they come back in the order they were written. A segment
is deleted once it has been read to its end. The bound (`--spill-max-bytes`) is on the
payload bytes held on disk.

Not thread-safe: the pump uses it under its lock.
"""

from __future__ import annotations

import os
import shutil
import struct
import tempfile
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from .errors import NngstreamError

_LEN = struct.Struct("<Q")
SEGMENT_BYTES = 64 * 1024 * 1024  # a new segment starts once the current one is this big

NewMessage = Callable[[int], tuple[object, memoryview]]


class Spill:
    """FIFO of messages in segment files, bounded in payload bytes."""

    def __init__(self, parent: Path, max_bytes: int, segment_bytes: int = SEGMENT_BYTES) -> None:
        try:
            parent.mkdir(parents=True, exist_ok=True)
            self.dir = Path(tempfile.mkdtemp(prefix=f"nngstream-{os.getpid()}-", dir=parent))
        except OSError as exc:
            raise NngstreamError(f"cannot use spill directory {parent} (--spill): {exc}") from None
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self.messages = 0  # held now
        self.nbytes = 0  # payload bytes held now
        self.total_messages = 0  # ever written
        self.total_bytes = 0
        self._segments: deque[Path] = deque()  # oldest first; the last one is being written
        self._next_id = 0
        self._writer: BinaryIO | None = None
        self._written = 0  # bytes in the segment being written
        self._reader: BinaryIO | None = None  # open on self._segments[0]
        self._head = bytearray(_LEN.size)

    def fits(self, size: int) -> bool:
        return self.nbytes + size <= self.max_bytes or self.messages == 0

    def write(self, payload: memoryview) -> None:
        """Append one message (its bytes are copied to the file)."""
        if self._writer is None or self._written >= self.segment_bytes:
            self._new_segment()
        w = self._writer
        assert w is not None
        size = len(payload)
        try:
            w.write(_LEN.pack(size))
            w.write(payload)
        except OSError as exc:
            raise NngstreamError(f"cannot write to spill {self.dir}: {exc}") from None
        self._written += _LEN.size + size
        self.messages += 1
        self.nbytes += size
        self.total_messages += 1
        self.total_bytes += size

    def read(self, new_message: NewMessage) -> tuple[object, int]:
        """Take the oldest message, read straight into a message from `new_message(size)`."""
        if not self.messages:
            raise IndexError("the spill is empty")
        while True:
            if self._reader is None:
                if self._segments[0] == self._segments[-1] and self._writer is not None:
                    self._writer.flush()
                self._reader = self._segments[0].open("rb", buffering=0)
            r = self._reader
            if self._segments[0] == self._segments[-1] and self._writer is not None:
                self._writer.flush()  # reading the segment being written
            if r.readinto(self._head) == _LEN.size:
                break
            # this segment is read to its end: the next one holds the following messages
            r.close()
            self._reader = None
            if len(self._segments) == 1:  # the segment being written ended early
                raise NngstreamError(f"spill segment {self._segments[0]} is truncated")
            self._segments.popleft().unlink()
        (size,) = _LEN.unpack(self._head)
        item, view = new_message(size)
        got = r.readinto(view)
        del view
        if got != size:
            raise NngstreamError(f"spill segment {self._segments[0]} is truncated")
        self.messages -= 1
        self.nbytes -= size
        return item, size

    def clear(self) -> int:
        """Delete everything held; returns how many messages that was."""
        n = self.messages
        self.close()
        self.dir.mkdir(exist_ok=True)
        self.messages = self.nbytes = 0
        return n

    def close(self) -> None:
        """Close files and remove the spill folder."""
        for f in (self._reader, self._writer):
            if f is not None:
                f.close()
        self._reader = self._writer = None
        self._segments.clear()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _new_segment(self) -> None:
        if self._writer is not None:
            self._writer.close()
        path = self.dir / f"{self._next_id:08d}.seg"
        self._next_id += 1
        try:
            self._writer = path.open("wb")
        except OSError as exc:
            raise NngstreamError(f"cannot write to spill {self.dir}: {exc}") from None
        self._segments.append(path)
        self._written = 0
