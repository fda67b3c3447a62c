"""The two-part sector message (msgpack header, then the raw array) read back (pure)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import msgpack
import numpy as np

from ..errors import DataError

HEADER_MAX = 4096


@dataclass(frozen=True)
class Sector:
    scan_number: int
    frame_number: int
    sector: int
    data: np.ndarray  # a view of the message (valid as long as the message)


def decode(message: memoryview | bytes) -> Sector:
    """The header and a zero-copy array view of one sector message."""
    unpacker = msgpack.Unpacker(raw=False, max_buffer_size=HEADER_MAX)
    unpacker.feed(message[:HEADER_MAX])
    try:
        h = unpacker.unpack()
        shape, dtype = tuple(int(x) for x in h["shape"]), np.dtype(h["dtype"])
        count = math.prod(shape)
        frame, sector, scan = int(h["frame_number"]), int(h["sector"]), int(h["scan_number"])
    except (msgpack.OutOfData, msgpack.UnpackException, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"sector message: bad header ({type(exc).__name__}: {exc})") from None
    offset = unpacker.tell()
    n = count * dtype.itemsize
    if len(message) - offset != n:
        raise DataError(
            f"sector message of frame {frame} sector {sector}: {len(message) - offset} bytes"
            f" of data, expected {n} for shape {list(shape)} {dtype.str}"
        )
    data = np.frombuffer(message, dtype=dtype, count=count, offset=offset)
    return Sector(scan, frame, sector, data.reshape(shape))
