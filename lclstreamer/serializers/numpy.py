"""The `numpy` serializer: a small JSON header, then the raw (optionally compressed) arrays.

Message layout (all integers little-endian):

    b"LCLSNPY1" | uint32 header length | header (JSON, UTF-8) | array bytes...

The header holds `rank`, `seq`, `n_events`, `first_event`, `indices` (each event's run
index), `source_identifier`, `compression` (`none`, `lz4`: LZ4 frame, `zstd`: zstd frame)
and `arrays`: a list of `{name, dtype, shape, offset, nbytes}` (shape includes the event
axis; offset and nbytes locate the stored bytes after the header). String fields are in
the header under `strings`. `decode()` reads a message back into numpy arrays.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from typing import Any

import numpy as np

from ..models import NumpySerializer as NumpyConfig
from ..protocols import Batch, RunInfo, StreamContext
from .packing import OutBuffer

MAGIC = b"LCLSNPY1"


def compressor(kind: str, level: int | None) -> Any:
    """bytes-like -> bytes for `kind` (None for no compression)."""
    if kind == "lz4":
        import lz4.frame

        return lz4.frame.compress
    if kind == "zstd":
        import zstandard

        return zstandard.ZstdCompressor(level=3 if level is None else level).compress
    return None


def decode(message: bytes | memoryview) -> dict[str, Any]:
    """The header (key "header") and every array or string list of a message, by name."""
    buf = memoryview(message)
    if bytes(buf[:8]) != MAGIC:
        raise ValueError("not an lclstreamer numpy message (bad magic)")
    (hlen,) = struct.unpack_from("<I", buf, 8)
    header = json.loads(bytes(buf[12 : 12 + hlen]))
    body = buf[12 + hlen :]
    out: dict[str, Any] = {"header": header, **header.get("strings", {})}
    for a in header["arrays"]:
        raw = body[a["offset"] : a["offset"] + a["nbytes"]]
        if header["compression"] == "lz4":
            import lz4.frame

            raw = lz4.frame.decompress(raw)
        elif header["compression"] == "zstd":
            import zstandard

            raw = zstandard.ZstdDecompressor().decompress(raw)
        out[a["name"]] = np.frombuffer(raw, dtype=a["dtype"]).reshape(a["shape"])
    return out


class NumpySerializer:
    """One message per batch, assembled in a reused buffer (valid until the next)."""

    suffix = ".npmsg"

    def __init__(self, cfg: NumpyConfig, ctx: StreamContext, run: RunInfo) -> None:
        self.fields = list(cfg.fields.items())
        self.compression = cfg.compression
        self.compress = compressor(cfg.compression, cfg.compression_level)
        self.ctx = ctx
        self.out = OutBuffer()

    def __call__(self, batches: Iterator[Batch]) -> Iterator[memoryview]:
        out = self.out
        for batch in batches:
            arrays: list[dict[str, Any]] = []
            strings: dict[str, list[str]] = {}
            payload: list[tuple[Any, np.dtype]] = []
            offset = 0
            for name, key in self.fields:
                col = batch.columns[name]
                if col.dtype.kind == "O":
                    strings[key] = list(col.rows)
                    continue
                dt = col.dtype.newbyteorder("<")
                shape = [batch.n_events, *col.shape]
                if self.compress is None:
                    data: Any = col.rows
                    nbytes = dt.itemsize * int(np.prod(shape, dtype=np.int64))
                else:
                    stacked = np.ascontiguousarray(col.stack(), dtype=dt)
                    data = self.compress(memoryview(stacked).cast("B"))
                    nbytes = len(data)
                arrays.append(
                    {
                        "name": key,
                        "dtype": dt.str,
                        "shape": shape,
                        "offset": offset,
                        "nbytes": nbytes,
                    }  # fmt: skip
                )
                payload.append((data, dt))
                offset += nbytes
            header = json.dumps(
                {
                    "rank": self.ctx.rank,
                    "seq": batch.seq,
                    "n_events": batch.n_events,
                    "first_event": batch.first_event,
                    "indices": list(batch.indices),
                    "source_identifier": self.ctx.source_identifier,
                    "compression": self.compression,
                    "arrays": arrays,
                    **({"strings": strings} if strings else {}),
                },
                separators=(",", ":"),
            ).encode()
            out.reset(12 + len(header) + offset)
            out.write(MAGIC)
            out.write(struct.pack("<I", len(header)))
            out.write(header)
            for data, dt in payload:
                if isinstance(data, bytes | bytearray):
                    out.write(data)
                else:  # rows written straight into the message, converted to little-endian
                    for row in data:
                        arr = np.asarray(row)
                        out.write_array(arr.reshape(arr.shape or (1,)), dt)
            yield out.view()
