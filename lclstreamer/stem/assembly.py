"""Frames assembled from their sectors (pure).

A frame is complete when all its sectors arrived; at the end of the stream the frames
still missing sectors are handed out as incomplete (missing columns hold the dark
reference, so nothing is counted there) and flagged."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Partial:
    frame: np.ndarray
    have: set[int] = field(default_factory=set)


class Assembler:
    """Collects sectors (column blocks) into frames; reuses frame buffers."""

    def __init__(self, frame_shape: tuple[int, int], sectors: int, fill: np.ndarray) -> None:
        self.shape, self.sectors = frame_shape, sectors
        self.width = frame_shape[1] // sectors
        self.fill = fill.astype(np.uint16)  # what a missing sector shows (the dark reference)
        self.open: dict[int, Partial] = {}
        self._free: list[np.ndarray] = []
        self.duplicates = 0
        self.done: set[int] = set()  # frames handed out (complete or not)

    def add(self, frame: int, sector: int, data: np.ndarray) -> np.ndarray | None:
        """Place one sector; the frame's pixels if it is now complete, else None. The
        returned array is valid until `release` is called with it."""
        if frame in self.done:
            self.duplicates += 1
            return None
        p = self.open.get(frame)
        if p is None:
            buf = self._free.pop() if self._free else np.empty(self.shape, dtype=np.uint16)
            p = self.open[frame] = Partial(buf)
        if sector in p.have or not 0 <= sector < self.sectors:
            self.duplicates += 1
            return None
        w = self.width
        p.frame[:, sector * w : (sector + 1) * w] = data
        p.have.add(sector)
        if len(p.have) < self.sectors:
            return None
        del self.open[frame]
        self.done.add(frame)
        return p.frame

    def release(self, buf: np.ndarray) -> None:
        self._free.append(buf)

    def incomplete(self) -> list[tuple[int, np.ndarray, int]]:
        """(frame, pixels, sectors missing) of every frame still open, which are closed."""
        out = []
        w = self.width
        for frame, p in sorted(self.open.items()):
            for s in range(self.sectors):
                if s not in p.have:
                    p.frame[:, s * w : (s + 1) * w] = self.fill[:, s * w : (s + 1) * w]
            out.append((frame, p.frame, self.sectors - len(p.have)))
            self.done.add(frame)
        self.open.clear()
        return out
