"""The `simplon` serializer: the DECTRIS Stream V2 message format (CBOR).

Field names, tags and compression framing follow DECTRIS' published "Stream V2"
description (SIMPLON API 1.8.0, detector release 2022.1 and later) and the "CBOR Tag for
DECTRIS Compressed Byte Strings" (tag 56500), both in github.com/dectris/documentation.
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Iterator
from typing import Any

import numpy as np

from ..errors import DataError
from ..models import SimplonSerializer as SimplonConfig
from ..protocols import Batch, RunInfo, StreamContext
from ..sources.frames import wavelength_m

TIME_BASE = 1_000_000_000  # denominator of the Rational times: nanoseconds
TAG_DATETIME, TAG_MULTIDIM, TAG_COMPRESSED = 0, 40, 56500
# RFC 8746 typed-array tags (little endian) for the dtypes an image may have
TYPED_ARRAY_TAG = {"u1": 68, "<u2": 69, "<u4": 70, "<i4": 78, "<f4": 85}
_BLOCK_BYTES = 8192  # bitshuffle's default target block size


def bslz4(arr: np.ndarray) -> bytes:
    """Bitshuffle + LZ4 with the bitshuffle HDF5 filter's framing (what tag 56500 "bslz4"
    carries): big-endian uint64 byte count, uint32 block size in bytes, the blocks."""
    import bitshuffle

    item = arr.dtype.itemsize
    block = max(128, (_BLOCK_BYTES // item) // 8 * 8)
    body = bitshuffle.compress_lz4(np.ascontiguousarray(arr).reshape(-1), block)
    head = arr.nbytes.to_bytes(8, "big") + (block * item).to_bytes(4, "big")
    return b"".join((head, memoryview(body)))  # one copy of the compressed bytes


def lz4_h5(arr: np.ndarray) -> bytes:
    """LZ4 with the HDF5 LZ4 filter's framing (tag 56500 "lz4"): big-endian uint64 byte
    count, uint32 block size, then per block a uint32 size and the LZ4 block."""
    import lz4.block

    data = memoryview(np.ascontiguousarray(arr)).cast("B")
    block = 1 << 30
    parts = [arr.nbytes.to_bytes(8, "big"), min(block, max(arr.nbytes, 1)).to_bytes(4, "big")]
    for start in range(0, len(data), block):
        chunk = data[start : start + block]
        packed = lz4.block.compress(chunk, store_size=False)
        if len(packed) >= len(chunk):
            packed = bytes(chunk)  # incompressible: stored as is
        parts += [len(packed).to_bytes(4, "big"), packed]
    return b"".join(parts)


def _rfc3339(t: float) -> str:
    return datetime.datetime.fromtimestamp(t, datetime.UTC).isoformat().replace("+00:00", "Z")


class SimplonSerializer:
    """One `image` message per event; the run's `start` and `end` come from rank 0 through
    the engine's run bracket (`opening`, `series`, `join`, `closing`)."""

    suffix = ".cbor"

    def __init__(self, cfg: SimplonConfig, ctx: StreamContext, run: RunInfo) -> None:
        import cbor2

        self._cbor2 = cbor2
        self._tag = cbor2.CBORTag
        self.cfg = cfg
        self.ctx = ctx
        self.unique_id = f"{run.experiment}:{run.run}:{ctx.source_identifier}:{cfg.series_id}"
        self.series_date = ""
        self.dtype = np.dtype(cfg.dtype).newbyteorder("<") if cfg.dtype else None
        self._shape: tuple[int, ...] | None = None
        self._wire: np.dtype | None = None

    # -- run bracket ------------------------------------------------------------------
    def opening(self, first: Batch | None) -> bytes:
        """The `start` message (rank 0), describing the frames of `first` when there is one."""
        cfg = self.cfg
        self.series_date = _rfc3339(datetime.datetime.now(datetime.UTC).timestamp())
        if first is not None:
            self._check(first)
        ss, fs = self._shape[-2:] if self._shape else (0, 0)
        energy = cfg.incident_energy_ev
        msg: dict[str, Any] = {
            "type": "start",
            "arm_date": self._tag(TAG_DATETIME, self.series_date),
            "beam_center_x": cfg.beam_center_x if cfg.beam_center_x is not None else fs / 2,
            "beam_center_y": cfg.beam_center_y if cfg.beam_center_y is not None else ss / 2,
            "channels": [cfg.channel],
            "count_time": cfg.count_time,
            "countrate_correction_enabled": False,
            "detector_description": cfg.detector_description,
            "detector_serial_number": self.ctx.source_identifier,
            "detector_translation": [0.0, 0.0, cfg.detector_distance_m],
            "flatfield_enabled": False,
            "frame_time": cfg.frame_time,
            "goniometer": {},
            "image_size_x": fs,
            "image_size_y": ss,
            "incident_energy": energy,
            "incident_wavelength": wavelength_m(energy) * 1e10,
            "number_of_images": 0,  # not known in advance for a stream; see `end`
            "pixel_mask_enabled": False,
            "pixel_size_x": cfg.pixel_size_m,
            "pixel_size_y": cfg.pixel_size_m,
            "sensor_material": cfg.sensor_material,
            "sensor_thickness": cfg.sensor_thickness_m,
            "series_id": cfg.series_id,
            "series_unique_id": self.unique_id,
            "threshold_energy": {cfg.channel: energy / 2},
            "user_data": {
                **cfg.start_user_data,
                "compression": cfg.compression,
                "dtype": self._dtype_name(),
            },
            "virtual_pixel_interpolation_enabled": False,
        }
        if cfg.saturation_value is not None:
            msg["saturation_value"] = cfg.saturation_value
        return self._cbor2.dumps(msg)

    def series(self) -> str:
        """What every rank must share with rank 0's `start`: the series date."""
        return self.series_date

    def join(self, series: str) -> None:
        self.series_date = series

    def closing(self, events: int) -> bytes:
        """The `end` message, after every rank finished; `user_data` holds the image count."""
        return self._cbor2.dumps(
            {
                "type": "end",
                "series_id": self.cfg.series_id,
                "series_unique_id": self.unique_id,
                "user_data": {"number_of_images": events},
            }
        )

    # -- images -----------------------------------------------------------------------
    def _dtype_name(self) -> str:
        return "" if self._wire is None else self._wire.name

    def _check(self, batch: Batch) -> None:
        col = batch.columns[self.cfg.image]
        if len(col.shape) != 2:
            raise DataError(
                f"simplon serializer: {self.cfg.image!r} must be one 2-D frame per event,"
                f" it is {col.shape} (DECTRIS images are 2-D)"
            )
        wire = self.dtype or col.dtype.newbyteorder("<")
        if wire.str not in TYPED_ARRAY_TAG:
            raise DataError(
                f"simplon serializer: frames of dtype {col.dtype} have no DECTRIS typed array;"
                f" set dtype to one of uint8, uint16, uint32, int32, float32"
            )
        self._shape, self._wire = col.shape, wire

    def _compress(self, frame: np.ndarray) -> Any:
        cfg, wire = self.cfg, self._wire
        assert wire is not None
        arr = frame if frame.dtype == wire else frame.astype(wire)
        if cfg.compression == "bslz4":
            return self._tag(TAG_COMPRESSED, ["bslz4", wire.itemsize, bslz4(arr)])
        if cfg.compression == "lz4":
            return self._tag(TAG_COMPRESSED, ["lz4", 0, lz4_h5(arr)])
        return np.ascontiguousarray(arr).tobytes()

    def __call__(self, batches: Iterator[Batch]) -> Iterator[bytes]:
        cfg, tag = self.cfg, self._tag
        ticks = round(cfg.frame_time * TIME_BASE)
        exposure = round(cfg.count_time * TIME_BASE)
        for batch in batches:
            if self._shape is None:
                self._check(batch)
            assert self._wire is not None and self._shape is not None
            typed = TYPED_ARRAY_TAG[self._wire.str]
            rows = batch.columns[cfg.image].rows
            extra = [(key, batch.columns[name].rows) for name, key in cfg.user_data.items()]
            for i in range(batch.n_events):
                index = batch.indices[i]
                frame = np.asarray(rows[i])
                user = {key: _plain(vals[i]) for key, vals in extra}
                yield self._cbor2.dumps(
                    {
                        "type": "image",
                        "series_id": cfg.series_id,
                        "series_unique_id": self.unique_id,
                        "image_id": index,
                        "real_time": [exposure, TIME_BASE],
                        "series_date": tag(TAG_DATETIME, self.series_date),
                        "start_time": [index * ticks, TIME_BASE],
                        "stop_time": [index * ticks + exposure, TIME_BASE],
                        "user_data": user,
                        "data": {
                            cfg.channel: tag(
                                TAG_MULTIDIM,
                                [list(self._shape), tag(typed, self._compress(frame))],
                            )
                        },
                    }
                )


def _plain(value: Any) -> Any:
    """A CBOR-encodable Python value for a per-event field."""
    if isinstance(value, str):
        return value
    arr = np.asarray(value)
    if arr.ndim == 0:
        item = arr.item()
        return None if isinstance(item, float) and not math.isfinite(item) else item
    return arr.tolist()
