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
    """Messages with their sizes, oldest first; never above the bounds except for one
    message that is larger than `max_bytes` on its own (it is admitted into an empty FIFO).

    Not thread-safe: the engine serialises access.
    """

    def __init__(self, max_bytes: int, max_messages: int, when_full: WhenFull) -> None:
        if max_bytes < 1 or max_messages < 1:
            raise ValueError("max_bytes and max_messages must be positive")
        self.max_bytes = max_bytes
        self.max_messages = max_messages
        self.when_full = WhenFull(when_full)
        self._items: deque[tuple[T, int]] = deque()
        self.nbytes = 0
        self.dropped = 0
        self.dropped_bytes = 0

    def __len__(self) -> int:
        return len(self._items)

    def fits(self, size: int) -> bool:
        """Whether a message of `size` bytes can be appended without breaking a bound."""
        if not self._items:
            return True
        return len(self._items) < self.max_messages and self.nbytes + size <= self.max_bytes

    def put(self, item: T, size: int) -> list[T]:
        """Append `item` and return the messages dropped to respect the bounds.

        With `block`, the caller must have waited until `fits(size)`; a message that
        does not fit is refused with ValueError rather than silently exceeding the bound.
        """
        if self.fits(size):
            self._items.append((item, size))
            self.nbytes += size
            return []
        if self.when_full is WhenFull.DROP_NEWEST:
            self._count_drop(size)
            return [item]
        if self.when_full is WhenFull.DROP_OLDEST:
            evicted: list[T] = []
            while not self.fits(size):
                old, old_size = self._items.popleft()
                self.nbytes -= old_size
                self._count_drop(old_size)
                evicted.append(old)
            self._items.append((item, size))
            self.nbytes += size
            return evicted
        raise ValueError("FIFO full: with when_full=block wait until fits(size) is true")

    def pop(self) -> tuple[T, int]:
        """Remove and return the oldest message and its size (IndexError when empty)."""
        item, size = self._items.popleft()
        self.nbytes -= size
        return item, size

    def clear(self) -> list[T]:
        """Remove everything (not counted as dropped) and return it, oldest first."""
        items = [item for item, _ in self._items]
        self._items.clear()
        self.nbytes = 0
        return items

    def _count_drop(self, size: int) -> None:
        self.dropped += 1
        self.dropped_bytes += size
