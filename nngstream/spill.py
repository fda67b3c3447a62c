"""Spill to disk: messages that do not fit in memory wait in segment files, in order.

A spill lives in a folder `nngstream-PID-XXXX/` under the `--spill` directory (removed
at exit). A segment is a file of records `[zero padding]<u64 little-endian length>[stamp]<payload>`
(the stamp, `stamp_size` bytes, is acked delivery's producer and sequence)
(payloads of 64 KiB and more are padded to start on a 4 KiB boundary);
messages are written to the newest segment and read back from the oldest, so they come
back in the order they were written. Each segment is opened for writing and for
reading when it is created and then unlinked at once: the folder stays empty, a killed
buffer leaves nothing on disk, and reading never looks a name up. A segment read to its
end is closed by a thread of its own (closing frees the file's pages, which takes about
as long as reading them, and need not hold up the stream). The bound
(`--spill-max-bytes`) is on the payload bytes held.

Not thread-safe: the pump uses it under its lock.
"""

from __future__ import annotations

import contextlib
import os
import queue
import shutil
import struct
import tempfile
import threading
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from .errors import NngstreamError

_LEN = struct.Struct("<Q")
PAGE = 4096
ALIGN_FROM = 64 * 1024  # payloads this big start on a page boundary (faster to read back)
_ZEROS = memoryview(bytes(PAGE))
SEGMENT_BYTES = 64 * 1024 * 1024  # a new segment starts once the current one is this big

NewMessage = Callable[[int], tuple[object, memoryview]]


class Spill:
    """FIFO of messages in segment files, bounded in payload bytes."""

    def __init__(
        self,
        parent: Path,
        max_bytes: int,
        segment_bytes: int = SEGMENT_BYTES,
        stamp_size: int = 0,
    ) -> None:
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
        self._readers: deque[BinaryIO] = deque()  # one per segment, oldest first
        self._sizes: deque[int] = deque()  # payload sizes, oldest first (one read per message)
        self._next_id = 0
        self._writer: BinaryIO | None = None  # on the newest segment
        self._written = 0  # bytes in the segment being written
        self._read_pos = 0  # offset in the oldest segment
        self._head = bytearray(_LEN.size)
        self.stamp_size = stamp_size  # bytes before each payload (acked delivery's stamp)
        self._stamp = bytearray(stamp_size)
        self._pad = bytearray(PAGE)
        self._done: queue.SimpleQueue[BinaryIO | None] = queue.SimpleQueue()
        self._closer = threading.Thread(target=self._close_done, name="spill-close", daemon=True)
        self._closer.start()

    @property
    def segments(self) -> int:
        """Segments held (read to their end ones excluded)."""
        return len(self._readers)

    def fits(self, size: int) -> bool:
        return self.nbytes + size <= self.max_bytes or self.messages == 0

    def write(self, payload: memoryview, stamp: bytes = b"") -> None:
        """Append one message (its bytes are copied to the file), after its `stamp` of
        `stamp_size` bytes (acked delivery: producer and sequence)."""
        if self._writer is None or self._written >= self.segment_bytes:
            self._new_segment()
        w = self._writer
        assert w is not None and len(stamp) == self.stamp_size
        size = len(payload)
        pad = _padding(self._written, size)
        try:
            if pad:
                w.write(_ZEROS[:pad])
            w.write(_LEN.pack(size))
            if stamp:
                w.write(stamp)
            w.write(payload)
        except OSError as exc:
            raise NngstreamError(f"cannot write to spill {self.dir}: {exc}") from None
        self._written += pad + _LEN.size + self.stamp_size + size
        self._sizes.append(size)
        self.messages += 1
        self.nbytes += size
        self.total_messages += 1
        self.total_bytes += size

    def read(self, new_message: NewMessage) -> tuple[object, int, bytes]:
        """Take the oldest message, read straight into a message from `new_message(size)`;
        returns it, its size and its stamp."""
        if not self.messages:
            raise IndexError("the spill is empty")
        size = self._sizes[0]
        item, view = new_message(size)
        while True:
            reader = self._readers[0]
            if len(self._readers) == 1 and self._writer is not None:
                self._writer.flush()  # reading the segment being written
            # padding, length and payload in one system call, straight into the message
            pad = _padding(self._read_pos, size)
            parts = [memoryview(self._pad)[:pad], self._head, self._stamp, view]
            got = os.readv(reader.fileno(), parts)
            if got:
                break
            # this segment is read to its end: the next one holds the following messages
            if len(self._readers) == 1:
                raise NngstreamError(f"spill {self.dir}: a segment ended early")
            self._done.put(self._readers.popleft())
            self._read_pos = 0
        del view
        if got != pad + _LEN.size + self.stamp_size + size or _LEN.unpack(self._head)[0] != size:
            raise NngstreamError(f"spill {self.dir}: a segment is damaged")
        self._read_pos += got
        self._sizes.popleft()
        self.messages -= 1
        self.nbytes -= size
        return item, size, bytes(self._stamp)

    def clear(self) -> int:
        """Drop everything held (the spill stays usable); returns how many messages."""
        n = self.messages
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        while self._readers:
            self._done.put(self._readers.popleft())
        self._read_pos = 0
        self._sizes.clear()
        self.messages = self.nbytes = 0
        return n

    def close(self) -> None:
        """Drop everything and remove the spill folder."""
        self.clear()
        self._done.put(None)
        self._closer.join()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _close_done(self) -> None:
        """(own thread, lowest CPU priority) Close segments that are no longer needed."""
        with contextlib.suppress(OSError, AttributeError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
        while (f := self._done.get()) is not None:
            with contextlib.suppress(OSError):
                f.close()

    def _new_segment(self) -> None:
        if self._writer is not None:
            self._writer.close()  # its reader keeps the file
            self._writer = None
        path = self.dir / f"{self._next_id:08d}.seg"
        self._next_id += 1
        try:
            writer = path.open("wb")
            try:
                reader = path.open("rb", buffering=0)
            finally:
                path.unlink()
        except OSError as exc:
            raise NngstreamError(f"cannot write to spill {self.dir}: {exc}") from None
        self._writer = writer
        self._readers.append(reader)
        self._written = 0


def _padding(pos: int, size: int) -> int:
    """Zero bytes before a record at `pos` so that a large payload starts on a page."""
    return (-(pos + _LEN.size)) % PAGE if size >= ALIGN_FROM else 0
