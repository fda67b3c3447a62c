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


def decode(message: memoryview | bytes | tuple) -> Sector:
    """The header and a zero-copy array view of one sector message: one buffer (header,
    then the array) or the tuple of a ZMQ multipart message's parts (header, array)."""
    two_parts = isinstance(message, tuple)
    if two_parts:
        if len(message) == 1:
            return decode(message[0])
        if len(message) != 2:
            raise DataError(f"sector message of {len(message)} parts, expected 1 or 2")
        header, message = message
        if len(header) > HEADER_MAX:
            raise DataError(f"sector message: header part of {len(header)} bytes")
    else:
        header = message[:HEADER_MAX]
    unpacker = msgpack.Unpacker(raw=False, max_buffer_size=HEADER_MAX)
    unpacker.feed(header)
    try:
        h = unpacker.unpack()
        shape, dtype = tuple(int(x) for x in h["shape"]), np.dtype(h["dtype"])
        count = math.prod(shape)
        frame, sector, scan = int(h["frame_number"]), int(h["sector"]), int(h["scan_number"])
    except (msgpack.OutOfData, msgpack.UnpackException, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"sector message: bad header ({type(exc).__name__}: {exc})") from None
    offset = 0 if two_parts else unpacker.tell()
    if two_parts and unpacker.tell() != len(header):
        raise DataError(
            f"sector message of frame {frame} sector {sector}:"
            f" {len(header) - unpacker.tell()} bytes after the header in its first part"
        )
    n = count * dtype.itemsize
    if len(message) - offset != n:
        raise DataError(
            f"sector message of frame {frame} sector {sector}: {len(message) - offset} bytes"
            f" of data, expected {n} for shape {list(shape)} {dtype.str}"
        )
    data = np.frombuffer(message, dtype=dtype, count=count, offset=offset)
    return Sector(scan, frame, sector, data.reshape(shape))
