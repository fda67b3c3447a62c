"""The `stem_sectors` event source: a 4D camera's frames, one column block (sector) per rank.

Each sector depends only on (seed, frame, sector), so the truth (strike positions, lost
sectors) can be recomputed anywhere: `dark_reference`, `strikes`, `is_lost`.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import lru_cache

import numpy as np

from ..errors import ConfigError
from ..models import StemSectorEventSource
from ..partition import limit
from ..protocols import RunInfo, StreamContext

MIN_SEPARATION = 3  # pixels between strikes (Chebyshev), so each is its own local maximum
NOISE_POOL = 16  # read-noise fields per sector, drawn once; each frame picks one and rolls it
_DARK, _LOSS, _NOISE = 0xDA7C, 0x1055, 0x4015E


def sector_width(cfg: StemSectorEventSource) -> int:
    return cfg.frame_shape[1] // cfg.sectors


def dark_reference(cfg: StemSectorEventSource) -> np.ndarray:
    """The whole frame's dark reference (float32, per pixel)."""
    rng = np.random.default_rng([cfg.seed, _DARK])
    dark = rng.normal(cfg.dark_level, cfg.dark_spread, cfg.frame_shape)
    return dark.astype(np.float32)


def is_lost(cfg: StemSectorEventSource, frame: int, sector: int) -> bool:
    """True if this sector of this frame never reaches the stream."""
    if not cfg.sector_loss:
        return False
    return bool(np.random.default_rng([cfg.seed, _LOSS, frame, sector]).random() < cfg.sector_loss)


def strikes(cfg: StemSectorEventSource, frame: int, sector: int) -> np.ndarray:
    """(row, column-in-sector) of every electron injected into this sector, int32 (k, 2)."""
    rng = np.random.default_rng([cfg.seed, frame, sector])
    return _strikes(rng, cfg)


def _strikes(rng: np.random.Generator, cfg: StemSectorEventSource) -> np.ndarray:
    rows, width = cfg.frame_shape[0], sector_width(cfg)
    k = int(rng.poisson(cfg.electrons_per_frame / cfg.sectors))
    cand = np.column_stack((rng.integers(0, rows, 2 * k + 1), rng.integers(0, width, 2 * k + 1)))
    kept: list[np.ndarray] = []
    for p in cand:
        if len(kept) == k:
            break
        if all(np.abs(p - q).max() >= MIN_SEPARATION for q in kept):
            kept.append(p)
    return np.array(kept, dtype=np.int32).reshape(-1, 2)


@lru_cache(maxsize=8)
def _noise_pool(seed: int, noise: float, rows: int, width: int, sector: int) -> np.ndarray:
    """NOISE_POOL Gaussian read-noise fields of one sector (float32, drawn once)."""
    rng = np.random.default_rng([seed, _NOISE, sector])
    pool = rng.normal(0.0, noise, (NOISE_POOL, rows, width)).astype(np.float32)
    pool.setflags(write=False)
    return pool


def make_sector(
    cfg: StemSectorEventSource, frame: int, sector: int, dark: np.ndarray
) -> np.ndarray:
    """The sector's uint16 pixels: `dark` (this sector's columns) + read noise + strikes.
    The noise is one of NOISE_POOL fields drawn once per sector, rolled by a random number
    of rows (drawing fresh Gaussian noise for every sector would cost more than counting
    it). An electron puts `electron_adu` on its pixel and 15% of it on each of the 4
    neighbours."""
    rng = np.random.default_rng([cfg.seed, frame, sector])
    hits = _strikes(rng, cfg)
    rows, width = dark.shape
    pool = _noise_pool(cfg.seed, cfg.noise, rows, width, sector)
    k, shift = int(rng.integers(NOISE_POOL)), int(rng.integers(rows))
    img = np.add(dark, np.roll(pool[k], shift, axis=0), dtype=np.float32)
    a = np.float32(cfg.electron_adu)
    for r, c in hits:
        img[r, c] += a
        for dr, dc in ((-1, 0), (1, 0), (0, -1), (0, 1)):
            if 0 <= r + dr < rows and 0 <= c + dc < width:
                img[r + dr, c + dc] += 0.15 * a
    np.clip(np.rint(img, out=img), 0, 65535, out=img)
    return img.astype(np.uint16)


class SectorEvent:
    """One sector of one frame (`index` is the frame number)."""

    __slots__ = ("index", "_source")

    def __init__(self, index: int, source: StemSectorSource) -> None:
        self.index = index
        self._source = source

    def detector(self, name: str, kind: str) -> np.ndarray | None:
        src = self._source
        if name != src.cfg.detector:
            return None
        img = make_sector(src.cfg, self.index, src.sector, src.dark)
        img.setflags(write=False)
        return img

    def scalar(self, name: str) -> int | None:
        src = self._source
        return {
            "frame_number": self.index,
            "sector_index": src.sector,
            "scan_number": src.cfg.scan_number,
        }.get(name)

    def timestamp(self) -> None:
        return None

    def photon_energy_ev(self) -> None:
        return None

    def event_codes(self) -> None:
        return None


class StemSectorSource:
    """Sector `rank mod sectors` of frames `rank // sectors`, + `size // sectors`, ...;
    lost sectors are skipped and counted (`counters()["sectors_lost"]`)."""

    def __init__(self, cfg: StemSectorEventSource, ctx: StreamContext) -> None:
        if ctx.size % cfg.sectors:
            raise ConfigError(
                f"event_source.sectors: {ctx.size} ranks cannot share {cfg.sectors} sectors"
                f" (run a multiple of {cfg.sectors} ranks)"
            )
        self.cfg, self.ctx = cfg, ctx
        self.sector = ctx.rank % cfg.sectors
        self.slot, self.slots = ctx.rank // cfg.sectors, ctx.size // cfg.sectors
        w = sector_width(cfg)
        self.dark = np.ascontiguousarray(
            dark_reference(cfg)[:, self.sector * w : (self.sector + 1) * w]
        )
        self.lost = 0

    def run_info(self) -> RunInfo:
        return RunInfo("4dstem", self.cfg.scan_number)

    def events(self) -> Iterator[SectorEvent]:
        cfg = self.cfg
        n = limit(cfg.scan_shape[0] * cfg.scan_shape[1], self.ctx.max_events)
        for frame in range(self.slot, n, self.slots):
            if is_lost(cfg, frame, self.sector):
                self.lost += 1
                continue
            yield SectorEvent(frame, self)

    def counters(self) -> dict[str, int]:
        return {"sectors_lost": self.lost}

    def close(self) -> None:
        return None
