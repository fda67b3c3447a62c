"""The `stem_sector` serializer: the 4D camera's two-part message, as one NNG/ZMQ message.

Part one is a msgpack map `{"scan_number", "frame_number", "sector", "shape", "dtype"}`;
part two, right after it, is the sector's raw array in C order. A reader unpacks the
first msgpack object and takes the rest as the array (`lclstreamer.stem.wire.decode`).
"""

from __future__ import annotations

from collections.abc import Iterator

import msgpack
import numpy as np

from ..errors import DataError
from ..models import StemSectorSerializer as StemSectorConfig
from ..protocols import Batch, RunInfo, StreamContext
from .packing import OutBuffer


class StemSectorSerializer:
    """One message per event, assembled in a reused buffer (valid until the next)."""

    suffix = ".stem"

    def __init__(self, cfg: StemSectorConfig, ctx: StreamContext, run: RunInfo) -> None:
        self.cfg = cfg
        self.out = OutBuffer()

    def __call__(self, batches: Iterator[Batch]) -> Iterator[memoryview]:
        cfg, out, packb = self.cfg, self.out, msgpack.packb
        for batch in batches:
            images = batch.columns[cfg.image].rows
            frames = batch.columns[cfg.frame_number].rows
            sectors = batch.columns[cfg.sector].rows
            scans = batch.columns[cfg.scan_number].rows
            for i in range(batch.n_events):
                img = np.asarray(images[i])
                if img.ndim != 2:
                    raise DataError(
                        f"stem_sector serializer: field {cfg.image!r} of event"
                        f" {batch.indices[i]} has shape {img.shape}, expected 2-D"
                    )
                header = {
                    "scan_number": int(scans[i]),
                    "frame_number": int(frames[i]),
                    "sector": int(sectors[i]),
                    "shape": list(img.shape),
                    "dtype": img.dtype.str,
                }
                out.reset()
                out.write(packb(header))
                out.write_array(img, img.dtype)
                yield out.view()
