"""Stream messages -> `Batch` (field name -> numpy array), one decoder per serializer.

`DECODERS` maps a serializer `type` of the lclstreamer configuration to its decoder;
`decoder_for(config)` picks one. Arrays are owned by the batch (the message may be freed
as soon as it is decoded): each array is filled straight from the message bytes (HDF5:
h5py reads the message in place through `BufferFile`, no copy of the message; numpy:
one copy of the message, arrays are views of it).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from .errors import DecodeError

if TYPE_CHECKING:
    from typing_extensions import Buffer  # collections.abc.Buffer from Python 3.12


class Batch(dict):
    """One decoded message: field name -> array with the events along axis 0.

    `rank`, `seq` (the producer's rank and per-rank sequence: together a batch's identity,
    None where the format carries none), `n_events` and `first_event` come from the
    message."""

    __slots__ = ("rank", "seq", "n_events", "first_event")

    def __init__(
        self,
        fields: Mapping[str, np.ndarray],
        *,
        n_events: int,
        rank: int | None = None,
        seq: int | None = None,
        first_event: int | None = None,
    ) -> None:
        super().__init__(fields)
        self.rank, self.seq, self.n_events, self.first_event = rank, seq, n_events, first_event

    @property
    def key(self) -> tuple[int, int] | None:
        """(rank, seq), or None when the format does not say."""
        return None if self.rank is None or self.seq is None else (self.rank, self.seq)

    def events(self) -> Iterator[dict[str, np.ndarray]]:
        """The batch one event at a time (views into the batch's arrays)."""
        for i in range(self.n_events):
            yield {name: arr[i] for name, arr in self.items()}

    def __repr__(self) -> str:
        shapes = ", ".join(f"{k}: {v.dtype}{list(v.shape)}" for k, v in self.items())
        return f"Batch(rank={self.rank}, seq={self.seq}, n_events={self.n_events}, {{{shapes}}})"


class Decoder(Protocol):
    """bytes-like message -> Batch (DecodeError when the message is not one)."""

    def __call__(self, message: Buffer) -> Batch: ...


class BufferFile(io.RawIOBase):
    """A read-only binary file over a buffer, without copying it: h5py's file-object
    driver reads an HDF5 message through it (seek, then readinto straight into the HDF5
    library's buffers: a few dozen calls per batch). Closing releases the buffer."""

    def __init__(self, buffer: Buffer) -> None:
        self._view = memoryview(buffer).cast("B")
        self.size = self._view.nbytes
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = (0, self._pos, self.size)[whence]
        if base + offset < 0:
            raise ValueError(f"seek to {base + offset}, before the start of the message")
        self._pos = base + offset
        return self._pos

    def tell(self) -> int:
        return self._pos

    def readinto(self, b: Buffer) -> int:
        start = self._pos
        end = min(start + memoryview(b).nbytes, self.size)
        if end <= start:
            return 0
        memoryview(b).cast("B")[: end - start] = self._view[start:end]
        self._pos = end
        return end - start

    def close(self) -> None:
        self._view.release()
        super().close()


class HDF5Decoder:
    """HDF5 file images (lclstreamer's `hdf5` serializer): `fields` maps field name ->
    dataset path (the serializer's own `fields`); without it every dataset is returned
    under its path. Root attributes rank, seq, n_events, first_event."""

    def __init__(self, fields: Mapping[str, str] | None = None) -> None:
        import h5py
        import hdf5plugin  # noqa: F401  (registers bitshuffle, zfp, ... for reading)
        from h5py import h5a, h5s

        self._h5py, self._h5a, self._h5s = h5py, h5a, h5s
        self.fields = dict(fields) if fields else None

    def _open(self, raw: BufferFile) -> Any:
        try:
            return self._h5py.File(raw, "r")
        except (OSError, ValueError, TypeError) as exc:
            raise DecodeError(f"not an HDF5 batch ({raw.size} bytes): {exc}") from None

    def _read(self, f: Any, path: str) -> np.ndarray:
        d = f.get(path)
        if d is None or not isinstance(d, self._h5py.Dataset):
            have = []
            f.visititems(lambda p, o: have.append("/" + p) if hasattr(o, "dtype") else None)
            raise DecodeError(f"HDF5 batch has no dataset {path} (it has: {', '.join(have)})")
        if self._h5py.check_string_dtype(d.dtype) is not None:
            return d.asstr()[()]
        if d.ndim == 0 or d.size == 0 or d.dtype.kind not in "biufc":
            return d[()]
        out = np.empty(d.shape, d.dtype)  # d[()] would zero-fill its array first
        d.id.read(self._h5s.ALL, self._h5s.ALL, out)
        return out

    def __call__(self, message: Buffer) -> Batch:
        with BufferFile(message) as raw, self._open(raw) as f:
            return self._batch(f)

    def _count(self, f: Any, name: str) -> int | None:
        """Root attribute `name` as an int (None if absent), read straight into an int64
        (h5py's attribute manager costs ~45 us an attribute of a new file, this ~30)."""
        fid, key = f.id, name.encode()
        if not self._h5a.exists(fid, key):
            return None
        attr = self._h5a.open(fid, key)
        out = np.empty((), np.int64)
        try:
            if attr.shape not in ((), (1,)):
                raise ValueError("not a scalar")
            attr.read(out)
        except (TypeError, ValueError, OSError):
            raise DecodeError(
                f"HDF5 batch attribute {name}: {attr.dtype}{list(attr.shape)}, not an integer"
            ) from None
        return int(out)

    def _batch(self, f: Any) -> Batch:
        if self.fields is not None:
            fields = {name: self._read(f, path) for name, path in self.fields.items()}
        else:
            paths: list[str] = []
            f.visititems(lambda p, o: paths.append("/" + p) if hasattr(o, "dtype") else None)
            fields = {p: self._read(f, p) for p in paths}
        n = self._count(f, "n_events")
        if n is None:
            n = len(next(iter(fields.values()))) if fields else 0
        return Batch(
            fields,
            n_events=n,
            rank=self._count(f, "rank"),
            seq=self._count(f, "seq"),
            first_event=self._count(f, "first_event"),
        )


class NumpyDecoder:
    """lclstreamer's `numpy` serializer (JSON header + raw or LZ4/zstd arrays); `fields`
    maps field name -> array name. Uncompressed: one copy of the message, arrays are
    writable views of it; compressed: arrays are read-only views of what was inflated."""

    def __init__(self, fields: Mapping[str, str] | None = None) -> None:
        from lclstreamer.serializers.numpy import MAGIC, decode

        self._magic, self._decode = MAGIC, decode
        self.names = {key: name for name, key in (fields or {}).items()}

    def __call__(self, message: Buffer) -> Batch:
        if bytes(message[: len(self._magic)]) != self._magic:
            raise DecodeError(f"not an lclstreamer numpy message ({len(message)} bytes)")
        owned = bytearray(message)  # the batch's memory; uncompressed arrays view it
        try:
            out = self._decode(owned)
        except (ValueError, KeyError) as exc:
            raise DecodeError(f"bad numpy message: {exc}") from None
        header = out.pop("header")
        fields = {self.names.get(k, k): np.asarray(v) for k, v in out.items()}
        return Batch(
            fields,
            n_events=int(header["n_events"]),
            rank=_int(header.get("rank")),
            seq=_int(header.get("seq")),
            first_event=_int(header.get("first_event")),
        )


class MsgpackDecoder:
    """lclstreamer's `msgpack` serializer (one event per message, CrystFEL's layout):
    a batch of one event, arrays `{type, shape, data}` read-only views of the unpacked
    bytes; `fields` maps field name -> key. No rank/seq: duplicates cannot be told."""

    def __init__(self, fields: Mapping[str, str] | None = None) -> None:
        import msgpack

        self._unpackb = msgpack.unpackb
        self.names = {key: name for name, key in (fields or {}).items()}

    def __call__(self, message: Buffer) -> Batch:
        try:
            doc = self._unpackb(message)
        except Exception as exc:  # msgpack raises several unrelated types
            raise DecodeError(f"not a msgpack message ({len(message)} bytes): {exc}") from None
        if not isinstance(doc, dict):
            raise DecodeError(f"msgpack message is a {type(doc).__name__}, not a map")
        fields = {}
        for key, value in doc.items():
            if isinstance(value, dict) and {"type", "shape", "data"} <= set(value):
                arr = np.frombuffer(value["data"], dtype=value["type"]).reshape(value["shape"])
            else:
                arr = np.asarray(value)
            fields[self.names.get(key, key)] = arr[np.newaxis]
        return Batch(fields, n_events=1)


DECODERS: dict[str, Callable[[Mapping[str, str] | None], Decoder]] = {
    "hdf5": HDF5Decoder,
    "numpy": NumpyDecoder,
    "msgpack": MsgpackDecoder,
}
"""Serializer `type` -> decoder factory (called with the serializer's `fields`)."""


def decoder_for(config: Mapping[str, Any] | None) -> Decoder:
    """The decoder of `config`'s `data_serializer` (an lclstreamer configuration, native
    layout); no configuration: HDF5 batches with datasets under their paths."""
    if config is None:
        return HDF5Decoder()
    ser = config.get("data_serializer")
    if not isinstance(ser, Mapping) or "type" not in ser:
        raise DecodeError("config.data_serializer: missing (which format do the batches have?)")
    kind = ser["type"]
    factory = DECODERS.get(kind)
    if factory is None:
        raise DecodeError(
            f"config.data_serializer.type: no decoder for {kind!r} yet "
            f"(decoders: {', '.join(DECODERS)})"
        )
    return factory(ser.get("fields"))


def _int(value: Any) -> int | None:
    return None if value is None else int(value)
