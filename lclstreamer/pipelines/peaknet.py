"""The `peaknet` pipeline: images shaped for PeakNet/MAXIE training.

Each image (2-D, or 3-D with a leading channel axis) is checked for NaN/inf, optionally
normalized with its own mean and standard deviation, placed into a `target_height` x
`target_width` canvas of `pad_value` (centred, or at the top-left so padding is at the
bottom and right), optionally given a channel axis repeated `num_channels` times.
A frame larger than the target is an error naming its shape, unless `crop: true`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..errors import ConfigError, DataError
from ..geometry import Panel, assembly, parse_geometry
from ..models import PeaknetPipeline as PeaknetConfig
from ..protocols import Batch, Event, StreamContext
from . import batched


def placement(size: int, target: int, style: str, crop: bool, what: str) -> tuple[slice, slice]:
    """(source slice, destination slice) along one axis."""
    if size <= target:
        off = (target - size) // 2 if style == "center" else 0
        return slice(0, size), slice(off, off + size)
    if not crop:
        raise DataError(what)
    off = (size - target) // 2 if style == "center" else 0
    return slice(off, off + target), slice(0, target)


def prepare(
    image: np.ndarray,
    cfg: PeaknetConfig,
    out: np.ndarray,
    index: int,
    valid: np.ndarray | None = None,
) -> None:
    """Write the training image of `image` into `out` (the output shape, reused); with
    `valid` (an assembled image's covered pixels), statistics use only those pixels and
    the others get `pad_value`."""
    h, w = image.shape[-2:]
    th, tw = cfg.target_height, cfg.target_width
    what = (
        f"peaknet: event {index}: {cfg.field!r} is {h} x {w}, larger than the target"
        f" {th} x {tw} (set crop: true to crop it, or raise target_height/target_width)"
    )
    rows = placement(h, th, cfg.pad_style, cfg.crop, what)
    cols = placement(w, tw, cfg.pad_style, cfg.crop, what)
    if not np.isfinite(image).all():
        bad = int(np.count_nonzero(~np.isfinite(image)))
        raise DataError(f"peaknet: event {index}: {cfg.field!r} has {bad} NaN or inf values")
    src = image[..., rows[0], cols[0]]
    canvas = out if out.ndim == image.ndim else out[0]
    canvas.fill(cfg.pad_value)
    dest = canvas[..., rows[1], cols[1]]
    if cfg.normalize:
        axes = (-2, -1)
        where = True if valid is None else valid
        mean = image.mean(axis=axes, keepdims=True, dtype=np.float64, where=where)
        std = image.std(axis=axes, keepdims=True, dtype=np.float64, where=where)
        np.subtract(src, mean, out=dest, casting="unsafe")
        np.divide(dest, std + cfg.eps, out=dest, casting="unsafe")
    else:
        np.copyto(dest, src, casting="unsafe")
    if valid is not None:
        dest[..., ~valid[rows[0], cols[0]]] = cfg.pad_value
    if out.ndim != image.ndim:  # a channel axis was added: repeat the image
        out[1:] = out[0]


class PeaknetPipeline:
    """Adds the prepared image (replacing the field) and `<field>_original_shape`."""

    def __init__(self, cfg: PeaknetConfig, ctx: StreamContext | None) -> None:
        self.cfg = cfg
        self.panels: list[Panel] | None = None
        if cfg.geometry is not None:
            try:
                text = Path(cfg.geometry).read_text()
            except OSError as exc:
                raise ConfigError(f"peaknet: cannot read geometry {cfg.geometry}: {exc}") from None
            self.panels = parse_geometry(text, cfg.geometry)

    def _assembler(self, frame: np.ndarray):
        """A function frame -> (assembled image, covered pixels), buffers made once."""
        assert self.panels is not None
        data_shape = (int(np.prod(frame.shape[:-1], dtype=np.int64)), frame.shape[-1])
        asm = assembly(self.panels, data_shape)
        canvas = np.zeros(asm.shape, dtype=np.float32)
        flat = canvas.reshape(-1)
        picked = np.empty(asm.source.size, dtype=np.float32)

        def assemble(frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            np.take(frame.reshape(-1), asm.source, out=picked, mode="clip")
            flat[asm.target] = picked
            return canvas, asm.valid

        return assemble

    def _shape_of(self, image: np.ndarray) -> tuple[int, ...]:
        cfg = self.cfg
        if image.ndim == 2:
            lead = (cfg.num_channels,) if cfg.add_channel_dim else ()
        elif image.ndim == 3:
            if cfg.add_channel_dim:
                raise DataError(
                    f"peaknet: {cfg.field!r} already has a channel axis ({image.shape});"
                    " set add_channel_dim: false"
                )
            lead = image.shape[:1]
        else:
            raise DataError(
                f"peaknet: {cfg.field!r} must be an image (H, W) or (C, H, W), got {image.shape}"
            )
        return (*lead, cfg.target_height, cfg.target_width)

    def _prepare(self, events: Iterator[Event]) -> Iterator[Event]:
        cfg = self.cfg
        ring: list[np.ndarray] = []
        shapes: list[np.ndarray] = []
        slot = 0
        assemble = None
        frame_shape: tuple[int, ...] | None = None
        for event in events:
            image = np.asarray(event.data[cfg.field])
            valid = None
            if self.panels is not None:
                if assemble is None:
                    assemble, frame_shape = self._assembler(image), image.shape
                elif image.shape != frame_shape:
                    raise DataError(
                        f"peaknet: event {event.index}: {cfg.field!r} is {image.shape}, the"
                        f" geometry was laid out for {frame_shape}"
                    )
                if not np.isfinite(image).all():
                    bad = int(np.count_nonzero(~np.isfinite(image)))
                    raise DataError(
                        f"peaknet: event {event.index}: {cfg.field!r} has {bad} NaN or inf values"
                    )
                image, valid = assemble(image)
            if not ring:
                shape = self._shape_of(image)
                ring = [np.empty(shape, cfg.dtype) for _ in range(cfg.batch_size)]
                shapes = [np.empty(2, np.int32) for _ in range(cfg.batch_size)]
            out = ring[slot]
            if out.shape != self._shape_of(image):
                raise DataError(
                    f"peaknet: event {event.index}: {cfg.field!r} has {image.ndim} dimensions,"
                    f" earlier events had {out.ndim - (1 if cfg.add_channel_dim else 0)}"
                )
            prepare(image, cfg, out, event.index, valid)
            shapes[slot][:] = image.shape[-2:]
            event.data[cfg.field] = out
            event.data[f"{cfg.field}_original_shape"] = shapes[slot]
            slot = (slot + 1) % cfg.batch_size
            yield event

    def __call__(self, events: Iterator[Event]) -> Iterator[Batch]:
        return batched(self._prepare(events), self.cfg.batch_size)
