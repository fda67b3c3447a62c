"""Stream messages -> `Batch` (field name -> numpy array), one decoder per serializer.

`DECODERS` maps a serializer `type` of the lclstreamer configuration to its decoder;
`decoder_for(config)` picks one. Arrays are owned by the batch (the message may be freed
as soon as it is decoded): each array is filled straight from the message bytes (HDF5:
the file image is handed to the HDF5 library once and read in C; numpy: one copy of the
message, arrays are views of it).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from .errors import DecodeError


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

    def __call__(self, message: memoryview) -> Batch: ...


_names = itertools.count()


class HDF5Decoder:
    """HDF5 file images (lclstreamer's `hdf5` serializer): `fields` maps field name ->
    dataset path (the serializer's own `fields`); without it every dataset is returned
    under its path. Root attributes rank, seq, n_events, first_event."""

    def __init__(self, fields: Mapping[str, str] | None = None) -> None:
        import h5py
        import hdf5plugin  # noqa: F401  (registers bitshuffle, zfp, ... for reading)

        self._h5py = h5py
        self.fields = dict(fields) if fields else None

    def _open(self, message: memoryview) -> Any:
        from h5py import h5f, h5p

        fapl = h5p.create(h5p.FILE_ACCESS)
        fapl.set_fapl_core(backing_store=False)
        try:
            fapl.set_file_image(message)  # HDF5 copies the image once, then reads in C
            name = f"lclstream-batch-{next(_names)}".encode()  # open images must differ
            return self._h5py.File(h5f.open(name, h5f.ACC_RDONLY, fapl=fapl))
        except (OSError, ValueError, TypeError) as exc:
            raise DecodeError(f"not an HDF5 batch ({len(message)} bytes): {exc}") from None

    def _read(self, f: Any, path: str) -> np.ndarray:
        d = f.get(path)
        if d is None or not isinstance(d, self._h5py.Dataset):
            have = []
            f.visititems(lambda p, o: have.append("/" + p) if hasattr(o, "dtype") else None)
            raise DecodeError(f"HDF5 batch has no dataset {path} (it has: {', '.join(have)})")
        if self._h5py.check_string_dtype(d.dtype) is not None:
            return d.asstr()[()]
        return d[()]

    def __call__(self, message: memoryview) -> Batch:
        with self._open(message) as f:
            return self._batch(f)

    def from_file(self, path: Path) -> Batch:
        """The batch in an HDF5 file on disk (read by the HDF5 library, no image copy)."""
        try:
            f = self._h5py.File(path, "r")
        except OSError as exc:
            raise DecodeError(f"{path}: not an HDF5 batch: {exc}") from None
        with f:
            return self._batch(f)

    def _batch(self, f: Any) -> Batch:
        attrs = f.attrs
        if self.fields is not None:
            fields = {name: self._read(f, path) for name, path in self.fields.items()}
        else:
            paths: list[str] = []
            f.visititems(lambda p, o: paths.append("/" + p) if hasattr(o, "dtype") else None)
            fields = {p: self._read(f, p) for p in paths}
        n = attrs.get("n_events")
        if n is None:
            n = len(next(iter(fields.values()))) if fields else 0
        return Batch(
            fields,
            n_events=int(n),
            rank=_int(attrs.get("rank")),
            seq=_int(attrs.get("seq")),
            first_event=_int(attrs.get("first_event")),
        )


class NumpyDecoder:
    """lclstreamer's `numpy` serializer (JSON header + raw or LZ4/zstd arrays); `fields`
    maps field name -> array name. Uncompressed: one copy of the message, arrays are
    writable views of it; compressed: arrays are read-only views of what was inflated."""

    def __init__(self, fields: Mapping[str, str] | None = None) -> None:
        from lclstreamer.serializers.numpy import MAGIC, decode

        self._magic, self._decode = MAGIC, decode
        self.names = {key: name for name, key in (fields or {}).items()}

    def __call__(self, message: memoryview) -> Batch:
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

    def __call__(self, message: memoryview) -> Batch:
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
