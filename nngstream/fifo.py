"""A FIFO bounded in messages and bytes, with the buffer's when-full policies (no I/O)."""

from __future__ import annotations

from collections import deque
from enum import StrEnum
from typing import Generic, TypeVar

T = TypeVar("T")


class WhenFull(StrEnum):
    """What happens to a message that arrives when the buffer is full."""

    BLOCK = "block"  # stop reading from producers until there is room
    DROP_OLDEST = "drop-oldest"  # evict the oldest buffered messages to make room
    DROP_NEWEST = "drop-newest"  # discard the arriving message


class BoundedFifo(Generic[T]):
    """Messages with their sizes, oldest first, bounded in messages and bytes.

    A message taken by `pop()` still counts against the bounds until `release()`d (it
    is in memory until the consumer side has it). The bounds hold at all times except
    for a single message admitted when nothing else is held, however large, and, with
    drop-oldest, one arrival while only the taken message remains.

    Not thread-safe: the engine serialises access.
    """

    def __init__(self, max_bytes: int, max_messages: int, when_full: WhenFull) -> None:
        if max_bytes < 1 or max_messages < 1:
            raise ValueError("max_bytes and max_messages must be positive")
        self.max_bytes = max_bytes
        self.max_messages = max_messages
        self.when_full = WhenFull(when_full)
        self._items: deque[tuple[T, int]] = deque()
        self.nbytes = 0  # bytes held: waiting plus taken
        self.taken = 0  # messages popped and not yet released
        self.dropped = 0
        self.dropped_bytes = 0

    def __len__(self) -> int:
        """Messages waiting to be popped."""
        return len(self._items)

    @property
    def held(self) -> int:
        """Messages held: waiting plus taken."""
        return len(self._items) + self.taken

    def fits(self, size: int) -> bool:
        """Whether a message of `size` bytes can be added without breaking a bound."""
        if not self._items and not self.taken:
            return True
        return self.held < self.max_messages and self.nbytes + size <= self.max_bytes

    def add(self, item: T, size: int) -> bool:
        """Append `item` if it fits (`fits`); False, and nothing done, if it does not."""
        if not self.fits(size):
            return False
        self._append(item, size)
        return True

    def put(self, item: T, size: int) -> list[T]:
        """Append `item` and return the messages dropped to respect the bounds.

        With `block`, the caller must have waited until `fits(size)`; a message that
        does not fit is refused with ValueError rather than silently exceeding the bound.
        """
        if not self.fits(size):
            if self.when_full is WhenFull.BLOCK:
                raise ValueError("FIFO full: with when_full=block wait until fits(size) is true")
            if self.when_full is WhenFull.DROP_NEWEST:
                self._count_drop(size)
                return [item]
            evicted: list[T] = []
            while self._items and not self.fits(size):
                old, old_size = self._items.popleft()
                self.nbytes -= old_size
                self._count_drop(old_size)
                evicted.append(old)
            self._append(item, size)
            return evicted
        self._append(item, size)
        return []

    def pop(self) -> tuple[T, int]:
        """Take the oldest message and its size (IndexError when none waits); it still
        counts as held until `release(size)`."""
        item, size = self._items.popleft()
        self.taken += 1
        return item, size

    def take_external(self, size: int) -> None:
        """Count a message taken from elsewhere (the spill) as taken until `release`d."""
        self.taken += 1
        self.nbytes += size

    def release(self, size: int) -> None:
        """A taken message of `size` bytes has left the buffer."""
        if self.taken < 1:
            raise ValueError("release() without a matching pop()")
        self.taken -= 1
        self.nbytes -= size

    def clear(self) -> list[T]:
        """Remove every waiting message (not counted as dropped) and return them."""
        items = [item for item, _ in self._items]
        self.nbytes -= sum(size for _, size in self._items)
        self._items.clear()
        return items

    def _append(self, item: T, size: int) -> None:
        self._items.append((item, size))
        self.nbytes += size

    def _count_drop(self, size: int) -> None:
        self.dropped += 1
        self.dropped_bytes += size
