"""The `stem_sectors` event source: a 4D camera's frames, one column block (sector) per rank.

Each sector depends only on (seed, frame, sector), so the truth (strike positions, lost
sectors) can be recomputed anywhere: `dark_reference`, `strikes`, `is_lost`. The
per-sector draws (a few dozen numbers) come from Python's `random.Random` seeded by
those integers: seeding numpy's Generator costs more than the draws themselves.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from functools import lru_cache

import numpy as np

from ..errors import ConfigError
from ..models import StemSectorEventSource
from ..partition import limit
from ..protocols import RunInfo, StreamContext

MIN_SEPARATION = 3  # pixels between strikes (Chebyshev), so each is its own local maximum
NOISE_POOL = 16  # read-noise fields per sector, drawn once; each frame picks one and rolls it
_DARK, _LOSS, _NOISE, _STRIKES = 0xDA7C, 0x1055, 0x4015E, 0x57121


def sector_width(cfg: StemSectorEventSource) -> int:
    return cfg.frame_shape[1] // cfg.sectors


def dark_reference(cfg: StemSectorEventSource) -> np.ndarray:
    """The whole frame's dark reference (float32, per pixel)."""
    rng = np.random.default_rng([cfg.seed, _DARK])
    dark = rng.normal(cfg.dark_level, cfg.dark_spread, cfg.frame_shape)
    return dark.astype(np.float32)


def _draw(*key: int) -> random.Random:
    """A generator seeded by non-negative integers (each below 2**64): distinct keys,
    distinct streams."""
    return random.Random(sum(k << (64 * i) for i, k in enumerate(key)))


def is_lost(cfg: StemSectorEventSource, frame: int, sector: int) -> bool:
    """True if this sector of this frame never reaches the stream."""
    if not cfg.sector_loss:
        return False
    return _draw(_LOSS, cfg.seed, frame, sector).random() < cfg.sector_loss


def strikes(cfg: StemSectorEventSource, frame: int, sector: int) -> np.ndarray:
    """(row, column-in-sector) of every electron injected into this sector, int32 (k, 2)."""
    return sector_draws(cfg, frame, sector)[0]


def sector_draws(
    cfg: StemSectorEventSource, frame: int, sector: int
) -> tuple[np.ndarray, int, int]:
    """What makes one sector of one frame random: its strikes (int32 (k, 2): row,
    column in the sector), the index of its read-noise field in the pool and that
    field's row shift (see `_draws`)."""
    kept, k, shift = _draws(cfg, frame, sector)
    return np.array(kept, dtype=np.int32).reshape(-1, 2), k, shift


def _draws(cfg: StemSectorEventSource, frame: int, sector: int) -> tuple[list[int], int, int]:
    """The strikes as plain ints (row, column, row, column, ...), the noise field's index
    and its row shift.

    Strikes: a Poisson count k (mean: the dose per sector), then 2k+1 candidate
    positions kept greedily, in order, while at least MIN_SEPARATION (Chebyshev) from
    those kept, until k are kept."""
    rnd = _draw(_STRIKES, cfg.seed, frame, sector).random
    rows, width = cfg.frame_shape[0], sector_width(cfg)
    mean, k, t = cfg.electrons_per_frame / cfg.sectors, 0, 0.0
    while True:  # Poisson: unit-rate arrivals before `mean`
        t -= math.log(1.0 - rnd())
        if t > mean:
            break
        k += 1
    kept: list[int] = []  # row, column, row, column, ... (plain ints: no numpy per test)
    sep = MIN_SEPARATION
    for _ in range(2 * k + 1):
        if len(kept) == 2 * k:
            break
        r, c = int(rnd() * rows), int(rnd() * width)
        for i in range(0, len(kept), 2):
            if -sep < r - kept[i] < sep and -sep < c - kept[i + 1] < sep:
                break
        else:
            kept += (r, c)
    return kept, int(rnd() * NOISE_POOL), int(rnd() * rows)


@lru_cache(maxsize=8)
def _noise_pool(seed: int, noise: float, rows: int, width: int, sector: int) -> np.ndarray:
    """NOISE_POOL Gaussian read-noise fields of one sector, rounded to whole ADU (int16,
    drawn once)."""
    rng = np.random.default_rng([seed, _NOISE, sector])
    pool = rng.normal(0.0, noise, (NOISE_POOL, rows, width))
    pool = np.clip(np.rint(pool), -32768, 32767).astype(np.int16)
    pool.setflags(write=False)
    return pool


