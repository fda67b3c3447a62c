"""The byte layout of an uncompressed HDF5 batch image, to fill the next batches in place.

An HDF5 image of a batch whose datasets are contiguous and uncompressed, and whose
values are all numbers, is the same bytes for every batch of the same field shapes and
size except in three places: each dataset's data, and the root attributes `seq` and
`first_event`. `find_layout` takes one image h5py wrote (with marker values for those
two attributes) and where HDF5 put each dataset's data; `ImageLayout.render` then makes
the image of another such batch by copying the unchanging bytes, writing the two
attribute values and copying each event's row into its place: every byte of the image
is written once, without HDF5's per-file and per-object work.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from ..memfile import MemoryFile
from ..protocols import Batch

#: int64 values written as `seq` and `first_event` into the image a layout is taken
#: from, so that their bytes can be found (no batch has such a number)
SEQ_MARK = 0x5EC0_D1A5_7E57_0001
FIRST_MARK = 0x5EC0_D1A5_7E57_0002


@dataclass(frozen=True)
class FieldPlace:
    """Where one field's (n_events, ...) array sits in the image."""

    name: str
    offset: int
    dtype: np.dtype
    shape: tuple[int, ...]

    def array(self, buf: memoryview) -> np.ndarray | None:
        """The field's array in `buf`, a view (None when it holds no bytes)."""
        count = int(np.prod(self.shape, dtype=np.int64))
        if count == 0:
            return None
        return np.frombuffer(buf, self.dtype, count, self.offset).reshape(self.shape)


@dataclass(frozen=True)
class ImageLayout:
    """The unchanging bytes of an image, and where the changing values go."""

    size: int
    fixed: tuple[tuple[int, bytes], ...]
    """(offset, bytes) of every stretch that is not dataset data."""
    fields: tuple[FieldPlace, ...]
    seq_at: int
    first_at: int

    def render(self, file: MemoryFile, batch: Batch) -> None:
        """Write the image of `batch` into `file` (which must fit this layout)."""
        buf = file.claim(self.size)
        for offset, data in self.fixed:
            buf[offset : offset + len(data)] = data
        self.set_attributes(buf, batch.seq, batch.first_event)
        for place in self.fields:
            out = place.array(buf)
            if out is not None:
                for i, row in enumerate(batch.columns[place.name].rows):
                    out[i] = row

    def set_attributes(self, buf: memoryview, seq: int, first_event: int) -> None:
        """Write `seq` and `first_event` (int64 in the machine's byte order, as h5py
        writes them) into the image in `buf`."""
        buf[self.seq_at : self.seq_at + 8] = np.int64(seq).tobytes()
        buf[self.first_at : self.first_at + 8] = np.int64(first_event).tobytes()

    def matches(self, image: memoryview, batch: Batch) -> bool:
        """Whether `image` (the one this layout was taken from, for `batch`) has this
        layout's fixed bytes and, where its fields are, the batch's first and last rows."""
        if len(image) != self.size:
            return False
        if any(image[at : at + len(data)] != data for at, data in self.fixed):
            return False
        for place in self.fields:
            out = place.array(image)
            if out is None:
                continue
            rows = batch.columns[place.name].rows
            for i in {0, len(rows) - 1}:
                want = np.asarray(rows[i], dtype=place.dtype)
                if out[i].tobytes() != want.tobytes():
                    return False
        return True


def find_layout(
    image: bytes | memoryview,
    places: Mapping[str, tuple[int | None, np.dtype, tuple[int, ...]]],
) -> ImageLayout | None:
    """The layout of `image`, whose `seq` and `first_event` attributes hold SEQ_MARK and
    FIRST_MARK and whose fields sit at `places` (name -> (offset or None, dtype, shape of
    the whole array)); None when it cannot be used (a dataset without a place, data
    regions that overlap or leave the image, a marker not found exactly once)."""
    size = len(image)
    regions: list[tuple[int, int]] = []
    fields: list[FieldPlace] = []
    for name, (offset, dtype, shape) in places.items():
        nbytes = dtype.itemsize * int(np.prod(shape, dtype=np.int64))
        if nbytes == 0:
            fields.append(FieldPlace(name, 0, dtype, shape))
            continue
        if offset is None or offset < 0 or offset + nbytes > size:
            return None
        regions.append((offset, offset + nbytes))
        fields.append(FieldPlace(name, offset, dtype, shape))
    regions.sort()
    fixed: list[tuple[int, bytes]] = []
    at = 0
    for start, end in regions:
        if start < at:
            return None  # overlapping data regions: not a layout this module understands
        if start > at:
            fixed.append((at, bytes(image[at:start])))
        at = end
    if at < size:
        fixed.append((at, bytes(image[at:size])))
    seq_at = _only_place(fixed, np.int64(SEQ_MARK).tobytes())
    first_at = _only_place(fixed, np.int64(FIRST_MARK).tobytes())
    if seq_at is None or first_at is None:
        return None
    return ImageLayout(size, tuple(fixed), tuple(fields), seq_at, first_at)


def _only_place(fixed: list[tuple[int, bytes]], pattern: bytes) -> int | None:
    """The image offset of the one occurrence of `pattern` in the fixed stretches."""
    found: list[int] = []
    for offset, data in fixed:
        pos = data.find(pattern)
        while pos >= 0:
            found.append(offset + pos)
            pos = data.find(pattern, pos + 1)
    return found[0] if len(found) == 1 else None