class SectorMaker:
    """Makes the uint16 pixels of one sector of any frame: the dark reference (rounded to
    whole ADU) + read noise (one of NOISE_POOL fields drawn once per sector, rounded to
    whole ADU, rolled by a random number of rows: drawing fresh Gaussian noise for every
    sector would cost more than counting it) + strikes (an electron adds `electron_adu`,
    rounded, to its pixel and 15% of it, rounded, to each of its 4 neighbours), clipped to
    0..65535. Integer arithmetic, one pass over the sector when no pixel can leave the
    uint16 range (checked once), else computed in int32 and clipped."""

    def __init__(self, cfg: StemSectorEventSource, sector: int, dark: np.ndarray) -> None:
        self.cfg, self.sector = cfg, sector
        self.rows, self.width = dark.shape
        self.dark = np.rint(np.asarray(dark, dtype=np.float64)).astype(np.int32)
        self.pool = _noise_pool(cfg.seed, cfg.noise, self.rows, self.width, sector)
        self.hit = int(round(cfg.electron_adu))
        self.side = int(round(0.15 * cfg.electron_adu))
        lo = int(self.dark.min()) + int(self.pool.min())
        hi = int(self.dark.max()) + int(self.pool.max()) + max(self.hit, self.side)
        self.direct = lo >= 0 and hi <= 65535  # strikes never touch one pixel twice
        if self.direct:  # uint16 arithmetic modulo 2**16 gives the true sums: no casts
            self.dark, self.pool = self.dark.astype(np.uint16), self.pool.view(np.uint16)

    def _deposit(self, hits: list[int], out: np.ndarray) -> None:
        """Add each strike's signal (`hits`: row, column, row, column, ...) to its pixel
        and its 4 neighbours inside the sector, in one indexed add (strikes are >= 3
        apart: no pixel is touched twice)."""
        rows, width, hit, side = self.rows, self.width, self.hit, self.side
        idx: list[int] = []
        val: list[int] = []
        for r, c in zip(hits[::2], hits[1::2], strict=True):
            p = r * width + c
            idx.append(p)
            val.append(hit)
            if r > 0:
                idx.append(p - width)
                val.append(side)
            if r < rows - 1:
                idx.append(p + width)
                val.append(side)
            if c > 0:
                idx.append(p - 1)
                val.append(side)
            if c < width - 1:
                idx.append(p + 1)
                val.append(side)
        flat = out.reshape(-1)
        flat[idx] += np.array(val, dtype=out.dtype)

    def __call__(self, frame: int) -> np.ndarray:
        rows, width = self.rows, self.width
        hits, k, shift = _draws(self.cfg, frame, self.sector)
        noise, dark = self.pool[k], self.dark
        out = np.empty((rows, width), np.uint16 if self.direct else np.int32)
        # the noise field rolled down by `shift` rows, added without a rolled copy
        np.add(dark[shift:], noise[: rows - shift], out=out[shift:], dtype=out.dtype)
        np.add(dark[:shift], noise[rows - shift :], out=out[:shift], dtype=out.dtype)
        if hits:
            self._deposit(hits, out)
        if self.direct:
            return out
        np.clip(out, 0, 65535, out=out)
        return out.astype(np.uint16)


def make_sector(
    cfg: StemSectorEventSource, frame: int, sector: int, dark: np.ndarray
) -> np.ndarray:
    """The sector's uint16 pixels (see `SectorMaker`; `dark`: this sector's columns of
    the dark reference). For many frames, make one SectorMaker and call it."""
    return SectorMaker(cfg, sector, dark)(frame)


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
        img = src.make(self.index)
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
        self.make = SectorMaker(
            cfg, self.sector, dark_reference(cfg)[:, self.sector * w : (self.sector + 1) * w]
        )
        self.lost = 0

    def run_info(self) -> RunInfo:
        return RunInfo("4dstem", self.cfg.scan_number)

    def events(self) -> Iterator[SectorEvent]:
        """This rank's sectors, in rounds of `lockstep` frames per slot: a round starts
        once every rank started it (the camera's clock: the receiving servers get each
        frame at the same time), so the ranks never drift more than one round apart."""
        cfg, ctx = self.cfg, self.ctx
        n = limit(cfg.scan_shape[0] * cfg.scan_shape[1], ctx.max_events)
        step = cfg.lockstep * self.slots if cfg.lockstep and ctx.comm is not None else n
        rounds = ctx.comm.rounds() if step < n else None
        total = -(-n // step) - 1 if step else 0  # rounds waited for by every rank
        try:
            for lo in range(0, n, max(step, 1)):
                if lo and rounds is not None and not rounds.wait(ctx.stop):
                    return
                for frame in range(lo + self.slot, min(n, lo + step), self.slots):
                    if is_lost(cfg, frame, self.sector):
                        self.lost += 1
                        continue
                    yield SectorEvent(frame, self)
        finally:
            if rounds is not None:
                rounds.leave(total)  # stopped early: the others need not wait for us

    def counters(self) -> dict[str, int]:
        return {"sectors_lost": self.lost}

    def close(self) -> None:
        return None
